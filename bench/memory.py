"""Memory of a real 3-node boltraft cluster under a steady workload, and of a catching-up node.

Starts its own cluster of ``boltraft serve`` processes (plain ones: no benchmark hooks), then
drives a steady workload for ``--duration`` seconds: ``--procs`` worker processes, each
running ``--threads`` threads with one ``boltraft.client.Client`` each, every call a put
(a ``--value-size``-byte value) or, with probability ``--read-ratio``, a linearizable get,
on ``--keys`` keys (a fixed key set: the data stops growing once every key was written).
Every ``--interval`` seconds it samples each node's RSS (``VmRSS`` of /proc/PID/status).

Prints ONE JSON object::

    ops, ops_per_s, errors, duration_s, warmup_s, settings (procs, threads, keys, ...)
    nodes: {ID: {role, rss_start_mb, rss_end_mb, rss_max_mb, growth_mb_per_min,
                 anon_start_mb, anon_end_mb, anon_growth_mb_per_min,
                 file_start_mb, file_end_mb, state_db_mb}}

``rss_start_mb`` is the first sample after ``--warmup`` seconds, ``rss_end_mb`` the last;
``growth_mb_per_min`` is the slope of a least-squares line through the samples after the
warm-up. RSS is two parts, reported apart because they are bounded by different things:
``anon_*`` is ``RssAnon`` (the heap: what the node allocated), ``file_*`` is ``RssFile``
(pages of mapped files, nearly all of them the state DB's LMDB file). The mapped file pages
cannot exceed the files' size: ``state_db_mb`` is the size of the state DB's ``data.mdb``
at the end, which holds the data and the exactly-once records of the last
``dedup_window_ms``, so it stops growing once that window is full.

``--catch-up N``: after the warm-up one follower is stopped (``--catch-up-signal``: SIGKILL,
a crash, by default; or SIGTERM) for N seconds while the writes go on, then started again;
its RSS is sampled every 0.1 s until its applied index reaches the leader's commit index at
the restart. Adds ``catch_up: {node, down_s, lag_entries, rss_before_mb, peak_rss_mb,
caught_up_s}``; that node's steady figures leave out the samples from the stop until it
caught up.

Node settings: ``--set KEY=JSON`` (a config file key for every node, repeatable, e.g.
``--set dedup_window_ms=60000``), ``--serve-arg ARG`` (a ``boltraft serve`` argument).
``--series`` adds every sample (``series: {ID: [[s, RSS MB, RssAnon MB, RssFile MB], ...]}``);
``--keep DIR`` keeps the cluster's data and logs in DIR.

``--trace`` (to find what holds memory): ``kill -USR1 PID`` of a node starts tracemalloc
in it; the next ``kill -USR1`` appends to ``DIR/ID.trace`` (with ``--keep DIR``) its RSS,
glibc's ``mallinfo2`` and the allocation sites of the live Python memory, largest first. A
node started again by ``--catch-up`` traces from its start.

    python bench/memory.py                        # 10 minutes, steady workload
    python bench/memory.py --duration 120 --catch-up 12
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from boltraft.benchmark.localcluster import free_ports
from boltraft.server.probe import status as probe_status

BUCKET = "mem"
SERVE = "from boltraft_cli.main import main; main()"
TRACE = r"""
import ctypes, os, signal, sys, tracemalloc
if os.path.exists(os.path.join(sys.argv[sys.argv.index("--data") + 1], "node.json")):
    tracemalloc.start(6)  # a restart: trace from the start
def _mallinfo():
    try:
        class MI(ctypes.Structure):
            _fields_ = [(n, ctypes.c_size_t) for n in (
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
            ).split()]
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = MI
        m = libc.mallinfo2()
        return (f"malloc heap {m.arena >> 10} KiB (used {m.uordblks >> 10}, free "
                f"{m.fordblks >> 10}), mmapped {m.hblkhd >> 10} KiB")
    except (OSError, AttributeError):
        return "malloc: no mallinfo2"
