"""boltraft against etcd 3.4 on this machine, in alternating pairs of runs.

A machine whose phase moves every figure by 20-40% within minutes can only compare two
systems side by side: this script runs etcd's benchmark (``etcd_bench.py``, which installs
etcd 3.4 from Debian and drives a 3-member cluster with ``wrk``) and ``bench/cluster.py``
one right after the other, ``--pairs`` times, with the order swapped every pair (etcd
first, then boltraft first, ...) so that a drifting machine favours neither.

At one client the figure is a put's p50 latency and the ratio is boltraft's over etcd's
(lower is better; issue "one client's write faster than etcd's" asks for at most 0.9); at
more clients it is puts per second and the ratio is boltraft's over etcd's (higher is better;
the security issue asks for at least 2 with ``--secure``).

Prints ONE JSON object: ``clients``, ``secure``, ``duration_s``, ``pairs`` (each with
``first`` ("etcd" or "boltraft"), ``load_avg`` at its start, ``etcd``, ``boltraft`` and
``ratio``), ``ratio_median``, ``ratio_min``, ``ratio_max``, and ``unit`` (``p50_ms`` or
``ops_per_s``).

    python bench/etcd_pairs.py --clients 64 --secure --pairs 3
    python bench/etcd_pairs.py --clients 1 --pairs 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_ETCD_BENCH = HERE.parent.parent / "shared" / "anchors" / "etcd_bench.py"


def etcd_figure(report: dict[str, Any], clients: int) -> float:
    """The put figure of ``etcd_bench.py``'s report at ``clients``: p50 in ms at one
    client, puts per second above. Raises KeyError when the report has no such run."""
    run = report["cluster3"]["wrk"][f"c{clients}"]
    return float(run["p50_us"]) / 1000 if clients == 1 else float(run["ops_per_s"])


def boltraft_figure(report: dict[str, Any], clients: int) -> float:
    """The same figure from ``bench/cluster.py``'s report. Raises KeyError."""
    if clients == 1:
        return float(report["write_c1_p50_ms"])
    return float(report[f"write_c{clients}_ops_per_s"])


def summarize(pairs: list[dict[str, Any]], clients: int) -> dict[str, Any]:
    """Adds each pair's ``ratio`` (boltraft over etcd) and returns the median, least and
    greatest of them with the unit of the figures. Raises ValueError for no pairs."""
    if not pairs:
        raise ValueError("no pairs")
    for p in pairs:
        p["ratio"] = round(p["boltraft"] / p["etcd"], 3)
    ratios = [p["ratio"] for p in pairs]
    return {
        "unit": "p50_ms" if clients == 1 else "ops_per_s",
        "ratio_median": round(statistics.median(ratios), 3),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
    }


def _json_of(argv: list[str], cwd: str) -> dict[str, Any]:
    out = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{argv[1]} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def run_etcd(script: Path, clients: int, duration: float, cwd: str) -> float:
    argv = [sys.executable, str(script), "--topologies", "cluster3", "--workloads", "put"]
    seconds = str(max(1, round(duration)))  # etcd_bench.py takes whole seconds
    argv += ["--conc", str(clients), "--no-grpc", "--duration", seconds]
    return etcd_figure(_json_of(argv, cwd), clients)


def run_boltraft(clients: int, duration: float, secure: bool, cwd: str) -> float:
    argv = [sys.executable, str(HERE / "cluster.py"), "--clients", str(clients)]
    argv += ["--workloads", "write", "--duration", str(duration), "--no-floor"]
    if secure:
        argv.append("--secure")
    return boltraft_figure(_json_of(argv, cwd), clients)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=64, help="one concurrency level")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds measured per run")
    ap.add_argument("--secure", action="store_true", help="boltraft with CURVE keys")
    ap.add_argument("--etcd-bench", type=Path, default=DEFAULT_ETCD_BENCH)
    args = ap.parse_args()
    if args.clients < 1 or args.pairs < 1:
        ap.error("--clients and --pairs must be at least 1")
    if not args.etcd_bench.is_file():
        ap.error(f"no etcd benchmark at {args.etcd_bench} (--etcd-bench PATH)")
    pairs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="etcd-pairs-") as cwd:
        for i in range(args.pairs):
            first = "etcd" if i % 2 == 0 else "boltraft"
            pair: dict[str, Any] = {"first": first, "load_avg": os.getloadavg()[0]}
            for who in (first, "boltraft" if first == "etcd" else "etcd"):
                if who == "etcd":
                    pair["etcd"] = run_etcd(args.etcd_bench, args.clients, args.duration, cwd)
                else:
                    pair["boltraft"] = run_boltraft(args.clients, args.duration, args.secure, cwd)
            pairs.append(pair)
    summary = summarize(pairs, args.clients)
    report = {
        "clients": args.clients,
        "secure": args.secure,
        "duration_s": args.duration,
        "pairs": pairs,
        **summary,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
