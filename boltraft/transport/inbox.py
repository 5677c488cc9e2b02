"""The frames a node has read off the network and its loop has not taken yet, bounded in bytes.

ZeroMQ's own inbound queue on the node's ROUTER is unbounded (``RCVHWM`` 0: see
``boltraft.transport.zmq_transport``), so ZeroMQ never stops reading a connection; the
transport reads it into this inbox instead, raw (``Raw``: the frame's bytes, decoded only
when the node loop takes it), and the inbox holds, per sender:

- a client connection (a ROUTER routing id that is not a peer's): ``per_client`` bytes
  (``CLIENT_BYTES``), and all client connections together ``clients`` (``CLIENTS_BYTES``);
- a peer (its frames on the ROUTER and on this node's DEALER to it together): ``per_peer``
  bytes (``PEER_BYTES``).

Each frame costs its length plus ``FRAME_COST`` bytes of bookkeeping. A frame that would take
its sender, or all clients, past a budget is refused: not kept, not decoded, counted in
``refused``; ``put`` returns the error a client's request in it is answered with
(``overloaded``). A sender holding nothing is always let in one frame (up to the frame size
limit) when the clients' budget is empty or has room, so a frame larger than a budget still
gets through; one sender so holds at most its budget plus one frame.

Invariants: ``bytes`` is the sum of the costs of the frames held, ``clients_bytes`` that of
the client frames, ``held(key)`` that of ``key``'s frames (a sender holding nothing has no
entry); frames are taken in the order they were put. Not thread-safe: the transport uses
it under its ROUTER lock.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

from boltraft.errors import OverloadedError

FRAME_COST = 512
"""Bytes charged per frame on top of its length: the Python objects that hold it."""
CLIENT_BYTES = 8 << 20
"""Default ``per_client``: what one client connection's unread frames may hold."""
CLIENTS_BYTES = 32 << 20
"""Default ``clients``: what every client connection's unread frames may hold together."""
PEER_BYTES = 32 << 20
"""Default ``per_peer``: what one peer's unread frames may hold."""


class Raw(NamedTuple):
    """One frame read off a socket, not decoded: ``sender`` is its ROUTER routing id (a
    peer's id, UTF-8, for frames on this node's DEALER to ``peer``), ``user`` its
    connection's CURVE key (Z85) on a ROUTER with keys. ``data`` is bytes, or a view of
    the ZeroMQ message (read without a copy)."""

    sender: bytes
    data: bytes | memoryview
    peer: str | None = None
    user: str | None = None


class Inbox:
    """The budgeted queue of raw frames (module docstring)."""

    def __init__(
        self,
        per_client: int = CLIENT_BYTES,
        clients: int = CLIENTS_BYTES,
        per_peer: int = PEER_BYTES,
    ) -> None:
        self.per_client = per_client
        self.clients = clients
        self.per_peer = per_peer
        self.bytes = 0
        self.clients_bytes = 0
        self.refused = 0
        self._held: dict[bytes, int] = {}  # sender key -> the cost of its frames held
        self._queue: deque[tuple[Raw, bytes, int, bool]] = deque()  # raw, key, cost, peer

    def __len__(self) -> int:
        return len(self._queue)

    def held(self, key: bytes) -> int:
        """Returns the bytes charged to sender ``key`` now."""
        return self._held.get(key, 0)

    def put(self, raw: Raw, key: bytes, peer: bool) -> OverloadedError | None:
        """Keeps ``raw`` from sender ``key`` (a peer when ``peer``), or returns the error its
        requests are answered with when it would take ``key`` or all clients past a budget:
        then nothing is kept and ``refused`` counts it."""
        cost = len(raw.data) + FRAME_COST
        held = self._held.get(key, 0)
        limit = self.per_peer if peer else self.per_client
        if held and held + cost > limit:
            return self._refuse("this connection's", limit)
        if not peer and self.clients_bytes and self.clients_bytes + cost > self.clients:
            return self._refuse("all clients'", self.clients)
        self._held[key] = held + cost
        self.bytes += cost
        if not peer:
            self.clients_bytes += cost
        self._queue.append((raw, key, cost, peer))
        return None

    def _refuse(self, whose: str, limit: int) -> OverloadedError:
        self.refused += 1
        return OverloadedError(
            f"{whose} frames the node has not read yet would exceed {limit} bytes; "
            "retry when earlier answers have come",
            limit=limit,
        )

    def take(self, max_frames: int, max_bytes: int) -> list[Raw]:
        """Returns the oldest frames held, at most ``max_frames`` and no more once their
        lengths reach ``max_bytes`` (at least one frame when any is held); their bytes are
        released."""
        out: list[Raw] = []
        queue, held = self._queue, self._held
        while queue and len(out) < max_frames and max_bytes > 0:
            raw, key, cost, peer = queue.popleft()
            left = held[key] - cost
            if left:
                held[key] = left
            else:
                del held[key]
            self.bytes -= cost
            if not peer:
                self.clients_bytes -= cost
            out.append(raw)
            max_bytes -= len(raw.data)
        return out
