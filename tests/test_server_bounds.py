"""What a follower catching up costs is bounded by the node's settings: the leader sends it at
most ``max_inflight_bytes`` of entries at a time, and it hands the state machine at most
``max_apply_bytes`` per Ready (with ``lazy_apply``, plus what it kept), on the in-memory world
of ``memworld``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from memworld import World

from boltraft.raft.types import Entry
from boltraft.server import applying
from boltraft.transport import codec

VALUE = 128 << 10
LAG = 48  # 6 MiB of values: more than either bound
MAX_MSG = 1 << 20  # the core's max_size_per_msg
WINDOW = 1 << 20
APPLY = 256 << 10


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path, max_inflight_bytes=WINDOW, max_apply_bytes=APPLY)
    yield w
    w.close()


def _lagging(world: World) -> tuple[str, str]:
    """Returns (leader, follower) after LAG puts of VALUE bytes the follower missed."""
    lead = world.elect()
    world.request(lead, 1, {"op": "create_bucket", "bucket": "b"})
    world.settle()
    follower = next(i for i in world.nodes if i != lead)
    world.isolate(follower)
    for i in range(LAG):
        put = {"op": "put", "bucket": "b", "key": f"k{i}", "value": bytes([i]) * VALUE}
        world.request(lead, 100 + i, put)
        world.settle()
    assert all(world.responses(lead)[100 + i].ok for i in range(LAG))
    world.heal()
    return lead, follower


def _catch_up(world: World, lead: str, follower: str, each_step: Any) -> None:
    """Steps the world until ``follower`` applied all the leader did, calling
    ``each_step()`` after every step; fails after 300 steps."""
    f, leader = world.nodes[follower], world.nodes[lead]
    for _ in range(300):
        world.step()
        each_step()
        if f.applied == leader.applied:
            break
    assert f.applied == leader.applied
    with f.sm.db.view() as tx:
        assert tx.bucket("b").get(f"k{LAG - 1}".encode()) == bytes([LAG - 1]) * VALUE


def test_a_lagging_follower_is_sent_one_window_at_a_time(world: World) -> None:
    lead, follower = _lagging(world)
    step_bytes = [0]
    per_step: list[int] = []
    deliver = world.deliver

    def counting(frm: str, to: str, frame: bytes) -> bool:
        if frm == lead and to == follower:
            f = codec.decode_frame(frame)
            if f.kind == codec.KIND_RAFT:
                step_bytes[0] += sum(len(e.data) for m in f.payload for e in m.entries)
        return deliver(frm, to, frame)

    def note() -> None:
        per_step.append(step_bytes[0])
        step_bytes[0] = 0

    world.deliver = counting  # type: ignore[method-assign]
    _catch_up(world, lead, follower, note)
    # the window, passed by at most the APP that filled it
    assert 0 < max(per_step) <= WINDOW + MAX_MSG
    assert sum(per_step) >= LAG * VALUE


def test_a_catching_up_follower_applies_at_most_max_apply_bytes_per_ready(
    world: World,
) -> None:
    lead, follower = _lagging(world)
    f = world.nodes[follower]
    sizes: list[int] = []
    real_apply = f.sm.apply

    def apply(ents: list[Entry]) -> list[Any]:
        sizes.append(sum(len(e.data) for e in ents))
        return real_apply(ents)

    f.sm.apply = apply  # type: ignore[method-assign]
    _catch_up(world, lead, follower, lambda: None)
    assert sum(sizes) >= LAG * VALUE
    assert max(sizes) <= applying.LAZY_APPLY_BYTES + APPLY
