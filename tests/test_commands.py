"""Commands: validation, normalization, the positional log encoding and its strict decoding."""

from __future__ import annotations

import inspect
from typing import Any

import msgpack
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from boltraft.errors import (
    MalformedCommandError,
    UnknownCommandError,
    UnsupportedVersionError,
    ValueTooLargeError,
)
from boltraft.storage import commands
from boltraft.storage.db import DB

ROUND_TRIPS = [
    {"op": "put", "bucket": [b"a"], "key": b"k", "value": b"v"},
    {"op": "put", "bucket": [b"a", b"b"], "key": b"k", "value": b"", "if_value": b"old"},
    {"op": "put", "bucket": [b"a"], "key": b"k", "value": b"v", "if_absent": True},
    {"op": "delete", "bucket": [b"a"], "key": b"k"},
    {"op": "delete", "bucket": [b"a"], "key": b"k", "if_value": b"old"},
    {"op": "create_bucket", "bucket": [b"a"]},
    {"op": "create_bucket", "bucket": [b"a", b"b"], "if_not_exists": True},
    {"op": "delete_bucket", "bucket": [b"a"]},
    {"op": "next_sequence", "bucket": [b"a"]},
    {"op": "batch", "ops": []},
    {
        "op": "batch",
        "ops": [
            {"op": "create_bucket", "bucket": [b"x"]},
            {"op": "put", "bucket": [b"x"], "key": b"k", "value": b"v", "if_absent": True},
            {"op": "next_sequence", "bucket": [b"x"]},
        ],
        "cid": b"c1",
        "seq": 7,
        "ts": 123,
    },
]


def _norm(cmd: dict[str, Any]) -> dict[str, Any]:
    """Returns what decode should give for a round-trip case written with lists."""
    out = dict(cmd, v=1)
    if "bucket" in out:
        out["bucket"] = tuple(out["bucket"])
    if "ops" in out:
        out["ops"] = [{k: _norm(o)[k] for k in o} for o in out["ops"]]
    return out


@pytest.mark.parametrize("cmd", ROUND_TRIPS, ids=lambda c: c["op"])
def test_round_trip(cmd: dict[str, Any]) -> None:
    data = commands.encode(cmd)
    assert commands.decode(data) == _norm(cmd)
    assert commands.encode(commands.decode(data)) == data


def test_envelope_round_trip_and_str_normalization() -> None:
    cmd = {
        "op": "put",
        "bucket": "users",
        "key": "k\u00e9",
        "value": "v",
        "cid": "client",
        "seq": 0,
        "ts": 2**63,
        "v": 1,
    }
    out = commands.decode(commands.encode(cmd))
    assert out == {
        "op": "put",
        "bucket": (b"users",),
        "key": "k\u00e9".encode(),
        "value": b"v",
        "cid": b"client",
        "seq": 0,
        "ts": 2**63,
        "v": 1,
    }


def test_false_flags_are_dropped() -> None:
    put = {"op": "put", "bucket": "a", "key": b"k", "value": b"v", "if_absent": False}
    assert "if_absent" not in commands.validate(put)
    cb = {"op": "create_bucket", "bucket": "a", "if_not_exists": False}
    assert commands.validate(cb) == {"op": "create_bucket", "bucket": (b"a",), "v": 1}


def test_validate_does_not_change_its_input() -> None:
    cmd = {"op": "put", "bucket": ["a"], "key": "k", "value": "v"}
    before = repr(cmd)
    commands.validate(cmd)
    assert repr(cmd) == before


def test_parse_gives_positional_form() -> None:
    data = commands.encode({"op": "put", "bucket": "a", "key": b"k", "value": b"v"})
    assert commands.parse(data) == (1, None, None, None, (commands.PUT, (b"a",), b"k", b"v"))
    data = commands.encode(
        {"op": "put", "bucket": "a", "key": b"k", "value": b"v", "if_absent": True, "cid": "c"}
        | {"seq": 3, "ts": 9}
    )
    assert commands.parse(data) == (1, b"c", 3, 9, (commands.PUT_IF, (b"a",), b"k", b"v", None))


