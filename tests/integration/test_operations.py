"""The operator's view of a real cluster: ``/metrics``, ``/healthz`` and ``/readyz`` over
real HTTP against real ``boltraft serve`` processes, and the client commands run through
the installed ``boltraft`` entry point (values from stdin, files and hex; ``txn``; ``status
--cluster``; ``endpoint health``; a failed ``cluster join`` that leaves no learner)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .cluster import Cluster, free_ports, running, wait_until

pytestmark = pytest.mark.integration

BOLTRAFT = shutil.which("boltraft", path=str(Path(sys.executable).parent)) or "boltraft"


class MetricsCluster(Cluster):
    """A Cluster whose every node serves /metrics, /healthz and /readyz on a port of its
    own."""

    def __init__(self, root: Path, n: int = 3) -> None:
        super().__init__(root, n)
        ports = free_ports(n)
        self.metrics = {nid: f"127.0.0.1:{p}" for nid, p in zip(self.ids, ports, strict=True)}

    def argv(self, node_id: str) -> list[str]:
        return [*super().argv(node_id), "--metrics-addr", self.metrics[node_id]]

    def get(self, node_id: str, path: str) -> tuple[int, str]:
        """(HTTP status, body) of GET ``path`` on ``node_id``'s metrics address."""
        url = f"http://{self.metrics[node_id]}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except (urllib.error.URLError, ConnectionError):
            return 0, ""


@pytest.fixture
def mcluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetricsCluster]:
    c = MetricsCluster(tmp_path)
    with running(c, request):
        yield c


def metric(text: str, name: str, labels: str = "") -> float | None:
    """The value of the sample ``name{labels}`` in a Prometheus text page (None if absent)."""
    key = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(key + " "):
            return float(line.split()[-1])
    return None


def cli(c: Cluster, *args: str, stdin: bytes | None = None, timeout: float = 60) -> Any:
    """``boltraft ARGS`` through the installed entry point, against ``c``."""
    env = {**os.environ, "BOLTRAFT_ENDPOINTS": ",".join(c.endpoints)}
    return subprocess.run(
        [BOLTRAFT, *args], input=stdin, capture_output=True, env=env, timeout=timeout
    )


def test_metrics_health_and_readiness_over_http(mcluster: MetricsCluster) -> None:
    c = mcluster
    leader = c.wait_for_leader()
    for nid in c.ids:
        status, body = c.get(nid, "/healthz")
        assert status == 200 and json.loads(body)["health"] is True, body
        status, body = wait_until(
            lambda n=nid: (r := c.get(n, "/readyz"))[0] == 200 and r, 20, f"{nid} ready"
        )
        ready = json.loads(body)
        assert ready["ready"] is True and ready["leader"] == leader and not ready["disk_full"]
    assert c.get(leader, "/nope")[0] == 404

    assert cli(c, "bucket", "create", "m").returncode == 0
    for i in range(3):
        assert cli(c, "put", "m", f"k{i}", "v").returncode == 0
    assert cli(c, "put", "nosuch", "k", "v").returncode == 3  # bucket_not_found
    result = cli(
        c,
        "txn",
        stdin=json.dumps(
            [{"op": "put", "bucket": "m", "key": f"t{i}", "value": "x"} for i in range(5)]
        ).encode(),
    )
    assert result.returncode == 0, result.stderr
    assert cli(c, "get", "m", "missing").returncode == 3

    def scraped() -> str | None:
        status, text = c.get(leader, "/metrics")
        applied = metric(text, "boltraft_applied_index") or 0
        return text if status == 200 and applied >= 4 else None

    text = wait_until(scraped, 20, "the leader's metrics to show the writes")
    assert metric(text, "boltraft_is_leader") == 1
    assert metric(text, "boltraft_has_leader") == 1
    assert (metric(text, "boltraft_term") or 0) >= 1
    assert (metric(text, "boltraft_log_fsync_duration_seconds_count") or 0) >= 1
    assert (metric(text, "boltraft_apply_duration_seconds_count") or 0) >= 1
    assert (metric(text, "boltraft_commit_latency_seconds_count") or 0) >= 1
    assert metric(text, "boltraft_commit_latency_seconds_bucket", 'le="+Inf"') is not None
    assert (metric(text, "boltraft_proposals_committed_total") or 0) >= 4
    assert metric(text, "boltraft_proposals_pending") is not None
    assert metric(text, "boltraft_disk_full", 'part="log"') == 0
    assert (metric(text, "boltraft_leader_changes_seen_total") or 0) >= 1
    assert (metric(text, "boltraft_transport_sent_bytes_total") or 0) > 0
    assert (metric(text, "boltraft_transport_sent_messages_total") or 0) > 0
    assert metric(text, "boltraft_snapshots_created_total") == 0
    assert "# TYPE boltraft_gc_pause_seconds histogram" in text

    def young_collections() -> float:
        page = c.get(leader, "/metrics")[1]
        return metric(page, "boltraft_gc_pause_seconds_count", 'generation="0"') or 0

    wait_until(lambda: young_collections() >= 1, 20, "a young collection timed")
    assert (
        metric(
            text, "boltraft_node_info", f'id="{leader}",listen="{c.addrs[leader]}",version="0.1.0"'
        )
        == 1
    )
    for line in text.splitlines():  # every name is ours and follows the naming rules
        if line and not line.startswith("#"):
            assert line.startswith("boltraft_"), line
    assert "# TYPE boltraft_log_fsync_duration_seconds histogram" in text
    assert "# TYPE boltraft_client_requests_total counter" in text

    def summed(name: str, labels: str) -> float:
        return sum(metric(c.get(n, "/metrics")[1], name, labels) or 0 for n in c.ids)

    wait_until(lambda: summed("boltraft_client_requests_total", 'op="get"') >= 1, 20, "gets by op")
    wait_until(
        lambda: summed("boltraft_client_errors_total", 'code="bucket_not_found",op="put"') >= 1,
        20,
        "a put's bucket_not_found answer counted by op and code",
    )

    # a node alone knows no leader: alive, not ready
    alone = next(n for n in c.ids if n != leader)
    c.kill(*[n for n in c.ids if n != alone])

    def unready() -> dict[str, Any] | None:
        status, body = c.get(alone, "/readyz")
        return json.loads(body) if status == 503 else None

    body = wait_until(unready, 30, f"{alone} to say it is not ready")
    assert body["ready"] is False and "leader" in body["reason"]
    assert c.get(alone, "/healthz")[0] == 200
    wait_until(
        lambda: metric(c.get(alone, "/metrics")[1], "boltraft_has_leader") == 0,
        30,
        "has_leader 0",
    )


