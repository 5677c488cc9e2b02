"""The Raft log as the core sees it: the durable storage view plus an unstable suffix.

Entries (and at most one snapshot) received or proposed but not yet handed to the runtime
for persisting live in the unstable part; ``stable_to`` moves them out once the runtime
reports (via ``advance``) that it wrote them. Committed entries are handed out only once
they are durable locally.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter

from boltraft.errors import LogCompactedError, LogUnavailableError
from boltraft.raft.types import Entry, LogStore, SnapshotMeta

_DATA = itemgetter(3)
_READ_WHOLE = 1024  # ranges up to this many stored entries are read without a byte limit


def data_size(ents: Sequence[Entry]) -> int:
    """Returns the total number of data bytes in ``ents`` (0 for an empty sequence)."""
    return sum(map(len, map(_DATA, ents)))


def limit_size(ents: list[Entry], max_bytes: int | None) -> list[Entry]:
    """Returns the longest prefix of ``ents`` whose data fits in ``max_bytes``, but at least
    one entry when ``ents`` is not empty. Returns ``ents`` itself when everything fits or
    ``max_bytes`` is None."""
    if max_bytes is None or len(ents) <= 1 or data_size(ents) <= max_bytes:
        return ents
    total = 0
    for i, e in enumerate(ents):
        total += len(e.data)
        if total > max_bytes:
            return ents[: max(i, 1)]
    return ents


class RaftLog:
    """The log of one node.

    Invariants (``check_invariants``):
    ``applied <= applying <= committed <= last_index()``;
    ``ents[k].index == offset + k`` (the unstable suffix is contiguous from ``offset``);
    with a pending ``snapshot``: ``offset == snapshot.index + 1``;
    entries below ``offset`` are durable in ``storage`` (so ``offset - 1`` is the durable
    last index when no snapshot is pending).
    """

    __slots__ = (
        "applied",
        "applying",
        "committed",
        "ents",
        "max_committed_size",
        "offset",
        "snapshot",
        "storage",
    )

    def __init__(self, storage: LogStore, max_committed_size: int) -> None:
        self.storage = storage
        self.snapshot: SnapshotMeta | None = None  # received, not yet durable
        self.ents: list[Entry] = []  # unstable entries from `offset` on
        self.offset = storage.last_index() + 1
        first = storage.first_index()
        self.committed = first - 1  # highest index known committed
        self.applying = first - 1  # highest index handed out in Ready.committed_entries
        self.applied = first - 1  # highest index the runtime reported applied (advance)
        self.max_committed_size = max_committed_size

    # --- reading -----------------------------------------------------------------------------
    def first_index(self) -> int:
        """Returns the first index still available (after the latest snapshot)."""
        if self.snapshot is not None:
            return self.snapshot.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        """Returns the index of the last entry (or of the snapshot when the log is empty)."""
        return self.offset + len(self.ents) - 1

    def durable_index(self) -> int:
        """Returns the last index known durable locally (0 while a snapshot is pending)."""
        if self.snapshot is not None:
            return 0
        return self.offset - 1

    def term(self, index: int) -> int:
        """Returns the term of entry ``index`` (the snapshot's term at its index, 0 at 0).

        Raises LogCompactedError below the first available index, LogUnavailableError past
        the last index."""
        off = self.offset
        if index >= off:
            k = index - off
            if k < len(self.ents):
                return self.ents[k].term
            raise LogUnavailableError(f"index {index} is past the last index", index=index)
        snap = self.snapshot
        if snap is not None:
            if index == snap.index:
                return snap.term
            raise LogCompactedError(f"index {index} is compacted", index=index)
        return self.storage.term(index)

    def term_or_zero(self, index: int) -> int:
        """Returns the term of entry ``index``, or 0 when it is compacted or unavailable."""
        try:
            return self.term(index)
        except (LogCompactedError, LogUnavailableError):
            return 0

    def last_term(self) -> int:
        """Returns the term of the last entry (or of the snapshot)."""
        return self.term(self.last_index())

    def match_term(self, index: int, term: int) -> bool:
        """Returns True when the log holds entry ``index`` with ``term`` (index 0 matches 0)."""
        return self.term_or_zero(index) == term and (term != 0 or index == 0)

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Returns True when a log ending at (``last_index``, ``last_term``) is at least as
        up to date as this one (Raft paper 5.4.1)."""
        mine = self.last_term()
        return last_term > mine or (last_term == mine and last_index >= self.last_index())

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Returns entries ``[lo, hi)``, cut after ``max_bytes`` of data (at least one).

        Raises LogCompactedError when ``lo`` is below the first index, LogUnavailableError
        when ``hi`` is past ``last_index() + 1``."""
        if lo < self.first_index():
            raise LogCompactedError(f"index {lo} is compacted", index=lo)
        if hi > self.last_index() + 1:
            raise LogUnavailableError(f"index {hi - 1} is past the last index", index=hi - 1)
        if lo >= hi:
            return []
        off = self.offset
        if lo >= off:
            ents = self.ents[lo - off : hi - off]
            return limit_size(ents, max_bytes)
        # Short ranges are read whole and cut here (one C-speed size sum in the common case
        # where everything fits); long ones let the store stop early.
        stored_hi = min(hi, off)
        stored = self.storage.entries(
            lo, stored_hi, max_bytes if stored_hi - lo > _READ_WHOLE else None
        )
        if hi > off and len(stored) == stored_hi - lo:
            stored += self.ents[: hi - off]
        return limit_size(stored, max_bytes)

    def has_pending_snapshot(self) -> bool:
        """Returns True while a received snapshot waits to be handed out and persisted."""
        return self.snapshot is not None

    def next_committed_entries(self) -> list[Entry]:
        """Returns the committed, locally durable entries not yet handed out, bounded by
        ``max_committed_size`` bytes (at least one). Empty while a snapshot is pending."""
        if self.snapshot is not None:
            return []
        hi = min(self.committed, self.offset - 1)
        lo = self.applying + 1
        if lo > hi:
            return []
        return self.entries(lo, hi + 1, self.max_committed_size)

    def has_next_committed_entries(self) -> bool:
        """Returns True when ``next_committed_entries()`` would not be empty."""
        return self.snapshot is None and self.applying < min(self.committed, self.offset - 1)

    # --- writing -----------------------------------------------------------------------------
    def append(self, ents: Sequence[Entry]) -> int:
        """Appends ``ents`` (contiguous, first index ``<= last_index() + 1``) to the
        unstable part, truncating any unstable or stable suffix they overlap. Returns the new
        last index.

        Raises AssertionError when that would truncate committed entries (a safety bug)."""
        if not ents:
            return self.last_index()
        after = ents[0].index
        if after <= self.committed:
            raise AssertionError(f"append at {after} would overwrite committed {self.committed}")
        off = self.offset
        n = len(self.ents)
        if after == off + n:
            self.ents.extend(ents)
        elif after <= off:
            # Replaces the whole unstable part and a stable suffix: the runtime truncates
            # storage from entries[0].index when it persists them.
            self.offset = after
            self.ents = list(ents)
        else:
            del self.ents[after - off :]
            self.ents.extend(ents)
        return self.last_index()

    def find_conflict(self, ents: Sequence[Entry]) -> int:
        """Returns the index of the first entry of ``ents`` that is not in the log (a term
        mismatch or past the end), or 0 when the log already holds all of them.

        Uses the log matching property: when the last overlapping entry matches, every
        earlier one does too, so the common case costs one term lookup."""
        if not ents:
            return 0
        first = ents[0].index
        last = self.last_index()
        if first > last:
            return first
        overlap_end = min(last, ents[-1].index)
        e = ents[overlap_end - first]
        if self.term_or_zero(overlap_end) == e.term:
            return overlap_end + 1 if ents[-1].index > last else 0
        for e in ents:
            if self.term_or_zero(e.index) != e.term:
                return e.index
        return 0

    def maybe_append(
        self, index: int, log_term: int, committed: int, ents: Sequence[Entry]
    ) -> int | None:
        """Appends those of ``ents`` (which follow entry ``index`` of ``log_term``) that the
        log lacks and raises the commit index to ``min(committed, index + len(ents))``.
        Returns the last index of ``ents``, or None, changing nothing, when the log does not
        hold (``index``, ``log_term``) and so rejects them."""
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(ents)
        ci = self.find_conflict(ents)
        if ci:
            self.append(ents[ci - index - 1 :])
        self.commit_to(min(committed, last_new))
        return last_new

    def commit_to(self, index: int) -> None:
        """Raises the commit index to ``index`` (never lowers it).

        Raises AssertionError past the last index."""
        if index > self.committed:
            if index > self.last_index():
                raise AssertionError(f"commit {index} past last index {self.last_index()}")
            self.committed = index

    def maybe_commit(self, index: int, term: int) -> bool:
        """Raises the commit index to ``index`` if the entry there is of ``term``: only
        entries of the leader's current term are committed by counting replicas (paper
        5.4.2). Returns whether the commit index moved."""
        if index > self.committed and self.term_or_zero(index) == term:
            self.committed = index
            return True
        return False

    def stable_to(self, index: int, term: int) -> None:
        """Marks the unstable entries up to ``index`` durable (the runtime wrote them), but
        only if the entry there still has ``term``: otherwise a new leader's entries replaced
        them meanwhile, those are not written yet, and they stay unstable."""
        off = self.offset
        if index < off or index >= off + len(self.ents):
            return
        if self.ents[index - off].term != term:
            return
        del self.ents[: index + 1 - off]
        self.offset = index + 1

    def stable_snap_to(self, index: int) -> None:
        """Forgets the pending snapshot at ``index`` (now durable)."""
        if self.snapshot is not None and self.snapshot.index == index:
            self.snapshot = None

    def restore(self, meta: SnapshotMeta) -> None:
        """Replaces the whole log by the snapshot ``meta``, committed and pending."""
        self.snapshot = meta
        self.ents = []
        self.offset = meta.index + 1
        self.committed = meta.index

    def applied_to(self, index: int) -> None:
        """Records that the runtime applied everything up to ``index`` (never lowers it)."""
        if index > self.applied:
            self.applied = index
        if index > self.applying:
            self.applying = index

    def check_invariants(self) -> None:
        """Checks the class invariants. Raises AssertionError naming the first broken one."""
        last = self.last_index()
        if not (self.applied <= self.applying <= self.committed <= last):
            raise AssertionError(
                f"applied {self.applied} <= applying {self.applying} <= "
                f"committed {self.committed} <= last {last} broken"
            )
        if self.ents and (self.ents[0].index != self.offset or self.ents[-1].index != last):
            raise AssertionError("unstable entries are not contiguous from offset")
        if self.snapshot is not None and self.offset != self.snapshot.index + 1:
            raise AssertionError("offset is not right after the pending snapshot")
