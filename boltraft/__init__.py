"""boltraft: a replicated bucket store (BoltDB's model on LMDB, made fault tolerant by Raft)."""

__version__ = "0.1.0"
