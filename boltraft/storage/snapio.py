"""The disk side of snapshots: writing a snapshot file without stalling the Raft log's
fsyncs, and receiving one chunk by chunk.

Writing hundreds of MB and fsyncing them at the end fills the page cache with dirty pages
that the final fsync (or the kernel's flusher) pushes out in one burst, during which every
log fsync waits behind it. Here a file is flushed in steps instead (``StepFlusher``): after
every ``FLUSH_STEP`` bytes, writeback of that step is started (``sync_file_range``, which
touches no metadata and so never forces a journal commit that log fsyncs would wait on) and
the step before it is waited for, so at most two steps are ever dirty. The copy is made by
a child process (``boltraft.storage.copier``) and it and the thread that writes run at low
CPU and I/O priority (``low_priority``), so the node loop and its fsyncs go first. The final
``fdatasync`` then has almost nothing left to write.

``ChunkSink`` receives a snapshot's chunks (in any order) on its own thread: it writes each
one, hashes the contiguous prefix as it grows (chunks that arrive ahead wait in memory; at
most a window of them) and flushes in steps, so the end of a download costs one small
fdatasync and no re-read of the file.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import json
import os
import queue
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from boltraft.storage.copier import copy_store, low_priority
from boltraft.storage.db import DB
from boltraft.storage.fsutil import fsync_dir
from boltraft.storage.snapshot import (
    DATA_FILE,
    META_FILE,
    SnapshotInfo,
    copied_applied,
    load_snapshot_info,
)

FLUSH_STEP = 2 << 20  # bytes written between two writeback steps of a snapshot copy
RECV_STEP = 16 << 20  # the same for a received snapshot (nothing else waits on that disk)
_PIPE_SIZE = 1 << 20
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_SFR_WAIT_BEFORE, _SFR_WRITE, _SFR_WAIT_AFTER = 1, 2, 4

try:
    _sync_file_range: Any = ctypes.CDLL(None, use_errno=True).sync_file_range
    _sync_file_range.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
except (OSError, AttributeError):
    _sync_file_range = None


class StepFlusher:
    """Flushes the first bytes of a file in ``step``-sized steps as they are written, and
    with ``rate`` > 0 (bytes/s) sleeps between steps to stay at or below that rate.

    Invariant: ``0 <= waited <= started``; bytes below ``waited`` are on disk (data only),
    writeback of bytes below ``started`` was requested."""

    def __init__(self, fd: int, step: int = FLUSH_STEP, rate: float = 0.0) -> None:
        self.fd = fd
        self.step = step
        self.rate = rate
        self.t0 = time.monotonic()
        self.started = 0
        self.waited = 0

    def wrote(self, end: int) -> None:
        """Notes that bytes ``[0, end)`` are written: starts writeback of every whole step
        below ``end`` not started yet and waits for the steps before the newest."""
        while end - self.started >= self.step:
            begin = self.started
            self.started += self.step
            if _sync_file_range is None:
                os.fdatasync(self.fd)
                self.waited = self.started
                continue
            _sync_file_range(self.fd, begin, self.step, _SFR_WRITE)
            if begin > self.waited:
                flags = _SFR_WAIT_BEFORE | _SFR_WRITE | _SFR_WAIT_AFTER
                _sync_file_range(self.fd, self.waited, begin - self.waited, flags)
                self.waited = begin
            if self.rate > 0:
                ahead = self.started / self.rate - (time.monotonic() - self.t0)
                if ahead > 0:
                    time.sleep(ahead)

    def finish(self) -> None:
        """Makes the whole file durable (data and size)."""
        os.fdatasync(self.fd)
        self.waited = self.started


def write_snapshot(db: DB, parent: Path, fsync: bool = True, rate: float = 0.0) -> SnapshotInfo:
    """Returns the description of a new snapshot of ``db`` in ``parent/<index>-<term>``.

    A child process writes LMDB's compacted copy of ONE read transaction into a pipe
    (writers on ``db`` go on meanwhile) while a thread here hashes it and writes it,
    flushing in steps; both run at low priority, at most ``rate`` bytes/s when ``rate`` > 0.
    The directory is named after the applied index the copy holds and appears complete
    (data file, then ``snapshot.json``) or not at all; when a snapshot of that index
    already exists it is returned instead. With ``fsync`` the data is durable before the
    metadata is written. I/O errors propagate and leave nothing behind.
    """
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".new-", dir=parent))
    data = tmp / DATA_FILE
    r, w = os.pipe()
    failure: list[BaseException] = []
    h = hashlib.sha256()
    size = [0]

    def produce() -> None:
        try:
            copy_store(db.path, fd=w, low=True)  # a child: see boltraft.storage.copier
        except BaseException as exc:  # reported below
            failure.append(exc)
        finally:
            os.close(w)

    def consume() -> None:
        try:
            low_priority()
            fd = os.open(data, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                flusher = StepFlusher(fd, rate=rate)
                while chunk := os.read(r, _PIPE_SIZE):
                    h.update(chunk)
                    os.write(fd, chunk)  # a regular file: short writes only on errors
                    size[0] += len(chunk)
                    if fsync:
                        flusher.wrote(size[0])
                if fsync:
                    flusher.finish()
            finally:
                os.close(fd)
        except BaseException as exc:
            failure.append(exc)
            os.close(r)  # the producer then fails on EPIPE instead of blocking
            r_closed.set()

    r_closed = threading.Event()
    try:
        try:
            fcntl.fcntl(w, _F_SETPIPE_SZ, _PIPE_SIZE)
        except OSError:
            pass  # a smaller pipe is only slower
        threads = [
            threading.Thread(target=produce, name="snapshot-copy", daemon=True),
            threading.Thread(target=consume, name="snapshot-write", daemon=True),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if failure:
            raise failure[0]
        return _seal(tmp, parent, size[0], h.hexdigest(), fsync)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if not r_closed.is_set():
            os.close(r)


def _seal(tmp: Path, parent: Path, size: int, digest: str, fsync: bool) -> SnapshotInfo:
    """Returns the info of the snapshot in ``tmp`` after renaming it to its final name."""
    index, term = copied_applied(tmp)
    dest = parent / f"{index:020d}-{term}"
    if dest.exists():
        shutil.rmtree(tmp, ignore_errors=True)
        return load_snapshot_info(dest)
    info = SnapshotInfo(index, term, size, digest, dest / DATA_FILE, int(time.time() * 1000))
    (tmp / META_FILE).write_text(json.dumps(info.to_json(), indent=1) + "\n")
    if fsync:
        fsync_dir(tmp)
    os.rename(tmp, dest)
    if fsync:
        fsync_dir(parent)
    return info


PROGRESS_FILE = "progress.json"


class ChunkSink:
    """Writes one received snapshot file on its own thread, hashing it as it grows.

    The loop thread calls ``put`` (any order, each offset once) and ``finish``; the sink's
    thread writes, hashes the contiguous prefix and flushes in steps. After each step it
    records ``{"sid", "hashed"}`` in ``progress.json`` next to the file (not fsynced: after
    a machine crash a resumed download may hold bad bytes, which the final sha256 catches).

    Invariants: ``hashed`` bytes from offset 0 are written and hashed; every key of
    ``_ahead`` is above ``hashed``; ``_put`` (only the loop thread writes it) minus ``_written``
    (only the sink's thread writes it) is the number of chunks queued and not yet written.
    """

    def __init__(self, path: Path, sid: str, size: int, resume: int = 0) -> None:
        """``resume``: bytes at the start of an existing ``path`` to keep (re-hashed on the
        sink's thread before any chunk is written)."""
        self.path = path
        self.sid = sid
        self.size = size
        self.hashed = 0
        self._put = 0
        self._written = 0
        self.error: BaseException | None = None
        self._resume = resume
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | (0 if resume else os.O_TRUNC), 0o644)
        self._h = hashlib.sha256()
        self._ahead: dict[int, bytes] = {}
        self._q: queue.SimpleQueue[tuple[int, bytes] | None] = queue.SimpleQueue()
        self._flusher = StepFlusher(self._fd, RECV_STEP)
        self._recorded = 0
        self._done = threading.Event()
        self.digest = ""
        self._thread = threading.Thread(target=self._run, name="snapshot-recv", daemon=True)
        self._thread.start()

    def put(self, off: int, data: bytes) -> None:
        """Queues ``data`` to be written at ``off``."""
        self._put += 1
        self._q.put((off, data))

    @property
    def pending(self) -> int:
        """Returns how many chunks were put and are not written yet."""
        return self._put - self._written

    def finish(self) -> None:
        """Tells the sink that every chunk was put: it then flushes the file and sets
        ``digest`` (see ``done``)."""
        self._q.put(None)

    def done(self) -> bool:
        """Returns True once ``finish``'s work (or a failure, see ``error``) is over."""
        return self._done.is_set()

    def close(self) -> None:
        """Stops the thread (once the chunks put are written and flushed) and closes the
        file (the file stays)."""
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _run(self) -> None:
        try:
            if self._resume:
                self._rehash(self._resume)
            while (item := self._q.get()) is not None:
                off, data = item
                os.pwrite(self._fd, data, off)
                self._written += 1
                if off == self.hashed:
                    self._advance(data)
                    while (nxt := self._ahead.pop(self.hashed, None)) is not None:
                        self._advance(nxt)
                elif off > self.hashed:
                    self._ahead[off] = data
            self._flusher.finish()
            self._record(self.hashed)
            self.digest = self._h.hexdigest()
        except BaseException as exc:  # reported through ``error``
            self.error = exc
        finally:
            self._done.set()

    def _rehash(self, upto: int) -> None:
        while self.hashed < upto:
            data = os.pread(self._fd, min(FLUSH_STEP, upto - self.hashed), self.hashed)
            if not data:
                break
            self._h.update(data)
            self.hashed += len(data)

    def _advance(self, data: bytes) -> None:
        self._h.update(data)
        self.hashed += len(data)
        self._flusher.wrote(self.hashed)
        if self._flusher.waited > self._recorded:
            self._record(self._flusher.waited)

    def _record(self, durable: int) -> None:
        """Records that the first ``durable`` bytes are written, flushed and hashed."""
        self._recorded = durable
        tmp = self.path.parent / (PROGRESS_FILE + ".tmp")
        tmp.write_text(json.dumps({"sid": self.sid, "hashed": durable}))
        os.replace(tmp, self.path.parent / PROGRESS_FILE)


def resumable(recv_dir: Path, sid: str, chunk: int) -> int:
    """Returns how many bytes of a download of ``sid`` kept in ``recv_dir`` can be kept (a
    multiple of ``chunk``; 0 when nothing usable is there)."""
    try:
        progress = json.loads((recv_dir / PROGRESS_FILE).read_text())
        hashed = int(progress["hashed"]) if progress["sid"] == sid else 0
        on_disk = (recv_dir / DATA_FILE).stat().st_size
    except (OSError, ValueError, KeyError, TypeError):
        return 0
    return max(min(hashed, on_disk), 0) // chunk * chunk
