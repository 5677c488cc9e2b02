"""What only the LMDB log store has: its on-disk layout, the directory lock, map growth and the
no-space error, recovery of the term cache, and corruption detection on open.
(The behaviour shared with the in-memory store is in test_logstore.py.)"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import lmdb
import pytest
from smallfs import fill, small_filesystem  # tests/ is on sys.path under pytest

from boltraft.errors import CorruptionError, DataDirLockedError, InvalidArgumentError, NoSpaceError
from boltraft.raft.types import ConfState, Entry, HardState, SnapshotMeta
from boltraft.storage.logstore import LmdbLogStore

CONF = ConfState(voters=("n1",), addrs={"n1": "tcp://127.0.0.1:1"})


def stored_keys(path: Path) -> list[int]:
    """Returns the indexes stored in the entries sub-db, in LMDB's order (store closed)."""
    env = lmdb.open(str(path), max_dbs=2, readonly=True, lock=False)
    try:
        db = env.open_db(b"entries", create=False)
        with env.begin(db=db) as txn:
            return [struct.unpack(">Q", k)[0] for k in txn.cursor().iternext(values=False)]
    finally:
        env.close()


def test_keys_are_big_endian_so_lmdb_order_is_log_order(tmp_path: Path) -> None:
    base = (1 << 32) - 3
    s = LmdbLogStore(tmp_path)
    s.apply_snapshot(SnapshotMeta(base, 1, CONF))
    s.append([Entry(1, i) for i in range(base + 1, base + 600)])
    s.close()
    assert stored_keys(tmp_path) == list(range(base + 1, base + 600))
    s = LmdbLogStore(tmp_path)
    assert (s.first_index(), s.last_index()) == (base + 1, base + 599)
    s.close()


def test_truncation_and_compaction_leave_no_stale_keys(tmp_path: Path) -> None:
    s = LmdbLogStore(tmp_path)
    s.append([Entry(1, i) for i in range(1, 301)])
    s.append([Entry(2, i) for i in range(120, 131)])  # drops 131..300
    s.compact(SnapshotMeta(100, 1, CONF))  # drops 1..100
    s.close()
    assert stored_keys(tmp_path) == list(range(101, 131))


def test_term_runs_survive_restart(tmp_path: Path) -> None:
    terms = [1] * 5 + [2] + [4] * 40 + [5, 6, 7] + [9] * 100
    s = LmdbLogStore(tmp_path)
    s.append([Entry(t, i) for i, t in enumerate(terms, 1)])
    s.compact(SnapshotMeta(3, 1, CONF))
    s.close()
    s = LmdbLogStore(tmp_path)
    assert [s.term(i) for i in range(3, len(terms) + 1)] == terms[2:]
    s.close()


def test_second_open_in_this_process_is_refused(tmp_path: Path) -> None:
    s = LmdbLogStore(tmp_path)
    with pytest.raises(DataDirLockedError):
        LmdbLogStore(tmp_path)
    s.append([Entry(1, 1)])
    s.close()
    s.close()
    again = LmdbLogStore(tmp_path)
    assert again.last_index() == 1
    again.close()


