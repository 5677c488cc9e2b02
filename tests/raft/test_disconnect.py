"""A closed connection to the leader (``RawNode.report_disconnected``): the survivors elect a
new leader at once, staggered so that they do not split the vote, while pre-vote and the
leader lease keep a live leader in office."""

from __future__ import annotations

from boltraft.raft.types import NONE, Message, MessageType, Role

from .network import Network

MT = MessageType


def _crash(net: Network, nid: str) -> None:
    """The node stops: everything to and from it is lost, and it is never ticked again."""
    net.isolate(nid)
    net.inflight = [m for m in net.inflight if nid not in (m.to, m.frm)]


def _leaders(net: Network, dead: str) -> list[str]:
    """The nodes but ``dead`` that lead (a crashed leader still thinks it does)."""
    return [nid for nid in net.leaders() if nid != dead]


def test_the_first_voter_after_the_lost_leader_wins_without_waiting_for_a_timeout() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.propose("a", b"x")
    _crash(net, "a")
    net.nodes["c"].report_disconnected("a")  # c ranks second: it only forgets its leader
    assert net.nodes["c"].status().lead == NONE
    assert net.nodes["c"].status().role == Role.FOLLOWER
    net.nodes["b"].report_disconnected("a")  # b ranks first after a: it campaigns now
    net.settle()
    assert net.nodes["b"].status().role == Role.LEADER
    assert net.nodes["b"].status().term == 2
    assert net.nodes["c"].status().lead == "b"
    assert net.nodes["c"].status().term == 2
    net.propose("b", b"y")
    assert net.data_applied("c") == [b"x", b"y"]


def test_the_ring_after_the_leader_decides_who_goes_first() -> None:
    net = Network(["a", "b", "c"])
    net.elect("c")
    _crash(net, "c")
    for nid in ("b", "a"):  # after c comes a (wrapping around), then b
        net.nodes[nid].report_disconnected("c")
    net.settle()
    assert _leaders(net, "c") == ["a"]
    assert net.nodes["b"].status().term == 2


def test_the_first_in_line_retries_its_pre_vote_each_tick_until_a_leader_is_known() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    _crash(net, "a")
    net.nodes["b"].report_disconnected("a")
    net.settle()
    # c has not seen the connection close yet: it honours a's lease and ignores b
    assert net.nodes["b"].status().role == Role.PRE_CANDIDATE
    assert net.nodes["c"].status().lead == "a"
    net.nodes["c"].report_disconnected("a")
    net.tick("b")
    assert _leaders(net, "a") == ["b"]


def test_a_live_leader_keeps_its_term_when_one_follower_loses_its_connection() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.delivered.clear()
    net.nodes["b"].report_disconnected("a")  # a and c are fine and hear each other
    net.settle()
    assert net.nodes["b"].status().role == Role.PRE_CANDIDATE
    assert net.nodes["a"].status().role == Role.LEADER
    net.tick_all(3)  # b pre-votes again; a's heartbeat brings it back
    for nid in "abc":
        st = net.nodes[nid].status()
        assert st.term == 1 and st.lead == "a"
    assert not any(m.type == MT.VOTE for m in net.delivered)


def test_only_the_current_leaders_connection_counts() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    b = net.nodes["b"]
    b.report_disconnected("c")  # another follower
    b.report_disconnected("")
    net.nodes["a"].report_disconnected("b")  # the leader ignores its followers' connections
    assert b.status().lead == "a" and b.status().role == Role.FOLLOWER
    assert not b.raft.msgs
    assert net.nodes["a"].status().role == Role.LEADER


def test_a_learner_forgets_the_lost_leader_but_never_campaigns() -> None:
    net = Network(["a", "b", "c"], learners=["d"])
    net.elect("a")
    d = net.nodes["d"]
    assert d.status().lead == "a"
    d.report_disconnected("a")
    assert d.status().lead == NONE and d.status().role == Role.FOLLOWER
    assert not d.raft.msgs


def test_without_pre_vote_the_first_in_line_starts_a_real_election_at_once() -> None:
    net = Network(["a", "b", "c"], pre_vote=False)
    net.elect("a")
    _crash(net, "a")
    net.nodes["c"].report_disconnected("a")
    net.nodes["b"].report_disconnected("a")
    net.settle()
    assert _leaders(net, "a") == ["b"] and net.nodes["b"].status().term == 2


def test_a_vote_request_after_the_report_is_granted_despite_the_recent_leader() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    c = net.nodes["c"]
    c.report_disconnected("a")
    c.step(Message(MT.PRE_VOTE, "c", "b", term=2, index=1, log_term=1))
    assert [(m.type, m.reject) for m in c.raft.msgs] == [(MT.PRE_VOTE_RESP, False)]


def test_a_first_voter_whose_log_is_behind_makes_the_one_ahead_stand_at_once() -> None:
    """b ranks first after a but lacks a's last entry (a spare follower whose batch had not
    left); c holds it. c rejects b's pre-vote and, leaderless, stands itself at once: the
    survivors elect c without a single tick."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.cut("a", "b")
    net.propose("a", b"x")  # committed by a and c
    assert net.nodes["b"].raft.log.last_index() < net.nodes["c"].raft.log.last_index()
    _crash(net, "a")
    net.nodes["c"].report_disconnected("a")
    net.nodes["b"].report_disconnected("a")
    net.settle()
    assert _leaders(net, "a") == ["c"]
    assert net.nodes["b"].status().lead == "c"
    assert net.nodes["c"].status().term == 2  # one election
    net.propose("c", b"y")
    assert net.data_applied("b") == [b"x", b"y"]


def test_a_follower_that_knows_its_leader_does_not_stand_for_a_stale_candidate() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.cut("a", "b")
    net.propose("a", b"x")
    net.recover()
    net.cut("a", "b")  # b hears nothing from a: it campaigns with its shorter log
    net.nodes["b"].campaign()
    net.settle()
    assert _leaders(net, "b") == ["a"]  # c, led by a, ignores b (lease) and stays put
    assert net.nodes["c"].status().lead == "a"
    assert net.nodes["c"].status().term == 1
