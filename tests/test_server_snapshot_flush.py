"""The state flush a log compaction needs (``boltraft.server.snapshots``): the snapshot
worker makes the state durable after its copy, so the compaction on the loop's thread does
not flush it again (with many dirty pages that flush held the loop up for hundreds of
milliseconds); an error of the worker's flush is raised on the loop's thread, at the
compaction, as the loop's own flush would have raised it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from memworld import World

from boltraft.server.node import Node

DEADLINE_S = 30.0


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path, snapshot_entries=20, snapshot_keep_entries=2)
    yield w
    w.close()


def _record_syncs(node: Node, fail: bool = False) -> list[int]:
    """The thread ids of ``node``'s state-machine flushes, from now on; with ``fail`` each
    flush off the loop's thread raises OSError instead."""
    sm = node.sm
    real = sm.sync
    loop = threading.get_ident()
    calls: list[int] = []

    def sync() -> None:
        calls.append(threading.get_ident())
        if fail and threading.get_ident() != loop:
            raise OSError(5, "test: the disk failed")
        real()

    sm.sync = sync  # type: ignore[method-assign]
    return calls


def _write(world: World, lead: str, n: int) -> None:
    for i in range(n):
        world.request(lead, 100 + i, {"op": "put", "bucket": "b", "key": f"k{i}", "value": "v"})
        world.settle()


def test_the_snapshot_worker_flushes_the_state_and_the_compaction_does_not(world: World) -> None:
    lead = world.elect()
    world.request(lead, 1, {"op": "create_bucket", "bucket": "b"})
    world.settle()
    node = world.nodes[lead]
    calls = _record_syncs(node)
    snaps = node.ops.snapshots
    _write(world, lead, 30)
    world.step_until(lambda: snaps.stats["compactions"] >= 1, "a compaction", DEADLINE_S)
    loop = threading.get_ident()
    assert calls and all(t != loop for t in calls)
    assert node.logstore.snapshot_meta().index > 1
    assert node.sm.applied[0] >= node.logstore.snapshot_meta().index


def test_a_failed_flush_of_the_snapshot_worker_is_raised_at_the_compaction(
    world: World,
) -> None:
    lead = world.elect()
    world.request(lead, 1, {"op": "create_bucket", "bucket": "b"})
    world.settle()
    node = world.nodes[lead]
    _record_syncs(node, fail=True)
    before = node.logstore.snapshot_meta().index
    with pytest.raises(OSError, match="the disk failed"):
        _write(world, lead, 30)
        world.step_until(lambda: False, "the flush's error", DEADLINE_S)
    assert node.logstore.snapshot_meta().index == before  # nothing compacted
