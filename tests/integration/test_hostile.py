"""Hostile frames against real ``boltraft serve`` processes (issue 19): each test sends what
killed, wedged or damaged a live node, then checks that every node still runs and serves,
and that nothing it should not touch changed. Waits are polls with deadlines."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from boltraft.client import Client
from boltraft.errors import BadRequestError, MalformedCommandError
from boltraft.transport.codec import PROTOCOL_VERSION, decode_frame

from .cluster import Cluster, wait_until
from .securecluster import msg

pytestmark = pytest.mark.integration

PROBE_S = 10.0  # how long the answer to a probe behind the hostile frames may take


def _sock(addr: str, identity: bytes | None) -> zmq.Socket:
    s: zmq.Socket = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    if identity is not None:
        s.setsockopt(zmq.IDENTITY, identity)
    s.connect(addr)
    return s


def _send_then_probe(c: Cluster, node_id: str, *frames: Any, identity: bytes | None = None) -> None:
    """Sends the msgpack ``frames`` to ``node_id`` on one connection, then a ``status``
    request behind them, and waits for its answer: the node handled the frames before it."""
    s = _sock(c.addrs[node_id], identity)
    try:
        for f in frames:
            s.send(f if isinstance(f, bytes) else msgpack.packb(f))
        s.send(msgpack.packb([PROTOCOL_VERSION, "req", 424242, {"op": "status"}]))
        deadline_ms = int(PROBE_S * 1000)
        while True:
            assert s.poll(deadline_ms), f"{node_id} did not answer the probe"
            frame = decode_frame(s.recv())
            if frame.kind == "resp" and frame.payload.request_id == 424242:
                assert frame.payload.ok
                return
    finally:
        s.close()


def _serving(c: Cluster, key: str) -> None:
    """Asserts every node runs, a write commits and every node reads it back."""
    for node_id in c.ids:
        assert c.running(node_id), f"{node_id} exited:\n{c.dump_logs()}"
    with Client(c.endpoints, timeout=20) as cl:
        cl.create_bucket("hostile", if_not_exists=True)
        cl.put("hostile", key, b"ok")
        for node_id in c.ids:
            with Client([c.addrs[node_id]], timeout=20) as one:
                assert one.get("hostile", key) == b"ok"
    for node_id in c.ids:
        assert c.running(node_id), f"{node_id} exited:\n{c.dump_logs()}"


def _status(c: Cluster, node_id: str) -> dict[str, Any]:
    st = wait_until(lambda: c.status(node_id), 10, f"{node_id}'s status")
    assert isinstance(st, dict)
    return st


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _offer_meta(cluster: Cluster, lead: str, term: int) -> dict[str, Any]:
    """The meta of a snapshot offer at index 10**6 from ``lead`` (no such snapshot exists)."""
    return {
        "term": term,
        "index": 10**6,
        "log_term": 1,
        "voters": cluster.ids,
        "learners": [],
        "addrs": cluster.addrs,
        "data_index": 10**6,
        "size": 4096,
        "sha256": "0" * 64,
        "chunk": 1024,
        "addr": cluster.addrs[lead],
    }


# --- finding 10: path traversal through a snapshot id -------------------------------------------
def test_snapshot_offer_with_a_traversing_id_touches_nothing(cluster: Cluster) -> None:
    lead = cluster.wait_for_leader()
    follower = next(i for i in cluster.ids if i != lead)
    data = cluster.root / follower
    victim = cluster.root / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep me")
    before = _tree(data)
    meta = _offer_meta(cluster, lead, _status(cluster, follower)["term"] + 1)
    depth = len(data.resolve().parts) + 2
    sids = [
        "A/" + "../" * depth + str(victim.resolve()).lstrip("/"),
        "A/../../state",
        "B/../../wal",
        "../../log",
    ]
    frames = [  # each offer newer than the last: it replaces (and deletes) the previous download
        [
            PROTOCOL_VERSION,
            "snap",
            "offer",
            sid,
            {**meta, "index": meta["index"] + k, "data_index": meta["index"] + k},
        ]
        for k, sid in enumerate(sids)
    ]
    _send_then_probe(cluster, follower, *frames, identity=lead.encode())
    assert (victim / "precious").read_text() == "keep me"
    assert (data / "wal").exists() or (data / "log").exists()
    assert (data / "state").exists()
    assert not any(".recv-" in p for p in _tree(data) - before)
    assert not any("recv" in p.name for p in cluster.root.iterdir())
    _serving(cluster, "after-traversal")


# --- finding 6: a term or index past the log's signed 64 bits ------------------------------------
@pytest.mark.parametrize("term", [2**64 - 1, 2**63, 2**63 - 1])
def test_heartbeat_with_a_huge_term_changes_no_term(cluster: Cluster, term: int) -> None:
    lead = cluster.wait_for_leader()
    for node_id in cluster.ids:
        other = next(i for i in cluster.ids if i != node_id)
        hb = msg(6, node_id, other, term)
        _send_then_probe(cluster, node_id, [PROTOCOL_VERSION, "raft", [hb]])
    _serving(cluster, "after-term")
    for node_id in cluster.ids:
        assert _status(cluster, node_id)["term"] < 2**32
    assert cluster.wait_for_leader() == lead


# --- finding 7: an append response past the leader's log -----------------------------------------
def test_append_response_past_the_log_leaves_the_leader_leading(cluster: Cluster) -> None:
    lead = cluster.wait_for_leader()
    follower = next(i for i in cluster.ids if i != lead)
    term = _status(cluster, lead)["term"]
    resp = msg(1, lead, follower, term, index=10**9)
    _send_then_probe(cluster, lead, [PROTOCOL_VERSION, "raft", [resp]])
    _serving(cluster, "after-app-resp")
    st = _status(cluster, lead)
    assert st["role"] == "leader" and st["term"] == term
    assert st["commit"] < 10**6


# --- finding 9: entries whose indexes do not follow the append's index ---------------------------
def test_append_with_gapped_entries_is_refused(cluster: Cluster) -> None:
    lead = cluster.wait_for_leader()
    with Client(cluster.endpoints, timeout=20) as cl:
        cl.create_bucket("gap")
    follower = next(i for i in cluster.ids if i != lead)
    st = wait_until(
        lambda: (s := cluster.status(follower)) and s["last_index"] == s["commit"] and s,
        10,
        "the follower to hold what is committed",
    )
    term, last = st["term"], st["last_index"]
    ents = [[term, 10**6, 0, b""]]
    app = msg(0, follower, lead, term, log_term=term, index=last, entries=ents, commit=last + 1)
    _send_then_probe(cluster, follower, [PROTOCOL_VERSION, "raft", [app]])
    _serving(cluster, "after-gap")
    assert _status(cluster, follower)["last_index"] < 10**6


# --- finding 8: a forwarded write, an offer or a notice that killed a node -----------------------
def test_forwarded_write_whose_op_is_not_a_string_is_answered(cluster: Cluster) -> None:
    lead = cluster.wait_for_leader()
    follower = next(i for i in cluster.ids if i != lead)
    bodies = [{"op": [1]}, {"op": {"a": 1}}, {"op": 5}, {"op": None}]
    items = [[i, body] for i, body in enumerate(bodies)]
    _send_then_probe(cluster, lead, [PROTOCOL_VERSION, "fwd", items], identity=follower.encode())
    _serving(cluster, "after-fwd")


def test_offers_from_a_bad_holder_or_to_a_bad_address_are_dropped(cluster: Cluster) -> None:
    lead = cluster.wait_for_leader()
    follower = next(i for i in cluster.ids if i != lead)
    sid = "1000000-0123456789abcdef"
    meta = _offer_meta(cluster, lead, _status(cluster, follower)["term"])
    offer = [PROTOCOL_VERSION, "snap", "offer", sid, meta]
    _send_then_probe(cluster, follower, offer)  # routing id generated by ZeroMQ: 0x00 + 4 bytes
    for addr in ["not an address", "tcp://", "ipc:///tmp/x", "tcp://127.0.0.1:99999", 5]:
        bad = [PROTOCOL_VERSION, "snap", "offer", sid, {**meta, "addr": addr}]
        _send_then_probe(cluster, follower, bad, identity=b"stranger")
    _serving(cluster, "after-offers")


def test_join_with_an_invalid_id_is_refused(cluster: Cluster) -> None:
    cluster.wait_for_leader()
    with Client(cluster.endpoints, timeout=20) as cl:
        for bad in ["\x00x", "a" * 300]:
            with pytest.raises(Exception) as info:
                cl.join(bad, "tcp://127.0.0.1:1")
            assert getattr(info.value, "code", "") == "bad_request"
    _serving(cluster, "after-join")
    assert sorted(_status(cluster, cluster.ids[0])["members"]["voters"]) == cluster.ids


def test_removed_notice_from_a_client_halts_no_node(cluster: Cluster) -> None:
    lead = cluster.wait_for_leader()
    term = _status(cluster, lead)["term"]
    for node_id in cluster.ids:
        notices = [
            [PROTOCOL_VERSION, "removed", {"by": lead, "term": term}],
            [PROTOCOL_VERSION, "removed", {"by": "x", "term": 10**6}],
            [PROTOCOL_VERSION, "removed", {}],
        ]
        _send_then_probe(cluster, node_id, *notices, identity=lead.encode())
        _send_then_probe(cluster, node_id, *notices)
    _serving(cluster, "after-removed")
    for node_id in cluster.ids:
        assert not (cluster.root / node_id / "removed.json").exists()
    assert os.path.isdir(cluster.root / lead)


# --- findings 1 and 2: nesting depth -----------------------------------------------------------
def _deep_body(op: bytes, field: bytes, depth: int) -> bytes:
    """A msgpack request body {"op": op, "bucket": "hostile", "key": b"k", field: [[...]]}
    with ``depth`` nested arrays (built by hand: msgpack's packer stops at 512); ``field``
    is not one of the first three."""
    head = b"\x84" + msgpack.packb("op") + msgpack.packb(op.decode())
    head += msgpack.packb("bucket") + msgpack.packb("hostile")
    head += msgpack.packb("key") + msgpack.packb(b"k") + msgpack.packb(field.decode())
    return head + b"\x91" * depth + msgpack.packb(b"x")


def test_deeply_nested_bodies_are_answered_and_kill_no_node(cluster: Cluster) -> None:
    lead = cluster.wait_for_leader()
    with Client(cluster.endpoints, timeout=20) as cl:
        cl.create_bucket("hostile")
    follower = next(i for i in cluster.ids if i != lead)
    for node_id in (lead, follower):
        for depth in (1000, 100, 30):
            for op, field in ((b"get", b"read"), (b"count", b"read"), (b"put", b"value")):
                frame = b"\x94\x01" + msgpack.packb("req") + msgpack.packb(depth)
                s = _sock(cluster.addrs[node_id], None)
                try:
                    s.send(frame + _deep_body(op, field, depth))
                    assert s.poll(int(PROBE_S * 1000)), f"{node_id}: no answer to {op!r}"
                    answer = decode_frame(s.recv()).payload
                finally:
                    s.close()
                assert answer.request_id == depth and not answer.ok
                assert answer.error.code in ("malformed_frame", "malformed_command")
    _serving(cluster, "after-depth")


def test_a_bucket_path_past_the_limits_is_refused_before_it_reaches_the_log(
    cluster: Cluster,
) -> None:
    deep = [b"a"] * 65
    lead = cluster.wait_for_leader()
    with Client([cluster.addrs[lead]], timeout=10) as cl:
        cl.create_bucket("hostile", if_not_exists=True)
        before = _status(cluster, lead)["last_index"]
        with pytest.raises(MalformedCommandError, match="at most 64 names"):
            cl.create_bucket(deep, if_not_exists=True)
        with pytest.raises(MalformedCommandError):
            cl.create_bucket([b"x" * 200] * 21, if_not_exists=True)  # 4200 bytes
        assert _status(cluster, lead)["last_index"] == before  # nothing was proposed
        with pytest.raises(BadRequestError):
            cl.get(deep, b"k")
    _serving(cluster, "after-deep-paths")


def test_a_scan_larger_than_a_frame_comes_in_pages_the_client_follows(cluster: Cluster) -> None:
    value = b"v" * 1024
    with Client(cluster.endpoints, timeout=30) as cl:
        cl.create_bucket("big")
        for lo in range(0, 20_000, 500):
            cl.batch(
                [
                    {"op": "put", "bucket": "big", "key": b"k%06d" % i, "value": value}
                    for i in range(lo, lo + 500)
                ]
            )
        page = cl.scan("big")  # ~20.6 MB of keys and values: more than one 16 MiB frame
        assert page.next is None and len(page.items) == 20_000
        assert page.items[0] == (b"k000000", value) and page.items[-1][0] == b"k019999"
        part = cl.scan("big", limit=7_000, reverse=True)
        assert len(part.items) == 7_000 and part.next is not None
        assert part.items[-1][0] == b"k013000"
        with Client([cluster.addrs[cluster.wait_for_leader()]], timeout=10) as one:
            raw = one._read({"op": "scan", "bucket": [b"big"]}, None, None, None)
        assert raw["next"] is not None and len(raw["items"]) < 20_000  # one node answer


def test_answers_a_client_never_reads_are_bounded_in_bytes(cluster: Cluster) -> None:
    """Finding 4: 400 gets of a 1 MiB value whose answers are never read. The ROUTER holds
    at most REPLY_QUEUE_BYTES of answers for a connection (beyond the kernel's socket
    buffer): the rest is dropped and counted, and the other clients are served."""
    lead = cluster.wait_for_leader()
    with Client([cluster.addrs[lead]], timeout=20) as cl:
        cl.create_bucket("hostile", if_not_exists=True)
        cl.put("hostile", b"big", os.urandom(1 << 20))
    before = _status(cluster, lead)["transport"]["reply_dropped"]
    greedy: zmq.Socket = zmq.Context.instance().socket(zmq.DEALER)
    greedy.setsockopt(zmq.LINGER, 0)
    greedy.setsockopt(zmq.RCVBUF, 4096)  # and it reads nothing: the answers stay on the node
    greedy.setsockopt(zmq.RCVHWM, 1)
    greedy.connect(cluster.addrs[lead])
    try:
        for rid in range(400):
            get = {"op": "get", "bucket": b"hostile", "key": b"big", "read": "stale"}
            greedy.send(msgpack.packb([PROTOCOL_VERSION, "req", rid, get]))

        def dropped() -> int:
            return _status(cluster, lead)["transport"]["reply_dropped"] - before

        # the ROUTER holds 16 frames (REPLY_QUEUE_BYTES / REPLY_FRAME_BYTES), the socket
        # buffers a few more
        assert wait_until(lambda: dropped() >= 300, 30, "the answers past the queue dropped")
        _serving(cluster, "beside-a-greedy-client")
    finally:
        greedy.close()


GREEDY_S = 8.0  # how long the greedy client sends


def _greedy_frames() -> list[bytes]:
    """Frames of about 15 MiB: valid writes (a ``reqs`` frame of 1 MiB puts), one put of a
    value over the value limit, and bytes that are not msgpack."""
    mib = 1 << 20
    value = os.urandom(mib - 64)
    puts = [
        [i, {"op": "put", "bucket": b"greedy", "key": b"k%d" % i, "value": value}]
        for i in range(14)
    ]
    big = {"op": "put", "bucket": b"greedy", "key": b"big", "value": b"v" * (15 * mib)}
    return [
        msgpack.packb([PROTOCOL_VERSION, "reqs", puts]),
        msgpack.packb([PROTOCOL_VERSION, "req", 99, big]),
        b"\xc1" + os.urandom(15 * mib),
    ]


def test_a_greedy_client_of_large_frames_is_held_to_its_budget_and_the_others_are_served(
    cluster: Cluster,
) -> None:
    """Finding 4, inbound half: a client sends 15 MiB frames to the leader as fast as its
    connection takes them, never waiting for an answer. What it has in progress is bounded
    by the intake (its frames past it are answered ``overloaded``), another client's writes
    and reads are all answered, and once the greedy client stops, the leader holds no
    request bytes of it."""
    lead = cluster.wait_for_leader()
    with Client([cluster.addrs[lead]], timeout=20) as cl:
        cl.create_bucket("greedy")
        cl.create_bucket("hostile", if_not_exists=True)
    frames = _greedy_frames()
    answers: dict[str, int] = {}
    stop = threading.Event()

    def greedy() -> None:
        s = zmq.Context.instance().socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 2)
        s.connect(cluster.addrs[lead])
        n = 0
        try:
            while not stop.is_set():
                if s.poll(20, zmq.POLLOUT):
                    s.send(frames[n % len(frames)], zmq.NOBLOCK, copy=False)
                    n += 1
                while s.poll(0):
                    _, kind, *rest = msgpack.unpackb(s.recv(), raw=False)
                    for item in rest[0] if kind == "resps" else [rest]:
                        resp = item[-1]
                        code = "ok" if resp.get("ok") else resp["error"]["code"]
                        answers[code] = answers.get(code, 0) + 1
        finally:
            s.close()

    thread = threading.Thread(target=greedy)
    thread.start()
    served = 0
    try:
        end = time.monotonic() + GREEDY_S
        with Client([cluster.addrs[lead]], timeout=30) as other:
            while time.monotonic() < end:
                key = b"beside-greedy-%d" % served
                other.put("hostile", key, b"ok")
                assert other.get("hostile", key) == b"ok"
                served += 1
    finally:
        stop.set()
        thread.join(30)
    assert served >= 2
    assert answers.get("overloaded", 0) > 0, answers  # the intake's or the inbox's budget

    def drained() -> bool:
        intake = _status(cluster, lead)["intake"]
        return bool(intake["clients"] <= 1 and intake["bytes"] < 1024)  # the status asking

    wait_until(drained, 60, "the leader to answer the greedy client's requests in progress")
    _serving(cluster, "after-a-greedy-client")


def test_a_clients_writes_past_its_share_of_the_log_wait_and_another_clients_go_between(
    cluster: Cluster,
) -> None:
    """A client's pipelined writes take at most its share of the log at a time
    (``boltraft.server.logshares``): of a frame of fourteen 1 MiB puts the leader proposes
    one, holds the others and proposes each as the one before it is applied, so a write
    another client sends meanwhile goes into the log before the last of them. Every write
    is applied, the greedy client's in its order (a watch sees the log's order)."""
    lead = cluster.wait_for_leader()
    with Client([cluster.addrs[lead]], timeout=20) as cl:
        cl.create_bucket("greedy")
        w = cl.watch("greedy")
        held = _status(cluster, lead)["service"]["held_writes"]
        s = _sock(cluster.addrs[lead], None)
        try:
            s.send(_greedy_frames()[0])
            wait_until(
                lambda: _status(cluster, lead)["service"]["held_writes"] > held,
                20,
                "the leader to hold the greedy client's writes",
            )
            cl.put("greedy", b"between", b"x")
            answers: list[bool] = []
            deadline = time.monotonic() + 60
            while len(answers) < 14:
                assert s.poll(max(1, int((deadline - time.monotonic()) * 1000))), answers
                _, kind, *rest = msgpack.unpackb(s.recv(), raw=False)
                assert kind == "resps", (kind, rest)
                answers += [bool(item[-1].get("ok")) for item in rest[0]]
            assert answers == [True] * 14
        finally:
            s.close()
        keys: list[bytes] = []
        deadline = time.monotonic() + 60
        while len(keys) < 15:
            assert time.monotonic() < deadline, keys
            if w.poll(0.2):
                keys.append(next(w).key or b"")
        w.close()
    greedy = [b"k%d" % i for i in range(14)]
    assert [k for k in keys if k != b"between"] == greedy
    assert keys.index(b"between") < keys.index(b"k13")
