"""Copies of a live store made by a CHILD process, and the low-priority knob they use.

Why a child process. py-lmdb (3.0) makes an aborting WRITE transaction (a rolled-back
savepoint, i.e. a failed batch or compare-and-set; a transaction doomed by a full map) wait
until no operation of the environment is in flight anywhere in the process. An in-process
copy is ONE such operation for as long as the copy runs (seconds for gigabytes): the node
loop's every rollback would stall until the copy ends and miss its heartbeats. Two reader
threads that keep calls in flight can starve an abort for ever (``tests/test_engine_db.py``
reproduces both). A child's reads do not count in this process, and LMDB gives it the same
consistent snapshot: one read transaction, while writers go on.

    copy_store(src, dest=DIR)      # DIR/data.mdb (compacted)
    copy_store(src, fd=w)          # the compacted image written to the open fd ``w``

The child is ``python -m boltraft.storage.copier SRC (--dest DIR | --fd N) [--low-priority]``.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import lmdb

from boltraft.errors import CopyFailedError
from boltraft.storage.opening import open_readonly

_IOPRIO_SET = {"x86_64": 251, "aarch64": 30}.get(platform.machine())
_IOPRIO_CLASS_IDLE = 3
_LOW_NICE = 10

try:
    _libc: Any = ctypes.CDLL(None, use_errno=True)
except OSError:
    _libc = None


def low_priority() -> None:
    """Lowers the calling THREAD's CPU priority (nice +10) and puts its I/O in the idle
    class where the platform allows; failures are ignored (the work is then only less
    polite). In a process's main thread this covers the process."""
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid), _LOW_NICE))
    except OSError:
        pass
    if _libc is not None and _IOPRIO_SET is not None:
        _libc.syscall(_IOPRIO_SET, 1, tid, _IOPRIO_CLASS_IDLE << 13)  # IOPRIO_WHO_PROCESS


def copy_store(
    src: str | os.PathLike[str],
    *,
    dest: str | os.PathLike[str] | None = None,
    fd: int | None = None,
    compact: bool = True,
    low: bool = False,
) -> None:
    """Has a child process write a consistent copy of the store in ``src`` into the
    directory ``dest`` (as ``data.mdb``) or into the open file descriptor ``fd`` (not
    closed here), and waits for it. Exactly one of ``dest`` / ``fd`` must be given.
    ``low`` runs the child at low CPU and I/O priority.

    Raises ValueError for a wrong argument combination, CopyFailedError when the child
    fails (its last error line is in the message; ``dest`` may then hold a partial file).
    """
    if (dest is None) == (fd is None):
        raise ValueError("give exactly one of dest and fd")
    argv = [sys.executable, "-m", "boltraft.storage.copier", os.fspath(src)]
    argv += ["--dest", os.fspath(dest)] if dest is not None else ["--fd", str(fd)]
    if not compact:
        argv.append("--no-compact")
    if low:
        argv.append("--low-priority")
    proc = subprocess.run(
        argv,
        pass_fds=() if fd is None else (fd,),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    if proc.returncode != 0:
        lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise CopyFailedError(
            f"copying the store in {os.fspath(src)} failed: "
            + (lines[-1] if lines else f"exit status {proc.returncode}"),
            path=os.fspath(src),
            status=proc.returncode,
        )


def main(argv: list[str] | None = None) -> int:
    """Returns the exit status of the copying child (0 after a complete copy)."""
    ap = argparse.ArgumentParser(prog="python -m boltraft.storage.copier")
    ap.add_argument("src")
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--dest")
    where.add_argument("--fd", type=int)
    ap.add_argument("--no-compact", action="store_true")
    ap.add_argument("--low-priority", action="store_true")
    args = ap.parse_args(argv)
    if args.low_priority:
        low_priority()
    env, dbs, lock_fd = open_readonly(Path(args.src))  # as DB.open(readonly=True) does
    try:
        while True:
            try:
                txn = env.begin(db=dbs.data)  # one read snapshot for the whole copy
                break
            except lmdb.MapResizedError:
                env.set_mapsize(0)  # adopt the size the writer grew the map to
        try:
            if args.fd is not None:
                env.copyfd(args.fd, compact=not args.no_compact, txn=txn)
            else:
                env.copy(args.dest, compact=not args.no_compact, txn=txn)
        finally:
            txn.abort()
    finally:
        env.close()
        if lock_fd is not None:
            os.close(lock_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
