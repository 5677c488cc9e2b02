"""Unit tests of the small pure pieces: quorum arithmetic, progress, in-flight window,
config validation and the conf change encoding."""

from __future__ import annotations

import random

import pytest

from boltraft.errors import ConfigError, MembershipError
from boltraft.raft.confchange import apply_conf_change, decode_conf_change, encode_conf_change
from boltraft.raft.config import Config
from boltraft.raft.progress import Inflights, Progress
from boltraft.raft.quorum import VoteResult, committed_index, has_quorum, majority, vote_result
from boltraft.raft.types import ConfChange, ConfChangeType, ConfState, ProgressState

CT = ConfChangeType


# --- quorum ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "m"), [(0, 1), (1, 1), (2, 2), (3, 2), (4, 3), (5, 3)])
def test_majority(n: int, m: int) -> None:
    assert majority(n) == m


@pytest.mark.parametrize(
    ("match", "want"),
    [
        ({"a": 5}, 5),
        ({"a": 5, "b": 3}, 3),
        ({"a": 5, "b": 3, "c": 9}, 5),
        ({"a": 5, "b": 3}, 3),  # c missing counts as 0: two of three have 3
        ({"a": 1, "b": 2, "c": 3, "d": 4}, 2),
        ({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}, 3),
    ],
)
def test_committed_index_is_the_majority_match(match: dict[str, int], want: int) -> None:
    voters = set(match) | ({"c"} if len(match) == 2 else set())
    assert committed_index(voters, match) == want


def test_committed_index_of_empty_config_is_zero() -> None:
    assert committed_index((), {"a": 7}) == 0


def test_committed_index_ignores_non_voters() -> None:
    assert committed_index({"a", "b", "c"}, {"a": 9, "l1": 9, "l2": 9}) == 0


def test_vote_result_won_lost_pending() -> None:
    v = {"a", "b", "c"}
    assert vote_result(v, {"a": True}) == VoteResult.PENDING
    assert vote_result(v, {"a": True, "b": True}) == VoteResult.WON
    assert vote_result(v, {"a": True, "b": False}) == VoteResult.PENDING
    assert vote_result(v, {"a": True, "b": False, "c": False}) == VoteResult.LOST
    assert vote_result(v, {"x": True, "y": True, "a": True}) == VoteResult.PENDING
    assert vote_result({"a", "b", "c", "d"}, {"a": False, "b": False}) == VoteResult.LOST


def test_has_quorum() -> None:
    assert has_quorum({"a", "b", "c"}, {"a", "c"})
    assert not has_quorum({"a", "b", "c"}, {"a", "l"})


# --- progress --------------------------------------------------------------------------------
def test_inflights_full_by_count_and_by_bytes() -> None:
    inf = Inflights(max_count=2, max_bytes=100)
    inf.add(5, 10)
    assert not inf.full()
    inf.add(7, 10)
    assert inf.full()
    inf.free_le(5)
    assert not inf.full() and inf.count() == 1 and inf.bytes == 10
    inf.add(9, 95)
    assert inf.full()  # 105 bytes >= 100
    inf.free_le(100)
    assert inf.count() == 0 and inf.bytes == 0


def test_probe_sends_one_at_a_time_until_acknowledged() -> None:
    pr = Progress(5, 10, 1 << 20)
    assert pr.state == ProgressState.PROBE and not pr.is_paused()
    pr.sent_entries(6, 10)
    assert pr.is_paused() and pr.next == 5  # probe does not move next optimistically
    assert pr.maybe_update(6) and not pr.is_paused() and pr.next == 7


def test_replicate_moves_next_optimistically_and_pauses_on_full_window() -> None:
    pr = Progress(1, 2, 1 << 20)
    pr.become_replicate()
    pr.sent_entries(3, 1)
    pr.sent_entries(5, 1)
    assert pr.next == 6 and pr.is_paused()
    pr.maybe_update(3)
    assert not pr.is_paused() and pr.match == 3


def test_stale_ack_does_not_lower_match() -> None:
    pr = Progress(1, 2, 1 << 20)
    pr.maybe_update(5)
    assert not pr.maybe_update(3) and pr.match == 5 and pr.next == 6


