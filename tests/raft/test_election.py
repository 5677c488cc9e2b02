"""Elections: randomized timeouts, votes, pre-vote, leader lease, term rules (paper 5.2)."""

from __future__ import annotations

from boltraft.raft.types import NONE, Message, MessageType, Role

from .network import Network

MT = MessageType


def test_single_node_elects_itself_on_timeout() -> None:
    net = Network(["a"])
    net.tick_all(20)
    st = net.nodes["a"].status()
    assert st.role == Role.LEADER and st.term == 1 and st.lead == "a"
    assert st.commit == 1  # its no-op committed after its own write


def test_three_nodes_elect_exactly_one_leader_by_timeout() -> None:
    net = Network(["a", "b", "c"])
    net.tick_all(25)
    assert len(net.leaders()) == 1
    lead = net.leaders()[0]
    for n in net.nodes.values():
        st = n.status()
        assert st.lead == lead and st.term == 1


def test_randomized_timeouts_are_in_range_and_seeded() -> None:
    net = Network(["a", "b", "c"])
    timeouts = {nid: n.raft.randomized_election_timeout for nid, n in net.nodes.items()}
    assert all(10 <= t < 20 for t in timeouts.values())
    again = Network(["a", "b", "c"])
    assert {nid: n.raft.randomized_election_timeout for nid, n in again.nodes.items()} == timeouts


def test_pre_vote_does_not_bump_the_term_when_it_fails() -> None:
    net = Network(["a", "b", "c"])
    net.isolate("a")
    net.nodes["a"].campaign()
    net.settle()
    st = net.nodes["a"].status()
    assert st.role == Role.PRE_CANDIDATE and st.term == 0


def test_without_pre_vote_campaign_bumps_the_term() -> None:
    net = Network(["a", "b", "c"], pre_vote=False)
    net.isolate("a")
    net.nodes["a"].campaign()
    net.settle()
    st = net.nodes["a"].status()
    assert st.role == Role.CANDIDATE and st.term == 1 and st.vote == "a"


def test_vote_is_granted_once_per_term() -> None:
    net = Network(["a", "b", "c"], pre_vote=False)
    b = net.nodes["b"]
    b.step(Message(MT.VOTE, "b", "a", term=1, index=0, log_term=0))
    b.step(Message(MT.VOTE, "b", "c", term=1, index=0, log_term=0))
    rd = b.ready()
    votes = [(m.to, m.reject) for m in rd.messages if m.type == MT.VOTE_RESP]
    assert votes == [("a", False), ("c", True)]
    assert rd.hard_state is not None and rd.hard_state.vote == "a"
    assert rd.early_messages == []  # a follower's votes wait for the hard state to persist


def test_vote_rejected_for_a_less_up_to_date_log() -> None:
    net = Network(["a", "b", "c"], check_quorum=False)
    net.elect("a")
    net.propose("a", b"x")
    b = net.nodes["b"]
    # c's log is as long as b's but of an older term: denied (paper 5.4.1)
    b.step(Message(MT.VOTE, "b", "c", term=5, index=2, log_term=0))
    msgs = b.ready().messages
    assert [(m.type, m.reject) for m in msgs] == [(MT.VOTE_RESP, True)]


def test_leader_lease_ignores_vote_requests_while_leader_is_live() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    b = net.nodes["b"]
    b.step(Message(MT.PRE_VOTE, "b", "c", term=2, index=99, log_term=9))
    b.step(Message(MT.VOTE, "b", "c", term=2, index=99, log_term=9))
    assert not b.raft.msgs and b.status().term == 1 and b.status().lead == "a"


def test_higher_term_append_makes_a_candidate_follow() -> None:
    net = Network(["a", "b", "c"], pre_vote=False)
    net.isolate("a")
    net.nodes["a"].campaign()
    net.settle()
    a = net.nodes["a"]
    a.step(Message(MT.HEARTBEAT, "a", "b", term=3, commit=0))
    st = a.status()
    assert st.role == Role.FOLLOWER and st.term == 3 and st.lead == "b"


def test_stale_term_heartbeat_is_answered_with_the_current_term() -> None:
    net = Network(["a", "b", "c"], check_quorum=False)
    net.elect("a")
    net.elect("b")
    b = net.nodes["b"]
    b.step(Message(MT.HEARTBEAT, "b", "a", term=1))
    m = b.raft.msgs[-1]
    assert (m.type, m.to, m.term) == (MT.APP_RESP, "a", 2)


def test_split_vote_is_lost_and_retried() -> None:
    net = Network(["a", "b", "c", "d"], pre_vote=False, check_quorum=False)
    net.cut("a", "c")
    net.cut("a", "d")
    net.cut("b", "c")
    net.cut("b", "d")
    net.nodes["a"].campaign()
    net.nodes["c"].campaign()
    net.settle()
    assert net.leaders() == []
    net.recover()
    net.tick_all(60)
    assert len(net.leaders()) == 1


def test_learner_never_campaigns() -> None:
    net = Network(["a"], learners=["l"])
    net.nodes["l"].campaign()
    net.settle()
    assert net.nodes["l"].status().role == Role.FOLLOWER
    net.tick("l", 100)
    assert net.nodes["l"].status().term == 0 or net.nodes["l"].status().lead != NONE
