"""Fuzzing a live 3-node boltraft cluster: no frame may kill a node, damage its data or make
its memory grow without bound.

Starts its own cluster of plain ``boltraft serve`` processes, writes a canary set of keys
(bucket ``canary``), then sends ``--frames`` frames, half on each path:

- ``client``: from DEALERs without an identity (what clients are), to every node in turn;
- ``peer``: from DEALERs whose identity is a member's id or another node id, the way peers
  connect (to another node than the one named).

Each frame is a structure-aware mutation of a valid frame of its path (client: ``req`` and
``reqs`` of every data op; peer: ``raft`` frames of every message type, ``fwd``,
``fwdresp``, ``snap``, ``removed``, ``hash``): a field replaced by an edge value (negative,
2^63, 2^64, huge strings, deep nesting, wrong types), removed, duplicated, or the packed
bytes flipped, cut or replaced by random bytes. Cluster operations that change the
membership or write snapshots are never generated (they are the cluster's own business, not
hostile input). The seed (``--seed``) fixes every frame.

Every ``--probe-every`` frames it checks that every node still answers ``status``. At the
end, once a leader is elected again, it reads every canary key back from every node (stale
reads after each caught up with the leader's commit index).

Prints ONE JSON object:

- ``frames_sent``: frames sent (``per_path``: per path);
- ``node_exits``: node processes that exited during the run;
- ``invariant_failures``: canary keys not read back identical on every node (a node that
  cannot answer counts every key), plus nodes that stopped answering ``status``;
- ``rss_growth_mb``: per node, RSS at the end minus RSS after the canary writes
  (``anon_growth_mb``: the same of ``RssAnon``, the heap without mapped files such as the
  LMDB store's pages);
- ``seconds``, ``seed``, ``errors`` (the tail of the log of a node that exited).

    python bench/fuzz.py --frames 1000000 --seed 1
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack
import zmq

from boltraft.benchmark.localcluster import free_ports
from boltraft.client import Client
from boltraft.errors import BoltraftError
from boltraft.server.probe import status as probe_status

SERVE = "from boltraft_cli.main import main; main()"
CANARY_KEYS = 50
IDS = ["n1", "n2", "n3"]
_READ_OPS = ["get", "scan", "count", "buckets", "status"]
_WRITE_OPS = ["put", "delete", "create_bucket", "delete_bucket", "next_sequence", "batch"]
_NAMES = [b"f", b"g", "h", b"f/x", b"", "\u00e9", b"\xff" * 3]
_EDGE_INTS = [-1, 0, 1, 2, 255, 1 << 31, (1 << 62) + 1, 1 << 63, (1 << 64) - 1, -(1 << 63)]


class Cluster:
    """Three ``boltraft serve`` children on free 127.0.0.1 ports under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.addrs = dict(zip(IDS, (f"tcp://127.0.0.1:{p}" for p in free_ports(3)), strict=True))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        for node_id, addr in self.addrs.items():
            argv = [sys.executable, "-c", SERVE, "serve", "--id", node_id]
            argv += ["--data", str(self.root / node_id), "--listen", addr, "--log-level", "WARNING"]
            for other, oaddr in self.addrs.items():
                if other != node_id:
                    argv += ["--peer", f"{other}={oaddr}"]
            with open(self.root / f"{node_id}.log", "ab") as log:
                self.procs[node_id] = subprocess.Popen(
                    argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.root
                )

    def exited(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.poll() is not None]

    def rss_mb(self, node_id: str, field: str = "VmRSS:") -> float:
        """The node's ``VmRSS`` (or another ``field`` of /proc/PID/status) in MB."""
        try:
            with open(f"/proc/{self.procs[node_id].pid}/status") as f:
                for line in f:
                    if line.startswith(field):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def status(self, node_id: str) -> dict[str, Any] | None:
        return probe_status(self.addrs[node_id], timeout=5.0)

    def leader(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node_id in IDS:
                st = self.status(node_id)
                if st and st.get("role") == "leader":
                    return node_id
            time.sleep(0.1)
        return None

    def tail(self, node_id: str) -> str:
        lines = (self.root / f"{node_id}.log").read_text(errors="replace").splitlines()
        return "\n".join(lines[-15:])

    def close(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


# --- the corpus of valid frames -------------------------------------------------------------
def _body(rng: random.Random) -> dict[str, Any]:
    op = rng.choice(_READ_OPS + _WRITE_OPS)
    bucket: Any = rng.choice([b"f", [b"f", b"g"], "h"])
    body: dict[str, Any] = {"op": op}
    if op in ("get", "scan", "count", "put", "delete", "delete_bucket", "next_sequence"):
        body["bucket"] = bucket
    if op in ("get", "put", "delete"):
        body["key"] = rng.choice([b"k1", b"k2", "k3"])
    if op == "put":
        body["value"] = rng.randbytes(rng.choice([0, 8, 100]))
    if op == "create_bucket":
        body.update(bucket=bucket, if_not_exists=rng.random() < 0.5)
    if op == "scan":
        body.update(prefix=b"k", limit=rng.randint(1, 5), reverse=rng.random() < 0.5)
    if op == "batch":
        body["ops"] = [{"op": "put", "bucket": b"f", "key": b"b", "value": b"v"}]
    if op in _WRITE_OPS and rng.random() < 0.5:
        body.update(cid=rng.randbytes(16), seq=rng.randint(1, 1000))
    if op in _READ_OPS and rng.random() < 0.3:
        body.update(read="stale", max_lag=rng.randint(0, 10))
    return body


def client_frame(rng: random.Random) -> list[Any]:
    if rng.random() < 0.8:
        return [1, "req", rng.randint(0, 1 << 20), _body(rng)]
    return [1, "reqs", [[rng.randint(0, 1 << 20), _body(rng)] for _ in range(rng.randint(1, 4))]]


def _raft_msg(rng: random.Random, to: str, frm: str) -> list[Any]:
    typ = rng.randint(0, 11)
    ents = [[1, i, rng.randint(0, 1), rng.randbytes(8)] for i in range(rng.randint(0, 3))]
    snap = None
    if rng.random() < 0.1:
        snap = [rng.randint(0, 100), 1, list(IDS), [], {}]
    idx, term = rng.randint(0, 200), rng.randint(0, 5)
    return [typ, to, frm, term, term, idx, ents, idx, rng.random() < 0.2, 0, 0, b"", snap]


def peer_frame(rng: random.Random, to: str, frm: str) -> list[Any]:
    kind = rng.choice(["raft", "raft", "fwd", "fwdresp", "snap", "removed", "hash"])
    if kind == "raft":
        return [1, "raft", [_raft_msg(rng, to, frm) for _ in range(rng.randint(1, 3))]]
    if kind == "fwd":
        return [1, "fwd", [[rng.randint(0, 99), _body(rng)]]]
    if kind == "fwdresp":
        return [1, "fwdresp", [[rng.randint(0, 99), {"ok": True, "result": None}]]]
    if kind == "removed":
        return [1, "removed", {"by": frm, "term": rng.randint(0, 9)}]
    if kind == "hash":
        if rng.random() < 0.5:
            return [1, "hash", "ask", rng.randint(0, 9)]
        return [1, "hash", "is", rng.randint(0, 9), rng.randint(0, 99), "ab" * 32]
    sid = f"{rng.randint(0, 999)}-{rng.randbytes(8).hex()}"
    meta = {
        "term": 1,
        "index": 10,
        "log_term": 1,
        "voters": list(IDS),
        "learners": [],
        "addrs": {},
        "data_index": 10,
        "size": 4096,
        "sha256": "0" * 64,
        "chunk": 1024,
        "addr": "tcp://127.0.0.1:1",
    }
    name = rng.choice(["offer", "get", "chunk", "done", "gone"])
    rest: list[Any] = {
        "offer": [meta],
        "get": [[0]],
        "chunk": [0, rng.randbytes(16), 0],
        "done": [True, ""],
        "gone": [],
    }[name]
    return [1, "snap", name, sid, *rest]


# --- mutations ------------------------------------------------------------------------------
def _edge(rng: random.Random) -> Any:
    pick = rng.randint(0, 11)
    if pick < 3:
        return rng.choice(_EDGE_INTS)
    if pick == 3:
        return rng.choice(_NAMES)
    if pick == 4:
        return rng.choice([None, True, False, 1.5, float("nan")])
    if pick == 5:
        nested: Any = []
        for _ in range(rng.randint(1, 200)):
            nested = [nested]
        return nested
    if pick == 6:
        return {rng.choice(["op", "x", "bucket", "key"]): rng.choice(_EDGE_INTS)}
    if pick == 7:
        return "x" * rng.choice([0, 1, 300, 70_000])
    if pick == 8:
        return rng.randbytes(rng.choice([0, 1, 64, 600]))
    if pick == 9:
        return [rng.choice(_NAMES) for _ in range(rng.choice([0, 2, 70, 300]))]
    if pick == 10:
        return rng.choice(_READ_OPS + _WRITE_OPS + ["", "nope", "status"])
    return rng.choice([*IDS, "", "n9", "a/../b", "\x00"])


def _containers(obj: Any, out: list[Any], depth: int = 0) -> list[Any]:
    if depth < 8 and isinstance(obj, (list, dict)):
        out.append(obj)
        for v in obj.values() if isinstance(obj, dict) else obj:
            _containers(v, out, depth + 1)
    return out


def mutate(rng: random.Random, frame: list[Any]) -> bytes:
    """Returns ``frame`` after a few structure-aware mutations, packed; sometimes its bytes
    flipped, cut or replaced instead."""
    for _ in range(rng.randint(1, 3)):
        spots = _containers(frame, [])
        target = rng.choice(spots)
        if isinstance(target, dict):
            if not target or rng.random() < 0.2:
                target[rng.choice(["op", "bucket", "x", "after", "limit"])] = _edge(rng)
            else:
                key = rng.choice(list(target))
                if rng.random() < 0.2:
                    del target[key]
                else:
                    target[key] = _edge(rng)
        elif target:
            i = rng.randrange(len(target))
            roll = rng.random()
            if roll < 0.15 and target is not frame:
                del target[i]
            elif roll < 0.25:
                target.append(_edge(rng))
            elif i >= 2 or target is not frame or roll < 0.3:
                target[i] = _edge(rng)
    try:
        data = msgpack.packb(frame)
    except (TypeError, ValueError, OverflowError):
        data = msgpack.packb([1, "req", 1, {"op": "status"}])
    roll = rng.random()
    if roll < 0.1:
        raw = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        return bytes(raw)
    if roll < 0.15:
        return data[: rng.randrange(len(data))]
    if roll < 0.18:
        return rng.randbytes(rng.randint(0, 2048))
    return data


# --- the run --------------------------------------------------------------------------------
def _canary(rng: random.Random) -> dict[bytes, bytes]:
    return {b"c%03d" % i: rng.randbytes(rng.randint(1, 300)) for i in range(CANARY_KEYS)}


def _check_canary(c: Cluster, canary: dict[bytes, bytes]) -> int:
    """Returns the canary keys some node does not serve exactly (a node that cannot answer
    counts every key)."""
    lead = c.leader(30.0)
    if lead is None:
        return len(canary) * len(IDS)
    with Client([c.addrs[lead]], timeout=10.0) as cl:
        target = cl.status()["commit"]
    failures = 0
    for node_id in IDS:
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            st = c.status(node_id)
            if st and st.get("applied", 0) >= target:
                break
            time.sleep(0.1)
        try:
            with Client([c.addrs[node_id]], timeout=10.0) as one:
                for key, value in canary.items():
                    if one.get("canary", key, read="stale") != value:
                        failures += 1
        except BoltraftError:
            failures += len(canary)
    return failures


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    root = Path(args.keep or tempfile.mkdtemp(prefix="boltraft-fuzz-"))
    root.mkdir(parents=True, exist_ok=True)
    c = Cluster(root)
    ctx = zmq.Context()
    started = time.monotonic()
    sent = {"client": 0, "peer": 0}
    invariant_failures = 0
    try:
        c.start()
        if c.leader(30.0) is None:
            raise SystemExit("no leader elected:\n" + "\n".join(c.tail(n) for n in IDS))
        canary = _canary(rng)
        with Client(list(c.addrs.values()), timeout=20.0) as cl:
            cl.create_bucket("canary")
            for key, value in canary.items():
                cl.put("canary", key, value)
            for name in (b"f", b"h"):
                cl.create_bucket(name, if_not_exists=True)
        rss_before = {n: c.rss_mb(n) for n in IDS}
        anon_before = {n: c.rss_mb(n, "RssAnon:") for n in IDS}
        socks: dict[tuple[str, str], zmq.Socket] = {}

        def sock(to: str, identity: str) -> zmq.Socket:
            s = socks.get((to, identity))
            if s is None:
                s = ctx.socket(zmq.DEALER)
                s.setsockopt(zmq.LINGER, 0)
                s.setsockopt(zmq.SNDHWM, 100_000)
                if identity:
                    s.setsockopt(zmq.IDENTITY, identity.encode())
                s.connect(c.addrs[to])
                socks[(to, identity)] = s
            return s

        per_path = args.frames // 2
        for n in range(2 * per_path):
            path = "client" if n % 2 == 0 else "peer"
            to = IDS[(n // 2) % len(IDS)]
            if path == "client":
                s, frame = sock(to, ""), client_frame(rng)
            else:
                frm = rng.choice([i for i in IDS if i != to] + ["n9", "fz"])
                s, frame = sock(to, frm if rng.random() < 0.5 else "fz"), peer_frame(rng, to, frm)
            try:
                s.send(mutate(rng, frame), zmq.NOBLOCK)
                sent[path] += 1
            except zmq.Again:
                pass
            for s2 in socks.values():  # drop whatever comes back
                while s2.poll(0):
                    s2.recv()
            if args.probe_every and (n + 1) % args.probe_every == 0:
                for node_id in IDS:
                    if node_id not in c.exited() and c.status(node_id) is None:
                        invariant_failures += 1
                if c.exited():
                    break
        for s in socks.values():
            s.close(0)
        exits = c.exited()
        invariant_failures += _check_canary(c, canary)
        growth = {n: round(c.rss_mb(n) - rss_before[n], 1) for n in IDS}
        anon = {n: round(c.rss_mb(n, "RssAnon:") - anon_before[n], 1) for n in IDS}
        return {
            "frames_sent": sent["client"] + sent["peer"],
            "per_path": sent,
            "node_exits": len(exits),
            "invariant_failures": invariant_failures,
            "rss_growth_mb": growth,
            "anon_growth_mb": anon,
            "seconds": round(time.monotonic() - started, 1),
            "seed": args.seed,
            "errors": {n: c.tail(n) for n in exits},
        }
    finally:
        c.close()
        ctx.term()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=100_000, help="frames in all, half per path")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--probe-every", type=int, default=2000, help="frames between liveness probes")
    ap.add_argument("--keep", default="", help="keep the cluster's data and logs in this folder")
    print(json.dumps(run(ap.parse_args())))


if __name__ == "__main__":
    main()
