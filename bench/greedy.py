"""One greedy client against a live 3-node cluster: the other clients' latency and the
nodes' memory, without it and with it.

Starts its own cluster of plain ``boltraft serve`` processes on 127.0.0.1 (bench/fuzz.py's
``Cluster``), then runs ``--clients`` other clients (threads, one ``Client`` each, one call
at a time: a put of a 100-byte value, then a linearizable get of it) against the leader
for ``--seconds``, twice: alone (``baseline``), then beside a greedy client (``greedy``), a
separate process that sends the leader ``--frame-mb`` frames as fast as its connection
takes them, never waiting for an answer (it reads and drops what comes back). Its frames
(``--kind``):

- ``writes``: ``reqs`` frames of 1 MiB puts, valid writes filling the frame;
- ``junk``: random bytes, not msgpack;
- ``bigvalue``: one ``req`` put whose value is over the value limit.

Prints ONE JSON object:

- ``baseline`` / ``greedy``: the other clients' ``ops``, ``p50_ms``, ``p99_ms``,
  ``max_ms`` and ``errors`` (error code -> count; a call that raised counts once);
- ``greedy_frames``: frames the greedy client sent; ``greedy_answers``: the answers it
  read, by outcome (``ok`` or the error code);
- ``rss_mb``: per node, RSS before the greedy phase, its peak during it (sampled every
  10 ms) and at the end;
- ``intake``: the leader's ``intake`` status map at the end (bytes held, frames and
  requests refused ``overloaded``); ``intake_drained``: the same once the requests in
  progress were answered (at most 30 s later);
- ``node_exits``, ``seconds``.

    python bench/greedy.py --kind writes --seconds 10
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgpack
import zmq
from fuzz import IDS, Cluster  # bench/ is sys.path[0] when run as a script

from boltraft.client import Client
from boltraft.errors import BoltraftError
from boltraft.transport.codec import PROTOCOL_VERSION

MiB = 1 << 20


def greedy_frame(kind: str, frame_mb: int) -> bytes:
    """One frame of the greedy client (see the module docstring), about ``frame_mb`` MiB."""
    if kind == "junk":
        return b"\xc1" + os.urandom(frame_mb * MiB)
    if kind == "bigvalue":
        put = {"op": "put", "bucket": b"greedy", "key": b"big", "value": b"v" * (frame_mb * MiB)}
        return msgpack.packb([PROTOCOL_VERSION, "req", 1, put])
    value = os.urandom(MiB - 64)
    puts = [
        [i, {"op": "put", "bucket": b"greedy", "key": b"k%d" % i, "value": value}]
        for i in range(max(1, frame_mb - 1))
    ]
    return msgpack.packb([PROTOCOL_VERSION, "reqs", puts])


def greedy(addr: str, frame: bytes, stop: Any, out: Any) -> None:
    """The greedy client's process: sends ``frame`` to ``addr`` whenever its connection
    takes it until ``stop`` is set; puts (frames sent, answers by outcome) on ``out``."""
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.SNDHWM, 4)
    s.connect(addr)
    sent, answers = 0, Counter[str]()
    poller = zmq.Poller()
    poller.register(s, zmq.POLLIN | zmq.POLLOUT)
    while not stop.is_set():
        for sock, ev in poller.poll(50):
            if ev & zmq.POLLIN:
                while sock.poll(0, zmq.POLLIN):
                    _, kind, *rest = msgpack.unpackb(sock.recv(), raw=False)
                    results = rest[0] if kind == "resps" else [rest]
                    for item in results:
                        resp = item[-1]
                        ok = isinstance(resp, dict) and resp.get("ok")
                        answers["ok" if ok else str(resp.get("error", {}).get("code"))] += 1
            if ev & zmq.POLLOUT:
                try:
                    s.send(frame, zmq.NOBLOCK, copy=False)
                    sent += 1
                except zmq.Again:
                    pass
    out.put((sent, dict(answers)))
    s.close(0)
    ctx.term()


def others(c: Cluster, lead: str, n: int, seconds: float) -> dict[str, Any]:
    """Runs ``n`` client threads against ``lead`` for ``seconds``; their latencies."""
    lat: list[float] = []
    errors: Counter[str] = Counter()
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def one(i: int) -> None:
        mine: list[float] = []
        with Client([c.addrs[lead]], timeout=20.0) as cl:
            k = 0
            while time.monotonic() < end:
                key = b"c%d-%d" % (i, k % 100)
                for write in (True, False):
                    t0 = time.monotonic()
                    try:
                        if write:
                            cl.put("others", key, b"x" * 100)
                        else:
                            cl.get("others", key)
                        mine.append(time.monotonic() - t0)
                    except BoltraftError as err:
                        with lock:
                            errors[err.code] += 1
                k += 1
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lat.sort()

    def pct(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(len(lat) * p))] * 1000, 2) if lat else 0.0

    return {
        "ops": len(lat),
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "max_ms": round(lat[-1] * 1000, 2) if lat else 0.0,
        "errors": dict(errors),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="boltraft-greedy-"))
    c = Cluster(root)
    started = time.monotonic()
    try:
        c.start()
        lead = c.leader(30.0)
        if lead is None:
            raise SystemExit("no leader elected:\n" + "\n".join(c.tail(n) for n in IDS))
        with Client([c.addrs[lead]], timeout=20.0) as cl:
            cl.create_bucket("others")
            cl.create_bucket("greedy")
        baseline = others(c, lead, args.clients, args.seconds)
        before = {n: c.rss_mb(n) for n in IDS}
        peak = dict(before)
        stop, out = mp.Event(), mp.Queue()
        frame = greedy_frame(args.kind, args.frame_mb)
        proc = mp.Process(target=greedy, args=(c.addrs[lead], frame, stop, out))
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                for n in IDS:
                    peak[n] = max(peak[n], c.rss_mb(n))
                time.sleep(0.01)

        sampler = threading.Thread(target=sample)
        sampler.start()
        proc.start()
        try:
            loaded = others(c, lead, args.clients, args.seconds)
        finally:
            stop.set()
            sent, answers = out.get(timeout=60)
            proc.join(30)
            sampling.set()
            sampler.join()
        st = c.status(lead) or {}
        # what the leader holds once the greedy client's writes in progress are answered
        drained = time.monotonic() + 30
        while time.monotonic() < drained:
            after = (c.status(lead) or {}).get("intake") or {}
            if after.get("clients", 0) <= 1:  # the status request asking
                break
            time.sleep(0.2)
        return {
            "kind": args.kind,
            "frame_mb": args.frame_mb,
            "clients": args.clients,
            "baseline": baseline,
            "greedy": loaded,
            "greedy_frames": sent,
            "greedy_answers": answers,
            "rss_mb": {
                n: {
                    "before": round(before[n], 1),
                    "peak": round(peak[n], 1),
                    "end": round(c.rss_mb(n), 1),
                }
                for n in IDS
            },
            "leader": lead,
            "intake": st.get("intake"),
            "intake_drained": after,
            "node_exits": len(c.exited()),
            "seconds": round(time.monotonic() - started, 1),
        }
    finally:
        c.close()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--kind", choices=["writes", "junk", "bigvalue"], default="writes")
    ap.add_argument("--frame-mb", type=int, default=15, help="size of a greedy frame, MiB")
    ap.add_argument("--clients", type=int, default=4, help="other clients")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    print(json.dumps(run(ap.parse_args())))


if __name__ == "__main__":
    main()