MALFORMED_MAPS = [
    ["put"],
    {"bucket": "a"},
    {"op": 3},
    {"op": "put", "bucket": "a", "key": b"k"},
    {"op": "put", "bucket": "a", "key": 5, "value": b"v"},
    {"op": "put", "bucket": "a", "key": b"k", "value": None},
    {"op": "put", "bucket": [], "key": b"k", "value": b"v"},
    {"op": "put", "bucket": 7, "key": b"k", "value": b"v"},
    {"op": "put", "bucket": ["a", 7], "key": b"k", "value": b"v"},
    {"op": "put", "bucket": "a", "key": b"k", "value": b"v", "extra": 1},
    {"op": "put", "bucket": "a", "key": b"k", "value": b"v", "if_value": b"x", "if_absent": True},
    {"op": "put", "bucket": "a", "key": b"k", "value": b"v", "if_absent": 1},
    {"op": "delete", "bucket": "a", "key": b"k", "if_absent": True},
    {"op": "create_bucket", "bucket": "a", "if_not_exists": "yes"},
    {"op": "delete_bucket", "bucket": "a", "key": b"k"},
    {"op": "next_sequence"},
    {"op": "batch"},
    {"op": "batch", "ops": "nope"},
    {"op": "batch", "ops": [{"op": "batch", "ops": []}]},
    {"op": "batch", "ops": [{"op": "delete_bucket", "bucket": "a", "cid": "c", "seq": 1}]},
    {"op": "batch", "ops": [{"op": "delete_bucket", "bucket": "a", "v": 1}]},
    {"op": "batch", "ops": [5]},
    {"op": "delete_bucket", "bucket": "a", "v": "1"},
    {"op": "delete_bucket", "bucket": "a", "cid": "c"},
    {"op": "delete_bucket", "bucket": "a", "seq": 1},
    {"op": "delete_bucket", "bucket": "a", "cid": "", "seq": 1},
    {"op": "delete_bucket", "bucket": "a", "cid": "x" * 129, "seq": 1},
    {"op": "delete_bucket", "bucket": "a", "cid": "c", "seq": -1},
    {"op": "delete_bucket", "bucket": "a", "cid": "c", "seq": 2**64},
    {"op": "delete_bucket", "bucket": "a", "cid": "c", "seq": True},
    {"op": "delete_bucket", "bucket": "a", "ts": 1.5},
]


@pytest.mark.parametrize("cmd", MALFORMED_MAPS, ids=repr)
def test_malformed_maps_are_refused(cmd: Any) -> None:
    with pytest.raises(MalformedCommandError):
        commands.encode(cmd)


def test_errors_inside_a_batch_name_the_index() -> None:
    cmd = {
        "op": "batch",
        "ops": [{"op": "delete_bucket", "bucket": "a"}, {"op": "put", "bucket": "a"}],
    }
    with pytest.raises(MalformedCommandError) as info:
        commands.validate(cmd)
    assert info.value.details["index"] == 1
    assert "batch op 1" in info.value.message
    with pytest.raises(UnknownCommandError) as info2:
        commands.validate({"op": "batch", "ops": [{"op": "frobnicate"}]})
    assert info2.value.details == {"op": "frobnicate", "index": 0}


def test_unknown_op_and_version() -> None:
    with pytest.raises(UnknownCommandError):
        commands.validate({"op": "frobnicate", "bucket": "a"})
    with pytest.raises(UnsupportedVersionError) as info:
        commands.validate({"op": "delete_bucket", "bucket": "a", "v": 2})
    assert info.value.details == {"version": 2, "supported": [1]}


def _raw(*items: Any) -> bytes:
    return msgpack.packb(list(items), use_bin_type=True)


