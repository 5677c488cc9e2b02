"""Benchmark: durable appends to the Raft log stores (LMDB and WAL) against their raw baselines.

Each sample appends one batch (batch sizes 1, 16 and 256) together with a new hard state, as
the node runtime does, to a store opened with ``sync=True``. Baselines, the cheapest durable
write of each kind (as large as one entry's stored form):

- LMDB: one ``put`` in its own synced transaction, on a second environment in the same
  directory;
- WAL: one ``os.write`` + ``os.fdatasync`` to a second append-only file.

Baseline and batch-1 samples alternate so that the disk's drift hits both alike.

    python bench/log_store.py [--store wal|lmdb|both] [--samples N] [--size BYTES] [--dir DIR]

Prints one JSON object. LMDB: per batch size ``append_p50_ms_bB``, ``append_p99_ms_bB`` and
``entries_per_s_bB``; ``raw_put_p50_ms``, ``raw_put_p99_ms`` and ``append_latency_ratio_b1``
(append p50 / raw put p50 at batch 1: the target is <= 1.2). WAL: the same names prefixed
``wal_`` (``wal_raw_write_p50_ms`` is its baseline); with both, ``wal_vs_lmdb_p50_b1`` (WAL
append p50 / LMDB append p50 at batch 1). Then the settings.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lmdb

from boltraft.raft.types import Entry, HardState
from boltraft.storage.logstore import LmdbLogStore
from boltraft.storage.wal import WalLogStore


def percentile(samples: list[float], q: float) -> float:
    """Returns the ``q`` quantile (0..1) of ``samples`` (nearest rank), in milliseconds."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def measure(
    store: Any, raw_write: Callable[[int], None], samples: int, size: int, prefix: str, base: str
) -> dict[str, float]:
    """Returns the figures (keys prefixed ``prefix``) for ``samples`` batch-1 appends to
    ``store`` (fewer at larger batches), each followed by one ``raw_write(index)`` baseline
    sample reported as ``{prefix}{base}_p50_ms``/``_p99_ms``."""
    data = b"x" * size
    clock = time.perf_counter
    out: dict[str, float] = {}
    index = 0
    term = 1
    for _ in range(10):  # warm up both files
        index += 1
        store.append([Entry(term, index, 0, data)], HardState(term, "n1", index - 1))
        raw_write(index)
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
                raw_write(index)
                raw.append(clock() - t0)
        out[f"{prefix}append_p50_ms_b{batch}"] = round(percentile(lat, 0.5), 3)
        out[f"{prefix}append_p99_ms_b{batch}"] = round(percentile(lat, 0.99), 3)
        out[f"{prefix}entries_per_s_b{batch}"] = round(n * batch / total)
    out[f"{prefix}{base}_p50_ms"] = round(percentile(raw, 0.5), 3)
    out[f"{prefix}{base}_p99_ms"] = round(percentile(raw, 0.99), 3)
    out[f"{prefix}append_latency_ratio_b1"] = round(
        out[f"{prefix}append_p50_ms_b1"] / max(out[f"{prefix}{base}_p50_ms"], 1e-9), 3
    )
    return out


def run_lmdb(samples: int, size: int, workdir: Path) -> dict[str, float]:
    """Returns the LMDB figures: LmdbLogStore appends against synced raw py-lmdb puts."""
    store = LmdbLogStore(workdir / "log", sync=True)
    raw_env = lmdb.open(str(workdir / "raw"), map_size=64 << 20, sync=True, metasync=True)
    raw_value = b"\0" * 9 + b"x" * size
    pack = struct.Struct(">Q").pack

    def raw_put(index: int) -> None:
        with raw_env.begin(write=True) as txn:
            txn.put(pack(index), raw_value)

    try:
        return measure(store, raw_put, samples, size, "", "raw_put")
    finally:
        store.close()
        raw_env.close()


def run_wal(samples: int, size: int, workdir: Path) -> dict[str, float]:
    """Returns the WAL figures: WalLogStore appends against raw write + fdatasync calls."""
    store = WalLogStore(workdir / "wal", sync=True)
    fd = os.open(workdir / "raw.wal", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    record = b"\0" * 9 + b"x" * (size + 8)  # header + one packed entry, about

    def raw_write(_index: int) -> None:
        os.write(fd, record)
        os.fdatasync(fd)

    try:
        return measure(store, raw_write, samples, size, "wal_", "raw_write")
    finally:
        store.close()
        os.close(fd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", choices=("wal", "lmdb", "both"), default="both")
    ap.add_argument("--samples", type=int, default=400, help="batch-1 appends (and raw writes)")
    ap.add_argument("--size", type=int, default=128, help="bytes of data per entry")
    ap.add_argument("--dir", default=None, help="parent directory (default: the system tmp)")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-logstore-", dir=args.dir))
    figures: dict[str, Any] = {}
    try:
        if args.store in ("lmdb", "both"):
            figures.update(run_lmdb(args.samples, args.size, workdir))
        if args.store in ("wal", "both"):
            figures.update(run_wal(args.samples, args.size, workdir))
        if args.store == "both":
            figures["wal_vs_lmdb_p50_b1"] = round(
                figures["wal_append_p50_ms_b1"] / max(figures["append_p50_ms_b1"], 1e-9), 3
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    figures.update(
        store=args.store, samples_b1=args.samples, entry_size=args.size, dir=str(workdir.parent)
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
