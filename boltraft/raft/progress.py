"""A leader's per-follower replication state: probe / replicate / snapshot, and the
in-flight window bounded by message count AND bytes (etcd's tracker.Progress/Inflights)."""

from __future__ import annotations

from collections import deque

from boltraft.raft.types import ProgressState, ProgressStatus


class Inflights:
    """The APPs sent to one follower and not yet acknowledged, oldest first.

    Invariant: ``len(_q) <= max_count`` except transiently after ``add`` made it full;
    ``bytes == sum of the sizes in _q``; the last indexes in ``_q`` increase."""

    __slots__ = ("_q", "bytes", "max_bytes", "max_count")

    def __init__(self, max_count: int, max_bytes: int) -> None:
        self._q: deque[tuple[int, int]] = deque()  # (last index of the APP, its data bytes)
        self.bytes = 0
        self.max_count = max_count
        self.max_bytes = max_bytes

    def add(self, last_index: int, size: int) -> None:
        """Records an APP whose last entry is ``last_index``, carrying ``size`` data bytes."""
        self._q.append((last_index, size))
        self.bytes += size

    def free_le(self, index: int) -> None:
        """Forgets every APP whose last index is ``<= index`` (acknowledged)."""
        q = self._q
        while q and q[0][0] <= index:
            self.bytes -= q.popleft()[1]

    def free_first_one(self) -> None:
        """Forgets the oldest APP in flight, if any."""
        if self._q:
            self.bytes -= self._q.popleft()[1]

    def oldest(self) -> int:
        """Returns the last index of the oldest APP in flight (0 when there is none)."""
        return self._q[0][0] if self._q else 0

    def full(self) -> bool:
        """Returns True when no further APP may be sent (count or byte budget used up)."""
        return len(self._q) >= self.max_count or self.bytes >= self.max_bytes

    def count(self) -> int:
        """Returns the number of APPs in flight."""
        return len(self._q)

    def reset(self) -> None:
        """Forgets everything in flight."""
        self._q.clear()
        self.bytes = 0


class Progress:
    """What the leader knows about one member's log.

    Invariants: ``0 <= match < next``; in SNAPSHOT state ``pending_snapshot > 0`` and nothing
    is sent until the snapshot is reported; in PROBE state at most one APP is outstanding
    (``probe_sent``); in REPLICATE state the window is ``inflights``.
    """

    __slots__ = (
        "inflights",
        "is_learner",
        "match",
        "next",
        "pending_snapshot",
        "probe_sent",
        "reached",
        "recent_active",
        "state",
    )

    def __init__(
        self, next_index: int, max_count: int, max_bytes: int, is_learner: bool = False
    ) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False  # PROBE: an APP is outstanding; wait for a reply or heartbeat
        self.pending_snapshot = 0  # SNAPSHOT: the index of the snapshot being sent
        self.recent_active = False  # heard from within the last election timeout
        self.reached = 0  # the leader's match_rises when match last rose (lower: sooner)
        self.is_learner = is_learner
        self.inflights = Inflights(max_count, max_bytes)

    def _reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        """Switches to PROBE from ``match + 1``; from SNAPSHOT, from after the snapshot."""
        if self.state == ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        """Switches to REPLICATE from ``match + 1``."""
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        """Switches to SNAPSHOT while a snapshot at ``snapshot_index`` is on its way."""
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def is_paused(self) -> bool:
        """Returns True when the leader must not send another APP right now."""
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return self.inflights.full()
        return True

    def sent_entries(self, last_index: int, size: int) -> None:
        """Accounts for an APP carrying entries up to ``last_index`` (``size`` data bytes):
        REPLICATE moves ``next`` optimistically, PROBE pauses."""
        if self.state == ProgressState.REPLICATE:
            self.next = last_index + 1
            self.inflights.add(last_index, size)
        elif self.state == ProgressState.PROBE:
            self.probe_sent = True

    def maybe_update(self, index: int) -> bool:
        """Takes in an acknowledgement of the entries up to ``index``: raises ``match`` (and
        ``next`` past it), un-pauses a probe and frees the in-flight slots up to ``index``.
        Returns whether ``match`` moved."""
        updated = False
        if index > self.match:
            self.match = index
            updated = True
            self.probe_sent = False
        if index >= self.next:
            self.next = index + 1
        self.inflights.free_le(index)
        return updated

    def maybe_decr_to(self, rejected: int, next_hint: int) -> bool:
        """Takes in a rejection of the APP at ``rejected``: moves ``next`` back to
        ``next_hint`` (clamped to ``[match + 1, rejected]``); in REPLICATE state drops back
        to PROBE first. Returns False, changing nothing, for a stale rejection."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self._reset_state(ProgressState.PROBE)
        elif self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, next_hint), self.match + 1)
        self.probe_sent = False
        return True

    def status(self) -> ProgressStatus:
        """Returns the public view of this progress."""
        return ProgressStatus(self.match, self.next, self.state)

    def __repr__(self) -> str:
        return (
            f"Progress(match={self.match}, next={self.next}, state={self.state.name}, "
            f"inflight={self.inflights.count()})"
        )
