"""``boltraft bench disk``: real files and a real LMDB environment in tmp_path, few operations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from boltraft_cli.bench import bench_group
from click.testing import CliRunner

from boltraft.benchmark.disk import (
    DISK_TESTS,
    THRESHOLDS,
    format_disk_result,
    run_disk_bench,
    verdict,
)
from boltraft.errors import BadRequestError


def test_measures_four_tests_and_leaves_nothing(tmp_path: Path) -> None:
    res = run_disk_bench(tmp_path, count=20, size=256)
    assert res["kind"] == "disk"
    for name in DISK_TESTS:
        s = res[name]
        assert s["count"] == 20
        assert 0 < s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"] <= s["p999_ms"] <= s["max_ms"]
        assert s["ops_per_s"] > 0
        assert res[f"{name}_p99_ms"] == s["p99_ms"]
    assert res["verdict"] in ("good", "slow", "unsuitable")
    assert res["expected_commit_p50_ms"] == pytest.approx(res["wal_append"]["p50_ms"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("p99", "level"),
    [(0.4, "good"), (THRESHOLDS["good_p99_ms"], "good"), (10.5, "slow"), (250.0, "unsuitable")],
)
def test_verdict_levels(p99: float, level: str) -> None:
    got, text = verdict(p99)
    assert got == level
    assert f"{p99:.2f}" in text


def test_bad_input_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadRequestError):
        run_disk_bench(tmp_path / "missing", count=10)
    with pytest.raises(BadRequestError):
        run_disk_bench(tmp_path, count=0)
    with pytest.raises(BadRequestError):
        run_disk_bench(tmp_path, count=10, size=0)
    assert list(tmp_path.iterdir()) == []


def test_cli_json_is_one_object(tmp_path: Path) -> None:
    out = CliRunner().invoke(
        bench_group, ["disk", "--dir", str(tmp_path), "--count", "10", "--json"]
    )
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    for key in (*(f"{name}_p99_ms" for name in DISK_TESTS), "verdict"):
        assert key in doc


def test_cli_text_and_error(tmp_path: Path) -> None:
    runner = CliRunner()
    out = runner.invoke(bench_group, ["disk", "--dir", str(tmp_path), "--count", "10"])
    assert out.exit_code == 0, out.output
    assert "verdict:" in out.output and "wal_append" in out.output and "lmdb_commit" in out.output
    bad = runner.invoke(bench_group, ["disk", "--dir", str(tmp_path / "nope"), "--count", "5"])
    assert bad.exit_code == 1
    assert "error: bad_request: not a directory" in bad.output


def test_a_result_from_before_wal_append_still_prints(tmp_path: Path) -> None:
    res = run_disk_bench(tmp_path, count=5)
    text = format_disk_result(res)
    assert "wal_append" in text
    old = {k: v for k, v in res.items() if not k.startswith("wal_append")}
    text = format_disk_result(old)
    assert "wal_append" not in text and "lmdb_commit" in text and "verdict:" in text
