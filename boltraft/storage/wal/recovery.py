"""Rebuilds a WAL's state from its segments when it is opened.

``recover(path, sync)`` reads every segment in order and checks every record's CRC. A short
or bad record at the very END of the last segment is a torn write (nothing from there on was
ever synced: a store fsyncs each append and rotation fsyncs a segment before opening the
next): the file is cut there, and ``Recovered.torn`` says where and how much. The END means
that nothing but zeros (the preallocated tail) follows the bytes the bad record's header
claims (or those run past the end of the file), and that no whole valid record starts in
the written bytes after the bad one's start (``_torn_tail``): a record damaged in the
middle (a flipped bit, also one in its length), with written records after it, is
CorruptionError, never a cut that would drop the records after it. A last segment left
without its ``STATE`` record (a rotation or ``apply_snapshot`` that crashed while opening
it) is removed. Anything bad elsewhere raises
CorruptionError naming the file and offset.

Replay rules (``_Replay``): the first segment's ``STATE`` sets the snapshot and hard state;
``ENTRIES`` at ``i`` replaces everything from ``i``; ``SNAPSHOT`` drops the prefix it covers;
a ``STATE`` with ``reset`` empties the log (``apply_snapshot``) and makes the older segments
obsolete (deleted here if a crash left them). ``compact`` deletes whole old segments, so the
first remaining segment may start with a ``STATE`` older than the entries that follow: while
replaying (unless a ``STATE`` with ``reset`` came first) the log may start above the snapshot
index, since the deleted segments held the entries between; after the last record it must
not (CorruptionError: a segment is missing).
"""

from __future__ import annotations

import mmap
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import msgpack

from boltraft.errors import CorruptionError
from boltraft.raft.types import HardState, SnapshotMeta
from boltraft.storage.fsutil import fsync_dir
from boltraft.storage.wal import format as fmt
from boltraft.storage.wal.files import segment_name
from boltraft.storage.wal.index import LogIndex

SEGMENT_RE = re.compile(r"^(\d{20})\.wal$")
_DECODE_ERRORS = (ValueError, TypeError, IndexError, struct.error, msgpack.UnpackException)


@dataclass
class Recovered:
    """What a WAL holds. ``segments`` ascend and are contiguous; the last one is the one to
    append to, ``tail_size`` bytes long; empty when the directory holds no segment yet."""

    hs: HardState = field(default_factory=HardState)
    snap: SnapshotMeta = field(default_factory=SnapshotMeta)
    index: LogIndex = field(default_factory=LogIndex)
    segments: list[int] = field(default_factory=list)
    tail_size: int = 0
    torn: tuple[str, int, int] | None = None  # a cut torn tail: (file, offset, bytes cut)


class _Replay:
    """Applies records in order (see the module docstring)."""

    def __init__(self) -> None:
        self.out = Recovered()
        # The first segment was opened by a rotation, so the segments before it may have
        # been deleted by a compaction: the log may start above the snapshot index.
        self.gap_allowed = False
        self.obsolete: list[int] = []  # segments before a reset STATE

    def state(self, payload: memoryview, seg: int, first_segment: bool) -> None:
        reset, snap, hs = fmt.decode_state(payload)
        out = self.out
        if reset:
            self.obsolete = [s for s in out.segments if s < seg]
            self.gap_allowed = False
        elif not first_segment:
            return  # a rotation's copy of what the records before it already built
        else:
            self.gap_allowed = True
        out.snap, out.hs = snap, hs
        out.index.reset(snap.index)

    def entries(self, payload: memoryview, seg: int, off: int, size: int) -> None:
        start, terms = fmt.entry_terms(payload)
        idx = self.out.index
        if start < idx.first or start > idx.last + 1:
            empty = idx.last < idx.first
            if not self.gap_allowed or start <= self.out.snap.index:
                raise ValueError(
                    f"entries from {start} do not fit the log [{idx.first}, {idx.last}]"
                )
            if start > idx.last + 1 and not empty:
                raise ValueError(f"entries from {start} leave a gap after {idx.last}")
            idx.reset(start - 1)
        idx.add(start, terms, seg, off, size)

    def snapshot(self, payload: memoryview) -> None:
        meta = fmt.decode_snap(payload)
        out, idx = self.out, self.out.index
        if meta.index < out.snap.index:
            raise ValueError(f"snapshot {meta.index} is older than {out.snap.index}")
        if idx.first <= meta.index + 1 <= idx.last + 1:
            idx.compact(meta.index)
        elif not self.gap_allowed or (meta.index > idx.last and idx.last >= idx.first):
            raise ValueError(
                f"snapshot {meta.index} does not fit the log [{idx.first}, {idx.last}]"
            )
        elif meta.index > idx.last:  # the whole log was in deleted segments
            idx.reset(meta.index)
        out.snap = meta  # below idx.first - 1: deleted segments held the entries between

    def finish(self, path: Path) -> None:
        out = self.out
        if out.index.first != out.snap.index + 1:
            raise CorruptionError(
                f"raft log {path}: entries start at {out.index.first} after snapshot "
                f"{out.snap.index} (segments are missing)",
                path=str(path),
                first=out.index.first,
                snapshot_index=out.snap.index,
            )


