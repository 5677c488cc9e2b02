"""The change feed's history on disk: what lets a restarted node serve watches from the
changes it applied before its restart (``boltraft.server.watching`` keeps the same events in
memory and writes them here as it makes them).

Why a file of its own. The events cannot be made again from the Raft log after a restart:
whether a delete found its key, whether a conditional write held, whether a write was a
repeat, and the previous values, all depend on the state as it was before each entry, which
the state machine no longer holds. So the node writes each apply's events as it makes them.

Format. A folder of segment files ``NNNNNNNNNNNN.wlog`` (a sequence number: the order they
were written in). Each segment is a run of records, each ``length (u32 BE) | crc32 (u32
BE) | msgpack [first, last, [event, ...]]``: the events (``storage.changes.Change``
tuples, as arrays: the wire form of docs/protocol.md section 5.1, the previous value kept)
of the applied entries ``first..last``, every one of them (an apply that changed nothing
writes a record without events, so the records leave no gap).
Appends are plain writes, not synced: a killed process loses nothing; a machine crash may
lose the tail, which ``load`` then finds missing.

Reading (``load``). Records are taken in order; one whose ``first`` is past the last one's
``last + 1`` starts the history over at its ``first`` (what came before can no longer be
joined to now); one whose ``first`` is at or below the last one's ``last`` (a machine crash
undid applies the node then made again) replaces the events from its ``first`` on; a torn
or corrupt record ends its segment. The result must reach the applied index of the state
the node starts from: events past it are dropped (the node applies those entries again),
and a history that stops short of it is discarded (the changes in between are unknown).

Invariants: the records of the segments, in order, cover consecutive indexes except where
``load`` starts over; only the newest segment is written to; a segment is deleted only when
every event in it is older than the oldest index the caller still keeps (``drop_before``).
Disk use is about what the in-memory ring holds plus one segment (``SEGMENT_BYTES``), and
``load`` reads no more than that.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgpack

from boltraft.packing import pack
from boltraft.storage.changes import Change
from boltraft.transport.watchwire import EVENT_TYPES

log = logging.getLogger(__name__)

SEGMENT_BYTES = 4 << 20  # a segment is closed and a new one begun past this size
SUFFIX = ".wlog"
_HEADER = struct.Struct(">II")
_TYPES = frozenset(EVENT_TYPES)


class WatchLog:
    """The history segments in folder ``path`` (created when missing); see the module
    docstring. Use ``load`` once, then ``append``; ``close`` when done.

    A write that fails (a full disk) is logged once, the segments are deleted (best effort)
    and nothing more is written until ``clear``: a restart then starts an empty history.
    """

    def __init__(self, path: Path, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.path = path
        self._segment_bytes = segment_bytes
        path.mkdir(parents=True, exist_ok=True)
        # (sequence number, last index recorded in it) of each segment, oldest first
        self._segments: list[tuple[int, int]] = []
        self._fd: int | None = None
        self._size = 0
        self.broken = False

    def _names(self) -> list[tuple[int, Path]]:
        out = []
        for p in self.path.iterdir():
            if p.suffix == SUFFIX and p.stem.isdigit():
                out.append((int(p.stem), p))
        return sorted(out)

    def load(self, applied: int) -> tuple[int, list[Change]]:
        """``(oldest, events)``: the events of the entries ``oldest..applied`` in ``(index,
        pos)`` order, as the records hold them (``oldest`` = ``applied + 1`` and no events
        when they do not reach ``applied``). Keeps the segments that hold them, deletes the
        others, and begins a new segment for ``append``. An unreadable segment is
        logged and counts as ending there."""
        events: list[Change] = []
        oldest: int | None = None
        last = 0
        segments: list[tuple[int, int]] = []
        names = self._names()
        for seq, p in names:
            try:
                data = p.read_bytes()
            except OSError as exc:
                log.warning("watch history: cannot read %s: %s", p, exc)
                data = b""
            seg_last: int | None = None
            for first, end, raw in _records(data):
                if oldest is None or first > last + 1:  # a gap: the history starts here
                    events.clear()
                    segments.clear()
                    oldest = first
                elif first <= last:  # applied again after a machine crash
                    cut = len(events)
                    while cut and events[cut - 1][0] >= first:
                        cut -= 1
                    del events[cut:]
                    oldest = min(oldest, first)
                events.extend(raw)
                last = end
                seg_last = end
            if seg_last is not None:
                segments.append((seq, seg_last))
        if oldest is not None and last > applied:
            while events and events[-1][0] > applied:
                events.pop()
            last = applied
        if oldest is None or last < applied:
            events, oldest, segments = [], applied + 1, []
        keep = {seq for seq, _ in segments}
        for seq, p in names:
            if seq not in keep:
                p.unlink(missing_ok=True)
        self._segments = segments
        self._begin(names[-1][0] + 1 if names else 1)
        return oldest, events

    def _begin(self, seq: int) -> None:
        """Closes the segment being written and begins segment ``seq``."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        p = self.path / f"{seq:012d}{SUFFIX}"
        self._fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        self._size = 0
        self._segments.append((seq, 0))

    def append(self, first: int, last: int, events: Sequence[Change]) -> None:
        """Writes the record of the entries ``first..last`` (``events``: all theirs, in
        order). A failed write breaks the history (see the class docstring); it raises
        nothing."""
        if self.broken or self._fd is None:
            return
        body = pack((first, last, events))  # tuples pack as arrays
        try:
            os.write(self._fd, _HEADER.pack(len(body), zlib.crc32(body)) + body)
        except OSError as exc:
            log.warning("watch history: a write failed (%s): a restart starts it empty", exc)
            self._break()
            return
        seq, _ = self._segments[-1]
        self._segments[-1] = (seq, last)
        self._size += _HEADER.size + len(body)
        if self._size >= self._segment_bytes:
            try:
                self._begin(seq + 1)
            except OSError as exc:
                log.warning("watch history: cannot begin a segment (%s)", exc)
                self._break()

    def drop_before(self, oldest: int) -> None:
        """Deletes the segments, except the one being written, whose events are all older
        than ``oldest``."""
        segs = self._segments
        while len(segs) > 1 and segs[0][1] < oldest:
            seq, _ = segs.pop(0)
            (self.path / f"{seq:012d}{SUFFIX}").unlink(missing_ok=True)

    def clear(self) -> None:
        """Deletes every segment and begins a new one: the history starts over (after a
        snapshot install, say); a broken history is written again from here."""
        self.broken = False
        next_seq = (self._segments[-1][0] + 1) if self._segments else 1
        self._remove_all()
        try:
            self._begin(next_seq)
        except OSError as exc:
            log.warning("watch history: cannot begin a segment (%s)", exc)
            self._break()

    def _break(self) -> None:
        self.broken = True
        self._remove_all()

    def _remove_all(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        for _, p in self._names():
            try:
                p.unlink()
            except OSError:
                pass
        self._segments = []

    def close(self) -> None:
        """Closes the segment being written (the files stay)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> WatchLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _records(data: bytes) -> list[tuple[int, int, list[Change]]]:
    """The whole, well-formed records at the start of segment ``data`` (a torn or corrupt
    one ends it)."""
    out = []
    at = 0
    while at + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, at)
        body = data[at + _HEADER.size : at + _HEADER.size + length]
        if len(body) != length or zlib.crc32(body) != crc:
            break
        try:
            rec = _record(msgpack.unpackb(body, raw=False, strict_map_key=False))
        except (ValueError, TypeError, msgpack.UnpackException):
            break
        if rec is None:
            break
        out.append(rec)
        at += _HEADER.size + length
    return out


def _record(value: Any) -> tuple[int, int, list[Change]] | None:
    """The ``(first, last, events)`` of a decoded record, or None when its shape is wrong."""
    if type(value) is not list or len(value) != 3:
        return None
    first, last, raw = value
    if type(first) is not int or type(last) is not int or first > last or type(raw) is not list:
        return None
    events = []
    for item in raw:
        if (
            type(item) is not list
            or len(item) != 7
            or type(item[0]) is not int
            or not first <= item[0] <= last
            or item[2] not in _TYPES
            or type(item[3]) is not list
        ):
            return None
        events.append((item[0], item[1], item[2], tuple(item[3]), item[4], item[5], item[6]))
    return first, last, events
