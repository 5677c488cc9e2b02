"""The inbox of frames read and not yet taken: its byte budgets (boltraft.transport.inbox),
the cheap reading of a refused frame's request ids, and, over real sockets, the transport's
drain thread reading the ROUTER into it while the loop stays out of ``recv``."""

from __future__ import annotations

import time
from collections.abc import Iterator

import msgpack
import pytest
import zmq

from boltraft.errors import OverloadedError
from boltraft.server import wire
from boltraft.server.replies import answer_refused
from boltraft.transport import codec
from boltraft.transport.inbox import FRAME_COST, Inbox, Raw
from boltraft.transport.zmq_transport import DRAIN_S, PeerTransport

DEADLINE = 10.0


def raw(sender: bytes, size: int) -> Raw:
    return Raw(sender, bytes(size))


# --- budgets ---------------------------------------------------------------------------------
def test_a_client_connection_holds_at_most_its_budget_or_one_frame() -> None:
    box = Inbox(per_client=3 * (100 + FRAME_COST), clients=1 << 20, per_peer=1 << 20)
    for _ in range(3):
        assert box.put(raw(b"\0a", 100), b"\0a", False) is None
    err = box.put(raw(b"\0a", 100), b"\0a", False)
    assert isinstance(err, OverloadedError) and err.details["limit"] == box.per_client
    assert (len(box), box.held(b"\0a"), box.refused) == (3, 3 * (100 + FRAME_COST), 1)
    # another connection holding nothing gets in, even with a frame over the budget
    assert box.put(raw(b"\0b", 10_000), b"\0b", False) is None
    assert box.put(raw(b"\0b", 1), b"\0b", False) is not None
    assert box.bytes == box.clients_bytes == 3 * (100 + FRAME_COST) + 10_000 + FRAME_COST


def test_all_clients_together_hold_at_most_the_clients_budget_and_peers_do_not_count() -> None:
    box = Inbox(per_client=1 << 20, clients=4 * (1000 + FRAME_COST), per_peer=1 << 20)
    for i in range(4):
        assert box.put(raw(bytes([0, i]), 1000), bytes([0, i]), False) is None
    err = box.put(raw(b"\0z", 1000), b"\0z", False)  # a new connection, but all are full
    assert isinstance(err, OverloadedError) and err.details["limit"] == box.clients
    assert box.put(raw(b"n2", 1000), b"n2", True) is None  # a peer has its own budget
    assert box.clients_bytes == 4 * (1000 + FRAME_COST)
    assert box.bytes == 5 * (1000 + FRAME_COST)


def test_a_peer_holds_at_most_its_budget() -> None:
    box = Inbox(per_client=1, clients=1, per_peer=2 * (500 + FRAME_COST))
    assert box.put(raw(b"n2", 500), b"n2", True) is None
    assert box.put(Raw(b"n2", bytes(500), "n2"), b"n2", True) is None  # on our DEALER to it
    err = box.put(raw(b"n2", 500), b"n2", True)
    assert isinstance(err, OverloadedError) and err.details["limit"] == box.per_peer
    assert box.put(raw(b"n3", 500), b"n3", True) is None
    assert box.clients_bytes == 0 and box.refused == 1


def test_taking_frames_releases_their_bytes_in_order() -> None:
    box = Inbox(per_client=2 * (100 + FRAME_COST), clients=1 << 20, per_peer=1 << 20)
    first, second = Raw(b"\0a", b"1" * 100), Raw(b"\0a", b"2" * 100)
    assert box.put(first, b"\0a", False) is None
    assert box.put(second, b"\0a", False) is None
    assert box.put(raw(b"\0a", 100), b"\0a", False) is not None  # full
    assert box.take(1, 1 << 20) == [first]
    assert box.held(b"\0a") == 100 + FRAME_COST
    assert box.put(raw(b"\0a", 100), b"\0a", False) is None  # room again
    assert box.take(10, 150) == [second, raw(b"\0a", 100)]  # 150 bytes: at least reached
    assert (len(box), box.bytes, box.clients_bytes, box.held(b"\0a")) == (0, 0, 0, 0)
    assert box.take(10, 1 << 20) == []


def test_take_stops_at_its_byte_budget_but_always_takes_one_frame() -> None:
    box = Inbox(per_client=1 << 20, clients=1 << 20, per_peer=1 << 20)
    for i in range(3):
        assert box.put(Raw(b"\0a", bytes([i]) * 1000), b"\0a", False) is None
    assert [len(r.data) for r in box.take(10, 1)] == [1000]
    assert len(box.take(10, 1001)) == 2


