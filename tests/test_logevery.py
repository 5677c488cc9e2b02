"""``LogEvery``: a repeated condition is logged loudly at most once per period and key."""

from __future__ import annotations

from boltraft.server.logevery import LogEvery


def test_a_key_is_due_once_per_period_and_again_after_forget() -> None:
    every = LogEvery(10.0)
    assert every.due("a", 100.0) and not every.recent("b", 100.0)
    assert every.recent("a", 105.0) and not every.due("a", 109.9)
    assert every.due("b", 105.0)  # keys are apart
    assert every.due("a", 110.0) and not every.due("a", 115.0)
    every.forget("a")
    assert not every.recent("a", 115.0) and every.due("a", 115.0)
