"""Benchmark: the state machine's durable apply versus raw py-lmdb doing the same puts.

Prints ONE JSON object:

- ``apply_b{B}_ops_per_s`` / ``raw_b{B}_ops_per_s`` for B in 1, 10, 100, 1000: puts per second
  when each batch of B is one ``BucketStateMachine.apply`` call (one durable LMDB write
  transaction: data, applied index and term), and when raw py-lmdb puts the same keys and
  values in one ``sync=True`` write transaction;
- ``apply_commit_p50_ms`` / ``apply_commit_p99_ms`` and ``raw_commit_p50_ms`` /
  ``raw_commit_p99_ms``: latency of a single-op durable commit;
- ``throughput_ratio_b100`` (apply / raw at B=100, target >= 0.7) and ``latency_ratio_p50``
  (apply / raw, single op, target <= 1.2);
- ``apply_dedup_b100_ops_per_s``: B=100 again with every command carrying (cid, seq, ts), so
  each also writes its exactly-once record (information; not part of the targets);
- ``apply_dedup_c64_b25_ops_per_s``: the same with 64 clients taking turns, in batches of 25
  (what a replica applies under ``bench/cluster.py`` at 64 clients; information).

The two sides alternate batch by batch, so both see the same disk and the same neighbours.
Commands are encoded before timing (the leader encodes them once; every replica applies).
Run: ``python bench/store.py [--dir DIR] [--scale 1.0]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lmdb

from boltraft.raft.types import Entry
from boltraft.storage import commands
from boltraft.storage.fsm import BucketStateMachine

VALUE = b"x" * 100
BATCHES = {1: 1000, 10: 300, 100: 200, 1000: 20}  # batch size -> batches per side


class Raw:
    """Raw py-lmdb: one environment, the default database, sync on every commit."""

    def __init__(self, path: Path) -> None:
        self.env = lmdb.open(str(path), map_size=1 << 30, sync=True, metasync=True)

    def write(self, items: list[tuple[bytes, bytes]]) -> None:
        with self.env.begin(write=True) as txn:
            for k, v in items:
                txn.put(k, v)

    def close(self) -> None:
        self.env.close()


def _entries(start: int, keys: list[bytes], clients: int) -> list[Entry]:
    """Returns put entries for ``keys`` from index ``start``; with ``clients`` > 0 each
    carries (cid, seq, ts), the clients taking turns and each counting its own seq."""
    out = []
    for i, key in enumerate(keys):
        cmd: dict[str, Any] = {"op": "put", "bucket": "bench", "key": key, "value": VALUE}
        if clients:
            n = start + i
            cmd.update(cid=b"bench-client-%d" % (n % clients), seq=n // clients, ts=n)
        out.append(Entry(1, start + i, 0, commands.encode(cmd)))
    return out


def measure(
    sm: BucketStateMachine, raw: Raw, size: int, batches: int, clients: int = 0
) -> tuple[list[float], list[float]]:
    """Returns the per-batch seconds of apply and of raw, alternating batch by batch
    (``clients`` > 0: commands with (cid, seq), see ``_entries``)."""
    t_apply: list[float] = []
    t_raw: list[float] = []
    clock = time.perf_counter
    for n in range(batches):
        index = sm.applied[0] + 1
        keys = [b"key-%010d" % (index + i) for i in range(size)]
        run = _entries(index, keys, clients)
        items = [(k, VALUE) for k in keys]
        if n % 2:
            t0 = clock()
            raw.write(items)
            t1 = clock()
            sm.apply(run)
            t2 = clock()
            t_raw.append(t1 - t0)
            t_apply.append(t2 - t1)
        else:
            t0 = clock()
            sm.apply(run)
            t1 = clock()
            raw.write(items)
            t2 = clock()
            t_apply.append(t1 - t0)
            t_raw.append(t2 - t1)
    return t_apply, t_raw


def _pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


def run(base: Path, scale: float) -> dict[str, Any]:
    """Returns the benchmark figures (see the module docstring)."""
    out: dict[str, Any] = {}
    sm = BucketStateMachine(base / "state", sync=True)
    raw = Raw(base / "raw")
    try:
        first = Entry(1, 1, 0, commands.encode({"op": "create_bucket", "bucket": "bench"}))
        sm.apply([first])
        measure(sm, raw, 10, 20)  # warm up both files and the page cache
        for size, batches in BATCHES.items():
            n = max(4, int(batches * scale))
            t_apply, t_raw = measure(sm, raw, size, n)
            out[f"apply_b{size}_ops_per_s"] = round(size * n / sum(t_apply))
            out[f"raw_b{size}_ops_per_s"] = round(size * n / sum(t_raw))
            if size == 1:
                out["apply_commit_p50_ms"] = round(statistics.median(t_apply) * 1e3, 4)
                out["apply_commit_p99_ms"] = round(_pct(t_apply, 0.99) * 1e3, 4)
                out["raw_commit_p50_ms"] = round(statistics.median(t_raw) * 1e3, 4)
                out["raw_commit_p99_ms"] = round(_pct(t_raw, 0.99) * 1e3, 4)
        n = max(4, int(BATCHES[100] * scale))
        t_apply, _ = measure(sm, raw, 100, n, clients=1)
        out["apply_dedup_b100_ops_per_s"] = round(100 * n / sum(t_apply))
        n = max(4, int(800 * scale))
        t_apply, _ = measure(sm, raw, 25, n, clients=64)
        out["apply_dedup_c64_b25_ops_per_s"] = round(25 * n / sum(t_apply))
    finally:
        sm.close()
        raw.close()
    out["throughput_ratio_b100"] = round(out["apply_b100_ops_per_s"] / out["raw_b100_ops_per_s"], 3)
    out["latency_ratio_p50"] = round(out["apply_commit_p50_ms"] / out["raw_commit_p50_ms"], 3)
    out["targets_met"] = out["throughput_ratio_b100"] >= 0.7 and out["latency_ratio_p50"] <= 1.2
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", help="where to put the two stores (default: a temp dir)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the batch counts")
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="bench-store-", dir=args.dir))
    try:
        result = run(base, args.scale)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
