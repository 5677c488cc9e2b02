"""Real ``boltraft serve`` processes: automatic snapshots and log compaction, a follower
catching up by snapshot after it fell behind the compacted log (also with a lost chunk), a
new node joining a 200,000-key cluster through a snapshot while writes go on, and fast
restarts that reinstall nothing."""

from __future__ import annotations

import pytest

from boltraft.client import Client

from .cluster import wait_until
from .opscluster import OpsCluster, Writer

pytestmark = pytest.mark.integration

SMALL = {"snapshot_entries": 50, "snapshot_keep_entries": 5, "snapshot_chunk_bytes": 65536}


def _fill(c: Client, batches: int, per: int, prefix: str, value: bytes = b"x" * 200) -> None:
    for i in range(batches):
        ops = [
            {"op": "put", "bucket": "b", "key": f"{prefix}{i:05d}-{j:05d}", "value": value}
            for j in range(per)
        ]
        c.batch(ops, timeout=30)


def _cluster_status(c: OpsCluster, node_id: str) -> dict:
    st = c.status(node_id, timeout=2.0)
    assert st is not None, f"{node_id} does not answer"
    return st


def _behind_then_catch_up(c: OpsCluster) -> tuple[str, str]:
    lead = c.wait_for_leader()
    victim = next(i for i in c.ids if i != lead)
    with Client(c.endpoints, timeout=10) as cl:
        cl.create_bucket("b")
        _fill(cl, 2, 10, "a")
        c.kill(victim)
        _fill(cl, 150, 40, "k")
        wait_until(  # the leader compacted far past the victim's log (about 3 entries)
            lambda: _cluster_status(c, lead)["cluster"]["log_first"] > 50, 20, "compaction"
        )
        lead_st = _cluster_status(c, lead)
        c.start(victim)
        c.wait_applied(victim, lead_st["commit"], timeout=60)
        with Client([c.addrs[victim]], timeout=10) as vc:
            assert vc.count("b", read="stale") == 20 + 150 * 40
            assert vc.get("b", "k00149-00039", read="stale") == b"x" * 200
    return lead, victim


def test_follower_behind_compaction_catches_up_by_snapshot(make_cluster) -> None:
    c = make_cluster(SMALL)
    lead, victim = _behind_then_catch_up(c)
    vst = _cluster_status(c, victim)["cluster"]
    assert vst["snapshots"]["installed"] >= 1
    assert vst["transfers"]["completed"] >= 1
    assert _cluster_status(c, lead)["cluster"]["snapshots"]["compactions"] >= 1


def test_snapshot_transfer_with_a_dropped_chunk_completes(make_cluster) -> None:
    c = make_cluster({**SMALL, "snapshot_drop_chunk": 3})
    lead, victim = _behind_then_catch_up(c)
    dropped = (c.root / f"{lead}.log").read_text().count("fault injection: dropped snapshot chunk")
    assert dropped == 1  # tests/faults.py DropNthChunk, installed by the launcher
    assert _cluster_status(c, victim)["cluster"]["transfers"]["chunks_resent"] >= 1


def test_restart_with_current_state_reinstalls_nothing(make_cluster) -> None:
    c = make_cluster(SMALL)
    _, victim = _behind_then_catch_up(c)
    with Client(c.endpoints, timeout=10) as cl:
        snap = cl.snapshot(c.addrs[victim])
        assert snap["log_first"] > 1
        for node_id in c.ids:
            c.restart(node_id)
        c.wait_for_leader()
        commit = cl.status()["commit"]
        for node_id in c.ids:
            c.wait_applied(node_id, commit)
            st = _cluster_status(c, node_id)["cluster"]
            assert st["snapshots"]["installed"] == 0
            assert st["transfers"]["chunks_received"] == 0
        assert cl.count("b") == 20 + 150 * 40


def test_node_joins_200k_key_cluster_by_snapshot_while_writes_go_on(make_cluster) -> None:
    c = make_cluster({"snapshot_entries": 2000, "snapshot_keep_entries": 10})
    lead = c.wait_for_leader()
    with Client(c.endpoints, timeout=30) as cl:
        cl.create_bucket("b")
        _fill(cl, 40, 5000, "big", b"v" * 16)
        snap = cl.snapshot(c.addrs[lead], timeout=60)  # the log no longer starts at 1
        assert snap["log_first"] > 1
        writer = Writer(c.endpoints)
        writer.start()
        try:
            wait_until(lambda: len(writer.acked) >= 20, 30, "writes to flow")
            c.add_joiner("n4", c.addrs[lead])
            c.wait_voter("n4", timeout=90)
        finally:
            writer.stop()
        assert writer.acked
        commit = cl.status(c.addrs[lead])["commit"]
        c.wait_applied("n4", commit, timeout=60)
        with Client([c.addrs["n4"]], timeout=30) as n4:
            assert n4.count("b", read="stale") >= 200_000 + len(writer.acked)
            for key in writer.acked[:: max(1, len(writer.acked) // 50)] + writer.acked[-3:]:
                assert n4.get("b", key, read="stale") == key
        st = _cluster_status(c, "n4")["cluster"]
        assert st["snapshots"]["installed"] == 1


def test_an_overdue_snapshot_starts_without_more_writes(make_cluster) -> None:
    """Entries applied while a (rate-limited, so slow) snapshot is written call for the next
    one: it starts when the first finishes, not at some later write that may never come."""
    c = make_cluster({**SMALL, "snapshot_write_mb_s": 1})
    lead = c.wait_for_leader()
    with Client(c.endpoints, timeout=10) as cl:
        cl.create_bucket("b")
        _fill(cl, 50, 30, "k", b"x" * 4000)  # ~6 MB: the first copy takes seconds ...
        _fill(cl, 60, 1, "t")  # ... while the entries that make the next one due come in
        applied = _cluster_status(c, lead)["applied"]
        first = _cluster_status(c, lead)["cluster"]
        assert first["snapshots"]["created"] == 0 and first["creating"]  # still copying

        def second() -> dict | None:
            st = _cluster_status(c, lead)["cluster"]
            return st if st["snapshots"]["created"] >= 2 else None

        st = wait_until(second, 60, "the overdue second snapshot")
        assert st["snapshot"]["index"] >= applied - 1  # it covers the whole fill
        assert _cluster_status(c, lead)["applied"] <= applied + 1  # with no writes since
