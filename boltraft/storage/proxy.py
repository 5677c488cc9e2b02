"""Log-store wrappers: ``LogStoreProxy`` hands every call of the LogStore seam to the store
it wraps, so a wrapper that observes or changes some calls overrides only those;
``SlowSyncLogStore`` is the one that makes flushes slow (a slower disk).

A node never installs a wrapper of its own accord: the metrics time flushes through one
(``boltraft.server.metrics``), and the benchmark and the chaos tool install a slow one
through the serve hooks (``boltraft.server.main.ServeHooks.wrap_log``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from boltraft.raft.types import ConfState, Entry, HardState, LogStore, SnapshotMeta


class LogStoreProxy:
    """A LogStore that hands every call to ``inner`` (attributes it does not define too, such
    as a store's counters)."""

    def __init__(self, inner: LogStore) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self.inner.initial_state()

    def first_index(self) -> int:
        return self.inner.first_index()

    def last_index(self) -> int:
        return self.inner.last_index()

    def term(self, index: int) -> int:
        return self.inner.term(index)

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        return self.inner.entries(lo, hi, max_bytes)

    def snapshot_meta(self) -> SnapshotMeta:
        return self.inner.snapshot_meta()

    def append(
        self, entries: Sequence[Entry], hard_state: HardState | None = None, sync: bool = True
    ) -> None:
        self.inner.append(entries, hard_state, sync)

    def sync(self) -> None:
        self.inner.sync()

    def apply_snapshot(self, meta: SnapshotMeta, hard_state: HardState | None = None) -> None:
        self.inner.apply_snapshot(meta, hard_state)

    def compact(self, meta: SnapshotMeta) -> None:
        self.inner.compact(meta)

    def bootstrap(self, conf_state: ConfState) -> bool:
        return self.inner.bootstrap(conf_state)

    def close(self) -> None:
        self.inner.close()


class SlowSyncLogStore(LogStoreProxy):
    """A LogStore that calls ``pause()`` after each flush of the wrapped one: a synced
    append, a ``sync()`` that had unsynced writes to flush, a snapshot install. Reads and
    unsynced appends go straight through. ``pause`` runs on the caller's thread (the node's
    sync thread for ``sync()``), as a slow disk's flush would."""

    def __init__(self, inner: LogStore, pause: Callable[[], object]) -> None:
        super().__init__(inner)
        self.pause = pause
        self._unsynced = False  # appended with sync=False since the last sync()

    def append(
        self, entries: Sequence[Entry], hard_state: HardState | None = None, sync: bool = True
    ) -> None:
        self.inner.append(entries, hard_state, sync)
        if sync:
            self.pause()
        elif entries or hard_state is not None:
            self._unsynced = True

    def sync(self) -> None:
        self.inner.sync()
        if self._unsynced:
            self._unsynced = False
            self.pause()

    def apply_snapshot(self, meta: SnapshotMeta, hard_state: HardState | None = None) -> None:
        self.inner.apply_snapshot(meta, hard_state)
        self.pause()
