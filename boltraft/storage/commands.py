"""The versioned commands of the replicated state machine and their log encoding.

A command, as a client writes it (the body of a write request) and as ``validate``/``decode``
return it, is a map. Its envelope (added by the server before proposing):

    "v":   1                  the command version (``validate`` and ``encode`` add it)
    "cid": bytes | str        client id, 1..128 bytes (str is UTF-8 encoded); optional
    "seq": int                the client's sequence number, 0 <= seq < 2**64; present exactly
                              when "cid" is: the pair makes the command exactly-once
    "ts":  int                milliseconds, stamped by the leader (dedup expiry); optional

and its body, one of:

    {"op": "put", "bucket": path, "key": k, "value": v, ["if_value": v | "if_absent": True]}
    {"op": "delete", "bucket": path, "key": k, ["if_value": v]}
    {"op": "create_bucket", "bucket": path, ["if_not_exists": bool]}
    {"op": "delete_bucket", "bucket": path}
    {"op": "next_sequence", "bucket": path}
    {"op": "batch", "ops": [body, ...]}      atomic; bodies only (no envelope, no nested batch)
    {"op": "keys", "name": n, "kind": "node" | "client", "key": k, "role": r}
                                             the CURVE allow-list entry of party ``n``
                                             (``key`` Z85, or empty: revoked); never in a batch

(``if_not_exists`` also creates missing ancestors, like ``mkdir -p``; without it the parent
must exist. ``if_absent``/``if_value`` make put and delete conditional.)

``path`` is a bucket name or a non-empty list of at most ``MAX_PATH_DEPTH`` (64) names
totalling at most ``MAX_PATH_BYTES`` (4096) bytes, checked when a command is encoded (the
leader refuses it before proposing) and again when the log is read. A put's value is at most
``MAX_VALUE_BYTES``, checked when a command is encoded only (ValueTooLargeError, as the
apply would answer; an entry already in a log is left to the apply); names, keys and values
are bytes, and str is accepted and UTF-8 encoded. Validation is strict about structure and
types (unknown fields, wrong types, conflicting conditions are refused); what only the
engine can judge (an empty key, a key too long for its bucket, an invalid bucket name) is
left to the engine, which answers with its own typed error when the command is applied.

The normalized map has only the fields present (``if_absent: False`` and
``if_not_exists: False`` are dropped), the path as a tuple of bytes, keys/values/cid as bytes.

LOG ENCODING (version 1). The log carries a compact positional form, built only by ``encode``
and read by every replica, so the applier decodes without per-field map work::

    [1, cid | nil, seq | nil, ts | nil, body]
    body: [PUT, path, key, value]            [PUT_IF, path, key, value, expect | nil]
          [DELETE, path, key]                [DELETE_IF, path, key, expect]
          [CREATE_BUCKET, path, if_not_exists]
          [DELETE_BUCKET, path]              [NEXT_SEQUENCE, path]
          [BATCH, [body, ...]]                [KEYS, name, kind, key, role]
    path: [bytes, ...]   (PUT_IF with expect nil means "must be absent")

The first element is the version: a later version may change everything after it.

Errors (all raised before anything else happens): MalformedCommandError (undecodable bytes,
not a map/array of the right shape, missing or unknown field, wrong type, conflicting
conditions), UnsupportedVersionError (a version this code does not know), UnknownCommandError
(an op or opcode that names no command). Errors inside a batch carry ``details["index"]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import msgpack

from boltraft.errors import (
    MalformedCommandError,
    UnknownCommandError,
    UnsupportedVersionError,
    ValueTooLargeError,
)
from boltraft.packing import pack
from boltraft.storage.keys import MAX_VALUE_SIZE, check_value

VERSION = 1
SUPPORTED_VERSIONS = (1,)
MAX_CID_BYTES = 128  # keeps the dedup key well under LMDB's 511-byte key limit
MAX_UINT = (1 << 64) - 1
MAX_VALUE_BYTES = MAX_VALUE_SIZE
"""The largest value a put may store: the state machine's. ``encode`` refuses a put over
it, which the apply would refuse after the entry had gone through the log and to every
replica."""
MAX_PATH_DEPTH = 64
"""A bucket path names at most this many buckets (nesting levels)."""
MAX_PATH_BYTES = 4096
"""The names of a bucket path total at most this many bytes."""

# Opcodes of log version 1 (stable: they are in every log written so far).
PUT, PUT_IF, DELETE, DELETE_IF, CREATE_BUCKET, DELETE_BUCKET, NEXT_SEQUENCE, BATCH = range(8)
KEYS = 8
# Body arity per opcode, the opcode included (BATCH's sub-bodies are checked one by one).
_ARITY = (4, 5, 3, 4, 3, 2, 2, 2, 5)
KEY_KINDS = (b"node", b"client")
KEY_ROLES = (b"read", b"write", b"admin", b"node")
KEYS_SET = "keys_set"  # the result of an applied KEYS command

Command = dict[str, Any]
Body = tuple[Any, ...]
Parsed = tuple[int, bytes | None, int | None, int | None, Body]  # what parse() returns


def _malformed(message: str, **details: Any) -> MalformedCommandError:
    return MalformedCommandError(message, **details)


# --- the map form ----------------------------------------------------------------------------
def _as_bytes(value: Any, field: str) -> bytes:
    t = type(value)
    if t is bytes:
        return value
    if t is str:
        return value.encode()
    if t is bytearray or t is memoryview:
        return bytes(value)
    raise _malformed(f"field {field!r} must be bytes or str, not {t.__name__}", field=field)


def _as_path(value: Any, field: str = "bucket") -> tuple[bytes, ...]:
    t = type(value)
    if t is list or t is tuple:
        if not value:
            raise _malformed(f"field {field!r} must name at least one bucket", field=field)
        if len(value) > MAX_PATH_DEPTH:
            raise _path_too_long(field, len(value), 0)
        path = tuple([_as_bytes(name, field) for name in value])
        size = sum(map(len, path))
        if size > MAX_PATH_BYTES:
            raise _path_too_long(field, len(path), size)
        return path
    if t is bytes or t is str:
        name = _as_bytes(value, field)
        if len(name) > MAX_PATH_BYTES:
            raise _path_too_long(field, 1, len(name))
        return (name,)
    raise _malformed(f"field {field!r} must be a bucket name or a list of names", field=field)


def _path_too_long(field: str, depth: int, size: int) -> MalformedCommandError:
    """The error of a bucket path over ``MAX_PATH_DEPTH`` names or ``MAX_PATH_BYTES``
    (``size`` 0: not measured, the names were too many)."""
    return _malformed(
        f"field {field!r}: a bucket path has at most {MAX_PATH_DEPTH} names of at most "
        f"{MAX_PATH_BYTES} bytes in all",
        field=field,
        depth=depth,
        size=size,
        max_depth=MAX_PATH_DEPTH,
        max_bytes=MAX_PATH_BYTES,
    )


def _as_bool(value: Any, field: str) -> bool:
    if type(value) is not bool:
        raise _malformed(f"field {field!r} must be a boolean", field=field)
    return value


def _as_uint(value: Any, field: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_UINT:
        raise _malformed(f"field {field!r} must be an integer in [0, 2**64)", field=field)
    return value


def _as_cid(value: Any, field: str = "cid") -> bytes:
    cid = _as_bytes(value, field)
    if not 0 < len(cid) <= MAX_CID_BYTES:
        raise _malformed(f"field 'cid' must be 1..{MAX_CID_BYTES} bytes", field=field)
    return cid


_FIELDS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    # op -> (required fields, every allowed body field with its normalizer)
    "put": (
        ("bucket", "key", "value"),
        {
            "bucket": _as_path,
            "key": _as_bytes,
            "value": _as_bytes,
            "if_value": _as_bytes,
            "if_absent": _as_bool,
        },
    ),
    "delete": (
        ("bucket", "key"),
        {"bucket": _as_path, "key": _as_bytes, "if_value": _as_bytes},
    ),
    "create_bucket": (("bucket",), {"bucket": _as_path, "if_not_exists": _as_bool}),
    "delete_bucket": (("bucket",), {"bucket": _as_path}),
    "next_sequence": (("bucket",), {"bucket": _as_path}),
    "batch": (("ops",), {"ops": None}),
    "keys": (
        ("name", "kind", "key", "role"),
        {"name": _as_bytes, "kind": _as_bytes, "key": _as_bytes, "role": _as_bytes},
    ),
}
_ENVELOPE: dict[str, Callable[[Any, str], bytes | int]] = {
    "cid": _as_cid,
    "seq": _as_uint,
    "ts": _as_uint,
}


def _body_map(cmd: Any, top: bool) -> Command:
    """Returns the normalized body (plus envelope fields when ``top``) of map ``cmd``."""
    if type(cmd) is not dict:
        raise _malformed(f"a command must be a map, not {type(cmd).__name__}")
    op = cmd.get("op")
    if type(op) is not str:
        raise _malformed("field 'op' is missing or not a string", field="op")
    spec = _FIELDS.get(op)
    if spec is None:
        raise UnknownCommandError(f"unknown command {op!r}", op=op)
    required, allowed = spec
    if op == "batch" and not top:
        raise _malformed("a batch cannot contain a batch", field="op")
    if op == "keys" and not top:
        raise _malformed("a batch cannot contain a keys command", field="op")
    out: Command = {"op": op}
    for field, value in cmd.items():
        if field == "op" or (top and field == "v"):
            continue
        if field in allowed:
            norm = allowed[field]
            out[field] = _batch_ops(value) if norm is None else norm(value, field)
        elif field in _ENVELOPE and top:
            out[field] = _ENVELOPE[field](value, field)
        elif field in _ENVELOPE or field == "v":
            raise _malformed(f"field {field!r} is not allowed inside a batch", field=field)
        else:
            raise _malformed(f"unknown field {field!r} for {op!r}", field=field, op=op)
    missing = [f for f in required if f not in out]
    if missing:
        raise _malformed(f"{op!r} is missing field(s) {missing}", missing=missing, op=op)
    if out.get("if_absent") is False:
        del out["if_absent"]
    if out.get("if_not_exists") is False:
        del out["if_not_exists"]
    if "if_absent" in out and "if_value" in out:
        raise _malformed("'if_value' and 'if_absent' exclude each other", field="if_absent")
    if op == "keys":
        _check_keys(out["name"], out["kind"], out["key"], out["role"])
    return out


def _check_keys(name: bytes, kind: bytes, key: bytes, role: bytes) -> None:
    """Raises MalformedCommandError unless the fields make an allow-list entry: a name of
    1..64 bytes, a known kind and role (``node`` exactly for a node's key), a key of 40
    bytes (Z85) or none (revoked: whatever kind the name had)."""
    if not 0 < len(name) <= 64:
        raise _malformed("a keys 'name' has 1..64 bytes", field="name")
    if kind not in KEY_KINDS:
        raise _malformed("a keys 'kind' is node or client", field="kind")
    if len(key) not in (0, 40):
        raise _malformed("a keys 'key' is a Z85 CURVE key (40 characters) or empty", field="key")
    if role not in KEY_ROLES or (key and (role == b"node") != (kind == b"node")):
        raise _malformed("a keys 'role' is read, write or admin (node for a node)", field="role")


def _in_batch(err: MalformedCommandError | UnknownCommandError, i: int) -> None:
    err.details.setdefault("index", i)
    err.message = f"batch op {i}: {err.message}"
    err.args = (err.message,)


def _batch_ops(ops: Any) -> list[Command]:
    if type(ops) is not list and type(ops) is not tuple:
        raise _malformed("field 'ops' must be a list of commands", field="ops")
    out = []
    for i, sub in enumerate(ops):
        try:
            out.append(_body_map(sub, False))
        except (MalformedCommandError, UnknownCommandError) as err:
            _in_batch(err, i)
            raise
    return out


def _check_version(v: Any) -> None:
    if type(v) is not int:
        raise _malformed("the command version must be an integer", field="v")
    if v not in SUPPORTED_VERSIONS:
        raise UnsupportedVersionError(
            f"command version {v} is not supported", version=v, supported=list(SUPPORTED_VERSIONS)
        )


def validate(cmd: Any) -> Command:
    """Returns the normalized form of the command map ``cmd`` (see the module docstring).

    A missing "v" is taken as the current version. Raises MalformedCommandError,
    UnsupportedVersionError or UnknownCommandError; never changes ``cmd``.
    """
    if type(cmd) is not dict:
        raise _malformed(f"a command must be a map, not {type(cmd).__name__}")
    v = cmd.get("v", VERSION)
    _check_version(v)
    out = _body_map(cmd, True)
    if ("cid" in out) != ("seq" in out):
        raise _malformed("'cid' and 'seq' go together", field="cid" if "seq" in out else "seq")
    out["v"] = v
    return out


# --- map <-> positional body -----------------------------------------------------------------
def _to_body(c: Command) -> Body:
    op = c["op"]
    if op == "put":
        if "if_value" in c:
            return (PUT_IF, c["bucket"], c["key"], c["value"], c["if_value"])
        if c.get("if_absent"):
            return (PUT_IF, c["bucket"], c["key"], c["value"], None)
        return (PUT, c["bucket"], c["key"], c["value"])
    if op == "delete":
        if "if_value" in c:
            return (DELETE_IF, c["bucket"], c["key"], c["if_value"])
        return (DELETE, c["bucket"], c["key"])
    if op == "create_bucket":
        return (CREATE_BUCKET, c["bucket"], bool(c.get("if_not_exists")))
    if op == "delete_bucket":
        return (DELETE_BUCKET, c["bucket"])
    if op == "next_sequence":
        return (NEXT_SEQUENCE, c["bucket"])
    if op == "keys":
        return (KEYS, c["name"], c["kind"], c["key"], c["role"])
    return (BATCH, tuple([_to_body(sub) for sub in c["ops"]]))


def body_to_map(body: Body) -> Command:
    """Returns the normalized map form of a validated positional ``body``."""
    code = body[0]
    if code == PUT:
        return {"op": "put", "bucket": body[1], "key": body[2], "value": body[3]}
    if code == PUT_IF:
        cond = {"if_absent": True} if body[4] is None else {"if_value": body[4]}
        return {"op": "put", "bucket": body[1], "key": body[2], "value": body[3], **cond}
    if code == DELETE:
        return {"op": "delete", "bucket": body[1], "key": body[2]}
    if code == DELETE_IF:
        return {"op": "delete", "bucket": body[1], "key": body[2], "if_value": body[3]}
    if code == CREATE_BUCKET:
        out: Command = {"op": "create_bucket", "bucket": body[1]}
        if body[2]:
            out["if_not_exists"] = True
        return out
    if code == DELETE_BUCKET:
        return {"op": "delete_bucket", "bucket": body[1]}
    if code == NEXT_SEQUENCE:
        return {"op": "next_sequence", "bucket": body[1]}
    if code == KEYS:
        return {"op": "keys", "name": body[1], "kind": body[2], "key": body[3], "role": body[4]}
    return {"op": "batch", "ops": [body_to_map(sub) for sub in body[1]]}


_PLAIN_PUT_FIELDS = frozenset(("op", "bucket", "key", "value", "cid", "seq", "ts", "v"))
_STR_OR_BYTES = (str, bytes)


def _plain_put(cmd: Any) -> bytes | None:
    """Returns the log encoding of ``cmd`` when it is a plain put (no condition) to a
    one-name bucket whose every field is well-typed, byte-identical to what the validating
    path makes; None for anything else (which that path then judges)."""
    if type(cmd) is not dict or cmd.get("op") != "put" or not cmd.keys() <= _PLAIN_PUT_FIELDS:
        return None
    bucket, key, value = cmd.get("bucket"), cmd.get("key"), cmd.get("value")
    if (
        type(bucket) not in _STR_OR_BYTES
        or type(key) not in _STR_OR_BYTES
        or type(value) not in _STR_OR_BYTES
    ):
        return None
    v, cid, seq, ts = cmd.get("v", VERSION), cmd.get("cid"), cmd.get("seq"), cmd.get("ts")
    if type(v) is not int or v != VERSION:
        return None
    if "cid" in cmd or "seq" in cmd:  # present means valid: an explicit nil is refused
        if type(cid) is str:
            cid = cid.encode()
        if type(cid) is not bytes or not 0 < len(cid) <= MAX_CID_BYTES:
            return None
        if type(seq) is not int or not 0 <= seq <= MAX_UINT:
            return None
    if "ts" in cmd and (type(ts) is not int or not 0 <= ts <= MAX_UINT):
        return None
    if type(bucket) is str:
        bucket = bucket.encode()
    if type(key) is str:
        key = key.encode()
    if type(value) is str:
        value = value.encode()
    if type(value) is not bytes or len(value) > MAX_VALUE_BYTES:
        return None  # the validating path refuses it
    return pack((VERSION, cid, seq, ts, (PUT, (bucket,), key, value)))


def encode(cmd: Command) -> bytes:
    """Returns the log encoding of ``cmd`` after validating it. Raises like ``validate``,
    and ValueTooLargeError for a put whose value is over ``MAX_VALUE_BYTES``."""
    fast = _plain_put(cmd)  # the common command, checked field by field without a rebuild
    if fast is not None:
        return fast
    c = validate(cmd)
    if c["op"] == "put":
        _check_value_size(c["value"], None)
    elif c["op"] == "batch":
        for i, sub in enumerate(c["ops"]):
            if sub["op"] == "put":
                _check_value_size(sub["value"], i)
    return pack((VERSION, c.get("cid"), c.get("seq"), c.get("ts"), _to_body(c)))


def _check_value_size(value: bytes, index: int | None) -> None:
    """Raises the engine's ValueTooLargeError (with the op's ``index`` in a batch) for a
    put's value over ``MAX_VALUE_BYTES``."""
    try:
        check_value(value, MAX_VALUE_BYTES)
    except ValueTooLargeError as err:
        if index is not None:
            err.details["index"] = index
        raise