BODY = (commands.DELETE_BUCKET, [b"a"])
BAD_LOG = [
    (b"", MalformedCommandError),
    (b"\xc1", MalformedCommandError),
    (_raw(1, None, None, None, BODY) + b"\x00", MalformedCommandError),
    (msgpack.packb({"op": "put"}), MalformedCommandError),
    (msgpack.packb(5), MalformedCommandError),
    (_raw(), MalformedCommandError),
    (_raw(2, None, None, None, BODY), UnsupportedVersionError),
    (_raw(2), UnsupportedVersionError),
    (_raw("1", None, None, None, BODY), MalformedCommandError),
    (_raw(True, None, None, None, BODY), MalformedCommandError),
    (_raw(1, None, None, BODY), MalformedCommandError),
    (_raw(1, "c", 1, None, BODY), MalformedCommandError),  # cid must be bytes in the log
    (_raw(1, b"c", None, None, BODY), MalformedCommandError),
    (_raw(1, None, 1, None, BODY), MalformedCommandError),
    (_raw(1, b"c", -1, None, BODY), MalformedCommandError),
    (_raw(1, None, None, -5, BODY), MalformedCommandError),
    (_raw(1, None, None, None, []), MalformedCommandError),
    (_raw(1, None, None, None, [99, [b"a"]]), UnknownCommandError),
    (_raw(1, None, None, None, [-1, [b"a"]]), UnknownCommandError),
    (_raw(1, None, None, None, ["put", [b"a"]]), MalformedCommandError),
    (_raw(1, None, None, None, [commands.PUT, [b"a"], b"k"]), MalformedCommandError),
    (_raw(1, None, None, None, [commands.PUT, [b"a"], b"k", "v"]), MalformedCommandError),
    (_raw(1, None, None, None, [commands.PUT, [], b"k", b"v"]), MalformedCommandError),
    (_raw(1, None, None, None, [commands.PUT, b"a", b"k", b"v"]), MalformedCommandError),
    (_raw(1, None, None, None, [commands.PUT, ["a"], b"k", b"v"]), MalformedCommandError),
    (_raw(1, None, None, None, [commands.DELETE_IF, [b"a"], b"k", None]), MalformedCommandError),
    (_raw(1, None, None, None, [commands.CREATE_BUCKET, [b"a"], 1]), MalformedCommandError),
    (
        _raw(1, None, None, None, [commands.BATCH, [BODY, [commands.BATCH, []]]]),
        MalformedCommandError,
    ),
    (_raw(1, None, None, None, [commands.BATCH, BODY]), MalformedCommandError),
    (_raw(1, None, None, None, [commands.BATCH, b"x"]), MalformedCommandError),
    # near misses of the plain-put fast path: each must take the full check and fail it
    (_raw(True, None, None, None, [commands.PUT, [b"a"], b"k", b"v"]), MalformedCommandError),
    (_raw(1, None, None, None, [False, [b"a"], b"k", b"v"]), MalformedCommandError),
    (_raw(1, None, None, -1, [commands.PUT, [b"a"], b"k", b"v"]), MalformedCommandError),
    (_raw(1, b"c" * 129, 1, None, [commands.PUT, [b"a"], b"k", b"v"]), MalformedCommandError),
    (_raw(1, b"", 1, None, [commands.PUT, [b"a"], b"k", b"v"]), MalformedCommandError),
    (_raw(1, b"c", True, None, [commands.PUT, [b"a"], b"k", b"v"]), MalformedCommandError),
    (_raw(1, None, None, 1.5, [commands.PUT, [b"a"], b"k", b"v"]), MalformedCommandError),
    (_raw(1, None, None, None, [commands.PUT, [1], b"k", b"v"]), MalformedCommandError),
    (_raw(1, None, None, None, [commands.PUT, [b"a"], "k", b"v"]), MalformedCommandError),
    (
        msgpack.packb({1: 0, b"c": 0, 5: 0, None: 0, "x": 0}, use_bin_type=True),
        MalformedCommandError,
    ),
    # a one-key map unpacks like a one-name path
    (_raw(1, None, None, None, [commands.PUT, {b"a": 1}, b"k", b"v"]), MalformedCommandError),
]


def test_fast_path_accepts_exactly_the_plain_puts_the_full_check_accepts() -> None:
    for cid, seq, ts in ((None, None, None), (b"c", 0, 7), (b"c" * 128, 2**64 - 1, 0)):
        data = _raw(1, cid, seq, ts, [commands.PUT, [b"a"], b"k", b""])
        assert commands.parse(data) == (1, cid, seq, ts, (commands.PUT, (b"a",), b"k", b""))
    two_names = _raw(1, None, None, None, [commands.PUT, [b"a", b"b"], b"k", b"v"])
    assert commands.parse(two_names)[4][1] == (b"a", b"b")  # the full check's path


