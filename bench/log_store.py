"""Benchmark: durable appends to the LMDB Raft log store against one synced raw py-lmdb put.

Each sample appends one batch (batch sizes 1, 16 and 256) together with a new hard state, as
the node runtime does, to an ``LmdbLogStore(sync=True)``. The baseline is the cheapest durable
LMDB write there is: one ``put`` of a value as large as one entry's stored form in its own
synced transaction, on a second environment in the same directory. Baseline and batch-1
samples alternate so that the disk's drift hits both alike.

    python bench/log_store.py [--samples N] [--size BYTES] [--dir DIR]

Prints one JSON object: per batch size ``append_p50_ms_bB``, ``append_p99_ms_bB`` and
``entries_per_s_bB``; ``raw_put_p50_ms``, ``raw_put_p99_ms`` and ``append_latency_ratio_b1``
(append p50 / raw put p50 at batch 1: the target is <= 1.2), and the settings.
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import tempfile
import time
from pathlib import Path

import lmdb

from boltraft.raft.types import Entry, HardState
from boltraft.storage.logstore import LmdbLogStore


def percentile(samples: list[float], q: float) -> float:
    """Returns the ``q`` quantile (0..1) of ``samples`` (nearest rank), in milliseconds."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def run(samples: int, size: int, workdir: Path) -> dict[str, float]:
    """Returns the figures for ``samples`` batch-1 appends (fewer at larger batches)."""
    store = LmdbLogStore(workdir / "log", sync=True)
    raw_env = lmdb.open(str(workdir / "raw"), map_size=64 << 20, sync=True, metasync=True)
    data = b"x" * size
    raw_value = b"\0" * 9 + data
    pack = struct.Struct(">Q").pack
    clock = time.perf_counter
    out: dict[str, float] = {}
    index = 0
    term = 1
    try:
        for _ in range(10):  # warm up both files
            index += 1
            store.append([Entry(term, index, 0, data)], HardState(term, "n1", index - 1))
            with raw_env.begin(write=True) as txn:
                txn.put(pack(index), raw_value)
        raw: list[float] = []
        for batch, n in ((1, samples), (16, max(samples // 4, 5)), (256, max(samples // 16, 5))):
            lat: list[float] = []
            total = 0.0
            for _ in range(n):
                ents = [Entry(term, i, 0, data) for i in range(index + 1, index + 1 + batch)]
                hs = HardState(term, "n1", index)
                t0 = clock()
                store.append(ents, hs)
                dt = clock() - t0
                lat.append(dt)
                total += dt
                index += batch
                if batch == 1:
                    t0 = clock()
                    with raw_env.begin(write=True) as txn:
                        txn.put(pack(index), raw_value)
                    raw.append(clock() - t0)
            out[f"append_p50_ms_b{batch}"] = round(percentile(lat, 0.5), 3)
            out[f"append_p99_ms_b{batch}"] = round(percentile(lat, 0.99), 3)
            out[f"entries_per_s_b{batch}"] = round(n * batch / total)
        out["raw_put_p50_ms"] = round(percentile(raw, 0.5), 3)
        out["raw_put_p99_ms"] = round(percentile(raw, 0.99), 3)
        out["append_latency_ratio_b1"] = round(
            out["append_p50_ms_b1"] / max(out["raw_put_p50_ms"], 1e-9), 3
        )
    finally:
        store.close()
        raw_env.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=400, help="batch-1 appends (and raw puts)")
    ap.add_argument("--size", type=int, default=128, help="bytes of data per entry")
    ap.add_argument("--dir", default=None, help="parent directory (default: the system tmp)")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-logstore-", dir=args.dir))
    try:
        figures = run(args.samples, args.size, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    figures.update(samples_b1=args.samples, entry_size=args.size, dir=str(workdir.parent))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
