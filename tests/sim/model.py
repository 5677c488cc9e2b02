"""The simulated state machine: a small key-value dict whose applied index, digest and
membership are persisted atomically with the data (as the real bucket store does in one LMDB
transaction), so a crash never loses applied state and never half-applies a batch."""

from __future__ import annotations

from collections.abc import Sequence

from boltraft.raft.types import ConfState, Entry, EntryType

from .checks import chain_digest

KEYS = 8  # writes spread over this many keys


def write_command(wid: int) -> bytes:
    """Returns the command for write number ``wid`` (it sets key ``wid % KEYS`` to ``wid``)."""
    return b"w%d" % wid


class KVState:
    """One node's durable state machine. Invariant: ``digest`` is the chained digest of every
    entry up to ``applied``; ``conf`` is the membership as of ``applied``."""

    __slots__ = ("applied", "applied_term", "conf", "digest", "kv")

    def __init__(self, conf: ConfState | None = None) -> None:
        self.kv: dict[int, int] = {}
        self.applied = 0
        self.applied_term = 0
        self.digest = 0
        self.conf = conf if conf is not None else ConfState()

    def apply(self, entries: Sequence[Entry], conf: ConfState | None) -> None:
        """Applies ``entries`` (contiguous, starting at ``applied + 1``) and, when given, the
        membership they left in place; one atomic step."""
        kv = self.kv
        digest = self.digest
        for e in entries:
            if e.type == EntryType.NORMAL and e.data.startswith(b"w"):
                wid = int(e.data[1:])
                kv[wid % KEYS] = wid
            digest = chain_digest(digest, e)
        if entries:
            self.applied = entries[-1].index
            self.applied_term = entries[-1].term
            self.digest = digest
        if conf is not None:
            self.conf = conf

    def copy(self) -> KVState:
        """Returns an independent copy (the snapshot's data)."""
        c = KVState(self.conf)
        c.kv = dict(self.kv)
        c.applied = self.applied
        c.applied_term = self.applied_term
        c.digest = self.digest
        return c