# --- the request ids of a refused frame -----------------------------------------------------
def test_request_ids_reads_the_ids_of_req_and_reqs_frames_only() -> None:
    wire.register_kinds()
    body = {"op": "put", "bucket": "b", "key": b"k", "value": b"v" * 1000}
    assert wire.request_ids(codec.encode_request(7, body)) == ("req", [7])
    reqs = codec.encode_frame(wire.REQS, [[1, body], [2, {"op": "get"}], [3, "not a map"]])
    assert wire.request_ids(reqs) == ("reqs", [1, 2, 3])
    assert wire.request_ids(codec.encode_frame(wire.REQS, [])) == ("reqs", [])
    for frame in (
        b"\xc1garbage",
        msgpack.packb([2, "req", 7, body]),  # another version
        msgpack.packb([True, "req", 7, body]),
        msgpack.packb([1, "raft", []]),
        msgpack.packb([1, "req", -1, body]),
        msgpack.packb([1, "req", "7", body]),
        msgpack.packb([1, "reqs", [[1, body], [2]]]),
        msgpack.packb([1, "reqs", [[1, body]] * (wire.MAX_REQS + 1)]),
        codec.encode_request(7, body)[:-3],  # cut: the id is still read
    ):
        got = wire.request_ids(frame)
        assert got is None or got == ("req", [7]), frame[:20]
    assert wire.request_ids(codec.encode_request(7, body)[:4]) is None  # cut before the id


def test_answer_refused_answers_every_request_overloaded() -> None:
    wire.register_kinds()
    err = OverloadedError("full", limit=5)
    [resp] = answer_refused(codec.encode_request(9, {"op": "get"}), err)
    answer = codec.decode_frame(resp).payload
    assert (answer.request_id, answer.error.code) == (9, "overloaded")
    reqs = codec.encode_frame(wire.REQS, [[1, {"op": "get"}], [2, {"op": "get"}]])
    frames = answer_refused(reqs, err)
    pairs = [p for f in frames for p in codec.decode_frame(f).payload]
    assert [(rid, r["ok"], r["error"]["code"]) for rid, r in pairs] == [
        (1, False, "overloaded"),
        (2, False, "overloaded"),
    ]
    assert answer_refused(b"junk", err) == []
    assert answer_refused(codec.encode_frame(wire.REQS, []), err) == []


# --- over real sockets -----------------------------------------------------------------------
@pytest.fixture
def client() -> Iterator[zmq.Socket]:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    yield sock
    sock.close(0)
    ctx.term()


def _answers(sock: zmq.Socket, n: int) -> list[tuple[int, str]]:
    """Reads ``n`` answers (resp, or each item of a resps frame) as (request id, error code or
    "ok"); fails after DEADLINE."""
    got: list[tuple[int, str]] = []
    end = time.monotonic() + DEADLINE
    while len(got) < n:
        left = end - time.monotonic()
        assert left > 0 and sock.poll(int(left * 1000)), f"only {got} answered"
        frame = codec.decode_frame(sock.recv())
        items = frame.payload if frame.kind == wire.RESPS else [frame.payload]
        for item in items:
            if frame.kind == wire.RESPS:
                rid, r = item
                got.append((rid, "ok" if r["ok"] else r["error"]["code"]))
            else:
                got.append((item.request_id, "ok" if item.ok else item.error.code))
    return got


def _one_frame_transport(drain: bool) -> PeerTransport:
    """A transport whose inbox keeps one client frame at a time (a connection holding
    nothing is let in one) and answers the refused ones; ``drain``: with its drain thread."""
    wire.register_kinds()
    return PeerTransport(
        "n1",
        "tcp://127.0.0.1:*",
        inbox=Inbox(per_client=1, clients=1 << 20, per_peer=1 << 20),
        answer_refused=answer_refused,
        drain_s=DRAIN_S if drain else None,
    )


def test_the_drain_thread_reads_the_router_while_the_loop_is_out_of_recv(
    client: zmq.Socket,
) -> None:
    """The loop never calls recv: the drain thread reads the client's frames into the inbox,
    which keeps the first (a connection holding nothing is let in one frame) and refuses
    the rest, each of their requests answered ``overloaded``; the loop then takes the kept
    one and its bytes are released. Without the drain thread nothing would be read, and
    nothing answered."""
    t = _one_frame_transport(drain=True)
    try:
        client.connect(t.endpoint)
        client.send(codec.encode_request(1, {"op": "status"}))
        client.send(codec.encode_request(2, {"op": "status"}))
        client.send(codec.encode_frame(wire.REQS, [[3, {"op": "get"}], [4, {"op": "get"}]]))
        client.send(codec.encode_request(5, {"op": "status"}))
        assert sorted(_answers(client, 4)) == [(i, "overloaded") for i in (2, 3, 4, 5)]
        end = time.monotonic() + DEADLINE
        while t.counters()["drained"] < 4:  # counted once the batch's answers are out
            assert time.monotonic() < end, t.counters()
            time.sleep(0.001)
        c = t.counters()
        assert (c["inbox_frames"], c["inbox_refused"], c["drained"]) == (1, 3, 4)
        assert c["inbox_bytes"] > 0
        [kept] = t.recv(0.0)
        assert (kept.kind, kept.payload.request_id) == ("req", 1)
        c = t.counters()
        assert (c["inbox_frames"], c["inbox_bytes"]) == (0, 0)
    finally:
        t.close()


