"""The loop's fast paths on the wire: pre-assembled ``resp`` frames, pipelined ``reqs`` /
``resps`` frames, and the transport's direct socket calls (multi-part garbage is dropped
whole, the next frame still arrives)."""

from __future__ import annotations

import time
from typing import Any

import msgpack
import pytest
import zmq

from boltraft.errors import BadRequestError, MalformedFrameError
from boltraft.server.wire import (
    MAX_REQS,
    REQS,
    RESPS,
    encode_ok,
    encode_response,
    encode_resps,
    register_kinds,
)
from boltraft.transport import codec
from boltraft.transport.zmq_transport import PeerTransport

register_kinds()  # the tests decode reqs and resps frames themselves, as a node would

RESULTS: list[Any] = [
    None,
    True,
    0,
    -1,
    2**63,
    b"",
    b"v" * 300,
    "naïve",
    [1, [b"a", None]],
    {"items": [[b"k", b"v"]], "next": None},
]


@pytest.mark.parametrize("result", RESULTS)
@pytest.mark.parametrize("rid", [0, 1, 127, 128, 65536, 2**64 - 1])
def test_encode_ok_is_byte_identical(rid: int, result: Any) -> None:
    frame = encode_ok(rid, result)
    assert frame == encode_response(rid, {"ok": True, "result": result})
    decoded = codec.decode_frame(frame)
    assert decoded.payload == codec.Response(rid, True, result, None)


def test_encode_ok_refuses_unencodable_result() -> None:
    with pytest.raises(MalformedFrameError):
        encode_ok(1, object())


def test_reqs_frame_decodes_to_its_pairs_whatever_the_bodies() -> None:
    items = [[0, {"op": "get", "bucket": "b", "key": b"k"}], [2**64 - 1, "not a map"], [7, None]]
    frame = codec.decode_frame(msgpack.packb([1, REQS, items]))
    assert frame.kind == REQS
    assert frame.payload == items  # bodies are judged one by one by the service
    full = [[i, {"op": "status"}] for i in range(MAX_REQS)]
    assert len(codec.decode_frame(msgpack.packb([1, REQS, full])).payload) == MAX_REQS


@pytest.mark.parametrize(
    "fields",
    [
        [],
        ["x"],
        [[[1, {}]], "extra"],
        [[[1]]],
        [[[1, {}, 2]]],
        [[{"rid": 1}]],
        [[[-1, {}]]],
        [[[1.5, {}]]],
        [[["1", {}]]],
        [[[True, {}]]],
        [[[1, {"op": "put", "value": msgpack.Timestamp(1, 0)}]]],
        [[[i, {"op": "status"}] for i in range(MAX_REQS + 1)]],
        [[[1, [msgpack.ExtType(5, b"x")]]]],
    ],
)
def test_malformed_reqs_frames_are_refused_whole(fields: list[Any]) -> None:
    with pytest.raises(MalformedFrameError):
        codec.decode_frame(msgpack.packb([1, REQS, *fields]))


def test_resps_frame_round_trips_and_sanitizes_unencodable_error_details() -> None:
    err = BadRequestError("bad", thing=object())
    pairs = [[1, {"ok": True, "result": b"v"}], [2, {"ok": False, "error": err.to_wire()}]]
    (packed,) = encode_resps(pairs)
    frame = codec.decode_frame(packed)
    assert frame.kind == RESPS
    assert frame.payload[0] == [1, {"ok": True, "result": b"v"}]
    rid, resp = frame.payload[1]
    assert rid == 2 and resp["error"]["code"] == "bad_request"
    assert resp["error"]["details"]["thing"].startswith("<object object")
    with pytest.raises(MalformedFrameError):
        encode_resps([[3, {"ok": True, "result": object()}]])


def test_resps_frames_stay_within_the_limit_and_keep_the_order() -> None:
    pairs = [[i, {"ok": True, "result": b"v" * 1000}] for i in range(40)]
    big = [[99, {"ok": True, "result": b"x" * 5000}]]
    frames = encode_resps(pairs + big + pairs[:3], limit=4096)
    decoded = [codec.decode_frame(f).payload for f in frames]
    assert [p for part in decoded for p in part] == pairs + big + pairs[:3]
    assert len(frames) > 1
    for f, part in zip(frames, decoded, strict=True):
        assert len(f) <= 4096 or part == big  # only the answer too big on its own exceeds


def _recv_until(t: PeerTransport, n: int) -> list[Any]:
    out: list[Any] = []
    deadline = time.monotonic() + 5
    while len(out) < n and time.monotonic() < deadline:
        out.extend(t.recv(0.05))
    return out


def test_multipart_garbage_is_dropped_and_replies_still_flow() -> None:
    ctx = zmq.Context()
    t = PeerTransport("n1", "tcp://127.0.0.1:*")
    client = ctx.socket(zmq.DEALER)
    client.setsockopt(zmq.LINGER, 0)
    try:
        client.connect(t.endpoint)
        client.send_multipart([b"junk", codec.encode_request(7, {"op": "get"}), b"more"])
        client.send(codec.encode_request(8, {"op": "status"}))
        got = _recv_until(t, 1)
        assert [(f.kind, f.payload.request_id) for f in got] == [("req", 8)]
        assert t.counters()["malformed"] == 1
        assert t.reply(got[0].sender, encode_ok(8, {"x": 1}))
        assert client.poll(5000)
        resp = codec.decode_frame(client.recv()).payload
        assert (resp.request_id, resp.result) == (8, {"x": 1})
        assert not t.reply(b"\x00nobody", encode_ok(9, None))
        assert t.counters()["reply_dropped"] == 1
    finally:
        client.close(0)
        t.close()
        ctx.term()