# --- the log form ----------------------------------------------------------------------------
def _check_path(path: Any) -> None:
    if type(path) is not tuple or not path:
        raise _malformed("a bucket path must be a non-empty array of names", field="bucket")
    if len(path) > MAX_PATH_DEPTH:
        raise _path_too_long("bucket", len(path), 0)
    size = 0
    for name in path:
        if type(name) is not bytes:
            raise _malformed("bucket names must be bytes in the log", field="bucket")
        size += len(name)
    if size > MAX_PATH_BYTES:
        raise _path_too_long("bucket", len(path), size)


def _check_body(body: Any, top: bool) -> None:
    """Checks that ``body`` is a well-formed positional body; raises MalformedCommandError or
    UnknownCommandError otherwise."""
    if type(body) is not tuple or not body:
        raise _malformed("a command body must be a non-empty array")
    code = body[0]
    if type(code) is not int:
        raise _malformed("an opcode must be an integer", field="op")
    if not 0 <= code < len(_ARITY):
        raise UnknownCommandError(f"unknown opcode {code}", op=code)
    if len(body) != _ARITY[code]:
        raise _malformed(f"opcode {code} takes {_ARITY[code] - 1} fields", op=code)
    if code == BATCH:
        if not top:
            raise _malformed("a batch cannot contain a batch", field="op")
        subs = body[1]
        if type(subs) is not tuple:
            raise _malformed("a batch needs an array of bodies", field="ops")
        for i, sub in enumerate(subs):
            try:
                _check_body(sub, False)
            except (MalformedCommandError, UnknownCommandError) as err:
                _in_batch(err, i)
                raise
        return
    if code == KEYS:
        if not top:
            raise _malformed("a batch cannot contain a keys command", field="op")
        if any(type(f) is not bytes for f in body[1:]):
            raise _malformed("the fields of a keys command are bytes", op=code)
        _check_keys(*body[1:])
        return
    _check_path(body[1])
    if code == CREATE_BUCKET:
        if type(body[2]) is not bool:
            raise _malformed("field 'if_not_exists' must be a boolean", field="if_not_exists")
        return
    for i in range(2, len(body)):
        f = body[i]
        if type(f) is not bytes and not (f is None and code == PUT_IF and i == 4):
            raise _malformed(f"field {i} of opcode {code} must be bytes", op=code)


