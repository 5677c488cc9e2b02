"""``python bench/cluster.py`` against a real cluster, briefly: both frame modes print the
documented keys, and every request of every phase is answered without an error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .cluster import Cluster

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "cluster.py"


@pytest.mark.parametrize("single", [False, True])
def test_bench_cluster_script_prints_every_key_without_errors(
    cluster: Cluster, single: bool
) -> None:
    argv = [sys.executable, str(SCRIPT), "--endpoints", ",".join(cluster.endpoints)]
    argv += ["--clients", "1,4", "--duration", "0.5", "--warmup", "0.1"]
    if single:
        argv.append("--single-frames")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(out.stdout)
    assert result["frames"] == ("req" if single else "reqs")
    for kind in ("write", "read"):
        for c in (1, 4):
            assert result[f"{kind}_c{c}_errors"] == 0
            assert result[f"{kind}_c{c}_ops_per_s"] > 0
            for q in ("p50", "p90", "p99"):
                assert result[f"{kind}_c{c}_{q}_ms"] > 0


def test_bench_cluster_script_on_its_own_cluster_reports_cpu_per_op_and_the_floor() -> None:
    argv = [sys.executable, str(SCRIPT), "--clients", "1", "--workloads", "write"]
    argv += ["--duration", "0.5", "--warmup", "0.1", "--floor-writes", "20"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(out.stdout)
    assert result["write_c1_errors"] == 0 and result["write_c1_ops_per_s"] > 0
    # the machine's write floor, measured before the cluster started
    assert result["floor_hops_c1_p50_ms"] > 0
    assert result["floor_write_c1_p50_ms"] > 0
    assert "floor_disk_share_p50_ms" in result
    # every write costs the leader and both followers some CPU (a stuck or unread process
    # would report none)
    assert result["write_c1_leader_cpu_us_per_op"] > 0
    assert result["write_c1_follower_cpu_us_per_op"] > 0
