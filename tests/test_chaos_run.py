"""The parts of ``boltraft chaos run`` that need no cluster: lost acknowledged writes and
failover times from a history, the workload's outcomes per answer, the fault list and what
is skipped, the slow-fsync log store, the choice of a private subnet, the text report.
(Real runs: tests/integration/test_chaos_run.py.)"""

from __future__ import annotations

import ipaddress
import random
from pathlib import Path
from typing import Any

import pytest

from boltraft.chaos import run as chaos_run
from boltraft.chaos.history import HistoryWriter, Operation, read_history
from boltraft.chaos.net import pick_subnet
from boltraft.chaos.node import split_fsync_delay
from boltraft.chaos.run import (
    Runner,
    RunOptions,
    acked_writes_lost,
    failover_ms,
    parse_faults,
    percentile,
)
from boltraft.chaos.workload import GARBLED, Workload, decode
from boltraft.errors import (
    BadRequestError,
    ConditionFailedError,
    LocalFileError,
    RequestTimeoutError,
    SessionExpiredError,
)


def op(f: str, value: Any, type_: str, invoke: int, complete: int | None, key: str = "k0"):
    return Operation(
        process=0, f=f, key=key, value=value, type=type_, invoke=invoke, complete=complete, line=1
    )


# --- acked writes lost --------------------------------------------------------------------------
def test_the_last_acknowledged_write_must_be_the_final_value() -> None:
    ops = [op("write", 1, "ok", 0, 10), op("write", 2, "ok", 20, 30)]
    assert acked_writes_lost(ops, {"k0": 2}) == 0
    assert acked_writes_lost(ops, {"k0": 1}) == 1
    assert acked_writes_lost(ops, {"k0": None}) == 1


def test_a_write_that_a_later_or_concurrent_one_may_overwrite_is_not_lost() -> None:
    concurrent = [op("write", 1, "ok", 0, 10), op("write", 2, "ok", 5, 15)]
    assert acked_writes_lost(concurrent, {"k0": 1}) == 0
    assert acked_writes_lost(concurrent, {"k0": 2}) == 0
    # an unknown write invoked before may take effect at any later time
    unknown = [op("write", 9, "info", 0, 1), op("write", 2, "ok", 20, 30)]
    assert acked_writes_lost(unknown, {"k0": 9}) == 0


def test_a_failed_cas_cannot_overwrite_and_an_ok_cas_counts_as_a_write() -> None:
    ops = [op("write", 1, "ok", 0, 10), op("cas", (5, 6), "fail", 20, 30)]
    assert acked_writes_lost(ops, {"k0": 6}) == 1
    ops = [op("write", 1, "ok", 0, 10), op("cas", (1, 6), "ok", 20, 30)]
    assert acked_writes_lost(ops, {"k0": 6}) == 0
    assert acked_writes_lost(ops, {"k0": 1}) == 1


def test_keys_are_counted_apart() -> None:
    ops = [op("write", 1, "ok", 0, 10, "a"), op("write", 2, "ok", 0, 10, "b")]
    assert acked_writes_lost(ops, {"a": 1, "b": 3}) == 1


# --- failover -------------------------------------------------------------------------------------
def test_failover_is_the_time_from_each_leader_kill_to_the_first_write_invoked_after_it() -> None:
    ms = 1_000_000
    ops = [
        op("write", 1, "ok", 1 * ms, 3 * ms),  # in flight at the kill at 2 ms: not counted
        op("read", 1, "ok", 3 * ms, 4 * ms),
        op("write", 2, "info", 3 * ms, 9 * ms),
        op("cas", (1, 3), "fail", 3 * ms, 4 * ms),
        op("write", 4, "ok", 4 * ms, 10 * ms),
        op("cas", (4, 5), "ok", 5 * ms, 7 * ms),  # acknowledged first, though invoked later
        op("write", 6, "ok", 12 * ms, 13 * ms),
    ]
    assert failover_ms([2 * ms, 8 * ms], ops) == [5.0, 5.0]
    assert failover_ms([20 * ms], ops) == []  # nothing invoked after it
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([], 0.5) is None


# --- options --------------------------------------------------------------------------------------
def test_the_fault_list_is_checked() -> None:
    assert parse_faults(None) is None
    assert parse_faults("kill, pause,kill") == ["kill", "pause"]
    with pytest.raises(BadRequestError, match="bogus"):
        parse_faults("kill,bogus")
    with pytest.raises(BadRequestError):
        parse_faults(",")


def test_partitions_are_skipped_with_the_reason_when_namespaces_are_unavailable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(chaos_run, "namespaces_unsupported", lambda: "network namespaces need root")
    r = Runner(RunOptions(faults=None, out=tmp_path))
    assert r.skipped == {"partition": "network namespaces need root"}
    assert r.kinds == ["kill", "pause", "slow-disk", "transfer", "membership"]
    r = Runner(RunOptions(faults=["kill"], out=tmp_path))
    assert r.skipped == {} and r.kinds == ["kill"]


def test_a_cluster_of_one_skips_the_faults_that_need_a_majority(tmp_path: Path) -> None:
    r = Runner(RunOptions(nodes=1, faults=["kill", "transfer"], out=tmp_path))
    assert r.kinds == [] and set(r.skipped) == {"kill", "transfer"}


@pytest.mark.parametrize(
    "opts",
    [RunOptions(nodes=0), RunOptions(clients=0), RunOptions(keys=0), RunOptions(duration=0)],
)
def test_bad_options_are_bad_requests(opts: RunOptions, tmp_path: Path) -> None:
    opts.out = tmp_path
    with pytest.raises(BadRequestError):
        Runner(opts)