def parse(data: bytes) -> Parsed:
    """Returns ``(version, cid, seq, ts, body)``: the decoded, validated log entry ``data``
    (the applier's form). Invariant: ``cid`` and ``seq`` are both None or both set.

    Raises MalformedCommandError, UnsupportedVersionError or UnknownCommandError.
    """
    try:
        t = msgpack.unpackb(data, use_list=False)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise _malformed(f"undecodable command: {exc}") from None
    # The fast path: a plain put on a one-name path, the overwhelmingly common command, its
    # shape checked by one unpacking and its fields by type (bool is not int here).
    if type(t) is tuple:
        try:
            v, cid, seq, ts, (op, path, key, value) = t
            (name,) = path
        except (TypeError, ValueError):
            pass
        else:
            if (
                op == PUT
                and v == VERSION
                and type(op) is int
                and type(v) is int
                and type(key) is bytes
                and type(value) is bytes
                and type(path) is tuple  # a one-key map unpacks like a one-name path
                and type(name) is bytes
                and (ts is None or (type(ts) is int and ts >= 0))
                and (
                    (cid is None and seq is None)
                    or (
                        type(cid) is bytes
                        and 0 < len(cid) <= MAX_CID_BYTES
                        and type(seq) is int
                        and seq >= 0
                    )
                )
            ):
                return t
    if type(t) is not tuple or len(t) != 5 or t[0] != VERSION or type(t[0]) is not int:
        if type(t) is not tuple or not t:
            raise _malformed("a log command must be a non-empty array")
        _check_version(t[0])
        raise _malformed("a version 1 log command has 5 elements")
    # msgpack integers are within [-2**63, 2**64), so only the sign needs checking.
    _, cid, seq, ts, body = t
    if cid is not None or seq is not None:
        if type(cid) is not bytes or not 0 < len(cid) <= MAX_CID_BYTES:
            raise _malformed(f"'cid' must be 1..{MAX_CID_BYTES} bytes in the log", field="cid")
        if type(seq) is not int or seq < 0:
            _as_uint(seq, "seq")
    if ts is not None and (type(ts) is not int or ts < 0):
        _as_uint(ts, "ts")
    _check_body(body, True)
    return t


