"""Benchmark a real 3-node boltraft cluster: writes and linearizable reads at 1, 16, 64 clients.

Prints ONE JSON object: for each workload (write, read) and concurrency C the keys
``{w}_c{C}_ops_per_s`` and ``{w}_c{C}_p50_ms`` / ``_p90_ms`` / ``_p99_ms`` (e.g.
``write_c1_p50_ms``, ``write_c64_ops_per_s``, ``read_c64_ops_per_s``). When it started the
cluster itself (no ``--endpoints``), also ``{w}_c{C}_leader_cpu_us_per_op`` and
``{w}_c{C}_follower_cpu_us_per_op``: CPU time (user + system, from ``/proc/PID/stat``) a
node process spent per measured request, the leader's and the followers' mean, which is
what decides latency on a machine with fewer cores than busy processes. Before starting
the nodes it also measures the machine's write floor (``boltraft bench floor``, in the same
temporary folder): ``floor_write_c1_p50_ms`` (four ZeroMQ hops and a flush on every
node, with no Raft at all), ``floor_hops_c1_p50_ms`` (the same without the flushes) and
``floor_disk_share_p50_ms``; a machine's phase moves ``write_c1_p50_ms`` and the floor
together, so read one against the other (``--no-floor`` skips it). Per phase also
``{w}_c{C}_errors`` (requests answered with an error); then the settings (``nodes``,
``leader``, ``value_size``, ``duration_s``, ``fsync``, ``frames``) and the leader's
``leader_fsyncs`` and ``leader_readys`` counters at the end.

A "client" is one request stream with one request outstanding at a time (a closed loop), as a
client application thread would be. The streams are spread over ``--procs`` worker processes
(the GIL would otherwise cap the driver), each driving its streams over one ZeroMQ DEALER and
speaking the wire protocol directly (``docs/protocol.md``); writes carry (cid, seq) like the
Python client's. Requests go to the leader, as a leader-following client ends up doing.
Every node fsyncs its Raft log on every append (the default); values are 100 bytes.

A worker pipelines its streams over its one socket, as etcd's benchmark multiplexes its
clients over shared gRPC connections: the requests its streams issue after one receive go
out together in one ``reqs`` frame, and answers come back in ``resps`` frames (each request
still waits for its own answer). ``--single-frames`` sends every request in its own ``req``
frame instead (``"frames"`` in the output says which).

``--secure`` starts the cluster with CurveZMQ keys (``boltraft keys init``, docs/security.md)
and drives it over CURVE with an admin client key; ``"secure"`` in the output says which.
``--keys DIR`` gives the client keys folder for a cluster given with ``--endpoints``.

    python bench/cluster.py                       # starts a temporary local cluster
    python bench/cluster.py --secure              # the same, with CURVE on every socket
    python bench/cluster.py --endpoints tcp://127.0.0.1:7301,tcp://127.0.0.1:7302,...
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import subprocess
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgpack
import zmq
from boltraft_cli.up import node_plan, serve_argv, stop_children

from boltraft.benchmark.floor import run_floor_bench
from boltraft.errors import BoltraftError
from boltraft.server.probe import request, wait_for_leader
from boltraft.transport.curve import client_options, init_keys, load_keys
from boltraft.transport.zmq_transport import drain

BUCKET = "bench"


def _free_base_port(n: int) -> int:
    """Returns a port p such that p..p+n-1 were free on 127.0.0.1 a moment ago."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n >= 65000:
            continue
        try:
            socks = []
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()