def test_a_run_refuses_an_out_directory_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "history.jsonl").write_text("")
    with pytest.raises(LocalFileError, match="not an empty directory"):
        chaos_run.run(RunOptions(faults=["kill"], out=tmp_path))


# --- the workload ---------------------------------------------------------------------------------
class FakeClient:
    """Answers each call with the next item of ``answers`` (an exception is raised)."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, tuple]] = []

    def _next(self, name: str, args: tuple) -> Any:
        self.calls.append((name, args))
        a = self.answers.pop(0)
        if isinstance(a, BaseException):
            raise a
        return a

    def get(self, bucket: str, key: str) -> Any:
        return self._next("get", (key,))

    def put(self, bucket: str, key: str, value: str) -> Any:
        return self._next("put", (key, value))

    def cas(self, bucket: str, key: str, expect: str | None, value: str) -> Any:
        return self._next("cas", (key, expect, value))


def test_each_answer_is_recorded_as_the_format_says(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    with HistoryWriter(path) as h:
        w = Workload(["tcp://127.0.0.1:1"], h, clients=1, keys=1, seed=0)
        c: Any = FakeClient(
            None,  # write ok
            b"7",  # read ok
            ConditionFailedError("no", current=b"8"),  # cas fail
            None,  # cas ok
            RequestTimeoutError("slow"),  # write: unknown
        )
        assert w.write(c, 0, "k0", 7)
        assert w.read(c, 0, "k0")
        assert w.cas(c, 0, "k0", 7, 9)
        assert w.cas(c, 0, "k0", 8, 10)  # from the value the failed cas reported
        assert not w.write(c, 0, "k0", 11)
        assert not w.read(FakeClient(SessionExpiredError("gone")), 1, "k0")  # type: ignore[arg-type]
    ops = read_history(path)
    assert [(o.f, o.type, o.value) for o in ops] == [
        ("write", "ok", 7),
        ("read", "ok", 7),
        ("cas", "fail", (7, 9)),
        ("cas", "ok", (8, 10)),
        ("write", "info", 11),
        ("read", "info", None),
    ]
    assert (w.tally.ok, w.tally.fail, w.tally.info) == (3, 1, 2)
    assert dict(w.tally.errors) == {"timeout": 1, "session_expired": 1}


def test_a_cas_expects_the_value_last_seen_and_every_write_is_new(tmp_path: Path) -> None:
    with HistoryWriter(tmp_path / "h.jsonl") as h:
        w = Workload(["tcp://127.0.0.1:1"], h, clients=1, keys=1, seed=3)
        c: Any = FakeClient(*([None] * 100))  # every call ok; every read finds the key absent
        rng = random.Random(1)
        for _ in range(100):
            w.one(c, 0, rng)
    last: str | None = None
    for name, args in c.calls:
        if name == "cas":
            assert args[1] == last
        last = None if name == "get" else args[-1]
    written = [a[-1] for name, a in c.calls if name != "get"]
    assert len(written) == len(set(written)) > 20
    assert any(name == "cas" for name, _ in c.calls)


def test_stored_values_decode_to_integers() -> None:
    assert decode(None) is None
    assert decode(b"12") == 12
    assert decode(b"x") == GARBLED and decode(b"\xff") == GARBLED


# --- the node launcher ----------------------------------------------------------------------------
def test_the_launcher_takes_its_fsync_delay_off_the_command_line() -> None:
    assert split_fsync_delay(["--fsync-delay", "25", "serve", "--id", "a"]) == (
        ["serve", "--id", "a"],
        25.0,
    )
    assert split_fsync_delay(["serve"]) == (["serve"], None)


# --- the network ----------------------------------------------------------------------------------
def test_the_subnet_avoids_every_network_in_use() -> None:
    used = [ipaddress.IPv4Network("10.213.7.0/24"), ipaddress.IPv4Network("10.213.8.128/25")]
    assert str(pick_subnet(7, used)) == "10.213.9.0/24"
    assert str(pick_subnet(3, [ipaddress.IPv4Network("0.0.0.0/0")])) == "10.213.3.0/24"
    everything = [ipaddress.IPv4Network("10.213.0.0/16")]
    with pytest.raises(Exception, match="no free"):
        pick_subnet(1, everything)


# --- the text report ------------------------------------------------------------------------------
def test_the_text_report_names_the_verdict_and_what_was_skipped() -> None:
    from boltraft_cli.chaos import format_report

    report = {
        "faults": {"kill": 2, "pause": 1},
        "faults_total": 3,
        "ops_ok": 10,
        "ops_fail": 1,
        "ops_info": 0,
        "linearizable": True,
        "replica_hashes_equal": True,
        "acked_writes_lost": 0,
        "failover_ms": {"p50": 900.0, "max": 1200.5, "samples": 2},
        "skipped": {"partition": "network namespaces need root"},
        "unexpected_exits": [{"node": "n2", "status": 1}],
        "recovery_timeouts": 0,
        "valid": False,
        "seed": 5,
        "out": "/tmp/x",
    }
    text = format_report(report)
    assert "faults: kill=2 pause=1 (3 in all)" in text
    assert "failover_ms: p50=900.0 max=1200.5 (2 leader kills)" in text
    assert "skipped: partition: network namespaces need root" in text
    assert "unexpected exit: n2 with status 1" in text
    assert text.splitlines()[-1] == "NOT VALID (seed 5; files in /tmp/x)"