def _replay_segment(rp: _Replay, file: Path, seg: int, last: bool, first: bool) -> int | None:
    """Returns the valid length of segment ``file`` after applying its records to ``rp``;
    None when ``last`` and the segment holds no valid ``STATE`` record (nothing applied).

    Raises CorruptionError for a bad record (unless ``last``: a torn tail ends the scan) and
    for a CRC-valid record that cannot be decoded or does not fit the log."""
    data = _mapped(file)
    off = 0
    while off < len(data) or off == 0:
        rec = fmt.read_record(data, off)
        if rec is None:
            if last and off == 0:
                return None
            if last and _torn_tail(data, off):
                return off
            raise CorruptionError(
                f"raft log segment {file}: bad record at offset {off}"
                + (" with written records after it" if last else ""),
                path=str(file),
                offset=off,
            )
        rtype, payload, nxt = rec
        try:
            if off == 0:
                if rtype != fmt.RecordType.STATE:
                    raise ValueError("a segment must start with a STATE record")
                rp.state(payload, seg, first)
            elif rtype == fmt.RecordType.ENTRIES:
                rp.entries(payload, seg, off, nxt - off)
            elif rtype == fmt.RecordType.ENTRIES_HS:  # its HARD_STATE must follow
                hs_rec = fmt.read_record(data, nxt)
                if hs_rec is None and last and _torn_tail(data, nxt):
                    return off  # torn inside the append: drop it whole
                if hs_rec is None or hs_rec[0] != fmt.RecordType.HARD_STATE:
                    raise ValueError("ENTRIES_HS is not followed by its HARD_STATE record")
                rp.entries(payload, seg, off, nxt - off)
                rp.out.hs = fmt.decode_hs(hs_rec[1])
                nxt = hs_rec[2]
            elif rtype == fmt.RecordType.HARD_STATE:
                rp.out.hs = fmt.decode_hs(payload)
            elif rtype == fmt.RecordType.SNAPSHOT:
                rp.snapshot(payload)
            elif rtype == fmt.RecordType.BOOTSTRAP:
                rp.out.snap = SnapshotMeta(0, 0, fmt.decode_conf(payload))
            else:
                raise ValueError(f"record type {rtype} not expected here")
        except _DECODE_ERRORS as exc:
            raise CorruptionError(
                f"raft log segment {file}: bad record at offset {off}: {exc}",
                path=str(file),
                offset=off,
            ) from None
        off = nxt
    return off


_ZEROS = memoryview(bytes(1 << 16))
TORN_MAX = 8 << 20
"""A torn final write is at most this long (a node's appends are far smaller): a bad record
followed by more written bytes than this is damage, never a torn write."""
_CANDIDATE = re.compile(rb"(?=[\s\S]{8}[\x01-\x06])")  # a record type byte at offset 8


def _torn_tail(data: memoryview, off: int) -> bool:
    """True when the bad record at ``off`` can be a torn final write: only zeros follow the
    bytes its header claims (or those run past the end of ``data``; a header too short to
    read claims nothing), and no whole valid record starts among the written bytes after
    its first one (a flipped bit in its length would otherwise hide the records after it),
    which are at most ``TORN_MAX``."""
    end = off + fmt.HEADER_SIZE
    if end <= len(data):
        end += fmt.HEADER.unpack_from(data, off)[0]
    for pos in range(end, len(data), len(_ZEROS)):
        chunk = data[pos : pos + len(_ZEROS)]
        if chunk != _ZEROS[: len(chunk)]:
            return False
    written = min(end, len(data))
    while written > off:
        lo = max(off, written - len(_ZEROS))
        if data[lo:written] != _ZEROS[: written - lo]:
            break
        written = lo
    if written - off > TORN_MAX:
        return False
    region = bytes(data[off + 1 : written])
    for m in _CANDIDATE.finditer(region):
        if fmt.read_record(memoryview(region), m.start()) is not None:
            return False
    return True


def _mapped(file: Path) -> memoryview:
    """Returns the bytes of ``file`` as a read-only view of a mapping of it: only the
    pages the replay reads come into memory, as reclaimable file pages, never the segment
    whole (a killed node's current segment is ``segment_bytes`` long, zeros after its last
    record). The mapping goes when the last view of it does."""
    with open(file, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return memoryview(b"")
        return memoryview(mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ))


def list_segments(path: Path) -> list[int]:
    """Returns the segment numbers in ``path``, ascending. Raises CorruptionError when they
    are not contiguous (a segment in the middle is missing)."""
    seqs = sorted(int(m.group(1)) for p in path.iterdir() if (m := SEGMENT_RE.match(p.name)))
    if seqs and seqs[-1] - seqs[0] != len(seqs) - 1:
        raise CorruptionError(
            f"raft log {path}: segments {seqs[0]}..{seqs[-1]} are not contiguous",
            path=str(path),
            segments=seqs,
        )
    return seqs


def recover(path: Path, sync: bool) -> Recovered:
    """Returns the state the segments in ``path`` hold, after repairing what a crash left:
    a torn tail is cut off, a last segment without its ``STATE`` removed, segments made
    obsolete by an ``apply_snapshot`` deleted (each repair fsynced when ``sync``).

    Raises CorruptionError (naming the file and offset) for anything else that is bad."""
    seqs = list_segments(path)
    changed_dir = False
    rp = _Replay()
    out = rp.out
    for n, seq in enumerate(seqs):
        file = path / segment_name(seq)
        last = n == len(seqs) - 1
        size = _replay_segment(rp, file, seq, last, n == 0)
        if size is None:  # its STATE never became durable: a crashed rotation or install
            file.unlink()
            changed_dir = True
            break
        out.segments.append(seq)
        out.tail_size = size
        full = file.stat().st_size
        if last and size != full:  # a torn tail: cut it off
            if any(_mapped(file)[size : size + fmt.HEADER_SIZE]):  # not the reserved zeros
                out.torn = (str(file), size, full - size)
            fd = os.open(file, os.O_RDWR)
            try:
                os.ftruncate(fd, size)
                if sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
    rp.finish(path)
    for seq in rp.obsolete:
        (path / segment_name(seq)).unlink()
        out.segments.remove(seq)
        changed_dir = True
    if changed_dir and sync:
        fsync_dir(path)
    return out
