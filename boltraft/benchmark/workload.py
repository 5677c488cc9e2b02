"""The workload driver: runs a client workload spread over several processes and measures it.

The driver knows nothing about the store: it calls an *operator* (``write(key, value)``,
``read(key)``, ``close()``) made in each worker by a picklable factory, so the same code
drives a real cluster (``clientops.ClientOperatorFactory``) and the tests' in-process fakes.

Layout: ``processes`` worker processes (``spawn``: no ZeroMQ context crosses a fork), each
running its share of the ``clients`` as threads, each thread with its own operator (one
``boltraft.client.Client`` per thread for the real cluster). Several processes get past the
GIL. Latencies go into one HdrHistogram per thread and kind (``hist``), merged in the worker
and then in the parent from their encoded form.

Closed loop without ``rate``: each client issues its next operation as soon as the previous
one returns. With ``rate`` (total ops/s), each client follows a fixed schedule and latency is
measured from the *scheduled* start, so a stall is not hidden by the client waiting
(coordinated omission).
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import queue
import random
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, Protocol

from boltraft.benchmark import hist
from boltraft.errors import BadRequestError, BoltraftError

WORKLOADS = ("write", "read", "mixed")
READ_LEVELS = ("linearizable", "stale")
PROGRESS_EVERY_S = 0.2
READY_TIMEOUT_S = 60.0  # worker start (interpreter spawn + connect) deadline
DRAIN_GRACE_S = 30.0  # after the planned end: the last in-flight calls must return by then


class Operator(Protocol):
    """One client's view of the store; each call blocks until the store answered.

    A refusal or failure of the store raises a ``BoltraftError`` (counted by code); anything
    else is a bug and ends the run.
    """

    def write(self, key: bytes, value: bytes) -> None: ...

    def read(self, key: bytes) -> None: ...

    def close(self) -> None: ...


OperatorFactory = Callable[[int], Operator]  # client index -> operator; picklable


@dataclasses.dataclass(frozen=True)
class WorkloadSpec:
    """The workload. Invariant after ``validate()``: exactly one of duration_s / ops is set."""

    workload: str = "write"  # write | read | mixed
    read_ratio: float = 0.5  # fraction of reads in "mixed", 0..1
    value_size: int = 100  # bytes per written value, >= 0
    key_space: int = 1000  # keys drawn uniformly from k00000000 .. k{key_space-1}
    clients: int = 1  # concurrent clients (threads spread over processes)
    processes: int = 0  # worker processes; 0: min(clients, cpu count)
    duration_s: float | None = None  # run length; default 5 s when ops is not given either
    ops: int | None = None  # total operations instead of a duration
    rate: float | None = None  # total ops/s limit (None: closed loop)
    read_level: str = "linearizable"  # linearizable | stale
    seed: int = 1

    def validate(self) -> WorkloadSpec:
        """Returns the spec with defaults resolved; raises BadRequestError on a bad field."""
        if self.workload not in WORKLOADS:
            raise BadRequestError(f"workload must be one of {', '.join(WORKLOADS)}")
        if self.read_level not in READ_LEVELS:
            raise BadRequestError(f"read level must be one of {', '.join(READ_LEVELS)}")
        if not 0.0 <= self.read_ratio <= 1.0:
            raise BadRequestError(f"read ratio must be within 0..1, got {self.read_ratio}")
        if self.value_size < 0 or self.value_size > 1 << 20:
            raise BadRequestError(f"value size must be 0..1048576, got {self.value_size}")
        if not 1 <= self.key_space <= 100_000_000:
            raise BadRequestError(f"key space must be 1..100000000, got {self.key_space}")
        if not 1 <= self.clients <= 4096:
            raise BadRequestError(f"clients must be 1..4096, got {self.clients}")
        if self.processes < 0:
            raise BadRequestError(f"processes must be >= 0, got {self.processes}")
        if self.duration_s is not None and self.ops is not None:
            raise BadRequestError("give a duration or a number of operations, not both")
        if self.duration_s is not None and not 0 < self.duration_s <= 86400:
            raise BadRequestError(f"duration must be within (0, 86400] s, got {self.duration_s}")
        if self.ops is not None and self.ops < 1:
            raise BadRequestError(f"ops must be >= 1, got {self.ops}")
        if self.rate is not None and not self.rate > 0:
            raise BadRequestError(f"rate must be > 0, got {self.rate}")
        duration = 5.0 if self.duration_s is None and self.ops is None else self.duration_s
        procs = self.processes or min(self.clients, os.cpu_count() or 1)
        return dataclasses.replace(self, duration_s=duration, processes=min(procs, self.clients))

    def client_ops(self, index: int) -> int | None:
        """Returns client ``index``'s share of ``ops`` (None in duration mode)."""
        if self.ops is None:
            return None
        return self.ops // self.clients + (1 if index < self.ops % self.clients else 0)


