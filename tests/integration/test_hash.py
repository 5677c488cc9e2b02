"""Replica hashes over real processes: ``boltraft cluster hash`` says the members agree at
the same applied index, and catches a replica whose state was changed behind Raft's back."""

from __future__ import annotations

import json
import subprocess
import sys

from boltraft.client import Client
from boltraft.storage.fsm import BucketStateMachine

from .cluster import SERVE

CLI = [sys.executable, "-c", SERVE]  # the boltraft command line


def _hash(endpoints: list[str]) -> subprocess.CompletedProcess[str]:
    argv = [*CLI, "cluster", "hash", "--endpoints", ",".join(endpoints), "--json"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def test_members_agree_and_a_replica_changed_behind_raft_differs(cluster) -> None:
    cluster.start()
    cluster.wait_for_leader()
    with Client(cluster.endpoints, timeout=10) as c:
        c.create_bucket("b")
        for i in range(50):
            c.put("b", f"k{i}", f"v{i}")
    done = _hash(cluster.endpoints)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["agree"] and result["same_applied"]
    assert len({m["sha256"] for m in result["members"].values()}) == 1
    victim = next(i for i in cluster.ids if i != cluster.wait_for_leader())
    cluster.stop(victim)
    sm = BucketStateMachine(cluster.root / victim / "state", sync=True)
    applied = sm.applied  # rewrite one value, keeping the applied index
    with sm.db.update() as tx:
        tx.bucket("b").put(b"k1", b"tampered")
    assert sm.applied == applied
    sm.close()
    cluster.start(victim)
    differ = _hash(cluster.endpoints)
    assert differ.returncode == 1
    result = json.loads(differ.stdout)
    assert result["same_applied"] and not result["agree"]
    assert len({m["sha256"] for m in result["members"].values()}) == 2
