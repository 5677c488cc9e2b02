"""boltraft: a replicated bucket store (BoltDB's model on LMDB, made fault tolerant by Raft)."""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """Returns ``boltraft.Client`` (imported on first use, so ``import boltraft`` stays light)."""
    if name == "Client":
        from boltraft.client import Client

        return Client
    raise AttributeError(f"module 'boltraft' has no attribute {name!r}")
