"""RawNode: the Ready contract, restarts from storage, snapshots' edge cases, bad input."""

from __future__ import annotations

import pytest

from boltraft.errors import BadRequestError, ConfigError
from boltraft.raft import leader
from boltraft.raft.confchange import encode_conf_change
from boltraft.raft.memstore import MemoryLogStore
from boltraft.raft.rawnode import RawNode
from boltraft.raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ProgressState,
    Role,
    SnapshotMeta,
)

from .network import Network, make_config, seeded_store

MT = MessageType


def test_restart_recovers_term_vote_commit_and_skips_applied_entries() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.propose("a", b"x", b"y")
    net.tick("a")
    st = net.nodes["b"].status()
    node = net.add_node("b", net.stores["b"], applied=2)
    rd = node.ready()
    assert node.status().term == st.term and node.status().commit == st.commit
    assert [e.index for e in rd.committed_entries] == [3]


def test_restart_with_applied_past_the_log_is_a_config_error() -> None:
    store = seeded_store(["a"])
    with pytest.raises(ConfigError):
        RawNode(make_config("a", applied=5), store)


def test_restart_with_applied_past_a_lost_commit_recovers_the_commit() -> None:
    """A commit-only hard state may be lost in a crash; the applied index proves commit."""
    store = seeded_store(["a"], [1, 1, 1, 1], HardState(1, "a", 1))
    node = RawNode(make_config("a", applied=3), store)
    assert node.status().commit == 3 and node.status().applied == 3
    node.check_invariants()
    assert [e.index for e in node.ready().committed_entries] == []


