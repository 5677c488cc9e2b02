"""A tiny in-memory LogStore double for the core's tests (until memstore.py lands)."""

from __future__ import annotations

from collections.abc import Sequence

from boltraft.errors import LogCompactedError, LogUnavailableError
from boltraft.raft.types import ConfState, Entry, HardState, SnapshotMeta


class MemoryLogStore:
    """Invariant: ``ents[k].index == snap.index + 1 + k``."""

    def __init__(self) -> None:
        self.hard = HardState()
        self.snap = SnapshotMeta()
        self.ents: list[Entry] = []

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self.hard, self.snap.conf_state

    def first_index(self) -> int:
        return self.snap.index + 1

    def last_index(self) -> int:
        return self.snap.index + len(self.ents)

    def term(self, index: int) -> int:
        if index < self.snap.index:
            raise LogCompactedError(index=index)
        if index == self.snap.index:
            return self.snap.term
        if index > self.last_index():
            raise LogUnavailableError(index=index)
        return self.ents[index - self.snap.index - 1].term

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        if lo <= self.snap.index:
            raise LogCompactedError(index=lo)
        if hi > self.last_index() + 1:
            raise LogUnavailableError(index=hi)
        out = self.ents[lo - self.snap.index - 1 : hi - self.snap.index - 1]
        if max_bytes is not None:
            total = 0
            for i, e in enumerate(out):
                total += len(e.data)
                if total > max_bytes:
                    return out[: max(i, 1)]
        return out

    def snapshot_meta(self) -> SnapshotMeta:
        return self.snap

    def append(
        self, entries: Sequence[Entry], hard_state: HardState | None = None, sync: bool = True
    ) -> None:
        if entries:
            k = entries[0].index - self.snap.index - 1
            del self.ents[k:]
            self.ents.extend(entries)
        if hard_state is not None:
            self.hard = hard_state

    def apply_snapshot(self, meta: SnapshotMeta, hard_state: HardState | None = None) -> None:
        self.snap = meta
        self.ents = []
        if hard_state is not None:
            self.hard = hard_state

    def compact(self, meta: SnapshotMeta) -> None:
        if meta.index <= self.snap.index:
            raise LogCompactedError(index=meta.index)
        del self.ents[: meta.index - self.snap.index]
        self.snap = meta

    def bootstrap(self, conf_state: ConfState) -> bool:
        if self.ents or self.snap.index or self.hard != HardState():
            return False
        self.snap = SnapshotMeta(0, 0, conf_state)
        return True

    def close(self) -> None:
        pass
