"""``boltraft bench report``: charts from result documents (synthetic runs, real matplotlib)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from boltraft_cli.bench import bench_group
from click.testing import CliRunner

from boltraft.benchmark import breakdown, hist, result
from boltraft.benchmark.disk import run_disk_bench
from boltraft.benchmark.report import render
from boltraft.benchmark.stages import STAGES
from boltraft.errors import BadRequestError


def _latency(mean_ms: float, n: int, rng: random.Random) -> dict[str, Any]:
    h = hist.new_histogram()
    hist.record_many_seconds(h, [rng.expovariate(1 / mean_ms) / 1000 for _ in range(n)])
    s = hist.summary_with_hdr(h)
    s["ops_per_s"] = n / 2.0
    return s


def _run(clients: int, delay_ms: float, rng: random.Random) -> dict[str, Any]:
    write = _latency(1.0 + delay_ms, 300, rng)
    empty = hist.summary_with_hdr(hist.new_histogram()) | {"ops_per_s": 0.0}
    records = [
        [0.0, 4, 0.0002, 0.0005 + delay_ms / 1000, 0.0003, 0.0001, 0.0002, 0.0001, {"n2": 0.001}]
        for _ in range(20)
    ]
    return {
        "label": f"write c{clients} delay {delay_ms:g}",
        "config": {
            "workload": "write",
            "read_ratio": 0.5,
            "value_size": 100,
            "nodes": 3,
            "clients": clients,
            "fsync_delay": f"fixed:{delay_ms:g}" if delay_ms else None,
            "fsync_delay_ms": delay_ms,
        },
        "elapsed_s": 2.0,
        "ops_total": 300,
        "ops_per_s": 150.0 * clients / (1 + delay_ms),
        "errors_total": 0,
        "errors": {},
        "latency": {"write": write, "read": empty, "all": write},
        "stages": breakdown.summarize(records, write["mean_ms"]),
    }


def _write(path: Path, kind: str, runs: list[dict[str, Any]]) -> Path:
    result.write(path, result.new_document(kind, runs, "test"))
    return path


def test_all_charts_are_written_and_non_empty(tmp_path: Path) -> None:
    rng = random.Random(7)
    cluster = _write(tmp_path / "c.json", "cluster", [_run(c, 0, rng) for c in (1, 4, 16)])
    sweep = _write(tmp_path / "s.json", "sweep", [_run(4, d, rng) for d in (0, 2, 5)])
    disk = tmp_path / "d.json"
    (tmp_path / "scratch").mkdir()
    disk.write_text(json.dumps(run_disk_bench(tmp_path / "scratch", count=10)))
    out = tmp_path / "charts"
    paths = render([cluster, sweep, disk], out)
    names = sorted(p.name for p in paths)
    assert names == [
        "disk_latency_cdf.png",
        "latency_cdf.png",
        "latency_vs_fsync_delay.png",
        "stage_breakdown.png",
        "throughput_vs_clients.png",
    ]
    for p in paths:
        data = p.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000


def test_only_charts_with_data_are_drawn(tmp_path: Path) -> None:
    run = _run(1, 0, random.Random(1))
    run["stages"] = None
    one = _write(tmp_path / "one.json", "cluster", [run])
    paths = render([one], tmp_path / "out")
    assert [p.name for p in paths] == ["latency_cdf.png"]


def test_bad_inputs_are_refused_and_write_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (tmp_path / "junk.json").write_text("{not json")
    (tmp_path / "other.json").write_text(json.dumps({"schema": "x/9", "kind": "cluster"}))
    bad_run = result.new_document("cluster", [{"label": "x"}], "t")
    (tmp_path / "badrun.json").write_text(json.dumps(bad_run))
    for name in ("junk.json", "other.json", "badrun.json", "missing.json"):
        with pytest.raises(BadRequestError):
            render([tmp_path / name], out)
    with pytest.raises(BadRequestError):
        render([_write(tmp_path / "empty.json", "cluster", [])], out)
    assert not out.exists()


def test_stage_summary_weights_by_requests() -> None:
    recs = [
        [0.0, 1, 0.001, 0.002, 0.0, 0.0, 0.001, 0.0, {"n2": 0.003}],
        [0.0, 3, 0.001, 0.006, 0.0, 0.0, 0.001, 0.0, {"n2": 0.007, "n3": 0.009}],
    ]
    bd = breakdown.summarize(recs, e2e_mean_ms=8.0)
    assert bd is not None
    assert bd["order"] == list(STAGES)
    assert bd["requests"] == 4 and bd["batches"] == 2
    assert bd["stages"]["leader_append"]["mean_ms"] == pytest.approx(5.0, rel=0.01)
    assert bd["server_total_mean_ms"] == pytest.approx(7.0, rel=0.01)
    assert bd["coverage"] == pytest.approx(7.0 / 8.0, rel=0.01)
    assert bd["followers"]["n3"]["count"] == 3
    assert "leader_append" in breakdown.format_table(bd)
    assert breakdown.summarize([]) is None


def test_cli_report(tmp_path: Path) -> None:
    src = _write(tmp_path / "c.json", "cluster", [_run(c, 0, random.Random(c)) for c in (1, 2)])
    out = CliRunner().invoke(bench_group, ["report", str(src), "--out-dir", str(tmp_path / "o")])
    assert out.exit_code == 0, out.output
    assert "throughput_vs_clients.png" in out.output
    bad = CliRunner().invoke(bench_group, ["report", str(tmp_path / "nope.json")])
    assert bad.exit_code == 1 and "error: bad_request" in bad.output