@pytest.mark.parametrize(("data", "error"), BAD_LOG, ids=range(len(BAD_LOG)))
def test_bad_log_entries_are_refused(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        commands.decode(data)
    with pytest.raises(error):
        commands.parse(data)


def test_batch_error_index_in_log_form() -> None:
    data = _raw(1, None, None, None, [commands.BATCH, [BODY, [commands.PUT, [b"a"]]]])
    with pytest.raises(MalformedCommandError) as info:
        commands.parse(data)
    assert info.value.details["index"] == 1


names = st.binary(min_size=1, max_size=8)
paths = st.lists(names, min_size=1, max_size=3)
bodies = st.one_of(
    st.builds(
        lambda b, k, v: {"op": "put", "bucket": b, "key": k, "value": v}, paths, names, names
    ),
    st.builds(
        lambda b, k, v, e: {"op": "put", "bucket": b, "key": k, "value": v, "if_value": e},
        paths,
        names,
        names,
        names,
    ),
    st.builds(
        lambda b, k, v: {"op": "put", "bucket": b, "key": k, "value": v, "if_absent": True},
        paths,
        names,
        names,
    ),
    st.builds(lambda b, k: {"op": "delete", "bucket": b, "key": k}, paths, names),
    st.builds(
        lambda b, k, e: {"op": "delete", "bucket": b, "key": k, "if_value": e}, paths, names, names
    ),
    st.builds(lambda b: {"op": "create_bucket", "bucket": b, "if_not_exists": True}, paths),
    st.builds(lambda b: {"op": "delete_bucket", "bucket": b}, paths),
    st.builds(lambda b: {"op": "next_sequence", "bucket": b}, paths),
)
commands_st = st.one_of(
    bodies, st.builds(lambda ops: {"op": "batch", "ops": ops}, st.lists(bodies))
)


@given(commands_st, st.one_of(st.none(), st.tuples(names, st.integers(0, 2**64 - 1))))
def test_any_valid_command_round_trips(cmd: dict[str, Any], env: Any) -> None:
    if env is not None:
        cmd = dict(cmd, cid=env[0], seq=env[1], ts=env[1])
    data = commands.encode(cmd)
    assert commands.decode(data) == commands.validate(cmd)


@given(st.binary(max_size=64))
def test_garbage_never_raises_anything_but_command_errors(data: bytes) -> None:
    try:
        commands.decode(data)
    except (MalformedCommandError, UnknownCommandError, UnsupportedVersionError):
        pass


def _encode_validated(cmd: Any) -> bytes:
    """The validating encoder alone (what ``encode`` does when its fast path declines)."""
    c = commands.validate(cmd)
    return msgpack.packb(
        (1, c.get("cid"), c.get("seq"), c.get("ts"), commands._to_body(c)), use_bin_type=True
    )


_odd = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-2, max_value=2**64),
    st.floats(allow_nan=False),
    st.text(max_size=3),
    st.binary(max_size=3),
    st.lists(st.binary(max_size=2), max_size=2),
)
put_maps = st.fixed_dictionaries(
    {
        "op": st.sampled_from(["put", "put", "put", "delete", 1]),
        "bucket": st.one_of(st.text(min_size=1, max_size=4), st.binary(max_size=4), _odd),
        "key": st.one_of(st.text(max_size=4), st.binary(max_size=4), _odd),
        "value": st.one_of(st.text(max_size=4), st.binary(max_size=4), _odd),
    },
    optional={
        "cid": st.one_of(st.text(max_size=3), st.binary(min_size=1, max_size=130), _odd),
        "seq": st.one_of(st.integers(min_value=0, max_value=2**64 - 1), _odd),
        "ts": st.one_of(st.integers(min_value=0, max_value=2**64 - 1), _odd),
        "v": st.one_of(st.just(1), _odd),
        "if_absent": st.booleans(),
        "extra": _odd,
    },
)


_PUT = {"op": "put", "bucket": "b", "key": "k", "value": "v"}


@given(put_maps)
@example({**_PUT, "cid": b"c" * 128, "seq": 2**64 - 1, "ts": 0})
@example({**_PUT, "cid": "c" * 129, "seq": 1})
@example({**_PUT, "cid": b"c" * 129, "seq": 1})
@example({**_PUT, "cid": b"", "seq": 1})
@example({**_PUT, "cid": b"c"})
@example({**_PUT, "seq": 1})
@example({**_PUT, "cid": None})
@example({**_PUT, "cid": None, "seq": None})
@example({**_PUT, "ts": None})
@example({**_PUT, "v": None})
@example({**_PUT, "cid": b"c", "seq": True})
@example({**_PUT, "cid": b"c", "seq": -1})
@example({**_PUT, "ts": -1})
@example({**_PUT, "ts": 1.0})
@example({**_PUT, "v": True})
@example({**_PUT, "v": 2})
@example({**_PUT, "bucket": ["b"]})
@example({**_PUT, "bucket": b""})
@example({**_PUT, "key": bytearray(b"k")})
@example({**_PUT, "if_absent": False})
@example({**_PUT, "if_value": b"x"})
def test_encode_fast_path_is_the_validating_encoder_exactly(cmd: dict[str, Any]) -> None:
    try:
        want: bytes | type[Exception] = _encode_validated(cmd)
    except (MalformedCommandError, UnknownCommandError, UnsupportedVersionError) as err:
        want = type(err)
    if isinstance(want, bytes):
        assert commands.encode(cmd) == want
    else:
        with pytest.raises(want):
            commands.encode(cmd)


