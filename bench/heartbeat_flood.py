"""One client that floods a node with small frames while its ZeroMQ socket sends ZMTP
heartbeats, killed mid-flood, round after round: does the node survive?

It is the reproduction of a known defect (docs/protocol.md, section 2.1): with libzmq 4.3.5,
when a connection's inbound queue is full (``RCVHWM``: ZeroMQ stops reading it) and the
connection then breaks, the connection is flagged in error; when the node's loop drains the
queue, libzmq decodes what it had already read from that connection, and a heartbeat PING
among it is answered by a write that fails the assertion ``!_io_error``
(``stream_engine_base.cpp:310``): the node's process aborts. A client only needs to send
faster than the node's loop reads, with ZeroMQ's heartbeats on, and then drop its
connection. With CURVE keys only a key holder can get that far.

Starts its own 3-node cluster of ``boltraft serve`` processes on 127.0.0.1 (bench/fuzz.py's
``Cluster``); each round starts a flooding process against the leader (``req`` frames of a
small ``get`` and 200 zero bytes, alternately, a heartbeat every 10 ms), lets it run a
random 0.5 to 3 s, kills it with SIGKILL and watches the nodes for ``GRACE_S``. Stops at
the first node that exits.

Prints ONE JSON object: ``rounds`` (run), ``rounds_asked``, ``node_exits`` (ids of the nodes
that exited), ``abort_seen`` (a node's log holds libzmq's assertion), ``seed``.

    python bench/heartbeat_flood.py --rounds 20
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack
import zmq
from fuzz import Cluster  # bench/ is sys.path[0] when run as a script

ASSERTION = "Assertion failed: !_io_error"
GRACE_S = 3.0  # after each kill, how long the nodes are watched for an exit


def flood(addr: str) -> None:
    """Sends small frames to ``addr`` as fast as ZeroMQ takes them, forever (until killed)."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.HEARTBEAT_IVL, 10)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 100_000)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(addr)
    frames = [msgpack.packb([1, "req", 1, {"op": "get", "bucket": "b", "key": b"k"}]), bytes(200)]
    n = 0
    while True:
        sock.send(frames[n & 1])
        n += 1


def run(rounds: int, seed: int) -> dict[str, Any]:
    """Returns the figures of the module docstring."""
    rng = random.Random(seed)
    root = Path(tempfile.mkdtemp(prefix="boltraft-hbflood-"))
    cluster = Cluster(root)
    spawn = mp.get_context("spawn")
    done = 0
    try:
        cluster.start()
        leader = cluster.leader(30.0)
        if leader is None:
            raise SystemExit("error: no leader elected within 30 s")
        for _ in range(rounds):
            p = spawn.Process(target=flood, args=(cluster.addrs[leader],), daemon=True)
            p.start()
            p.join(rng.uniform(0.5, 3.0))
            p.kill()
            p.join()
            done += 1
            deadline = time.monotonic() + GRACE_S  # the node drains what the flood queued
            while not cluster.exited() and time.monotonic() < deadline:
                time.sleep(0.05)
            if cluster.exited():
                break
        exits = cluster.exited()
        logs = "".join((root / f"{n}.log").read_text(errors="replace") for n in cluster.procs)
        return {
            "rounds": done,
            "rounds_asked": rounds,
            "node_exits": exits,
            "abort_seen": ASSERTION in logs,
            "seed": seed,
        }
    finally:
        cluster.close()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    print(json.dumps(run(args.rounds, args.seed)))


if __name__ == "__main__":
    main()
