"""The file-system helpers every store needs: a directory's entries made durable, a
directory lock held for a store's lifetime, the free space a node needs to start, and
telling a full disk from an I/O error in what LMDB raises."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import BinaryIO

import lmdb

from boltraft.errors import DataDirLockedError, NoSpaceError

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
"""The OSError errnos that mean the disk (or the user's quota) is full."""
DISK_FULL_BELOW = 64 << 20
"""An LMDB I/O error (EIO) counts as a full disk while less than this is free."""
START_FREE_BYTES = 4 << 20
"""A node refuses to start when its data directory cannot take this much more: enough for
a few log appends of the largest Raft message (1 MiB) and their apply."""
_PROBE = ".free-space-probe"


def check_free_space(path: Path, need: int = START_FREE_BYTES) -> None:
    """Raises OSError(ENOSPC, or the EDQUOT the quota gives) when the filesystem holding
    directory ``path`` cannot take ``need`` more bytes. It allocates (``posix_fallocate``)
    a probe file of that size in ``path`` and deletes it, so a user quota counts too; on a
    filesystem that cannot preallocate it compares the free blocks instead. Other OSErrors
    of the probe are raised as they are."""
    probe = path / _PROBE
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            os.posix_fallocate(fd, 0, need)
        except OSError as exc:
            if exc.errno in DISK_FULL_ERRNOS:
                raise OSError(
                    exc.errno, f"{os.strerror(exc.errno)}: {path} cannot take {need} more bytes"
                ) from None
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            st = os.statvfs(path)
            if st.f_bavail * st.f_frsize < need:
                msg = f"{os.strerror(errno.ENOSPC)}: {path} has fewer than {need} bytes free"
                raise OSError(errno.ENOSPC, msg) from None
    finally:
        os.close(fd)
        probe.unlink()


def fsync_dir(path: Path) -> None:
    """Makes the directory entries of ``path`` durable (after a create, rename or unlink in
    it)."""
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


def lmdb_disk_full(exc: BaseException, path: Path, what: str) -> NoSpaceError | None:
    """Returns NoSpaceError(retry False, disk_full True) naming ``what`` when ``exc``, raised
    by LMDB for the store at ``path``, says the disk is full; None for any other exception.
    A full disk is ENOSPC (py-lmdb's DiskError), EDQUOT, or EIO while less than
    ``DISK_FULL_BELOW`` bytes are free: LMDB reports a short page write, what a nearly full
    disk gives, as EIO."""
    if not isinstance(exc, lmdb.Error):
        return None
    text = str(exc).lower()
    if not isinstance(exc, lmdb.DiskError) and "quota exceeded" not in text:
        if "input/output error" not in text:
            return None
        try:
            st = os.statvfs(path)
        except OSError:
            return None
        if st.f_bavail * st.f_frsize >= DISK_FULL_BELOW:
            return None  # a real I/O error
    return NoSpaceError(
        f"{what}: the disk holding {path} is full ({exc}); nothing was written",
        retry=False,
        disk_full=True,
    )
