"""The request channel under ``boltraft.client.Client``: DEALER sockets to the endpoints,
leader discovery, retries with backoff, stale-reply filtering (docs/protocol.md, section 7).

A Channel is NOT thread-safe: the Client serializes calls with its lock.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Sequence
from typing import Any

import zmq

from boltraft.errors import (
    BadRequestError,
    BoltraftError,
    ProtocolError,
    RequestTimeoutError,
    UnavailableError,
)
from boltraft.transport import codec
from boltraft.transport.zmq_transport import connect_dealer, drain

RETRYABLE = frozenset(
    {
        "not_leader",
        "no_leader",
        "unavailable",
        "timeout",
        "proposal_dropped",
        "node_removed",
        "lag_exceeded",
    }
)
_DRAIN_MAX = 1024  # answers read from one socket before the deadline is looked at again
_HINTS = ("not_leader", "lag_exceeded")  # errors whose details may name the leader's address


def parse_endpoints(endpoints: str | Sequence[str]) -> list[str]:
    """Returns the endpoint list of ``endpoints`` (a comma-separated str or a sequence);
    ``HOST:PORT`` gets ``tcp://`` in front. Raises BadRequestError when empty or invalid."""
    raw = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
    out: list[str] = []
    for ep in raw:
        if not isinstance(ep, str) or not ep.strip():
            if isinstance(ep, str) and isinstance(endpoints, str):
                continue  # "a,,b" or a trailing comma
            raise BadRequestError(f"invalid endpoint {ep!r}")
        ep = ep.strip()
        if "://" not in ep:
            ep = "tcp://" + ep
        if ep not in out:
            out.append(ep)
    if not out:
        raise BadRequestError("no endpoints given")
    return out


def _settle(resp: codec.Response) -> Any:
    """Returns the result of a successful response; raises the error of a failed one."""
    if resp.ok:
        return resp.result
    raise resp.error or ProtocolError("a failed response without an error")