def test_maybe_decr_to_in_probe_ignores_stale_rejections() -> None:
    pr = Progress(10, 4, 1 << 20)
    pr.match = 2
    assert not pr.maybe_decr_to(5, 3)  # not the probe we sent (next - 1 == 9)
    assert pr.maybe_decr_to(9, 4) and pr.next == 4
    assert pr.maybe_decr_to(3, 1) and pr.next == 3  # never below match + 1


def test_maybe_decr_to_in_replicate_falls_back_to_probe() -> None:
    pr = Progress(1, 4, 1 << 20)
    pr.maybe_update(4)
    pr.become_replicate()
    pr.sent_entries(10, 1)
    assert not pr.maybe_decr_to(3, 1)  # at or below match: stale
    assert pr.maybe_decr_to(8, 7)
    assert pr.state == ProgressState.PROBE and pr.next == 7 and pr.inflights.count() == 0


def test_snapshot_state_pauses_and_resumes_after_the_snapshot() -> None:
    pr = Progress(1, 4, 1 << 20)
    pr.become_snapshot(50)
    assert pr.is_paused()
    pr.become_probe()
    assert pr.state == ProgressState.PROBE and pr.next == 51


# --- config ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw",
    [
        {"id": ""},
        {"heartbeat_tick": 0},
        {"election_tick": 1, "heartbeat_tick": 1},
        {"max_size_per_msg": 0},
        {"max_inflight_msgs": 0},
        {"applied": -1},
    ],
)
def test_config_rejects_bad_values(kw: dict[str, object]) -> None:
    args: dict[str, object] = {"id": "a"} | kw
    with pytest.raises(ConfigError):
        Config(**args).validate()  # type: ignore[arg-type]


def test_config_default_rng_is_seeded_by_id() -> None:
    a, b = Config("x"), Config("x")
    assert a.rng.random() == b.rng.random()
    assert isinstance(Config("y", rng=random.Random(1)).rng, random.Random)


# --- conf changes ----------------------------------------------------------------------------
def test_conf_change_round_trips() -> None:
    cc = ConfChange(CT.ADD_VOTER, "n4", "tcp://h:1")
    assert decode_conf_change(encode_conf_change(cc)) == cc


@pytest.mark.parametrize("data", [b"", b"\x93\x07\xa1a\xa0", b"\xc1", b"\x92\x00\xa1a"])
def test_malformed_conf_change_is_a_membership_error(data: bytes) -> None:
    with pytest.raises(MembershipError):
        decode_conf_change(data)


def test_apply_conf_change_add_promote_demote_remove() -> None:
    cs = ConfState(("a", "b"), (), {"a": "A"})
    cs = apply_conf_change(cs, ConfChange(CT.ADD_LEARNER, "c", "C"))
    assert cs.voters == ("a", "b") and cs.learners == ("c",) and cs.addrs["c"] == "C"
    cs = apply_conf_change(cs, ConfChange(CT.ADD_VOTER, "c"))
    assert cs.voters == ("a", "b", "c") and cs.learners == () and cs.addrs["c"] == "C"
    cs = apply_conf_change(cs, ConfChange(CT.ADD_LEARNER, "a"))
    assert cs.voters == ("b", "c") and cs.learners == ("a",)
    cs = apply_conf_change(cs, ConfChange(CT.REMOVE_NODE, "a"))
    assert cs.members() == ("b", "c") and "a" not in cs.addrs
    cs = apply_conf_change(cs, ConfChange(CT.ADD_VOTER, "b", "B2"))  # idempotent, new address
    assert cs.voters == ("b", "c") and cs.addrs["b"] == "B2"


@pytest.mark.parametrize(
    "cc",
    [
        ConfChange(CT.REMOVE_NODE, "zz"),
        ConfChange(CT.REMOVE_NODE, "a"),  # the last voter
        ConfChange(CT.ADD_LEARNER, "a"),  # demoting the last voter
        ConfChange(CT.ADD_VOTER, ""),
        ConfChange(7, "b"),
    ],
)
def test_invalid_conf_changes_are_refused(cc: ConfChange) -> None:
    cs = ConfState(("a",), ("l",))
    with pytest.raises(MembershipError):
        apply_conf_change(cs, cc)
