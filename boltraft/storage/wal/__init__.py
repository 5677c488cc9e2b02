"""The Raft log store as a segmented write-ahead log (``WalLogStore``).

Modules: ``format`` (record framing and payloads), ``index`` (the in-memory index of live
entries), ``recovery`` (replaying segments on open, repairing a torn tail) and ``store``
(the ``LogStore`` itself).
"""

from boltraft.storage.wal.store import WalLogStore

__all__ = ["WalLogStore"]
