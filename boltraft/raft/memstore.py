"""An in-memory ``LogStore``: the twin of the LMDB log store for the core's tests and the
deterministic simulator, where it runs hundreds of thousands of seeds, so every read is a list
index or a slice.

Everything written is "persisted": a crash is modelled by keeping the store (or a ``clone()``
taken at the crash point) and dropping the node that used it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from boltraft.errors import InvalidArgumentError, LogCompactedError, LogUnavailableError
from boltraft.raft.log import limit_size
from boltraft.raft.types import ConfState, Entry, HardState, SnapshotMeta

_EMPTY_HS = HardState()
_EMPTY_CS = ConfState()


def check_batch(entries: Sequence[Entry], first: int, last: int, prev_term: int) -> int:
    """Returns how many leading entries of ``entries`` to skip because they are at or below
    the snapshot index (``first - 1``), after checking that the batch can be appended.

    ``first``/``last`` are the store's first and last index; ``prev_term`` is the term of
    the entry just before ``entries[0]`` when that entry is in the log (or the snapshot's).
    Raises InvalidArgumentError when the indexes are not contiguous, would leave a gap after
    ``last``, or a term goes down. ``entries`` must not be empty."""
    start = entries[0].index
    if start > last + 1:
        raise InvalidArgumentError(
            f"append from {start} would leave a gap after the last index {last}",
            index=start,
            last_index=last,
        )
    term = prev_term if start >= first else 0
    for i, e in enumerate(entries, start):
        if e.index != i:
            raise InvalidArgumentError(
                f"entry indexes must be contiguous: expected {i}, got {e.index}", index=e.index
            )
        if e.term < term or e.term < 1:
            raise InvalidArgumentError(
                f"entry {i} has term {e.term} below the term {term} before it", index=i
            )
        term = e.term
    return max(0, first - start)


def check_range(lo: int, hi: int, first: int, last: int) -> bool:
    """Returns True when ``[lo, hi)`` is a readable, non-empty range of a log holding
    ``first..last``; False when it is empty (``lo == hi``). Raises LogCompactedError when
    ``lo < first``, LogUnavailableError when ``hi > last + 1``, InvalidArgumentError when
    ``lo > hi`` (the order ``LogStore.entries`` documents)."""
    if lo < first:
        raise LogCompactedError(f"index {lo} is compacted", index=lo)
    if hi > last + 1:
        raise LogUnavailableError(f"index {hi - 1} is past the last index {last}", index=hi - 1)
    if lo > hi:
        raise InvalidArgumentError(f"invalid range [{lo}, {hi})", lo=lo, hi=hi)
    return lo < hi


def check_conf_state(cs: ConfState) -> None:
    """Checks that ``cs`` can be a bootstrap membership: at least one voter, and voters and
    learners disjoint and without duplicates. Raises InvalidArgumentError otherwise."""
    members = cs.voters + cs.learners
    if not cs.voters or len(set(members)) != len(members):
        raise InvalidArgumentError(
            "a bootstrap membership needs at least one voter, each member once",
            voters=list(cs.voters),
            learners=list(cs.learners),
        )


def check_compact(meta: SnapshotMeta, snap_index: int, term_of: Callable[[int], int]) -> None:
    """Checks that a store whose snapshot is at ``snap_index`` may compact to ``meta``.

    ``term_of`` is the store's ``term``. Raises LogCompactedError when ``meta.index`` <=
    ``snap_index``, LogUnavailableError (from ``term_of``) past the last index,
    InvalidArgumentError when ``meta.term`` is not the term of entry ``meta.index``."""
    if meta.index <= snap_index:
        raise LogCompactedError(f"index {meta.index} is already compacted", index=meta.index)
    term = term_of(meta.index)
    if term != meta.term:
        raise InvalidArgumentError(
            f"entry {meta.index} has term {term}, not {meta.term}",
            index=meta.index,
            term=meta.term,
        )


def check_snapshot(meta: SnapshotMeta, snap_index: int) -> None:
    """Checks that a store whose snapshot is at ``snap_index`` may install ``meta``.

    Raises LogCompactedError when ``meta.index`` is below ``snap_index``."""
    if meta.index < snap_index:
        raise LogCompactedError(
            f"snapshot {meta.index} is older than the current {snap_index}",
            index=meta.index,
        )


class MemoryLogStore:
    """A ``LogStore`` held in Python objects (see ``boltraft.raft.types.LogStore``)."""

    __slots__ = ("_ents", "_hs", "_snap")

    def __init__(self) -> None:
        self._hs: HardState = _EMPTY_HS
        self._snap: SnapshotMeta = SnapshotMeta()
        # Invariant: self._ents[k].index == self._snap.index + 1 + k; terms never decrease.
        self._ents: list[Entry] = []

    def clone(self) -> MemoryLogStore:
        """Returns an independent copy of everything stored (entries are immutable tuples,
        so this copies one list): the simulator's model of what survives a crash."""
        other = MemoryLogStore.__new__(MemoryLogStore)
        other._hs = self._hs
        other._snap = self._snap
        other._ents = self._ents.copy()
        return other

    def initial_state(self) -> tuple[HardState, ConfState]:
        """Returns the stored hard state and the membership as of the snapshot."""
        return self._hs, self._snap.conf_state

    def first_index(self) -> int:
        """Returns the snapshot index + 1."""
        return self._snap.index + 1

    def last_index(self) -> int:
        """Returns the index of the last entry, or the snapshot index when the log is empty."""
        return self._snap.index + len(self._ents)

    def term(self, index: int) -> int:
        """Returns the term of entry ``index`` (the snapshot's term at the snapshot index).

        Raises LogCompactedError below the snapshot index, LogUnavailableError past the end."""
        k = index - self._snap.index - 1
        if k >= 0:
            try:
                return self._ents[k].term
            except IndexError:
                raise LogUnavailableError(
                    f"index {index} is past the last index {self.last_index()}", index=index
                ) from None
        if k == -1:
            return self._snap.term
        raise LogCompactedError(f"index {index} is compacted", index=index)

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Returns entries ``[lo, hi)`` (empty when ``lo == hi``), cut by ``max_bytes`` as in
        ``limit_size``. Raises LogCompactedError when ``lo`` <= the snapshot index,
        LogUnavailableError when ``hi`` > last index + 1, InvalidArgumentError when lo > hi."""
        off = self._snap.index + 1
        check_range(lo, hi, off, off + len(self._ents) - 1)
        return limit_size(self._ents[lo - off : hi - off], max_bytes)

    def snapshot_meta(self) -> SnapshotMeta:
        """Returns the latest snapshot's metadata (index 0 when there is none)."""
        return self._snap

    def sync(self) -> None:
        """Does nothing: everything here counts as persisted already."""

    def append(
        self, entries: Sequence[Entry], hard_state: HardState | None = None, sync: bool = True
    ) -> None:
        """Appends ``entries`` (dropping the stored suffix from ``entries[0].index``; entries
        at or below the snapshot index are skipped) and stores ``hard_state``. ``sync`` is
        ignored: everything here counts as persisted.

        Raises InvalidArgumentError (changing nothing) for a gap after the last index,
        non-contiguous indexes or a decreasing term."""
        if entries:
            snap = self._snap
            ents = self._ents
            start = entries[0].index
            k = start - snap.index - 1
            prev_term = ents[k - 1].term if 0 < k <= len(ents) else snap.term
            skip = check_batch(entries, snap.index + 1, snap.index + len(ents), prev_term)
            if skip:
                entries = entries[skip:]
                k = 0
            if entries:
                del ents[k:]
                ents.extend(entries)
        if hard_state is not None:
            self._hs = hard_state

    def apply_snapshot(self, meta: SnapshotMeta, hard_state: HardState | None = None) -> None:
        """Replaces the whole log by ``meta`` (the log is then empty at ``meta.index``) and
        stores ``hard_state`` when given.

        Raises LogCompactedError (changing nothing) when ``meta.index`` is below the current
        snapshot index."""
        check_snapshot(meta, self._snap.index)
        self._snap = meta
        self._ents = []
        if hard_state is not None:
            self._hs = hard_state

    def compact(self, meta: SnapshotMeta) -> None:
        """Drops the entries up to ``meta.index`` and records ``meta`` as the snapshot.

        Raises LogCompactedError when ``meta.index`` <= the snapshot index,
        LogUnavailableError past the last index, InvalidArgumentError when ``meta.term`` is
        not the term of entry ``meta.index``; nothing changes then."""
        snap = self._snap
        check_compact(meta, snap.index, self.term)
        del self._ents[: meta.index - snap.index]
        self._snap = meta

    def bootstrap(self, conf_state: ConfState) -> bool:
        """Records ``conf_state`` as the membership of an empty store. Returns False,
        changing nothing, when the store holds any entry, snapshot, hard state or
        membership. Raises InvalidArgumentError for a membership without voters or with a
        member listed twice."""
        check_conf_state(conf_state)
        snap = self._snap
        if self._ents or snap.index or self._hs != _EMPTY_HS or snap.conf_state != _EMPTY_CS:
            return False
        self._snap = SnapshotMeta(0, 0, conf_state)
        return True

    def close(self) -> None:
        """Does nothing: the store keeps its contents and holds nothing to release."""
