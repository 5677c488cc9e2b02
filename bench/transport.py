"""Benchmark of the wire layer: codec speed, PeerTransport throughput, client round trips.

Prints ONE JSON object:
- ``codec_*``: encode/decode of a Raft APP message carrying 64 entries of 100 bytes, and of
  a heartbeat (microseconds per frame);
- ``transport_msgs_per_s``: Raft messages/s from one PeerTransport to another over loopback
  TCP (batches of ``--batch`` heartbeats, the receiver draining with ``recv``), and
  ``transport_dropped_frames``: frames the sender dropped meanwhile (queue full, peer down);
- ``client_rtt_p50_us`` / ``client_rtt_p99_us`` / ``client_ops_per_s``: ``Client.get`` round
  trips against an in-process ROUTER that answers at once: the client library's and ZeroMQ's
  own share of every request's latency.

Usage: python bench/transport.py [--seconds 2] [--batch 64]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable

import zmq

from boltraft.client import Client
from boltraft.raft.types import Entry, Message, MessageType
from boltraft.transport import codec
from boltraft.transport.zmq_transport import PeerTransport


def _per_call_us(fn: Callable[[], object], seconds: float) -> float:
    n = 0
    end = time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < end:
        for _ in range(100):
            fn()
        n += 100
    return (time.perf_counter() - start) / n * 1e6


def bench_codec(seconds: float) -> dict[str, float]:
    app = [
        Message(
            MessageType.APP,
            "n2",
            "n1",
            5,
            5,
            10,
            [Entry(5, 11 + i, 0, b"x" * 100) for i in range(64)],
            9,
        )
    ]
    hb = [Message(MessageType.HEARTBEAT, "n2", "n1", 5, commit=9)]
    app_frame, hb_frame = codec.encode_raft(app), codec.encode_raft(hb)
    share = seconds / 4
    return {
        "codec_app64_encode_us": round(_per_call_us(lambda: codec.encode_raft(app), share), 2),
        "codec_app64_decode_us": round(
            _per_call_us(lambda: codec.decode_frame(app_frame), share), 2
        ),
        "codec_heartbeat_encode_us": round(_per_call_us(lambda: codec.encode_raft(hb), share), 2),
        "codec_heartbeat_decode_us": round(
            _per_call_us(lambda: codec.decode_frame(hb_frame), share), 2
        ),
    }


def bench_transport(seconds: float, batch: int) -> dict[str, float]:
    a = PeerTransport("n1", "tcp://127.0.0.1:*", sndhwm=1000)
    b = PeerTransport("n2", "tcp://127.0.0.1:*", {"n1": a.endpoint})
    a.add_peer("n2", b.endpoint)
    msgs = [Message(MessageType.HEARTBEAT, "n2", "n1", 1, commit=i) for i in range(batch)]
    try:
        while not b.recv(0.01):  # wait for the connection (IMMEDIATE drops until then)
            a.send(msgs)
        received = 0
        start = time.perf_counter()
        end = start + seconds
        while time.perf_counter() < end:
            for _ in range(8):
                a.send(msgs)
            for item in b.recv(0.0):
                received += len(item.payload)
        elapsed = time.perf_counter() - start
        return {
            "transport_msgs_per_s": round(received / elapsed),
            "transport_dropped_frames": a.counters()["dropped"],
        }
    finally:
        a.close()
        b.close()


def _echo_node(
    ctx: zmq.Context, ready: threading.Event, stop: threading.Event, out: list[str]
) -> None:
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    out.append(f"tcp://127.0.0.1:{sock.bind_to_random_port('tcp://127.0.0.1')}")
    ready.set()
    while not stop.is_set():
        if sock.poll(20):
            ident, data = sock.recv_multipart()
            rid = codec.decode_frame(data).payload.request_id
            sock.send_multipart([ident, codec.encode_result(rid, b"v" * 100)])
    sock.close(0)


def bench_client(seconds: float) -> dict[str, float]:
    ctx = zmq.Context()
    ready, stop = threading.Event(), threading.Event()
    out: list[str] = []
    t = threading.Thread(target=_echo_node, args=(ctx, ready, stop, out), daemon=True)
    t.start()
    ready.wait(10)
    lat: list[float] = []
    try:
        with Client(out[0], timeout=5) as c:
            c.get("b", "k")
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                c.get("b", "k")
                lat.append(time.perf_counter() - t0)
    finally:
        stop.set()
        t.join()
        ctx.term()
    lat.sort()
    return {
        "client_rtt_p50_us": round(lat[len(lat) // 2] * 1e6, 1),
        "client_rtt_p99_us": round(lat[int(len(lat) * 0.99)] * 1e6, 1),
        "client_ops_per_s": round(len(lat) / sum(lat)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    p.add_argument("--batch", type=int, default=64, help="messages per transport frame")
    args = p.parse_args()
    result: dict[str, float] = {}
    result.update(bench_codec(args.seconds))
    result.update(bench_transport(args.seconds, args.batch))
    result.update(bench_client(args.seconds))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
