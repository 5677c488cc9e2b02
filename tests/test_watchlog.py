"""The change feed's history on disk (``boltraft.server.watchlog.WatchLog``) on real files:
what ``load`` gives back after a clean stop, a torn tail, a gap, applies made again after a
machine crash, a state behind the history; segments rolled and dropped; a failed write."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from boltraft.server.watchlog import SUFFIX, WatchLog
from boltraft.storage.changes import Change


def ev(index: int, pos: int = 0, key: bytes = b"k", prev: bytes | None = None) -> Change:
    return (index, pos, "put", (b"b",), key, b"v%d" % index, prev)


def fresh(path: Path, applied: int = 0, segment_bytes: int = 1 << 20) -> WatchLog:
    log = WatchLog(path, segment_bytes)
    assert log.load(applied) == (applied + 1, [])
    return log


def segments(path: Path) -> list[Path]:
    return sorted(path.glob("*" + SUFFIX))


def test_what_was_appended_comes_back_to_the_applied_index(tmp_path: Path) -> None:
    with fresh(tmp_path) as log:
        log.append(1, 1, [ev(1)])
        log.append(2, 3, [ev(2, 0), ev(2, 1, b"j", b"old"), ev(3)])
        log.append(4, 4, [])  # an apply that changed nothing
    with WatchLog(tmp_path) as log:
        oldest, events = log.load(4)
    assert oldest == 1
    assert events == [ev(1), ev(2, 0), ev(2, 1, b"j", b"old"), ev(3)]


def test_a_history_short_of_the_applied_index_is_discarded(tmp_path: Path) -> None:
    with fresh(tmp_path) as log:
        log.append(1, 2, [ev(1), ev(2)])
    with WatchLog(tmp_path) as log:
        assert log.load(3) == (4, [])  # entry 3's changes are unknown
        log.append(4, 4, [ev(4)])
    with WatchLog(tmp_path) as log:
        assert log.load(4) == (4, [ev(4)])
        assert len(segments(tmp_path)) == 2  # the one with entry 4, and the new one


def test_a_torn_last_record_is_the_end_of_the_history(tmp_path: Path) -> None:
    with fresh(tmp_path) as log:
        log.append(1, 1, [ev(1)])
        log.append(2, 2, [ev(2)])
    [seg] = segments(tmp_path)
    os.truncate(seg, seg.stat().st_size - 3)
    with WatchLog(tmp_path) as log:
        assert log.load(1) == (1, [ev(1)])
    with WatchLog(tmp_path) as log:
        assert log.load(2) == (3, [])


def test_a_corrupt_record_ends_its_segment(tmp_path: Path) -> None:
    with fresh(tmp_path) as log:
        log.append(1, 1, [ev(1)])
        log.append(2, 2, [ev(2)])
    [seg] = segments(tmp_path)
    data = bytearray(seg.read_bytes())
    data[-2] ^= 0xFF
    seg.write_bytes(bytes(data))
    with WatchLog(tmp_path) as log:
        assert log.load(2) == (3, [])


def test_events_past_the_applied_index_are_dropped_and_made_again(tmp_path: Path) -> None:
    with fresh(tmp_path) as log:
        log.append(1, 2, [ev(1), ev(2)])
        log.append(3, 4, [ev(3), ev(4)])
    with WatchLog(tmp_path) as log:  # a machine crash undid the applies of 3 and 4
        assert log.load(2) == (1, [ev(1), ev(2)])
        log.append(3, 3, [ev(3, key=b"other")])  # applied again, with other changes
    with WatchLog(tmp_path) as log:
        assert log.load(3) == (1, [ev(1), ev(2), ev(3, key=b"other")])


def test_a_gap_starts_the_history_over_after_it(tmp_path: Path) -> None:
    with fresh(tmp_path) as log:
        log.append(1, 1, [ev(1)])
        log.append(5, 5, [ev(5)])  # after a snapshot install, say
    with WatchLog(tmp_path) as log:
        assert log.load(5) == (5, [ev(5)])


def test_segments_roll_over_and_those_older_than_the_oldest_kept_go(tmp_path: Path) -> None:
    with fresh(tmp_path, segment_bytes=200) as log:
        for i in range(1, 31):
            log.append(i, i, [ev(i, key=b"k" * 50)])
        rolled = len(segments(tmp_path))
        assert rolled >= 5
        log.drop_before(20)
        left = len(segments(tmp_path))
        assert 1 < left < rolled
    with WatchLog(tmp_path) as log:
        oldest, events = log.load(30)
    assert oldest <= 20
    assert [e[0] for e in events] == list(range(oldest, 31))


def test_clear_deletes_the_history(tmp_path: Path) -> None:
    with fresh(tmp_path) as log:
        log.append(1, 1, [ev(1)])
        log.clear()
        log.append(2, 2, [ev(2)])
    with WatchLog(tmp_path) as log:
        assert log.load(2) == (2, [ev(2)])


def test_a_failed_write_breaks_the_history_and_a_restart_starts_it_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with fresh(tmp_path) as log:
        log.append(1, 1, [ev(1)])

        def full(fd: int, data: bytes) -> int:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "write", full)
        log.append(2, 2, [ev(2)])
        monkeypatch.undo()
        assert log.broken
        log.append(3, 3, [ev(3)])  # nothing is written while broken
    assert segments(tmp_path) == []
    with WatchLog(tmp_path) as log:
        assert log.load(3) == (4, [])
