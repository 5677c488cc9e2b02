"""Snapshots: consistent copies while a writer runs, verified atomic restores."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from boltraft.errors import ChecksumMismatchError, SnapshotError
from boltraft.raft.types import Entry
from boltraft.storage import commands, snapshot
from boltraft.storage.fsm import BucketStateMachine
from boltraft.storage.queries import execute_read
from boltraft.storage.snapshot import create_snapshot, load_snapshot_info, restore_snapshot


def ent(index: int, cmd: dict[str, Any]) -> Entry:
    return Entry(1, index, 0, commands.encode(cmd))


def put_entry(index: int) -> Entry:
    return ent(index, {"op": "put", "bucket": "b", "key": b"k%06d" % index, "value": b"v" * 50})


def keys_of(sm: BucketStateMachine) -> list[bytes]:
    """Every key of bucket b (an engine scan: a scan request answers 4 MiB at most)."""
    with sm.db.view() as tx:
        return [k for k, _ in tx.bucket("b").scan()[0]]


def expected_keys(index: int) -> list[bytes]:
    """Returns the keys that entries 2..index (puts of their own index) leave in bucket b."""
    return [b"k%06d" % i for i in range(2, index + 1)]


def test_snapshot_and_restore_round_trip(tmp_path: Path) -> None:
    with BucketStateMachine(tmp_path / "src") as sm:
        sm.apply([ent(1, {"op": "create_bucket", "bucket": "b"})])
        sm.apply([put_entry(i) for i in range(2, 50)])
        info = create_snapshot(sm, tmp_path / "snap")
    assert (info.index, info.term) == (49, 1)
    assert info.path == tmp_path / "snap" / "data.mdb"
    assert sorted(os.listdir(tmp_path / "snap")) == ["data.mdb", "snapshot.json"]
    assert load_snapshot_info(tmp_path / "snap") == info
    assert info.size == info.path.stat().st_size
    assert snapshot.file_sha256(info.path) == (info.size, info.sha256)

    # Restore over an existing, different store.
    with BucketStateMachine(tmp_path / "dst") as other:
        other.apply([ent(1, {"op": "create_bucket", "bucket": "zzz"})])
    restore_snapshot(tmp_path / "dst", tmp_path / "snap", info)
    assert [p.name for p in (tmp_path / "dst").iterdir() if p.name.startswith(".")] == []
    with BucketStateMachine(tmp_path / "dst") as sm:
        assert sm.applied == (49, 1)
        assert keys_of(sm) == expected_keys(49)
        assert execute_read(sm.db, {"op": "buckets"}) == [b"b"]
        assert sm.db.check() == []
        # It goes on from there.
        assert sm.apply([put_entry(50)]) == [None]


def test_restore_into_a_new_directory(tmp_path: Path) -> None:
    with BucketStateMachine(tmp_path / "src") as sm:
        sm.apply([ent(1, {"op": "create_bucket", "bucket": "b"}), put_entry(2)])
        info = create_snapshot(sm.db, tmp_path / "snap")
    restore_snapshot(tmp_path / "fresh" / "state", info.path, info)
    with BucketStateMachine(tmp_path / "fresh" / "state") as sm:
        assert sm.applied == (2, 1)
        assert keys_of(sm) == [b"k000002"]


def test_snapshot_while_a_writer_runs(tmp_path: Path) -> None:
    sm = BucketStateMachine(tmp_path / "src", sync=False)
    sm.apply([ent(1, {"op": "create_bucket", "bucket": "b"})])
    stop = threading.Event()
    errors: list[BaseException] = []
    progress = [1]

    def writer() -> None:
        try:
            i = 2
            while not stop.is_set():
                sm.apply([put_entry(j) for j in range(i, i + 20)])
                i += 20
                progress[0] = i - 1
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    t = threading.Thread(target=writer)
    t.start()
    infos = []
    try:
        for n in range(4):
            deadline = time.monotonic() + 30
            target = progress[0] + 100
            while progress[0] < target and time.monotonic() < deadline and not errors:
                time.sleep(0.001)
            infos.append(create_snapshot(sm, tmp_path / f"snap{n}"))
    finally:
        stop.set()
        t.join()
        sm.close()
    assert not errors
    indexes = [info.index for info in infos]
    assert indexes == sorted(indexes) and len(set(indexes)) == 4
    for n, info in enumerate(infos):
        dest = tmp_path / f"restored{n}"
        restore_snapshot(dest, tmp_path / f"snap{n}", info)
        with BucketStateMachine(dest) as copy:
            assert copy.applied == (info.index, 1)
            assert keys_of(copy) == expected_keys(info.index)


def test_restore_refuses_a_corrupt_file_and_changes_nothing(tmp_path: Path) -> None:
    with BucketStateMachine(tmp_path / "src") as sm:
        sm.apply([ent(1, {"op": "create_bucket", "bucket": "b"}), put_entry(2)])
        info = create_snapshot(sm, tmp_path / "snap")
    with BucketStateMachine(tmp_path / "dst") as sm:
        sm.apply([ent(1, {"op": "create_bucket", "bucket": "old"})])
    before = (tmp_path / "dst" / "data.mdb").read_bytes()
    data = bytearray(info.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    info.path.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError):
        restore_snapshot(tmp_path / "dst", info.path, info)
    with pytest.raises(ChecksumMismatchError):
        restore_snapshot(tmp_path / "dst", info.path, dataclasses.replace(info, size=info.size + 1))
    assert (tmp_path / "dst" / "data.mdb").read_bytes() == before
    assert [p.name for p in (tmp_path / "dst").iterdir() if p.name.startswith(".")] == []


def test_a_crash_before_the_rename_leaves_the_old_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with BucketStateMachine(tmp_path / "src") as sm:
        sm.apply([ent(1, {"op": "create_bucket", "bucket": "b"}), put_entry(2)])
        info = create_snapshot(sm, tmp_path / "snap")
    with BucketStateMachine(tmp_path / "dst") as sm:
        sm.apply([ent(1, {"op": "create_bucket", "bucket": "old"})])

    def crash(*args: Any) -> None:
        raise OSError("simulated crash")

    monkeypatch.setattr(snapshot.os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        restore_snapshot(tmp_path / "dst", info.path, info)
    monkeypatch.undo()
    with BucketStateMachine(tmp_path / "dst") as sm:
        assert execute_read(sm.db, {"op": "buckets"}) == [b"old"]
    # A later restore finishes the job (and sweeps any leftover temporary directory).
    (tmp_path / "dst" / ".restore-leftover").mkdir()
    restore_snapshot(tmp_path / "dst", info.path, info)
    assert not (tmp_path / "dst" / ".restore-leftover").exists()
    with BucketStateMachine(tmp_path / "dst") as sm:
        assert execute_read(sm.db, {"op": "buckets"}) == [b"b"]


def test_snapshot_errors(tmp_path: Path) -> None:
    with BucketStateMachine(tmp_path / "src") as sm:
        create_snapshot(sm, tmp_path / "snap")
        with pytest.raises(SnapshotError):
            create_snapshot(sm, tmp_path / "snap")
    with pytest.raises(SnapshotError):
        load_snapshot_info(tmp_path / "nowhere")
    meta = tmp_path / "snap" / "snapshot.json"
    meta.write_text(json.dumps({"format": 99}))
    with pytest.raises(SnapshotError):
        load_snapshot_info(tmp_path / "snap")
    meta.write_text("{not json")
    with pytest.raises(SnapshotError):
        load_snapshot_info(tmp_path / "snap")
    info = snapshot.SnapshotInfo(0, 0, 0, "", tmp_path / "missing")
    with pytest.raises(SnapshotError):
        restore_snapshot(tmp_path / "dst", tmp_path / "missing", info)
