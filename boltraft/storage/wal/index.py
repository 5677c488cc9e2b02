"""``LogIndex``: what the WAL keeps in memory about its live entries.

The terms of every live entry (an ``array('q')``, so ``term()`` is one subscript) and where
each live ``ENTRIES`` record lies on disk (segment, offset, size) with the index it starts
at, so a read bisects to the record and ``pread``s it. The record columns are ``array('q')``
too: 32 bytes a record, where lists of ints cost about 128, and a log holds up to
``snapshot_entries`` of them (one per append) until it is compacted. Replay on open and the
running store apply the same operations to it, so both follow one truncation rule: a record
starting at ``i`` replaces everything from ``i``.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right


class LogIndex:
    """The live log ``[first, last]`` and its records.

    Invariants: ``terms[i - first]`` is the term of entry ``i`` for ``first <= i <= last``
    (``len(terms) == last - first + 1``); ``rec_first`` ascends, ``rec_first[0] <= first``
    when there is a record, and record ``k`` holds the live entries ``[rec_first[k],
    rec_first[k + 1])`` (the last one up to ``last``); ``rec_seg``, ``rec_off`` and
    ``rec_size`` (the whole framed record) run parallel to ``rec_first``.
    """

    __slots__ = ("first", "last", "rec_first", "rec_off", "rec_seg", "rec_size", "terms")

    def __init__(self, snap_index: int = 0) -> None:
        self.reset(snap_index)

    def reset(self, index: int) -> None:
        """Empties the log at ``index`` (first = index + 1)."""
        self.first = index + 1
        self.last = index
        self.terms = array("q")
        self.rec_first = array("q")
        self.rec_seg = array("q")
        self.rec_off = array("q")
        self.rec_size = array("q")

    def add(self, start: int, terms: list[int], seg: int, off: int, size: int) -> None:
        """Records a batch of ``len(terms)`` entries from ``start`` (``first <= start <= last
        + 1``: the caller checks), stored in segment ``seg`` at ``off``, dropping the live
        entries from ``start`` on."""
        if start <= self.last:
            k = bisect_left(self.rec_first, start)
            del self.rec_first[k:], self.rec_seg[k:], self.rec_off[k:], self.rec_size[k:]
            del self.terms[start - self.first :]
        self.terms.extend(terms)
        self.rec_first.append(start)
        self.rec_seg.append(seg)
        self.rec_off.append(off)
        self.rec_size.append(size)
        self.last = start + len(terms) - 1

    def compact(self, index: int) -> None:
        """Drops the entries up to ``index`` (``first - 1 <= index <= last``: the caller
        checks) and the records left without a live entry."""
        del self.terms[: index + 1 - self.first]
        if index >= self.last:
            k = len(self.rec_first)
        else:  # record k - 1 is the one holding index + 1: it stays
            k = bisect_right(self.rec_first, index + 1) - 1
        del self.rec_first[:k], self.rec_seg[:k], self.rec_off[:k], self.rec_size[:k]
        self.first = index + 1

    def record_of(self, index: int) -> int:
        """Returns the position in ``rec_*`` of the record holding live entry ``index``
        (``first <= index <= last``)."""
        return bisect_right(self.rec_first, index) - 1

    def record_end(self, k: int) -> int:
        """Returns one past the last live entry of record ``k``."""
        return self.rec_first[k + 1] if k + 1 < len(self.rec_first) else self.last + 1

    def oldest_segment(self) -> int | None:
        """Returns the segment of the oldest live record, or None when the log is empty."""
        return self.rec_seg[0] if self.rec_seg else None
