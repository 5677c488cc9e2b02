"""Snapshot benchmark: creation, transfer to a new node, restart, write p99 during a snapshot.

For each size (``--sizes 100m,1g``, default both) it seeds a one-node cluster's data
directory with about that much bucket data (64 KiB values, applied through the state
machine), then measures with real ``boltraft serve`` processes on 127.0.0.1:

- ``create_s_<size>`` / ``create_mb_per_s_<size>`` / ``snapshot_mb_<size>``: the running
  leader's snapshot (``cluster snapshot``) while single-key writes go on: LMDB's compacting
  copy, hashed and flushed in steps at low priority, rate-limited by the node's default
  ``snapshot_write_mb_s`` (120 MB/s); then the log compaction;
- ``transfer_s_<size>`` / ``transfer_mb_per_s_<size>``: a new node started with
  ``serve --join`` receives the leader's snapshot (offer to installed: chunks, fsync, sha256
  verification, swap);
- ``restart_s_<size>``: the leader is SIGKILLed and started again; time until its
  ``status`` shows everything applied (nothing is reinstalled);
- ``write_p99_ms_<size>`` / ``write_p99_ms_during_snapshot_<size>`` /
  ``write_p99_ratio_during_snapshot_<size>``: p99 latency of single-key writes over
  BASELINE_S seconds without a snapshot, while the leader writes one, and their ratio
  (``write_p99_ratio_during_snapshot`` is the ratio of the last size given).

Prints ONE JSON object (keys sorted, with ``bench: "snapshot"`` and ``value_bytes``).
Targets: creation and transfer >= 100 MB/s, restart of 1 GB under 3 s, the p99 ratio <= 3.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from boltraft.client import Client
from boltraft.raft.types import ConfState, Entry, HardState, SnapshotMeta
from boltraft.server.datadir import DataDir, NodeInfo
from boltraft.server.probe import status
from boltraft.storage import commands
from boltraft.storage.fsm import BucketStateMachine
from boltraft.storage.logstore import LmdbLogStore

SERVE = "from boltraft_cli.main import main; main()"
SIZES = {"100m": 100 << 20, "1g": 1 << 30}
VALUE = 64 << 10
PER_ENTRY = 128  # 8 MiB of values per log entry
BASELINE_S = 2.0  # how long write latency is sampled without a snapshot


def _port() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"tcp://127.0.0.1:{port}"


def seed(data: Path, size: int, addr: str) -> int:
    """Returns the applied index after seeding ``data`` as node n1 of a one-node cluster
    holding about ``size`` bytes of values."""
    with DataDir.open(data) as dd:
        sm = BucketStateMachine(dd.state_path, sync=False)
        value = os.urandom(VALUE)
        entries = [Entry(1, 1, 0, commands.encode({"op": "create_bucket", "bucket": [b"b"]}))]
        n = size // VALUE
        for start in range(0, n, PER_ENTRY):
            ops = [
                {"op": "put", "bucket": [b"b"], "key": b"%09d" % i, "value": value}
                for i in range(start, min(n, start + PER_ENTRY))
            ]
            entries.append(
                Entry(1, len(entries) + 1, 0, commands.encode({"op": "batch", "ops": ops}))
            )
            if len(entries) % 16 == 0:
                sm.apply(entries[-16:])
        sm.apply([e for e in entries if e.index > sm.applied[0]])
        index = sm.applied[0]
        sm.db.sync()
        sm.close()
        logstore = LmdbLogStore(dd.log_path)
        meta = SnapshotMeta(index, 1, ConfState(("n1",), (), {"n1": addr}))
        logstore.apply_snapshot(meta, HardState(1, "n1", index))
        logstore.close()
        dd.write_node_info(NodeInfo("n1", addr, {}))
    return index


def _spawn(root: Path, node_id: str, addr: str, *extra: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-c", SERVE, "serve", "--id", node_id, "--data", str(root / node_id)]
    argv += ["--listen", addr, "--tick-ms", "50", "--log-level", "WARNING", *extra]
    logf = open(root / f"{node_id}.log", "ab")  # noqa: SIM115 (the child keeps it)
    return subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, cwd=root)


def _wait(pred: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.01)
    raise RuntimeError("benchmark step timed out")


def _p99(samples: list[float]) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * 0.99))] if s else 0.0


def _writes(addr: str, stop: threading.Event, out: list[float]) -> None:
    with Client([addr], timeout=10) as c:
        i = 0
        while not stop.is_set():
            t = time.perf_counter()
            c.put("w", b"%d" % i, b"x" * 100)
            out.append(time.perf_counter() - t)
            i += 1


def run_size(label: str, size: int, root: Path) -> dict[str, float]:
    """Returns the figures of one store size."""
    out: dict[str, float] = {}
    a1, a2 = _port(), _port()
    index = seed(root / "n1", size, a1)
    procs = [_spawn(root, "n1", a1)]
    try:
        _wait(lambda: (status(a1) or {}).get("role") == "leader", 30)
        with Client([a1], timeout=60) as c:
            c.create_bucket("w")
            # write p99 without / during a snapshot (which the joiner then receives)
            lat_base: list[float] = []
            stop = threading.Event()
            th = threading.Thread(target=_writes, args=(a1, stop, lat_base))
            th.start()
            time.sleep(BASELINE_S)
            stop.set()
            th.join()
            lat_snap: list[float] = []
            stop = threading.Event()
            th = threading.Thread(target=_writes, args=(a1, stop, lat_snap))
            th.start()
            time.sleep(0.2)
            c.put("w", "force", "new")  # something new for the snapshot to hold
            snap = c.snapshot(a1, timeout=120)
            stop.set()
            th.join()
            out[f"create_s_{label}"] = round(snap["seconds"], 3)
            out[f"create_mb_per_s_{label}"] = round(snap["size"] / 1e6 / snap["seconds"], 1)
            out[f"snapshot_mb_{label}"] = round(snap["size"] / 1e6, 1)
            out[f"write_p99_ms_{label}"] = round(_p99(lat_base) * 1000, 2)
            out[f"write_p99_ms_during_snapshot_{label}"] = round(_p99(lat_snap) * 1000, 2)
            out[f"write_p99_ratio_during_snapshot_{label}"] = round(
                _p99(lat_snap) / max(_p99(lat_base), 1e-9), 2
            )
            # transfer to a new node
            procs.append(_spawn(root, "n2", a2, "--join", a1))

            def received() -> dict | None:
                st = status(a2)
                return (st or {}).get("cluster", {}).get("transfers", {}).get("last_received")

            last = _wait(received, 300)
            out[f"transfer_s_{label}"] = round(last["seconds"], 3)
            out[f"transfer_mb_per_s_{label}"] = round(last["bytes"] / 1e6 / last["seconds"], 1)
        # restart of the leader (SIGKILL, start again)
        procs[1].send_signal(signal.SIGTERM)
        procs[1].wait(30)
        procs[0].kill()
        procs[0].wait()
        t = time.perf_counter()
        procs[0] = _spawn(root, "n1", a1)
        _wait(lambda: (status(a1, 0.2) or {}).get("applied", 0) >= index, 60)
        out[f"restart_s_{label}"] = round(time.perf_counter() - t, 3)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100m,1g", help="comma-separated: 100m, 1g")
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    args = ap.parse_args()
    labels = [s.strip() for s in args.sizes.split(",") if s.strip()]
    for lab in labels:
        if lab not in SIZES:
            ap.error(f"unknown size {lab!r}; choose from {sorted(SIZES)}")
    result: dict[str, Any] = {"bench": "snapshot", "value_bytes": VALUE}
    base = Path(tempfile.mkdtemp(prefix="br-snapbench-", dir=args.dir))
    try:
        for lab in labels:
            root = base / lab
            root.mkdir()
            result.update(run_size(lab, SIZES[lab], root))
            shutil.rmtree(root, ignore_errors=True)
        last = labels[-1]
        result["write_p99_ratio_during_snapshot"] = result[
            f"write_p99_ratio_during_snapshot_{last}"
        ]
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