def key_name(i: int) -> bytes:
    """Returns the key of slot ``i``: ``k`` and 8 zero-padded digits (sorts numerically)."""
    return b"k%08d" % i


@dataclasses.dataclass
class _ClientState:
    """One client thread's counters; only its own thread writes them until it ends."""

    index: int
    done: int = 0
    writes: Any = dataclasses.field(default_factory=hist.new_histogram)
    reads: Any = dataclasses.field(default_factory=hist.new_histogram)
    errors: dict[str, int] = dataclasses.field(default_factory=dict)
    fatal: str | None = None
    end: float = 0.0


def _client_loop(
    spec: WorkloadSpec, op: Operator, st: _ClientState, start: float, stop: threading.Event
) -> None:
    rng = random.Random(spec.seed * 100_003 + st.index)
    quota = spec.client_ops(st.index)
    deadline = start + spec.duration_s if spec.duration_s is not None else float("inf")
    interval = spec.clients / spec.rate if spec.rate else 0.0
    value = (b"v" * spec.value_size) if spec.value_size else b""
    reads_only = spec.workload == "read"
    mixed = spec.workload == "mixed"
    ratio = spec.read_ratio
    key_space = spec.key_space
    clock = time.monotonic
    # spread scheduled clients over one interval so they do not fire in lockstep
    scheduled = start + interval * (st.index / spec.clients) if interval else 0.0
    n = 0
    try:
        while quota is None or n < quota:
            now = clock()
            if now >= deadline or stop.is_set():
                break
            if interval:
                if scheduled > now:
                    if scheduled >= deadline:
                        break
                    time.sleep(scheduled - now)
                t0 = scheduled
                scheduled += interval
            else:
                t0 = now
            key = key_name(rng.randrange(key_space))
            is_read = reads_only or (mixed and rng.random() < ratio)
            try:
                if is_read:
                    op.read(key)
                else:
                    op.write(key, value)
            except BoltraftError as exc:
                st.errors[exc.code] = st.errors.get(exc.code, 0) + 1
            else:
                hist.record_seconds(st.reads if is_read else st.writes, clock() - t0)
            n += 1
            st.done = n
    except Exception:
        st.fatal = traceback.format_exc()
        stop.set()
    st.end = clock()


def _worker(
    spec: WorkloadSpec,
    worker: int,
    indexes: list[int],
    factory: OperatorFactory,
    out: Any,
    go: Any,
) -> None:
    """Runs one worker process: makes its operators, waits for ``go``, runs its clients and
    reports ready / progress / done (or fatal, with a traceback) on ``out``."""
    try:
        ops = [factory(i) for i in indexes]
    except Exception:
        out.put(("fatal", worker, traceback.format_exc()))
        return
    states = [_ClientState(i) for i in indexes]
    stop = threading.Event()
    out.put(("ready", worker, None))
    try:
        if not go.wait(READY_TIMEOUT_S * 2):
            out.put(("fatal", worker, "no go signal from the driver"))
            return
        start = time.monotonic()
        threads = [
            threading.Thread(target=_client_loop, args=(spec, op, st, start, stop), daemon=True)
            for op, st in zip(ops, states, strict=True)
        ]
        for t in threads:
            t.start()
        while True:
            alive = [t for t in threads if t.is_alive()]
            if not alive:
                break
            alive[0].join(PROGRESS_EVERY_S)
            out.put(("progress", worker, sum(s.done for s in states)))
        writes, reads = hist.new_histogram(), hist.new_histogram()
        errors: dict[str, int] = {}
        for s in states:
            writes.add(s.writes)
            reads.add(s.reads)
            for code, c in s.errors.items():
                errors[code] = errors.get(code, 0) + c
        fatal = next((s.fatal for s in states if s.fatal), None)
        if fatal:
            out.put(("fatal", worker, fatal))
            return
        payload = {
            "writes": hist.encode(writes),
            "reads": hist.encode(reads),
            "errors": errors,
            "attempted": sum(s.done for s in states),
            "elapsed_s": max(s.end for s in states) - start,
        }
        out.put(("done", worker, payload))
    finally:
        for op in ops:
            try:
                op.close()
            except Exception:
                pass