def _plain(key: bytes, ts: int | None = None, bucket: bytes = b"a") -> bytes:
    return _raw(1, None, None, ts, [commands.PUT, [bucket], key, b"v" + key])


def _once(key: bytes, cid: bytes = b"c", seq: int = 1, bucket: bytes = b"a") -> bytes:
    return _raw(1, cid, seq, 7, [commands.PUT, [bucket], key, b"v" + key])


def _run_of(datas: list[bytes]) -> tuple[Any, ...] | None:
    """Returns put_run's answer as a plain tuple (None stays None)."""
    run = commands.put_run(datas)
    return None if run is None else tuple(run)


def test_put_run_reads_a_run_of_exactly_once_puts_to_one_bucket() -> None:
    run = [_once(b"k1", seq=1), _once(b"k2", b"d" * 128, 2**64 - 1), _once(b"k1", seq=1)]
    assert _run_of(run) == (
        (b"a",),
        [(b"k1", b"vk1"), (b"k2", b"vk2"), (b"k1", b"vk1")],
        [commands.parse(d) for d in run],
    )
    # the engine, not the decoder, judges keys and bucket names
    empty = _once(b"", bucket=b"")
    assert _run_of([empty]) == ((b"",), [(b"", b"v")], [commands.parse(empty)])
    assert commands.put_run([_once(b"k1"), _once(b"k2", bucket=b"b")]) is None
    # a put encoded less compactly than encode() does (array16 header) is declined at once
    # when it comes first, and parse() still reads it
    wide = b"\xdc\x00\x05" + _once(b"k")[1:]
    assert commands.parse(wide)[4] == (commands.PUT, (b"a",), b"k", b"vk")
    assert commands.put_run([wide]) is None
    assert _run_of([_once(b"k"), wide])[1] == [(b"k", b"vk")] * 2  # type: ignore[index]


@pytest.mark.parametrize(
    "odd",
    [
        _plain(b"k"),  # without (cid, seq): declined next to puts with them (and vice versa)
        _raw(1, b"c", None, None, [commands.PUT, [b"a"], b"k", b"v"]),  # half a pair
        _raw(1, None, 1, None, [commands.PUT, [b"a"], b"k", b"v"]),
        _raw(1, b"", 1, None, [commands.PUT, [b"a"], b"k", b"v"]),
        _raw(1, b"c" * 129, 1, None, [commands.PUT, [b"a"], b"k", b"v"]),
        _raw(1, b"c", -1, None, [commands.PUT, [b"a"], b"k", b"v"]),
        _raw(1, b"c", True, None, [commands.PUT, [b"a"], b"k", b"v"]),
        _raw(1, b"c", 1, -1, [commands.PUT, [b"a"], b"k", b"v"]),
        _raw(1, b"c", 1, None, [commands.PUT, [b"a", b"b"], b"k", b"v"]),  # nested path
        _raw(1, b"c", 1, None, [commands.PUT, {b"a": 1}, b"k", b"v"]),
        _raw(1, b"c", 1, None, [commands.PUT, [b"a"], "k", b"v"]),
        _raw(1, b"c", 1, None, [commands.PUT_IF, [b"a"], b"k", b"v", None]),
        _raw(1, b"c", 1, None, [commands.DELETE, [b"a"], b"k"]),
        _raw(True, b"c", 1, None, [commands.PUT, [b"a"], b"k", b"v"]),
        b"",
        b"\xc1",
        _once(b"k") + b"\x00",  # trailing bytes
        _once(b"k")[:-1],  # truncated
        *(data for data, _ in BAD_LOG),
    ],
)
def test_put_run_declines_a_run_with_anything_else(odd: bytes) -> None:
    runs = [[_once(b"k1"), odd], [odd, _once(b"k1")]]
    if odd != _plain(b"k"):
        runs += [[odd], [_plain(b"k1"), odd], [odd, _plain(b"k1")]]
    for run in runs:
        assert commands.put_run(run) is None
    assert commands.put_run([]) is None


