"""Opening a bucket store's LMDB environment: the writer's lock file and read-only opens.

A writable open takes ``DIR/boltraft.lock`` (``flock``, exclusive, non-blocking; the file
holds the writer's pid for the error message of the next one). A read-only open never
changes the store: it takes the lock file shared when it exists and no writer holds it (no
writer can then start, so LMDB's own lock table is not needed and not touched); with a
writer running it reads through LMDB's lock table like any other reader.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

import lmdb

from boltraft.errors import CorruptionError, DataDirLockedError, DataDirNotFoundError
from boltraft.storage.layout import MAX_DBS, SubDbs, open_store

LOCK_FILE = "boltraft.lock"
"""Held (flock, exclusive) by the one process that has the directory open writable."""

_MAP_STEP = 1 << 16  # map sizes are rounded up to a multiple of this


def round_map(size: int) -> int:
    """Returns ``size`` rounded up to a whole number of 64 KiB steps (a map size)."""
    return -(-size // _MAP_STEP) * _MAP_STEP


def open_writable(
    p: Path, map_size: int, sync: bool, metasync: bool
) -> tuple[lmdb.Environment, SubDbs, int]:
    """Returns ``(env, sub-dbs, lock fd)`` of the store in ``p``, creating the directory and
    the store if needed; the fd holds ``p/boltraft.lock`` exclusively until closed.

    ``map_size`` must already be rounded (``round_map``). Raises DataDirLockedError (another
    writer, or a lock-free reader), CorruptionError (not a boltraft store, or another format
    version); nothing stays open then.
    """
    p.mkdir(parents=True, exist_ok=True)
    fd = _lock_writer(p)
    try:
        env = lmdb.open(
            str(p),
            map_size=map_size,
            subdir=True,
            max_dbs=MAX_DBS,
            sync=sync,
            metasync=metasync,
            writemap=False,
            meminit=False,
        )
        try:
            dbs = open_store(env, p)
        except BaseException:
            env.close()
            raise
    except BaseException:
        os.close(fd)
        raise
    return env, dbs, fd


def open_readonly(p: Path) -> tuple[lmdb.Environment, SubDbs, int | None]:
    """Returns ``(env, sub-dbs, lock fd)`` of the store in ``p`` opened read-only; the fd
    (None while a writer runs or without a lock file) holds ``p/boltraft.lock`` shared.

    Raises DataDirNotFoundError (no store in ``p``), DataDirLockedError (already open in
    this process), CorruptionError (unreadable, not a boltraft store, another format
    version); nothing stays open then.
    """
    if not (p / "data.mdb").is_file():
        raise DataDirNotFoundError(f"no bucket store in {p}", path=str(p))
    fd: int | None = None
    use_lock = True
    with contextlib.suppress(FileNotFoundError):
        fd = os.open(p / LOCK_FILE, os.O_RDONLY)
    if fd is None:
        use_lock = (p / "lock.mdb").exists()
    else:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            use_lock = False  # no writer; our shared lock keeps one from starting
        except BlockingIOError:
            os.close(fd)
            fd = None
    try:
        env = lmdb.open(
            str(p), subdir=True, readonly=True, lock=use_lock, max_dbs=MAX_DBS, map_size=0
        )
    except lmdb.Error as exc:
        if fd is not None:
            os.close(fd)
        if "already open" in str(exc):
            raise DataDirLockedError(
                f"data directory {p} is already open in this process", path=str(p)
            )
        raise CorruptionError(f"cannot open the store in {p}: {exc}", path=str(p))
    try:
        dbs = open_store(env, p)
    except BaseException:
        env.close()
        if fd is not None:
            os.close(fd)
        raise
    return env, dbs, fd


def _lock_writer(p: Path) -> int:
    """Returns the fd of ``p/boltraft.lock`` locked exclusively; DataDirLockedError if taken."""
    fd = os.open(p / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        raise DataDirLockedError(
            f"data directory {p} is in use by another process"
            + (f" (last writer pid {holder})" if holder else ""),
            path=str(p),
        )
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
