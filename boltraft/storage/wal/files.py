"""The WAL's segment files: names, opening, preallocating, writing (the directory lock and
fsync are in ``boltraft.storage.fsutil``). A write that fails cuts the file back to where
its records ended; a crash in the middle of one leaves a torn tail that ``recovery`` cuts."""

from __future__ import annotations

import os
from pathlib import Path

from boltraft.errors import NoSpaceError
from boltraft.storage.fsutil import DISK_FULL_ERRNOS


def segment_name(seq: int) -> str:
    """Returns the file name of segment number ``seq``."""
    return f"{seq:020d}.wal"


def open_segment(file: Path, create: bool) -> int:
    """Returns a descriptor of segment ``file`` for ``pwrite`` and ``pread`` (``create``: a
    new empty file, replacing any leftover of that name)."""
    flags = os.O_RDWR | os.O_CLOEXEC
    if create:
        flags |= os.O_CREAT | os.O_TRUNC
    return os.open(file, flags, 0o644)


def preallocate(fd: int, end: int, size: int) -> bool:
    """Returns True once the file ``fd``, whose records end at ``end``, is ``size`` bytes
    long with its blocks reserved (read as zeros), so that the records written into it
    change no file size: a growing file makes every ``fdatasync`` commit the filesystem's
    journal too.

    Best effort: False, the file cut back to ``end``, when the filesystem cannot (no
    support, or not that much space free); False at once when ``end >= size``."""
    if end >= size:
        return False
    try:
        os.posix_fallocate(fd, end, size - end)
    except OSError:
        os.ftruncate(fd, end)
        return False
    return True


def write_all(fd: int, buf: bytes, end: int, path: Path) -> None:
    """Writes all of ``buf`` to ``fd`` at ``end``, where its records end (past it the file
    is empty or preallocated zeros).

    On failure cuts the file back to ``end`` and raises NoSpaceError when the disk (or the
    quota) is full, the OSError otherwise."""
    try:
        done = os.pwrite(fd, buf, end)
        while done < len(buf):
            done += os.pwrite(fd, memoryview(buf)[done:], end + done)
    except OSError as exc:
        os.ftruncate(fd, end)
        if exc.errno in DISK_FULL_ERRNOS:
            raise NoSpaceError(f"raft log {path}: the disk is full", path=str(path)) from None
        raise
