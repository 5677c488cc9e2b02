"""Single-server membership changes (Raft thesis 4.1), in effect once committed."""

from __future__ import annotations

import pytest

from boltraft.errors import MembershipError, ProposalDroppedError
from boltraft.raft.types import ConfChange, ConfChangeType, EntryType, MessageType, Role

from .network import Network

CT = ConfChangeType
MT = MessageType


def change(net: Network, leader: str, cc: ConfChange) -> int:
    _, index = net.nodes[leader].propose_conf_change(cc)
    net.settle()
    net.tick(leader)  # the commit reaches the followers
    return index


def test_add_a_learner_then_promote_it() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.propose("a", b"x")
    net.add_spare("d")
    change(net, "a", ConfChange(CT.ADD_LEARNER, "d", "tcp://d:1"))
    for nid in "abcd":
        cs = net.conf_states[nid]
        assert cs.voters == ("a", "b", "c") and cs.learners == ("d",)
        assert cs.addrs == {"d": "tcp://d:1"}
    assert net.data_applied("d") == [b"x"]
    change(net, "a", ConfChange(CT.ADD_VOTER, "d"))
    assert net.conf_states["d"].voters == ("a", "b", "c", "d")
    # four voters: a quorum is three, so a and d alone cannot commit
    net.isolate("b")
    net.isolate("c")
    net.propose("a", b"y")
    assert b"y" not in net.data_applied("a")
    net.recover()
    net.tick("a")
    assert net.data_applied("d")[-1] == b"y"


def test_removed_follower_no_longer_counts() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    change(net, "a", ConfChange(CT.REMOVE_NODE, "c"))
    assert net.nodes["a"].status().conf_state.voters == ("a", "b")
    assert "c" not in net.nodes["a"].status().progress
    net.isolate("c")
    net.propose("a", b"x")
    assert net.data_applied("b") == [b"x"]


def test_removed_leader_steps_down_after_committing_its_removal() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    change(net, "a", ConfChange(CT.REMOVE_NODE, "a"))
    assert net.nodes["a"].status().role == Role.FOLLOWER
    net.tick_all(40)
    assert net.leaders() in (["b"], ["c"])
    lead = net.leaders()[0]
    net.propose(lead, b"after")
    assert b"after" in net.data_applied("b") and b"after" in net.data_applied("c")
    assert net.nodes["a"].status().role == Role.FOLLOWER


def test_one_change_at_a_time() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    a = net.nodes["a"]
    net.isolate("a")
    a.propose_conf_change(ConfChange(CT.ADD_LEARNER, "d"))
    with pytest.raises(MembershipError):
        a.propose_conf_change(ConfChange(CT.ADD_LEARNER, "e"))


def test_no_change_before_the_leaders_noop_commits() -> None:
    net = Network(["a", "b", "c"])
    net.drop_filter = lambda m: m.type == MT.APP
    net.elect("a")
    last = net.nodes["a"].raft.log.last_index()
    with pytest.raises(MembershipError):
        net.nodes["a"].propose_conf_change(ConfChange(CT.ADD_LEARNER, "d"))
    assert net.nodes["a"].raft.log.last_index() == last


def test_invalid_change_changes_nothing() -> None:
    net = Network(["a", "b"])
    net.elect("a")
    last = net.nodes["a"].raft.log.last_index()
    with pytest.raises(MembershipError):
        net.nodes["a"].propose_conf_change(ConfChange(CT.REMOVE_NODE, "zz"))
    with pytest.raises(ProposalDroppedError):
        net.nodes["b"].propose_conf_change(ConfChange(CT.ADD_LEARNER, "d"))
    assert net.nodes["a"].raft.log.last_index() == last


def test_conf_change_entries_are_handed_out_with_the_new_conf_state() -> None:
    net = Network(["a", "b"])
    net.elect("a")
    index = change(net, "a", ConfChange(CT.ADD_LEARNER, "l", "tcp://l:9"))
    entry = next(e for e in net.applied["b"] if e.index == index)
    assert entry.type == EntryType.CONF_CHANGE
    assert net.conf_states["b"].learners == ("l",)


def test_restart_replays_applied_conf_changes_from_the_log() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    change(net, "a", ConfChange(CT.REMOVE_NODE, "c"))
    applied = net.nodes["b"].status().applied
    node = net.add_node("b", net.stores["b"], applied=applied)
    assert node.status().conf_state.voters == ("a", "b")
    node = net.add_node("b", net.stores["b"], applied=0)  # not applied yet: old membership
    assert node.status().conf_state.voters == ("a", "b", "c")


def test_no_campaign_while_a_committed_change_is_not_in_effect() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    _, index = net.nodes["a"].propose_conf_change(ConfChange(CT.ADD_LEARNER, "d"))
    net.settle()
    net.tick("a")
    b = net.nodes["b"]
    # b has learned the commit index but has not been handed the entry yet
    core = b.raft
    core.log.applying = index - 1
    core.log.applied = min(core.log.applied, index - 1)
    b.campaign()
    assert b.status().role == Role.FOLLOWER and core.msgs == []
