"""Named scenarios from the Raft paper (Ongaro & Ousterhout 2014) and thesis (Ongaro 2014).

Each test names the section or figure it checks."""

from __future__ import annotations

import pytest

from boltraft.raft.types import (
    HardState,
    Message,
    MessageType,
    ProgressState,
    Role,
    SnapshotMeta,
)

from .network import Network, seeded_store

MT = MessageType

FIG7_LEADER = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
FIG7_FOLLOWERS = {
    "a": [1, 1, 1, 4, 4, 5, 5, 6, 6],  # missing entries
    "b": [1, 1, 1, 4],
    "c": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],  # extra uncommitted entries
    "d": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    "e": [1, 1, 1, 4, 4, 4, 4],  # missing and extra
    "f": [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
}


@pytest.mark.parametrize("variant", sorted(FIG7_FOLLOWERS))
def test_figure_7_divergent_followers_converge_to_the_leaders_log(variant: str) -> None:
    """Paper 5.3, figure 7: a new leader (term 8) forces each possible follower log to
    match its own, deleting extra entries and filling in missing ones."""
    ids = ["L", "F", "X"]
    follower = FIG7_FOLLOWERS[variant]
    stores = {
        "L": seeded_store(ids, FIG7_LEADER, HardState(7, "", 0)),
        "F": seeded_store(ids, follower, HardState(max(follower), "", 0)),
        "X": seeded_store(ids, FIG7_LEADER, HardState(7, "", 0)),
    }
    net = Network(ids, stores=stores, pre_vote=False, check_quorum=False)
    net.elect("L")
    assert net.nodes["L"].status().term == 8
    net.propose("L", b"new")
    net.tick("L")
    assert net.log_of("F") == net.log_of("L")
    assert [t for _, t in net.log_of("F")] == [*FIG7_LEADER, 8, 8]
    assert net.nodes["F"].status().commit == 12


def _figure_8_prefix() -> Network:
    """Figure 8 (a)-(b): a (term 1) puts x at index 2 on a and b only; e is then elected
    in term 2 by c, d, e and writes its own no-op at index 2, which nobody else gets."""
    net = Network(["a", "b", "c", "d", "e"], check_quorum=False, max_size_per_msg=1)
    net.elect("a")
    for other in "cde":
        net.cut("a", other)
    net.propose("a", b"xx")
    assert [t for _, t in net.log_of("b")] == [1, 1]
    net.recover()
    net.isolate("a")
    net.isolate("b")
    net.drop_filter = lambda m: m.frm == "e" and m.type == MT.APP
    net.elect("e")
    assert net.log_of("e") == [(1, 1), (2, 2)]
    net.recover()
    net.isolate("e")
    net.tick("a")  # c and d answer a's stale heartbeats with term 2: a steps down
    assert net.nodes["a"].status().role == Role.FOLLOWER
    return net


def test_figure_8_an_old_term_entry_on_a_majority_is_not_committed() -> None:
    """Paper 5.4.2, figure 8 (c)-(d): a, leader again in term 3, copies x (term 1) to a
    majority, but x is not committed by counting; e can still win term 4 and overwrite
    it, and no node ever applies x."""
    net = _figure_8_prefix()

    def lose_term_3_entries(m: Message) -> bool:
        # Appends carrying a's term-3 no-op are lost whenever they would be accepted.
        return (
            m.type == MT.APP
            and any(e.term == 3 for e in m.entries)
            and net.nodes[m.to].raft.log.last_index() >= m.index
        )

    net.drop_filter = lose_term_3_entries
    net.elect("a")
    assert net.nodes["a"].status().term == 3
    net.tick("a", 3)
    holders = [nid for nid in "abcde" if (2, 1) in net.log_of(nid)]
    assert len(holders) >= 3  # x is on a majority ...
    assert net.nodes["a"].status().commit == 1  # ... and still not committed
    net.recover()
    net.isolate("a")
    net.tick("e")  # the stale term-2 leader e learns of term 3 and steps down
    net.elect("e")  # e's last term (2) beats x's term (1): b, c and d vote for it
    net.propose("e", b"e1")
    net.recover()
    net.tick("e", 2)
    for nid in "abcde":
        assert net.log_of(nid)[1] == (2, 2)
        assert b"xx" not in net.data_applied(nid)
        assert net.data_applied(nid) == [b"e1"]


def test_figure_8_an_old_term_entry_commits_with_an_entry_of_the_current_term() -> None:
    """Paper 5.4.2, figure 8 (e): once an entry of a's own term is on a majority, x commits
    with it, and e can no longer be elected."""
    net = _figure_8_prefix()
    net.elect("a")
    net.tick("a", 2)
    assert net.nodes["a"].status().commit == 3
    assert net.data_applied("a") == [b"xx"]
    net.recover()
    net.isolate("a")
    net.tick("e")  # the stale term-2 leader e learns of term 3 and steps down
    net.nodes["e"].campaign()
    net.settle()
    assert net.nodes["e"].status().role != Role.LEADER


