"""Python's cyclic garbage collector, set for a long-running node, and timed.

A node holds a few hundred thousand long-lived objects (modules, the Raft log's cache of
entries, the change feed's ring). CPython's default thresholds ``(700, 10, 10)`` make a full
collection, which walks every one of them and stops the node loop meanwhile, a few times a
second under load: pauses of tens of milliseconds that every request in flight waits out.
``settle`` is called once the node is built, just before its loop starts: it collects what
starting up left, moves every object alive then into the permanent generation
(``gc.freeze``: never walked again) and raises the oldest generation's threshold, so a full
collection waits for a thousand middle-generation collections instead of ten. Young
collections, which find the short-lived cycles, run as before.

``PauseTimer`` measures each collection (``gc.callbacks``) and hands its generation and
duration to a callback (the metrics' histogram); ``close`` removes it. It only measures: it
never changes what the collector does.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

THRESHOLDS = (700, 10, 1000)
"""``gc.set_threshold`` after ``settle``: the young generations as CPython's defaults, the
oldest collected after 1,000 middle-generation collections instead of 10."""


def settle() -> int:
    """Collects, freezes every object alive now and sets ``THRESHOLDS``. The number of
    frozen objects (``gc.get_freeze_count()``). Process-wide: call it once, from the node's
    process, when the node is built (objects made later are collected as usual)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    return gc.get_freeze_count()


class PauseTimer:
    """Times every collection of the process's garbage collector, from the moment it is made
    until ``close``: ``record(generation, seconds)`` is called after each one, on the thread
    that ran it (any thread of the process: ``record`` must be thread-safe)."""

    def __init__(self, record: Callable[[int, float], None]) -> None:
        self._record = record
        self._started = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._record(info["generation"], time.perf_counter() - self._started)

    def close(self) -> None:
        """Stops timing; calling it again does nothing."""
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