def _dump(*_):
    if not tracemalloc.is_tracing():
        tracemalloc.start(6)
        return
    with open("/proc/self/status") as f:
        status = [l.strip() for l in f if l.startswith(("VmRSS", "RssA", "RssF"))]
    cur, peak = tracemalloc.get_traced_memory()
    with open(os.environ["BR_TRACE_OUT"], "a") as f:
        f.write(f"=== {' '.join(status)}; {_mallinfo()}; python {cur >> 10} KiB "
                f"(peak {peak >> 10} KiB)\n")
        for s in tracemalloc.take_snapshot().statistics("traceback")[:15]:
            f.write(f"--- {s}\n" + "\n".join(s.traceback.format(limit=6)) + "\n")
signal.signal(signal.SIGUSR1, _dump)
from boltraft_cli.main import main; main()
"""


def rss_kb(pid: int) -> tuple[int, int, int]:
    """Returns (VmRSS, RssAnon, RssFile) of process ``pid`` in KiB (zeros when it is gone)."""
    rss = anon = file = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("RssAnon:"):
                    anon = int(line.split()[1])
                elif line.startswith("RssFile:"):
                    file = int(line.split()[1])
    except OSError:
        pass
    return rss, anon, file


def slope_per_min(samples: list[tuple[float, float]]) -> float:
    """Returns the least-squares slope of (seconds, MB) ``samples`` in MB per minute (0.0 for
    fewer than two samples)."""
    n = len(samples)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in samples) / n
    mv = sum(v for _, v in samples) / n
    den = sum((t - mt) ** 2 for t, _ in samples)
    if den == 0:
        return 0.0
    return sum((t - mt) * (v - mv) for t, v in samples) / den * 60.0


class Cluster:
    """Three (``n``) ``boltraft serve`` children on free 127.0.0.1 ports under ``root``."""

    def __init__(
        self, root: Path, n: int, serve_args: list[str], trace: bool, config: dict[str, Any]
    ) -> None:
        self.root = root
        self.config = config
        self.ids = [f"n{i + 1}" for i in range(n)]
        self.addrs = [f"tcp://127.0.0.1:{p}" for p in free_ports(n)]
        self.serve_args = serve_args
        self.trace = trace
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * n

    def start(self, i: int) -> None:
        """Starts node ``i`` (again: the same command line)."""
        node_id = self.ids[i]
        argv = [sys.executable, "-c", TRACE if self.trace else SERVE, "serve"]
        argv += ["--id", node_id, "--data", str(self.root / node_id)]
        argv += ["--listen", self.addrs[i], "--log-level", "WARNING", *self.serve_args]
        if self.config:
            conf = self.root / "config.json"
            conf.write_text(json.dumps(self.config))
            argv += ["--config", str(conf)]
        for j, other in enumerate(self.ids):
            if j != i:
                argv += ["--peer", f"{other}={self.addrs[j]}"]
        env = None
        if self.trace:
            env = {**os.environ, "BR_TRACE_OUT": str(self.root / f"{node_id}.trace")}
        with open(self.root / f"{node_id}.log", "ab") as log:
            self.procs[i] = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.root
            )

    def stop(self, i: int, timeout: float = 20.0, sig: int = signal.SIGTERM) -> None:
        """Stops node ``i`` (``sig``, SIGKILL after ``timeout``) and waits for it."""
        p = self.procs[i]
        if p is None:
            return
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs[i] = None

    def state_db_bytes(self, i: int) -> int:
        """Returns the size of node ``i``'s state DB file (0 when there is none)."""
        try:
            return (self.root / self.ids[i] / "state" / "data.mdb").stat().st_size
        except OSError:
            return 0

    def pid(self, i: int) -> int | None:
        p = self.procs[i]
        return p.pid if p is not None and p.poll() is None else None

    def status(self, i: int) -> dict[str, Any] | None:
        return probe_status(self.addrs[i], timeout=2.0)

    def leader(self, deadline: float) -> int:
        """Returns the position of the node that says it leads (waits until ``deadline``)."""
        while time.monotonic() < deadline:
            for i in range(len(self.ids)):
                st = self.status(i)
                if st and st.get("role") == "leader":
                    return i
            time.sleep(0.1)
        raise SystemExit("no leader elected:\n" + self.tails())

    def tails(self) -> str:
        out = []
        for node_id in self.ids:
            try:
                lines = (self.root / f"{node_id}.log").read_text(errors="replace").splitlines()
            except OSError:
                lines = []
            out.append(f"--- {node_id}\n" + "\n".join(lines[-10:]))
        return "\n".join(out)