def test_put_run_reads_a_run_of_plain_puts_to_one_bucket() -> None:
    run = [_plain(b"k1"), _plain(b"k2", 2**64 - 1), _plain(b"k1", 0)]
    assert _run_of(run) == (
        (b"a",),
        [(b"k1", b"vk1"), (b"k2", b"vk2"), (b"k1", b"vk1")],
        [commands.parse(d) for d in run],
    )
    assert commands.put_run([_plain(b"k1"), _plain(b"k2", bucket=b"b")]) is None
    assert commands.put_run([_plain(b"k1"), _plain(b"k2", -1)]) is None


_log_datas = st.one_of(
    st.builds(_plain, names, st.none() | st.integers(0, 2**64 - 1), st.sampled_from([b"a", b"b"])),
    st.builds(_once, names, st.sampled_from([b"c", b"d"]), st.integers(0, 3)),
    st.builds(_once, names, st.sampled_from([b"c", b"d"]), st.integers(0, 3), st.just(b"b")),
    st.sampled_from([data for data, _ in BAD_LOG]),
    st.builds(commands.encode, commands_st),
)


@given(st.lists(_log_datas, min_size=1, max_size=6))
def test_put_run_agrees_with_parse(datas: list[bytes]) -> None:
    """put_run answers exactly when parse reads every one as a put without a condition to
    the same one-name path, all with (cid, seq) or all without, and then with what parse
    read."""
    parsed: list[Any] = []
    for data in datas:
        try:
            parsed.append(commands.parse(data))
        except (MalformedCommandError, UnknownCommandError, UnsupportedVersionError):
            parsed.append(None)
    puts = [t for t in parsed if t is not None and t[4][0] == commands.PUT and len(t[4][1]) == 1]
    paths = {t[4][1] for t in puts}
    once = {t[1] is not None for t in puts}
    if len(puts) == len(datas) and len(paths) == 1 and len(once) == 1:
        assert _run_of(datas) == (paths.pop(), [(t[4][2], t[4][3]) for t in puts], puts)
    else:
        assert commands.put_run(datas) is None


@pytest.mark.parametrize(
    "path",
    [
        [b"a"] * (commands.MAX_PATH_DEPTH + 1),
        [b"x" * 100] * 41,  # 41 names, 4100 bytes
        b"y" * (commands.MAX_PATH_BYTES + 1),
    ],
)
def test_a_bucket_path_past_the_limits_is_refused_before_proposing_and_in_the_log(
    path: object,
) -> None:
    with pytest.raises(MalformedCommandError, match="at most 64 names") as err:
        commands.encode({"op": "create_bucket", "bucket": path, "if_not_exists": True})
    assert err.value.details["max_depth"] == commands.MAX_PATH_DEPTH
    with pytest.raises(MalformedCommandError, match="batch op 0"):
        commands.encode({"op": "batch", "ops": [{"op": "delete_bucket", "bucket": path}]})
    names = tuple(path) if isinstance(path, list) else (path,)
    body = [commands.CREATE_BUCKET, names, True]
    logged = msgpack.packb([commands.VERSION, None, None, None, body])
    with pytest.raises(MalformedCommandError, match="at most 64 names"):
        commands.parse(logged)


def test_a_bucket_path_at_the_limits_is_accepted() -> None:
    deep = [b"a"] * commands.MAX_PATH_DEPTH
    wide = [b"x" * 64] * 64  # 4096 bytes
    for path in (deep, wide):
        data = commands.encode({"op": "create_bucket", "bucket": path, "if_not_exists": True})
        assert commands.parse(data)[4][1] == tuple(path)


def test_a_put_over_the_value_limit_is_refused_when_encoded() -> None:
    """Issue 19: a value the apply would refuse never reaches the log (the leader refuses it
    before proposing); at the limit it is encoded, by the fast path and the general one."""
    at = b"v" * commands.MAX_VALUE_BYTES
    over = at + b"v"
    for extra in ({}, {"if_absent": True}):
        assert commands.encode({"op": "put", "bucket": "b", "key": "k", "value": at, **extra})
        with pytest.raises(ValueTooLargeError) as err:
            commands.encode({"op": "put", "bucket": "b", "key": "k", "value": over, **extra})
        assert err.value.details["size"] == len(over)
    ops = [
        {"op": "put", "bucket": "b", "key": "k", "value": b"small"},
        {"op": "put", "bucket": "b", "key": "k2", "value": over},
    ]
    with pytest.raises(ValueTooLargeError) as err:
        commands.encode({"op": "batch", "ops": ops})
    assert err.value.details["index"] == 1
    # the limit is the state machine's
    default = inspect.signature(DB.open).parameters["max_value_size"].default
    assert default == commands.MAX_VALUE_BYTES