def _summary(h: Any, elapsed: float) -> dict[str, Any]:
    s = hist.summary_with_hdr(h)
    s["ops_per_s"] = round(s["count"] / elapsed, 1) if elapsed > 0 else 0.0
    return s


def run_workload(
    spec: WorkloadSpec,
    factory: OperatorFactory,
    progress: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Returns the measured run: ``elapsed_s``, ``ops_total``, ``ops_per_s``, ``errors_total``,
    ``errors`` (code -> count) and ``latency`` (``write``, ``read``, ``all`` summaries).

    ``progress(ops_done, seconds_since_start)`` is called from this thread about every
    ``PROGRESS_EVERY_S``. Failed operations (a BoltraftError) are counted in ``errors`` and
    left out of the latency histograms and ``ops_total``. Raises BadRequestError on a bad
    spec and ``RuntimeError`` (with the worker's traceback) when a worker fails or the run
    overruns its deadline; every worker process is ended before this returns or raises.
    """
    spec = spec.validate()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    go = ctx.Event()
    groups = [list(range(w, spec.clients, spec.processes)) for w in range(spec.processes)]
    procs = [
        ctx.Process(target=_worker, args=(spec, w, g, factory, out, go), daemon=True)
        for w, g in enumerate(groups)
    ]
    for p in procs:
        p.start()
    try:
        return _drive(spec, procs, out, go, progress)
    finally:
        for p in procs:
            p.join(5.0)
            if p.is_alive():
                p.terminate()
                p.join(5.0)
        out.close()
        out.join_thread()


def _next(out: Any, deadline: float, procs: list[Any], what: str) -> tuple[str, int, Any]:
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"benchmark workers timed out while {what}")
        try:
            return out.get(timeout=min(left, 0.5))
        except queue.Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"benchmark worker died (exit code {dead[0].exitcode})")


def _drive(
    spec: WorkloadSpec,
    procs: list[Any],
    out: Any,
    go: Any,
    progress: Callable[[int, float], None] | None,
) -> dict[str, Any]:
    deadline = time.monotonic() + READY_TIMEOUT_S
    ready = 0
    while ready < len(procs):
        kind, _w, data = _next(out, deadline, procs, "starting")
        if kind == "fatal":
            raise RuntimeError(f"benchmark worker failed to start:\n{data}")
        ready += kind == "ready"
    go.set()
    start = time.monotonic()
    planned = spec.duration_s if spec.duration_s is not None else 3600.0
    deadline = start + planned + DRAIN_GRACE_S
    counts = [0] * len(procs)
    results: dict[int, dict[str, Any]] = {}
    while len(results) < len(procs):
        kind, w, data = _next(out, deadline, procs, "running")
        if kind == "fatal":
            raise RuntimeError(f"benchmark worker {w} failed:\n{data}")
        if kind == "progress":
            counts[w] = data
            if progress is not None:
                progress(sum(counts), time.monotonic() - start)
        elif kind == "done":
            results[w] = data
            counts[w] = data["attempted"]
    if progress is not None:
        progress(sum(counts), time.monotonic() - start)
    elapsed = max(r["elapsed_s"] for r in results.values())
    writes = hist.merge(r["writes"] for r in results.values())
    reads = hist.merge(r["reads"] for r in results.values())
    both = hist.new_histogram()
    both.add(writes)
    both.add(reads)
    errors: dict[str, int] = {}
    for r in results.values():
        for code, c in r["errors"].items():
            errors[code] = errors.get(code, 0) + c
    total = both.get_total_count()
    return {
        "elapsed_s": round(elapsed, 4),
        "ops_total": total,
        "ops_per_s": round(total / elapsed, 1) if elapsed > 0 else 0.0,
        "errors_total": sum(errors.values()),
        "errors": errors,
        "latency": {
            "write": _summary(writes, elapsed),
            "read": _summary(reads, elapsed),
            "all": _summary(both, elapsed),
        },
    }
