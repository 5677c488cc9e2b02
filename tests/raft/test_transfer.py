"""Leadership transfer (Raft thesis 3.10): catch the target up, then TIMEOUT_NOW."""

from __future__ import annotations

import pytest

from boltraft.errors import MembershipError, ProposalDroppedError
from boltraft.raft.types import Message, MessageType, Role

from .network import Network

MT = MessageType


def test_transfer_to_an_up_to_date_follower() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.nodes["a"].transfer_leader("b")
    net.settle()
    assert net.leaders() == ["b"]
    assert net.nodes["b"].status().term == 2
    assert net.nodes["a"].status().lead == "b"


def test_transfer_to_itself_or_the_current_target_is_a_no_op() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    a = net.nodes["a"]
    a.transfer_leader("a")
    assert a.raft.lead_transferee == "" and a.raft.msgs == []
    net.isolate("b")
    a.transfer_leader("b")
    a.transfer_leader("b")
    assert len([m for m in a.raft.msgs if m.type == MT.TIMEOUT_NOW]) == 1


def test_proposals_are_dropped_while_transferring_and_resume_after_abort() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.isolate("b")
    a = net.nodes["a"]
    a.transfer_leader("b")
    with pytest.raises(ProposalDroppedError) as exc:
        a.propose([b"x"])
    assert exc.value.details["transferee"] == "b"
    net.tick("a", 10)  # one election timeout without the transfer finishing: aborted
    assert a.raft.lead_transferee == "" and a.status().role == Role.LEADER
    a.propose([b"x"])


def test_transfer_refused_off_leader_and_to_non_voters() -> None:
    net = Network(["a", "b"], learners=["l"])
    net.elect("a")
    with pytest.raises(ProposalDroppedError):
        net.nodes["b"].transfer_leader("a")
    with pytest.raises(MembershipError):
        net.nodes["a"].transfer_leader("l")
    with pytest.raises(MembershipError):
        net.nodes["a"].transfer_leader("nobody")
    assert net.nodes["a"].raft.lead_transferee == ""


def test_timeout_now_bypasses_the_leader_lease() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    # c has a live leader; a forced (transfer) vote request is still considered
    net.nodes["a"].transfer_leader("b")
    net.settle()
    assert net.nodes["c"].status().lead == "b"


def test_learner_ignores_timeout_now() -> None:
    net = Network(["a"], learners=["l"])
    net.elect("a")
    net.nodes["l"].step(Message(MT.TIMEOUT_NOW, "l", "a", term=1))
    assert net.nodes["l"].status().role == Role.FOLLOWER and net.nodes["l"].raft.msgs == []
