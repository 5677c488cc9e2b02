"""Returns nothing; the WAL's segment files: names, opening, writing (the directory lock and
fsync are in ``boltraft.storage.fsutil``)."""

from __future__ import annotations

import os
from pathlib import Path

from boltraft.errors import NoSpaceError
from boltraft.storage.fsutil import DISK_FULL_ERRNOS


def segment_name(seq: int) -> str:
    """Returns the file name of segment number ``seq``."""
    return f"{seq:020d}.wal"


def open_segment(file: Path, create: bool) -> int:
    """Returns a descriptor of segment ``file`` for appending and ``pread`` (``create``: a new
    empty file, replacing any leftover of that name)."""
    flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC
    if create:
        flags |= os.O_CREAT | os.O_TRUNC
    return os.open(file, flags, 0o644)


def write_all(fd: int, buf: bytes, end: int, path: Path) -> None:
    """Returns None once all of ``buf`` is appended to ``fd``, a file ``end`` bytes long.

    On failure cuts the file back to ``end`` and raises NoSpaceError when the disk (or the
    quota) is full, the OSError otherwise."""
    try:
        done = os.write(fd, buf)
        while done < len(buf):
            done += os.write(fd, memoryview(buf)[done:])
    except OSError as exc:
        os.ftruncate(fd, end)
        if exc.errno in DISK_FULL_ERRNOS:
            raise NoSpaceError(f"raft log {path}: the disk is full", path=str(path)) from None
        raise
