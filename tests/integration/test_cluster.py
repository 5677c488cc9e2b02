"""Real ``boltraft serve`` processes on 127.0.0.1: elections, forwarding, failover, restarts,
exactly-once retries, linearizable reads, garbage frames, and ``boltraft up``."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pytest
import zmq

from boltraft.client import Client
from boltraft.errors import RequestTimeoutError
from boltraft.server.datadir import DataDir
from boltraft.server.wire import REQS, RESPS, register_kinds
from boltraft.transport.codec import decode_frame, encode_request

from .cluster import SERVE, Cluster, free_ports

register_kinds()  # the test decodes resps frames itself

pytestmark = pytest.mark.integration


def _client(c: Cluster, *node_ids: str, timeout: float = 10.0) -> Client:
    eps = [c.addrs[i] for i in node_ids] if node_ids else c.endpoints
    return Client(eps, timeout=timeout)


def test_three_nodes_agree_on_one_leader(cluster: Cluster) -> None:
    lead = cluster.wait_for_leader()
    sts = [cluster.status(i) for i in cluster.ids]
    assert all(st is not None for st in sts)
    assert {st["lead"] for st in sts} == {lead}
    assert len({st["term"] for st in sts}) == 1
    assert sorted(sts[0]["members"]["voters"]) == cluster.ids


def test_writes_through_any_node_reach_every_node(cluster: Cluster) -> None:
    with _client(cluster) as c:
        c.create_bucket("b")
    for node_id in cluster.ids:  # one client per node: followers forward to the leader
        with _client(cluster, node_id) as c:
            c.put("b", f"from-{node_id}", node_id)
    # the leader's commit covers every acknowledged write (a follower learns it later)
    st = cluster.status(cluster.wait_for_leader())
    assert st is not None
    commit = st["commit"]
    for node_id in cluster.ids:
        cluster.wait_applied(node_id, commit)
        with _client(cluster, node_id) as c:
            for other in cluster.ids:
                assert c.get("b", f"from-{other}", read="stale") == other.encode()


def test_leader_sigkill_loses_no_acknowledged_write(cluster: Cluster) -> None:
    acked = []
    with _client(cluster) as c:
        c.create_bucket("b")
        for i in range(50):
            c.put("b", f"k{i}", f"v{i}")
            acked.append(i)
        old = cluster.wait_for_leader()
        cluster.kill(old)
        new = cluster.wait_for_leader()
        assert new != old
        for i in range(50, 100):
            c.put("b", f"k{i}", f"v{i}")
            acked.append(i)
        for i in acked:
            assert c.get("b", f"k{i}") == f"v{i}".encode()
    cluster.start(old)
    with _client(cluster, old) as c:
        commit = c.status()["commit"]
    cluster.wait_applied(old, commit)


def test_restarted_follower_catches_up(cluster: Cluster) -> None:
    lead = cluster.wait_for_leader()
    follower = next(i for i in cluster.ids if i != lead)
    cluster.kill(follower)
    with _client(cluster, lead) as c:
        c.create_bucket("b")
        for i in range(100):
            c.put("b", f"k{i}", f"v{i}")
        commit = c.status()["commit"]
    cluster.start(follower)
    cluster.wait_applied(follower, commit)
    with _client(cluster, follower) as c:
        assert c.get("b", "k99", read="stale") == b"v99"


def test_all_nodes_killed_at_once_keep_every_acknowledged_write(cluster: Cluster) -> None:
    with _client(cluster) as c:
        c.create_bucket("b")
        for i in range(100):
            c.put("b", f"k{i}", f"v{i}")
    cluster.kill()
    cluster.start()
    cluster.wait_for_leader()
    with _client(cluster) as c:
        for i in range(100):
            assert c.get("b", f"k{i}") == f"v{i}".encode()
        c.put("b", "after", "restart")
        assert c.get("b", "after") == b"restart"


def _raw_request(sock: zmq.Socket, rid: int, body: dict[str, object]) -> dict[str, object]:
    """Returns the answer to ``body`` sent on ``sock``, skipping answers to earlier frames."""
    sock.send(encode_request(rid, body))
    while True:
        assert sock.poll(10_000), "no answer from the node"
        frame = decode_frame(sock.recv())
        if frame.kind == "resp" and frame.payload.request_id == rid:
            p = frame.payload
            return {"ok": p.ok, "result": p.result, "error": p.error}


def test_a_retried_write_is_applied_exactly_once(cluster: Cluster) -> None:
    lead = cluster.wait_for_leader()
    with _client(cluster) as c:
        c.create_bucket("seq")
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(cluster.addrs[lead])
    try:
        body = {"op": "next_sequence", "bucket": "seq", "cid": b"retry-test", "seq": 7}
        first = _raw_request(sock, 1, body)
        again = _raw_request(sock, 2, body)  # the same (cid, seq): a retry after a timeout
        assert first["ok"] and again["ok"]
        assert first["result"] == again["result"] == 1
        fresh = _raw_request(sock, 3, {**body, "seq": 8})
        assert fresh["result"] == 2  # the retry did not advance the sequence
    finally:
        sock.close(0)


def _pipelined(sock: zmq.Socket, items: list[list[object]]) -> dict[int, dict[str, object]]:
    """Returns rid -> response for the ``[rid, body]`` items sent in ONE reqs frame on
    ``sock``, asserting that each is answered exactly once, in resps frames."""
    sock.send(msgpack.packb([1, REQS, items]))
    want = {rid for rid, _ in items}
    got: dict[int, dict[str, object]] = {}
    while want - got.keys():
        assert sock.poll(10_000), f"no answer to {sorted(want - got.keys())}"
        frame = decode_frame(sock.recv())
        assert frame.kind == RESPS
        for rid, resp in frame.payload:
            assert rid in want and rid not in got, f"unexpected or repeated answer {rid}"
            got[rid] = resp
    return got


def test_requests_pipelined_in_a_reqs_frame_are_each_answered_once(cluster: Cluster) -> None:
    lead = cluster.wait_for_leader()
    follower = next(i for i in cluster.ids if i != lead)
    with _client(cluster) as c:
        c.create_bucket("pipe")
    ctx = zmq.Context.instance()
    for node in (lead, follower):  # a follower forwards the writes and relays the answers
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(cluster.addrs[node])
        cid = f"pipe-{node}".encode()
        try:
            puts = [
                [i, {"op": "put", "bucket": "pipe", "key": f"{node}-{i}", "value": f"v{i}"}]
                for i in range(1, 31)
            ]
            seq = {"op": "next_sequence", "bucket": "pipe", "cid": cid, "seq": 1}
            got = _pipelined(sock, [*puts, [31, seq], [32, seq], [33, [1, 2]]])
            assert all(got[i] == {"ok": True, "result": None} for i in range(1, 31))
            assert got[31]["ok"] and got[31] == got[32]  # the retry answers the same
            assert got[33]["error"]["code"] == "bad_request"  # type: ignore[index]
            first = got[31]["result"]
            gets = [
                [100 + i, {"op": "get", "bucket": "pipe", "key": f"{node}-{i}"}]
                for i in range(1, 31)
            ]
            got = _pipelined(sock, [*gets, [200, {**seq, "seq": 2}]])
            assert [got[100 + i]["result"] for i in range(1, 31)] == [
                f"v{i}".encode() for i in range(1, 31)
            ]
            assert got[200]["result"] == first + 1  # type: ignore[operator]
        finally:
            sock.close(0)


def test_linearizable_read_sees_a_write_acknowledged_to_another_client(cluster: Cluster) -> None:
    lead = cluster.wait_for_leader()
    followers = [i for i in cluster.ids if i != lead]
    with _client(cluster, lead) as writer, _client(cluster, followers[0]) as reader:
        writer.create_bucket("b")
        for i in range(30):
            writer.put("b", "k", f"v{i}")
            assert reader.get("b", "k") == f"v{i}".encode()


def test_garbage_frames_leave_the_node_serving(cluster: Cluster) -> None:
    target = cluster.ids[0]
    ctx = zmq.Context.instance()
    garbage = [
        b"",
        b"\xc1",
        random.Random(7).randbytes(64),
        msgpack.packb([1]),
        msgpack.packb([2, "req", 1, {"op": "get"}]),
        msgpack.packb([1, "nope", 1]),
        msgpack.packb([1, "raft", [[99, "x"]]]),
        msgpack.packb([1, "fwd", "x"]),
        msgpack.packb([1, "req", 5, "not a map"]),
        msgpack.packb({"v": 1}),
        msgpack.packb([1, "reqs", "x"]),
        msgpack.packb([1, "reqs", [[-1, {"op": "status"}]]]),
        msgpack.packb([1, "reqs", [[1]]]),
    ]
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(cluster.addrs[target])
    try:
        for frame in garbage:
            sock.send(frame)
        sock.send_multipart([b"two", b"frames"])
        # One connection keeps order: once status answers, every garbage frame was handled.
        st = _raw_request(sock, 99, {"op": "status"})
    finally:
        sock.close(0)
    assert st["ok"]
    counts = st["result"]["transport"]
    assert counts["malformed"] + counts["unsupported"] + counts["bad_request"] >= len(garbage)
    with _client(cluster, target) as c:
        c.create_bucket("g", if_not_exists=True)
        c.put("g", "k", "still serving")
        assert c.get("g", "k") == b"still serving"


def _up_base_port() -> int:
    """A base port for ``boltraft up``: its three node ports and the three metrics ports
    1000 above them were free a moment ago."""
    while True:
        base = free_ports(1)[0]
        ports = [base + i for i in range(3)] + [base + 1000 + i for i in range(3)]
        if not 1024 < base < 64000:
            continue
        try:
            free = True
            for port in ports:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            free = False
        if free:
            return base


def _lines_until(proc: subprocess.Popen[bytes], prefix: str) -> list[str]:
    """The lines ``proc`` printed up to and including the first that starts with
    ``prefix``; fails the test when it exits first or takes over 60 s."""
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while not any(line.startswith(prefix) for line in lines):
        assert time.monotonic() < deadline, "".join(lines)
        line = proc.stdout.readline().decode()
        assert line, "boltraft up exited early:\n" + "".join(lines)
        lines.append(line)
    return lines


def test_boltraft_up_serves_and_stops_on_sigint(tmp_path: Path) -> None:
    base = _up_base_port()
    argv = [sys.executable, "-c", SERVE, "up", "--data", str(tmp_path / "d")]
    argv += ["--base-port", str(base)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        lines = _lines_until(proc, "leader:")
        assert proc.stdout is not None
        eps = [f"tcp://127.0.0.1:{base + i}" for i in range(3)]
        assert any(",".join(eps) in line for line in lines)
        with Client(eps, timeout=10, keys=tmp_path / "d" / "keys" / "admin") as c:
            c.create_bucket("config", if_not_exists=True)
            c.put("config", "color", "blue")
            assert c.get("config", "color") == b"blue"
        with Client(eps, timeout=1.0) as anonymous, pytest.raises(RequestTimeoutError):
            anonymous.status()  # the cluster up makes speaks CURVE
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        rest = proc.stdout.read().decode()
        assert "stopped." in rest
        for i in (1, 2, 3):  # every child exited: its data directory lock is free again
            DataDir.open(tmp_path / "d" / f"n{i}").close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_boltraft_up_write_out_json_prints_one_document_on_stdout(tmp_path: Path) -> None:
    base = _up_base_port()
    argv = [sys.executable, "-c", SERVE, "up", "-w", "json", "--data", str(tmp_path / "d")]
    argv += ["--base-port", str(base)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline().decode()  # the cluster, once it has a leader
        assert line, "boltraft up -w json exited early: " + proc.stderr.read().decode()
        doc = json.loads(line)
        eps = [f"tcp://127.0.0.1:{base + i}" for i in range(3)]
        assert doc["endpoints"] == eps
        assert doc["leader"] in ("n1", "n2", "n3")
        assert [n["id"] for n in doc["nodes"]] == ["n1", "n2", "n3"]
        assert [n["listen"] for n in doc["nodes"]] == eps
        assert doc["data"] == str(tmp_path / "d")
        assert doc["keys"] == str(tmp_path / "d" / "keys" / "admin")
        with Client(eps, timeout=10, keys=doc["keys"]) as c:
            c.create_bucket("config", if_not_exists=True)
            c.put("config", "color", "blue")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        assert proc.stdout.read() == b""  # the progress lines went to stderr
        assert "stopped." in proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_write_out_json_logs_one_json_object_per_line(tmp_path: Path) -> None:
    [port] = free_ports(1)
    addr = f"tcp://127.0.0.1:{port}"
    argv = [sys.executable, "-c", SERVE, "serve", "-w", "json", "--id", "n1"]
    argv += ["--listen", addr, "--data", str(tmp_path / "n1")]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        with Client([addr], timeout=10) as c:  # a cluster of one: it leads and serves
            c.create_bucket("b", if_not_exists=True)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert proc.stderr is not None
        lines = proc.stderr.read().decode().splitlines()
        assert lines
        records = [json.loads(line) for line in lines]
        assert all({"ts", "level", "msg"} <= set(r) for r in records), records
        assert any("stopping" in r["msg"] for r in records), records
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_boltraft_up_is_secure_and_the_cli_beside_it_finds_its_keys(tmp_path: Path) -> None:
    base = _up_base_port()
    argv = [sys.executable, "-c", SERVE, "up", "--base-port", str(base)]
    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        lines = _lines_until(proc, "Ctrl-C stops")
        hints = [line.strip() for line in lines if "boltraft put" in line]
        assert hints and "BOLTRAFT_KEYS" not in hints[0]  # found from this directory
        keys = tmp_path / "boltraft-data" / "keys"
        assert (keys / "admin" / "self.json").stat().st_mode & 0o777 == 0o600
        eps = ",".join(f"tcp://127.0.0.1:{base + i}" for i in range(3))
        env = {k: v for k, v in os.environ.items() if k != "BOLTRAFT_KEYS"}
        env["BOLTRAFT_ENDPOINTS"] = eps

        def cli(*args: str, cwd: Path = tmp_path) -> subprocess.CompletedProcess[bytes]:
            cmd = [sys.executable, "-c", SERVE, *args, "--timeout", "10"]
            return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, timeout=60)

        assert cli("bucket", "create", "config").returncode == 0
        assert cli("put", "config", "color", "blue").returncode == 0
        got = cli("get", "config", "color")
        assert got.returncode == 0 and got.stdout.strip() == b"blue", got
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        cmd = [sys.executable, "-c", SERVE, "get", "config", "color", "--timeout", "1"]
        far = subprocess.run(cmd, cwd=elsewhere, env=env, capture_output=True, timeout=60)
        assert far.returncode != 0 and b"error: timeout" in far.stderr  # no keys: nothing
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
