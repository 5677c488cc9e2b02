"""``Syncer``: the node loop's helper thread for the Raft log's fsync.

The loop writes a Ready's entries into the log unsynced (a ``write`` into the page cache,
microseconds), hands ``LogStore.sync`` to this thread, applies the Ready's committed
entries meanwhile, and only then waits for the sync, before it sends any message that
depends on the entries. ``fdatasync`` releases the GIL, so the disk flush and the apply's
CPU work overlap (on another core when there is one) instead of adding up in one thread.

Why applying before the local flush is safe: committed entries are already durable on a
quorum, and what this node wrote is in the page cache, which survives the process: only a
machine crash loses it, and after one the state directory is rebuilt from the snapshot and
the log anyway (``boltraft.server.main.open_state_machine``). Messages still leave only
after the flush, so Raft's persist-before-send rule holds.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

_STOP = object()


class Syncer:
    """Runs one function at a time on its own daemon thread.

    Invariant: at most one call is outstanding (``start`` then ``wait``, strictly
    alternating); the caller must not touch what the function uses until ``wait`` returns.
    """

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._results: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()
        self._busy = False
        self._thread = threading.Thread(target=self._run, name="log-sync", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """Returns True between ``start`` and ``wait``."""
        return self._busy

    @property
    def done(self) -> bool:
        """Returns True when no call is outstanding or the outstanding one has finished
        (``wait`` then returns at once)."""
        return not self._busy or not self._results.empty()

    def start(self, fn: Callable[[], None]) -> None:
        """Starts ``fn()`` on the helper thread and returns at once. Raises RuntimeError
        when a call is still outstanding or the syncer was closed."""
        if self._busy or not self._thread.is_alive():
            raise RuntimeError("a sync is outstanding, or the syncer is closed")
        self._busy = True
        self._calls.put(fn)

    def wait(self) -> None:
        """Waits for the outstanding call (if any) to finish; re-raises its error."""
        if not self._busy:
            return
        err = self._results.get()
        self._busy = False
        if err is not None:
            raise err

    def close(self) -> None:
        """Waits for the outstanding call and stops the thread (the
        outstanding call's error, if any, is dropped: call ``wait`` first to see it)."""
        if self._busy:
            self._results.get()
            self._busy = False
        if self._thread.is_alive():
            self._calls.put(_STOP)
            self._thread.join()

    def _run(self) -> None:
        calls, results = self._calls, self._results
        while True:
            fn = calls.get()
            if fn is _STOP:
                return
            try:
                fn()  # type: ignore[operator]
            except BaseException as exc:  # handed to the loop thread by wait()
                results.put(exc)
            else:
                results.put(None)
