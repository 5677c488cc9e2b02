"""The node's ZeroMQ transport: one ROUTER for everything inbound, one DEALER per peer outbound.

THREADING: a PeerTransport is used by ONE thread (the node loop), and runs one thread of its
own, the drain thread. ZeroMQ sockets are not thread-safe: the peer DEALERs and their
monitors belong to the loop alone; the ROUTER and the inbox are shared, and every use of
them, by either thread, holds the transport's ROUTER lock (``recv`` while it polls and
reads, ``reply``, a frame sent back through the ROUTER, ``close``). The drain thread reads
the ROUTER only while the loop has been out of ``recv`` for at least ``DRAIN_S`` (the loop
marks entering and leaving ``recv``; the drain thread checks both under the lock), so the
two never read at once, and the counters the drain thread moves (``malformed``,
``replies``, ``reply_dropped``, ``drained``, the inbox's) are moved by the loop only under
the lock or inside ``recv``. Only ``close()`` ends its life (it stops and joins the drain
thread first); after it every method raises UnavailableError.

- The ROUTER is bound at the node's address and serves peers AND clients. A peer's DEALER has
  identity = its node id, so ``Incoming.sender`` of a peer frame is that id (UTF-8); a
  client's sender is an opaque routing id to hand back to ``reply()``. ``ROUTER_HANDOVER``
  lets a restarted peer or client take over its old identity (not with keys: there a
  connection with a routing id in use is refused, so that no key can cut a live member's
  connection off by taking its id; a restarted peer's DEALER connects again once its old
  connection's close was seen); ``ROUTER_MANDATORY`` turns an unroutable reply into a counted
  drop instead of a silent one. Its ``SNDHWM`` is sized from bytes (``REPLY_QUEUE_BYTES``): a
  client that does not read its answers holds at most that much of the node's memory, and
  its later answers are dropped and counted. ``MAXMSGSIZE`` is the frame limit.
- Inbound, ZeroMQ never stops reading a connection: ``RCVHWM`` is 0 (no limit) on the
  ROUTER and on the peer DEALERs. (With libzmq 4.3.5, when a full queue has stopped a
  connection's input and that connection breaks, libzmq answers a ZMTP heartbeat PING it
  had read before on the broken connection, which fails its assertion ``!_io_error``,
  ``stream_engine_base.cpp:310``, and aborts the process: any client flooding with
  heartbeats on and dropping its connection would kill the node.) Memory is bounded by the
  node instead: what it reads off its sockets goes, raw, into the inbox
  (``boltraft.transport.inbox``: bytes per client connection, for all clients, per peer),
  which refuses a frame past its budget: counted (``inbox_refused``), never decoded, and a
  client ``req`` / ``reqs`` whose request ids can be read cheaply is answered through
  ``answer_refused`` (``overloaded``). ``recv`` reads up to ``READ_FRAMES`` /
  ``READ_BYTES`` per call, hands the loop at most ``max_frames`` / ``RECV_BYTES`` of them
  (the inbox's oldest first) and decodes only those. While the loop is busy elsewhere (a
  long apply, a snapshot) the drain thread reads the ROUTER into the inbox, so ZeroMQ's
  queues do not grow meanwhile; a peer DEALER is read by ``recv`` alone. A frame is a
  peer's when its sender is in the peer table (or it came on a DEALER); a node not in the
  table counts as a client.
- Each peer gets a DEALER (identity set before connect, ``SNDHWM`` bounded, ``IMMEDIATE`` so
  nothing queues for a peer that is not connected, ``linger=0``). Sends never block: when the
  queue is full or the peer is down the frame is dropped and counted; Raft's own retries
  (heartbeats, probes, re-sent appends) recover it.
- A frame for a node that is not in the peer table goes back through the ROUTER on the
  connection that node's DEALER opened to this one, if there is one: a node must answer the
  node it follows even when its membership does not name it (a joining node starts from the
  membership at the cluster's log base, which may predate the leader's own joining; a node
  that was down may not have the leader's addition yet).
- Batching: ``queue()`` collects messages, ``flush()`` sends ONE "raft" frame per peer with
  everything queued for it (halved only if it would exceed ``max_frame_size``). ``send(msgs)``
  is ``queue(msgs)`` + ``flush()``.
- With keys (``boltraft.transport.curve``) every socket speaks CURVE: the ROUTER is a CURVE
  server whose ZAP handler admits only the keys ``allow`` accepts (an unknown key's
  connection is closed in the handshake, before any frame is read), and each frame read on
  it carries its connection's key in ``Incoming.user``, for the node to bind to a member
  or a client role. Peer DEALERs connect with the node's own key pair.
- Inbound frames are decoded by ``boltraft.transport.codec`` when ``recv`` hands them over;
  malformed, oversized, unknown version or kind frames are counted and dropped, never
  raised. A bad "req" whose request id could be read is answered with its protocol error,
  so a client is not left waiting.
- Each peer DEALER has a ZeroMQ socket monitor: when an established connection to a peer
  closes (its process exited: the kernel closes its sockets at once; or the connection
  broke, or ZeroMQ's heartbeat timed out), ``recv`` returns an ``Incoming`` of kind
  ``PEER_DOWN`` whose payload is the peer's id, ahead of the frames of the same call. It
  comes once per connection lost; the peer counts as connected again after a handshake.
  Until then, frames from that peer on the ROUTER are dropped (counted in
  ``from_lost_peer``): they left it before it was lost (its other connection closes a
  moment later), and a dead leader's last heartbeat must not revive it in the node's eyes.
- Waiting: each socket in a ``zmq_poll`` costs a few microseconds before the wait and again
  after it, and the DEALERs and monitors rarely have anything. So ``recv`` waits on the
  ROUTER alone for up to ``WATCH_S``, where a busy node's next frame comes, and only then,
  for the rest of its wait, on every socket; and it looks at every socket, without waiting,
  once every ``WATCH_S``. A close, or a frame on a DEALER, is seen within about ``WATCH_S``.

Counters (``counters()``): sent / dropped (frames), sent_messages / dropped_messages (Raft
messages inside them), received (good frames), malformed, oversized, unsupported, bad_request,
unknown_peer (frames for a node neither in the peer table nor connected to the ROUTER),
sent_back (frames for a node not in the peer table, sent through the ROUTER on the connection
its DEALER opened), replies, reply_dropped, bytes_sent (frames handed to ZeroMQ),
bytes_received (good frames), peer_disconnects (connections to peers seen to close),
from_lost_peer (frames dropped from a peer whose connection closed), drained (frames the
drain thread read), peers_connected (peers with an established connection now),
inbox_frames / inbox_bytes (held in the inbox now: frames, and bytes charged),
inbox_refused (frames the inbox refused).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import zmq

from boltraft.errors import (
    BadRequestError,
    BoltraftError,
    FrameTooLargeError,
    ProtocolError,
    UnavailableError,
    UnsupportedProtocolError,
)
from boltraft.raft.types import Message
from boltraft.transport import codec
from boltraft.transport.curve import Authenticator, PartyKeys, client_options, server_options
from boltraft.transport.inbox import Inbox, Raw

PEER_DOWN = "peer_down"  # Incoming.kind: the connection to the peer named by the payload closed

# The backend (Cython) socket methods with plain int flags: the sugar ``Socket.send`` /
# ``send_multipart`` / ``recv_multipart`` wrappers and ``zmq.Flag`` arithmetic cost several
# microseconds per call, which the node loop pays once per request and reply.
_send = zmq.backend.Socket.send
_recv = zmq.backend.Socket.recv
_get = zmq.backend.Socket.get
_NB = int(zmq.NOBLOCK)
_RCVMORE = int(zmq.RCVMORE)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_MORE_NB = int(zmq.SNDMORE | zmq.NOBLOCK)

WATCH_S = 0.002  # the peer connection monitors are looked at at least this often
DEFAULT_SNDHWM = 256  # frames queued per peer before sends are dropped
RECV_BYTES = 16 << 20
"""One ``recv`` hands the node loop frames until their bytes reach this (at least one
frame): the rest waits in the inbox, raw, for the next call. A sender of large frames so
holds up the node loop, and the other senders' frames behind it, for at most about that
much input per iteration (the ROUTER reads the connections' frames in turn)."""
READ_FRAMES = 8192
READ_BYTES = 64 << 20
"""What one ``recv`` reads off its sockets at most (frames, and bytes: at least one frame
per socket), into the inbox beyond what it hands the loop: ZeroMQ's queues do not stop a
connection (``RCVHWM`` 0), so the node reads them out into the inbox, where their bytes
are budgeted."""
DRAIN_S = 0.02
"""The drain thread reads the ROUTER while the node loop has been out of ``recv`` for at
least this long: longer than the loop's ordinary work between two calls (an fsync, an
apply of a batch), so that the drain thread stays off the GIL while the loop serves, and
short enough that what ZeroMQ holds while the loop is busy is what arrives in
``DRAIN_S + LOOK_S``."""
LOOK_S = 0.01
"""How often the drain thread looks whether the loop has been out of ``recv`` for
``DRAIN_S``: so it starts reading at most ``DRAIN_S + LOOK_S`` after the loop left, and
wakes at most 100 times a second. It looks rather than being woken by the loop as it
leaves ``recv``: a wake-up at the start of every iteration would take the GIL from the
loop just when it has work."""
DRAIN_FRAMES = 1024
"""Frames the drain thread reads per hold of the ROUTER lock: the loop waits at most that
long to answer a client."""
REPLY_FRAME_BYTES = 4 << 20
"""The node splits its answers into frames of at most this much (one answer larger than
that, a scan page of 4 MiB plus its last item, travels alone)."""
REPLY_QUEUE_BYTES = 64 << 20
"""What ZeroMQ may hold for one connection on the ROUTER (answers its client has not read
yet, beyond what the kernel's socket buffer took): the ROUTER's ``SNDHWM`` is this divided
by ``REPLY_FRAME_BYTES``; an answer past it is dropped and counted (``reply_dropped``)."""
_COUNTERS = (
    "sent",
    "dropped",
    "sent_messages",
    "dropped_messages",
    "received",
    "malformed",
    "oversized",
    "unsupported",
    "bad_request",
    "unknown_peer",
    "sent_back",
    "replies",
    "reply_dropped",
    "bytes_sent",
    "bytes_received",
    "peer_disconnects",
    "from_lost_peer",
    "drained",
)
_HANDSHAKE = int(zmq.EVENT_HANDSHAKE_SUCCEEDED)
_DISCONNECTED = int(zmq.EVENT_DISCONNECTED)


Part = bytes | memoryview  # a message part as read: bytes, or a view of a zero-copy Frame


ZeroCopy = Callable[[bytes], object]
"""Given a message's first part, true when its other parts are to be read zero-copy."""


def _rest(sock: zmq.Socket, first: bytes, parts: list[Part], zero_copy: ZeroCopy | None) -> None:
    """Reads the parts of a message after its ``first`` into ``parts``: as bytes, or as
    views of zero-copy Frames when ``zero_copy(first)`` (no copy into Python for a part
    that may be dropped at once; a Frame costs more than a copy for a small part)."""
    if not _get(sock, _RCVMORE):  # the rest of a message arrives with its start
        return
    if zero_copy is not None and zero_copy(first):
        while True:
            parts.append(memoryview(_recv(sock, _NB, False)))  # type: ignore[arg-type]
            if not _get(sock, _RCVMORE):
                return
    while True:
        parts.append(_recv(sock, _NB, True))
        if not _get(sock, _RCVMORE):
            return


def drain(sock: zmq.Socket, limit: int, zero_copy: ZeroCopy | None = None) -> Iterator[list[Part]]:
    """Yields the whole messages waiting on ``sock`` now, each as the list of its parts, at
    most ``limit`` of them; never blocks. It asks ZeroMQ whether more are waiting instead of
    reading until ``zmq.Again``, whose raising and catching costs more than a read. Parts
    come as bytes (a zero-copy Frame costs more for messages this small), but those after
    the first as views of zero-copy Frames when ``zero_copy(first part)``."""
    for _ in range(limit):
        try:
            first = _recv(sock, _NB, True)
        except zmq.Again:  # the poll's event was not a whole message after all
            return
        parts: list[Part] = [first]
        _rest(sock, first, parts, zero_copy)
        yield parts
        # pyzmq types the backend's get() as int | bytes for every option; EVENTS is an int
        if not _get(sock, _EVENTS) & _POLLIN:  # type: ignore[operator]
            return


def drain_users(
    sock: zmq.Socket, limit: int, zero_copy: ZeroCopy | None = None
) -> Iterator[tuple[list[Part], str | None]]:
    """``drain`` for a CURVE ROUTER: yields each whole message with the "User-Id" of its
    connection (the client's public key, Z85; None when the socket has no authenticator).
    The routing-id part is read as a zero-copy Frame, whose properties carry it."""
    for _ in range(limit):
        try:
            head = _recv(sock, _NB, False)
        except zmq.Again:
            return
        first = head.bytes
        parts: list[Part] = [first]
        _rest(sock, first, parts, zero_copy)
        try:
            user: str | None = str(head.get("User-Id"))
        except zmq.ZMQError:  # no authenticator: no such property
            user = None
        yield parts, user
        if not _get(sock, _EVENTS) & _POLLIN:  # type: ignore[operator]
            return


def monitor_events(monitor: zmq.Socket) -> Iterator[int]:
    """Yields the events waiting on a socket monitor's PAIR socket (``zmq.EVENT_*``
    values), never blocking."""
    while True:
        try:
            first = _recv(monitor, _NB, True)
        except zmq.Again:
            return
        while _get(monitor, _RCVMORE):  # the event's endpoint
            _recv(monitor, _NB, True)
        yield int.from_bytes(first[:2], "little")


class Incoming(NamedTuple):
    """One decoded inbound frame.

    ``sender`` is the ROUTER routing id of whoever sent it (a peer's node id, UTF-8; or a
    client's opaque id): answer with ``transport.reply(sender, frame)``. ``peer`` is None for
    frames that came in on the ROUTER, and the peer's id for frames that came back on our
    DEALER to that peer (replies a peer's ROUTER sent to our identity); answer those with
    ``send_frame(peer, frame)``. ``user`` is the CURVE public key (Z85) the sender's
    connection authenticated with, for frames on the ROUTER of a transport with keys; None
    otherwise (a routing id alone proves nothing: any connection may choose one). ``size``
    is the encoded frame's length."""

    kind: str
    payload: Any
    sender: bytes
    peer: str | None
    user: str | None = None
    size: int = 0  # the frame's bytes


def _ms(seconds: float) -> int:
    """``seconds`` in whole milliseconds for a ``zmq_poll``, rounded up: rounding down would
    spin on poll(0) for the last millisecond before every tick."""
    return max(0, math.ceil(seconds * 1000))


def _check_addr(addr: Any) -> str:
    if type(addr) is not str or "://" not in addr:
        raise BadRequestError(f"invalid ZeroMQ address {addr!r} (want tcp://HOST:PORT)")
    return addr


MONITOR_EVENTS = _HANDSHAKE | _DISCONNECTED  # what a DEALER's monitor reports


def connect_dealer(
    ctx: zmq.Context,
    addr: str,
    max_frame_size: int,
    options: Mapping[int, Any] = {},
    monitor: bool = False,
) -> zmq.Socket:
    """Returns a DEALER connected to ``addr`` with the options every boltraft DEALER shares
    (linger 0, IMMEDIATE, reconnect 100 ms..1 s, a receive limit of two frames), then
    ``options`` (set before connect, so an IDENTITY applies). With ``monitor``, a monitor
    of its handshakes and disconnects is attached before it connects (so no event is
    missed); ``sock.get_monitor_socket()`` returns it. Raises zmq.ZMQError for a bad
    address, after closing the socket."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IMMEDIATE, 1)  # a send waits for a live connection, no queue
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
    sock.setsockopt(zmq.MAXMSGSIZE, 2 * max_frame_size + 1024)
    for opt, value in options.items():
        sock.setsockopt(opt, value)
    try:
        if monitor:
            sock.get_monitor_socket(MONITOR_EVENTS).setsockopt(zmq.LINGER, 0)
        sock.connect(addr)
    except zmq.ZMQError:
        if monitor:
            sock.disable_monitor()
            sock.get_monitor_socket().close(0)
        sock.close(0)
        raise
    return sock


class PeerTransport:
    """Returns a transport bound at ``listen`` with DEALERs to ``peers`` (id -> address).

    ``listen`` may use port ``*`` (``tcp://127.0.0.1:*``); ``endpoint`` then tells the port.
    Raises BadRequestError for an invalid id or address, UnavailableError if the address
    cannot be bound. Use from one thread only (see the module docstring)."""

    def __init__(
        self,
        node_id: str,
        listen: str,
        peers: Mapping[str, str] | None = None,
        *,
        max_frame_size: int = codec.DEFAULT_MAX_FRAME_SIZE,
        sndhwm: int = DEFAULT_SNDHWM,
        context: zmq.Context | None = None,
        keys: PartyKeys | None = None,
        allow: Callable[[str], bool] | None = None,
        inbox: Inbox | None = None,
        answer_refused: Callable[[bytes | memoryview, BoltraftError], list[bytes]] | None = None,
        drain_s: float | None = DRAIN_S,
    ) -> None:
        """``keys``: the node's CURVE keys (``boltraft.transport.curve``): the ROUTER serves
        with the cluster's server key pair and admits the client keys ``allow`` accepts, and
        each peer DEALER connects with the node's own key pair; None: no CURVE. ``inbox``:
        the budgets of frames read and not yet taken (default: ``Inbox()``).
        ``answer_refused(frame, error)``: the frames that answer the requests of a client
        frame the inbox refused (``boltraft.server.replies.answer_refused``; it runs on the
        drain thread too, so it must be pure); None: such frames get no answer. ``drain_s``:
        how long the loop must have been out of ``recv`` before the drain thread reads the
        ROUTER; None: no drain thread (the ROUTER is read only in ``recv``)."""
        self._id_bytes = self._check_id(node_id)
        self.node_id = node_id
        self.max_frame_size = max_frame_size  # frames above it are dropped, both directions
        self._sndhwm = sndhwm
        self._own_context = context is None
        self._ctx = zmq.Context() if context is None else context
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._peers: dict[str, tuple[str, zmq.Socket]] = {}  # id -> (address, DEALER)
        self._by_socket: dict[zmq.Socket, str] = {}  # DEALER -> peer id
        self._monitors: dict[zmq.Socket, str] = {}  # a DEALER's monitor socket -> peer id
        self._up: dict[str, bool] = {}  # peer id -> an established connection now
        # the ids of peers whose connection closed and has not been made again: what still
        # comes in from them on the ROUTER left them before they were lost, and is dropped
        self._lost: set[bytes] = set()
        self._queued: dict[str, list[Message]] = {}  # peer id -> messages awaiting flush()
        self._router_only = zmq.Poller()  # the ROUTER: what a wait watches first
        self._watching = zmq.Poller()  # the ROUTER, the DEALERs and their monitors
        self._watch_at = 0.0  # monotonic time the monitors are due to be looked at
        self._closed = False
        self._inbox = Inbox() if inbox is None else inbox
        self._answer_refused = answer_refused
        self._peer_ids: frozenset[bytes] = frozenset()  # replaced whole: the drain thread reads it
        # the ROUTER and the inbox are used under this lock, by the loop and the drain thread
        self._lock = threading.Lock()
        self._in_recv = False  # the loop is in recv(): the drain thread leaves the ROUTER alone
        self._left_recv = time.monotonic()  # when the loop last left recv()
        self._stop = threading.Event()
        self._dealer_curve: dict[int, Any] = {} if keys is None else client_options(keys)
        self._auth: Authenticator | None = None
        if keys is not None:  # the ZAP handler must run before the ROUTER binds
            self._auth = Authenticator(self._ctx, allow or (lambda key: False))
        router = self._ctx.socket(zmq.ROUTER)
        for opt, value in ({} if keys is None else server_options(keys)).items():
            router.setsockopt(opt, value)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # with keys a routing id is not handed over: a connection that took a member's id
        # would cut that member's own connection off
        router.setsockopt(zmq.ROUTER_HANDOVER, 0 if keys is not None else 1)
        router.setsockopt(zmq.SNDHWM, REPLY_QUEUE_BYTES // REPLY_FRAME_BYTES)
        # ZeroMQ itself disconnects a sender of a frame over the limit (with 1 KiB of slack),
        # before buffering it
        router.setsockopt(zmq.MAXMSGSIZE, max_frame_size + 1024)
        router.setsockopt(zmq.RCVHWM, 0)  # never stop reading a connection: module docstring
        try:
            router.bind(_check_addr(listen))
        except zmq.ZMQError as exc:
            router.close(0)
            if self._auth is not None:
                self._auth.stop()
            if self._own_context:
                self._ctx.term()
            raise UnavailableError(f"cannot listen on {listen}: {exc}", addr=listen) from None
        self._router = router
        self.endpoint: str = router.getsockopt_string(zmq.LAST_ENDPOINT)  # the bound address
        self._router_only.register(router, zmq.POLLIN)
        self._watching.register(router, zmq.POLLIN)
        self._drain_s = drain_s
        self._drainer: threading.Thread | None = None
        if drain_s is not None:
            self._drainer = threading.Thread(
                target=self._drain_loop, name=f"boltraft-drain-{node_id}", daemon=True
            )
            self._drainer.start()
        try:
            for pid, addr in (peers or {}).items():
                self.add_peer(pid, addr)
        except BoltraftError:
            self.close()
            raise

    # --- peers -------------------------------------------------------------------------------
    @staticmethod
    def _check_id(node_id: Any) -> bytes:
        raw = node_id.encode() if type(node_id) is str else b""
        if not 0 < len(raw) <= 255 or raw[0] == 0:
            raise BadRequestError(f"invalid node id {node_id!r} (1..255 bytes of UTF-8)")
        return raw

    def _live(self) -> None:
        if self._closed:
            raise UnavailableError("the transport is closed")

    def peers(self) -> dict[str, str]:
        """Returns a copy of the peer table, id -> address."""
        return {pid: addr for pid, (addr, _) in self._peers.items()}

    def add_peer(self, peer_id: str, addr: str) -> None:
        """Makes sure a DEALER to ``addr`` exists for ``peer_id``.

        Adding a known peer with a new address replaces its socket (frames still queued in
        ZeroMQ for the old address are discarded); the same address changes nothing. Raises
        BadRequestError for an invalid id or address, or for our own id."""
        self._live()
        self._check_id(peer_id)
        _check_addr(addr)
        if peer_id == self.node_id:
            raise BadRequestError(f"{peer_id!r} is this node's own id, not a peer")
        old = self._peers.get(peer_id)
        if old is not None:
            if old[0] == addr:
                return
            self._close_dealer(old[1])
        options: dict[int, Any] = {
            zmq.IDENTITY: self._id_bytes,  # before connect: peers route by it
            zmq.SNDHWM: self._sndhwm,
            zmq.RCVHWM: 0,  # never stop reading a peer (see the module docstring)
            zmq.HEARTBEAT_IVL: 1000,
            zmq.HEARTBEAT_TIMEOUT: 3000,
            **self._dealer_curve,
        }
        try:
            sock = connect_dealer(self._ctx, addr, self.max_frame_size, options, monitor=True)
        except zmq.ZMQError as exc:
            raise BadRequestError(f"cannot connect to {addr}: {exc}", addr=addr) from None
        monitor = sock.get_monitor_socket()
        self._peers[peer_id] = (addr, sock)
        self._peer_ids = frozenset(pid.encode() for pid in self._peers)
        self._by_socket[sock] = peer_id
        self._monitors[monitor] = peer_id
        self._up[peer_id] = False
        self._watching.register(sock, zmq.POLLIN)
        self._watching.register(monitor, zmq.POLLIN)

    set_peer = add_peer  # "update the address" reads better at call sites that mean it

    def remove_peer(self, peer_id: str) -> bool:
        """Returns True if ``peer_id`` was a peer; its socket and queued messages are gone."""
        self._live()
        self._queued.pop(peer_id, None)
        old = self._peers.pop(peer_id, None)
        if old is None:
            return False
        self._peer_ids = frozenset(pid.encode() for pid in self._peers)
        self._close_dealer(old[1])
        return True

    def _close_dealer(self, sock: zmq.Socket) -> None:
        self._watching.unregister(sock)
        peer = self._by_socket.pop(sock, None)
        for monitor, pid in list(self._monitors.items()):
            if pid == peer:
                self._watching.unregister(monitor)
                del self._monitors[monitor]
                sock.disable_monitor()
                monitor.close(0)
        if peer is not None:
            self._up.pop(peer, None)
            self._lost.discard(peer.encode())
        sock.close(0)

    # --- sending -----------------------------------------------------------------------------
    def queue(self, msgs: Iterable[Message]) -> None:
        """Queues ``msgs`` for the next ``flush()``, grouped by ``to``."""
        self._live()
        queued = self._queued
        for m in msgs:
            q = queued.get(m.to)
            if q is None:
                queued[m.to] = [m]
            else:
                q.append(m)

    def flush(self) -> int:
        """Returns the number of messages handed to ZeroMQ: every queued message goes out in
        ONE frame per peer. Messages for unknown peers, and frames ZeroMQ would not take
        without blocking, are dropped and counted."""
        self._live()
        if not self._queued:
            return 0
        queued, self._queued = self._queued, {}
        c = self._counts
        total = 0
        for pid, msgs in queued.items():
            peer = self._peers.get(pid)
            parts = codec.split_for_limit(msgs, self.max_frame_size)
            sent = 0
            if peer is None:  # not in the table: back on the connection it came in on
                for frame, n in parts:
                    if self._send_back(pid, frame):
                        sent += n
                c["sent_messages"] += sent
                c["dropped_messages"] += len(msgs) - sent
                total += sent
                continue
            sock = peer[1]
            for frame, n in parts:
                try:
                    _send(sock, frame, _NB)
                except zmq.Again:
                    c["dropped"] += 1
                    continue
                c["sent"] += 1
                c["bytes_sent"] += len(frame)
                sent += n
            c["sent_messages"] += sent
            c["dropped_messages"] += len(msgs) - sent
            total += sent
        return total

    def send(self, msgs: Iterable[Message]) -> int:
        """Returns the number of messages handed to ZeroMQ; ``queue(msgs)`` then ``flush()``."""
        self.queue(msgs)
        return self.flush()

    def send_frame(self, peer_id: str, frame: bytes) -> bool:
        """Returns True if the encoded ``frame`` (any kind) was handed to the DEALER of
        ``peer_id`` without blocking; False (and counted) if dropped or the peer is unknown."""
        self._live()
        peer = self._peers.get(peer_id)
        if peer is None:
            return self._send_back(peer_id, frame)
        try:
            _send(peer[1], frame, _NB)
        except zmq.Again:
            self._counts["dropped"] += 1
            return False
        self._counts["sent"] += 1
        self._counts["bytes_sent"] += len(frame)
        return True

    def _send_back(self, peer_id: str, frame: bytes) -> bool:
        """Sends ``frame`` to ``peer_id``, which has no DEALER here, through the ROUTER, on
        the connection the peer's own DEALER opened to this node (a node's membership may
        not name the node that leads it: a joining node's starts from the cluster's log
        base, a lagging one's from before the leader was added). Returns False, counting
        ``unknown_peer``, when that peer is not connected either."""
        try:
            ident = peer_id.encode()
            with self._lock:
                _send(self._router, ident, _MORE_NB)
                _send(self._router, frame, _NB)
        except (zmq.ZMQError, UnicodeEncodeError):
            self._counts["unknown_peer"] += 1
            return False
        self._counts["sent"] += 1
        self._counts["sent_back"] += 1
        self._counts["bytes_sent"] += len(frame)
        return True

    def reply(self, sender: bytes, frame: bytes) -> bool:
        """Returns True if ``frame`` was queued on the ROUTER for ``sender`` (an
        ``Incoming.sender``); False (and counted) when that sender is gone or its queue is
        full. Never blocks."""
        if self._closed:
            raise UnavailableError("the transport is closed")
        with self._lock:
            sent = self._reply(sender, frame)
        if sent:
            self._counts["bytes_sent"] += len(frame)
        return sent

    def _reply(self, sender: bytes, frame: bytes) -> bool:
        """``reply`` with the ROUTER lock held."""
        router = self._router
        try:
            _send(router, sender, _MORE_NB)  # a failure here leaves nothing half-sent
            _send(router, frame, _NB)
        except zmq.ZMQError:  # Again (queue full) or EHOSTUNREACH (sender disconnected)
            self._counts["reply_dropped"] += 1
            return False
        self._counts["replies"] += 1
        return True

    # --- receiving ---------------------------------------------------------------------------
    def recv(self, timeout: float = 0.0, max_frames: int = 4096) -> list[Incoming]:
        """Returns the decoded frames available now (at most ``max_frames``, and no more
        once they total ``RECV_BYTES``), waiting up to ``timeout`` seconds for the first one;
        [] when nothing came in. Reads up to ``READ_FRAMES`` / ``READ_BYTES`` off the
        sockets: what it does not hand over waits in the inbox.

        Never raises for bad input: such frames are counted and dropped."""
        self._live()
        self._in_recv = True
        try:
            with self._lock:
                downs, raws = self._gather(timeout, max_frames)
            out: list[Incoming] = []
            take = self._take
            for raw in raws:
                take(raw, out)
        finally:
            self._left_recv = time.monotonic()
            self._in_recv = False
        return downs + out if downs else out

    def pending(self) -> bool:
        """True when a frame waits to be read: in the inbox, or on the ROUTER, where the
        peers' Raft messages and the clients' requests arrive. It costs less than
        ``recv(0)``, which polls the ROUTER (and, when due, every socket); a frame on a
        DEALER (sent back by a peer that has no DEALER here) or a lost connection is not
        seen here."""
        self._live()
        with self._lock:
            if len(self._inbox):
                return True
            # pyzmq types the backend's get() as int | bytes for every option; EVENTS is an int
            events: int = _get(self._router, _EVENTS)  # type: ignore[assignment]
        return bool(events & _POLLIN)

    def _gather(self, timeout: float, max_frames: int) -> tuple[list[Incoming], list[Raw]]:
        """``recv`` with the lock held: the PEER_DOWN events and the raw frames to decode
        (the inbox's oldest, then those read now while the inbox is empty and there is
        room)."""
        inbox = self._inbox
        wait = 0.0 if len(inbox) else timeout
        poller = self._router_only
        if not self._by_socket:
            ready = poller.poll(_ms(wait))
        else:
            ready = []
            now = time.monotonic()
            if now >= self._watch_at:  # every socket, without waiting
                self._watch_at = now + WATCH_S
                poller = self._watching
                ready = poller.poll(0)
                if not ready and wait > 0:
                    poller = self._router_only
            if not ready and poller is self._router_only:
                ready = poller.poll(_ms(min(wait, WATCH_S)))
                if not ready and wait > WATCH_S:  # a quiet spell: every socket, for the rest
                    poller = self._watching
                    ready = poller.poll(_ms(wait - WATCH_S))
                    self._watch_at = time.monotonic() + WATCH_S
        by_socket, monitors = self._by_socket, self._monitors
        downs: list[Incoming] = []
        if poller is self._watching:  # the events first: a peer lost drops its frames
            for sock, _ in ready:
                if sock in monitors:
                    self._watch(sock, monitors[sock], downs)
        raws = inbox.take(max_frames, RECV_BYTES) if len(inbox) else []
        room = [max_frames - len(raws), RECV_BYTES - sum(len(r.data) for r in raws)]
        frames, nbytes = READ_FRAMES, READ_BYTES
        for sock, _ in ready:
            if sock in monitors:
                continue
            n, size = self._read(sock, by_socket.get(sock), frames, nbytes, raws, room)
            frames -= n
            nbytes -= size
            if frames <= 0 or nbytes <= 0:
                break
        return downs, raws

    def _read(
        self,
        sock: zmq.Socket,
        peer: str | None,
        frames: int,
        nbytes: int,
        out: list[Raw],
        room: list[int],
    ) -> tuple[int, int]:
        """Reads the whole messages waiting on ``sock`` (the ROUTER when ``peer`` is None,
        else the DEALER to ``peer``), at most ``frames`` of them and none more once their
        bytes reach ``nbytes``; returns how many and their bytes. While ``room`` (frames,
        bytes) has room and the inbox is empty a frame goes to ``out`` (``room`` shrinks),
        else to the inbox: one it refuses is dropped, and a client's requests in it are
        answered. The caller holds the lock."""
        c, inbox = self._counts, self._inbox
        if peer is not None:
            frames_in: Iterable[tuple[list[Part], str | None]] = (
                (parts, None) for parts in drain(sock, frames)
            )
            ident = peer.encode()
        elif self._auth is not None:  # each with its connection's key
            frames_in = drain_users(sock, frames, inbox.held)
        else:
            frames_in = ((parts, None) for parts in drain(sock, frames, inbox.held))
        n = size = 0
        for parts, user in frames_in:
            n += 1
            data = parts[-1]
            size += len(data)
            if len(parts) != (1 if peer is not None else 2):
                c["malformed"] += 1
            else:
                sender = parts[0] if peer is None else ident
                raw = Raw(sender, data, peer, user)  # type: ignore[arg-type]
                if room[0] > 0 and room[1] > 0 and not len(inbox):
                    out.append(raw)
                    room[0] -= 1
                    room[1] -= len(data)
                else:
                    is_peer = peer is not None or raw.sender in self._peer_ids
                    refused = inbox.put(raw, raw.sender, is_peer)
                    if refused is not None and not is_peer and self._answer_refused is not None:
                        for frame in self._answer_refused(data, refused):
                            self._reply(raw.sender, frame)
            if size >= nbytes:
                break
        return n, size

    def _drain_loop(self) -> None:
        """The drain thread: reads the ROUTER into the inbox while the loop has been out of
        ``recv`` for ``DRAIN_S`` or more, so that ZeroMQ's queues empty into the budgeted
        inbox while the loop is busy (a long apply, a snapshot); stops at ``close()``."""
        stop, router, after = self._stop, self._router, self._drain_s or DRAIN_S
        while not stop.is_set():
            if self._in_recv or time.monotonic() - self._left_recv < after:
                stop.wait(LOOK_S)
                continue
            n = 0
            with self._lock:
                if self._closed:
                    return
                # pyzmq types the backend's get() as int | bytes for every option
                if (
                    not self._in_recv
                    and time.monotonic() - self._left_recv >= after
                    and _get(router, _EVENTS) & _POLLIN  # type: ignore[operator]
                ):
                    n, _ = self._read(router, None, DRAIN_FRAMES, READ_BYTES, [], [0, 0])
                    self._counts["drained"] += n
            if n:
                time.sleep(0)  # lets a loop waiting on the lock in
            else:
                stop.wait(after)

    def _watch(self, monitor: zmq.Socket, peer: str, downs: list[Incoming]) -> None:
        """Reads the events waiting on ``peer``'s monitor socket; a close of an established
        connection adds a PEER_DOWN to ``downs``."""
        for event in monitor_events(monitor):
            if event == _HANDSHAKE:
                self._up[peer] = True
                self._lost.discard(peer.encode())
            elif event == _DISCONNECTED and self._up.get(peer):
                self._up[peer] = False
                self._lost.add(peer.encode())
                self._counts["peer_disconnects"] += 1
                downs.append(Incoming(PEER_DOWN, peer, peer.encode(), peer))

    def _take(self, raw: Raw, out: list[Incoming]) -> None:
        """Decodes ``raw`` into ``out``; a bad frame is counted and dropped (a bad ``req``
        whose request id could be read is answered)."""
        c = self._counts
        sender, data, peer = raw.sender, raw.data, raw.peer
        if peer is None and self._lost and sender in self._lost:
            c["from_lost_peer"] += 1
            return
        try:
            kind, payload = codec.decode_frame(data, self.max_frame_size)
        except FrameTooLargeError:
            c["oversized"] += 1
            return
        except ProtocolError as err:
            if isinstance(err, UnsupportedProtocolError):
                c["unsupported"] += 1
            elif isinstance(err, BadRequestError):
                c["bad_request"] += 1
            else:
                c["malformed"] += 1
            rid = err.details.get("request_id")
            if peer is None and type(rid) is int:
                self.reply(sender, codec.encode_error(rid, err))
            return
        c["received"] += 1
        c["bytes_received"] += len(data)
        out.append(Incoming(kind, payload, sender, peer, raw.user, len(data)))

    # --- state -------------------------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        """Returns a copy of the counters (see the module docstring)."""
        out = dict(self._counts)
        out["peers_connected"] = sum(self._up.values())
        inbox = self._inbox
        out["inbox_frames"] = len(inbox)
        out["inbox_bytes"] = inbox.bytes
        out["inbox_refused"] = inbox.refused
        return out

    def connected(self, peer_id: str) -> bool:
        """Returns True while the connection to ``peer_id`` is established (handshake done
        and not seen to close)."""
        return self._up.get(peer_id, False)

    def close(self) -> None:
        """Closes every socket (linger 0); calling it again does nothing."""
        if self._closed:
            return
        with self._lock:
            self._closed = True
        self._stop.set()
        if self._drainer is not None:
            self._drainer.join()
        for monitor in self._monitors:
            monitor.close(0)
        self._monitors.clear()
        for _, sock in self._peers.values():
            sock.close(0)
        self._peers.clear()
        self._by_socket.clear()
        self._queued.clear()
        self._router.close(0)
        if self._auth is not None:
            self._auth.stop()
        if self._own_context:
            self._ctx.term()

    def __enter__(self) -> PeerTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
