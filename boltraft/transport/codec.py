"""The wire codec: versioned msgpack frames, strict decoding that only raises ProtocolError.

Every ZeroMQ message boltraft sends is ONE frame (after a ROUTER's routing-id frame): a msgpack
array ``[version, kind, *fields]`` with ``version == 1``. Built-in kinds:

    [1, "raft", [msg, ...]]                        peer -> peer: a batch of Raft messages
    [1, "req",  request_id, body]                  client -> node: body is a map with "op"
    [1, "resp", request_id, {"ok": true, "result": r}]
    [1, "resp", request_id, {"ok": false, "error": {"code", "message", "details"}}]

Other kinds (the server's "fwd", "snap") are added with ``register_kind(kind, decoder)``.

A Raft message travels as a fixed 13-element array, no per-field map::

    [type, to, frm, term, log_term, index, entries, commit, reject, reject_hint,
     hint_term, context, snapshot]
    entries:  [[term, index, type, data], ...]      (an Entry NamedTuple packs as this array)
    snapshot: nil | [index, term, [voter, ...], [learner, ...], {id: addr}]

Terms are at most ``MAX_TERM`` (2^62) and log indexes at most ``MAX_INDEX`` (2^63 - 1, the
log's signed 64 bits): a message out of range is malformed.

Decoding raises only ProtocolError subclasses: FrameTooLargeError (over ``max_frame_size``,
checked before any parsing), UnsupportedProtocolError (an integer version other than 1, or an
unknown kind), BadRequestError (a well-formed "req" frame whose body is not a map with a string
"op"; ``details["request_id"]`` lets the server answer it), MalformedFrameError (everything
else: undecodable bytes, trailing bytes, wrong shapes or types, msgpack extension types).
Errors on a frame whose request id could be read carry ``details["request_id"]``.

All functions are pure and thread-safe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import msgpack

from boltraft.errors import (
    BadRequestError,
    BoltraftError,
    FrameTooLargeError,
    MalformedFrameError,
    ProtocolError,
    UnsupportedProtocolError,
)
from boltraft.packing import pack, pack_bulk
from boltraft.raft.types import (
    MAX_INDEX,
    MAX_TERM,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    SnapshotMeta,
)

PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME_SIZE = 16 << 20  # bytes; configurable per transport / client
MAX_UINT = (1 << 64) - 1
# Nesting of arrays and maps, the value itself counting as one: a frame's fields at most
# MAX_DEPTH deep, a request body at most MAX_BODY_DEPTH (so that a body a follower forwards
# inside a fwd frame, three levels down, still fits). Checked iteratively, never by recursion.
MAX_DEPTH = 32
MAX_BODY_DEPTH = 24

KIND_RAFT = "raft"
KIND_REQ = "req"
KIND_RESP = "resp"

_MESSAGE_FIELDS = 13
_MSG_TYPES: dict[int, MessageType] = {int(t): t for t in MessageType}
_ENTRY_TYPES: dict[int, EntryType] = {int(t): t for t in EntryType}
_PLAIN_SCALARS = frozenset((type(None), bool, int, float, str, bytes))


class Frame(NamedTuple):
    """A decoded frame: ``kind`` and its payload (list[Message] for "raft", Request for "req",
    Response for "resp", whatever the registered decoder returns for other kinds)."""

    kind: str
    payload: Any


class Request(NamedTuple):
    """A client request. Invariant: ``body`` is a map with a str ``"op"``; ids are uint64."""

    request_id: int
    body: dict[str, Any]


class Response(NamedTuple):
    """A reply. Invariant: ``ok`` implies ``error is None``; not ``ok`` implies
    ``result is None`` and ``error`` is set."""

    request_id: int
    ok: bool
    result: Any
    error: BoltraftError | None


FieldsDecoder = Callable[[list[Any]], Any]
_KINDS: dict[str, tuple[FieldsDecoder, bool]] = {}  # kind -> (decoder, checks plainness)


# --- encoding --------------------------------------------------------------------------------
def _snapshot_fields(s: SnapshotMeta) -> list[Any]:
    cs = s.conf_state
    return [s.index, s.term, list(cs.voters), list(cs.learners), dict(cs.addrs)]


def encode_messages(msgs: Iterable[Message]) -> list[list[Any]]:
    """Returns the msgpack-ready arrays of ``msgs`` (see the module docstring), in order."""
    out = []
    for m in msgs:
        ents = m.entries
        if type(ents) is not list and type(ents) is not tuple:
            ents = list(ents)
        snap = m.snapshot
        out.append(
            [
                int(m.type),
                m.to,
                m.frm,
                m.term,
                m.log_term,
                m.index,
                ents,
                m.commit,
                m.reject,
                m.reject_hint,
                m.hint_term,
                m.context,
                None if snap is None else _snapshot_fields(snap),
            ]
        )
    return out


def encode_frame(kind: str, *fields: Any) -> bytes:
    """Returns the frame ``[1, kind, *fields]`` packed with msgpack.

    Raises MalformedFrameError when a field is not msgpack-encodable (a programming error)."""
    try:
        return pack([PROTOCOL_VERSION, kind, *fields])
    except (TypeError, ValueError, OverflowError) as exc:
        raise MalformedFrameError(f"cannot encode a {kind!r} frame: {exc}", kind=kind) from None


def encode_raft(msgs: Iterable[Message]) -> bytes:
    """Returns one "raft" frame carrying every message of ``msgs`` (possibly empty), packed
    by ``pack_bulk`` (it may carry a follower's whole window of entries)."""
    try:
        return pack_bulk([PROTOCOL_VERSION, KIND_RAFT, encode_messages(msgs)])
    except (TypeError, ValueError, OverflowError) as exc:
        raise MalformedFrameError(f"cannot encode a 'raft' frame: {exc}", kind=KIND_RAFT) from None


def encode_request(request_id: int, body: dict[str, Any]) -> bytes:
    """Returns a "req" frame. Raises MalformedFrameError if ``body`` is not encodable."""
    return encode_frame(KIND_REQ, request_id, body)


def encode_result(request_id: int, result: Any) -> bytes:
    """Returns a successful "resp" frame carrying ``result``."""
    return encode_frame(KIND_RESP, request_id, {"ok": True, "result": result})


def encode_error(request_id: int, error: BoltraftError) -> bytes:
    """Returns a failed "resp" frame carrying ``error.to_wire()``.

    Error details that msgpack cannot encode are replaced by their ``repr``."""
    wire = error.to_wire()
    try:
        return encode_frame(KIND_RESP, request_id, {"ok": False, "error": wire})
    except MalformedFrameError:
        wire["details"] = {str(k): repr(v) for k, v in wire["details"].items()}
        return encode_frame(KIND_RESP, request_id, {"ok": False, "error": wire})


# --- decoding --------------------------------------------------------------------------------
def _bad(message: str, **details: Any) -> MalformedFrameError:
    return MalformedFrameError(message, **details)


def check_plain(obj: Any, what: str = "value", max_depth: int = MAX_DEPTH) -> None:
    """Checks that ``obj`` holds only nil/bool/int/float/str/bytes/list/map values, nested
    at most ``max_depth`` arrays and maps deep (``obj`` itself counting as one).

    Raises MalformedFrameError on anything else (msgpack extension types, timestamps,
    deeper nesting)."""
    t = type(obj)
    if t is dict:
        flat = obj.values()
    elif t is list:
        flat = obj
    elif t in _PLAIN_SCALARS:
        return
    else:
        raise _bad(f"{what} holds an unsupported msgpack type ({t.__name__})")
    scalars = _PLAIN_SCALARS
    for v in flat:  # the common case, a flat request body or field list: no stack
        if type(v) not in scalars:
            break
    else:
        return
    stack: list[tuple[Any, int]] = [(obj, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        o, depth = pop()
        if depth > max_depth:
            raise _bad(f"{what} nests arrays and maps more than {max_depth} deep")
        for v in o if type(o) is list else o.values():
            t = type(v)
            if t is list or t is dict:
                push((v, depth + 1))
            elif t not in scalars:
                raise _bad(f"{what} holds an unsupported msgpack type ({t.__name__})")


def _uint(value: Any, what: str, limit: int = MAX_UINT) -> int:
    if type(value) is not int or not 0 <= value <= limit:
        raise _bad(f"{what} must be an integer in 0..{limit}")
    return value


def _entries(raw: Any) -> list[Entry]:
    if type(raw) is not list:
        raise _bad("message entries must be an array")
    out: list[Entry] = []
    append = out.append
    for e in raw:
        if type(e) is not list or len(e) != 4:
            raise _bad("an entry must be an array [term, index, type, data]")
        term, index, etype, data = e
        if (
            type(term) is not int
            or type(index) is not int
            or type(etype) is not int
            or type(data) is not bytes
            or not (0 < term <= MAX_TERM and 0 < index <= MAX_INDEX)
            or etype not in _ENTRY_TYPES
        ):
            raise _bad("an entry has a field of the wrong type or range")
        append(Entry(term, index, _ENTRY_TYPES[etype], data))
    return out


def _str_list(raw: Any, what: str) -> tuple[str, ...]:
    if type(raw) is not list or any(type(x) is not str for x in raw):
        raise _bad(f"{what} must be an array of strings")
    return tuple(raw)


def _snapshot(raw: Any) -> SnapshotMeta | None:
    if raw is None:
        return None
    if type(raw) is not list or len(raw) != 5:
        raise _bad("a snapshot must be nil or [index, term, voters, learners, addrs]")
    index, term, voters, learners, addrs = raw
    if type(addrs) is not dict or any(
        type(k) is not str or type(v) is not str for k, v in addrs.items()
    ):
        raise _bad("snapshot addrs must be a map of strings")
    conf = ConfState(_str_list(voters, "voters"), _str_list(learners, "learners"), addrs)
    return SnapshotMeta(
        _uint(index, "snapshot index", MAX_INDEX), _uint(term, "snapshot term", MAX_TERM), conf
    )


def _message(raw: Any) -> Message:
    if type(raw) is not list or len(raw) != _MESSAGE_FIELDS:
        raise _bad(f"a Raft message must be an array of {_MESSAGE_FIELDS} fields")
    (t, to, frm, term, log_term, index, ents, commit, reject, hint, hint_term, ctx, snap) = raw
    mtype = _MSG_TYPES.get(t) if type(t) is int else None
    if mtype is None:
        raise _bad(f"unknown Raft message type {t!r}")
    if type(to) is not str or type(frm) is not str:
        raise _bad("message 'to' and 'frm' must be strings")
    if type(reject) is not bool or type(ctx) is not bytes:
        raise _bad("message 'reject' must be a boolean and 'context' bytes")
    return Message(
        type=mtype,
        to=to,
        frm=frm,
        term=_uint(term, "term", MAX_TERM),
        log_term=_uint(log_term, "log_term", MAX_TERM),
        index=_uint(index, "index", MAX_INDEX),
        entries=_entries(ents),
        commit=_uint(commit, "commit", MAX_INDEX),
        reject=reject,
        reject_hint=_uint(hint, "reject_hint", MAX_INDEX),
        hint_term=_uint(hint_term, "hint_term", MAX_TERM),
        context=ctx,
        snapshot=_snapshot(snap),
    )


def decode_messages(raw: Any) -> list[Message]:
    """Returns the Messages of an ``encode_messages`` array (already unpacked by msgpack).

    Raises MalformedFrameError on any wrong shape, type or range."""
    if type(raw) is not list:
        raise _bad("a Raft batch must be an array of messages")
    return [_message(m) for m in raw]


def _decode_raft(fields: list[Any]) -> list[Message]:
    if len(fields) != 1:
        raise _bad("a raft frame has exactly one field")
    return decode_messages(fields[0])


def _decode_req(fields: list[Any]) -> Request:
    if len(fields) != 2:
        raise _bad("a req frame has exactly two fields")
    rid = _uint(fields[0], "request_id")
    body = fields[1]
    try:
        if type(body) is not dict or type(body.get("op")) is not str:
            raise BadRequestError("a request body must be a map with a string 'op'")
        check_plain(body, "the request body", MAX_BODY_DEPTH)
    except ProtocolError as err:
        err.details["request_id"] = rid
        raise
    return Request(rid, body)


def _decode_resp(fields: list[Any]) -> Response:
    if len(fields) != 2:
        raise _bad("a resp frame has exactly two fields")
    rid = _uint(fields[0], "request_id")
    reply = fields[1]
    ok = reply.get("ok") if type(reply) is dict else None
    if type(ok) is not bool:
        raise _bad("a response must be a map with a boolean 'ok'", request_id=rid)
    if ok:
        result = reply.get("result")
        check_plain(result, "the result")
        return Response(rid, True, result, None)
    err = reply.get("error")
    if type(err) is not dict or type(err.get("code")) is not str:
        raise _bad("a failed response needs an error map with a string 'code'", request_id=rid)
    check_plain(err, "the error")
    return Response(rid, False, None, BoltraftError.from_wire(err))


def register_kind(kind: str, decoder: FieldsDecoder, *, checks_plain: bool = False) -> None:
    """Teaches ``decode_frame`` the frame kind ``kind``.

    ``decoder(fields)`` gets the elements after the kind and returns the payload; it should
    raise ProtocolError subclasses, and any other exception it raises is turned into
    MalformedFrameError. The fields are first checked by ``check_plain``, unless
    ``checks_plain``: then the decoder promises to call it on every part it keeps (cheaper
    for a frame of many flat maps, which the generic walk visits value by value).
    Registering a built-in kind, or the same kind twice with another decoder, raises
    BadRequestError."""
    known = _KINDS.get(kind)
    if kind in (KIND_RAFT, KIND_REQ, KIND_RESP) or (
        known is not None and known != (decoder, checks_plain)
    ):
        raise BadRequestError(f"frame kind {kind!r} is already registered", kind=kind)
    _KINDS[kind] = (decoder, checks_plain)


def unpack_frame(
    data: bytes | memoryview, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
) -> list[Any]:
    """Returns the raw frame array ``[version, kind, *fields]`` after the size, msgpack and
    version checks, without looking at the fields. Raises like ``decode_frame``."""
    if len(data) > max_frame_size:
        raise FrameTooLargeError(
            f"frame of {len(data)} bytes exceeds the limit of {max_frame_size}",
            size=len(data),
            limit=max_frame_size,
        )
    try:
        frame = msgpack.unpackb(data)
    except Exception as exc:  # msgpack raises many unrelated types on garbage
        raise _bad(f"undecodable frame: {type(exc).__name__}") from None
    if type(frame) is not list or len(frame) < 2:
        raise _bad("a frame must be an array [version, kind, ...]")
    version, kind = frame[0], frame[1]
    if type(version) is not int:
        raise _bad("the protocol version must be an integer")
    if version != PROTOCOL_VERSION:
        err = UnsupportedProtocolError(
            f"protocol version {version} is not supported (this node speaks {PROTOCOL_VERSION})",
            version=version,
            supported=[PROTOCOL_VERSION],
        )
        if kind == KIND_REQ and len(frame) > 2 and type(frame[2]) is int:
            err.details["request_id"] = frame[2]  # lets the node tell the client why
        raise err
    if type(kind) is not str:
        raise _bad("the frame kind must be a string")
    return frame


PEEK_OBJECTS = 65536
"""What one ``FieldReader`` walks at most (msgpack objects, containers and scalars): a frame
that takes more is not read cheaply."""
# bytes after a msgpack type byte, for the scalars of fixed size (and the ext types' type
# byte plus data); the bin/str/ext types with a length field and the containers are walked
_FIXED = {0xC0: 0, 0xC2: 0, 0xC3: 0, 0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}
_FIXED.update({0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8, 0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17})
_LENGTH = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4}  # bin, str: length bytes
_EXT = {0xC7: 1, 0xC8: 2, 0xC9: 4}  # ext: length bytes (then a type byte and the data)
_CONTAINER = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}  # array, map: n, per


class FieldReader:
    """Reads a frame's msgpack array one element at a time from a view of it, without
    copying what it skips: a string or binary is stepped over by its length, so skipping
    the 1 MiB values of a ``reqs`` frame costs what its headers do. Raises ValueError
    (malformed, truncated, or more than ``PEEK_OBJECTS`` objects walked) or IndexError."""

    def __init__(self, data: bytes | memoryview, pos: int = 0) -> None:
        self._view = memoryview(data)
        self._pos = pos
        self._budget = PEEK_OBJECTS

    def _int(self, size: int) -> int:
        start = self._pos
        self._pos += size
        if self._pos > len(self._view):
            raise ValueError("truncated")
        return int.from_bytes(self._view[start : self._pos], "big")

    def read_array_header(self) -> int:
        """Returns the length of the array that starts here, and steps into it."""
        b = self._view[self._pos]
        self._pos += 1
        if 0x90 <= b <= 0x9F:
            return b & 0x0F
        if b == 0xDC or b == 0xDD:
            return self._int(2 if b == 0xDC else 4)
        raise ValueError("not an array")

    def skip(self) -> None:
        """Steps over the object that starts here, whole."""
        view, pos, pending = self._view, self._pos, 1
        while pending:
            self._budget -= 1
            if self._budget < 0:
                raise ValueError("too many objects to read cheaply")
            pending -= 1
            b = view[pos]
            pos += 1
            if b <= 0x7F or b >= 0xE0:  # positive and negative fixint
                continue
            if b <= 0x8F:  # fixmap
                pending += 2 * (b & 0x0F)
            elif b <= 0x9F:  # fixarray
                pending += b & 0x0F
            elif b <= 0xBF:  # fixstr
                pos += b & 0x1F
            elif b in _FIXED:
                pos += _FIXED[b]
            elif b in _LENGTH:
                size = _LENGTH[b]
                pos += size + int.from_bytes(view[pos : pos + size], "big")
            elif b in _EXT:
                size = _EXT[b]
                pos += size + 1 + int.from_bytes(view[pos : pos + size], "big")
            elif b in _CONTAINER:
                size, per = _CONTAINER[b]
                pending += per * int.from_bytes(view[pos : pos + size], "big")
                pos += size
            else:
                raise ValueError(f"reserved msgpack byte {b:#x}")
        if pos > len(view):
            raise ValueError("truncated")
        self._pos = pos

    def unpack(self) -> Any:
        """Returns the object that starts here, decoded (for the small ones: an id)."""
        start = self._pos
        self.skip()
        return msgpack.unpackb(self._view[start : self._pos])


def peek_fields(data: bytes | memoryview) -> tuple[str, FieldReader] | None:
    """Returns the kind of frame ``data`` and a reader positioned at its first field
    (``FieldReader``), having read only the frame's array header, version and kind: a look
    into a frame that is not decoded (the request ids of a frame refused unread) costs only
    what it reads. None when ``data`` does not start like a version-1 frame. The reader
    raises ValueError or IndexError on malformed input: its callers catch them."""
    reader = FieldReader(data)
    try:
        if reader.read_array_header() < 2:
            return None
        version = reader.unpack()
        if type(version) is not int or version != PROTOCOL_VERSION:
            return None
        kind = reader.unpack()
    except Exception:  # msgpack raises many unrelated types on garbage
        return None
    return (kind, reader) if type(kind) is str else None


def decode_frame(data: bytes | memoryview, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> Frame:
    """Returns the decoded frame ``data``.

    Raises FrameTooLargeError, MalformedFrameError, BadRequestError or
    UnsupportedProtocolError (see the module docstring); never anything else."""
    frame = unpack_frame(data, max_frame_size)
    kind = frame[1]
    fields = frame[2:]
    if kind == KIND_RAFT:
        return Frame(kind, _decode_raft(fields))
    if kind == KIND_REQ:
        return Frame(kind, _decode_req(fields))
    if kind == KIND_RESP:
        return Frame(kind, _decode_resp(fields))
    known = _KINDS.get(kind)
    if known is None:
        raise UnsupportedProtocolError(f"unknown frame kind {kind!r}", kind=kind)
    decoder, checks_plain = known
    if not checks_plain:
        check_plain(fields, f"a {kind!r} frame")
    try:
        return Frame(kind, decoder(fields))
    except ProtocolError:
        raise
    except Exception as exc:
        raise _bad(f"bad {kind!r} frame: {exc}", kind=kind) from None


def split_for_limit(msgs: Sequence[Message], max_frame_size: int) -> list[tuple[bytes, int]]:
    """Returns ``(frame, message_count)`` pairs of "raft" frames carrying ``msgs`` in order,
    each within ``max_frame_size``: one frame when the batch fits, else the batch halved until
    each part fits.

    A single message too large on its own is left out, so the counts may sum to less than
    ``len(msgs)``; returns [] for an empty batch."""
    if not msgs:
        return []
    frame = encode_raft(msgs)
    if len(frame) <= max_frame_size:
        return [(frame, len(msgs))]
    if len(msgs) == 1:
        return []
    mid = len(msgs) // 2
    return split_for_limit(msgs[:mid], max_frame_size) + split_for_limit(msgs[mid:], max_frame_size)
