"""The server's wire format, in one place: the frame kinds a node adds to the codec's
``raft``/``req``/``resp``, the response maps, and the membership as JSON.

Every frame is the codec's msgpack array ``[1, kind, ...]``. ``register_kinds()`` teaches
the codec the kinds below; a node calls it once at start (``Node.__init__``), and so does
any tool that decodes a node's frames. Kinds:

- ``[1, "fwd", [[fid, body], ...]]`` follower -> leader over the peer DEALER: the client
  writes the follower received while not leading, batched per loop iteration; ``fid`` is the
  follower's own id for the write, ``body`` the client's request body untouched.
- ``[1, "fwdresp", [[fid, response], ...]]`` leader -> follower over the peer DEALER: the
  response map the follower relays to its client as ``resp``.
- ``[1, "reqs", [[request_id, body], ...]]`` client -> node: several data requests in one
  frame, each handled as if it came in its own ``req`` frame; answered in
  ``[1, "resps", [[request_id, response], ...]]`` frames, each carrying the answers for one
  client that were ready at the same point of the loop (all the writes of one apply, say).
- ``[1, "snap", name, sid, ...]``: snapshot transfer (``boltraft.server.snaptransfer``).
- ``[1, "removed", {"by": ID, "term": T}]``: a leader tells a non-member it is not in the
  cluster (``boltraft.server.membership``).
- ``[1, "hash", "ask", round]`` leader -> member and ``[1, "hash", "is", round, applied,
  sha256]`` member -> leader: the periodic corruption check (``boltraft.server.corruptcheck``).
- ``[1, "watching"]`` follower -> leader over the peer DEALER: it serves watches, so the
  leader tells it of each raised commit at once (``boltraft.server.commitnotice``).

A response map is ``{"ok": true, "result": R}`` or ``{"ok": false, "error": E}`` with ``E``
the error's stable wire form (``BoltraftError.to_wire``); ``ok``/``fail`` build them.
"""

from __future__ import annotations

import re
from typing import Any

import msgpack

from boltraft.errors import BoltraftError, MalformedFrameError, SnapshotError
from boltraft.packing import pack
from boltraft.raft.types import ConfState
from boltraft.transport import codec

FWD = "fwd"
FWD_RESP = "fwdresp"


def _decode_pairs(fields: list[Any]) -> list[list[Any]]:
    """The ``[[id, map], ...]`` list of a fwd/fwdresp frame; raises
    MalformedFrameError on any other shape."""
    if len(fields) != 1 or type(fields[0]) is not list:
        raise MalformedFrameError("a fwd/fwdresp frame carries one array of pairs")
    for item in fields[0]:
        if (
            type(item) is not list
            or len(item) != 2
            or type(item[0]) is not int
            or not 0 <= item[0] <= codec.MAX_UINT
            or type(item[1]) is not dict
        ):
            raise MalformedFrameError("each forwarded item is [uint64 id, map]")
    return fields[0]


REQS = "reqs"
RESPS = "resps"
MAX_REQS = 4096  # requests in one reqs frame: as many as one loop iteration takes in frames


def _decode_reqs(fields: list[Any]) -> list[list[Any]]:
    """The ``[[request_id, body], ...]`` list of a reqs frame (a body may be anything
    plain: the service answers a body that is not a request with bad_request); raises
    MalformedFrameError when the frame or an item has another shape, there are more than
    MAX_REQS items, a request id is not a uint64, or a body holds a msgpack extension
    type."""
    if len(fields) != 1 or type(fields[0]) is not list:
        raise MalformedFrameError("a reqs frame carries one array of [request_id, body] pairs")
    if len(fields[0]) > MAX_REQS:  # one frame must not hold the loop longer than a recv does
        raise MalformedFrameError(f"a reqs frame carries at most {MAX_REQS} requests")
    for item in fields[0]:
        if type(item) is not list or len(item) != 2:
            raise MalformedFrameError("each item of a reqs frame is [request_id, body]")
        rid = item[0]
        if type(rid) is not int or not 0 <= rid <= codec.MAX_UINT:
            raise MalformedFrameError("a request id is an unsigned 64-bit integer")
        # a flat map: one pass over its values
        codec.check_plain(item[1], "a request body", codec.MAX_BODY_DEPTH)
    return fields[0]


