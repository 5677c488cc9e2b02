"""Returns nothing; the segmented write-ahead-log Raft log store (``WalLogStore``).

Modules: ``format`` (record framing and payloads), ``index`` (the in-memory index of live
entries), ``recovery`` (replaying segments on open, repairing a torn tail) and ``store``
(the ``LogStore`` itself).
"""

from boltraft.storage.wal.store import WalLogStore

__all__ = ["WalLogStore"]
