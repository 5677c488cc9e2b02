"""``boltraft bench cluster`` and ``bench sweep`` against real local clusters (few operations).

Also the check that the stage breakdown adds up to the client's measured latency within 20%.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from boltraft_cli.bench import bench_group
from click.testing import CliRunner

from boltraft.benchmark import result
from boltraft.benchmark.clusterbench import run_series
from boltraft.benchmark.floor import WARMUP
from boltraft.benchmark.localcluster import LocalCluster
from boltraft.benchmark.workload import WorkloadSpec

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(3, root=tmp_path_factory.mktemp("bench-cluster")) as c:
        c.start()
        yield c


def test_cli_cluster_writes_a_result(cluster: LocalCluster, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    eps = ",".join(cluster.endpoints)
    args = ["cluster", "--endpoints", eps, "--clients", "1,3", "--ops", "90", "--value-size", "50"]
    res = CliRunner().invoke(bench_group, [*args, "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "write c3" in res.output and "stage breakdown" in res.output
    doc = result.load(out)
    assert doc["kind"] == "cluster" and len(doc["runs"]) == 2
    for run, clients in zip(doc["runs"], (1, 3), strict=True):
        assert run["config"]["clients"] == clients
        assert run["config"]["nodes"] is None and run["config"]["endpoints"] == cluster.endpoints
        assert run["errors"] == {}
        assert run["ops_total"] == 90
        w = run["latency"]["write"]
        assert w["count"] == 90 and 0 < w["p50_ms"] <= w["p99_ms"]
        assert run["stages"]["requests"] >= 90
        assert len(run["stages"]["followers"]) == 2  # every follower acknowledged


def test_mixed_stale_reads(cluster: LocalCluster) -> None:
    spec = WorkloadSpec(
        workload="mixed", read_ratio=0.7, key_space=300, ops=200, read_level="stale"
    )
    (run,) = run_series(spec, [3], cluster.endpoints, nodes=3)
    assert run["errors"] == {}
    reads, writes = run["latency"]["read"]["count"], run["latency"]["write"]["count"]
    assert reads + writes == 200 and reads > 80
    assert run["label"] == "mixed c3"


def test_sweep_stage_breakdown_adds_up_to_client_latency(tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    args = ["sweep", "--delays", "3", "--clients", "1", "--ops", "120", "--no-progress"]
    res = CliRunner().invoke(bench_group, [*args, "--out", str(out)])
    assert res.exit_code == 0, res.output
    doc = result.load(out)
    assert doc["kind"] == "sweep"
    (run,) = doc["runs"]
    assert run["config"]["fsync_delay"] == "fixed:3" and run["config"]["fsync_delay_ms"] == 3.0
    bd = run["stages"]
    assert bd is not None and bd["requests"] >= 120
    assert bd["stages"]["leader_append"]["p50_ms"] >= 3.0  # the injected delay is in the path
    e2e = run["latency"]["write"]["mean_ms"]
    assert e2e >= 3.0
    assert bd["server_total_mean_ms"] == pytest.approx(e2e, rel=0.20), json.dumps(bd)


def test_cli_cluster_measures_the_floor_of_this_machine_first(tmp_path: Path) -> None:
    out = tmp_path / "f.json"
    args = ["cluster", "--clients", "1", "--ops", "40", "--floor", "--floor-writes", "20"]
    res = CliRunner().invoke(bench_group, [*args, "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    doc = result.load(out)
    floor = doc["floor"]
    assert floor["kind"] == "floor"
    written = WARMUP + 20
    assert floor["write"]["records"] == {
        "leader": written,
        "follower1": written,
        "follower2": written,
    }
    assert f"p50 {floor['floor_write_c1_p50_ms']:.3f} ms" in res.output
    assert doc["runs"][0]["errors"] == {}


def test_cli_floor_refuses_a_remote_cluster() -> None:
    args = ["cluster", "--endpoints", "tcp://127.0.0.1:1", "--floor", "--no-progress"]
    res = CliRunner().invoke(bench_group, args)
    assert res.exit_code != 0
    assert "--floor measures this machine: a local cluster only" in res.output
