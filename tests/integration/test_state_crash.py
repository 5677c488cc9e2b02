"""The state DB after crashes, with real processes: a SIGKILLed node keeps its unflushed state
(same boot); after a simulated machine crash (the ``state.unsynced`` marker names another
boot and the state DB's pages are torn) every node rebuilds its state from the log and no
acknowledged write is lost; a clean stop flushes the state and removes the marker."""

from __future__ import annotations

import os

import pytest

from boltraft.client import Client
from boltraft.server.datadir import DataDir

from .cluster import Cluster

pytestmark = pytest.mark.integration


def _marker(c: Cluster, node_id: str) -> str | None:
    p = c.root / node_id / DataDir.STATE_UNSYNCED
    return p.read_text().strip() if p.exists() else None


def _write_keys(c: Cluster, n: int) -> None:
    with Client(c.endpoints, timeout=10) as cl:
        cl.create_bucket("b", if_not_exists=True)
        for i in range(n):
            cl.put("b", f"k{i}", f"v{i}")


def _check_keys(c: Cluster, n: int) -> None:
    with Client(c.endpoints, timeout=10) as cl:
        for i in range(n):
            assert cl.get("b", f"k{i}") == f"v{i}".encode()
        commit = cl.status()["commit"]
    for node_id in c.ids:
        c.wait_applied(node_id, commit)
        with Client([c.addrs[node_id]], timeout=10) as cl:
            assert cl.count("b", read="stale") == n


def test_machine_crash_rebuilds_the_state_from_the_log(cluster: Cluster) -> None:
    _write_keys(cluster, 60)
    cluster.kill()
    for node_id in cluster.ids:
        assert _marker(cluster, node_id)  # written at start, kept by SIGKILL
        (cluster.root / node_id / DataDir.STATE_UNSYNCED).write_text("another-boot\n")
        data = cluster.root / node_id / "state" / "data.mdb"
        size = data.stat().st_size
        with open(data, "r+b") as f:  # pages that never reached the disk: garbage
            f.write(os.urandom(min(size, 64 << 10)))
    cluster.start()
    cluster.wait_for_leader()
    _check_keys(cluster, 60)
    log_text = cluster.dump_logs()
    assert log_text.count("rebuilding it from the newest snapshot and the log") == 3


def test_sigkill_keeps_state_and_clean_stop_clears_the_marker(cluster: Cluster) -> None:
    _write_keys(cluster, 30)
    victim = cluster.ids[0]
    boot = _marker(cluster, victim)
    assert boot
    cluster.kill(victim)
    cluster.start(victim)
    _check_keys(cluster, 30)
    assert "rebuilding" not in cluster.dump_logs()
    assert cluster.stop() == dict.fromkeys(cluster.ids, 0)
    assert all(_marker(cluster, i) is None for i in cluster.ids)
    cluster.start()
    cluster.wait_for_leader()
    _check_keys(cluster, 30)
