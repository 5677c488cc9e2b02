"""``boltraft serve`` as ``chaos run`` starts it: the same command line, tied to the runner
and, for the ``slow-disk`` fault, with a log store whose fsyncs are slow.

Run as ``python -c "from boltraft.chaos.node import main; main()" [--fsync-delay MS] serve
ARGS...``. With ``BOLTRAFT_CHAOS_PARENT=<pid>`` in the environment the process asks the
kernel to SIGKILL it when its parent dies (``PR_SET_PDEATHSIG``), and exits at once if its
parent is already not ``pid``: a runner that is killed leaves no node behind. Without
``--fsync-delay`` the node runs with no hooks at all, exactly as ``boltraft serve``.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

from boltraft.raft.types import LogStore
from boltraft.storage.proxy import SlowSyncLogStore

PARENT_ENV = "BOLTRAFT_CHAOS_PARENT"
PR_SET_PDEATHSIG = 1


def split_fsync_delay(argv: Sequence[str]) -> tuple[list[str], float | None]:
    """``argv`` without a leading ``--fsync-delay MS``, and the delay (None when absent)."""
    args = list(argv)
    if len(args) >= 2 and args[0] == "--fsync-delay":
        return args[2:], float(args[1])
    return args, None


def die_with_parent() -> None:
    """Asks for SIGKILL when the parent named by BOLTRAFT_CHAOS_PARENT dies; exits now if
    it already has."""
    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != int(parent):
        os._exit(1)


def main(argv: Sequence[str] | None = None) -> None:
    """Runs the ``boltraft`` command line (``serve ...``) as the module docstring says."""
    die_with_parent()
    args, delay_ms = split_fsync_delay(sys.argv[1:] if argv is None else argv)
    from boltraft_cli.main import main as cli

    obj: dict[str, Any] | None = None
    if delay_ms is not None:
        from boltraft.server.main import ServeHooks

        def wrap_log(store: LogStore) -> LogStore:
            return SlowSyncLogStore(store, functools.partial(time.sleep, delay_ms / 1000))

        obj = {"serve_hooks": ServeHooks(wrap_log=wrap_log)}
    cli.main(args=args, prog_name="boltraft", obj=obj)
