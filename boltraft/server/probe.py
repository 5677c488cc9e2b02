"""One-shot requests to a node for tools that manage nodes (``boltraft up``,
the integration fixture, the cluster benchmark): ask, wait with a deadline, give up quietly.
"""

from __future__ import annotations

import os
import time
from typing import Any

import zmq

from boltraft.errors import BoltraftError, RequestTimeoutError
from boltraft.transport.codec import KIND_RESP, decode_frame, encode_request
from boltraft.transport.curve import PartyKeys, client_options


def request(
    addr: str,
    body: dict[str, Any],
    timeout: float = 1.0,
    ctx: zmq.Context | None = None,
    keys: PartyKeys | None = None,
) -> Any:
    """Returns the result of ONE request to the node at ``addr`` (no retry, no redirect),
    over CURVE with ``keys`` (a node's or a client's keys folder).

    Raises RequestTimeoutError when no answer arrives within ``timeout`` seconds (also when
    the node refused the key), or the typed error the node answered with."""
    context = ctx or zmq.Context.instance()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    for opt, value in ({} if keys is None else client_options(keys)).items():
        sock.setsockopt(opt, value)
    try:
        sock.connect(addr)
        rid = int.from_bytes(os.urandom(6), "big")
        sock.send(encode_request(rid, body))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sock.poll(int(left * 1000) + 1):
                raise RequestTimeoutError(f"no answer from {addr} in {timeout:.1f}s", addr=addr)
            frame = decode_frame(sock.recv())
            if frame.kind == KIND_RESP and frame.payload.request_id == rid:
                if not frame.payload.ok:
                    raise frame.payload.error
                return frame.payload.result
    finally:
        sock.close(0)


def status(addr: str, timeout: float = 1.0, keys: PartyKeys | None = None) -> dict[str, Any] | None:
    """Returns the node's ``status`` result, or None when it does not answer in time."""
    try:
        result = request(addr, {"op": "status"}, timeout, keys=keys)
    except BoltraftError:
        return None
    return result if isinstance(result, dict) else None


def wait_for_leader(
    addrs: list[str], deadline: float, min_applied: int = 0, keys: PartyKeys | None = None
) -> str | None:
    """Returns the id of the first node found reporting itself leader (with at least
    ``min_applied`` applied), or None at ``deadline`` (a ``time.monotonic()`` value)."""
    while time.monotonic() < deadline:
        for addr in addrs:
            st = status(addr, timeout=0.5, keys=keys)
            if st and st.get("role") == "leader" and st.get("applied", 0) >= min_applied:
                return str(st["id"])
        time.sleep(0.05)
    return None
