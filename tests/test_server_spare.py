"""A leader's spare appends (``spare_append_ms``, ``boltraft.server.spare``): the held
batches on their own, then on the in-memory world of ``memworld`` (a fake clock: a batch
leaves when the clock passes its time)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from memworld import World

from boltraft.raft.types import Entry, Message, MessageType, SnapshotMeta
from boltraft.server.spare import SpareBatches
from boltraft.transport import codec

MT = MessageType


def _app(to: str, index: int) -> Message:
    return Message(MT.APP, to, "a", 1, 1, index - 1, [Entry(1, index, 0, b"x")])


def _beat(to: str) -> Message:
    return Message(MT.HEARTBEAT, to, "a", 1)


# --- SpareBatches ------------------------------------------------------------------------------
def test_held_appends_leave_together_once_due() -> None:
    sb = SpareBatches(0.01)
    sb.hold([_app("c", 5)], now=1.0)
    sb.hold([_app("c", 6)], now=1.005)
    assert sb.due == 1.01 and sb.held == 2
    assert sb.release(1.009) == []
    assert [m.index for m in sb.release(1.01)] == [4, 5]
    assert sb.due is None and sb.held == 0 and sb.release(2.0) == []


def test_a_later_message_to_a_held_follower_waits_behind_the_held_ones() -> None:
    sb = SpareBatches(0.01)
    sb.hold([_app("c", 5)], now=1.0)
    beat_c, app_b = _beat("c"), _app("b", 5)
    assert sb.route([app_b, beat_c]) == [app_b]  # b has nothing held: at once
    assert sb.release(1.01) == [_app("c", 5), beat_c]


def test_an_append_the_core_needs_now_takes_the_held_ones_out_first() -> None:
    sb = SpareBatches(0.01)
    held = _app("c", 5)
    sb.hold([held], now=1.0)
    now = _app("c", 6)  # not spare: c is needed now (the other follower fell behind)
    assert sb.route([_app("b", 6), now]) == [_app("b", 6), held, now]
    assert sb.due is None and sb.held == 0


def test_nothing_held_routes_everything_at_once() -> None:
    sb = SpareBatches(0.01)
    msgs = [_app("b", 5), _beat("c")]
    assert sb.route(msgs) == msgs
    sb.hold([], now=1.0)
    assert sb.due is None


# --- a leader on the in-memory world -----------------------------------------------------------
@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path, spare_append_ms=10)
    yield w
    w.close()


def _put(i: int) -> dict[str, Any]:
    return {"op": "put", "bucket": "b", "key": f"k{i}", "value": f"v{i}"}


def _recording(world: World, lead: str) -> list[tuple[str, int]]:
    """Records every Raft frame the leader sends: (to, number of entries in it)."""
    sent: list[tuple[str, int]] = []
    deliver = world.deliver

    def record(frm: str, to: str, frame: bytes) -> bool:
        if frm == lead:
            f = codec.decode_frame(frame)
            if f.kind == "raft":
                sent.append((to, sum(len(m.entries) for m in f.payload)))
        return deliver(frm, to, frame)

    world.deliver = record  # type: ignore[method-assign]
    return sent


def _ready(world: World) -> tuple[str, str, str]:
    """Returns (leader, the follower needed at once, the spare follower) of an idle world."""
    lead = world.elect()
    world.request(lead, 1, {"op": "create_bucket", "bucket": "b"})
    world.settle()
    world.step()  # every batch out, every follower acknowledged
    world.settle()
    sent = _recording(world, lead)
    world.request(lead, 2, _put(0))
    world.settle()
    [needed] = {to for to, n in sent if n}
    [spare] = [i for i in world.nodes if i not in (lead, needed)]
    world.step()
    world.settle()
    return lead, needed, spare


def test_writes_commit_at_once_and_the_spare_follower_gets_them_in_one_batch(
    world: World,
) -> None:
    lead, needed, spare = _ready(world)
    sent = _recording(world, lead)
    for i in range(5):
        world.request(lead, 10 + i, _put(i))
        world.settle()  # the clock stands still: no batch leaves
        assert world.responses(lead)[10 + i].ok
    assert [to for to, n in sent if n] == [needed] * 5
    assert world.nodes[spare].logstore.last_index() < world.nodes[lead].logstore.last_index()
    sent.clear()
    world.step()  # the batch's time comes: all five leave in this one flush
    world.settle()
    assert sum(n for to, n in sent if to == spare) == 5
    assert world.nodes[spare].logstore.last_index() == world.nodes[lead].logstore.last_index()


def test_a_lost_needed_follower_costs_a_write_one_batch_then_the_other_ranks_first(
    world: World,
) -> None:
    lead, needed, spare = _ready(world)
    world.isolate(needed)
    world.request(lead, 20, _put(20))
    world.settle()
    assert 20 not in world.responses(lead)  # waiting for the spare follower's batch
    world.step()
    world.settle()
    assert world.responses(lead)[20].ok
    sent = _recording(world, lead)
    world.request(lead, 21, _put(21))
    world.settle()
    assert world.responses(lead)[21].ok
    assert (spare, 1) in sent


def test_a_snapshot_message_that_waited_behind_a_batch_starts_a_transfer(world: World) -> None:
    """A SNAP to a follower with appends held waits behind them (order per follower); when
    the batch leaves, the SNAP goes to the snapshot transfer, as a SNAP sent at once does,
    and never in a Raft frame (the follower drops those: the leader would wait for that
    snapshot forever, its follower in the SNAPSHOT state)."""
    lead, _, spare = _ready(world)
    node = world.nodes[lead]
    started: list[Message] = []
    node.ops.on_snap_out = started.append  # type: ignore[method-assign]
    snaps_in_frames: list[str] = []
    deliver = world.deliver

    def record(frm: str, to: str, frame: bytes) -> bool:
        f = codec.decode_frame(frame)
        if frm == lead and f.kind == "raft":
            snaps_in_frames.extend(m.to for m in f.payload if m.type == MT.SNAP)
        return deliver(frm, to, frame)

    world.deliver = record  # type: ignore[method-assign]
    world.request(lead, 10, _put(10))
    world.settle()  # the clock stands still: the spare follower's append is held
    assert world.nodes[spare].logstore.last_index() < node.logstore.last_index()
    snap = Message(MT.SNAP, spare, lead, node.raw.raft.term, snapshot=SnapshotMeta(1, 1))
    assert node._spare.route([snap]) == []  # behind the held append
    world.step()  # the batch's time comes
    world.settle()
    assert [(m.type, m.to) for m in started] == [(MT.SNAP, spare)]
    assert snaps_in_frames == []
