"""The leader's command timestamps (``boltraft.server.stamps``): a cluster clock continued
from the applied clock by the leader's monotonic clock, never from its wall clock."""

from __future__ import annotations

from boltraft.server.stamps import LeaderClock


class Mono:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_a_leader_continues_from_the_applied_clock_by_monotonic_time() -> None:
    mono = Mono()
    clock = LeaderClock(mono)
    clock.start(1_000_000)
    assert clock.stamp(1_000_000) == 1_000_000
    mono.now += 2.5
    assert clock.stamp(1_000_000) == 1_002_500


def test_an_applied_clock_ahead_of_the_stamps_moves_them_up() -> None:
    mono = Mono()
    clock = LeaderClock(mono)
    clock.start(1_000)  # the entries of the last leader were not all applied yet
    mono.now += 1.0
    assert clock.stamp(9_000) == 9_000  # they were: continue from their clock
    mono.now += 0.5
    assert clock.stamp(9_000) == 9_500


def test_stamps_never_decrease_and_a_new_leadership_restarts_from_the_applied_clock() -> None:
    mono = Mono()
    clock = LeaderClock(mono)
    clock.start(5_000)
    mono.now += 1.0
    assert clock.stamp(5_000) == 6_000
    mono.now -= 0.5  # a monotonic clock does not go back; the stamps would not either
    assert clock.stamp(5_000) == 6_000
    clock.start(7_000)  # leading again later, after another leader's entries
    assert clock.stamp(7_000) == 7_000