def request_ids(data: bytes | memoryview) -> tuple[str, list[int]] | None:
    """Returns the kind and the request ids of the client frame ``data`` without decoding
    it: ``("req", [id])``, or ``("reqs", [id, ...])`` with each item's body skipped. None for
    any other frame, or when an id cannot be read (a frame that is not well-formed that far,
    a ``reqs`` frame of more than MAX_REQS items): such a frame gets no answer."""
    peeked = codec.peek_fields(data)
    if peeked is None or peeked[0] not in (codec.KIND_REQ, REQS):
        return None
    kind, reader = peeked
    ids: list[int] = []
    try:
        if kind == codec.KIND_REQ:
            ids.append(reader.unpack())
        else:
            count = reader.read_array_header()
            if count > MAX_REQS:
                return None
            for _ in range(count):
                if reader.read_array_header() != 2:
                    return None
                ids.append(reader.unpack())
                reader.skip()
    except Exception:  # msgpack raises many unrelated types on garbage
        return None
    if any(type(rid) is not int or not 0 <= rid <= codec.MAX_UINT for rid in ids):
        return None
    return kind, ids


# ``[1, "resp", rid, {"ok": true, "result": r}]`` assembled from constant pieces: the array
# header with version and kind, then the packed rid, then the map up to the result's value.
_RESP_HEAD = b"\x94" + msgpack.packb([codec.PROTOCOL_VERSION, codec.KIND_RESP])[1:]
_OK_HEAD = msgpack.packb({"ok": True, "result": None})[:-1]
_NIL = msgpack.packb(None)


def encode_ok(rid: int, result: Any) -> bytes:
    """Returns the ``resp`` frame ``{"ok": true, "result": result}`` for request ``rid``,
    byte-identical to ``encode_response(rid, {"ok": True, "result": result})`` but built
    without packing the constant parts again. Raises MalformedFrameError when ``result``
    (or ``rid``) cannot be encoded (a programming error)."""
    try:
        packed = _NIL if result is None else pack(result)
        return _RESP_HEAD + pack(rid) + _OK_HEAD + packed
    except (TypeError, ValueError, OverflowError) as exc:
        raise MalformedFrameError(f"cannot encode a 'resp' frame: {exc}", kind="resp") from None


def _sanitized(response: dict[str, Any]) -> dict[str, Any]:
    """Returns ``response`` with its error details msgpack cannot encode replaced by their
    ``repr`` (a success is returned unchanged)."""
    if response.get("ok"):
        return response
    err = dict(response["error"])
    err["details"] = {str(k): repr(v) for k, v in err.get("details", {}).items()}
    return {"ok": False, "error": err}


def encode_resps(pairs: list[list[Any]], limit: int = codec.DEFAULT_MAX_FRAME_SIZE) -> list[bytes]:
    """Returns the ``resps`` frames carrying the ``[request_id, response]`` ``pairs`` in
    order: one frame when it fits in ``limit`` bytes, else the pairs halved until each part
    fits (an answer too large on its own travels alone). Error details msgpack cannot encode
    are replaced by their ``repr``; a result that cannot be encoded is a programming error
    and raises MalformedFrameError."""
    try:
        frame = codec.encode_frame(RESPS, pairs)
    except MalformedFrameError:
        frame = codec.encode_frame(RESPS, [[rid, _sanitized(resp)] for rid, resp in pairs])
    if len(frame) <= limit or len(pairs) == 1:
        return [frame]
    mid = len(pairs) // 2
    return encode_resps(pairs[:mid], limit) + encode_resps(pairs[mid:], limit)


def encode_response(rid: int, response: dict[str, Any]) -> bytes:
    """Returns the ``resp`` frame for ``response``; error details msgpack cannot encode are
    replaced by their ``repr`` (a result that cannot be encoded is a programming error and
    raises MalformedFrameError)."""
    try:
        return codec.encode_frame(codec.KIND_RESP, rid, response)
    except MalformedFrameError:
        if response.get("ok"):
            raise
        return codec.encode_frame(codec.KIND_RESP, rid, _sanitized(response))


SNAP = "snap"
REMOVED = "removed"
_SNAP_SHAPES: dict[str, tuple[type, ...]] = {
    "offer": (str, dict),
    "get": (str, list),
    "chunk": (str, int, bytes, int),
    "done": (str, bool, str),
    "gone": (str,),
}


# A snapshot id names a file and a directory (``DATA/snapshots/.recv-<sid>``): the data
# index in decimal and the first 16 hex digits of the sha256, nothing else.
SID_PATTERN = re.compile(r"[0-9]{1,20}-[0-9a-f]{16}")


