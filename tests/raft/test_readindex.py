"""ReadIndex (Raft thesis 6.4): linearizable reads confirmed by a quorum heartbeat round."""

from __future__ import annotations

import pytest

from boltraft.errors import ProposalDroppedError
from boltraft.raft.types import MessageType, ReadState

from .network import Network

MT = MessageType


def read_heartbeats(net: Network) -> list[bytes]:
    return [m.context for m in net.delivered if m.type == MT.HEARTBEAT and m.context]


def test_leader_read_waits_for_a_quorum_round() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.propose("a", b"x")
    a = net.nodes["a"]
    a.read_index(b"r1")
    rd = a.ready()
    assert rd.read_states == []  # not before the heartbeat round
    assert {m.to for m in rd.early_messages if m.type == MT.HEARTBEAT} == {"b", "c"}
    net.send(rd.early_messages + rd.messages)
    a.advance(rd)
    net.settle()
    assert net.read_states["a"] == [ReadState(2, b"r1")]


def test_reads_between_two_readies_share_one_heartbeat_round() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.delivered.clear()
    for i in range(5):
        net.nodes["a"].read_index(b"r%d" % i)
    net.settle()
    assert len(read_heartbeats(net)) == 2  # one round: one heartbeat per follower
    assert [rs.context for rs in net.read_states["a"]] == [b"r%d" % i for i in range(5)]
    assert {rs.index for rs in net.read_states["a"]} == {1}


def test_read_is_not_served_without_a_quorum() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.isolate("a")
    net.nodes["a"].read_index(b"r")
    net.settle()
    assert net.read_states["a"] == []


def test_one_follower_ack_is_enough_in_three_nodes() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.cut("a", "c")
    net.nodes["a"].read_index(b"r")
    net.settle()
    assert net.read_states["a"] == [ReadState(1, b"r")]


def test_a_later_round_releases_earlier_ones() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    a = net.nodes["a"]
    net.isolate("a")
    a.read_index(b"early")
    net.settle()  # the first round's heartbeats are lost
    net.recover()
    a.read_index(b"late")
    net.settle()
    assert [rs.context for rs in net.read_states["a"]] == [b"early", b"late"]


def test_new_leader_defers_reads_until_its_noop_commits() -> None:
    net = Network(["a", "b", "c"])
    net.drop_filter = lambda m: m.type == MT.APP
    net.elect("a")
    net.nodes["a"].read_index(b"r")
    net.settle()
    assert net.read_states["a"] == [] and read_heartbeats(net) == []
    net.recover()
    net.tick("a")  # heartbeat -> probe -> the no-op commits -> the read goes ahead
    assert net.read_states["a"] == [ReadState(1, b"r")]


def test_follower_read_is_forwarded_and_answered() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.propose("a", b"x", b"y")
    net.nodes["b"].read_index(b"fr")
    net.settle()
    assert net.read_states["b"] == [ReadState(3, b"fr")]
    assert [m.type for m in net.delivered if m.context == b"fr"] == [
        MT.READ_INDEX,
        MT.READ_INDEX_RESP,
    ]


def test_read_without_a_known_leader_is_dropped() -> None:
    net = Network(["a", "b", "c"])
    with pytest.raises(ProposalDroppedError):
        net.nodes["b"].read_index(b"r")


def test_single_voter_reads_at_once() -> None:
    net = Network(["a"])
    net.elect("a")
    net.nodes["a"].read_index(b"r")
    net.settle()
    assert net.read_states["a"] == [ReadState(1, b"r")]


def test_pending_reads_are_dropped_when_leadership_is_lost() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.isolate("a")
    net.nodes["a"].read_index(b"r")
    net.settle()
    net.tick("a", 20)  # check-quorum: steps down within two election timeouts
    net.recover()
    net.settle()
    assert net.read_states["a"] == [] and not net.nodes["a"].raft.read_only.rounds


def test_a_read_needs_three_acks_of_five_voters() -> None:
    """Five voters: the leader's and one follower's acks are two, not a quorum; the
    read is answered once a third voter acks a heartbeat of its round."""
    net = Network(["a", "b", "c", "d", "e"])
    net.elect("a")
    net.propose("a", b"x")
    for far in "cde":
        net.cut("a", far)
    net.nodes["a"].read_index(b"r")
    net.settle()
    assert net.read_states["a"] == []
    net.cut_pairs.discard(frozenset(("a", "c")))
    net.tick("a")  # the next heartbeat carries the round's context; c acks it
    assert net.read_states["a"] == [ReadState(2, b"r")]
