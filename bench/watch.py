"""Watches under load: how soon a change reaches 100 watchers, and what they cost the writers.

Starts a 3-node cluster of plain ``boltraft serve`` processes (default settings) in a
temporary folder and creates one bucket, then runs two phases of ``--duration`` seconds each
with the same writers: ``--writers`` clients (threads of this process), together putting
``--rate`` writes/s at a fixed pace (each writer its share, on a schedule: a late write
goes at once, the next ones keep the schedule), each a new 100-byte value under its own key:

1. **without watchers**: the writers alone;
2. **with watchers**: ``--watchers`` watches of the bucket (``boltraft.client.Client.watch``,
   from now), started on the nodes in turn (``--watch-on followers``: on the followers
   only), read by ``--watch-procs`` processes (one thread each,
   ``boltraft.client.wait_watches``; apart from the writers' process).

Each watcher notes when every event arrives (``time.monotonic``, one clock for every process
of the machine). A change's delivery latency is that time minus the moment its writer's put
was acknowledged (the leader acknowledges once the entry is committed and applied: the
commit, as a client can see it): negative when a watcher got the change before the writer
got its answer. Prints ONE JSON object:

| key | meaning |
|---|---|
| ``watch_delivery_p50_ms``, ``_p99_ms``, ``_max_ms`` | acknowledgement -> a watcher has it |
| ``watch_from_send_p50_ms``, ``_p99_ms`` | the writer's send -> a watcher has it |
| ``watch_events_per_s`` | events delivered to all watchers together, per second |
| ``watch_missing``, ``watch_duplicates`` | acknowledged changes a watcher lacks at the end; |
| | events a watcher got twice (both must be 0) |
| ``write_p50_ms``, ``write_p99_ms``, ``write_ops_per_s`` | the writers without watchers |
| ``write_with_watchers_p50_ms``, ``_p99_ms``, ``_ops_per_s`` | the same with watchers |
| ``write_p50_slowdown`` | ``write_with_watchers_p50_ms / write_p50_ms`` |
| ``write_errors`` | puts that raised (both phases) |
| ``nodes_cpu_s_per_s``, ``nodes_cpu_with_watchers_s_per_s`` | CPU the 3 nodes used, per second |
| ``watchers_cpu_s_per_s`` | CPU the watcher processes used, per second (the same machine) |
| ``watch_frames_per_s`` | ``events_batch`` frames the 3 nodes sent, per second (with watchers) |
| ``rate``, ``writers``, ``watchers``, ``watch_on``, ``duration_s`` | the settings |
| ``watch_procs``, ``watch_tick_ms`` | (also settings) |

    python bench/watch.py                        # 1,000 writes/s, 100 watchers, 10 s a phase
    python bench/watch.py --rate 200 --watchers 10 --duration 3
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from boltraft.client import Client, wait_watches

sys.path.insert(0, str(Path(__file__).resolve().parent))
from failover import Nodes, Prober, settled  # bench/failover.py

BUCKET = "watched"
VALUE = b"v" * 100


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def frames_sent(prober: Prober, eps: list[str]) -> int:
    """The ``events_batch`` frames the nodes of ``eps`` sent so far (their ``status``); raises
    SystemExit when one does not answer."""
    got = prober.statuses(eps, timeout=5.0)
    if len(got) != len(eps):
        raise SystemExit("error: a node did not answer its status")
    return sum(int(st["watch"]["frames"]) for st in got.values())


def pct(xs: list[float], p: float) -> float:
    """The ``p`` percentile of ``xs`` (nearest rank), in ms, rounded; 0.0 when empty."""
    if not xs:
        return 0.0
    s = sorted(xs)
    return round(s[min(len(s) - 1, int(p / 100 * len(s)))] * 1000, 3)


class Writer(threading.Thread):
    """Puts ``rate`` writes/s on a fixed schedule until ``stop_at``; notes each key's send
    and acknowledgement times."""

    def __init__(self, eps: list[str], wid: int, rate: float, start_at: float, stop_at: float):
        super().__init__(daemon=True)
        self.eps, self.wid, self.rate = eps, wid, rate
        self.start_at, self.stop_at = start_at, stop_at
        self.sent: dict[bytes, float] = {}
        self.acked: dict[bytes, float] = {}
        self.errors = 0

    def run(self) -> None:
        with Client(self.eps, timeout=10) as c:
            i = 0
            while True:
                due = self.start_at + i / self.rate
                if due >= self.stop_at:
                    return
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                key = b"%03d-%08d" % (self.wid, i)
                t0 = time.monotonic()
                try:
                    c.put(BUCKET, key, VALUE)
                except Exception:
                    self.errors += 1
                else:
                    t1 = time.monotonic()
                    self.sent[key] = t0
                    self.acked[key] = t1
                i += 1


def write_phase(eps: list[str], rate: float, writers: int, seconds: float) -> list[Writer]:
    start = time.monotonic() + 0.2
    ws = [Writer(eps, i, rate / writers, start, start + seconds) for i in range(writers)]
    for w in ws:
        w.start()
    for w in ws:
        w.join()
    return ws


def watch_proc(eps_list: list[list[str]], tick: float, ready: Any, stop: Any, out: Any) -> None:
    """One process of watchers: one thread serving them all (``wait_watches``, then
    ``Watch.take``), noting (key, arrival) of each event until ``stop`` is set; puts each
    watch's list on ``out``. It reads at most once per ``tick`` seconds (0: as soon as
    something arrives): what arrived meanwhile, for all its watches, is read in one round,
    and the wait counts in the delivery latency."""
    got: list[list[tuple[bytes, float]]] = [[] for _ in eps_list]
    watches = []
    for eps in eps_list:
        with Client(eps, timeout=30) as c:
            watches.append(c.watch(BUCKET, reconnect_timeout=60))
    ready.release()

    index = {id(w): i for i, w in enumerate(watches)}
    woke = 0.0
    while not stop.is_set():
        delay = woke + tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        woke = time.monotonic()
        for w in wait_watches(watches, 0.2):
            now = time.monotonic()  # when this batch was received and decoded
            got[index[id(w)]].extend((ev.key or b"", now) for ev in w.take())
    for w in watches:
        w.close()
    for g in got:
        out.put(g)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=1000.0, help="writes/s of all writers")
    ap.add_argument("--writers", type=int, default=10)
    ap.add_argument("--watchers", type=int, default=100)
    ap.add_argument("--watch-procs", type=int, default=4)
    ap.add_argument(
        "--watch-tick-ms",
        type=float,
        default=1.0,
        help="a watcher process reads at most once per this many ms (0: at every arrival)",
    )
    ap.add_argument(
        "--watch-on",
        choices=("all", "followers"),
        default="all",
        help="the nodes the watches start on, in turn (followers: spare the leader)",
    )
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of each phase")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="boltraft-watch-bench-") as tmp:
        nodes = Nodes(Path(tmp), 3)
        for i in nodes.ids:
            nodes.start(i)
        eps = [nodes.addr[i] for i in nodes.ids]
        prober = Prober(eps)
        try:
            deadline = time.monotonic() + 60
            while settled(prober, nodes) is None:
                if time.monotonic() > deadline:
                    raise SystemExit("error: the cluster did not settle within 60 s")
                time.sleep(0.05)
            with Client(eps, timeout=30) as c:
                c.create_bucket(BUCKET)
            node_pids = [p.pid for p in nodes.procs.values()]
            c0 = sum(cpu_s(p) for p in node_pids)
            alone = write_phase(eps, args.rate, args.writers, args.duration)
            c1 = sum(cpu_s(p) for p in node_pids)

            ctx = mp.get_context("spawn")
            ready, stop, out = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
            lead = settled(prober, nodes) or nodes.ids[0]
            spots = eps if args.watch_on == "all" else [e for e in eps if e != nodes.addr[lead]]
            # each watch starts on its node; the others follow in case it fails
            rotations = []
            for i in range(args.watchers):
                first = spots[i % len(spots)]
                rotations.append([first, *[e for e in eps if e != first]])
            parts = [rotations[p :: args.watch_procs] for p in range(args.watch_procs)]
            procs = [
                ctx.Process(
                    target=watch_proc, args=(part, args.watch_tick_ms / 1000, ready, stop, out)
                )
                for part in parts
            ]
            for p in procs:
                p.start()
            for _ in procs:
                ready.acquire()
            f2 = frames_sent(prober, eps)
            c2 = sum(cpu_s(p) for p in node_pids)
            w2 = sum(cpu_s(p.pid) for p in procs if p.pid is not None)
            watched = write_phase(eps, args.rate, args.writers, args.duration)
            c3 = sum(cpu_s(p) for p in node_pids)
            w3 = sum(cpu_s(p.pid) for p in procs if p.pid is not None)
            f3 = frames_sent(prober, eps)
            time.sleep(1.0)  # the last changes reach the watchers (missing ones are counted)
            stop.set()
            lists = [out.get() for _ in range(args.watchers)]
            for p in procs:
                p.join()
        finally:
            prober.close()
            nodes.stop()
    acked = {k: t for w in watched for k, t in w.acked.items()}
    sent = {k: t for w in watched for k, t in w.sent.items()}
    delivery: list[float] = []
    from_send: list[float] = []
    missing = duplicates = 0
    for g in lists:
        keys = [k for k, _ in g]
        duplicates += len(keys) - len(set(keys))
        missing += len(acked.keys() - set(keys))
        for k, t in g:
            if k in acked:
                delivery.append(t - acked[k])
                from_send.append(t - sent[k])

    def lat(ws: list[Writer]) -> list[float]:
        return [w.acked[k] - w.sent[k] for w in ws for k in w.acked]

    base, loaded = lat(alone), lat(watched)
    p50, p50w = pct(base, 50), pct(loaded, 50)
    result = {
        "watch_delivery_p50_ms": pct(delivery, 50),
        "watch_delivery_p99_ms": pct(delivery, 99),
        "watch_delivery_max_ms": pct(delivery, 100),
        "watch_from_send_p50_ms": pct(from_send, 50),
        "watch_from_send_p99_ms": pct(from_send, 99),
        "watch_events_per_s": round(sum(len(g) for g in lists) / args.duration, 1),
        "watch_missing": missing,
        "watch_duplicates": duplicates,
        "write_p50_ms": p50,
        "write_p99_ms": pct(base, 99),
        "write_ops_per_s": round(len(base) / args.duration, 1),
        "write_with_watchers_p50_ms": p50w,
        "write_with_watchers_p99_ms": pct(loaded, 99),
        "write_with_watchers_ops_per_s": round(len(loaded) / args.duration, 1),
        "write_p50_slowdown": round(p50w / p50, 3) if p50 else None,
        "write_errors": sum(w.errors for w in alone + watched),
        "nodes_cpu_s_per_s": round((c1 - c0) / (args.duration + 0.2), 3),
        "nodes_cpu_with_watchers_s_per_s": round((c3 - c2) / (args.duration + 0.2), 3),
        "watchers_cpu_s_per_s": round((w3 - w2) / (args.duration + 0.2), 3),
        "watch_frames_per_s": round((f3 - f2) / (args.duration + 0.2), 1),
        "rate": args.rate,
        "writers": args.writers,
        "watchers": args.watchers,
        "watch_on": args.watch_on,
        "watch_procs": args.watch_procs,
        "watch_tick_ms": args.watch_tick_ms,
        "duration_s": args.duration,
    }
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
