"""The simulator's seeded network: loss, duplication, delay (and so reordering), partitions.

Time is an integer count of "units"; the harness ticks every node once per ``TICK`` units, so
a message usually arrives within the tick it was sent in and sometimes several ticks later
(which reorders it behind newer traffic). Every random choice comes from the ``random.Random``
handed in, so one seed always yields one schedule.
"""

from __future__ import annotations

import copy
import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass

from boltraft.raft.types import Message, NodeId

TICK = 10  # time units per tick


@dataclass(slots=True)
class LinkProfile:
    """How hostile the network is for one seed. Invariant: every rate is in [0, 1]."""

    drop_rate: float = 0.0  # chance a sent message is lost
    dup_rate: float = 0.0  # chance a sent message is delivered twice
    slow_rate: float = 0.0  # chance a message takes the long path (reordering)
    max_fast: int = 3  # fast path latency: 1..max_fast units
    max_slow: int = 3 * TICK  # slow path latency: max_fast+1..max_slow units

    @staticmethod
    def random(rng: random.Random) -> LinkProfile:
        """Returns a profile drawn from ``rng``: from a clean LAN to a very lossy WAN."""
        calm = rng.random() < 0.2
        return LinkProfile(
            drop_rate=0.0 if calm else rng.choice((0.0, 0.02, 0.05, 0.1, 0.2)),
            dup_rate=0.0 if calm else rng.choice((0.0, 0.02, 0.05)),
            slow_rate=0.0 if calm else rng.choice((0.0, 0.05, 0.1, 0.25)),
            max_fast=rng.choice((1, 3, 6)),
            max_slow=rng.choice((TICK, 3 * TICK, 6 * TICK)),
        )

    @staticmethod
    def healed() -> LinkProfile:
        """Returns the profile of a healed network: no loss, modest reordering."""
        return LinkProfile(drop_rate=0.0, dup_rate=0.01, slow_rate=0.02, max_fast=3, max_slow=TICK)


class SimNetwork:
    """Messages in flight, ordered by arrival time. Returns what happened so the harness can
    trace it; it never delivers anything itself.

    Invariant: ``_queue`` is a heap of ``(due, tiebreak, seq, message)``; ``seq`` makes every
    key unique so messages are never compared.
    """

    def __init__(self, rng: random.Random, profile: LinkProfile) -> None:
        self._rng = rng
        self.profile = profile
        self._queue: list[tuple[int, float, int, Message]] = []
        self._seq = 0
        self._group: dict[NodeId, int] = {}  # partition group per node; absent means 0
        self._cut: set[tuple[NodeId, NodeId]] = set()  # directed links that lose everything
        self.sent = 0
        self.dropped = 0
        self.duplicated = 0

    def __len__(self) -> int:
        return len(self._queue)

    def send(self, now: int, msg: Message) -> str:
        """Returns "sent", "dup" or "drop" after queueing ``msg`` (maybe twice) or losing it."""
        self.sent += 1
        p = self.profile
        rng = self._rng
        if p.drop_rate and rng.random() < p.drop_rate:
            self.dropped += 1
            return "drop"
        self._push(now + self._latency(), msg)
        if p.dup_rate and rng.random() < p.dup_rate:
            self.duplicated += 1
            self._push(now + self._latency(), copy.copy(msg))
            return "dup"
        return "sent"

    def push_at(self, due: int, msg: Message) -> None:
        """Queues ``msg`` for delivery at ``due`` exactly (the snapshot side channel)."""
        self._push(due, msg)

    def _latency(self) -> int:
        p = self.profile
        if p.slow_rate and self._rng.random() < p.slow_rate:
            return self._rng.randint(p.max_fast + 1, max(p.max_fast + 1, p.max_slow))
        return self._rng.randint(1, p.max_fast)

    def _push(self, due: int, msg: Message) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (due, self._rng.random(), self._seq, msg))

    def discard(self, lost: Callable[[Message], bool]) -> int:
        """Removes every message in flight for which ``lost`` is true. Returns how many."""
        keep = [item for item in self._queue if not lost(item[3])]
        gone = len(self._queue) - len(keep)
        heapq.heapify(keep)
        self._queue = keep
        self.dropped += gone
        return gone

    def next_due(self) -> int | None:
        """Returns the arrival time of the earliest message in flight, or None if idle."""
        return self._queue[0][0] if self._queue else None

    def pop(self) -> tuple[int, Message]:
        """Returns the earliest ``(due, message)`` and removes it. Raises IndexError if idle."""
        due, _, _, msg = heapq.heappop(self._queue)
        return due, msg

    # --- partitions ---------------------------------------------------------------------
    def connected(self, a: NodeId, b: NodeId) -> bool:
        """Returns True when a message from ``a`` to ``b`` would get through right now."""
        return self._group.get(a, 0) == self._group.get(b, 0) and (a, b) not in self._cut

    def partition(self, groups: list[list[NodeId]]) -> None:
        """Splits the nodes into ``groups`` (nodes left out join group 0); replaces any
        previous partition but keeps cut links."""
        self._group = {n: g for g, members in enumerate(groups) for n in members}

    def cut(self, a: NodeId, b: NodeId) -> None:
        """Makes the directed link ``a -> b`` lose every message until ``heal()``."""
        self._cut.add((a, b))

    def heal(self) -> None:
        """Removes every partition and cut link (messages already lost stay lost)."""
        self._group = {}
        self._cut.clear()

    def describe(self) -> str:
        """Returns the current partition and cut links, for traces."""
        groups: dict[int, list[NodeId]] = {}
        for n, g in self._group.items():
            groups.setdefault(g, []).append(n)
        parts = "|".join(",".join(sorted(m)) for _, m in sorted(groups.items()))
        cuts = " ".join(f"{a}->{b}" for a, b in sorted(self._cut))
        return f"groups[{parts or 'all'}] cuts[{cuts}]"

    def random_partition(self, nodes: list[NodeId]) -> None:
        """Splits ``nodes`` at random: isolate one node, a minority/majority split, or cut a
        few directed links (asymmetric faults)."""
        rng = self._rng
        kind = rng.random()
        if kind < 0.35:
            victim = rng.choice(nodes)
            self.partition([[n for n in nodes if n != victim], [victim]])
        elif kind < 0.75:
            shuffled = list(nodes)
            rng.shuffle(shuffled)
            k = rng.randint(1, max(1, len(nodes) // 2))
            self.partition([shuffled[k:], shuffled[:k]])
        else:
            for _ in range(rng.randint(1, len(nodes))):
                a, b = rng.sample(nodes, 2)
                self.cut(a, b)
