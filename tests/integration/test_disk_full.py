"""A full disk, for real: a node's data directory on a small loop-mounted ext4 filesystem
(``tests/smallfs.py``, root only) filled up while the node runs. The node keeps running and
answering, the cluster goes on without it, and once space is freed it catches up by itself."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from smallfs import fill, free_bytes, small_filesystem

from boltraft import Client

from .cluster import Cluster, cli_argv, wait_until
from .opscluster import OpsCluster

pytestmark = pytest.mark.integration

VALUE = os.urandom(20 << 10)


def _disk_full(c: Cluster, node_id: str) -> str:
    st = c.status(node_id)
    return st["disk_full"] if st else ""


def _stale_get(c: Cluster, node_id: str, key: bytes) -> bytes | None:
    with Client([c.addrs[node_id]], timeout=2.0) as one:
        return one.get("b", key, read="stale")


@pytest.mark.parametrize("full_node", ["leader", "follower"])
def test_a_node_whose_disk_fills_keeps_running_and_catches_up_once_freed(
    tmp_path: Path, full_node: str
) -> None:
    c = Cluster(tmp_path)
    with small_filesystem(tmp_path / "n1", mib=32) as fs:
        try:
            c.start()
            c.wait_for_leader()
            with Client(c.endpoints, timeout=10.0) as client:
                lead = "n1" if full_node == "leader" else "n2"
                assert client.transfer_leader(lead, timeout=10)["leader"] == lead
                client.create_bucket("b")
                for i in range(20):
                    client.put("b", b"before-%d" % i, VALUE)
                filler = fill(fs)
                assert free_bytes(fs) == 0
                # writes go on through the other two; n1 fails to store them (and, when it
                # leads, its own proposals make it give leadership up)
                written = 0
                while written < 200:
                    client.put("b", b"during-%d" % written, VALUE)
                    written += 1
                    if written > 20 and _disk_full(c, "n1"):
                        break
                why = wait_until(lambda: _disk_full(c, "n1"), 20, "n1 to report a full disk")
                assert "n1's disk is full" in why
                assert c.running("n1")
                st = c.status("n1")
                assert st is not None and st["role"] != "leader"
                counters = st["node"]
                assert counters["log_disk_full"] + counters["apply_disk_full"] > 0
                assert _stale_get(c, "n1", b"before-0") == VALUE  # reads are still served
                lead = c.wait_for_leader()
                assert lead != "n1"
                client.put("b", b"after", b"still writable")
                filler.unlink()
                last = c.status(lead)["last_index"]  # type: ignore[index]
                c.wait_applied("n1", last, timeout=30)
                wait_until(lambda: not _disk_full(c, "n1"), 20, "n1 to clear its full disk")
                assert _stale_get(c, "n1", b"after") == b"still writable"
                for i in range(written):
                    assert _stale_get(c, "n1", b"during-%d" % i) == VALUE
            assert "Traceback" not in (tmp_path / "n1.log").read_text()
        finally:
            c.close()
            print(c.dump_logs()[-6000:])


def test_a_one_node_cluster_whose_disk_fills_refuses_writes_and_serves_reads(
    tmp_path: Path,
) -> None:
    c = Cluster(tmp_path, n=1)
    env = {**os.environ, "BOLTRAFT_ENDPOINTS": c.addrs["n1"]}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cli_argv(*args), capture_output=True, text=True, env=env, timeout=60)

    with small_filesystem(tmp_path / "n1", mib=16) as fs:
        try:
            c.start()
            c.wait_for_leader()
            assert cli("bucket", "create", "b").returncode == 0
            assert cli("put", "b", "k", "before").returncode == 0
            filler = fill(fs)
            big = VALUE.hex()  # 40 KB of text: more than any slack left in a file's blocks
            refused = cli("put", "b", "big", big)
            assert refused.returncode != 0
            assert "disk is full" in refused.stderr
            assert len(refused.stderr.strip().splitlines()) == 1
            assert c.running("n1")
            got = cli("get", "b", "k", "--read", "stale")
            assert got.returncode == 0 and got.stdout.strip() == "before"
            filler.unlink()
            wait_until(lambda: cli("put", "b", "k", "after").returncode == 0, 30, "a write")
            assert cli("get", "b", "k").stdout.strip() == "after"
        finally:
            c.close()
            print(c.dump_logs()[-6000:])


@pytest.mark.parametrize(("nodes", "free_left"), [(1, 0), (3, 64 << 10)])
def test_a_node_that_starts_on_a_full_disk_says_so_in_one_line(
    tmp_path: Path, nodes: int, free_left: int
) -> None:
    """``free_left``: 0, no write at all succeeds; 64 KiB, a follower of a 3-node cluster
    could open its stores and follow the leader, until its first append failed."""
    c = Cluster(tmp_path, n=nodes)
    with small_filesystem(tmp_path / "n1", mib=16) as fs:
        try:
            c.start()
            c.wait_for_leader()
            c.stop("n1")
            filler = fill(fs)
            if free_left:
                os.truncate(filler, filler.stat().st_size - free_left)
            run = subprocess.run(c.argv("n1"), capture_output=True, text=True, timeout=20)
            assert run.returncode == 1
            last = run.stderr.strip().splitlines()[-1]
            assert last.startswith("error: no_space: cannot start: [Errno 28]"), run.stderr
            assert "Traceback" not in run.stderr
            filler.unlink()
            c.start()
            c.wait_for_leader()
            c.wait_applied("n1", 1)
        finally:
            c.close()


@pytest.mark.parametrize("free_left", [0, 1 << 20])
def test_a_snapshot_download_into_a_full_disk_fails_cleanly_and_installs_once_freed(
    tmp_path: Path, free_left: int
) -> None:
    """n1 sleeps (SIGSTOP) while the others compact their logs past it, and wakes up on a
    full disk: its snapshot download fails, again and again, without stopping it; once
    space is freed it installs the snapshot and catches up. ``free_left``: 0, nothing to
    start a download in; 1 MiB, a download that fails at a chunk's write."""
    config = {"snapshot_entries": 50, "snapshot_keep_entries": 5, "snapshot_chunk_bytes": 65536}
    c = OpsCluster(tmp_path, 3, config)
    value = os.urandom(2048)
    with small_filesystem(tmp_path / "n1", mib=64) as fs:
        try:
            c.start()
            c.wait_for_leader()
            with Client(c.endpoints, timeout=30.0) as client:
                assert client.transfer_leader("n2", timeout=10)["leader"] == "n2"
                client.create_bucket("b")
                c.wait_applied("n1", c.status("n2")["commit"])  # type: ignore[index]
                behind = c.status("n1")["last_index"]  # type: ignore[index]
                pid = c.procs["n1"].pid
                os.kill(pid, signal.SIGSTOP)
                try:
                    for i in range(60):  # ~5 MB, compacted away behind n1
                        ops = [
                            {"op": "put", "bucket": "b", "key": b"k%d-%d" % (i, j), "value": value}
                            for j in range(40)
                        ]
                        client.batch(ops)
                    wait_until(  # n1 can only catch up through a snapshot
                        lambda: c.status("n2")["cluster"]["log_first"] > behind + 1,  # type: ignore[index]
                        30,
                        "the leader's compaction past n1's log",
                    )
                    filler = fill(fs)
                    if free_left:
                        os.truncate(filler, filler.stat().st_size - free_left)
                finally:
                    os.kill(pid, signal.SIGCONT)

                def failed_downloads() -> int:
                    st = c.status("n1", timeout=2.0)
                    return st["cluster"]["transfers"]["failed"] if st else 0

                wait_until(failed_downloads, 60, "n1's download to fail on the full disk")
                assert c.running("n1")
                filler.unlink()
                last = c.status("n2")["last_index"]  # type: ignore[index]
                c.wait_applied("n1", last, timeout=60)
                st = c.status("n1", timeout=2.0)
                assert st is not None and st["cluster"]["snapshots"]["installed"] >= 1
                with Client([c.addrs["n1"]], timeout=10.0) as one:
                    assert one.count("b", read="stale") == 60 * 40
                    assert one.get("b", b"k59-39", read="stale") == value
            assert "Traceback" not in (tmp_path / "n1.log").read_text()
        finally:
            c.close()
            print(c.dump_logs()[-6000:])
