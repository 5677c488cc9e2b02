"""Snapshots of the state machine: a compacted copy of the LMDB environment plus metadata.

A snapshot is a directory holding ``data.mdb`` (a consistent, compacted copy of the store,
taken from one read transaction while writers go on) and ``snapshot.json`` beside it::

    {"format": 1, "index": 12, "term": 3, "size": 81920, "sha256": "…", "created_ms": …}

``index`` and ``term`` are read from the COPY itself (the applied record the state machine
keeps in the same transaction as the data), so they describe exactly what the file holds.
The directory appears atomically: it is built under a temporary name and renamed.

Restoring copies the snapshot file into a temporary directory inside the data directory,
checking its size and sha256 on the way (ChecksumMismatchError, nothing changed), fsyncs it,
then renames it over ``DATA_DIR/data.mdb`` and fsyncs the directory. The store's whole
durable state is that one file (LMDB's ``lock.mdb`` is rebuilt by the next open), and a rename
is atomic, so a crash during a restore leaves the old state or the new one, never a mix; a
leftover temporary directory is removed by the next restore. The store must be closed while it
is restored (reopen it afterwards).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from boltraft.errors import ChecksumMismatchError, SnapshotError
from boltraft.storage.applied import read_applied
from boltraft.storage.db import DB
from boltraft.storage.fsutil import fsync_dir

DATA_FILE = "data.mdb"
META_FILE = "snapshot.json"
FORMAT = 1
_CHUNK = 1 << 20
_TMP_PREFIX = ".restore-"


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """Describes one snapshot. Invariant: ``sha256`` and ``size`` are those of ``path``."""

    index: int  # the last log index applied in the copy
    term: int  # that entry's term
    size: int  # bytes of the data file
    sha256: str  # hex digest of the data file
    path: Path  # the data file (``<snapshot dir>/data.mdb``)
    created_ms: int = 0  # wall-clock creation time, ms since the epoch

    def to_json(self) -> dict[str, Any]:
        """Returns the metadata as written to ``snapshot.json``."""
        return {
            "format": FORMAT,
            "index": self.index,
            "term": self.term,
            "size": self.size,
            "sha256": self.sha256,
            "created_ms": self.created_ms,
        }


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def copied_applied(copy_dir: Path) -> tuple[int, int]:
    """Returns ``(index, term)`` applied in the store copy in ``copy_dir``, after removing
    every file there but its data file (LMDB's lock file, the copy's own lock)."""
    data = copy_dir / DATA_FILE
    copy = DB.open(copy_dir, readonly=True)
    try:
        index, term, _ = read_applied(copy)
    finally:
        copy.close()
    for extra in copy_dir.iterdir():
        if extra != data:
            extra.unlink()
    return index, term


def file_sha256(path: Path) -> tuple[int, str]:
    """Returns ``(size, sha256 hex digest)`` of the file at ``path``."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


class _HasDB(Protocol):
    """A state machine: anything holding its store as ``db``."""

    db: DB


def create_snapshot(source: _HasDB | DB, dest_dir: str | Path) -> SnapshotInfo:
    """Returns the description of a new snapshot of ``source`` written to ``dest_dir``.

    Writers on ``source`` may go on meanwhile. ``dest_dir`` must not exist yet; it appears
    complete or not at all (its parent is created if needed). Raises SnapshotError when
    ``dest_dir`` exists, and lets I/O errors through (leaving no partial snapshot behind).
    """
    db = source if isinstance(source, DB) else source.db
    dest = Path(dest_dir)
    if dest.exists():
        raise SnapshotError(f"snapshot directory {dest} already exists", path=str(dest))
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        db.copy(tmp, compact=True)
        index, term = copied_applied(tmp)
        data = tmp / DATA_FILE
        size, digest = file_sha256(data)
        _fsync_file(data)
        info = SnapshotInfo(index, term, size, digest, dest / DATA_FILE, int(time.time() * 1000))
        meta = tmp / META_FILE
        meta.write_text(json.dumps(info.to_json(), indent=1) + "\n")
        _fsync_file(meta)
        fsync_dir(tmp)
        os.rename(tmp, dest)
        fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


def load_snapshot_info(snapshot_dir: str | Path) -> SnapshotInfo:
    """Returns the metadata stored in ``snapshot_dir/snapshot.json``.

    Raises SnapshotError when it is missing, unreadable or of an unknown format.
    """
    d = Path(snapshot_dir)
    try:
        raw = json.loads((d / META_FILE).read_text())
        if raw.get("format") != FORMAT:
            raise SnapshotError(f"unknown snapshot format {raw.get('format')!r}", path=str(d))
        return SnapshotInfo(
            int(raw["index"]),
            int(raw["term"]),
            int(raw["size"]),
            str(raw["sha256"]),
            d / DATA_FILE,
            int(raw.get("created_ms", 0)),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SnapshotError(f"cannot read snapshot metadata in {d}: {exc}", path=str(d))


def restore_snapshot(data_dir: str | Path, snapshot_path: str | Path, info: SnapshotInfo) -> None:
    """Replaces the store in ``data_dir`` by the snapshot's copy.

    ``snapshot_path`` is the snapshot's data file or its directory. The store must be closed.
    Raises ChecksumMismatchError when the file's size or sha256 differ from ``info`` (the store
    is unchanged), SnapshotError when the file is missing.
    """
    target = Path(data_dir)
    src = Path(snapshot_path)
    if src.is_dir():
        src = src / DATA_FILE
    if not src.is_file():
        raise SnapshotError(f"snapshot file {src} not found", path=str(src))
    target.mkdir(parents=True, exist_ok=True)
    for stale in target.glob(_TMP_PREFIX + "*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=target))
    try:
        staged = tmp / DATA_FILE
        h = hashlib.sha256()
        size = 0
        with open(src, "rb") as fin, open(staged, "wb") as fout:
            while chunk := fin.read(_CHUNK):
                h.update(chunk)
                size += len(chunk)
                fout.write(chunk)
            fout.flush()
            os.fsync(fout.fileno())
        if size != info.size or h.hexdigest() != info.sha256:
            raise ChecksumMismatchError(
                f"snapshot {src} does not match its metadata",
                expected_sha256=info.sha256,
                actual_sha256=h.hexdigest(),
                expected_size=info.size,
                actual_size=size,
            )
        os.replace(staged, target / DATA_FILE)
        fsync_dir(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