class ReadSizes(MemoryLogStore):
    """A MemoryLogStore that notes the data size of every ``entries()`` answer."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[int] = []

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        out = super().entries(lo, hi, max_bytes)
        self.reads.append(sum(len(e.data) for e in out))
        return out


def test_a_restart_reads_the_applied_log_in_pieces_of_max_size_per_msg() -> None:
    """On start the core looks for membership changes in the applied log; it reads that
    log a bounded piece at a time (it may be as long as the log since the snapshot), and
    still applies a membership change found in a later piece."""
    store = ReadSizes()
    store.bootstrap(ConfState(("a",)))
    ents = [Entry(1, i, 0, bytes(1000)) for i in range(1, 200)]
    cc = encode_conf_change(ConfChange(ConfChangeType.ADD_VOTER, "b"))
    ents.append(Entry(1, 200, EntryType.CONF_CHANGE, cc))
    store.append(ents, HardState(1, "a", 200))
    node = RawNode(make_config("a", applied=200, max_size_per_msg=10_000), store)
    assert sum(store.reads) >= 199 * 1000 and max(store.reads) <= 10_000 + 1000
    assert node.status().conf_state.voters == ("a", "b")


def test_stored_commit_past_the_log_is_a_config_error() -> None:
    store = seeded_store(["a"], [1], HardState(1, "", 4))
    with pytest.raises(ConfigError):
        RawNode(make_config("a"), store)


def test_step_rejects_non_messages_and_ignores_misaddressed_ones() -> None:
    net = Network(["a", "b"])
    with pytest.raises(BadRequestError):
        net.nodes["a"].step("hello")  # type: ignore[arg-type]
    net.nodes["a"].step(Message(MT.HEARTBEAT, "zz", "b", term=9))
    assert net.nodes["a"].status().term == 0


def test_has_ready_is_false_when_idle_and_soft_state_reports_changes() -> None:
    net = Network(["a", "b"])
    a = net.nodes["a"]
    assert not a.has_ready()
    a.campaign()
    rd = a.ready()
    assert rd.soft_state is not None and rd.soft_state.role == Role.PRE_CANDIDATE
    net.send(rd.messages)
    a.advance(rd)
    net.settle()
    assert not a.has_ready()
    assert a.status().role == Role.LEADER


def test_status_reports_progress_only_on_the_leader() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    assert set(net.nodes["a"].status().progress) == {"a", "b", "c"}
    assert net.nodes["a"].status().progress["b"].state == ProgressState.REPLICATE
    assert net.nodes["b"].status().progress == {}


def test_stale_snapshot_is_answered_with_the_commit_index() -> None:
    net = Network(["a", "b"])
    net.elect("a")
    net.propose("a", b"x")
    net.tick("a")
    b = net.nodes["b"]
    b.step(Message(MT.SNAP, "b", "a", term=1, snapshot=SnapshotMeta(1, 1, ConfState(("a", "b")))))
    rd = b.ready()
    assert rd.snapshot is None
    assert [(m.type, m.index) for m in rd.messages] == [(MT.APP_RESP, 2)]


def test_a_snapshot_of_a_prefix_of_the_log_keeps_the_entries_after_it() -> None:
    """A follower that already holds the snapshot's last entry and more (the snapshot was
    delayed, or sent twice) keeps its log and only commits up to the snapshot: wiping it
    would lose entries it acknowledged, and a leader whose match for it lies past the
    snapshot would then probe it forever (simulator seed 701193, 5 nodes)."""
    net = Network(["a", "b", "c"], lazy_commit=True)
    net.elect("a")
    net.propose("a", b"x", b"y", b"z")  # b holds them; lazy_commit: it has not heard the commit
    b = net.nodes["b"]
    last = b.status().commit + 3
    assert net.stores["b"].last_index() == last
    term = b.status().term
    cs = ConfState(("a", "b", "c"))
    b.step(Message(MT.SNAP, "b", "a", term=term, snapshot=SnapshotMeta(last - 1, term, cs)))
    rd = b.ready()
    assert rd.snapshot is None and rd.entries == []
    assert [(m.type, m.index) for m in rd.messages] == [(MT.APP_RESP, last - 1)]
    assert [e.index for e in rd.committed_entries][-1] == last - 1
    b.advance(rd)
    b.check_invariants()
    assert b.status().commit == last - 1
    assert net.stores["b"].last_index() == last  # nothing after the snapshot was dropped


def test_a_snapshot_not_yet_handed_out_does_not_stop_a_campaign() -> None:
    """A follower asked to campaign (by an operator, or TIMEOUT_NOW in the same batch of
    messages) after a snapshot arrived but before the Ready that hands it out: the entries
    under the snapshot are compacted, and its membership is in effect already."""
    net = Network(["a", "b"])
    b = net.nodes["b"]
    cs = ConfState(("a", "b"))
    b.step(Message(MT.SNAP, "b", "a", term=3, snapshot=SnapshotMeta(40, 2, cs)))
    b.campaign()
    assert b.status().role == Role.PRE_CANDIDATE
    b.check_invariants()


def test_installed_snapshot_carries_its_membership() -> None:
    net = Network(["a", "b"])
    b = net.nodes["b"]
    cs = ConfState(("a", "b", "c"), (), {"c": "tcp://c"})
    b.step(Message(MT.SNAP, "b", "a", term=3, snapshot=SnapshotMeta(40, 2, cs)))
    rd = b.ready()
    assert rd.snapshot is not None and rd.snapshot.index == 40
    assert rd.conf_state == cs and rd.hard_state == HardState(3, "", 40)
    assert rd.committed_entries == []
    net.stores["b"].apply_snapshot(rd.snapshot, rd.hard_state)
    b.advance(rd)
    b.check_invariants()
    assert b.status().applied == 40 and b.status().commit == 40


def test_failed_snapshot_goes_back_to_probing_from_match() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.isolate("c")
    net.propose("a", b"1", b"2", b"3")
    net.stores["a"].compact(SnapshotMeta(3, 1, net.nodes["a"].status().conf_state))
    a = net.nodes["a"]
    a.report_unreachable("c")  # back to probing from match + 1 = 2, below the first index
    a.raft.progress["c"].recent_active = True
    assert leader.send_append(a.raft, "c")
    assert a.raft.progress["c"].state == ProgressState.SNAPSHOT
    net.settle()  # the SNAP is dropped and reported failed
    pr = a.raft.progress["c"]
    assert (pr.state, pr.next, pr.pending_snapshot) == (ProgressState.PROBE, 2, 0)
    net.recover()
    net.tick("a", 2)
    assert a.raft.progress["c"].match == a.raft.log.last_index()


def test_snapshot_is_not_sent_to_an_inactive_follower() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.isolate("c")
    net.propose("a", b"1", b"2")
    net.stores["a"].compact(SnapshotMeta(2, 1, net.nodes["a"].status().conf_state))
    a = net.nodes["a"]
    a.report_unreachable("c")
    a.raft.progress["c"].recent_active = False
    assert not leader.send_append(a.raft, "c")
    assert a.raft.progress["c"].state != ProgressState.SNAPSHOT


def test_report_unreachable_drops_a_replicating_follower_to_probe() -> None:
    net = Network(["a", "b"])
    net.elect("a")
    a = net.nodes["a"]
    assert a.raft.progress["b"].state == ProgressState.REPLICATE
    a.report_unreachable("b")
    assert a.raft.progress["b"].state == ProgressState.PROBE
