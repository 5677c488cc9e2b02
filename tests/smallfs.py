"""A small REAL filesystem for full-disk tests: an ext4 image on a loop device, so that a full
disk fails writes the way it does in production (ENOSPC from ``write``, LMDB's DiskError at
commit). Needs root, ``mkfs.ext4`` and loop devices; the tests that use it skip without them
(CI runs as root)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

FILLER = "filler"


def _run(*argv: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, capture_output=True, timeout=60)


@contextlib.contextmanager
def small_filesystem(mount_point: Path, mib: int = 16) -> Iterator[Path]:
    """Yields ``mount_point`` with a new, empty ``mib`` MiB ext4 filesystem mounted on it
    (no blocks reserved for root); unmounts it and deletes its image afterwards. Skips the
    test when this machine cannot mount one."""
    if os.geteuid() != 0 or shutil.which("mkfs.ext4") is None:
        pytest.skip("full-disk tests mount a loop filesystem: they need root and mkfs.ext4")
    image = mount_point.with_name(mount_point.name + ".img")
    with open(image, "wb") as f:
        f.truncate(mib << 20)
    made = _run("mkfs.ext4", "-q", "-F", "-m", "0", str(image))
    mount_point.mkdir(parents=True, exist_ok=True)
    mounted = made.returncode == 0 and _run("mount", "-o", "loop", str(image), str(mount_point))
    if not mounted or mounted.returncode != 0:
        image.unlink(missing_ok=True)
        why = (made.stderr or (mounted and mounted.stderr) or b"").decode(errors="replace")
        pytest.skip(f"cannot mount a loop filesystem here: {why.strip()}")
    try:
        (mount_point / "lost+found").rmdir()  # an empty directory, as a node's data dir is
        yield mount_point
    finally:
        if _run("umount", str(mount_point)).returncode != 0:
            _run("umount", "-l", str(mount_point))  # a process still holds a file: detach
        image.unlink(missing_ok=True)


def fill(fs: Path) -> Path:
    """Returns the file that now takes every free block of the filesystem at ``fs`` (delete
    it to free them). A process writing there meanwhile can free blocks as its own writes
    settle (ext4 gives back what it had reserved for them), so the file takes those too,
    until none is left (at most 50 rounds)."""
    path = fs / FILLER
    chunk = b"\0" * (64 << 10)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for _ in range(50):
            for size in (len(chunk), 4096, 1):  # big writes, then the last blocks' bytes
                while True:
                    try:
                        os.write(fd, chunk[:size])
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
            os.fsync(fd)
            if free_bytes(fs) == 0:
                break
    finally:
        os.close(fd)
    return path


def free_bytes(fs: Path) -> int:
    """Returns the bytes an unprivileged writer could still write at ``fs``."""
    st = os.statvfs(fs)
    return st.f_bavail * st.f_frsize