def worker(
    addrs: list[str],
    threads: int,
    keys: int,
    value_size: int,
    read_ratio: float,
    stop_at: float,
    seed: int,
    out: Any,
) -> None:
    """Runs ``threads`` client loops until ``stop_at`` (time.time()); sends (ops, errors)."""
    from boltraft.client import Client
    from boltraft.errors import BoltraftError

    totals = [[0, 0] for _ in range(threads)]

    def loop(k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        value = rng.randbytes(value_size)
        with Client(addrs, timeout=10.0) as c:
            while time.time() < stop_at:
                key = f"k{rng.randrange(keys):06d}"
                try:
                    if rng.random() < read_ratio:
                        c.get(BUCKET, key)
                    else:
                        c.put(BUCKET, key, value)
                    totals[k][0] += 1
                except BoltraftError:
                    totals[k][1] += 1

    ts = [threading.Thread(target=loop, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out.send((sum(t[0] for t in totals), sum(t[1] for t in totals)))
    out.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="brmem-"))
    root.mkdir(parents=True, exist_ok=True)
    config = {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in args.set or [])}
    cluster = Cluster(root, 3, args.serve_arg or [], args.trace, config)
    workers: list[mp.process.BaseProcess] = []
    try:
        for i in range(3):
            cluster.start(i)
        lead = cluster.leader(time.monotonic() + 60)
        from boltraft.client import Client

        with Client(cluster.addrs, timeout=30.0) as c:
            c.create_bucket(BUCKET, if_not_exists=True)
        ctx = mp.get_context("spawn")
        t0 = time.time()
        stop_at = t0 + args.duration
        pipes = []
        for w in range(args.procs):
            recv, send = ctx.Pipe(duplex=False)
            p = ctx.Process(
                target=worker,
                args=(
                    cluster.addrs,
                    args.threads,
                    args.keys,
                    args.value_size,
                    args.read_ratio,
                    stop_at,
                    args.seed + w,
                    send,
                ),
            )
            p.start()
            send.close()
            workers.append(p)
            pipes.append(recv)
        series: dict[int, list[tuple[float, float, float, float]]] = {i: [] for i in range(3)}
        excluded: dict[int, tuple[float, float]] = {}  # node -> (from, to) not steady
        catch: dict[str, Any] | None = None
        next_sample = time.time()
        while time.time() < stop_at:
            now = time.time()
            if now >= next_sample:
                for i in range(3):
                    pid = cluster.pid(i)
                    if pid is not None:
                        rss, anon, file = rss_kb(pid)
                        if rss:
                            series[i].append((now - t0, rss / 1024, anon / 1024, file / 1024))
                next_sample += args.interval
            if args.catch_up and catch is None and now - t0 >= args.warmup:
                sig = signal.SIGKILL if args.catch_up_signal == "kill" else signal.SIGTERM
                catch = catch_up(cluster, lead, args.catch_up, sig, series, t0)
                excluded[catch.pop("_pos")] = (catch.pop("_from"), catch.pop("_to"))
                next_sample = time.time()
            time.sleep(max(0.0, min(next_sample, stop_at) - time.time()))
        ops = errors = 0
        for recv in pipes:
            if recv.poll(60):
                o, e = recv.recv()
                ops += o
                errors += e
        for p in workers:
            p.join(30)
        elapsed = time.time() - t0
        roles = [(cluster.status(i) or {}).get("role", "?") for i in range(3)]
        nodes = {}
        for i, node_id in enumerate(cluster.ids):
            lo, hi = excluded.get(i, (1e18, -1e18))
            steady = [s for s in series[i] if s[0] >= args.warmup and not lo <= s[0] <= hi]
            if not steady:
                continue
            nodes[node_id] = {
                "role": roles[i],
                "rss_start_mb": round(steady[0][1], 1),
                "rss_end_mb": round(steady[-1][1], 1),
                "rss_max_mb": round(max(s[1] for s in steady), 1),
                "growth_mb_per_min": round(slope_per_min([(s[0], s[1]) for s in steady]), 3),
                "anon_start_mb": round(steady[0][2], 1),
                "anon_end_mb": round(steady[-1][2], 1),
                "anon_growth_mb_per_min": round(slope_per_min([(s[0], s[2]) for s in steady]), 3),
                "file_start_mb": round(steady[0][3], 1),
                "file_end_mb": round(steady[-1][3], 1),
                "state_db_mb": round(cluster.state_db_bytes(i) / 2**20, 1),
                "samples": len(steady),
            }
        result: dict[str, Any] = {
            "ops": ops,
            "ops_per_s": round(ops / elapsed, 1),
            "errors": errors,
            "duration_s": round(elapsed, 1),
            "warmup_s": args.warmup,
            "settings": {
                "procs": args.procs,
                "threads": args.threads,
                "keys": args.keys,
                "value_size": args.value_size,
                "read_ratio": args.read_ratio,
                "serve_args": args.serve_arg or [],
                "config": cluster.config,
            },
            "nodes": nodes,
        }
        if catch is not None:
            result["catch_up"] = catch
        if args.series:
            result["series"] = {
                cluster.ids[i]: [[round(x, 1) for x in sample] for sample in s]
                for i, s in series.items()
            }
        return result
    finally:
        for p in workers:
            if p.is_alive():
                p.terminate()
        for i in range(3):
            cluster.stop(i)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def catch_up(
    cluster: Cluster,
    lead: int,
    down_s: float,
    sig: int,
    series: dict[int, list[tuple[float, float, float, float]]],
    t0: float,
) -> dict[str, Any]:
    """Stops a follower for ``down_s`` seconds, restarts it and samples its RSS every 0.1 s
    until it applied what the leader had committed when it came back."""
    for i in range(3):
        st = cluster.status(i)
        if st and st.get("role") == "leader":
            lead = i
    pos = next(i for i in range(3) if i != lead)
    pid = cluster.pid(pos)
    before = rss_kb(pid)[0] / 1024 if pid else 0.0
    started = time.time()
    cluster.stop(pos, sig=sig)
    time.sleep(down_s)
    lst = cluster.status(lead) or {}
    target = lst.get("commit", 0)
    cluster.start(pos)
    restarted = time.time()
    first_applied: int | None = None
    peak = 0.0
    caught = None
    last_probe = 0.0
    deadline = restarted + max(120.0, 10 * down_s)
    while time.time() < deadline:
        pid = cluster.pid(pos)
        if pid is None:
            break
        rss, anon, file = (kb / 1024 for kb in rss_kb(pid))
        peak = max(peak, rss)
        series[pos].append((time.time() - t0, rss, anon, file))
        if time.time() - last_probe >= 0.5:
            last_probe = time.time()
            st = probe_status(cluster.addrs[pos], timeout=0.3)
            if st is not None:
                if first_applied is None:
                    first_applied = st.get("applied", 0)
                if st.get("applied", 0) >= target:
                    caught = time.time() - restarted
                    break
        time.sleep(0.1)
    return {
        "node": cluster.ids[pos],
        "down_s": down_s,
        "lag_entries": target - (first_applied or 0),
        "rss_before_mb": round(before, 1),
        "peak_rss_mb": round(peak, 1),
        "caught_up_s": None if caught is None else round(caught, 1),
        "_pos": pos,
        "_from": started - t0,
        "_to": time.time() - t0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of workload")
    ap.add_argument("--warmup", type=float, default=30.0, help="seconds before rss_start")
    ap.add_argument("--interval", type=float, default=5.0, help="seconds between RSS samples")
    ap.add_argument("--procs", type=int, default=2, help="worker processes")
    ap.add_argument("--threads", type=int, default=8, help="client threads per worker")
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--value-size", type=int, default=100)
    ap.add_argument("--read-ratio", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--catch-up",
        type=float,
        default=0.0,
        metavar="N",
        help="stop a follower for N seconds after the warm-up, report its peak",
    )
    ap.add_argument(
        "--catch-up-signal",
        choices=("kill", "term"),
        default="kill",
        help="how the follower is stopped: SIGKILL (a crash) or SIGTERM",
    )
    ap.add_argument(
        "--serve-arg",
        action="append",
        metavar="ARG",
        help="an argument added to every node's command line (repeatable)",
    )
    ap.add_argument(
        "--set",
        action="append",
        metavar="KEY=JSON",
        help="a config file key for every node, e.g. max_inflight_bytes=4194304",
    )
    ap.add_argument("--trace", action="store_true", help="nodes run under tracemalloc")
    ap.add_argument("--keep", metavar="DIR", help="keep data and logs in DIR")
    ap.add_argument("--series", action="store_true", help="also print every RSS sample")
    args = ap.parse_args()
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