def _worker(
    addr: str,
    kind: str,
    streams: int,
    wid: int,
    start_at: float,
    warmup: float,
    duration: float,
    value_size: int,
    single: bool,
    conn: Connection,
    keys: str | None = None,
) -> None:
    """Runs ``streams`` closed-loop request streams against ``addr`` (over CURVE with the
    client keys folder ``keys``); sends back (latencies in seconds measured after the
    warm-up, error count)."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    for opt, v in ({} if keys is None else client_options(load_keys(keys))).items():
        sock.setsockopt(opt, v)
    sock.connect(addr)
    value = os.urandom(value_size)
    packb, unpackb, now = msgpack.packb, msgpack.unpackb, time.perf_counter
    sock.setsockopt(zmq.RCVTIMEO, 100)
    # the backend socket calls with int flags and options (and ``drain``): the sugar
    # wrappers would cost the driver more CPU per request than the node spends on some
    # requests, and on a machine with fewer cores than busy processes the driver's CPU
    # is taken from the nodes
    raw_send, raw_recv, get = (
        zmq.backend.Socket.send,
        zmq.backend.Socket.recv,
        zmq.backend.Socket.get,
    )
    rcvmore, events, pollin = int(zmq.RCVMORE), int(zmq.EVENTS), int(zmq.POLLIN)
    cids = [f"bench-{os.getpid()}-{wid}-{i}".encode() for i in range(streams)]
    seqs = [0] * streams
    pending: dict[int, tuple[int, float]] = {}
    lat: list[float] = []
    errors = 0
    next_rid = 1

    out: list[list[Any]] = []  # [rid, body] of the requests to send after this receive

    def send(i: int) -> None:
        nonlocal next_rid
        rid = next_rid
        next_rid += 1
        key = b"k%d-%d-%d" % (wid, i, seqs[i] % 512)
        body: dict[str, Any]
        if kind == "write":
            seqs[i] += 1
            body = {"op": "put", "bucket": BUCKET, "key": key, "value": value}
            body["cid"] = cids[i]
            body["seq"] = seqs[i]
        else:
            seqs[i] += 1
            body = {"op": "get", "bucket": BUCKET, "key": key}
        pending[rid] = (i, now())
        if single:
            raw_send(sock, packb([1, "req", rid, body]), 0)
        else:
            out.append([rid, body])

    def flush() -> None:
        if out:
            raw_send(sock, packb([1, "reqs", out]), 0)
            out.clear()

    def take(data: bytes) -> None:
        frame = unpackb(data)
        if frame[1] == "resps":
            for rid, resp in frame[2]:
                answered(rid, resp)
        else:
            answered(frame[2], frame[3])

    def answered(rid: int, resp: dict[str, Any]) -> None:
        nonlocal errors
        i, t0 = pending.pop(rid)
        t1 = now()
        if not resp.get("ok"):
            errors += 1
        elif t0 >= t_measure and t1 <= t_end:
            lat.append(t1 - t0)
        if t1 < t_end:
            send(i)

    while time.monotonic() < start_at:
        time.sleep(0.001)
    t_start = now()
    t_measure = t_start + warmup
    t_end = t_measure + duration
    for i in range(streams):
        send(i)
    flush()
    while True:
        t = now()
        if t >= t_end:
            break
        # one blocking read (a poller would look at the socket twice more and wake the
        # driver no sooner), then whatever else is waiting
        try:
            parts = [raw_recv(sock, 0, True)]
        except zmq.Again:  # RCVTIMEO: nothing for 100 ms, look at the clock again
            continue
        while get(sock, rcvmore):
            parts.append(raw_recv(sock, 0, True))
        take(parts[-1])
        if get(sock, events) & pollin:
            for parts in drain(sock, 1 << 20):
                take(parts[-1])
        flush()
    sock.close(0)
    ctx.term()
    conn.send((lat, errors))
    conn.close()


def _pct(sorted_lat: list[float], q: float) -> float:
    if not sorted_lat:
        return float("nan")
    return sorted_lat[min(len(sorted_lat) - 1, int(q * len(sorted_lat)))] * 1000


def cpu_seconds(pid: int) -> float | None:
    """Returns the CPU time (user + system, seconds) process ``pid`` has used so far, or None
    when it cannot be read (no ``/proc``, the process is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # after the command name: state is field 3, utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_phase(
    addr: str,
    kind: str,
    clients: int,
    procs: int,
    warmup: float,
    duration: float,
    size: int,
    single: bool = False,
    pids: dict[str, int] | None = None,
    leader: str = "",
    keys: str | None = None,
) -> dict[str, float]:
    """Returns ops/s, p50/p90/p99 (ms) and errors of one workload at one concurrency; with
    ``pids`` (node id -> process id), also the leader's and the followers' mean CPU
    microseconds per measured request (``leader_cpu_us_per_op``,
    ``follower_cpu_us_per_op``), sampled over the measured window."""
    nprocs = max(1, min(procs, clients))
    spawn = mp.get_context("spawn")
    start_at = time.monotonic() + 1.0 + 0.3 * nprocs  # after every worker has started
    workers = []
    for w in range(nprocs):
        streams = clients // nprocs + (1 if w < clients % nprocs else 0)
        parent, child = spawn.Pipe(duplex=False)
        p = spawn.Process(
            target=_worker,
            args=(addr, kind, streams, w, start_at, warmup, duration, size, single, child, keys),
        )
        p.start()
        workers.append((p, parent))
    before: dict[str, float | None] = {}
    after: dict[str, float | None] = {}
    if pids:
        time.sleep(max(0.0, start_at + warmup - time.monotonic()))
        before = {node: cpu_seconds(pid) for node, pid in pids.items()}
        time.sleep(max(0.0, start_at + warmup + duration - time.monotonic()))
        after = {node: cpu_seconds(pid) for node, pid in pids.items()}
    lat: list[float] = []
    errors = 0
    for p, parent in workers:
        part, errs = parent.recv()
        lat.extend(part)
        errors += errs
        p.join()
    lat.sort()
    out: dict[str, float] = {
        "ops_per_s": round(len(lat) / duration, 1),
        "p50_ms": round(_pct(lat, 0.50), 3),
        "p90_ms": round(_pct(lat, 0.90), 3),
        "p99_ms": round(_pct(lat, 0.99), 3),
        "errors": errors,
    }
    cpu: dict[str, float] = {}  # node id -> CPU microseconds per request (both samples read)
    for node, t0 in before.items():
        t1 = after.get(node)
        if t0 is not None and t1 is not None and lat:
            cpu[node] = (t1 - t0) * 1e6 / len(lat)
    if leader in cpu:
        out["leader_cpu_us_per_op"] = round(cpu[leader], 1)
    followers = [v for node, v in cpu.items() if node != leader]
    if followers:
        out["follower_cpu_us_per_op"] = round(sum(followers) / len(followers), 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--endpoints", help="comma-separated node addresses (default: start one)")
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--clients", default="1,16,64", help="concurrency levels")
    ap.add_argument("--duration", type=float, default=3.0, help="seconds measured per phase")
    ap.add_argument("--warmup", type=float, default=0.5, help="seconds before measuring")
    ap.add_argument("--procs", type=int, default=2, help="driver processes per phase")
    ap.add_argument("--value-size", type=int, default=100)
    ap.add_argument("--workloads", default="write,read")
    ap.add_argument(
        "--single-frames", action="store_true", help="one req frame per request (no reqs)"
    )
    ap.add_argument("--no-floor", action="store_true", help="skip the write floor")
    ap.add_argument("--floor-writes", type=int, default=2000, help="timed writes of the floor")
    ap.add_argument("--secure", action="store_true", help="start the nodes with CURVE keys")
    ap.add_argument("--keys", help="client keys folder of the --endpoints cluster")
    args = ap.parse_args()
    keys_dir: str | None = args.keys

    procs: list[subprocess.Popen[bytes]] = []
    pids: dict[str, int] = {}  # node id -> process id, when this script started the nodes
    tmp = None
    floor: dict[str, Any] = {}  # the write floor, when measured (see the docstring)
    try:
        if args.endpoints:
            endpoints = args.endpoints.split(",")
        else:
            tmp = tempfile.TemporaryDirectory(prefix="boltraft-bench-")
            root = Path(tmp.name)
            if not args.no_floor:
                try:
                    floor = run_floor_bench(root, writes=args.floor_writes, size=args.value_size)
                except BoltraftError as err:
                    raise SystemExit(f"error: the write floor: {err.code}: {err.message}")
            plan = node_plan(root, args.nodes, "127.0.0.1", _free_base_port(args.nodes))
            keys_root = root / "keys" if args.secure else None
            if keys_root is not None:
                init_keys(keys_root, [n for n, _, _ in plan], {"bench": "admin"})
                keys_dir = str(keys_root / "bench")
            for i in range(len(plan)):
                argv = serve_argv(plan, i, keys=keys_root)
                with open(root / f"{plan[i][0]}.log", "ab") as logf:
                    procs.append(subprocess.Popen(argv, stdout=logf, stderr=logf, cwd=root))
                pids[plan[i][0]] = procs[-1].pid
            endpoints = [addr for _, addr, _ in plan]
        keys = None if keys_dir is None else load_keys(keys_dir)
        leader = wait_for_leader(endpoints, time.monotonic() + 30, keys=keys)
        if leader is None:
            raise SystemExit("error: no leader elected within 30 s")
        addr = next(
            a
            for a in endpoints
            if (request(a, {"op": "status"}, 2.0, keys=keys) or {}).get("id") == leader
        )
        create = {"op": "create_bucket", "bucket": BUCKET, "if_not_exists": True}
        request(addr, create, 10.0, keys=keys)
        result: dict[str, Any] = {
            "nodes": len(endpoints),
            "leader": leader,
            "value_size": args.value_size,
            "duration_s": args.duration,
            "fsync": True,
            "frames": "req" if args.single_frames else "reqs",
            "secure": keys is not None,
        }
        result.update({k: v for k, v in floor.items() if k.startswith("floor_")})
        for kind in args.workloads.split(","):
            for c in (int(x) for x in args.clients.split(",")):
                r = run_phase(
                    addr,
                    kind,
                    c,
                    args.procs,
                    args.warmup,
                    args.duration,
                    args.value_size,
                    args.single_frames,
                    pids,
                    leader,
                    keys_dir,
                )
                for k, v in r.items():
                    result[f"{kind}_c{c}_{k}"] = v
        st = request(addr, {"op": "status"}, 2.0, keys=keys)
        result["leader_fsyncs"] = st["node"]["fsyncs"]
        result["leader_readys"] = st["node"]["readys"]
        print(json.dumps(result))
    finally:
        stop_children(procs)
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
