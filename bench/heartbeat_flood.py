"""One client that floods a node with small frames and ZMTP heartbeats, killed mid-flood,
round after round: does the node survive?

A regression check for a libzmq 4.3.5 defect a node no longer reaches: when a
connection's inbound queue is full (``RCVHWM``: ZeroMQ stops reading it) and the
connection then breaks, libzmq flags it in error; once the queue drains, it decodes what
it had already read from that connection, and answers a heartbeat PING among it with a
write that fails its assertion ``!_io_error`` (``stream_engine_base.cpp:310``): the
process aborts. A node's ZeroMQ queues have no ``RCVHWM`` (``RCVHWM`` 0, the frames read
into the transport's byte-budgeted inbox: ``boltraft.transport.inbox``), so ZeroMQ never
stops reading a connection (docs/protocol.md, section 2.1).

Starts its own 3-node cluster of ``boltraft serve`` processes on 127.0.0.1 (bench/fuzz.py's
``Cluster``); each round starts a flooding process against the leader, lets it run a
random 0.5 to 3 s, kills it with SIGKILL and watches the nodes for ``GRACE_S``. Stops at
the first node that exits. The flood: a ZeroMQ DEALER sending ``req`` frames of a small
``get`` and 200 zero bytes, alternately, with a heartbeat every 10 ms (libzmq sends fewer
when its output runs dry, so a round reached the defect now and then); with ``--zmtp``, a
client speaking ZMTP 3.1 itself over TCP, a PING every six frames between ``status``
requests and 1-byte frames (it reached the defect in the first or second round).

Prints ONE JSON object: ``rounds`` (run), ``rounds_asked``, ``node_exits`` (ids of the nodes
that exited), ``abort_seen`` (a node's log holds libzmq's assertion), ``seed``, ``zmtp``.

    python bench/heartbeat_flood.py --rounds 20 [--zmtp]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import shutil
import socket
import struct
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


def flood_zmtp(addr: str, report_after: int = 0) -> None:
    """Sends ``addr`` ZMTP 3.1 over a TCP socket as a DEALER would, a PING every six frames
    between ``status`` requests and 1-byte frames, as fast as TCP takes them, forever.
    ``report_after``: once it has sent that many frames, prints ``flooded`` (tests wait for
    that line)."""
    host, port = addr.removeprefix("tcp://").rsplit(":", 1)
    s = socket.create_connection((host, int(port)))
    # greeting: signature, version 3.1, mechanism NULL, as-server 0, filler
    s.sendall(b"\xff" + bytes(8) + b"\x7f\x03\x01" + b"NULL".ljust(20, b"\0") + bytes(32))
    props = b"".join(
        bytes([len(k)]) + k + struct.pack(">I", len(v)) + v
        for k, v in ((b"Socket-Type", b"DEALER"), (b"Identity", b""))
    )
    ready = b"\x05READY" + props
    s.sendall(bytes([4, len(ready)]) + ready)  # a short command frame
    got = b""  # the node's greeting and READY: a PING before them would end the handshake
    while len(got) < 66 or len(got) < 66 + got[65]:
        got += s.recv(4096)
    ping = b"\x04PING" + bytes(2)  # TTL 0
    req = msgpack.packb([1, "req", 1, {"op": "status"}])
    block = (bytes([4, len(ping)]) + ping + bytes([0, len(req)]) + req + b"\0\x01x" * 4) * 200
    sent = 0
    while True:
        s.sendall(block)
        sent += 6 * 200
        if report_after and report_after <= sent < report_after + 6 * 200:
            print("flooded", flush=True)


def run(rounds: int, seed: int, zmtp: bool = False) -> dict[str, Any]:
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
            target = flood_zmtp if zmtp else flood
            p = spawn.Process(target=target, args=(cluster.addrs[leader],), daemon=True)
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
            "zmtp": zmtp,
        }
    finally:
        cluster.close()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--zmtp", action="store_true", help="flood with ZMTP spoken over TCP")
    args = ap.parse_args()
    print(json.dumps(run(args.rounds, args.seed, args.zmtp)))


if __name__ == "__main__":
    main()
