"""``WalLogStore``: the Raft log as a segmented append-only write-ahead log.

Why: a synced LMDB commit costs two fsyncs (data pages, then the meta page) and grows its
file; appending one record to a file and ``fdatasync``-ing it costs one. Each ``append`` is
ONE ``os.write`` of its ``ENTRIES`` record and its ``HARD_STATE`` record and ONE
``fdatasync`` (the two records count as one: recovery keeps both or neither). Format and
recovery: ``boltraft.storage.wal.format`` and ``.recovery``.

Files in ``path``: ``LOCK`` (an exclusive flock while a store is open) and the segments
``<seq, 20 digits>.wal``, each opened by a ``STATE`` record so that older segments can be
deleted whole (``compact``, ``apply_snapshot``).

A syncing store preallocates its current segment to ``segment_bytes`` (``files.preallocate``)
and writes its records into the reserved zeros, so that an append's ``fdatasync`` finds no
file size to commit. Only the current segment has such a tail: it is cut off before the
next segment is opened (and synced, so every older segment ends with its last record) and
at ``close``; after a crash, recovery cuts it off as a torn tail (a zero header is no
record) and the store reserves the space again.

Not thread-safe: one thread (or a lock held by the caller) uses a store at a time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from operator import itemgetter
from pathlib import Path
from typing import BinaryIO, NoReturn

from boltraft.errors import (
    CorruptionError,
    InvalidArgumentError,
    LogCompactedError,
    LogUnavailableError,
)
from boltraft.raft.log import limit_size
from boltraft.raft.memstore import (
    check_compact,
    check_conf_state,
    check_range,
    check_snapshot,
)
from boltraft.raft.types import ConfState, Entry, HardState, SnapshotMeta
from boltraft.storage.fsutil import fsync_dir, lock_dir
from boltraft.storage.wal import format as fmt
from boltraft.storage.wal.cache import EntryCache
from boltraft.storage.wal.files import open_segment, preallocate, segment_name, write_all
from boltraft.storage.wal.recovery import recover

log = logging.getLogger(__name__)
_EMPTY_HS = HardState()
_EMPTY_CS = ConfState()
_INDEX = itemgetter(1)
_TERM = itemgetter(0)
_RT = fmt.RecordType


class WalLogStore:
    """A durable ``LogStore`` (see ``boltraft.raft.types.LogStore``) in the directory ``path``.

    ``sync``: appends (unless called with ``sync=False``), compactions, snapshots and segment
    changes are fdatasynced before they return; with ``sync=False`` nothing is, for tests
    and benchmarks. A segment that passes ``segment_bytes`` is closed and the next append
    opens a new one. The ``cache_bytes`` most recently appended bytes of entries are kept in
    memory (the leader sends what it just appended); older entries are read back from disk.

    Raises DataDirLockedError when another open store (in any process) holds ``path``,
    CorruptionError when a segment is damaged other than by a torn final write (a record
    that cannot be read, with written records after it, is damage: see ``.recovery``),
    InvalidArgumentError for a ``segment_bytes`` or ``cache_bytes`` below 1.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        sync: bool = True,
        segment_bytes: int = 64 << 20,
        cache_bytes: int = 8 << 20,
    ) -> None:
        if segment_bytes < 1 or cache_bytes < 1:
            raise InvalidArgumentError(
                "segment_bytes and cache_bytes must be positive",
                segment_bytes=segment_bytes,
                cache_bytes=cache_bytes,
            )
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._sync = sync
        self._segment_bytes = segment_bytes
        self._lock: BinaryIO | None = lock_dir(self.path)
        self._fds: dict[int, int] = {}  # segment -> open descriptor (the last one appends)
        try:
            rec = recover(self.path, sync)
            if rec.torn is not None:
                log.warning(
                    "raft log segment %s: cut a torn final write at offset %d (%d bytes)",
                    *rec.torn,
                )
            self._hs = rec.hs
            self._snap = rec.snap
            self._idx = rec.index  # invariant: _idx.first == _snap.index + 1
            self._segs: list[int] = rec.segments  # ascending, contiguous; last = current
            self._size = rec.tail_size  # bytes in the current segment
            self._dirty = False  # the current segment holds writes not yet fdatasynced
            # The current segment is preallocated past _size (zeros up to segment_bytes).
            self._reserved = False
            # A suffix of the log (reaching below _idx.first after a compaction).
            self._cache = EntryCache(cache_bytes, self._idx.last + 1)
            # The last ENTRIES record decoded from disk: a follower catching up reads one
            # record in several max_bytes-limited pieces.
            self._dec_key: tuple[int, int] = (0, -1)
            self._dec_ents: list[Entry] = []
            if self._segs:
                seq = self._segs[-1]
                fd = open_segment(self.path / segment_name(seq), create=False)
                self._fds[seq] = fd
                self._reserved = sync and preallocate(fd, self._size, segment_bytes)
            else:
                self._open_segment(fmt.encode_state(self._snap, self._hs, False))
        except BaseException:
            self._release()
            raise

    # --- reads -------------------------------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        """Returns the stored hard state and the membership as of the snapshot."""
        return self._hs, self._snap.conf_state

    def first_index(self) -> int:
        """Returns the snapshot index + 1."""
        return self._idx.first

    def last_index(self) -> int:
        """Returns the index of the last entry, or the snapshot index when the log is empty."""
        return self._idx.last

    def snapshot_meta(self) -> SnapshotMeta:
        """Returns the latest snapshot's metadata (index 0 when there is none)."""
        return self._snap

    def term(self, index: int) -> int:
        """Returns the term of entry ``index`` (the snapshot's term at the snapshot index),
        from memory. Raises LogCompactedError below the snapshot index, LogUnavailableError
        past the end."""
        idx = self._idx
        if index >= idx.first:
            if index > idx.last:
                raise LogUnavailableError(
                    f"index {index} is past the last index {idx.last}", index=index
                )
            return idx.terms[index - idx.first]
        if index == idx.first - 1:
            return self._snap.term
        raise LogCompactedError(f"index {index} is compacted", index=index)

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Returns entries ``[lo, hi)`` (empty when ``lo == hi``); with ``max_bytes``, the
        longest prefix whose data totals <= ``max_bytes``, but at least one entry. Recent
        entries come from memory, older ones from their records on disk.

        Raises LogCompactedError when ``lo`` <= the snapshot index, LogUnavailableError when
        ``hi`` > last index + 1, InvalidArgumentError when ``lo > hi``, CorruptionError when
        a record read back is damaged."""
        idx = self._idx
        if not check_range(lo, hi, idx.first, idx.last):
            return []
        cache = self._cache
        cf = cache.first
        if lo >= cf:
            return limit_size(cache.entries[lo - cf : hi - cf], max_bytes)
        out = self._read_disk(lo, min(hi, cf), max_bytes)
        if hi > cf and lo + len(out) == cf:
            out += cache.entries[: hi - cf]
        return limit_size(out, max_bytes)

    def _read_disk(self, lo: int, hi: int, max_bytes: int | None) -> list[Entry]:
        """Returns entries ``[lo, hi)`` read from their records, stopping after the record
        whose data passes ``max_bytes``. Raises CorruptionError for a damaged record."""
        idx = self._idx
        k = idx.record_of(lo)
        out: list[Entry] = []
        total = 0
        i = lo
        while i < hi:
            first = idx.rec_first[k]
            end = min(hi, idx.record_end(k))
            part = self._record_entries(k)[i - first : end - first]
            if len(part) != end - i or (part and part[0].index != i):
                self._corrupt(k, "does not hold the entries the index expects")
            out += part
            i = end
            k += 1
            if max_bytes is not None:
                total += sum(len(e.data) for e in part)
                if total > max_bytes:
                    break
        return out

    def _record_entries(self, k: int) -> list[Entry]:
        """Returns the entries of record ``k`` of the index (the last one decoded is kept)."""
        idx = self._idx
        seg, off = idx.rec_seg[k], idx.rec_off[k]
        if self._dec_key == (seg, off):
            return self._dec_ents
        fd = self._fds.get(seg)
        if fd is None:
            fd = self._fds[seg] = open_segment(self.path / segment_name(seg), create=False)
        raw = os.pread(fd, idx.rec_size[k], off)
        rec = fmt.read_record(memoryview(raw), 0)
        if rec is None or rec[0] not in (_RT.ENTRIES, _RT.ENTRIES_HS):
            self._corrupt(k, "is unreadable")
        try:
            ents = fmt.decode_entries(rec[1])
        except (ValueError, TypeError) as exc:
            self._corrupt(k, f"cannot be decoded ({exc})")
        self._dec_key, self._dec_ents = (seg, off), ents
        return ents

    def _corrupt(self, k: int, what: str) -> NoReturn:
        file = self.path / segment_name(self._idx.rec_seg[k])
        off = self._idx.rec_off[k]
        raise CorruptionError(
            f"raft log segment {file}: the record at offset {off} {what}",
            path=str(file),
            offset=off,
        )

    # --- writes ------------------------------------------------------------------------
    def append(
        self, entries: Sequence[Entry], hard_state: HardState | None = None, sync: bool = True
    ) -> None:
        """Writes ``entries`` (replacing the stored suffix from ``entries[0].index``; entries
        at or below the snapshot index are skipped) and ``hard_state`` as one write of one or
        two records, fdatasynced when ``sync`` and the store syncs. A hard state alone with
        ``sync=False`` is written but not synced: it survives a process crash, an OS crash
        may lose it.

        Raises InvalidArgumentError for a gap after the last index, non-contiguous indexes or
        a decreasing term; NoSpaceError when the disk is full; nothing is written then."""
        if not entries:
            if hard_state is not None:
                self._write(fmt.frame(_RT.HARD_STATE, fmt.encode_hs(hard_state)), sync)
                self._hs = hard_state
            return
        idx = self._idx
        start = entries[0].index
        n = len(entries)
        if start > idx.last + 1:
            raise InvalidArgumentError(
                f"append from {start} would leave a gap after the last index {idx.last}",
                index=start,
                last_index=idx.last,
            )
        prev = self.term(start - 1) if start >= idx.first else 0
        if n == 1:
            terms = [entries[0].term]
        else:
            terms = list(map(_TERM, entries))
            if list(map(_INDEX, entries)) != list(range(start, start + n)):
                raise InvalidArgumentError(
                    f"entry indexes from {start} are not contiguous", index=start
                )
            if sorted(terms) != terms:
                raise InvalidArgumentError(f"entry terms from {start} go down", index=start)
        if terms[0] < prev or terms[0] < 1:
            raise InvalidArgumentError(
                f"entry {start} has term {terms[0]} below the term {prev} before it",
                index=start,
            )
        if start < idx.first:
            skip = idx.first - start
            entries, terms, start = entries[skip:], terms[skip:], idx.first
            if not entries:
                self.append((), hard_state, sync)
                return
        payload = fmt.encode_entries(entries)
        if hard_state is None:
            head = fmt.header(_RT.ENTRIES, payload)
            buf = head + payload
        else:
            head = fmt.header(_RT.ENTRIES_HS, payload)
            hs_payload = fmt.encode_hs(hard_state)
            buf = b"".join((head, payload, fmt.header(_RT.HARD_STATE, hs_payload), hs_payload))
        off = self._write(buf, sync)
        idx.add(start, terms, self._segs[-1], off, len(head) + len(payload))
        if hard_state is not None:
            self._hs = hard_state
        self._cache.add(start, entries, len(payload))

    def compact(self, meta: SnapshotMeta) -> None:
        """Durably records ``meta`` (a ``SNAPSHOT`` record), drops the entries up to
        ``meta.index`` and deletes the old segments that held only those.

        Raises LogCompactedError when ``meta.index`` <= the snapshot index,
        LogUnavailableError past the last index, InvalidArgumentError when ``meta.term`` is
        not the term of entry ``meta.index``; NoSpaceError; nothing changes then."""
        check_compact(meta, self._snap.index, self.term)
        self._write(fmt.frame(_RT.SNAPSHOT, fmt.encode_snap(meta)), True)
        self._idx.compact(meta.index)
        self._snap = meta
        oldest = self._idx.oldest_segment()
        self._delete_segments_before(self._segs[-1] if oldest is None else oldest)

    def apply_snapshot(self, meta: SnapshotMeta, hard_state: HardState | None = None) -> None:
        """Replaces the whole log by ``meta`` (empty at ``meta.index``) and stores
        ``hard_state`` when given: a new segment opened by a ``STATE`` record (synced, with
        the directory), then every older segment deleted.

        Raises LogCompactedError (changing nothing) when ``meta.index`` is below the current
        snapshot index; NoSpaceError."""
        check_snapshot(meta, self._snap.index)
        hs = self._hs if hard_state is None else hard_state
        self._open_segment(fmt.encode_state(meta, hs, True))
        self._snap, self._hs = meta, hs
        self._idx.reset(meta.index)
        self._cache.reset(meta.index + 1)
        self._delete_segments_before(self._segs[-1])

    def bootstrap(self, conf_state: ConfState) -> bool:
        """Returns True after durably recording ``conf_state`` as the membership of an empty
        store; False, changing nothing, when the store holds any entry, snapshot, hard state
        or membership. Raises InvalidArgumentError for a membership without voters or with a
        member listed twice."""
        check_conf_state(conf_state)
        snap = self._snap
        if self._idx.last or snap.index or self._hs != _EMPTY_HS or snap.conf_state != _EMPTY_CS:
            return False
        self._write(fmt.frame(_RT.BOOTSTRAP, fmt.encode_conf(conf_state)), True)
        self._snap = SnapshotMeta(0, 0, conf_state)
        return True

    def sync(self) -> None:
        """Makes every record written so far durable: one ``fdatasync`` of the current
        segment when something was written unsynced (rotation already synced the older
        ones). May run on another thread while the owner makes no other call."""
        if self._dirty and self._sync and self._segs:
            os.fdatasync(self._fds[self._segs[-1]])
            self._dirty = False

    def close(self) -> None:
        """Closes the segments and releases the directory lock (a hard state written with
        ``sync=False`` is fdatasynced first); closing twice is harmless.
        The store must not be used afterwards."""
        if self._reserved:  # a stopped store keeps no reserved tail
            os.ftruncate(self._fds[self._segs[-1]], self._size)
            self._reserved = False
        if self._dirty and self._sync and self._segs:
            os.fdatasync(self._fds[self._segs[-1]])
            self._dirty = False
        self._release()

    # --- internals ---------------------------------------------------------------------
    def _write(self, buf: bytes, sync: bool) -> int:
        """Returns the offset in the current segment at which ``buf`` was written (after
        rotating to a new segment when the current one is full), fdatasynced when ``sync``
        and the store syncs. Raises NoSpaceError (the segment cut back, nothing written)
        when the disk is full."""
        if self._size >= self._segment_bytes:
            self._rotate()
        fd = self._fds[self._segs[-1]]
        off = self._size
        try:
            write_all(fd, buf, off, self.path)
        except BaseException:
            self._reserved = False  # write_all cut the file back to off
            raise
        self._size = off + len(buf)
        if sync and self._sync:
            os.fdatasync(fd)
            self._dirty = False
        else:
            self._dirty = True
        return off

    def _rotate(self) -> None:
        """Opens the next segment (``_open_segment`` seals this one)."""
        self._open_segment(fmt.encode_state(self._snap, self._hs, False))

    def _seal(self) -> None:
        """Cuts the current segment (if any) back from its reserved tail to its last record
        and syncs it when the store syncs: recovery reads every segment but the last one to
        its end."""
        if not self._segs:
            return
        fd = self._fds[self._segs[-1]]
        os.ftruncate(fd, self._size)  # also when a failed write_all left the tail unknown
        self._reserved = False
        if self._sync:
            os.fdatasync(fd)
            self._dirty = False

    def _open_segment(self, state: bytes) -> None:
        """Seals the current segment and opens the next one, which starts with the ``STATE``
        payload ``state`` (file and directory synced when the store syncs; preallocated
        when it syncs). Raises NoSpaceError (the new file removed) when the disk is full."""
        self._seal()
        seq = self._segs[-1] + 1 if self._segs else 1
        file = self.path / segment_name(seq)
        fd = open_segment(file, create=True)
        buf = fmt.frame(_RT.STATE, state)
        try:
            reserved = self._sync and preallocate(fd, 0, self._segment_bytes)
            write_all(fd, buf, 0, self.path)
            if self._sync:
                os.fdatasync(fd)
                fsync_dir(self.path)
        except BaseException:
            os.close(fd)
            file.unlink(missing_ok=True)
            raise
        self._fds[seq] = fd
        self._segs.append(seq)
        self._size = len(buf)
        self._dirty = False
        self._reserved = reserved

    def _delete_segments_before(self, seq: int) -> None:
        """Deletes the segments numbered below ``seq`` (directory synced when the store
        syncs)."""
        k = 0
        while k < len(self._segs) and self._segs[k] < seq:
            old = self._segs[k]
            fd = self._fds.pop(old, None)
            if fd is not None:
                os.close(fd)
            (self.path / segment_name(old)).unlink()
            k += 1
        if k:
            del self._segs[:k]
            self._dec_key = (0, -1)
            if self._sync:
                fsync_dir(self.path)

    def _release(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        if self._lock is not None:
            self._lock.close()  # closing the descriptor drops the flock
            self._lock = None