def test_open_in_another_process_is_refused(tmp_path: Path) -> None:
    s = LmdbLogStore(tmp_path)
    code = (
        "import sys\n"
        "from boltraft.errors import DataDirLockedError\n"
        "from boltraft.storage.logstore import LmdbLogStore\n"
        "try:\n"
        f"    LmdbLogStore({str(tmp_path)!r})\n"
        "except DataDirLockedError:\n"
        "    sys.exit(3)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert out.returncode == 3
    s.close()
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_map_grows_and_keeps_its_data(tmp_path: Path) -> None:
    s = LmdbLogStore(tmp_path, map_size=1 << 20, max_map_size=64 << 20, sync=False)
    blob = b"z" * 100_000
    for i in range(1, 61):  # ~6 MB through a 1 MB map
        s.append([Entry(1, i, 0, blob)], HardState(1, "", i))
    s.close()
    s = LmdbLogStore(tmp_path, map_size=1 << 20)
    assert s.last_index() == 60
    assert s.entries(60, 61) == [Entry(1, 60, 0, blob)]
    assert s.initial_state()[0] == HardState(1, "", 60)
    s.close()


def test_a_full_disk_raises_no_space_and_writes_nothing(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "fs") as fs:
        s = LmdbLogStore(fs / "log")
        try:
            s.append([Entry(1, 1, 0, b"a")], HardState(1, "", 0))
            filler = fill(fs)
            for cut in (0, 64 << 10):  # no byte free (ENOSPC), a few (a short write: EIO)
                if cut:
                    filler.unlink()
                    filler = fill(fs)
                    os.truncate(filler, filler.stat().st_size - cut)
                with pytest.raises(NoSpaceError) as info:
                    s.append([Entry(1, i, 0, b"x" * 50_000) for i in range(2, 40)])
                assert info.value.details["disk_full"] is True
                assert (s.last_index(), s.initial_state()[0]) == (1, HardState(1, "", 0))
            filler.unlink()
            s.append([Entry(1, 2, 0, b"b")], HardState(2, "v", 1))
        finally:
            s.close()
        s = LmdbLogStore(fs / "log")
        try:
            assert s.entries(1, 3) == [Entry(1, 1, 0, b"a"), Entry(1, 2, 0, b"b")]
            assert s.initial_state()[0] == HardState(2, "v", 1)
        finally:
            s.close()


def test_full_map_raises_no_space_and_writes_nothing(tmp_path: Path) -> None:
    s = LmdbLogStore(tmp_path, map_size=1 << 20, max_map_size=2 << 20, sync=False)
    s.append([Entry(1, 1, 0, b"a")], HardState(1, "", 0))
    with pytest.raises(NoSpaceError):
        s.append([Entry(1, i, 0, b"x" * 50_000) for i in range(2, 80)], HardState(2, "v", 1))
    assert (s.last_index(), s.initial_state()[0]) == (1, HardState(1, "", 0))
    s.append([Entry(1, 2, 0, b"b")])  # still writable for what fits
    s.close()
    s = LmdbLogStore(tmp_path, map_size=1 << 20, max_map_size=2 << 20)
    assert s.entries(1, 3) == [Entry(1, 1, 0, b"a"), Entry(1, 2, 0, b"b")]
    assert s.initial_state()[0] == HardState(1, "", 0)
    s.close()


def test_bad_map_sizes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError):
        LmdbLogStore(tmp_path, map_size=2 << 20, max_map_size=1 << 20)
    LmdbLogStore(tmp_path).close()  # the refused open left no lock behind


def test_a_hole_in_the_log_is_reported_on_open(tmp_path: Path) -> None:
    s = LmdbLogStore(tmp_path)
    s.append([Entry(1, i) for i in range(1, 11)])
    s.close()
    env = lmdb.open(str(tmp_path), max_dbs=2)
    db = env.open_db(b"entries")
    with env.begin(write=True, db=db) as txn:
        assert txn.delete(struct.pack(">Q", 5))
    env.close()
    with pytest.raises(CorruptionError):
        LmdbLogStore(tmp_path)
    env = lmdb.open(str(tmp_path), max_dbs=2)
    db = env.open_db(b"entries")
    with env.begin(write=True, db=db) as txn:
        txn.put(struct.pack(">Q", 5), struct.pack(">QB", 1, 0))
    env.close()
    s = LmdbLogStore(tmp_path)
    assert s.last_index() == 10
    s.close()


def test_unreadable_state_is_reported_on_open(tmp_path: Path) -> None:
    LmdbLogStore(tmp_path).close()
    env = lmdb.open(str(tmp_path), max_dbs=1)
    with env.begin(write=True) as txn:  # the hard state lives in the main db
        txn.put(b"hs", b"\xc1garbage")
    env.close()
    with pytest.raises(CorruptionError):
        LmdbLogStore(tmp_path)


def stored_hard_state(store: LmdbLogStore) -> bytes | None:
    """Returns the raw hard state in the open store's LMDB (white box: py-lmdb refuses a
    second handle on an environment in one process)."""
    with store._env.begin(db=store._db_state) as txn:
        return txn.get(b"hs")


def test_unsynced_hard_state_is_deferred_to_the_next_write(tmp_path: Path) -> None:
    s = LmdbLogStore(tmp_path)
    s.append([Entry(2, 1)], HardState(2, "n1", 0))
    on_disk = stored_hard_state(s)
    s.append([], HardState(2, "n1", 1), sync=False)  # a commit-only update: no I/O
    assert s.initial_state()[0] == HardState(2, "n1", 1)
    assert stored_hard_state(s) == on_disk
    s.append([Entry(2, 2)])  # the next transaction carries it
    assert stored_hard_state(s) != on_disk
    s.append([], HardState(2, "n1", 2), sync=False)
    s.compact(SnapshotMeta(1, 2, CONF))  # so does any other write
    s.append([], HardState(2, "n1", 3), sync=False)
    s.append([], HardState(3, "", 2), sync=False)
    s.close()  # and close()
    s = LmdbLogStore(tmp_path)
    assert s.initial_state()[0] == HardState(3, "", 2)
    s.append([], HardState(3, "", 3), sync=False)
    s.append([Entry(3, 3)], HardState(3, "n2", 3))  # an explicit hard state wins
    s.apply_snapshot(SnapshotMeta(9, 3, CONF))
    s.close()
    s = LmdbLogStore(tmp_path)
    assert s.initial_state()[0] == HardState(3, "n2", 3)
    s.close()
