"""The garbage-collector pause timer behind ``boltraft_gc_pause_seconds``."""

from __future__ import annotations

import gc

from boltraft.server.metrics import PauseTimer


def test_the_pause_timer_records_each_collection_until_closed() -> None:
    seen: list[tuple[int, float]] = []
    timer = PauseTimer(lambda gen, seconds: seen.append((gen, seconds)))
    try:
        gc.collect(2)
        gc.collect(0)
    finally:
        timer.close()
    assert [gen for gen, _ in seen][-2:] == [2, 0]
    assert all(seconds >= 0 for _, seconds in seen)
    n = len(seen)
    gc.collect(0)
    timer.close()  # a second close does nothing
    assert len(seen) == n
