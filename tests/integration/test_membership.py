"""Real ``boltraft serve`` processes: join/remove/transfer-leader under write load lose no
acknowledged write; a removed node stops, says why, and cannot disrupt the cluster; a node
that comes back at a new address replaces its entry; membership survives restarts."""

from __future__ import annotations

import shutil
from collections.abc import Callable

import pytest

from boltraft.client import Client

from .cluster import free_ports, wait_until
from .opscluster import OpsCluster, Writer

pytestmark = pytest.mark.integration


@pytest.fixture
def ops_cluster(make_cluster: Callable[..., OpsCluster]) -> OpsCluster:
    """Returns a started 3-node cluster that snapshots every 500 entries."""
    return make_cluster({"snapshot_entries": 500, "snapshot_keep_entries": 50})


def _exit_code(c: OpsCluster, node_id: str, timeout: float = 20.0) -> int:
    wait_until(lambda: not c.running(node_id), timeout, f"{node_id} to exit")
    return c.procs[node_id].wait()


def test_membership_changes_under_load_lose_no_acknowledged_write(ops_cluster) -> None:
    c = ops_cluster
    with Client(c.endpoints, timeout=20) as cl:
        cl.create_bucket("b")
        writer = Writer(c.endpoints)
        writer.start()
        try:
            wait_until(lambda: len(writer.acked) >= 20, 30, "writes to flow")
            c.add_joiner("n4", c.addrs[c.wait_for_leader()])
            c.wait_voter("n4")
            assert cl.transfer_leader("n4", timeout=20)["leader"] == "n4"
            victim = next(i for i in ("n1", "n2", "n3") if i != c.wait_for_leader())
            cl.remove(victim, timeout=20)
            assert _exit_code(c, victim) == 3
            n = len(writer.acked)
            wait_until(lambda: len(writer.acked) >= n + 20, 30, "writes to go on")
        finally:
            writer.stop()
        members = cl.members()
        assert victim not in members["voters"] + members["learners"]
        assert "n4" in members["voters"]
        assert len(writer.acked) > 40
        for key in writer.acked:
            assert cl.get("b", key) == key


def test_removed_node_stops_says_why_and_cannot_disrupt(ops_cluster) -> None:
    c = ops_cluster
    lead = c.wait_for_leader()
    victim = next(i for i in c.ids if i != lead)
    with Client(c.endpoints, timeout=20) as cl:
        cl.create_bucket("b")
        term = cl.status(c.addrs[lead])["term"]
        cl.remove(victim)
        assert _exit_code(c, victim) == 3
        assert "removed" in (c.root / f"{victim}.log").read_text()
        c.start(victim)  # it refuses to serve again (node_removed: exit status 3)
        assert _exit_code(c, victim) == 3
        assert "node_removed" in (c.root / f"{victim}.log").read_text()
        for i in range(20):
            cl.put("b", f"k{i}", "v")
        st = cl.status(c.addrs[lead])
        assert st["role"] == "leader" and st["term"] == term
        assert victim not in st["members"]["voters"]


def test_rejoin_at_new_address_and_membership_survives_restarts(ops_cluster) -> None:
    c = ops_cluster
    lead = c.wait_for_leader()
    mover = next(i for i in c.ids if i != lead)
    with Client(c.endpoints, timeout=30) as cl:
        cl.create_bucket("b")
        cl.put("b", "before", "1")
        c.stop(mover)
        c.addrs[mover] = f"tcp://127.0.0.1:{free_ports(1)[0]}"
        c.start(mover)  # same data, new address
        cl.join(mover, c.addrs[mover])
        members = c.members()
        assert members["addrs"][mover] == c.addrs[mover]
        assert mover in members["voters"]
        cl.put("b", "after", "2")
        commit = cl.status(c.addrs[lead])["commit"]
        c.wait_applied(mover, commit)
        c.add_joiner("n4", c.addrs[lead])
        c.wait_voter("n4")
        c.stop()
        c.start()
        c.wait_for_leader()
        members = c.members()
        assert sorted(members["voters"]) == sorted([*c.ids])
        assert members["addrs"][mover] == c.addrs[mover]
        cl.put("b", "restarted", "3")
        for node_id in c.ids:
            with Client([c.addrs[node_id]], timeout=10) as one:
                wait_until(
                    lambda one=one: one.get("b", "restarted", read="stale") == b"3",
                    20,
                    f"{node_id} to have the write",
                )
                assert one.get("b", "before", read="stale") == b"1"


def test_a_node_joins_through_a_leader_missing_from_its_own_log_base(make_cluster) -> None:
    """A node that joined by installing a snapshot keeps, as the base of its log, the
    membership of that snapshot: one without itself. Once it leads, a node joining through
    it starts from that membership, which does not name the leader; the joiner must still
    answer the leader, receive its snapshot and become a voter."""
    c = make_cluster({"snapshot_entries": 100_000, "snapshot_keep_entries": 0})
    lead = c.wait_for_leader()
    mover, other = (i for i in c.ids if i != lead)
    with Client(c.endpoints, timeout=30) as cl:
        cl.create_bucket("b")
        cl.remove(mover)
        assert _exit_code(c, mover) == 3
        for i in range(20):
            cl.put("b", f"k{i}", "v")
        cl.snapshot(c.addrs[lead])  # the leader's log base: a membership without mover
        shutil.rmtree(c.root / mover)
        c.join_via[mover] = c.addrs[lead]
        c.start(mover)
        c.wait_voter(mover)
        assert cl.transfer_leader(mover, timeout=20)["leader"] == mover
        base = cl.members(c.addrs[mover])["log_base"]
        assert mover not in base["voters"] + base["learners"]
        cl.remove(other)
        assert _exit_code(c, other) == 3
        shutil.rmtree(c.root / other)
        c.join_via[other] = c.addrs[mover]
        c.start(other)
        c.wait_voter(other, timeout=30)
        cl.put("b", "after", "1")
        with Client([c.addrs[other]], timeout=10) as one:
            wait_until(lambda: one.get("b", "after", read="stale") == b"1", 20, "the write")
            assert one.get("b", "k19", read="stale") == b"v"
