"""``EntryCache``: the most recently appended entries of a WAL, in memory.

A leader sends followers what it has just appended; reading that back must not touch the disk
nor decode anything, so the store keeps the newest batches (bounded by their bytes on disk).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from boltraft.raft.types import Entry


class EntryCache:
    """The entries ``[first, end)`` where ``end`` is the log's last index + 1.

    Invariants: ``entries[i - first]`` is entry ``i``; ``_batches`` holds ``(first index,
    bytes)`` of every appended batch still (partly) cached, oldest first, and ``_bytes`` is
    their sum; after an append it is at most ``cap`` unless the newest batch alone passes it.
    """

    __slots__ = ("_batches", "_bytes", "cap", "entries", "first")

    def __init__(self, cap: int, first: int) -> None:
        self.cap = cap
        self.reset(first)

    def reset(self, first: int) -> None:
        """Empties the cache before entry ``first`` (the next to come)."""
        self.first = first
        self.entries: list[Entry] = []
        self._batches: deque[tuple[int, int]] = deque()
        self._bytes = 0

    def add(self, start: int, batch: Sequence[Entry], nbytes: int) -> None:
        """Caches ``batch`` (``nbytes`` on disk), appended from ``start`` (replacing the cached
        entries from ``start`` on), then evicts the oldest batches down to 3/4 of the cap
        once it is passed (amortizing the list's shift)."""
        ents, batches = self.entries, self._batches
        if start < self.first:
            self.reset(start)
            ents, batches = self.entries, self._batches
        else:
            del ents[start - self.first :]
            while batches and batches[-1][0] >= start:
                self._bytes -= batches.pop()[1]
        ents.extend(batch)
        batches.append((start, nbytes))
        self._bytes += nbytes
        if self._bytes > self.cap and len(batches) > 1:
            keep = self.cap * 3 // 4
            while self._bytes > keep and len(batches) > 1:
                self._bytes -= batches.popleft()[1]
            del ents[: batches[0][0] - self.first]
            self.first = batches[0][0]
