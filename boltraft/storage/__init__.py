"""Everything a node keeps on disk.

The bucket engine: ``db`` (DB, one LMDB environment per data directory), ``tx``, ``bucket``,
``cursor``, with ``layout``, ``keys`` and ``opening`` below them and ``copier`` for copies
made by a child process. The replicated state machine on top of it: ``fsm``, with
``commands`` (the log encoding), ``queries`` (reads), ``dedup`` (exactly-once), ``applied``
(the applied record), ``snapshot`` and ``snapio``. The Raft log stores: ``logstore`` (LMDB)
and ``wal`` (segment files). ``fsutil`` holds the file-system helpers they share.
"""