def is_snapshot_id(sid: Any) -> bool:
    """True when ``sid`` is a well-formed snapshot id (``SID_PATTERN``): a safe file name."""
    return type(sid) is str and SID_PATTERN.fullmatch(sid) is not None


def _decode_snap(fields: list[Any]) -> list[Any]:
    """``[name, sid, ...]`` of a snap frame; raises MalformedFrameError on a bad shape or
    a snapshot id that is not ``SID_PATTERN``."""
    if not fields or type(fields[0]) is not str or fields[0] not in _SNAP_SHAPES:
        raise MalformedFrameError("unknown snap message")
    shape = _SNAP_SHAPES[fields[0]]
    rest = fields[1:]
    if len(rest) != len(shape) or any(type(v) is not t for v, t in zip(rest, shape, strict=True)):
        raise MalformedFrameError(f"malformed snap {fields[0]!r} message")
    if not is_snapshot_id(rest[0]):
        raise MalformedFrameError(f"malformed snapshot id in a snap {fields[0]!r} message")
    return fields


def _decode_removed(fields: list[Any]) -> dict[str, Any]:
    """The notice map of a ``removed`` frame; raises MalformedFrameError otherwise."""
    if len(fields) != 1 or type(fields[0]) is not dict:
        raise MalformedFrameError("a removed frame carries one map")
    return fields[0]


HASH = "hash"
_SHA_HEX = frozenset("0123456789abcdef")


def _decode_hash(fields: list[Any]) -> list[Any]:
    """The fields of a ``hash`` frame: ``["ask", round]`` or ``["is", round, applied,
    sha256]``; raises MalformedFrameError for any other shape (a round or index that is not
    a uint up to ``codec.MAX_INDEX``, a sha256 that is not 64 lowercase hex digits)."""
    if not fields or fields[0] not in ("ask", "is"):
        raise MalformedFrameError("unknown hash message")
    want = 2 if fields[0] == "ask" else 4
    if len(fields) != want or any(
        type(v) is not int or not 0 <= v <= codec.MAX_INDEX for v in fields[1:3]
    ):
        raise MalformedFrameError(f"malformed hash {fields[0]!r} message")
    if want == 4 and (
        type(fields[3]) is not str or len(fields[3]) != 64 or not _SHA_HEX.issuperset(fields[3])
    ):
        raise MalformedFrameError("a hash is 64 lowercase hex digits")
    return fields


WATCHING = "watching"


def _decode_watching(fields: list[Any]) -> list[Any]:
    """The (empty) fields of a ``watching`` frame; raises MalformedFrameError otherwise."""
    if fields:
        raise MalformedFrameError("a watching frame carries nothing")
    return fields


WATCHING_FRAME = codec.encode_frame(WATCHING)


def register_kinds() -> None:
    """Teaches the codec every frame kind above (idempotent)."""
    codec.register_kind(FWD, _decode_pairs)
    codec.register_kind(FWD_RESP, _decode_pairs)
    codec.register_kind(REQS, _decode_reqs, checks_plain=True)
    codec.register_kind(RESPS, _decode_pairs)
    codec.register_kind(SNAP, _decode_snap)
    codec.register_kind(REMOVED, _decode_removed)
    codec.register_kind(HASH, _decode_hash)
    codec.register_kind(WATCHING, _decode_watching)


def ok(result: Any) -> dict[str, Any]:
    """The success response map."""
    return {"ok": True, "result": result}


def fail(err: BoltraftError) -> dict[str, Any]:
    """The error response map."""
    return {"ok": False, "error": err.to_wire()}


def conf_to_json(cs: ConfState) -> dict[str, Any]:
    """``cs`` as a JSON/msgpack-ready map: ``{"voters", "learners", "addrs"}``."""
    return {"voters": list(cs.voters), "learners": list(cs.learners), "addrs": dict(cs.addrs)}


def conf_from_json(data: Any) -> ConfState:
    """The ConfState in ``data``; raises SnapshotError when malformed."""
    try:
        voters = tuple(str(v) for v in data["voters"])
        learners = tuple(str(v) for v in data["learners"])
        addrs = {str(k): str(v) for k, v in data["addrs"].items()}
    except (KeyError, TypeError, AttributeError) as exc:
        raise SnapshotError(f"malformed membership {data!r}: {exc}") from None
    return ConfState(voters, learners, addrs)
