"""The request channel under ``boltraft.client.Client``: DEALER sockets to the endpoints,
leader discovery, retries with backoff, stale-reply filtering (docs/protocol.md, section 7).

Each DEALER has a ZeroMQ socket monitor, so the channel knows which endpoints it is
connected to: an attempt whose node closes the connection (the process died) fails at once
instead of after the attempt timeout, and the next attempt goes, without a backoff, to the
next endpoint not known to be down. After an attempt that timed out on a connected node (a
hung one), the channel asks every other endpoint for its ``status`` at once and goes to the
leader the first answer names.

A Channel is NOT thread-safe: the Client serializes calls with its lock.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Mapping, Sequence
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
from boltraft.transport.curve import PartyKeys, client_options
from boltraft.transport.zmq_transport import connect_dealer, drain, monitor_events

RETRYABLE = frozenset(
    {
        "not_leader",
        "no_leader",
        "unavailable",
        "timeout",
        "proposal_dropped",
        "node_removed",
        "lag_exceeded",
        "overloaded",
    }
)
_DRAIN_MAX = 1024  # answers read from one socket before the deadline is looked at again
_HINTS = ("not_leader", "lag_exceeded")  # errors whose details may name the leader's address
_HANDSHAKE = int(zmq.EVENT_HANDSHAKE_SUCCEEDED)
_DISCONNECTED = int(zmq.EVENT_DISCONNECTED)
_STATUS = {"op": "status"}
WATCH_AFTER_S = 0.002  # an attempt watches its node's connection once it waited this long


class _Closed:
    """What ``_wait`` returns when the attempt's node closed its connection."""


