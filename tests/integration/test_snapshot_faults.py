"""Real ``boltraft serve`` processes: a snapshot download that survives a leader change, and
a node SIGKILLed in the middle of installing a snapshot (the ``snapshot_crash_at`` TEST
KNOB kills it at a named install step) that restarts with the old state or the new one,
never a mix."""

from __future__ import annotations

import pytest

from boltraft.client import Client

from .cluster import wait_until
from .opscluster import OpsCluster, write_config

pytestmark = pytest.mark.integration

SMALL = {"snapshot_entries": 50, "snapshot_keep_entries": 5, "snapshot_chunk_bytes": 65536}
KEYS = 40 + 100 * 40


def _status(c: OpsCluster, node_id: str) -> dict:
    st = c.status(node_id, timeout=2.0)
    assert st is not None, f"{node_id} does not answer"
    return st


def _fill(cl: Client, batches: int, prefix: str, value: bytes) -> None:
    for i in range(batches):
        ops = [
            {"op": "put", "bucket": "b", "key": f"{prefix}{i:05d}-{j:05d}", "value": value}
            for j in range(40)
        ]
        cl.batch(ops, timeout=30)


def _left_behind(c: OpsCluster, cl: Client, value: bytes) -> tuple[str, str]:
    """Returns (leader, victim) once the stopped victim is behind the leader's compacted
    log (it needs a snapshot to catch up)."""
    lead = c.wait_for_leader()
    victim = next(i for i in c.ids if i != lead)
    cl.create_bucket("b")
    _fill(cl, 1, "a", value[:10])
    c.wait_applied(victim, _status(c, lead)["commit"])
    c.kill(victim)
    _fill(cl, 100, "k", value)
    wait_until(lambda: _status(c, lead)["cluster"]["log_first"] > 50, 20, "compaction")

    def settled(node_id: str) -> bool:  # no snapshot being made, none due
        st = _status(c, node_id)
        snap = st["cluster"]["snapshot"]
        return (
            not st["cluster"]["creating"]
            and snap is not None
            and st["applied"] - snap["index"] < SMALL["snapshot_entries"]
        )

    # A holder that finished a newer snapshot would offer it, and the victim would rightly
    # switch to it: these tests are about one download, so let the snapshots settle first.
    wait_until(lambda: all(settled(i) for i in c.ids if i != victim), 30, "snapshots")
    return lead, victim


def _set_config(c: OpsCluster, config: dict) -> None:
    """Rewrites the config and faults files the nodes read when they (re)start."""
    write_config(c.root, config)


def _check_contents(c: OpsCluster, node_id: str, value: bytes) -> None:
    commit = _status(c, c.wait_for_leader())["commit"]
    c.wait_applied(node_id, commit, timeout=60)
    with Client([c.addrs[node_id]], timeout=10) as vc:
        assert vc.count("b", read="stale") == KEYS
        assert vc.get("b", "k00099-00039", read="stale") == value
        assert vc.get("b", "a00000-00000", read="stale") == value[:10]


def test_download_survives_a_leader_change(make_cluster) -> None:
    # one 4 KiB chunk in flight at a time: the download of ~8 MB takes a while
    c = make_cluster({**SMALL, "snapshot_chunk_bytes": 4096, "snapshot_window": 1})
    value = bytes(range(256)) * 8
    with Client(c.endpoints, timeout=10) as cl:
        lead, victim = _left_behind(c, cl, value)
        c.start(victim)

        def receiving() -> dict | None:
            st = c.status(victim)
            recv = (st or {}).get("cluster", {}).get("transfers", {}).get("receiving")
            return recv if recv and 0 < recv["received"] < recv["size"] // 2 else None

        first = wait_until(receiving, 30, "the download to start")
        other = next(i for i in c.ids if i not in (lead, victim))
        assert cl.transfer_leader(other, timeout=10)["leader"] == other
        assert c.wait_for_leader() == other
        during = _status(c, victim)["cluster"]["transfers"].get("receiving")
        assert during is not None and during["sid"] == first["sid"]  # still the same file
        _check_contents(c, victim, value)
        tr = _status(c, victim)["cluster"]["transfers"]
        assert tr["completed"] == 1 and tr["failed"] == 0
        assert tr["last_received"]["bytes"] == first["size"]
        assert _status(c, victim)["cluster"]["snapshots"]["installed"] == 1


@pytest.mark.parametrize("step", ["verified", "swapped", "log"])
def test_sigkill_during_install_leaves_old_or_new_state(make_cluster, step: str) -> None:
    c = make_cluster(SMALL)
    value = b"v" * 300
    with Client(c.endpoints, timeout=10) as cl:
        _, victim = _left_behind(c, cl, value)
        _set_config(c, {**SMALL, "snapshot_crash_at": step})
        c.start(victim)
        proc = c.procs[victim]
        wait_until(lambda: proc.poll() is not None, 60, f"{victim} to crash at {step}")
        assert proc.returncode == -9
        log = (c.root / f"{victim}.log").read_text()
        assert f"snapshot_crash_at={step}" in log
        _set_config(c, SMALL)
        c.start(victim)
        _check_contents(c, victim, value)
        st = _status(c, victim)["cluster"]
        log = (c.root / f"{victim}.log").read_text()
        if step == "verified":
            # nothing was swapped: the old state restarted and the download resumed
            assert "interrupted snapshot install" not in log
            assert st["snapshots"]["installed"] == 1
            assert st["transfers"]["resumed_bytes"] > 0
        else:
            # start-up recovery finished the swap: nothing downloaded again
            assert "finished an interrupted snapshot install" in log
            assert st["snapshots"]["installed"] == 0
            assert st["transfers"]["chunks_received"] == 0
