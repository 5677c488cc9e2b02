"""Real processes: ``boltraft backup`` of a running cluster, ``boltraft restore`` into a new
single-node cluster that serves identical contents (content hash) and grows by ``--join``."""

from __future__ import annotations

from pathlib import Path

import pytest
from boltraft_cli.main import main
from click.testing import CliRunner

from boltraft.backup import content_hash, read_header
from boltraft.client import Client
from boltraft.errors import ChecksumMismatchError
from boltraft.storage.db import DB

from .cluster import Cluster, free_ports
from .opscluster import OpsCluster

pytestmark = pytest.mark.integration


def _hash(data_dir: Path) -> str:
    db = DB.open(data_dir / "state", readonly=True)
    try:
        return content_hash(db)
    finally:
        db.close()


def test_backup_then_restore_gives_identical_contents(cluster: Cluster, tmp_path: Path) -> None:
    with Client(cluster.endpoints, timeout=20) as c:
        c.create_bucket("b")
        c.create_bucket(["b", "nested"])
        c.create_bucket("other")
        for i in range(10):
            c.batch(
                [
                    {"op": "put", "bucket": "b", "key": f"k{i}-{j}", "value": f"v{j}"}
                    for j in range(500)
                ]
            )
        c.put(["b", "nested"], "deep", "value")
        c.next_sequence("other")
        commit = c.status(cluster.addrs[cluster.wait_for_leader()])["commit"]
    for node_id in cluster.ids:
        cluster.wait_applied(node_id, commit)
    backup = tmp_path / "backup.brb"
    endpoints = ",".join(cluster.endpoints)
    r = CliRunner().invoke(main, ["backup", str(backup), "--endpoints", endpoints, "--no-progress"])
    assert r.exit_code == 0, r.output
    with open(backup, "rb") as f:
        header = read_header(f)
    assert header["index"] >= commit - 1
    cluster.stop()
    original = _hash(cluster.root / "n1")

    (tmp_path / "restored").mkdir()
    restored = OpsCluster(tmp_path / "restored", 1)
    try:
        addr = restored.addrs["n1"]
        ddir = restored.root / "n1"
        r = CliRunner().invoke(
            main, ["restore", str(backup), "--data", str(ddir), "--id", "n1", "--listen", addr]
        )
        assert r.exit_code == 0, r.output
        assert _hash(ddir) == original
        restored.start("n1")
        restored.wait_for_leader()
        with Client([addr], timeout=20) as c:
            assert c.count("b") == 5001
            assert c.get(["b", "nested"], "deep") == b"value"
            restored.add_joiner("n2", addr)
            restored.wait_voter("n2")
            assert c.members()["voters"] == ["n1", "n2"]
            commit = c.status()["commit"]
        restored.wait_applied("n2", commit)
        restored.stop()
        assert _hash(ddir) == original
        assert _hash(restored.root / "n2") == original
    finally:
        restored.close()
        print(restored.dump_logs())


def test_restore_refuses_a_corrupt_backup(tmp_path: Path) -> None:
    from boltraft.backup import MAGIC, restore

    bad = tmp_path / "bad.brb"
    header = b'{"format": 1, "index": 5, "term": 1, "size": 4, "sha256": "00"}'
    bad.write_bytes(MAGIC + len(header).to_bytes(4, "big") + header + b"abcd")
    with pytest.raises(ChecksumMismatchError):
        restore(bad, tmp_path / "d", listen=f"tcp://127.0.0.1:{free_ports(1)[0]}")
    assert not (tmp_path / "d" / "node.json").exists()