def test_recv_reads_beyond_what_it_hands_over_into_the_inbox(client: zmq.Socket) -> None:
    """Without the drain thread, ``recv`` reads every frame waiting and hands over at most
    ``max_frames``; the next frames wait in the inbox up to their budget, the rest is
    refused and answered, and later calls hand over what waits."""
    t = _one_frame_transport(drain=False)
    try:
        client.connect(t.endpoint)
        for rid in range(1, 41):
            client.send(codec.encode_request(rid, {"op": "status"}))
        taken: list[int] = []
        end = time.monotonic() + DEADLINE
        while len(taken) + t.counters()["inbox_refused"] < 40:
            assert time.monotonic() < end, (taken, t.counters())
            batch = t.recv(0.05, max_frames=1)
            assert len(batch) <= 1
            taken += [f.payload.request_id for f in batch]
        assert taken == sorted(taken)  # the frames handed over keep their order
        c = t.counters()
        assert len(taken) + c["inbox_refused"] == 40
        # each refused request is answered, unless the client's queue had no room (counted)
        answered = _answers(client, c["inbox_refused"] - c["reply_dropped"])
        assert {code for _, code in answered} <= {"overloaded"}
        ids = taken + [rid for rid, _ in answered]
        assert len(set(ids)) == len(ids) and set(ids) <= set(range(1, 41))
    finally:
        t.close()


def test_frames_read_without_a_copy_are_kept_and_decoded_like_the_others(
    client: zmq.Socket,
) -> None:
    """A sender that already holds frames in the inbox has its next ones read zero-copy
    (views of ZeroMQ's messages): kept within the budget, they decode like any frame."""
    t = PeerTransport("n1", "tcp://127.0.0.1:*")
    try:
        client.connect(t.endpoint)
        bodies = [
            {"op": "put", "bucket": "b", "key": b"k%d" % i, "value": bytes(i)} for i in range(5)
        ]
        for i, body in enumerate(bodies):
            client.send(codec.encode_request(i, body))
        end = time.monotonic() + DEADLINE
        while t.counters()["drained"] < 5:  # the loop stays out of recv meanwhile
            assert time.monotonic() < end, t.counters()
            time.sleep(0.001)
        got = t.recv(0.0)
        assert [(f.payload.request_id, f.payload.body) for f in got] == list(enumerate(bodies))
        assert [type(f.payload.body["key"]) for f in got] == [bytes] * 5
        assert t.counters()["inbox_frames"] == 0
    finally:
        t.close()


def test_the_field_reader_steps_over_every_msgpack_type_like_msgpack() -> None:
    """``codec.FieldReader`` skips each msgpack type by its own rules (without decoding it):
    every object below, packed, is stepped over to its end and unpacks to itself."""
    objects: list[object] = [
        None, True, False, 0, 127, 128, 255, 256, 65535, 65536, 2**32, 2**64 - 1, -1, -32,
        -33, -128, -129, -32768, -32769, -(2**31) - 1, -(2**63), 1.5, "", "a" * 31, "b" * 32,
        "c" * 256, "d" * 65536, b"", b"x" * 255, b"y" * 256, b"z" * 65536, [], list(range(15)),
        list(range(16)), list(range(20000)), {}, {str(i): i for i in range(15)},
        {str(i): [i, {"k": b"v"}] for i in range(16)}, {str(i): i for i in range(20000)},
        msgpack.ExtType(1, b"a"), msgpack.ExtType(2, b"ab"), msgpack.ExtType(3, b"abcd"),
        msgpack.ExtType(4, b"a" * 8), msgpack.ExtType(5, b"a" * 16), msgpack.ExtType(6, b"abc"),
        msgpack.ExtType(7, b"a" * 300), msgpack.ExtType(8, b"a" * 70000),
    ]  # fmt: skip
    for obj in objects:
        packed = msgpack.packb(obj)
        reader = codec.FieldReader(packed + b"\x01")
        assert reader.unpack() == obj, repr(obj)[:40]
        assert reader.unpack() == 1  # the next object starts where the first ended
    single = msgpack.packb(1.5, use_single_float=True)
    assert codec.FieldReader(single).unpack() == 1.5
    # 32-bit array and map headers (msgpack writes them past 65,535 items only)
    assert codec.FieldReader(b"\xdd\x00\x00\x00\x02\x01\xa1x").unpack() == [1, "x"]
    assert codec.FieldReader(b"\xdf\x00\x00\x00\x01\xa1k\x02").unpack() == {"k": 2}
    for bad in (b"\xc1", b"\xc4\x05ab", b"\x92\x01", b"\xdd\xff\xff\xff\xff"):
        with pytest.raises((ValueError, IndexError)):
            codec.FieldReader(bad).skip()


def test_the_field_reader_gives_up_past_its_object_budget() -> None:
    many = msgpack.packb([1, "reqs", [[1, {"op": "put", "pad": [0] * codec.PEEK_OBJECTS}]]])
    assert wire.request_ids(many) is None  # not readable cheaply: not answered
    big = {"op": "put", "bucket": "b", "key": b"k", "value": bytes(1 << 20)}
    frame = codec.encode_frame(wire.REQS, [[i, big] for i in range(14)])
    assert wire.request_ids(memoryview(frame)) == ("reqs", list(range(14)))
