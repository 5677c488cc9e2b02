"""Spare appends (``Config.spare_appends``): an idle leader sends a new entry at once to the
followers a quorum needs (those that acknowledged soonest; a tie keeps the role where it is)
and marks its appends to the others spare (``Ready.spare_messages``), which the runtime may
batch; while writes are in flight every follower gets them at once; a spare follower that
overtakes the others ranks first at the next round."""

from __future__ import annotations

from boltraft.raft.rawnode import RawNode
from boltraft.raft.types import Message, MessageType, ProgressState, Ready

from .network import Network

MT = MessageType


def _write(net: Network, nid: str, data: bytes) -> Ready:
    """Proposes ``data`` on the leader ``nid`` and returns its Ready, persisted and
    advanced; its messages are NOT sent."""
    node = net.nodes[nid]
    node.propose([data])
    rd = node.ready()
    net.stores[nid].append(rd.entries, rd.hard_state)
    node.advance(rd)
    return rd


def _deliver(net: Network, msgs: list[Message]) -> None:
    """Delivers ``msgs`` and every message they lead to, until the network settles."""
    net.send(msgs)
    net.settle()


def _apps(msgs: list[Message]) -> list[str]:
    return [m.to for m in msgs if m.type == MT.APP and m.entries]


def _idle_cluster(ids: str = "abc") -> Network:
    net = Network(list(ids), spare_appends=True)
    net.elect("a")
    net.propose("a", b"warm")  # every follower has acknowledged everything
    return net


def test_an_idle_leader_sends_a_new_entry_at_once_to_one_follower_of_three() -> None:
    net = _idle_cluster()
    rd = _write(net, "a", b"x")
    assert len(_apps(rd.early_messages)) == 1
    assert len(_apps(rd.spare_messages)) == 1
    assert {*_apps(rd.early_messages), *_apps(rd.spare_messages)} == {"b", "c"}
    assert all(m.type == MT.APP for m in rd.spare_messages)
    _deliver(net, rd.early_messages)  # the spare one held back: the commit comes anyway
    assert net.nodes["a"].status().commit == rd.entries[-1].index
    _deliver(net, rd.spare_messages)  # and the spare follower catches up from its batch
    assert net.log_of("b") == net.log_of("c") == net.log_of("a")


def test_the_follower_that_acknowledged_soonest_gets_the_next_entry_at_once() -> None:
    net = _idle_cluster()
    for first, second in (("c", "b"), ("b", "c"), ("c", "b")):
        rd = _write(net, "a", b"x")
        apps = [m for m in rd.early_messages + rd.spare_messages if m.type == MT.APP]
        # deliver to `first`, let its answer arrive, then the other's
        for nid in (first, second):
            _deliver(net, [m for m in apps if m.to == nid])
        nxt = _write(net, "a", b"y")
        assert _apps(nxt.early_messages) == [first]
        assert _apps(nxt.spare_messages) == [second]
        _deliver(net, nxt.early_messages + nxt.spare_messages)


def test_a_tie_keeps_the_needed_follower_in_its_role() -> None:
    net = _idle_cluster()
    rd = _write(net, "a", b"x")
    [needed] = _apps(rd.early_messages)
    [spare] = _apps(rd.spare_messages)
    for m in rd.early_messages + rd.spare_messages:
        net.nodes[m.to].step(m)
    # both answers reach the leader before its next Ready, the spare one's first
    for m in net.process(spare) + net.process(needed):
        net.nodes["a"].step(m)
    nxt = _write(net, "a", b"y")
    assert _apps(nxt.early_messages) == [needed]
    assert _apps(nxt.spare_messages) == [spare]


def test_a_spare_follower_that_overtakes_the_needed_one_ranks_first() -> None:
    net = _idle_cluster()
    rd = _write(net, "a", b"x")
    [needed] = _apps(rd.early_messages)
    [spare] = _apps(rd.spare_messages)
    net.isolate(needed)  # it crashed: the commit comes from the spare one's batch
    _deliver(net, rd.early_messages + rd.spare_messages)
    assert net.nodes["a"].status().commit == rd.entries[-1].index
    nxt = _write(net, "a", b"y")
    assert _apps(nxt.early_messages) == [spare]
    assert _apps(nxt.spare_messages) == [needed]  # the lost one: batched from now on
    _deliver(net, nxt.early_messages)
    assert net.nodes["a"].status().commit == nxt.entries[-1].index


def test_while_writes_are_in_flight_every_follower_gets_them_at_once() -> None:
    net = _idle_cluster()
    first = _write(net, "a", b"x")  # its appends not delivered yet: a write in flight
    second = _write(net, "a", b"y")
    assert len(_apps(first.spare_messages)) == 1
    assert sorted(_apps(second.early_messages)) == ["b", "c"]
    assert second.spare_messages == []
    _deliver(net, first.early_messages + first.spare_messages + second.early_messages)
    assert net.log_of("b") == net.log_of("c") == net.log_of("a")


def test_five_voters_need_two_followers_at_once_and_two_are_spare() -> None:
    net = _idle_cluster("abcde")
    rd = _write(net, "a", b"x")
    assert len(_apps(rd.early_messages)) == 2
    assert len(_apps(rd.spare_messages)) == 2
    _deliver(net, rd.early_messages)
    assert net.nodes["a"].status().commit == rd.entries[-1].index


def test_a_probed_follower_is_never_held_back() -> None:
    net = _idle_cluster()
    leader: RawNode = net.nodes["a"]
    for nid in "bc":
        leader.raft.progress[nid].become_probe()  # as after a rejection or a restart
    rd = _write(net, "a", b"x")
    assert rd.spare_messages == []
    assert sorted(_apps(rd.early_messages)) == ["b", "c"]
    assert all(
        leader.raft.progress[nid].state == ProgressState.PROBE for nid in "bc"
    )  # probes stay probes until answered


def test_learners_and_heartbeats_are_never_spare() -> None:
    net = Network(["a", "b", "c"], learners=["l"], spare_appends=True)
    net.elect("a")
    net.propose("a", b"warm")
    rd = _write(net, "a", b"x")
    assert "l" in _apps(rd.early_messages)
    assert _apps(rd.spare_messages) in (["b"], ["c"])
    net.tick("a", 1)  # a heartbeat round goes to everyone at once
    beats = [m for m in net.delivered if m.type == MT.HEARTBEAT]
    assert {m.to for m in beats} >= {"b", "c", "l"}


def test_without_the_option_nothing_is_spare() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.propose("a", b"warm")
    rd = _write(net, "a", b"x")
    assert sorted(_apps(rd.early_messages)) == ["b", "c"]
    assert rd.spare_messages == []