class Channel:
    """Returns a channel to ``endpoints`` (see ``parse_endpoints``); one thread at a time.

    ``attempt_timeout``: seconds one attempt waits for its answer; ``backoff``: (first delay,
    cap) in seconds between failed attempts. Raises BadRequestError for bad arguments."""

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        attempt_timeout: float = 1.0,
        backoff: tuple[float, float] = (0.02, 1.0),
        max_frame_size: int = codec.DEFAULT_MAX_FRAME_SIZE,
    ) -> None:
        self._endpoints = parse_endpoints(endpoints)
        if not attempt_timeout > 0:
            raise BadRequestError("attempt_timeout must be > 0")
        self.attempt_timeout = float(attempt_timeout)
        self.max_frame_size = max_frame_size
        self._backoff = backoff
        self._current = 0  # index in _endpoints of the node believed to lead
        self._rids = itertools.count(1)
        self._rng = random.Random()
        self._ctx = zmq.Context()
        self._sockets: dict[str, zmq.Socket] = {}
        self._poller = zmq.Poller()

    @property
    def endpoints(self) -> list[str]:
        """Returns the known endpoints (those given, plus leader addresses learned)."""
        return list(self._endpoints)

    @property
    def current_endpoint(self) -> str:
        """Returns the endpoint the next call goes to first (the last known leader)."""
        return self._endpoints[self._current]

    def close(self) -> None:
        """Closes every socket and the ZeroMQ context (call once)."""
        for sock in self._sockets.values():
            sock.close(0)
        self._sockets.clear()
        self._ctx.term()

    def _socket(self, ep: str) -> zmq.Socket:
        sock = self._sockets.get(ep)
        if sock is None:
            try:
                sock = connect_dealer(self._ctx, ep, self.max_frame_size)
            except zmq.ZMQError as exc:
                raise BadRequestError(f"invalid endpoint {ep!r}: {exc}", endpoint=ep) from None
            self._sockets[ep] = sock
            self._poller.register(sock, zmq.POLLIN)
        return sock

    def _send(self, ep: str, frame: bytes, wait: float) -> bool:
        sock = self._socket(ep)
        sock.setsockopt(zmq.SNDTIMEO, max(1, int(wait * 1000)))
        try:
            sock.send(frame)
        except zmq.Again:  # no connection to ep within `wait`
            return False
        return True

    def _wait(self, ids: set[int], current: int | None, until: float) -> codec.Response | None:
        """Returns the first acceptable reply before ``until``, else None: a success or a
        non-retryable error for any of ``ids``, or any error for request ``current``."""
        poll = self._poller.poll
        while True:
            remaining = until - time.monotonic()
            if remaining <= 0:
                return None
            for sock, _ in poll(max(1, int(remaining * 1000 + 0.999))):
                for parts in drain(sock, _DRAIN_MAX):
                    if len(parts) != 1:
                        continue
                    try:
                        kind, resp = codec.decode_frame(parts[0], self.max_frame_size)
                    except ProtocolError:
                        continue
                    if kind != codec.KIND_RESP or resp.request_id not in ids:
                        continue  # stale: an answer to a call that already finished
                    if resp.ok or resp.request_id == current or resp.error.code not in RETRYABLE:
                        return resp

    def _follow(self, err: BoltraftError, ep: str) -> bool:
        """Returns True after switching to the leader address ``err`` names (if any, and not
        ``ep`` itself)."""
        addr = err.details.get("leader_addr") if err.code in _HINTS else None
        if not isinstance(addr, str) or "://" not in addr or addr == ep:
            return False
        if addr not in self._endpoints:
            self._endpoints.append(addr)
        self._current = self._endpoints.index(addr)
        return True

    def call(self, body: dict[str, Any], limit: float, endpoint: str | None = None) -> Any:
        """Returns the result of request ``body``, retrying as docs/protocol.md section 7
        says for at most ``limit`` seconds; every attempt re-sends the same ``body``.

        ``endpoint`` pins every attempt to that node. Raises the server's typed error, or
        RequestTimeoutError when ``limit`` runs out."""
        deadline = time.monotonic() + limit
        ids: set[int] = set()
        failures = hops = 0
        last: BoltraftError | None = None
        while True:
            now = time.monotonic()
            if now >= deadline:
                what = f"{last.code}: {last.message}" if last else "no attempt made"
                raise RequestTimeoutError(
                    f"no answer within {limit:g}s (last: {what})",
                    timeout=limit,
                    attempts=len(ids),
                    last_error=last.code if last else None,
                )
            ep = endpoint or self._endpoints[self._current]
            rid = next(self._rids)
            ids.add(rid)
            wait = min(deadline - now, self.attempt_timeout)
            resp = None
            if self._send(ep, codec.encode_request(rid, body), wait):
                resp = self._wait(ids, rid, time.monotonic() + wait)
                if resp is None:
                    last = RequestTimeoutError(f"{ep} did not answer in {wait:.3g}s")
            else:
                last = UnavailableError(f"cannot connect to {ep}", endpoint=ep)
            if resp is not None:
                err = resp.error
                if resp.ok or err is None or err.code not in RETRYABLE:
                    return _settle(resp)
                last = err
                if endpoint is None and self._follow(err, ep):
                    hops += 1
                    if hops <= len(self._endpoints):
                        continue  # a fresh hint: go there now, no backoff
            failures += 1
            if endpoint is None and self._endpoints[self._current] == ep:
                self._current = (self._current + 1) % len(self._endpoints)
            base, cap = self._backoff
            delay = min(cap, base * 2 ** min(failures - 1, 30)) * self._rng.uniform(0.5, 1)
            resp = self._wait(ids, None, min(deadline, time.monotonic() + delay))
            if resp is not None:  # a late answer to an earlier attempt settles the call
                return _settle(resp)
