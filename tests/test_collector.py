"""The node's garbage-collector settings (``boltraft.server.collector``)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from boltraft.server.collector import THRESHOLDS, PauseTimer, settle


@pytest.fixture
def restored_gc() -> Iterator[None]:
    """Gives the test process its collector back as it was."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_settle_freezes_what_is_alive_and_spaces_out_full_collections(restored_gc: None) -> None:
    alive = [[i] for i in range(1000)]  # tracked containers alive when the node settles
    frozen = settle()
    assert frozen == gc.get_freeze_count()
    assert frozen > len(alive)
    assert gc.get_threshold() == THRESHOLDS
    assert all(not any(o is x for x in gc.get_objects(2)) for o in alive[:5])


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
