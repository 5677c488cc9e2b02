"""A leader's spare appends, sent in batches.

The core marks as spare the appends to the followers a quorum does not need now
(``Ready.spare_messages``, ``boltraft.raft.leader.spare_voters``): the followers that
acknowledged soonest carry each commit with the leader, and the others get their entries
at most ``wait_s`` later, many appends in one frame. One write then wakes the leader and
the followers it waits for, not every follower: on a machine whose cores the nodes share,
the spare follower's work no longer competes with the write's path; on any machine it
reads, flushes and answers once per batch instead of once per append. A spare follower
that overtakes the others (the first one crashed or stalled) ranks first at the next
round, so a write waits at most ``wait_s`` more for it.

Invariant: the messages to one follower leave in the order the core made them. A follower
with held messages gets every later message behind them, except an append the core did
not mark spare (the follower is needed now), which takes the held ones out with it.
``due`` is when the oldest held message must leave (None: none is held).
"""

from __future__ import annotations

from boltraft.raft.types import Message, MessageType


class SpareBatches:
    """The held spare appends of one leader; owned by the node loop's thread."""

    def __init__(self, wait_s: float) -> None:
        """``wait_s``: how long the oldest held message may wait."""
        self.wait_s = wait_s
        self.due: float | None = None
        self._held: dict[str, list[Message]] = {}

    @property
    def held(self) -> int:
        """The number of messages held."""
        return sum(len(q) for q in self._held.values())

    def hold(self, spare: list[Message], now: float) -> None:
        """Holds the ``spare`` appends; ``now`` starts the wait when none was held."""
        if not spare:
            return
        for m in spare:
            self._held.setdefault(m.to, []).append(m)
        if self.due is None:
            self.due = now + self.wait_s

    def route(self, msgs: list[Message]) -> list[Message]:
        """Returns the messages of ``msgs`` to send now, in order, holding those for a
        follower with held messages behind them (see the invariant)."""
        held = self._held
        if not held:
            return msgs
        out: list[Message] = []
        for m in msgs:
            q = held.get(m.to)
            if q is None:
                out.append(m)
            elif m.entries and m.type == MessageType.APP:
                out += q
                out.append(m)
                del held[m.to]
            else:
                q.append(m)
        if not held:
            self.due = None
        return out

    def release(self, now: float) -> list[Message]:
        """Returns every held message once ``due`` has come (none before), and forgets
        them."""
        if self.due is None or now < self.due:
            return []
        out = [m for q in self._held.values() for m in q]
        self._held = {}
        self.due = None
        return out