def test_client_commands_through_the_entry_point(cluster: Cluster, tmp_path: Path) -> None:
    c = cluster
    assert cli(c, "bucket", "create", "cfg").returncode == 0
    # values from stdin, from a file, in hex
    assert cli(c, "put", "cfg", "motd", "-", stdin=b"line one\nline two\n").returncode == 0
    assert cli(c, "get", "cfg", "motd").stdout == b"line one\nline two\n\n"
    blob = bytes(range(256))
    (tmp_path / "blob.bin").write_bytes(blob)
    assert cli(c, "put", "cfg", "blob", "--file", str(tmp_path / "blob.bin")).returncode == 0
    got = cli(c, "get", "cfg", b"blob".hex(), "--hex")  # --hex: the key is hex too
    assert got.stdout.strip() == blob.hex().encode()
    assert cli(c, "put", "cfg", "00ff", "beef", "--hex").returncode == 0
    shown = json.loads(cli(c, "get", "cfg", "00ff", "--hex", "-w", "json").stdout)
    assert shown == {"key": {"base64": "AP8="}, "value": {"base64": "vu8="}}
    both = cli(c, "put", "cfg", "k", "v", "--file", str(tmp_path / "blob.bin"))
    assert both.returncode == 2 and both.stderr.startswith(b"error: usage: ")

    # txn: one atomic batch; a failed condition applies nothing and exits 3
    ops = [
        {"op": "put", "bucket": "cfg", "key": "a", "value": "1", "if_absent": True},
        {"op": "put", "bucket": ["cfg"], "key": {"hex": "62"}, "value": {"base64": "Mg=="}},
        {"op": "delete", "bucket": "cfg", "key": "motd"},
        {"op": "next_sequence", "bucket": "cfg"},
    ]
    done = cli(c, "txn", "-w", "json", stdin=json.dumps(ops).encode())
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)["results"]
    assert [r["op"] for r in results] == ["put", "put", "delete", "next_sequence"]
    assert results[2]["result"] is True and results[3]["result"] == 1
    (tmp_path / "ops.json").write_text(
        json.dumps(
            [
                {"op": "put", "bucket": "cfg", "key": "c", "value": "3"},
                {"op": "put", "bucket": "cfg", "key": "a", "value": "9", "if_value": "nope"},
            ]
        )
    )
    refused = cli(c, "txn", "--file", str(tmp_path / "ops.json"))
    assert refused.returncode == 3
    assert refused.stderr.decode().startswith("error: condition_failed: op 1 (put cfg a): ")
    assert cli(c, "get", "cfg", "c").returncode == 3  # nothing of the batch was applied
    assert cli(c, "get", "cfg", "b").stdout == b"2\n"

    # tables have a header; status --cluster finds every member from one endpoint
    table = cli(c, "scan", "cfg", "-w", "table").stdout.decode().splitlines()
    assert table[0].split() == ["KEY", "VALUE"]
    env_one = {**os.environ, "BOLTRAFT_ENDPOINTS": c.endpoints[0]}
    one = subprocess.run(
        [BOLTRAFT, "status", "--cluster", "-w", "json"], capture_output=True, env=env_one
    )
    assert one.returncode == 0, one.stderr
    assert sorted(r["endpoint"] for r in json.loads(one.stdout)) == sorted(c.endpoints)
    health = subprocess.run([BOLTRAFT, "endpoint", "health"], capture_output=True, env=env_one)
    assert health.returncode == 0, health.stderr
    lines = health.stdout.decode().splitlines()
    assert len(lines) == 3 and all(" is healthy: took " in line for line in lines)
    members = json.loads(cli(c, "cluster", "members", "--json").stdout)
    assert {p["state"] for p in members["progress"].values()} <= {"probe", "replicate", "snapshot"}


def test_a_failed_join_leaves_no_learner(cluster: Cluster) -> None:
    c = cluster
    nobody = f"tcp://127.0.0.1:{free_ports(1)[0]}"  # no node will ever answer there
    failed = cli(c, "cluster", "join", "--id", "n9", "--addr", nobody, "--timeout", "3")
    assert failed.returncode != 0
    lines = failed.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "it added was removed again" in lines[0]
    members = json.loads(cli(c, "cluster", "members", "-w", "json").stdout)
    assert "n9" not in members["voters"] and "n9" not in members["learners"]

    # a node whose health cannot be checked is reported, and the command says so
    c.kill(c.ids[2])
    health = cli(c, "endpoint", "health", "--timeout", "2")
    assert health.returncode == 4
    out = health.stdout.decode()
    assert f"{c.endpoints[2]} is unhealthy: took " in out
    assert health.stderr.decode().startswith("error: unavailable: 1 of 3 members")