def test_partitioned_old_leader_cannot_commit_and_is_overwritten() -> None:
    """Paper 5.1/5.3: a leader cut off from the majority keeps proposing in its stale term;
    nothing of it commits, and on rejoining it learns the new term and its entries are
    replaced by the new leader's."""
    net = Network(["a", "b", "c"], check_quorum=False)
    net.elect("a")
    net.isolate("a")
    net.nodes["a"].propose([b"stale1", b"stale2"])
    net.settle()
    net.elect("b")
    net.propose("b", b"fresh")
    assert net.nodes["a"].status().role == Role.LEADER  # it does not know yet
    assert net.nodes["a"].status().commit == 1
    net.recover()
    net.tick("b", 2)
    assert net.nodes["a"].status().role == Role.FOLLOWER
    assert net.nodes["a"].status().lead == "b"
    assert net.log_of("a") == net.log_of("b")
    for nid in "abc":
        assert net.data_applied(nid) == [b"fresh"]


def test_rejoining_node_is_kept_from_disrupting_by_pre_vote() -> None:
    """Thesis 9.6: a node partitioned away times out again and again; with pre-vote its
    term does not grow, so on rejoining it does not depose the healthy leader."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.isolate("c")
    net.tick_all(100)
    assert net.nodes["c"].status().term == 1
    net.recover()
    net.tick_all(5)
    assert net.leaders() == ["a"] and net.nodes["a"].status().term == 1
    assert net.nodes["c"].status().lead == "a"


def test_rejoining_node_disrupts_without_pre_vote() -> None:
    """Thesis 9.6, the contrast: without pre-vote (and without a lease) the isolated node's
    term grows and its return deposes the leader."""
    net = Network(["a", "b", "c"], pre_vote=False, check_quorum=False)
    net.elect("a")
    net.isolate("c")
    net.tick_all(100)
    assert net.nodes["c"].status().term > 1
    net.recover()
    net.tick_all(60)
    assert net.nodes["a"].status().term > 1  # a was deposed at least once


def test_leader_steps_down_by_check_quorum() -> None:
    """Thesis 6.2: a leader that has not heard from a quorum within an election timeout
    steps down, so clients stop waiting on it; the majority elects another leader."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.isolate("a")
    for _ in range(2 * 10):
        net.tick("a")
    assert net.nodes["a"].status().role == Role.FOLLOWER
    assert net.nodes["a"].status().term == 1
    net.tick_all(40)
    assert sorted(net.leaders()) in (["b"], ["c"])


def test_leadership_transfer_to_a_lagging_follower() -> None:
    """Thesis 3.10: the leader first brings the lagging target up to date, then sends
    TIMEOUT_NOW; the target wins at once and no committed entry is lost."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.isolate("c")
    datas = [b"v%d" % i for i in range(30)]
    net.propose("a", *datas)
    a = net.nodes["a"]
    assert a.raft.progress["c"].match == 1
    net.recover()
    net.delivered.clear()
    a.transfer_leader("c")
    net.settle()
    kinds = [m.type for m in net.delivered if m.to == "c" and m.frm == "a"]
    assert MT.TIMEOUT_NOW in kinds
    assert kinds.index(MT.TIMEOUT_NOW) > kinds.index(MT.APP)  # caught up first
    assert net.leaders() == ["c"] and net.nodes["c"].status().term == 2
    net.tick("c")
    for nid in "abc":
        assert net.data_applied(nid) == datas


def test_snapshot_sent_to_a_follower_behind_compaction() -> None:
    """Paper section 7: the leader has compacted the entries a lagging follower needs, so
    it sends InstallSnapshot; the follower resets its log to the snapshot and replication
    resumes from there."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.isolate("c")
    net.propose("a", *[b"v%d" % i for i in range(20)])
    a = net.nodes["a"]
    conf = a.status().conf_state
    net.stores["a"].compact(SnapshotMeta(15, 1, conf))
    net.recover()
    net.delivered.clear()
    net.tick("a")
    snaps = [m for m in net.delivered if m.type == MT.SNAP]
    assert [(m.to, m.snapshot.index) for m in snaps] == [("c", 15)]
    assert [s.index for s in net.snapshots_installed["c"]] == [15]
    assert net.stores["c"].first_index() == 16
    net.propose("a", b"after")
    assert net.log_of("c") == net.log_of("a")[-len(net.log_of("c")) :]
    assert net.data_applied("c") == [b"v14", b"v15", b"v16", b"v17", b"v18", b"v19", b"after"]
    assert a.raft.progress["c"].state == ProgressState.REPLICATE
    assert net.nodes["c"].status().applied == a.status().commit
