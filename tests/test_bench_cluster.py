"""``boltraft bench cluster`` and ``bench sweep`` against real local clusters (few operations).

Also the check that the stage breakdown adds up to the client's measured latency within 20%.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from boltraft_cli.bench import bench_group
from click.testing import CliRunner

from boltraft.benchmark import result
from boltraft.benchmark.clusterbench import run_local
from boltraft.benchmark.workload import WorkloadSpec

pytestmark = pytest.mark.integration


def test_cli_cluster_writes_a_result(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    args = ["cluster", "--nodes", "3", "--clients", "1,4", "--ops", "200", "--value-size", "50"]
    res = CliRunner().invoke(bench_group, [*args, "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "write c4" in res.output and "stage breakdown" in res.output
    doc = result.load(out)
    assert doc["kind"] == "cluster" and len(doc["runs"]) == 2
    for run, clients in zip(doc["runs"], (1, 4), strict=True):
        assert run["config"]["clients"] == clients
        assert run["errors"] == {}
        assert run["ops_total"] == 200
        w = run["latency"]["write"]
        assert w["count"] == 200 and 0 < w["p50_ms"] <= w["p99_ms"]
        assert run["stages"]["requests"] >= 200
        assert len(run["stages"]["followers"]) == 2  # every follower acknowledged


def test_mixed_stale_reads(tmp_path: Path) -> None:
    spec = WorkloadSpec(workload="mixed", read_ratio=0.7, keys=300, ops=300, read_level="stale")
    (run,) = run_local(spec, [3], nodes=3)
    assert run["errors"] == {}
    assert run["latency"]["read"]["count"] + run["latency"]["write"]["count"] == 300
    assert run["latency"]["read"]["count"] > 100


def test_stage_breakdown_adds_up_to_client_latency() -> None:
    spec = WorkloadSpec(workload="write", clients=1, ops=150)
    (run,) = run_local(spec, [1], nodes=3, fsync_delay="fixed:3")
    bd = run["stages"]
    assert bd is not None and bd["requests"] >= 150
    assert bd["stages"]["leader_append"]["p50_ms"] >= 3.0  # the injected delay is in the path
    e2e = run["latency"]["write"]["mean_ms"]
    assert e2e >= 3.0
    assert bd["server_total_mean_ms"] == pytest.approx(e2e, rel=0.20), json.dumps(bd)
