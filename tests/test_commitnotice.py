"""``CommitNotices``: when a follower serving watches tells its leader, and whom a leader
tells of each commit at once; the ``watching`` frame's shape and who may send it."""

from __future__ import annotations

from pathlib import Path

import pytest
from memworld import World

from boltraft.errors import MalformedFrameError
from boltraft.server import wire
from boltraft.server.commitnotice import EXPIRE_S, NOTICE_S, CommitNotices
from boltraft.transport import codec
from boltraft.transport.zmq_transport import Incoming


def test_a_follower_tells_at_once_then_every_notice_interval_while_it_serves_watches() -> None:
    n = CommitNotices()
    assert not n.due(0.0, "a", watching=False)
    assert n.due(1.0, "a", watching=True)  # it started to: at once
    assert not n.due(1.0 + NOTICE_S / 2, "a", watching=True)
    assert n.due(1.0 + NOTICE_S, "a", watching=True)
    assert n.due(1.0 + NOTICE_S + 0.01, "b", watching=True)  # a new leader: at once
    assert not n.due(1.0 + NOTICE_S + 0.02, "", watching=True)  # no leader known
    assert n.due(1.0 + NOTICE_S + 0.03, "b", watching=True)  # known again: at once
    assert not n.due(1.0 + NOTICE_S + 0.04, "b", watching=False)  # it stopped
    assert n.due(1.0 + NOTICE_S + 0.05, "b", watching=True)  # and started again: at once


def test_a_leader_tells_the_followers_it_heard_until_their_notices_expire() -> None:
    n = CommitNotices()
    assert n.members == [] and not n.expire(100.0)
    assert n.heard("n3", 0.0)
    assert not n.heard("n3", 1.0)  # a repeat changes nothing
    assert n.heard("n2", 2.0)
    assert n.members == ["n2", "n3"]
    assert not n.expire(1.0 + EXPIRE_S - 0.01)
    assert n.expire(1.0 + EXPIRE_S)
    assert n.members == ["n2"]
    assert n.expire(2.0 + EXPIRE_S) and n.members == []


@pytest.mark.parametrize("fields", [[1], ["x"], [{}]])
def test_a_watching_frame_carries_nothing(fields: list[object]) -> None:
    wire.register_kinds()
    assert codec.decode_frame(wire.WATCHING_FRAME).kind == wire.WATCHING
    with pytest.raises(MalformedFrameError):
        codec.decode_frame(codec.encode_frame(wire.WATCHING, *fields))


def test_a_leader_ignores_watching_notices_of_non_members(tmp_path: Path) -> None:
    world = World(tmp_path)
    try:
        lead = world.elect()
        node = world.nodes[lead]
        node.process([Incoming(wire.WATCHING, [], b"stranger", None)])
        assert node.status_dict()["prompt_commit"] == []
        other = next(i for i in world.nodes if i != lead)
        node.process([Incoming(wire.WATCHING, [], other.encode(), None)])
        assert node.status_dict()["prompt_commit"] == [other]
    finally:
        world.close()
