"""Runs many simulator seeds in parallel processes and prints ONE JSON summary on stdout.

    python -m tests.sim.run --seeds 100000 --jobs 2            # seeds 0.. for 3 and 5 nodes
    python -m tests.sim.run --seeds 5000 --start 200000 --nodes 5
    python -m tests.sim.run --replay 1234 --nodes 3            # one seed, its trace on stderr

Run it from the repository root. Failing seeds are listed with their replay commands; the
trace of each failing seed goes to stderr (at most ``--show`` of them).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Iterable, Iterator

from .harness import Simulation
from .state import SeedResult, SimParams

DEFAULT_SEEDS = 2000  # CI: total over the 3- and 5-node configurations


def run_one(job: tuple[int, SimParams]) -> SeedResult:
    """Returns the result of one seed (``job`` is ``(seed, params)``)."""
    seed, params = job
    return Simulation(seed, params).run()


def fingerprint(seed: int, params: SimParams) -> str:
    """Returns a digest of one run's final state and recent trace; equal digests across
    processes (and hash seeds) show the run is deterministic."""
    sim = Simulation(seed, params)
    res = sim.run()
    text = f"{res.ok}|{res.kind}|{sorted(res.stats.items())}|{sim.trace.render()}|{sim.describe()}"
    return hashlib.sha256(text.encode()).hexdigest()


def run_seeds(jobs: Iterable[tuple[int, SimParams]], workers: int) -> Iterator[SeedResult]:
    """Yields the result of every job, in completion order when ``workers > 1`` (forked
    worker processes), in order otherwise."""
    jobs = list(jobs)
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield run_one(job)
        return
    ctx = multiprocessing.get_context("fork")
    chunk = max(1, min(25, len(jobs) // (workers * 8)))
    with ctx.Pool(workers) as pool:
        yield from pool.imap_unordered(run_one, jobs, chunksize=chunk)


def env_seeds(nodes: int) -> list[int]:
    """Returns the seeds ``pytest -m sim`` runs for one cluster size: only
    ``BOLTRAFT_SIM_SEED`` when set, else this size's share of ``BOLTRAFT_SIM_SEEDS`` (default
    2,000 in total; 3 nodes get the odd one). Raises ValueError on a malformed variable."""
    one = os.environ.get("BOLTRAFT_SIM_SEED")
    if one:
        return [int(one)]
    total = int(os.environ.get("BOLTRAFT_SIM_SEEDS", DEFAULT_SEEDS))
    if total < 0:
        raise ValueError("BOLTRAFT_SIM_SEEDS must be >= 0")
    share = total - total // 2 if nodes == 3 else total // 2
    return list(range(share))


def env_workers() -> int:
    """Returns the worker count: ``BOLTRAFT_SIM_JOBS``, else min(2, CPUs)."""
    jobs = os.environ.get("BOLTRAFT_SIM_JOBS")
    return int(jobs) if jobs else min(2, os.cpu_count() or 1)


def failure_report(failures: list[SeedResult], show: int = 1) -> str:
    """Returns the text a failing run prints: every failing seed with its replay command,
    then the full trace of the first ``show`` of them."""
    failures = sorted(failures, key=lambda r: (r.nodes, r.seed))
    lines = [f"{len(failures)} failing seed(s):"]
    lines += [
        f"  seed {r.seed} ({r.nodes} nodes) {r.kind}: replay with  {r.replay()}"
        for r in failures[:50]
    ]
    if len(failures) > 50:
        lines.append(f"  ... and {len(failures) - 50} more")
    for r in failures[:show]:
        lines += ["", f"=== seed {r.seed}, {r.nodes} nodes: {r.error}", r.trace]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Returns the exit status: 0 when every seed ran clean, 1 otherwise."""
    ap = argparse.ArgumentParser(prog="python -m tests.sim.run", description=__doc__)
    ap.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help="seeds per size")
    ap.add_argument("--start", type=int, default=0, help="first seed")
    ap.add_argument("--nodes", default="3,5", help="cluster sizes, comma separated")
    ap.add_argument("--jobs", type=int, default=env_workers(), help="worker processes")
    ap.add_argument("--chaos-ticks", type=int, default=SimParams().chaos_ticks)
    ap.add_argument("--replay", type=int, default=None, help="run this one seed, print trace")
    ap.add_argument("--show", type=int, default=3, help="traces of failing seeds to print")
    ap.add_argument("--fingerprint", action="store_true", help="with --replay: print a digest")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.nodes.split(",") if s]
    if args.replay is not None:
        params = SimParams(nodes=sizes[0], chaos_ticks=args.chaos_ticks)
        if args.fingerprint:
            print(fingerprint(args.replay, params))
            return 0
        sim = Simulation(args.replay, params)
        res = sim.run()
        print(res.trace or sim.trace.render() + "\n" + sim.describe(), file=sys.stderr)
        print(
            json.dumps(
                {
                    "seed": res.seed,
                    "nodes": res.nodes,
                    "ok": res.ok,
                    "kind": res.kind,
                    "error": res.error,
                    "stats": res.stats,
                }
            )
        )
        return 0 if res.ok else 1
    jobs = [
        (seed, SimParams(nodes=n, chaos_ticks=args.chaos_ticks))
        for seed in range(args.start, args.start + args.seeds)
        for n in sizes
    ]
    t0 = time.monotonic()
    failures: list[SeedResult] = []
    totals: dict[str, int] = {}
    done = 0
    for res in run_seeds(jobs, args.jobs):
        done += 1
        if not res.ok:
            failures.append(res)
        for k, v in res.stats.items():
            totals[k] = totals.get(k, 0) + v
        if done % 1000 == 0:
            print(f"{done}/{len(jobs)} seeds, {len(failures)} failing", file=sys.stderr, flush=True)
    elapsed = time.monotonic() - t0
    if failures:
        print(failure_report(failures, args.show), file=sys.stderr)
    by_kind: dict[str, int] = {}
    for r in failures:
        by_kind[r.kind] = by_kind.get(r.kind, 0) + 1
    summary = {
        "seeds_run": done,
        "seed_range": [args.start, args.start + args.seeds],
        "nodes": sizes,
        "clean": done - len(failures),
        "failed": len(failures),
        "failures_by_kind": by_kind,
        "failing": [
            {"seed": r.seed, "nodes": r.nodes, "kind": r.kind, "replay": r.replay()}
            for r in sorted(failures, key=lambda r: (r.nodes, r.seed))[:50]
        ],
        "elapsed_s": round(elapsed, 1),
        "seeds_per_s": round(done / elapsed, 1) if elapsed else None,
        "totals": totals,
    }
    print(json.dumps(summary))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
