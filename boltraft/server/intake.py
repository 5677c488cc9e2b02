"""The byte budget of client requests a node holds: taken in and not yet answered.

A client request costs the node memory from the moment its frame is read until its answer
leaves: the decoded request, and for a write the log entry, its copies in the log store and
in the frames to the followers, until it is applied. ``Intake`` counts, per connection
(ROUTER routing id) and for the whole node, the bytes of the ``req`` / ``reqs`` frames
whose requests are still unanswered, each request charged its share of its frame. A frame
that would take its connection past ``per_client`` bytes, or the node past ``total``, is
refused whole: each of its requests is answered ``overloaded`` at once and nothing of it
is kept. A connection holding nothing is always let in one frame, whatever its size (up
to the frame limit), when the node has room for it. So one greedy client holds at most
``max(per_client, its largest frame)`` bytes of requests in the node, and the others
keep the rest of ``total`` for theirs; what it holds in progress is also what the other
clients' writes may wait behind in the log.

Invariants: ``bytes(ident)`` is the sum of the charges of ``ident``'s unanswered admitted
requests and ``total_bytes`` the sum over every connection; a connection with nothing in
progress has no entry. Owned by the node loop's thread.
"""

from __future__ import annotations

from collections.abc import Sequence

from boltraft.errors import OverloadedError

MAX_CLIENT_PENDING_BYTES = 8 << 20
"""Default ``per_client``: what one connection's unanswered requests may hold (or one frame
of any size)."""
MAX_PENDING_BYTES = 64 << 20
"""Default ``total``: what every client's unanswered requests may hold in a node (or one
frame of any size)."""


class Intake:
    """Counts the unanswered request bytes per connection and in total (module docstring)."""

    def __init__(
        self, per_client: int = MAX_CLIENT_PENDING_BYTES, total: int = MAX_PENDING_BYTES
    ) -> None:
        self.per_client = per_client
        self.total = total
        self.total_bytes = 0
        self._by_client: dict[bytes, int] = {}
        # (ident, request id) -> the charge of each unanswered request with that id (a
        # client may reuse an id while an earlier request with it is in progress)
        self._charges: dict[tuple[bytes, int], list[int]] = {}
        self.refused_frames = 0
        self.refused_requests = 0

    def admit(self, ident: bytes, rids: Sequence[int], size: int) -> OverloadedError | None:
        """Charges the ``size`` bytes of a frame from connection ``ident`` carrying the
        requests ``rids`` (each its share), or returns the error to answer each of them
        with when it does not fit; then nothing is charged."""
        held = self._by_client.get(ident, 0)
        if (held and held + size > self.per_client) or (
            self.total_bytes and self.total_bytes + size > self.total
        ):
            self.refused_frames += 1
            self.refused_requests += len(rids)
            mine = bool(held) and held + size > self.per_client
            return OverloadedError(
                (
                    "this connection's requests in progress"
                    if mine
                    else "the requests in progress on this node"
                )
                + f" would exceed {self.per_client if mine else self.total} bytes; "
                "retry when earlier answers have come",
                limit=self.per_client if mine else self.total,
            )
        if not rids:
            return None
        share = max(1, size // len(rids))
        charges = self._charges
        for rid in rids:
            key = (ident, rid)
            got = charges.get(key)
            if got is None:
                charges[key] = [share]
            else:
                got.append(share)
        charged = share * len(rids)
        self._by_client[ident] = held + charged
        self.total_bytes += charged
        return None

    def release(self, ident: bytes, rid: int) -> None:
        """Releases the charge of one answered request; an uncharged one changes nothing."""
        key = (ident, rid)
        got = self._charges.get(key)
        if got is None:
            return
        share = got.pop()
        if not got:
            del self._charges[key]
        left = self._by_client[ident] - share
        if left:
            self._by_client[ident] = left
        else:
            del self._by_client[ident]
        self.total_bytes -= share

    def bytes(self, ident: bytes) -> int:
        """Returns the bytes charged to connection ``ident`` now."""
        return self._by_client.get(ident, 0)

    def status(self) -> dict[str, int]:
        """The ``intake`` map of ``status``: bytes held now, the connections holding them,
        the limits, and the frames and requests refused so far."""
        return {
            "bytes": self.total_bytes,
            "clients": len(self._by_client),
            "max_client_pending_bytes": self.per_client,
            "max_pending_bytes": self.total,
            "refused_frames": self.refused_frames,
            "refused_requests": self.refused_requests,
        }
