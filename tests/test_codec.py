"""The wire codec: round trips, strict typed rejection, and a Hypothesis fuzz of the decoder."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from boltraft import errors
from boltraft.raft.types import (
    MAX_TERM,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    SnapshotMeta,
)
from boltraft.transport import codec


def _app(n: int = 3) -> Message:
    return Message(
        type=MessageType.APP,
        to="n2",
        frm="n1",
        term=7,
        log_term=6,
        index=10,
        entries=[Entry(7, 11 + i, EntryType.NORMAL, b"v%d" % i) for i in range(n)],
        commit=9,
        context=b"ctx",
    )


def _all_fields() -> Message:
    snap = SnapshotMeta(40, 5, ConfState(("n1", "n2"), ("n3",), {"n1": "tcp://h:1"}))
    return Message(
        type=MessageType.APP_RESP,
        to="n1",
        frm="n2",
        term=MAX_TERM,  # the largest term a message may carry
        log_term=1,
        index=2,
        entries=(Entry(1, 3, EntryType.CONF_CHANGE, b""),),
        commit=4,
        reject=True,
        reject_hint=5,
        hint_term=6,
        context=b"\x00\xff",
        snapshot=snap,
    )


def test_raft_batch_round_trips_every_field() -> None:
    msgs = [_app(), _all_fields(), Message(MessageType.HEARTBEAT, "n3", "n1", term=1)]
    frame = codec.decode_frame(codec.encode_raft(msgs))
    assert frame.kind == "raft"
    back = frame.payload
    for m in msgs:
        m.entries = list(m.entries)
    assert back == msgs
    assert type(back[0].entries[0]) is Entry
    assert back[1].entries[0].type is EntryType.CONF_CHANGE
    assert back[1].snapshot.conf_state.voters == ("n1", "n2")


def test_messages_are_positional_arrays_without_maps() -> None:
    raw = msgpack.unpackb(codec.encode_raft([_app(1)]))
    assert raw[:2] == [1, "raft"]
    (msg,) = raw[2]
    assert isinstance(msg, list) and len(msg) == 13
    assert msg[6] == [[7, 11, 0, b"v0"]]  # an Entry is packed as its tuple


def test_request_and_responses_round_trip() -> None:
    body = {"op": "put", "bucket": [b"a", "b"], "key": b"k", "value": b"v", "seq": 3}
    assert codec.decode_frame(codec.encode_request(5, body)) == ("req", (5, body))
    ok = codec.decode_frame(codec.encode_result(6, {"items": [[b"k", None]], "next": None}))
    assert ok == ("resp", (6, True, {"items": [[b"k", None]], "next": None}, None))
    err = errors.NotLeaderError("go away", leader_id="n2", leader_addr="tcp://h:2")
    kind, resp = codec.decode_frame(codec.encode_error(7, err))
    assert (kind, resp.request_id, resp.ok, resp.result) == ("resp", 7, False, None)
    assert type(resp.error) is errors.NotLeaderError
    assert resp.error.details == {"leader_id": "n2", "leader_addr": "tcp://h:2"}


def test_encode_error_survives_unencodable_details() -> None:
    _, resp = codec.decode_frame(codec.encode_error(1, errors.UnavailableError("x", obj=object())))
    assert resp.error.details["obj"].startswith("<object object")


def test_oversized_frame_is_refused_before_parsing() -> None:
    frame = codec.encode_request(1, {"op": "put", "value": b"x" * 1000})
    with pytest.raises(errors.FrameTooLargeError) as exc:
        codec.decode_frame(frame, max_frame_size=100)
    assert exc.value.details["limit"] == 100
    assert codec.decode_frame(frame, max_frame_size=len(frame)).kind == "req"


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        (msgpack.packb([2, "req", 9, {"op": "get"}]), errors.UnsupportedProtocolError),
        (msgpack.packb([1, "gossip", 1]), errors.UnsupportedProtocolError),
        (msgpack.packb([1, "req", 9, {"op": 3}]), errors.BadRequestError),
        (msgpack.packb([1, "req", 9, ["op"]]), errors.BadRequestError),
        (msgpack.packb([1, "req", -1, {"op": "get"}]), errors.MalformedFrameError),
        (msgpack.packb([1, "req", 9]), errors.MalformedFrameError),
        (msgpack.packb(["1", "req", 9, {}]), errors.MalformedFrameError),
        (msgpack.packb([1, 5, 9]), errors.MalformedFrameError),
        (msgpack.packb([1]), errors.MalformedFrameError),
        (msgpack.packb({"v": 1}), errors.MalformedFrameError),
        (msgpack.packb([1, "raft", [[0, "n2"]]]), errors.MalformedFrameError),
        (msgpack.packb([1, "raft", "x"]), errors.MalformedFrameError),
        (msgpack.packb([1, "resp", 1, {"ok": "yes"}]), errors.MalformedFrameError),
        (msgpack.packb([1, "resp", 1, {"ok": False, "error": {}}]), errors.MalformedFrameError),
        (msgpack.packb([1, "req", 1, {"op": "x"}]) + b"\xc0", errors.MalformedFrameError),
        (b"", errors.MalformedFrameError),
        (b"\xc1", errors.MalformedFrameError),
        (b"\x91" * 5000 + b"\xc0", errors.MalformedFrameError),
        (msgpack.packb([1, "req", 1, {"op": "get", "k": msgpack.ExtType(3, b"")}]), None),
        (msgpack.packb([1, "req", 1, {"op": "get", "t": msgpack.Timestamp(1)}]), None),
    ],
)
def test_bad_frames_raise_typed_errors(frame: bytes, error: type | None) -> None:
    with pytest.raises(errors.ProtocolError) as exc:
        codec.decode_frame(frame)
    if error is not None:
        assert type(exc.value) is error
    else:  # extension types are malformed, and the request id is still reported
        assert type(exc.value) is errors.MalformedFrameError
        assert exc.value.details["request_id"] == 1


def test_bad_request_and_unknown_version_carry_the_request_id() -> None:
    for frame in (msgpack.packb([1, "req", 42, {}]), msgpack.packb([3, "req", 42, {}])):
        with pytest.raises(errors.ProtocolError) as exc:
            codec.decode_frame(frame)
        assert exc.value.details["request_id"] == 42


def _good_message_fields() -> list[Any]:
    return msgpack.unpackb(codec.encode_raft([_all_fields()]))[2][0]


@pytest.mark.parametrize(
    ("position", "bad"),
    [
        (0, 99),  # unknown message type
        (0, True),  # a bool is not a type
        (1, b"n1"),  # to must be str
        (3, -1),  # negative term
        (3, 2**64),  # past uint64 (msgpack refuses to pack it, so use a float)
        (6, [[1, 0, 0, b""]]),  # entry index 0
        (6, [[1, 1, 7, b""]]),  # unknown entry type
        (6, [[1, 1, 0, "text"]]),  # entry data must be bytes
        (6, [[1, 1, 0]]),  # entry too short
        (8, 1),  # reject must be a bool
        (11, "ctx"),  # context must be bytes
        (12, [1, 1, [], [], {"n1": 3}]),  # addrs must be str -> str
        (12, [1, 1, [1], [], {}]),  # voters must be str
        (12, [1, 1]),
    ],
)
def test_message_fields_are_checked(position: int, bad: Any) -> None:
    fields = _good_message_fields()
    fields[position] = 1.5 if bad == 2**64 else bad
    with pytest.raises(errors.MalformedFrameError):
        codec.decode_frame(msgpack.packb([1, "raft", [fields]]))
    with pytest.raises(errors.MalformedFrameError):
        codec.decode_frame(msgpack.packb([1, "raft", [fields[:-1]]]))


def test_register_kind_decodes_and_wraps_decoder_bugs() -> None:
    def decoder(fields: list[Any]) -> int:
        return fields[0]["n"] + 1  # KeyError / TypeError on bad input

    codec.register_kind("t_count", decoder)
    codec.register_kind("t_count", decoder)  # the same decoder again is fine
    assert codec.decode_frame(codec.encode_frame("t_count", {"n": 1})) == ("t_count", 2)
    with pytest.raises(errors.MalformedFrameError):
        codec.decode_frame(codec.encode_frame("t_count", {}))
    with pytest.raises(errors.BadRequestError):
        codec.register_kind("t_count", lambda f: f)
    with pytest.raises(errors.BadRequestError):
        codec.register_kind("req", decoder)
    with pytest.raises(errors.BadRequestError):  # same decoder, other plainness contract
        codec.register_kind("t_count", decoder, checks_plain=True)


def test_a_kind_that_checks_plainness_itself_skips_the_generic_walk() -> None:
    seen: list[Any] = []

    def decoder(fields: list[Any]) -> Any:
        seen.append(fields[0])
        return fields[0]

    codec.register_kind("t_own", decoder, checks_plain=True)
    stamp = msgpack.packb([1, "t_own", msgpack.Timestamp(1, 0)], datetime=False)
    assert codec.decode_frame(stamp).kind == "t_own"  # the decoder alone judges its fields
    assert isinstance(seen[-1], msgpack.Timestamp)
    codec.register_kind("t_generic", decoder)
    with pytest.raises(errors.MalformedFrameError):
        codec.decode_frame(msgpack.packb([1, "t_generic", msgpack.Timestamp(1, 0)]))


def test_unencodable_field_raises_malformed() -> None:
    with pytest.raises(errors.MalformedFrameError):
        codec.encode_request(1, {"op": "put", "value": object()})


def test_split_for_limit_keeps_order_and_drops_only_the_giant() -> None:
    msgs = [_app(1) for _ in range(8)]
    for i, m in enumerate(msgs):
        m.commit = i
    one = len(codec.encode_raft(msgs[:1]))
    parts = codec.split_for_limit(msgs, 3 * one)
    assert len(parts) > 1 and all(len(f) <= 3 * one for f, _ in parts)
    back = [m.commit for f, _ in parts for m in codec.decode_frame(f).payload]
    assert back == list(range(8))
    assert sum(n for _, n in parts) == 8
    assert codec.split_for_limit(msgs[:1], one - 1) == []
    assert codec.split_for_limit([], 100) == []


# --- fuzzing ---------------------------------------------------------------------------------
def _decode_only_protocol_errors(data: bytes) -> None:
    try:
        codec.decode_frame(data, max_frame_size=1 << 16)
    except errors.ProtocolError:
        pass


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=256))
def test_fuzz_random_bytes(data: bytes) -> None:
    _decode_only_protocol_errors(data)


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.binary(max_size=8),
)
_values = st.recursive(
    _scalars,
    lambda kids: st.lists(kids, max_size=14) | st.dictionaries(st.text(max_size=4), kids),
    max_leaves=16,
)
_kinds = st.sampled_from(["raft", "req", "resp", "zzz", ""])


@settings(max_examples=300, deadline=None)
@given(st.one_of(_values, st.tuples(st.just(1), _kinds, _values, _values).map(list)))
def test_fuzz_random_msgpack(value: Any) -> None:
    _decode_only_protocol_errors(msgpack.packb(value))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_mutated_good_frames(data: st.DataObject) -> None:
    base = bytearray(
        data.draw(
            st.sampled_from(
                [
                    codec.encode_raft([_app(), _all_fields()]),
                    codec.encode_request(3, {"op": "put", "bucket": ["a"], "key": b"k"}),
                    codec.encode_error(4, errors.NoLeaderError("none")),
                ]
            )
        )
    )
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(base) - 1))
        base[pos] = data.draw(st.integers(0, 255))
    _decode_only_protocol_errors(bytes(base))


# --- the protocol document -------------------------------------------------------------------
def test_protocol_doc_lists_every_error_code() -> None:
    from pathlib import Path

    from boltraft.transport import protocol_doc

    doc = (Path(__file__).parent.parent / "docs" / "protocol.md").read_text()
    for code in errors.error_codes():
        assert f"| `{code}` |" in doc, f"docs/protocol.md misses error code {code!r}"
    assert protocol_doc.render(doc) == doc, (
        "docs/protocol.md's error table is stale: run python -m boltraft.transport.protocol_doc"
    )
