"""Returns cluster benchmark runs: ``boltraft bench cluster`` and ``boltraft bench sweep``.

One run = one workload at one client count against one cluster: the keys are prepared, the
workload runs (``workload.run_workload``), then the leader's stage records for the run's
time window are fetched with the ``stats`` op and summarized (``breakdown``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

from boltraft.benchmark import breakdown
from boltraft.benchmark.clientops import ClientOperatorFactory
from boltraft.benchmark.localcluster import LocalCluster
from boltraft.benchmark.stages import FsyncDelay
from boltraft.benchmark.workload import WorkloadSpec, run_workload
from boltraft.errors import BadRequestError, BoltraftError
from boltraft.server.probe import request as probe_request
from boltraft.server.probe import status as probe_status
from boltraft.transport.curve import PartyKeys

SWEEP_DELAYS_MS: tuple[float, ...] = (0, 1, 2, 5, 10, 20)

ProgressFactory = Callable[[WorkloadSpec, str], Callable[[int, float], None] | None]


def find_leader(endpoints: Sequence[str], keys: PartyKeys | None = None) -> str | None:
    """Returns the endpoint of the node the answering nodes name as leader (asked over
    CURVE with ``keys``), or None."""
    for ep in endpoints:
        st = probe_status(ep, timeout=1.0, keys=keys)
        if st and st.get("lead"):
            addr = st.get("leader_addr") or (ep if st.get("role") == "leader" else None)
            if addr:
                return str(addr)
    return None


def fetch_stages(
    leader: str | None,
    since: float,
    e2e_mean_ms: float | None,
    client_rtt: dict[str, Any] | None = None,
    keys: PartyKeys | None = None,
) -> dict | None:
    """Returns the stage breakdown of the leader's batches finished at or after ``since`` (wall
    clock), or None when there is no leader, it keeps no stage records, or it did not answer.
    ``client_rtt`` becomes the ``client_network`` stage (see ``breakdown.summarize``);
    ``keys``: the client keys of a cluster with CURVE."""
    if leader is None:
        return None
    try:
        snap = probe_request(leader, {"op": "stats", "since": since}, timeout=5.0, keys=keys)
    except BoltraftError:
        return None
    if not isinstance(snap, dict) or not isinstance(snap.get("records"), list):
        return None
    return breakdown.summarize(snap["records"], e2e_mean_ms, client_rtt)


def specs_for(spec: WorkloadSpec, clients: Sequence[int]) -> list[WorkloadSpec]:
    """Returns the validated spec of each client count; raises BadRequestError before any
    work starts when the list is empty or one of them is invalid."""
    if not clients:
        raise BadRequestError("no client counts given")
    return [dataclasses.replace(spec, clients=c).validate() for c in clients]


def run_series(
    spec: WorkloadSpec,
    clients: Sequence[int],
    endpoints: Sequence[str],
    *,
    nodes: int | None,
    fsync_delay: str | None = None,
    progress: ProgressFactory | None = None,
    label_prefix: str = "",
    bucket: str = "bench",
    keys: PartyKeys | None = None,
) -> list[dict[str, Any]]:
    """Returns one run per client count of ``clients``, in order, against ``endpoints``,
    with the keys in ``bucket`` (made if missing); every client and probe uses the client
    keys ``keys`` (a cluster with CURVE) when given.

    Writes start at the leader (found with ``status``); reads spread over all endpoints.
    Raises BadRequestError on a bad spec, and RuntimeError when a worker fails."""
    specs = specs_for(spec, clients)
    leader = find_leader(endpoints, keys)
    ordered = [leader, *[e for e in endpoints if e != leader]] if leader else list(endpoints)
    factory = ClientOperatorFactory(
        tuple(ordered),
        bucket=bucket,
        read_level=spec.read_level,
        spread=spec.workload != "write",
        keys=keys,
    )
    factory.prepare(specs[0])
    runs = []
    for s in specs:
        label = f"{label_prefix}{s.workload} c{s.clients}"
        rtt = factory.status_rtt()
        since = time.time()
        measured = run_workload(s, factory, progress(s, label) if progress else None)
        write_mean = measured["latency"]["write"]["mean_ms"] or None
        stages = None
        if write_mean is not None:  # the breakdown follows writes only
            stages = fetch_stages(
                leader or find_leader(endpoints, keys), since, write_mean, rtt, keys
            )
        config = dataclasses.asdict(s)
        config.update(
            nodes=nodes,
            endpoints=list(endpoints),
            fsync_delay=fsync_delay,
            fsync_delay_ms=FsyncDelay.parse(fsync_delay).mean_ms if fsync_delay else 0.0,
        )
        runs.append({"label": label, "config": config, **measured, "stages": stages})
    return runs


def delay_spec(ms: float) -> str | None:
    """Returns the ``--fsync-delay`` spec for a fixed delay of ``ms`` (None for 0)."""
    return f"fixed:{ms:g}" if ms > 0 else None


def run_local(
    spec: WorkloadSpec,
    clients: Sequence[int],
    *,
    nodes: int = 3,
    fsync_delay: str | None = None,
    progress: ProgressFactory | None = None,
    label_prefix: str = "",
) -> list[dict[str, Any]]:
    """Returns ``run_series`` against a fresh local cluster of ``nodes`` (stopped after)."""
    args = ["--fsync-delay", fsync_delay] if fsync_delay else []
    if fsync_delay:
        FsyncDelay.parse(fsync_delay)
    specs_for(spec, clients)
    with LocalCluster(nodes, serve_args=args) as cluster:
        cluster.start()
        return run_series(
            spec,
            clients,
            cluster.endpoints,
            nodes=nodes,
            fsync_delay=fsync_delay,
            progress=progress,
            label_prefix=label_prefix,
        )


def run_sweep(
    spec: WorkloadSpec,
    clients: Sequence[int],
    delays_ms: Sequence[float] = SWEEP_DELAYS_MS,
    *,
    nodes: int = 3,
    progress: ProgressFactory | None = None,
) -> list[dict[str, Any]]:
    """Returns the runs at every injected fsync delay (a fresh local cluster for each)."""
    if not delays_ms:
        raise BadRequestError("no delays given")
    if any(d < 0 or d > 10_000 for d in delays_ms):
        raise BadRequestError("delays must be within 0..10000 ms")
    specs_for(spec, clients)
    runs: list[dict[str, Any]] = []
    for d in delays_ms:
        runs += run_local(
            spec,
            clients,
            nodes=nodes,
            fsync_delay=delay_spec(d),
            progress=progress,
            label_prefix=f"delay {d:g}ms ",
        )
    return runs


def format_runs(runs: list[dict[str, Any]]) -> str:
    """Returns the summary table of ``runs``: ops/s, errors and latency per kind."""
    head = (
        f"{'run':<28} {'kind':<6} {'ops':>8} {'ops/s':>9} {'err':>5} {'p50 ms':>8} "
        f"{'p90 ms':>8} {'p99 ms':>8} {'p99.9':>8} {'max ms':>8}"
    )
    lines = [head, "-" * len(head)]
    for run in runs:
        for kind in ("write", "read"):
            s = run["latency"][kind]
            if not s["count"]:
                continue
            lines.append(
                f"{run['label'][:28]:<28} {kind:<6} {s['count']:>8} {s['ops_per_s']:>9.0f} "
                f"{run['errors_total']:>5} {s['p50_ms']:>8.3f} {s['p90_ms']:>8.3f} "
                f"{s['p99_ms']:>8.3f} {s['p999_ms']:>8.3f} {s['max_ms']:>8.3f}"
            )
        if run["errors"]:
            codes = ", ".join(f"{k}={v}" for k, v in sorted(run["errors"].items()))
            lines.append(f"{'':<28} errors: {codes}")
    return "\n".join(lines)
