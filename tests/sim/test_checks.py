"""The safety checker on fabricated histories: each property must catch its violation."""

from __future__ import annotations

import pytest

from boltraft.raft.types import Entry, HardState

from .checks import SafetyChecker, Violation, chain_digest

pytestmark = pytest.mark.sim


def ents(*spec: tuple[int, int, bytes]) -> list[Entry]:
    """Returns entries from (index, term, data) triples."""
    return [Entry(term=t, index=i, data=d) for i, t, d in spec]


def committed_checker(upto: int = 10, term: int = 1) -> SafetyChecker:
    """Returns a checker that saw some node commit up to ``upto`` in ``term``."""
    c = SafetyChecker()
    c.on_commit("n0", upto, term)
    return c


def digest_of(entries: list[Entry]) -> int:
    d = 0
    for e in entries:
        d = chain_digest(d, e)
    return d


def test_one_leader_per_term() -> None:
    c = SafetyChecker()
    c.on_leader("n1", 3)
    c.on_leader("n1", 3)  # observed twice: fine
    c.on_leader("n2", 4)
    with pytest.raises(Violation, match="election safety"):
        c.on_leader("n2", 3)


def test_log_matching_same_index_term_different_command() -> None:
    c = SafetyChecker()
    c.on_append("n1", 0, ents((1, 1, b"a"), (2, 1, b"b")))
    c.on_append("n2", 0, ents((1, 1, b"a")))
    c.on_append("n2", 1, ents((2, 1, b"b"), (3, 2, b"c")))
    with pytest.raises(Violation, match="log matching"):
        c.on_append("n3", 1, ents((2, 1, b"X")))


def test_log_matching_same_entry_after_different_term() -> None:
    c = SafetyChecker()
    c.on_append("n1", 1, ents((5, 3, b"a")))
    with pytest.raises(Violation, match="log matching"):
        c.on_append("n2", 2, ents((5, 3, b"a")))


def test_log_gap_and_falling_term() -> None:
    c = SafetyChecker()
    with pytest.raises(Violation, match="gap"):
        c.on_append("n1", 0, ents((1, 1, b"a"), (3, 1, b"b")))
    with pytest.raises(Violation, match="after term"):
        c.on_append("n1", 0, ents((1, 2, b"a"), (2, 1, b"b")))


def test_state_machine_safety_and_applied_order() -> None:
    c = SafetyChecker()
    log = ents((1, 1, b"a"), (2, 1, b"b"))
    c.on_commit("n1", 2, 1)
    c.on_restart("n1", 0)
    c.on_apply("n1", log, digest_of(log))
    c.on_restart("n2", 0)
    c.on_apply("n2", log[:1], digest_of(log[:1]))
    with pytest.raises(Violation, match="state machine safety"):
        c.on_apply("n2", ents((2, 2, b"b")), 0)
    c2 = SafetyChecker()
    with pytest.raises(Violation, match="applied order"):
        c2.on_apply("n1", ents((2, 1, b"b")), 0)


def test_wrong_state_digest() -> None:
    c = committed_checker()
    with pytest.raises(Violation, match="state digest"):
        c.on_apply("n1", ents((1, 1, b"a")), 12345)


def test_snapshot_checks() -> None:
    c = committed_checker()
    log = ents((1, 1, b"a"), (2, 1, b"b"), (3, 2, b"c"))
    c.on_apply("n1", log, digest_of(log))
    c.on_snapshot("n2", 2, 1, digest_of(log[:2]))
    assert c.applied["n2"] == 2
    with pytest.raises(Violation, match="state digest"):
        c.on_snapshot("n3", 3, 2, digest_of(log[:2]))
    with pytest.raises(Violation, match="snapshot term"):
        c.on_snapshot("n3", 3, 1, digest_of(log))
    with pytest.raises(Violation, match="applied regressed"):
        c.on_snapshot("n1", 2, 1, digest_of(log[:2]))
    with pytest.raises(Violation, match="nobody applied"):
        c.on_snapshot("n3", 4, 2, 0)


def test_hard_state_rules() -> None:
    c = SafetyChecker()
    c.on_hard_state("n1", HardState(2, "n2", 1), last_index=3)
    c.on_hard_state("n1", HardState(2, "n2", 2), last_index=3)
    with pytest.raises(Violation, match="double vote"):
        c.on_hard_state("n1", HardState(2, "n3", 2), last_index=3)
    with pytest.raises(Violation, match="durable term"):
        c.on_hard_state("n1", HardState(1, "", 2), last_index=3)
    with pytest.raises(Violation, match="commit regressed"):
        c.on_hard_state("n1", HardState(3, "", 1), last_index=3)
    with pytest.raises(Violation, match="commit past log"):
        c.on_hard_state("n1", HardState(3, "", 4), last_index=3)


def test_commit_never_below_durable_after_restart() -> None:
    c = SafetyChecker()
    c.on_hard_state("n1", HardState(1, "n1", 5), last_index=5)
    c.on_restart("n1", 5)
    c.on_commit("n1", 5, 1)
    with pytest.raises(Violation, match="commit regressed"):
        c.on_commit("n1", 4, 1)


