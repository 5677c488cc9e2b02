"""The periodic corruption check (``boltraft.server.corruptcheck``) on the in-memory world:
the leader compares the replicas' content hashes taken at the same applied index, raises
the alarm in ``status`` when two differ, and counts a round it could not compare; hostile
``hash`` frames are dropped. On real processes: ``tests/integration/test_corruption.py``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from memworld import World

from boltraft.errors import MalformedFrameError
from boltraft.server import wire
from boltraft.transport import codec
from boltraft.transport.zmq_transport import Incoming


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path, corrupt_check_ms=200)
    yield w
    w.close()


def _ready(world: World) -> str:
    lead = world.elect()
    world.request(lead, 1, {"op": "create_bucket", "bucket": "b"})
    world.request(lead, 2, {"op": "put", "bucket": "b", "key": "k", "value": "v"})
    world.settle()
    return lead


def test_equal_replicas_compare_without_an_alarm(world: World) -> None:
    lead = _ready(world)
    node = world.nodes[lead]
    world.step_until(lambda: node.corrupt.counters["compared"] >= 2, "two compared rounds")
    st = node.status_dict()
    assert st["corrupt"] == "" and st["corrupt_check"]["alarm"] == ""


def test_a_replica_whose_content_differs_raises_the_alarm_on_the_leader(world: World) -> None:
    lead = _ready(world)
    other = next(i for i in world.nodes if i != lead)
    sm = world.nodes[other].sm
    real = sm.content_hash

    def drifted() -> tuple[int, str]:  # damage the value checksums cannot see
        applied, _ = real()
        return applied, "f" * 64

    sm.content_hash = drifted  # type: ignore[method-assign]
    node = world.nodes[lead]
    world.step_until(lambda: bool(node.corrupt.alarm), "the alarm")
    alarm = node.status_dict()["corrupt"]
    assert "the replicas differ at applied index" in alarm and other in alarm
    assert world.nodes[lead].is_leader  # an alarm, not a stop


@pytest.mark.parametrize(
    "fields",
    [
        ["ask"],
        ["ask", -1],
        ["is", 1, 2, "zz"],
        ["is", 1, 2],
        ["tell", 1],
        ["is", 1, 1 << 63, "a" * 64],
    ],
)
def test_malformed_hash_frames_are_refused_by_the_codec(fields: list[object]) -> None:
    wire.register_kinds()
    with pytest.raises(MalformedFrameError):
        codec.decode_frame(codec.encode_frame(wire.HASH, *fields))


def test_hash_frames_from_a_non_member_or_of_another_round_are_dropped(world: World) -> None:
    lead = _ready(world)
    node = world.nodes[lead]
    node.process([Incoming(wire.HASH, ["ask", 1], b"stranger", None)])
    node.process([Incoming(wire.HASH, ["is", 99, 5, "a" * 64], lead.encode(), None)])
    other = next(i for i in world.nodes if i != lead)
    node.process([Incoming(wire.HASH, ["is", 99, 5, "a" * 64], other.encode(), None)])
    assert node.corrupt.counters["bad_hash_frames"] == 3
    assert node.corrupt.alarm == ""
