"""Benchmark: ``boltraft chaos run`` for longer, several times, and the faults added up.

Each run is ``boltraft.chaos.run.run`` (docs/chaos.md): a new cluster of real ``boltraft
serve`` processes, a workload of linearizable reads, writes and cas recorded as a history,
faults injected one at a time for ``--duration`` seconds, then healing, the replicas' hashes
and the linearizability check. Runs go one after the other (run ``i`` uses seed
``--seed + i``, and ``--out DIR/run-<i>`` when ``--out`` is given).

Prints one JSON object per run as it ends (the report of ``chaos run``: ``faults`` by type,
``faults_total``, ``ops_ok``, ``ops_fail``, ``ops_info``, ``linearizable``,
``replica_hashes_equal``, ``acked_writes_lost``, ``failover_ms`` with ``p50``, ``max`` and
``samples``, and the rest), then one more: ``{"total": {...}}`` with ``runs``,
``faults_total``, ``faults`` by type, ``ops_ok``, ``ops_fail``, ``ops_info``,
``acked_writes_lost``, ``failover_ms`` (``p50`` and ``max`` over every run's samples),
``all_linearizable``, ``all_replica_hashes_equal``, ``unexpected_exits`` and ``all_valid``.
Exit status 0 when every run is valid, 1 otherwise.

Run: ``python bench/chaos.py [--duration 600] [--runs 1] [--nodes 3] [--faults LIST]
[--clients 5] [--keys 5] [--seed 1] [--out DIR]`` (partitions need root; see docs/chaos.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from boltraft.chaos.run import RunOptions, parse_faults, percentile, run


def total(reports: list[dict[str, Any]], samples: list[float]) -> dict[str, Any]:
    """The runs added up (see the module docstring)."""
    faults: Counter[str] = Counter()
    for r in reports:
        faults.update(r["faults"])
    return {
        "runs": len(reports),
        "faults_total": sum(r["faults_total"] for r in reports),
        "faults": dict(faults),
        "ops_ok": sum(r["ops_ok"] for r in reports),
        "ops_fail": sum(r["ops_fail"] for r in reports),
        "ops_info": sum(r["ops_info"] for r in reports),
        "acked_writes_lost": sum(r["acked_writes_lost"] for r in reports),
        "failover_ms": {
            "p50": percentile(samples, 0.5),
            "max": max(samples) if samples else None,
            "samples": len(samples),
        },
        "all_linearizable": all(r["linearizable"] is True for r in reports),
        "all_replica_hashes_equal": all(r["replica_hashes_equal"] for r in reports),
        "unexpected_exits": sum(len(r["unexpected_exits"]) for r in reports),
        "all_valid": all(r["valid"] for r in reports),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=600.0, help="seconds per run")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--faults", default=None, help="comma-separated (default: all supported)")
    p.add_argument("--clients", type=int, default=5)
    p.add_argument("--keys", type=int, default=5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="keep every run's files here")
    a = p.parse_args(argv)
    reports: list[dict[str, Any]] = []
    samples: list[float] = []
    for i in range(a.runs):
        opts = RunOptions(
            nodes=a.nodes,
            faults=parse_faults(a.faults),
            duration=a.duration,
            clients=a.clients,
            keys=a.keys,
            seed=a.seed + i,
            out=None if a.out is None else a.out / f"run-{i}",
        )
        report = run(opts)
        samples += report["failover_ms_samples"]
        reports.append(report)
        print(json.dumps(report, sort_keys=True), flush=True)
    print(json.dumps({"total": total(reports, samples)}, sort_keys=True), flush=True)
    return 0 if all(r["valid"] for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