def test_leader_completeness() -> None:
    c = SafetyChecker()
    log = ents((1, 1, b"a"), (2, 1, b"b"), (3, 2, b"c"))
    c.on_commit("n1", 3, 2)
    c.on_apply("n1", log, digest_of(log))
    terms = {1: 1, 2: 1, 3: 2}
    c.on_leader_log("n2", 3, terms.__getitem__, 1, 3)
    c.on_leader_log("n2", 3, terms.__getitem__, 3, 3)  # a compacted prefix is fine
    with pytest.raises(Violation, match="leader completeness"):
        c.on_leader_log("n3", 3, terms.__getitem__, 1, 2)  # missing entry 3
    bad = {1: 1, 2: 2}
    with pytest.raises(Violation, match="leader completeness"):
        c.on_leader_log("n3", 3, bad.__getitem__, 1, 2)
    c.on_leader_log("n4", 2, {1: 1, 2: 1}.__getitem__, 1, 2)  # its own-term entry may lag


def test_leader_completeness_counts_from_the_commit_term() -> None:
    """Entry 2@1 committed only in term 3: a stale leader of term 2 may lack it."""
    c = SafetyChecker()
    c.on_commit("n1", 1, 1)
    c.on_commit("n4", 2, 3)
    log = ents((1, 1, b"a"), (2, 1, b"b"))
    c.on_apply("n4", log, digest_of(log))
    c.on_leader_log("n3", 2, {1: 1, 2: 2}.__getitem__, 1, 2)
    with pytest.raises(Violation, match="leader completeness"):
        c.on_leader_log("n5", 4, {1: 1, 2: 2}.__getitem__, 1, 2)
    with pytest.raises(Violation, match="applied uncommitted"):
        c.on_apply("n4", ents((3, 3, b"c")), 0)


def test_read_index_must_cover_earlier_applies() -> None:
    c = committed_checker()
    log = ents((1, 1, b"a"), (2, 1, b"b"))
    c.on_apply("n1", log, digest_of(log))
    c.on_read_issued("n2", 1, b"r1")
    c.on_read_state("n2", 1, 2, b"r1")
    c.on_read_issued("n3", 1, b"r2")
    with pytest.raises(Violation, match="linearizable read"):
        c.on_read_state("n3", 1, 1, b"r2")
    assert not c.on_read_state("n3", 2, 5, b"r2")  # another incarnation never asked


def test_acked_write_must_be_applied_everywhere() -> None:
    c = committed_checker()
    log = ents((1, 1, b"a"), (2, 1, b"b"))
    c.on_apply("n1", log, digest_of(log))
    c.on_ack(log[1])
    c.check_acked_applied({"n1": 2, "n2": 3})
    with pytest.raises(Violation, match="liveness"):
        c.check_acked_applied({"n1": 2, "n2": 1})
    with pytest.raises(Violation, match="ack"):
        c.on_ack(Entry(term=1, index=3, data=b"c"))


def test_a_leader_commits_by_counting_only_an_entry_of_its_term() -> None:
    """Figure 8 of the Raft paper: counting replicas of an entry of an earlier term does not
    commit it; only an entry of the leader's own term does (covering the earlier ones)."""
    c = SafetyChecker()
    voters = ["n1", "n2", "n3"]
    c.on_leader_commit("n1", 4, 7, 4, voters, ["n1", "n2"])
    with pytest.raises(Violation, match="current-term commit"):
        c.on_leader_commit("n1", 4, 8, 2, voters, voters)


def test_a_leader_commit_needs_a_majority_of_durable_copies() -> None:
    c = SafetyChecker()
    five = ["n1", "n2", "n3", "n4", "n5"]
    c.on_leader_commit("n1", 2, 5, 2, five, ["n1", "n2", "n4"])
    with pytest.raises(Violation, match="commit durability"):
        c.on_leader_commit("n1", 2, 6, 2, five, ["n1", "n2"])  # two of five
    with pytest.raises(Violation, match="commit durability"):
        c.on_leader_commit("n1", 2, 6, 2, five, ["n1", "n2", "n6"])  # n6 is no voter
    assert c.leader_commits == 1


def test_an_ack_must_name_a_durable_entry() -> None:
    c = SafetyChecker()
    c.on_ack_sent("n2", "n1", 3, 9, 3, held=True)
    with pytest.raises(Violation, match="ack durability"):
        c.on_ack_sent("n2", "n1", 3, 10, 3, held=False)


def test_a_hard_state_may_land_after_the_commit_moved_on() -> None:
    """A slow flush writes a Ready's hard state after the core raised its commit index
    further; only the durable sequence itself must not go back."""
    c = SafetyChecker()
    c.on_commit("n1", 5, 1)
    c.on_hard_state("n1", HardState(1, "n1", 3), last_index=5)
    c.on_hard_state("n1", HardState(1, "n1", 5), last_index=5)
    with pytest.raises(Violation, match="commit regressed"):
        c.on_hard_state("n1", HardState(1, "n1", 4), last_index=5)
