"""Each client's share of the Raft log: a leader proposes a client's writes only while what
that client has in the log and not yet applied stays under a byte budget.

Entries commit and apply in log order, so a write waits for every entry proposed before it.
Without a share, a client sending its largest frames (16 MiB of writes at once) would put
all of them ahead of the next client's write, which would wait for the replication, flush
and apply of 16 MiB. With one, a client has at most ``limit`` bytes of commands in the log
beyond the applied index (or one command of any size, when it has nothing there): its next
writes are held, in order, and proposed as its earlier ones are applied, so another client's
write waits for at most about ``limit`` bytes of anyone's. Clients whose writes are small
never reach the budget: nothing changes for them.

A client is its connection (its routing id), or for a write a follower forwarded, the
follower and the write's ``cid`` (a write without one is a client of its own).

Invariant: the charges are in index order, each above the applied index the last
``settle`` saw, and a client's bytes are the sum of its charges; held writes keep each
client's order. Owned by the loop's thread.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Any

from boltraft.server.replies import Target

Request = tuple[Target, dict[str, Any]]


def client_key(target: Target, body: dict[str, Any]) -> Hashable:
    """The client that ``body``, sent to ``target``, counts against."""
    if target.via is None:
        return target.ident
    cid = body.get("cid")
    return (target.via, cid if type(cid) in (str, bytes) else target.rid)


class LogShares:
    """Per client: the bytes of its proposals not yet applied, and its held writes.

    The charges are kept in one queue in index order (proposals only ever go to the end of
    the log), so ``settle`` forgets what the applied index passed for every client at once,
    and a client with nothing in the log and nothing held takes no memory."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._charges: deque[tuple[int, Hashable, int]] = deque()  # (last index, key, bytes)
        self._bytes: dict[Hashable, int] = {}
        self._held: dict[Hashable, list[Request]] = {}

    @property
    def held(self) -> int:
        """The writes held back, all clients together."""
        return sum(map(len, self._held.values()))

    def settle(self, applied: int) -> None:
        """Forgets the charges of entries up to ``applied``."""
        charges, nbytes = self._charges, self._bytes
        while charges and charges[0][0] <= applied:
            _, key, size = charges.popleft()
            left = nbytes[key] - size
            if left:
                nbytes[key] = left
            else:
                del nbytes[key]

    def in_log(self, key: Hashable) -> int:
        """The bytes ``key`` has proposed and not applied, as of the last ``settle``."""
        return self._bytes.get(key, 0)

    def fits(self, key: Hashable, taken: int, size: int) -> bool:
        """Tells whether ``key`` may propose ``size`` more bytes now, having taken ``taken``
        bytes earlier in this round (not ``charge``d yet): when it has nothing in the log
        and took nothing, or the total stays within ``limit``."""
        total = self.in_log(key) + taken
        return total == 0 or total + size <= self.limit

    def charge(self, key: Hashable, last: int, size: int) -> None:
        """Notes that ``key`` proposed ``size`` bytes in entries up to index ``last`` (at
        least the last index charged before)."""
        self._charges.append((last, key, size))
        self._bytes[key] = self._bytes.get(key, 0) + size

    def hold(self, key: Hashable, request: Request) -> None:
        """Keeps ``request`` for a later round (after the ones ``key`` holds already)."""
        self._held.setdefault(key, []).append(request)

    def take_held(self) -> list[Request]:
        """Every held write, each client's in order; holds none after."""
        held, self._held = self._held, {}
        return [r for reqs in held.values() for r in reqs]

    def any_fits(self, applied: int) -> bool:
        """Tells whether a client with held writes has nothing left in the log up to
        ``applied`` (settling first)."""
        self.settle(applied)
        return any(key not in self._bytes for key in self._held)