_ONCE_HEAD = b"\x95\x01\xc4"  # [1, bin8 ...: version 1 with a cid (at most 128 bytes)
_PLAIN_HEAD = b"\x95\x01\xc0\xc0"  # [1, nil, nil ...: version 1 without (cid, seq)


class PutRun(NamedTuple):
    """A run of log entries that are all puts to one one-name bucket path, either all
    exactly-once (each with its (cid, seq)) or all plain (none with one)."""

    path: tuple[bytes]
    pairs: list[tuple[bytes, bytes]]  # (key, value) of each put, in order
    rows: list[Parsed]  # each entry as ``parse`` returns it


def put_run(datas: list[bytes]) -> PutRun | None:
    """Returns the PutRun of ``datas`` (at least one) when every one decodes to a put without
    a condition to one and the same one-name bucket path, all with (cid, seq) or all without,
    exactly as ``parse`` would accept it; None otherwise (then ``parse`` judges each one).
    Raises nothing.

    The applier's batch path for what clients send most: one decoding comprehension and one
    checking comprehension for the whole run, no per-entry call. A run whose first entry
    does not start like the encoding ``encode`` makes of such a put is declined before any
    decoding.
    """
    if not datas:
        return None
    first = datas[0]
    once = first.startswith(_ONCE_HEAD)
    if not once and not first.startswith(_PLAIN_HEAD):
        return None
    unpackb = msgpack.unpackb
    try:
        rows = [unpackb(d, use_list=False) for d in datas]
        path = rows[0][4][1]
    except Exception:  # undecodable, or not shaped like a put: parse() names the problem
        return None
    if type(path) is not tuple or len(path) != 1 or type(path[0]) is not bytes:
        return None
    # ``b[1] == path`` also checks b[1]'s type: only a tuple equals a tuple.
    pairs = [
        (b[2], b[3])
        for t in rows
        if type(t) is tuple
        and len(t) == 5
        and t[0] == VERSION
        and type(t[0]) is int
        and (
            (
                type(t[1]) is bytes
                and 0 < len(t[1]) <= MAX_CID_BYTES
                and type(t[2]) is int
                and t[2] >= 0
            )
            if once
            else (t[1] is None and t[2] is None)
        )
        and (t[3] is None or (type(t[3]) is int and t[3] >= 0))
        for b in (t[4],)
        if type(b) is tuple
        and len(b) == 4
        and b[0] == PUT
        and type(b[0]) is int
        and b[1] == path
        and type(b[2]) is bytes
        and type(b[3]) is bytes
    ]
    if len(pairs) != len(rows):
        return None
    return PutRun(path, pairs, rows)


def decode(data: bytes) -> Command:
    """Returns the normalized command map encoded in ``data`` (the inverse of ``encode``).

    Raises like ``parse``.
    """
    _, cid, seq, ts, body = parse(data)
    out = body_to_map(body)
    out["v"] = VERSION
    if cid is not None:
        out["cid"] = cid
        out["seq"] = seq
    if ts is not None:
        out["ts"] = ts
    return out
