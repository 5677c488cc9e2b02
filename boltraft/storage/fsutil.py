"""Returns nothing; the two file-system helpers every store needs: a directory's entries
made durable, and a directory lock held for a store's lifetime."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import BinaryIO

from boltraft.errors import DataDirLockedError


def fsync_dir(path: Path) -> None:
    """Returns None once the directory entries of ``path`` are durable (after a create,
    rename or unlink in it)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def lock_dir(path: Path) -> BinaryIO:
    """Returns the open lock file of ``path`` holding an exclusive flock. Raises
    DataDirLockedError when another open store (this process or another) holds it."""
    f = open(path / "LOCK", "ab")  # noqa: SIM115 (held open for the store's lifetime)
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise DataDirLockedError(f"raft log {path} is in use by another store", path=str(path))
    return f
