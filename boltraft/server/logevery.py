"""``LogEvery``: how the node loop logs a condition that repeats (a full disk
fails every append, apply and snapshot offer) loudly at most once in a while."""

from __future__ import annotations


class LogEvery:
    """Remembers, per key, when a repeated condition was last logged loudly.

    Invariant: ``_last`` maps each key to the monotonic time of its last loud log line.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._last: dict[str, float] = {}

    def recent(self, key: str, now: float) -> bool:
        """Returns True when ``key`` was logged loudly less than ``seconds`` before ``now``."""
        last = self._last.get(key)
        return last is not None and now - last < self.seconds

    def due(self, key: str, now: float) -> bool:
        """Returns True (noting ``now`` for ``key``) when ``key`` should be logged loudly
        now: it was not within ``seconds``; False when it should be quiet."""
        if self.recent(key, now):
            return False
        self._last[key] = now
        return True

    def forget(self, key: str) -> None:
        """Forgets ``key``: the condition ended, its next return is
        logged loudly."""
        self._last.pop(key, None)