CLOSED = _Closed()


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
    cap) in seconds between failed attempts; ``keys``: CURVE on every socket with these
    client keys (a node that refuses them never answers: the call times out). Raises
    BadRequestError for bad arguments."""

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        attempt_timeout: float = 1.0,
        backoff: tuple[float, float] = (0.02, 1.0),
        max_frame_size: int = codec.DEFAULT_MAX_FRAME_SIZE,
        keys: PartyKeys | None = None,
    ) -> None:
        self._endpoints = parse_endpoints(endpoints)
        self.curve: Mapping[int, Any] = {} if keys is None else client_options(keys)
        """The CURVE options of its sockets (empty without keys): a socket of the same
        client to the same nodes (a watch's) must be made with them too."""
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
        self._monitors: dict[zmq.Socket, str] = {}  # a DEALER's monitor -> its endpoint
        # (endpoints, watched endpoint) -> a poller of those endpoints' DEALERs and of the
        # watched one's monitor: a call polls only the nodes it sent to, and watches the
        # connection of its current attempt only (each socket polled costs every call)
        self._pollers: dict[tuple[frozenset[str], str | None], zmq.Poller] = {}
        # endpoint -> connected (handshake done) or known down (its connection closed);
        # absent until its first event
        self._up: dict[str, bool] = {}
        for ep in self._endpoints:  # connect to all now: a failover finds them connected
            try:
                self._socket(ep)
            except BadRequestError:
                pass  # raised again by the call that sends there

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
        for monitor in self._monitors:
            monitor.close(0)
        self._monitors.clear()
        for sock in self._sockets.values():
            sock.close(0)
        self._sockets.clear()
        self._ctx.term()

    def _socket(self, ep: str) -> zmq.Socket:
        sock = self._sockets.get(ep)
        if sock is None:
            try:
                sock = connect_dealer(self._ctx, ep, self.max_frame_size, self.curve, monitor=True)
            except zmq.ZMQError as exc:
                raise BadRequestError(f"invalid endpoint {ep!r}: {exc}", endpoint=ep) from None
            monitor = sock.get_monitor_socket()
            self._sockets[ep] = sock
            self._monitors[monitor] = ep
            self._pollers.clear()
        return sock

    def _poller(self, eps: frozenset[str], watched: str | None) -> zmq.Poller:
        key = (eps, watched)
        poller = self._pollers.get(key)
        if poller is None:
            poller = zmq.Poller()
            for ep in eps:
                sock = self._sockets.get(ep)
                if sock is not None:
                    poller.register(sock, zmq.POLLIN)
            for monitor, mep in self._monitors.items():
                if mep == watched:
                    poller.register(monitor, zmq.POLLIN)
            self._pollers[key] = poller
        return poller

    def _send(self, ep: str, frame: bytes, wait: float) -> bool:
        sock = self._socket(ep)
        sock.setsockopt(zmq.SNDTIMEO, max(1, int(wait * 1000)))
        try:
            sock.send(frame)
        except zmq.Again:  # no connection to ep within `wait`
            return False
        return True

    def _watch(self, monitor: zmq.Socket) -> str | None:
        """Returns the endpoint of ``monitor`` if its connection closed (it was up), after
        noting every event waiting there."""
        ep = self._monitors[monitor]
        closed = None
        for event in monitor_events(monitor):
            if event == _HANDSHAKE:
                self._up[ep] = True
            elif event == _DISCONNECTED:
                if self._up.get(ep):
                    closed = ep
                self._up[ep] = False
        return closed

    def _refresh(self) -> None:
        """Notes the connection events that arrived since the last poll."""
        for monitor in self._monitors:
            self._watch(monitor)

    def _wait(
        self,
        ids: set[int],
        current: int | None,
        until: float,
        eps: frozenset[str],
        attempt_ep: str | None = None,
        probes: dict[int, str] | None = None,
    ) -> codec.Response | _Closed | None:
        """Returns the first acceptable reply from the nodes ``eps`` before ``until``, else
        None: a success or a non-retryable error for any of ``ids``, any error for request
        ``current``, or any answer to one of ``probes`` (request id -> endpoint). Returns
        CLOSED once the connection to ``attempt_ep`` closed (the only connection it
        watches, from ``WATCH_AFTER_S`` on: most answers come sooner, and a socket more in
        the poll costs every call)."""
        poll = self._poller(eps, None).poll
        watch_at = time.monotonic() + WATCH_AFTER_S if attempt_ep else until
        monitors = self._monitors
        while True:
            now = time.monotonic()
            remaining = until - now
            if remaining <= 0:
                return None
            if now >= watch_at:
                poll = self._poller(eps, attempt_ep).poll
                watch_at = until
            else:
                remaining = min(remaining, watch_at - now)
            for sock, _ in poll(max(1, int(remaining * 1000 + 0.999))):
                if sock in monitors:
                    closed = self._watch(sock)
                    if closed is not None and closed == attempt_ep:
                        return CLOSED
                    continue
                for parts in drain(sock, _DRAIN_MAX):
                    if len(parts) != 1:
                        continue
                    try:
                        kind, resp = codec.decode_frame(parts[0], self.max_frame_size)
                    except ProtocolError:
                        continue
                    if kind != codec.KIND_RESP:
                        continue
                    rid = resp.request_id
                    if probes is not None and rid in probes:
                        return resp
                    if rid not in ids:
                        continue  # stale: an answer to a call that already finished
                    if resp.ok or rid == current or resp.error.code not in RETRYABLE:
                        return resp

    def _next(self, ep: str) -> None:
        """Moves the current endpoint past ``ep`` to the next one not known to be down (the
        next one at all when every other one is)."""
        self._refresh()
        eps = self._endpoints
        start = eps.index(ep) if ep in eps else self._current
        n = len(eps)
        for step in range(1, n + 1):
            i = (start + step) % n
            if self._up.get(eps[i]) is not False:
                self._current = i
                return
        self._current = (start + 1) % n

    def _discover(
        self, ids: set[int], tried: frozenset[str], silent: str, until: float
    ) -> codec.Response | None:
        """Asks every endpoint but ``silent`` (which left an attempt unanswered) for its
        status at once and makes the current endpoint the leader the first answer names, or
        else the first node that answered. Returns a reply to the call itself (``ids``, sent
        to ``tried``) that arrives meanwhile, else None."""
        self._refresh()
        probes: dict[int, str] = {}
        for ep in self._endpoints:
            up = self._up.get(ep)
            if ep != silent and up is not False:
                rid = next(self._rids)
                # an endpoint not connected yet gets a moment to connect
                if self._send(ep, codec.encode_request(rid, _STATUS), 0.0 if up else 0.05):
                    probes[rid] = ep
        answered = None
        while probes:
            resp = self._wait(ids, None, until, tried | frozenset(probes.values()), probes=probes)
            if not isinstance(resp, codec.Response):
                break
            if resp.request_id not in probes:
                return resp  # the call itself was answered
            ep = probes.pop(resp.request_id)
            st = resp.result if resp.ok and isinstance(resp.result, dict) else None
            if st is None:
                continue
            addr = ep if st.get("role") == "leader" else st.get("leader_addr")
            if isinstance(addr, str) and "://" in addr and addr != silent and not self._down(addr):
                self._go(addr)
                return None
            answered = answered or ep
        if answered is not None:
            self._current = self._endpoints.index(answered)
        return None

    def _go(self, addr: str) -> None:
        if addr not in self._endpoints:
            self._endpoints.append(addr)
        self._current = self._endpoints.index(addr)

    def _follow(self, err: BoltraftError, ep: str) -> bool:
        """Returns True after switching to the leader address ``err`` names (if any, not
        ``ep`` itself, and not known to be down)."""
        addr = err.details.get("leader_addr") if err.code in _HINTS else None
        if not isinstance(addr, str) or "://" not in addr or addr == ep or self._down(addr):
            return False
        self._go(addr)
        return True

    def _down(self, addr: str) -> bool:
        """True when the connection to ``addr`` closed and is not back: a hint naming it
        is stale (a node that has not yet seen its leader die), and a send there would wait
        out the attempt for a connection that does not come."""
        self._refresh()
        return self._up.get(addr) is False

    def call(self, body: dict[str, Any], limit: float, endpoint: str | None = None) -> Any:
        """Returns the result of request ``body``, retrying as docs/protocol.md section 7
        says for at most ``limit`` seconds; every attempt re-sends the same ``body``.

        ``endpoint`` pins every attempt to that node. Raises the server's typed error, or
        RequestTimeoutError when ``limit`` runs out."""
        deadline = time.monotonic() + limit
        ids: set[int] = set()
        tried: frozenset[str] = frozenset()  # the nodes this call sent to
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
            if ep not in tried:
                tried = tried | {ep}
            wait = min(deadline - now, self.attempt_timeout)
            got: codec.Response | _Closed | None = None
            if self._send(ep, codec.encode_request(rid, body), wait):
                got = self._wait(ids, rid, time.monotonic() + wait, tried, ep)
                if got is None:
                    last = RequestTimeoutError(f"{ep} did not answer in {wait:.3g}s")
                    if endpoint is None and len(self._endpoints) > 1:
                        until = min(deadline, time.monotonic() + self.attempt_timeout)
                        answer = self._discover(ids, tried, ep, until)
                        if answer is not None:
                            return _settle(answer)
                        if self._endpoints[self._current] != ep:
                            continue  # another node answered: go there now
            else:
                last = UnavailableError(f"cannot connect to {ep}", endpoint=ep)
            if got is CLOSED:
                last = UnavailableError(f"{ep} closed the connection", endpoint=ep)
                if endpoint is None:
                    self._next(ep)
                    hops += 1
                    if hops <= len(self._endpoints):
                        continue  # the node is gone, not busy: the next one now
            elif isinstance(got, codec.Response):
                resp = got
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
                self._next(ep)
            base, cap = self._backoff
            delay = min(cap, base * 2 ** min(failures - 1, 30)) * self._rng.uniform(0.5, 1)
            late = self._wait(ids, None, min(deadline, time.monotonic() + delay), tried)
            if isinstance(late, codec.Response):  # a late answer to an earlier attempt
                return _settle(late)
