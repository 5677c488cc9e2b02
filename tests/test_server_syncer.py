"""The node loop's sync thread: one call at a time, on another thread, errors handed back."""

from __future__ import annotations

import threading
import time

import pytest

from boltraft.server.syncer import Syncer


def test_runs_the_call_on_its_own_thread_and_wait_returns_after_it() -> None:
    s = Syncer()
    try:
        ran: list[threading.Thread] = []
        release = threading.Event()

        def call() -> None:
            release.wait(30)
            ran.append(threading.current_thread())

        assert s.done  # nothing outstanding
        s.start(call)
        assert s.busy and not ran and not s.done
        release.set()
        deadline = time.monotonic() + 30
        while not s.done:  # finished, not yet waited for
            assert time.monotonic() < deadline, "the call did not finish"
            time.sleep(0.001)
        assert s.busy and ran
        s.wait()
        assert not s.busy and s.done
        assert ran and ran[0] is not threading.current_thread()
        s.wait()  # nothing outstanding: returns at once
    finally:
        s.close()


def test_the_call_s_error_is_raised_by_wait_and_the_syncer_goes_on() -> None:
    s = Syncer()
    try:

        def fail() -> None:
            raise OSError(28, "No space left on device")

        s.start(fail)
        with pytest.raises(OSError, match="No space"):
            s.wait()
        done: list[int] = []
        s.start(lambda: done.append(1))
        s.wait()
        assert done == [1]
    finally:
        s.close()


def test_one_call_at_a_time_and_nothing_after_close() -> None:
    s = Syncer()
    release = threading.Event()
    s.start(lambda: release.wait(30) and None)
    with pytest.raises(RuntimeError):
        s.start(lambda: None)
    release.set()
    s.wait()
    s.close()
    with pytest.raises(RuntimeError):
        s.start(lambda: None)
    s.close()  # twice is harmless
