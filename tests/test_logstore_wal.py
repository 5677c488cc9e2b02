"""What only the WAL log store has: its segment files, torn-tail recovery, corruption detection,
rotation and segment deletion, the directory lock, and the entry cache against the disk path.
(The behaviour shared with the other stores is in test_logstore.py.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from smallfs import fill, small_filesystem  # tests/ is on sys.path under pytest

from boltraft.errors import (
    CorruptionError,
    DataDirLockedError,
    InvalidArgumentError,
    NoSpaceError,
)
from boltraft.raft.types import ConfState, Entry, HardState, SnapshotMeta
from boltraft.storage.wal import WalLogStore
from boltraft.storage.wal import format as fmt
from boltraft.storage.wal.index import LogIndex

CONF = ConfState(voters=("n1",), addrs={"n1": "tcp://127.0.0.1:1"})


def batch(lo: int, hi: int, term: int = 1, size: int = 20) -> list[Entry]:
    """Returns entries [lo, hi) of ``term`` whose data names their index."""
    return [Entry(term, i, 0, (b"%d" % i).ljust(size, b"-")) for i in range(lo, hi)]


def segments(path: Path) -> list[Path]:
    """Returns the segment files in ``path``, oldest first."""
    return sorted(path.glob("*.wal"))


def record_offsets(file: Path, open_store: bool = False) -> list[int]:
    """Returns the offset of every record in ``file`` and, last, the end of the last one:
    the end of the file, or with ``open_store`` (the current segment of an open store)
    where its reserved tail of zeros begins."""
    data = memoryview(file.read_bytes())
    offs = [0]
    while (rec := fmt.read_record(data, offs[-1])) is not None:
        offs.append(rec[2])
    if open_store:
        assert not any(data[offs[-1] :])
    else:
        assert offs[-1] == len(data)
    return offs


def written(path: Path, segment_bytes: int, last: int, step: int) -> list[Path]:
    """Returns the segment files of a closed log at ``path`` holding entries 1..``last``
    (rounded up to whole batches of ``step``), appended one batch at a time."""
    s = WalLogStore(path, segment_bytes=segment_bytes)
    for lo in range(1, last, step):
        s.append(batch(lo, lo + step))
    s.close()
    return segments(path)


def contents(s: WalLogStore) -> tuple[object, ...]:
    """Returns everything observable about ``s``."""
    first, last = s.first_index(), s.last_index()
    return s.initial_state(), s.snapshot_meta(), first, last, s.entries(first, last + 1)


def test_layout_one_segment_opened_by_a_state_record(tmp_path: Path) -> None:
    s = WalLogStore(tmp_path)
    s.bootstrap(CONF)
    s.append(batch(1, 4), HardState(1, "n1", 0))
    s.append(batch(4, 5))
    s.append([], HardState(1, "n1", 2), sync=False)
    s.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00000000000000000001.wal", "LOCK"]
    data = memoryview((tmp_path / "00000000000000000001.wal").read_bytes())
    types, off = [], 0
    while (rec := fmt.read_record(data, off)) is not None:
        types.append(rec[0])
        off = rec[2]
    T = fmt.RecordType
    assert types == [T.STATE, T.BOOTSTRAP, T.ENTRIES_HS, T.HARD_STATE, T.ENTRIES, T.HARD_STATE]


def test_a_syncing_store_writes_into_its_preallocated_current_segment(tmp_path: Path) -> None:
    """While open, the current segment is segment_bytes long, its records followed by
    zeros, and every older one ends with its last record. What a killed process leaves
    (the reserved tail) reopens with the same contents and is reserved again; a closed
    store keeps no tail. A store that does not sync reserves nothing."""
    wal = tmp_path / "wal"
    s = WalLogStore(wal, segment_bytes=2048)
    s.bootstrap(CONF)
    for lo in range(1, 90, 3):
        s.append(batch(lo, lo + 3, size=40), HardState(1, "n1", lo))
    files = segments(wal)
    assert len(files) > 2
    for f in files[:-1]:
        record_offsets(f)  # sealed: no zeros after the last record
    assert files[-1].stat().st_size == 2048
    end = record_offsets(files[-1], open_store=True)[-1]
    assert end < 2048
    killed = tmp_path / "killed"
    shutil.copytree(wal, killed)  # no close() ran: the tail is still there
    want = contents(s)
    s.close()
    assert files[-1].stat().st_size == end
    s = WalLogStore(killed, segment_bytes=2048)
    assert contents(s) == want
    last = segments(killed)[-1]
    assert last.stat().st_size == 2048 and record_offsets(last, open_store=True)[-1] == end
    s.append(batch(91, 92), HardState(1, "n1", 91))
    s.close()
    assert end in record_offsets(last)[:-1]  # the new records follow the old ones
    s = WalLogStore(killed, segment_bytes=2048)
    assert s.entries(1, 92) == [
        e for lo in range(1, 90, 3) for e in batch(lo, lo + 3, size=40)
    ] + batch(91, 92)
    s.close()
    s = WalLogStore(tmp_path / "nosync", sync=False, segment_bytes=2048)
    s.append(batch(1, 4))
    only = segments(tmp_path / "nosync")[0]
    assert record_offsets(only)[-1] == only.stat().st_size < 2048
    s.close()


def test_opening_a_killed_store_does_not_read_its_reserved_segment_into_memory(
    tmp_path: Path,
) -> None:
    """A killed node's current segment is segment_bytes long (zeros after its records):
    opening it reads the records, not the whole file into memory."""
    wal = tmp_path / "wal"
    s = WalLogStore(wal, segment_bytes=32 << 20)
    s.append(batch(1, 201), HardState(1, "n1", 200))
    killed = tmp_path / "killed"
    shutil.copytree(wal, killed)  # no close() ran: the tail is still there
    s.close()
    assert segments(killed)[0].stat().st_size == 32 << 20
    tracemalloc.start()
    try:
        s = WalLogStore(killed, segment_bytes=32 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert s.entries(1, 201) == batch(1, 201)
    s.close()
    assert peak < 1 << 20


def test_the_index_keeps_a_record_in_a_few_dozen_bytes() -> None:
    """Until a compaction the index holds one record per append (up to snapshot_entries
    of them under a light load): its columns are arrays of machine integers."""
    idx = LogIndex()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(1, 20_001):
            idx.add(i, [3], 1, 1_000_000 + 300 * i, 300)
        per_record = (tracemalloc.get_traced_memory()[0] - before) / 20_000
    finally:
        tracemalloc.stop()
    assert idx.record_of(12_345) == 12_344 and idx.rec_off[12_344] == 1_000_000 + 300 * 12_345
    assert per_record < 48  # 32 for the record columns, 8 for the term; lists of ints: ~130


def test_a_crash_before_apply_snapshot_deletes_the_old_segment_finds_it_sealed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """apply_snapshot opens its new segment while the current one still has its reserved
    tail; the old one is cut back first, so recovery can read it whole."""
    wal = tmp_path / "wal"
    s = WalLogStore(wal)
    s.append(batch(1, 11), HardState(1, "n1", 5))
    old = segments(wal)[0]
    assert old.stat().st_size == 64 << 20  # reserved

    def crash(seq: int) -> None:
        raise KeyboardInterrupt("killed before the old segments are deleted")

    monkeypatch.setattr(s, "_delete_segments_before", crash)
    meta = SnapshotMeta(500, 4, CONF)
    with pytest.raises(KeyboardInterrupt):
        s.apply_snapshot(meta, HardState(4, "", 500))
    assert len(segments(wal)) == 2
    record_offsets(old)  # sealed
    killed = tmp_path / "killed"
    shutil.copytree(wal, killed)
    s.close()
    s = WalLogStore(killed)
    assert contents(s) == ((HardState(4, "", 500), CONF), meta, 501, 500, [])
    assert len(segments(killed)) == 1
    s.close()


def test_a_segment_is_not_preallocated_beyond_the_free_space(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "fs") as fs:  # 16 MiB: a 64 MiB segment does not fit
        s = WalLogStore(fs / "wal")
        try:
            s.append(batch(1, 11), HardState(1, "n1", 5))
            only = segments(fs / "wal")[0]
            assert record_offsets(only)[-1] == only.stat().st_size
        finally:
            s.close()
        s = WalLogStore(fs / "wal")
        try:
            assert s.entries(1, 11) == batch(1, 11)
        finally:
            s.close()


def test_unsynced_hard_state_is_written_at_once(tmp_path: Path) -> None:
    s = WalLogStore(tmp_path)
    s.append(batch(1, 3), HardState(1, "n1", 0))
    s.append([], HardState(1, "n1", 2), sync=False)
    shutil.copytree(tmp_path, tmp_path / "copy", ignore=shutil.ignore_patterns("copy"))
    s.close()  # the copy is what a killed process leaves: no close() ran
    assert WalLogStore(tmp_path / "copy").initial_state()[0] == HardState(1, "n1", 2)


@pytest.mark.parametrize("hs", [None, HardState(2, "n1", 3)])
def test_torn_last_record_is_cut_at_every_offset(tmp_path: Path, hs: HardState | None) -> None:
    src = tmp_path / "src"
    s = WalLogStore(src)
    s.append(batch(1, 6), HardState(1, "n1", 1))
    s.append(batch(6, 9, term=2), hs)  # the record(s) the crash tears
    s.close()
    file = segments(src)[0]
    offs = record_offsets(file)
    keep = offs[3]  # STATE, ENTRIES, HARD_STATE: what the first append wrote
    raw = file.read_bytes()
    want = ((HardState(1, "n1", 1), ConfState()), SnapshotMeta(), 1, 5, batch(1, 6))
    for cut in range(keep, len(raw)):
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        (d / file.name).write_bytes(raw[:cut])
        s = WalLogStore(d)
        got = (s.initial_state(), s.snapshot_meta(), s.first_index(), s.last_index())
        got_entries = s.entries(1, s.last_index() + 1)
        s.append(batch(6, 7, term=3))  # the repaired file takes appends again
        s.close()
        assert (*got, got_entries) == want, cut
        assert (d / file.name).stat().st_size > keep
        s = WalLogStore(d)
        assert s.entries(1, 7) == batch(1, 6) + batch(6, 7, term=3)
        s.close()
        shutil.rmtree(d)


def test_garbage_after_the_last_record_is_cut(tmp_path: Path) -> None:
    s = WalLogStore(tmp_path)
    s.append(batch(1, 4), HardState(1, "", 2))
    s.close()
    file = segments(tmp_path)[0]
    size = file.stat().st_size
    for junk in (b"\x00" * 4096, os.urandom(3000), fmt.HEADER.pack(1 << 30, 0, 2)):
        with open(file, "ab") as f:
            f.write(junk)
        s = WalLogStore(tmp_path)
        assert (s.last_index(), s.initial_state()[0]) == (3, HardState(1, "", 2))
        s.close()
        assert file.stat().st_size == size


def test_a_flipped_byte_in_an_older_segment_is_corruption(tmp_path: Path) -> None:
    files = written(tmp_path, 200, 40, 5)
    assert len(files) > 2
    victim = files[1]
    offs = record_offsets(victim)
    raw = bytearray(victim.read_bytes())
    pos = offs[1] + fmt.HEADER_SIZE + 3  # inside the payload of its second record
    raw[pos] ^= 0x40
    victim.write_bytes(bytes(raw))
    with pytest.raises(CorruptionError) as err:
        WalLogStore(tmp_path)
    assert err.value.details == {"path": str(victim), "offset": offs[1]}
    assert victim.name in err.value.message
    raw[pos] ^= 0x40  # repaired: opens again (the failed open left no lock behind)
    victim.write_bytes(bytes(raw))
    s = WalLogStore(tmp_path)
    assert s.entries(1, 41) == batch(1, 41)
    s.close()


def test_a_missing_segment_is_corruption(tmp_path: Path) -> None:
    files = written(tmp_path, 1, 30, 3)
    files[4].rename(tmp_path / "aside")  # one in the middle
    with pytest.raises(CorruptionError, match="not contiguous"):
        WalLogStore(tmp_path)
    (tmp_path / "aside").rename(files[4])
    for f in files[:3]:  # the oldest ones, without a compaction that allowed it
        f.unlink()
    with pytest.raises(CorruptionError, match="segments are missing"):
        WalLogStore(tmp_path)


def test_rotation_many_segments_reopen_and_compaction_deletes_files(tmp_path: Path) -> None:
    s = WalLogStore(tmp_path, segment_bytes=300, cache_bytes=100)
    want: list[Entry] = []
    for r in range(30):
        b = batch(len(want) + 1, len(want) + 8, term=1 + r // 10)
        s.append(b, HardState(1 + r // 10, "n1", len(want)))
        want += b
    s.close()
    n_files = len(segments(tmp_path))
    assert n_files >= 10
    s = WalLogStore(tmp_path, segment_bytes=300, cache_bytes=100)
    assert s.entries(1, len(want) + 1) == want
    assert [s.term(i) for i in range(1, len(want) + 1)] == [e.term for e in want]
    s.compact(SnapshotMeta(150, s.term(150), CONF))
    remaining = segments(tmp_path)
    assert 1 < len(remaining) < n_files / 2
    assert s.entries(151, len(want) + 1) == want[150:]
    s.close()
    s = WalLogStore(tmp_path)
    assert (s.first_index(), s.last_index()) == (151, len(want))
    assert s.entries(151, len(want) + 1) == want[150:]
    assert s.initial_state() == (HardState(3, "n1", len(want) - 7), CONF)
    s.compact(SnapshotMeta(len(want), s.term(len(want)), CONF))  # everything: one file left
    assert len(segments(tmp_path)) == 1
    s.close()
    s = WalLogStore(tmp_path)
    assert (s.first_index(), s.last_index(), s.term(len(want))) == (211, 210, 3)
    s.close()


def test_apply_snapshot_leaves_one_segment(tmp_path: Path) -> None:
    s = WalLogStore(tmp_path, segment_bytes=200)
    for lo in range(1, 60, 6):
        s.append(batch(lo, lo + 6), HardState(1, "n1", lo))
    assert len(segments(tmp_path)) > 3
    meta = SnapshotMeta(500, 4, CONF)
    s.apply_snapshot(meta, HardState(4, "", 500))
    s.close()
    files = segments(tmp_path)
    assert len(files) == 1
    assert record_offsets(files[0])[1:] == [files[0].stat().st_size]  # its STATE only
    s = WalLogStore(tmp_path)
    assert contents(s) == ((HardState(4, "", 500), CONF), meta, 501, 500, [])
    s.close()


def test_an_interrupted_apply_snapshot_is_finished_on_open(tmp_path: Path) -> None:
    files = written(tmp_path, 200, 40, 6)
    old = tmp_path / "old"
    old.mkdir()
    for f in files:
        shutil.copy(f, old / f.name)
    s = WalLogStore(tmp_path)
    meta = SnapshotMeta(300, 2, CONF)
    s.apply_snapshot(meta)
    s.close()
    for f in old.iterdir():  # as if the crash came before the old segments were deleted
        shutil.copy(f, tmp_path / f.name)
    s = WalLogStore(tmp_path)
    assert (s.snapshot_meta(), s.first_index(), s.last_index()) == (meta, 301, 300)
    assert len(segments(tmp_path)) == 1
    s.close()


def test_a_rotation_that_crashed_before_its_state_record_is_undone(tmp_path: Path) -> None:
    s = WalLogStore(tmp_path, segment_bytes=1)
    s.append(batch(1, 5), HardState(1, "n1", 2))
    s.append(batch(5, 9))
    s.close()
    files = segments(tmp_path)
    nxt = int(files[-1].stem) + 1
    for torn in (b"", fmt.frame(fmt.RecordType.STATE, b"\x90" * 40)[:20]):
        (tmp_path / f"{nxt:020d}.wal").write_bytes(torn)
        s = WalLogStore(tmp_path, segment_bytes=1)
        assert s.entries(1, 9) == batch(1, 9)
        assert segments(tmp_path) == files
        s.append(batch(9, 10))  # the next rotation takes the number again
        s.close()
        s = WalLogStore(tmp_path)
        assert s.entries(1, 10) == batch(1, 10)
        s.close()
        segments(tmp_path)[-1].unlink()  # back to `files` for the next round
        files = segments(tmp_path)


def test_recent_entries_come_from_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = WalLogStore(tmp_path, cache_bytes=1000)
    for lo in range(1, 200, 10):
        s.append(batch(lo, lo + 10))
    last = s.last_index()

    def no_disk(*_args: object) -> bytes:
        raise AssertionError("read the disk")

    monkeypatch.setattr(os, "pread", no_disk)
    assert s.entries(last - 9, last + 1) == batch(last - 9, last + 1)  # the newest batch
    with pytest.raises(AssertionError, match="read the disk"):
        s.entries(1, 5)  # evicted long ago
    monkeypatch.undo()
    s.close()


@pytest.mark.parametrize("cache_bytes", [1, 700, 1 << 20])
def test_cache_and_disk_reads_agree(tmp_path: Path, cache_bytes: int) -> None:
    s = WalLogStore(tmp_path, segment_bytes=900, cache_bytes=cache_bytes)
    for lo, term in ((1, 1), (13, 2), (10, 3), (22, 3), (34, 4), (30, 5), (31, 5)):
        s.append(batch(lo, lo + 12, term=term, size=5 + lo % 17))
    s.compact(SnapshotMeta(10, 3, CONF))
    last = s.last_index()
    ranges = [(lo, hi) for lo in range(11, last + 1, 3) for hi in range(lo, last + 2, 4)]
    limits = (None, 0, 7, 50, 300)
    live = {(lo, hi, m): s.entries(lo, hi, m) for lo, hi in ranges for m in limits}
    s.close()
    s = WalLogStore(tmp_path, segment_bytes=900, cache_bytes=cache_bytes)  # cold: disk only
    cold = {(lo, hi, m): s.entries(lo, hi, m) for lo, hi in ranges for m in limits}
    s.close()
    assert cold == live
    assert last == 42
    assert live[(11, 43, None)][-12:] == batch(31, 43, term=5, size=5 + 31 % 17)


def test_a_record_damaged_while_open_is_reported_on_read(tmp_path: Path) -> None:
    s = WalLogStore(tmp_path, cache_bytes=1)
    s.append(batch(1, 5))
    s.append(batch(5, 9))
    file = segments(tmp_path)[0]
    off = record_offsets(file, open_store=True)[1] + fmt.HEADER_SIZE + 2
    with open(file, "r+b") as f:
        f.seek(off)
        byte = f.read(1)
        f.seek(off)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(CorruptionError, match="offset"):
        s.entries(1, 3)
    assert s.entries(8, 9) == batch(8, 9)  # the newest batch is still in the cache
    s.close()


def test_second_open_is_refused_in_this_process_and_another(tmp_path: Path) -> None:
    s = WalLogStore(tmp_path)
    with pytest.raises(DataDirLockedError):
        WalLogStore(tmp_path)
    code = (
        "import sys\n"
        "from boltraft.errors import DataDirLockedError\n"
        "from boltraft.storage.wal import WalLogStore\n"
        "try:\n"
        f"    WalLogStore({str(tmp_path)!r})\n"
        "except DataDirLockedError:\n"
        "    sys.exit(3)\n"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 3
    s.append(batch(1, 2))
    s.close()
    s.close()
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
    again = WalLogStore(tmp_path)
    assert again.last_index() == 1
    again.close()


def test_bad_sizes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError):
        WalLogStore(tmp_path, segment_bytes=0)
    with pytest.raises(InvalidArgumentError):
        WalLogStore(tmp_path, cache_bytes=0)
    WalLogStore(tmp_path).close()


def test_a_full_disk_refuses_an_append_writing_nothing_then_appends_once_freed(
    tmp_path: Path,
) -> None:
    with small_filesystem(tmp_path / "fs") as fs:
        s = WalLogStore(fs / "wal", segment_bytes=64 << 10)
        try:
            s.append(batch(1, 11), HardState(1, "n1", 5))
            before = contents(s)
            for _ in range(3):  # within a segment, and on rotating to a new one
                # (fill again each time: a failed write releases the segment's reserved tail)
                filler = fill(fs)
                with pytest.raises(NoSpaceError):
                    s.append(batch(11, 11 + 2000, size=100), HardState(2, "n1", 5))
                filler = fill(fs)
                with pytest.raises(NoSpaceError):
                    s.append(batch(11, 12, size=60 << 10))
                assert contents(s) == before
            filler.unlink()
            s.append(batch(11, 21), HardState(2, "n1", 5))
            s.sync()
        finally:
            s.close()
        s = WalLogStore(fs / "wal", segment_bytes=64 << 10)
        try:
            assert s.last_index() == 20
            assert s.initial_state()[0] == HardState(2, "n1", 5)
            assert s.entries(1, 21) == batch(1, 11) + batch(11, 21)
        finally:
            s.close()


@pytest.mark.parametrize("where", ["payload", "crc", "length down"])
def test_a_record_damaged_in_the_middle_of_the_last_segment_is_corruption_not_a_torn_tail(
    tmp_path: Path, where: str
) -> None:
    files = written(tmp_path, 64 << 20, 300, 2)  # one segment: the last, with 150 records
    assert len(files) == 1
    offs = record_offsets(files[0])
    victim = offs[len(offs) // 2]
    raw = bytearray(files[0].read_bytes())
    pos = {
        "payload": victim + fmt.HEADER_SIZE + 5,
        "crc": victim + 4,
        "length down": victim + 1,  # a shorter length: the next "record" is inside this one
    }[where]
    raw[pos] ^= 0x01
    files[0].write_bytes(bytes(raw))
    with pytest.raises(CorruptionError, match="with written records after it") as err:
        WalLogStore(tmp_path)
    assert err.value.details == {"path": str(files[0]), "offset": victim}
    assert files[0].read_bytes() == bytes(raw)  # nothing was cut


def test_a_torn_final_write_in_the_reserved_zeros_is_cut_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wal = tmp_path / "wal"
    s = WalLogStore(wal, segment_bytes=1 << 20)
    s.append(batch(1, 11), HardState(1, "n1", 10))
    s.append(batch(11, 21), HardState(1, "n1", 20))
    killed = tmp_path / "killed"
    shutil.copytree(wal, killed)  # no close() ran: the reserved zeros follow the records
    s.close()
    file = segments(killed)[0]
    offs = record_offsets(file, open_store=True)
    raw = bytearray(file.read_bytes())
    raw[offs[-3] + fmt.HEADER_SIZE + 2 : offs[-1]] = bytes(offs[-1] - offs[-3] - 11)
    file.write_bytes(bytes(raw))  # the second append's page never reached the disk
    s = WalLogStore(killed, segment_bytes=1 << 20)
    assert (s.last_index(), s.initial_state()[0]) == (10, HardState(1, "n1", 10))
    s.close()
    assert f"cut a torn final write at offset {offs[-3]}" in caplog.text


def test_a_record_whose_length_was_flipped_past_the_end_is_corruption(tmp_path: Path) -> None:
    files = written(tmp_path, 64 << 20, 100, 2)
    offs = record_offsets(files[0])
    victim = offs[len(offs) // 2]
    raw = bytearray(files[0].read_bytes())
    raw[victim + 3] ^= 0x01  # the length's high byte: it claims 16 MiB more than the file
    files[0].write_bytes(bytes(raw))
    with pytest.raises(CorruptionError) as err:
        WalLogStore(tmp_path)
    assert err.value.details == {"path": str(files[0]), "offset": victim}
    assert files[0].read_bytes() == bytes(raw)
