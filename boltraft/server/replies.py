"""Answers to clients and to peers' forwarded writes, batched per point of the loop.

An answer to a client's ``req`` frame leaves at once (one ``resp`` frame); answers to a
``reqs`` frame wait in ``resps`` batches per client, answers to a peer's ``fwd`` frame in
``fwdresp`` batches per peer, until ``send()`` (the loop calls it after each apply and at the
end of each iteration). Each request gets at most one answer; a client's answer releases
its request's bytes in the node's ``Intake``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from boltraft.errors import BoltraftError
from boltraft.server.intake import Intake
from boltraft.server.ports import Net
from boltraft.server.wire import (
    FWD_RESP,
    REQS,
    encode_ok,
    encode_response,
    encode_resps,
    fail,
    ok,
    request_ids,
)
from boltraft.transport.codec import encode_frame
from boltraft.transport.zmq_transport import REPLY_FRAME_BYTES


def answer_refused(data: bytes | memoryview, err: BoltraftError) -> list[bytes]:
    """Returns the frames that answer each request of the client frame ``data``, refused
    before it was decoded (the transport's inbox was full), with ``err``: a ``resp`` for a
    ``req`` frame, ``resps`` frames for a ``reqs`` frame; [] when no request id can be read
    cheaply (``wire.request_ids``). Pure: the transport calls it from its drain thread too."""
    found = request_ids(data)
    if found is None:
        return []
    kind, ids = found
    response = fail(err)
    if kind == REQS:
        return encode_resps([[rid, response] for rid in ids], REPLY_FRAME_BYTES) if ids else []
    return [encode_response(ids[0], response)]


class Target(NamedTuple):
    """Where an answer goes: ``via`` None means the client ``ident`` on our ROUTER (in a
    ``resps`` frame with others when ``many``: the request came in a ``reqs`` frame); else
    the peer id whose forwarded write ``rid`` this is. ``op`` is the request's op as the
    client sent it ("" when it sent none), for the error counts. ``INTERNAL`` (an empty
    ident, which no ROUTER gives a connection) is the node's own request: its answer goes
    nowhere."""

    ident: bytes
    rid: int
    via: str | None = None
    many: bool = False
    op: str = ""


INTERNAL = Target(b"", 0)


class Replies:
    """The answers of one node; owned by the loop's thread.

    ``errors`` counts the error answers to clients by (op, error code); an op not in
    ``ops`` counts as ``unknown``, so the keys stay few whatever clients send."""

    def __init__(self, net: Net, ops: frozenset[str], intake: Intake | None = None) -> None:
        """``intake``: told of each answer to a client, to release that request's bytes."""
        self._net = net
        self._ops = ops
        self._intake = intake
        self._resps: dict[bytes, list[list[Any]]] = {}  # client ident -> [[rid, resp], ...]
        self._fwd: dict[str, list[list[Any]]] = {}  # peer id -> [[fid, resp], ...]
        self.errors: dict[tuple[str, str], int] = {}

    def reply(self, target: Target, response: dict[str, Any]) -> None:
        """Answers ``target`` with the response map (batched when it is a peer's or came in
        a ``reqs`` frame); a client's request leaves the intake's count."""
        if self._intake is not None and target.via is None:
            self._intake.release(target.ident, target.rid)
        self.refuse(target, response)

    def refuse(self, target: Target, response: dict[str, Any]) -> None:
        """``reply`` for a request the intake did not take in (its count stays as it is)."""
        if target.via is None and not response.get("ok"):
            code = str(response.get("error", {}).get("code"))
            key = (target.op if target.op in self._ops else "unknown", code)
            self.errors[key] = self.errors.get(key, 0) + 1
        if not target.ident:
            return
        if target.many:
            self._resps.setdefault(target.ident, []).append([target.rid, response])
        elif target.via is not None:
            self._fwd.setdefault(target.via, []).append([target.rid, response])
        else:
            self._net.reply(target.ident, encode_response(target.rid, response))

    def reply_ok(self, target: Target, result: Any) -> None:
        """``reply(target, ok(result))`` without building the map for a client on our ROUTER
        (the hot path of every write and read)."""
        if target.many or target.via is not None or not target.ident:
            self.reply(target, ok(result))
        else:
            if self._intake is not None:
                self._intake.release(target.ident, target.rid)
            self._net.reply(target.ident, encode_ok(target.rid, result))

    def send(self) -> None:
        """Sends the batched ``resps`` and ``fwdresp`` frames queued so far (``resps`` split
        into frames of at most ``REPLY_FRAME_BYTES``, what the ROUTER's queue is sized by)."""
        net = self._net
        if self._resps:
            resps, self._resps = self._resps, {}
            for ident, pairs in resps.items():
                for frame in encode_resps(pairs, REPLY_FRAME_BYTES):
                    net.reply(ident, frame)
        if self._fwd:
            out, self._fwd = self._fwd, {}
            for peer, items in out.items():
                net.send_frame(peer, encode_frame(FWD_RESP, items))
