"""The time a leader stamps into every command (``ts``, milliseconds), which the state
machine's exactly-once table expires records by (``boltraft.storage.dedup``).

It is a cluster clock, not the leader's wall clock: a leader continues from the state
machine's clock (the largest ``ts`` applied, which every replica shares) and adds the time
its own MONOTONIC clock says passed since it took over. A node whose wall clock runs
ahead, a wall-clock jump, a restart or a change of leader therefore never moves the
clock further than time really passed on a leader, and records are never expired early.

Invariants: stamps from one leader never decrease; a stamp is never below the applied
clock seen when it was made. Time between two leaders (an election) is not counted: the
window of a retry only gets longer.
"""

from __future__ import annotations

from collections.abc import Callable


class LeaderClock:
    """Stamps for one node while it leads; ``start`` at each new leadership."""

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self._base = 0  # ms: the applied clock when this leadership (or rebase) began
        self._at = monotonic()  # the monotonic time of that moment
        self._last = 0

    def start(self, applied_clock: int) -> None:
        """Continues from ``applied_clock`` (the state machine's clock) from now on."""
        self._base = applied_clock
        self._at = self._monotonic()
        self._last = applied_clock

    def stamp(self, applied_clock: int) -> int:
        """The ``ts`` of a command proposed now. When the state machine's clock is ahead
        (entries of an earlier leader applied since ``start``), the clock continues from
        it."""
        now = self._monotonic()
        ts = self._base + int((now - self._at) * 1000)
        if applied_clock > ts:
            self._base, self._at, ts = applied_clock, now, applied_clock
        if ts < self._last:
            ts = self._last
        self._last = ts
        return ts
