"""``boltraft bench floor``: real role processes, real ZeroMQ sockets and real files in
tmp_path, few writes."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from boltraft_cli.bench import bench_group
from click.testing import CliRunner

from boltraft.benchmark import floor
from boltraft.benchmark.floor import (
    SEQ_BYTES,
    WARMUP,
    format_floor_result,
    run_floor,
    run_floor_bench,
)
from boltraft.errors import BadRequestError, RequestTimeoutError, UnavailableError

ROLES = ("leader", "follower1", "follower2")


def test_every_role_writes_every_record_in_order(tmp_path: Path) -> None:
    res = run_floor(tmp_path, writes=20, size=30, fsync=True)
    total = WARMUP + 20
    assert res["records"] == {role: total for role in ROLES}
    assert 0 < res["p50_ms"] <= res["p90_ms"] <= res["p99_ms"]
    for key in ("leader_cpu_us_per_op", "follower_cpu_us_per_op", "client_cpu_us_per_op"):
        assert res[key] > 0
    record = SEQ_BYTES + 30
    contents = [(tmp_path / role).read_bytes()[: total * record] for role in ROLES]
    assert contents[0] == contents[1] == contents[2]  # the same records in the same order
    seqs = [
        int.from_bytes(contents[0][i : i + SEQ_BYTES], "big")
        for i in range(0, total * record, record)
    ]
    assert seqs == list(range(total))


def test_bench_measures_both_runs_and_leaves_nothing(tmp_path: Path) -> None:
    res = run_floor_bench(tmp_path, writes=20, size=50)
    assert res["kind"] == "floor"
    assert res["write"]["fsync"] is True and res["hops"]["fsync"] is False
    for name in ("write", "hops"):
        assert res[name]["records"] == {role: WARMUP + 20 for role in ROLES}
    assert res["floor_write_c1_p50_ms"] == res["write"]["p50_ms"]
    assert res["floor_hops_c1_p50_ms"] == res["hops"]["p50_ms"]
    assert res["floor_disk_share_p50_ms"] == pytest.approx(
        res["write"]["p50_ms"] - res["hops"]["p50_ms"], abs=1e-3
    )
    text = format_floor_result(res)
    assert f"{res['write']['p50_ms']:.3f}" in text and f"{res['hops']['p50_ms']:.3f}" in text
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"writes": 0}, "writes"), ({"size": 0}, "size"), ({"writes": "5"}, "writes")],
)
def test_bad_arguments_are_refused(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(BadRequestError, match=match):
        run_floor_bench(tmp_path, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_a_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadRequestError, match="not a writable directory"):
        run_floor_bench(tmp_path / "nope", writes=5)


def test_a_role_that_cannot_start_is_reported(tmp_path: Path) -> None:
    (tmp_path / "follower2").mkdir()  # its file cannot be opened
    with pytest.raises(UnavailableError, match="follower2 process failed: IsADirectoryError"):
        run_floor(tmp_path, writes=5, size=10, fsync=False)


def test_unanswered_writes_time_out_and_no_process_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(floor, "WRITE_TIMEOUT_S", 0.5)
    started: list[floor._Role] = []
    line = floor._Role.line

    def frozen_followers(role: floor._Role, deadline: float) -> bytes:
        out = line(role, deadline)
        started.append(role)
        if role.name.startswith("follower"):
            os.kill(role.proc.pid, signal.SIGSTOP)  # bound, then never answers
        return out

    monkeypatch.setattr(floor._Role, "line", frozen_followers)
    with pytest.raises(RequestTimeoutError, match="write 0 unanswered"):
        run_floor(tmp_path, writes=5, size=10, fsync=False)
    assert len(started) == 3
    assert all(role.proc.poll() is not None for role in started)


def test_cli_prints_json_and_a_table(tmp_path: Path) -> None:
    runner = CliRunner()
    out = runner.invoke(bench_group, ["floor", "--dir", str(tmp_path), "--writes", "10", "--json"])
    assert out.exit_code == 0, out.output
    res = json.loads(out.output)
    for key in ("floor_write_c1_p50_ms", "floor_hops_c1_p50_ms", "floor_disk_share_p50_ms"):
        assert key in res
    out = runner.invoke(bench_group, ["floor", "--dir", str(tmp_path), "--writes", "10"])
    assert out.exit_code == 0, out.output
    assert out.output.splitlines()[3].startswith("write")
    assert out.output.splitlines()[4].startswith("hops")


def test_cli_bad_directory_is_one_line_error(tmp_path: Path) -> None:
    out = CliRunner().invoke(bench_group, ["floor", "--dir", str(tmp_path / "nope")])
    assert out.exit_code == 1
    assert out.output.strip().startswith("error: bad_request: not a writable directory")
