"""``boltraft bench disk``: the sync latency of the Raft log's write pattern, and a verdict.

Four measurements, each in a fresh temporary folder inside the chosen directory (removed
afterwards, even on error):

- ``fsync``: ``count`` sequential appends of ``size`` bytes to one file, ``os.fsync`` after
  each (file data and metadata);
- ``fdatasync``: the same with ``os.fdatasync`` (data only; what LMDB uses on Linux);
- ``wal_append``: ``count`` durable appends of one ``size``-byte entry to boltraft's own
  write-ahead log (``WalLogStore``, the default Raft log store: a preallocated segment, one
  ``pwrite`` and one ``fdatasync`` each): exactly what a node pays to append one batch;
- ``lmdb_commit``: ``count`` durable LMDB write transactions (``sync=True``), one put of
  ``size`` bytes under a big-endian index key each: what the LMDB log store
  (``--log-store lmdb``) pays to append one batch (an LMDB commit syncs the data pages and
  then the meta page).

Only the sync call (or the whole append or transaction, for the WAL and LMDB) is timed;
``ops_per_s`` divides the count by the whole loop's wall time. The verdict compares the worse
of the fsync/fdatasync p99 with etcd's guidance (WAL fsync p99 under 10 ms), see
``THRESHOLDS``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lmdb

from boltraft.benchmark import hist
from boltraft.benchmark.result import SCHEMA, host_info
from boltraft.errors import BadRequestError
from boltraft.raft.types import Entry, EntryType
from boltraft.storage.wal import WalLogStore

# p99 of the worse of fsync/fdatasync, in ms. "good" meets etcd's guidance (WAL fsync p99
# under 10 ms); past one heartbeat tick (100 ms by default) a stalled leader misses
# heartbeats and followers start elections: "unsuitable".
THRESHOLDS: dict[str, float] = {"good_p99_ms": 10.0, "unsuitable_p99_ms": 100.0}

DISK_TESTS = ("fsync", "fdatasync", "wal_append", "lmdb_commit")  # in the order they run
MAX_COUNT = 1_000_000
MAX_SIZE = 16 << 20
WARMUP = 5  # unrecorded operations first: file creation and first-page allocation


def _check(directory: Path, count: int, size: int) -> None:
    if not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
        raise BadRequestError(f"count must be 1..{MAX_COUNT}, got {count!r}")
    if not isinstance(size, int) or not 1 <= size <= MAX_SIZE:
        raise BadRequestError(f"size must be 1..{MAX_SIZE} bytes, got {size!r}")
    if not directory.is_dir():
        raise BadRequestError(f"not a directory: {directory}")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise BadRequestError(f"directory not writable: {directory}")


def _file_sync(path: Path, count: int, size: int, sync: Any) -> tuple[Any, float]:
    """Returns (histogram of ``sync(fd)`` times, loop wall seconds) for appends to ``path``."""
    h = hist.new_histogram()
    buf = os.urandom(size)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(WARMUP):
            os.write(fd, buf)
            sync(fd)
        clock = time.perf_counter
        times: list[float] = []
        start = clock()
        for _ in range(count):
            os.write(fd, buf)
            t0 = clock()
            sync(fd)
            times.append(clock() - t0)
        wall = clock() - start
    finally:
        os.close(fd)
    hist.record_many_seconds(h, times)
    return h, wall


def _timed(count: int, op: Callable[[int], object]) -> tuple[Any, float]:
    """Returns (histogram of the times of ``op(i)`` for i in ``WARMUP .. WARMUP + count - 1``,
    loop wall seconds), after the unrecorded warm-up calls ``op(0 .. WARMUP - 1)``."""
    for i in range(WARMUP):
        op(i)
    clock = time.perf_counter
    times: list[float] = []
    start = clock()
    for i in range(WARMUP, WARMUP + count):
        t0 = clock()
        op(i)
        times.append(clock() - t0)
    wall = clock() - start
    h = hist.new_histogram()
    hist.record_many_seconds(h, times)
    return h, wall


def _wal_append(path: Path, count: int, size: int) -> tuple[Any, float]:
    """Returns (histogram of durable one-entry WAL appends, loop wall seconds)."""
    data = os.urandom(size)
    normal = int(EntryType.NORMAL)
    store = WalLogStore(path)
    try:
        return _timed(count, lambda i: store.append([Entry(1, i + 1, normal, data)]))
    finally:
        store.close()


def _lmdb_commit(path: Path, count: int, size: int) -> tuple[Any, float]:
    """Returns (histogram of durable one-put transaction times, loop wall seconds)."""
    buf = os.urandom(size)
    map_size = max(64 << 20, (count + WARMUP) * (size + 4096) * 2)
    env = lmdb.open(str(path), map_size=map_size, sync=True, metasync=True, subdir=True)

    def commit(i: int) -> None:
        with env.begin(write=True) as txn:
            txn.put(i.to_bytes(8, "big"), buf, append=True)

    try:
        return _timed(count, commit)
    finally:
        env.close()


def verdict(sync_p99_ms: float) -> tuple[str, str]:
    """Returns (level, sentence) for the worse fsync/fdatasync p99: good, slow or unsuitable."""
    good = THRESHOLDS["good_p99_ms"]
    bad = THRESHOLDS["unsuitable_p99_ms"]
    if sync_p99_ms <= good:
        return "good", (
            f"sync p99 {sync_p99_ms:.2f} ms is under {good:g} ms (etcd's guidance for the WAL "
            "fsync): this disk is good enough for a Raft log"
        )
    if sync_p99_ms <= bad:
        return "slow", (
            f"sync p99 {sync_p99_ms:.2f} ms is over {good:g} ms: commits will work but their "
            "tail latency follows the disk; expect 'slow fdatasync' style stalls under load"
        )
    return "unsuitable", (
        f"sync p99 {sync_p99_ms:.2f} ms is over {bad:g} ms (one heartbeat tick): a leader "
        "stalled in fsync misses heartbeats and followers start elections; use a faster disk"
    )


def run_disk_bench(directory: str | os.PathLike[str], count: int = 500, size: int = 512) -> dict:
    """Returns the disk result (``kind: disk``) after measuring in ``directory``.

    Keys include ``fsync``, ``fdatasync``, ``wal_append``, ``lmdb_commit`` (each a latency
    summary with ``ops_per_s``, ``cdf`` and ``hdr``), ``fsync_p99_ms``, ``fdatasync_p99_ms``,
    ``wal_append_p99_ms``, ``lmdb_commit_p99_ms``, ``verdict`` (good|slow|unsuitable),
    ``verdict_text``, ``expected_commit_p50_ms`` / ``expected_commit_p99_ms`` and
    ``thresholds``. The expected commit latency of a replicated write is one append to the
    default log store, the WAL: the leader's log append and the followers' run in parallel
    (the leader sends its appends before its own write), and the state machine applies
    without an fsync (the synced log is the durable source); network and CPU time are left
    out, so it is a floor (with ``--log-store lmdb``, read ``lmdb_commit`` instead).

    Raises ``BadRequestError`` when ``directory`` is not a writable directory or
    ``count``/``size`` are out of range; nothing is left behind in ``directory``.
    """
    root = Path(directory)
    _check(root, count, size)
    work = Path(tempfile.mkdtemp(prefix=".boltraft-bench-disk-", dir=root))
    try:
        fsync_h, fsync_wall = _file_sync(work / "fsync.log", count, size, os.fsync)
        fdata_h, fdata_wall = _file_sync(work / "fdatasync.log", count, size, os.fdatasync)
        wal_h, wal_wall = _wal_append(work / "wal", count, size)
        lmdb_h, lmdb_wall = _lmdb_commit(work / "lmdb", count, size)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out: dict[str, Any] = {
        "schema": SCHEMA,
        "kind": "disk",
        "host": host_info(),
        "dir": str(root.resolve()),
        "count": count,
        "size": size,
    }
    for name, h, wall in (
        ("fsync", fsync_h, fsync_wall),
        ("fdatasync", fdata_h, fdata_wall),
        ("wal_append", wal_h, wal_wall),
        ("lmdb_commit", lmdb_h, lmdb_wall),
    ):
        s = hist.summary_with_hdr(h)
        s["ops_per_s"] = round(count / wall, 1) if wall > 0 else 0.0
        out[name] = s
        out[f"{name}_p99_ms"] = s["p99_ms"]
    sync_p99 = max(out["fsync_p99_ms"], out["fdatasync_p99_ms"])
    level, text = verdict(sync_p99)
    out["verdict"] = level
    out["verdict_text"] = text
    out["expected_commit_p50_ms"] = round(out["wal_append"]["p50_ms"], 3)
    out["expected_commit_p99_ms"] = round(out["wal_append"]["p99_ms"], 3)
    out["thresholds"] = dict(THRESHOLDS)
    return out


def format_disk_result(res: dict) -> str:
    """Returns the human-readable table and verdict for a ``run_disk_bench`` result."""
    lines = [
        f"disk benchmark in {res['dir']}: {res['count']} ops of {res['size']} bytes each",
        "",
        f"{'test':<12} {'ops/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
        f"{'p99.9 ms':>9} {'max ms':>8}",
    ]
    for name in DISK_TESTS:
        if name not in res:  # older result files have no wal_append
            continue
        s = res[name]
        lines.append(
            f"{name:<12} {s['ops_per_s']:>9.0f} {s['p50_ms']:>8.3f} {s['p90_ms']:>8.3f} "
            f"{s['p99_ms']:>8.3f} {s['p999_ms']:>9.3f} {s['max_ms']:>8.3f}"
        )
    lines += [
        "",
        f"verdict: {res['verdict'].upper()}: {res['verdict_text']}",
        (
            f"expected commit latency of a replicated write (one WAL append on leader and "
            f"followers in parallel, unsynced apply; network and CPU excluded): "
            f"p50 >= {res['expected_commit_p50_ms']:.2f} ms, "
            f"p99 ~ {res['expected_commit_p99_ms']:.2f} ms"
        ),
    ]
    return "\n".join(lines)
