"""The multi-process workload driver against function-level fake operators.

The fakes live at module level so the ``spawn``-ed worker processes can import them.
"""

from __future__ import annotations

import time

import pytest

from boltraft.benchmark.workload import WorkloadSpec, key_name, run_workload
from boltraft.errors import BadRequestError, UnavailableError


class SleepOp:
    """Writes take 2 ms, reads 1 ms."""

    def __init__(self, index: int) -> None:
        self.index = index

    def write(self, key: bytes, value: bytes) -> None:
        assert key.startswith(b"k") and len(value) == 7
        time.sleep(0.002)

    def read(self, key: bytes) -> None:
        time.sleep(0.001)

    def close(self) -> None:
        pass


def sleep_factory(index: int) -> SleepOp:
    return SleepOp(index)


class FlakyOp(SleepOp):
    """Every third write fails with ``unavailable``."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.n = 0

    def write(self, key: bytes, value: bytes) -> None:
        self.n += 1
        if self.n % 3 == 0:
            raise UnavailableError("down")


def flaky_factory(index: int) -> FlakyOp:
    return FlakyOp(index)


class BuggyOp(SleepOp):
    def write(self, key: bytes, value: bytes) -> None:
        raise ValueError("a bug in the operator")


def buggy_factory(index: int) -> BuggyOp:
    return BuggyOp(index)


def broken_factory(index: int) -> SleepOp:
    raise OSError("cannot connect")


def test_ops_mode_runs_exactly_the_total_over_processes() -> None:
    spec = WorkloadSpec(workload="write", value_size=7, clients=3, processes=2, ops=61)
    seen: list[int] = []
    res = run_workload(spec, sleep_factory, progress=lambda n, t: seen.append(n))
    assert res["ops_total"] == 61
    assert res["latency"]["write"]["count"] == 61
    assert res["latency"]["read"]["count"] == 0
    assert res["errors_total"] == 0
    assert res["latency"]["write"]["p50_ms"] >= 2.0  # each write sleeps 2 ms
    assert res["ops_per_s"] > 0 and res["elapsed_s"] > 0
    assert seen and seen[-1] == 61 and seen == sorted(seen)


def test_mixed_workload_splits_by_ratio() -> None:
    spec = WorkloadSpec(workload="mixed", read_ratio=0.8, value_size=7, clients=2, ops=400)
    res = run_workload(spec, sleep_factory)
    reads, writes = res["latency"]["read"]["count"], res["latency"]["write"]["count"]
    assert reads + writes == 400
    assert 0.65 < reads / 400 < 0.95
    assert res["latency"]["all"]["count"] == 400


def test_errors_are_counted_by_code_and_left_out_of_latency() -> None:
    spec = WorkloadSpec(workload="write", value_size=7, clients=2, processes=1, ops=30)
    res = run_workload(spec, flaky_factory)
    assert res["errors"] == {"unavailable": 10}
    assert res["errors_total"] == 10
    assert res["ops_total"] == 20


def test_duration_mode_stops_on_time() -> None:
    spec = WorkloadSpec(workload="read", clients=2, duration_s=0.5)
    start = time.monotonic()
    res = run_workload(spec, sleep_factory)
    assert time.monotonic() - start < 15
    assert 0.5 <= res["elapsed_s"] < 2.0
    assert res["latency"]["read"]["count"] > 10
    assert res["latency"]["read"]["p50_ms"] >= 1.0


def test_rate_limit_caps_the_operations() -> None:
    spec = WorkloadSpec(workload="read", clients=2, duration_s=0.6, rate=50.0)
    res = run_workload(spec, sleep_factory)
    # 50 ops/s for 0.6 s: 30 scheduled slots (+1 per client for a slot landing on the end)
    assert 1 <= res["ops_total"] <= 32


def test_operator_bug_fails_the_run() -> None:
    spec = WorkloadSpec(workload="write", clients=1, ops=5)
    with pytest.raises(RuntimeError, match="a bug in the operator"):
        run_workload(spec, buggy_factory)


def test_factory_failure_fails_the_start() -> None:
    with pytest.raises(RuntimeError, match="cannot connect"):
        run_workload(WorkloadSpec(clients=1, ops=5), broken_factory)


@pytest.mark.parametrize(
    "spec",
    [
        WorkloadSpec(workload="delete"),
        WorkloadSpec(read_level="eventual"),
        WorkloadSpec(read_ratio=1.5),
        WorkloadSpec(clients=0),
        WorkloadSpec(key_space=0),
        WorkloadSpec(duration_s=1.0, ops=10),
        WorkloadSpec(ops=0),
        WorkloadSpec(rate=0.0),
        WorkloadSpec(value_size=-1),
    ],
)
def test_bad_specs_are_refused(spec: WorkloadSpec) -> None:
    with pytest.raises(BadRequestError):
        spec.validate()


def test_defaults_and_shares() -> None:
    spec = WorkloadSpec(clients=5, ops=12).validate()
    assert spec.duration_s is None
    assert [spec.client_ops(i) for i in range(5)] == [3, 3, 2, 2, 2]
    assert WorkloadSpec().validate().duration_s == 5.0
    assert WorkloadSpec(clients=64, processes=3).validate().processes == 3
    assert key_name(42) == b"k00000042"
