"""Returns nothing; the network seam of the node loop and the frames the server adds.

The loop uses the subset of ``boltraft.transport.zmq_transport.PeerTransport`` written down
in ``Net`` (unit tests pass an in-memory twin). Every frame is the codec's msgpack array
``[1, kind, ...]``; the server adds two kinds to ``raft``/``req``/``resp``:

- ``[1, "fwd", [[fid, body], ...]]`` follower -> leader over the peer DEALER: the client
  writes the follower received while not leading, batched per loop iteration; ``fid`` is the
  follower's own id for the write, ``body`` the client's request body untouched.
- ``[1, "fwdresp", [[fid, response], ...]]`` leader -> follower over the peer DEALER: the
  response map (``{"ok": ...}``) the follower relays to its client as ``resp``.
- ``[1, "reqs", [[request_id, body], ...]]`` client -> node: several data requests in one
  frame (a client pipelining many calls over one socket), each handled as if it came in its
  own ``req`` frame; the node answers them in ``[1, "resps", [[request_id, response], ...]]``
  frames, each carrying the answers for one client that were ready at the same point of
  the loop (all the writes of one apply, say).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import msgpack

from boltraft.errors import MalformedFrameError
from boltraft.packing import pack
from boltraft.raft.types import Message
from boltraft.transport import codec
from boltraft.transport.zmq_transport import Incoming

FWD = "fwd"
FWD_RESP = "fwdresp"


def _decode_pairs(fields: list[Any]) -> list[list[Any]]:
    """Returns the ``[[id, map], ...]`` list of a fwd/fwdresp frame; raises
    MalformedFrameError on any other shape."""
    if len(fields) != 1 or type(fields[0]) is not list:
        raise MalformedFrameError("a fwd/fwdresp frame carries one array of pairs")
    for item in fields[0]:
        if (
            type(item) is not list
            or len(item) != 2
            or type(item[0]) is not int
            or type(item[1]) is not dict
        ):
            raise MalformedFrameError("each forwarded item is [id, map]")
    return fields[0]


codec.register_kind(FWD, _decode_pairs)
codec.register_kind(FWD_RESP, _decode_pairs)

REQS = "reqs"
RESPS = "resps"
MAX_REQS = 4096  # requests in one reqs frame: as many as one loop iteration takes in frames


def _decode_reqs(fields: list[Any]) -> list[list[Any]]:
    """Returns the ``[[request_id, body], ...]`` list of a reqs frame (a body may be anything
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
        codec.check_plain(item[1], "a request body")  # a flat map: one pass over its values
    return fields[0]


codec.register_kind(REQS, _decode_reqs, checks_plain=True)
codec.register_kind(RESPS, _decode_pairs)


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


class Net(Protocol):
    """What the node loop needs from the network (PeerTransport's API); ONE thread only."""

    def recv(self, timeout: float = 0.0, max_frames: int = 4096) -> list[Incoming]:
        """Returns the decoded frames ready now, waiting up to ``timeout`` for the first;
        malformed frames are counted and dropped, never returned."""
        ...

    def queue(self, msgs: Iterable[Message]) -> None:
        """Queues Raft messages for the next ``flush()`` (one frame per peer)."""
        ...

    def flush(self) -> int:
        """Sends everything queued; returns the number of messages handed over."""
        ...

    def send_frame(self, peer_id: str, frame: bytes) -> bool:
        """Sends an encoded frame to a peer over its DEALER; False when dropped."""
        ...

    def reply(self, sender: bytes, frame: bytes) -> bool:
        """Sends an encoded frame back to ``sender`` through the ROUTER; False when dropped."""
        ...

    def peers(self) -> dict[str, str]:
        """Returns the peer table, id -> address."""
        ...

    def add_peer(self, peer_id: str, addr: str) -> None: ...

    def remove_peer(self, peer_id: str) -> bool: ...

    def counters(self) -> dict[str, int]:
        """Returns the transport counters."""
        ...

    def close(self) -> None: ...


def set_peers(net: Net, addrs: Mapping[str, str]) -> None:
    """Returns None once ``net``'s peer table is exactly ``addrs`` (unchanged entries keep
    their sockets)."""
    current = net.peers()
    for pid in current.keys() - addrs.keys():
        net.remove_peer(pid)
    for pid, addr in addrs.items():
        if current.get(pid) != addr:
            net.add_peer(pid, addr)
