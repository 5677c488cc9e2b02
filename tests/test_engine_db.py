"""The bucket engine as a whole: opening, locking, read-only use, map growth and quota,
copies, stats and the consistency check; real LMDB files, real threads and processes."""

from __future__ import annotations

import hashlib
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import lmdb
import pytest
from smallfs import fill as fill_disk  # tests/ is on sys.path under pytest
from smallfs import small_filesystem
from storeformats import create_store

from boltraft import errors
from boltraft.storage.copier import copy_store
from boltraft.storage.db import DB, Tx

SMALL = 1 << 20


def fingerprint(d: Path) -> dict[str, tuple[str, int]]:
    """Returns every file's sha256 and mtime in ``d``."""
    out = {}
    for f in sorted(d.iterdir()):
        out[f.name] = (hashlib.sha256(f.read_bytes()).hexdigest(), f.stat().st_mtime_ns)
    return out


def fill(name: str, n: int, size: int = 200) -> object:
    def fn(tx: Tx) -> None:
        b = tx.create_bucket_if_not_exists(name)
        for i in range(n):
            b.put(b"k%08d" % i, b"x" * size)

    return fn


# --- opening -----------------------------------------------------------------------------
def test_open_creates_and_reopen_persists(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b"
    with DB.open(path, initial_map_size=SMALL, sync=False) as db:
        db.update_fn(lambda tx: tx.create_bucket_if_not_exists(["x", "y"]).put(b"k", b"v"))
        db.sync()
        assert db.path == path and not db.readonly
    with DB.open(path, initial_map_size=SMALL) as db, db.view() as tx:
        assert tx.bucket(["x", "y"]).get(b"k") == b"v"
    assert (path / "boltraft.lock").exists()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"quota": 0},
        {"initial_map_size": -1},
        {"max_value_size": "big"},
        {"quota": SMALL, "initial_map_size": 2 * SMALL},
    ],
)
def test_open_rejects_bad_sizes(tmp_path: Path, kwargs: dict[str, object]) -> None:
    with pytest.raises(errors.InvalidArgumentError):
        DB.open(tmp_path / "db", **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "db").exists()


def test_foreign_lmdb_environment_is_refused(tmp_path: Path) -> None:
    env = lmdb.open(str(tmp_path / "foreign"), map_size=SMALL)
    with env.begin(write=True) as txn:
        txn.put(b"someone", b"else")
    env.close()
    with pytest.raises(errors.CorruptionError):
        DB.open(tmp_path / "foreign")
    with pytest.raises(errors.CorruptionError):
        DB.open(tmp_path / "foreign", readonly=True)


@pytest.mark.parametrize("marker", [b"boltraft-2", b"boltraft-99"])
def test_other_format_version_is_refused(tmp_path: Path, marker: bytes) -> None:
    with DB.open(tmp_path / "db", initial_map_size=SMALL) as db:
        sysdb = db.env.open_db(b"sys", create=False)
        with db.env.begin(write=True) as txn:
            txn.put(b"format", marker, db=sysdb)
    with pytest.raises(errors.CorruptionError) as info:
        DB.open(tmp_path / "db")
    assert marker.decode() in info.value.message


def test_a_store_of_an_older_format_is_refused_by_name(tmp_path: Path) -> None:
    env = lmdb.open(str(tmp_path / "old"), map_size=SMALL, max_dbs=8)
    handles = {n: env.open_db(n) for n in (b"data", b"buckets", b"meta", b"sys")}
    with env.begin(write=True) as txn:
        txn.put(b"format", b"boltraft-2", db=handles[b"sys"])
        txn.put(b"\x01\x01k", b"v", db=handles[b"data"])
    env.close()
    for readonly in (False, True):
        with pytest.raises(errors.CorruptionError) as info:
            DB.open(tmp_path / "old", readonly=readonly)
        assert "boltraft-2" in info.value.message


def test_readonly_open_of_missing_store(tmp_path: Path) -> None:
    with pytest.raises(errors.DataDirNotFoundError):
        DB.open(tmp_path / "nothing", readonly=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(errors.DataDirNotFoundError):
        DB.open(tmp_path / "empty", readonly=True)
    assert list((tmp_path / "empty").iterdir()) == []


# --- locking and read-only use -----------------------------------------------------------
def test_second_writer_in_process_is_refused(tmp_path: Path) -> None:
    db = DB.open(tmp_path / "db", initial_map_size=SMALL)
    with pytest.raises(errors.DataDirLockedError) as info:
        DB.open(tmp_path / "db")
    assert str(os.getpid()) in info.value.message
    with pytest.raises(errors.DataDirLockedError):
        DB.open(tmp_path / "db", readonly=True)  # LMDB: one open per process
    db.close()
    DB.open(tmp_path / "db", initial_map_size=SMALL).close()


def test_readonly_open_changes_no_file_and_refuses_writes(tmp_path: Path) -> None:
    with DB.open(tmp_path / "db", initial_map_size=SMALL) as db:
        db.update_fn(lambda tx: tx.create_bucket_if_not_exists("b").put(b"k", b"v"))
    before = fingerprint(tmp_path / "db")
    with DB.open(tmp_path / "db", readonly=True) as ro:
        assert ro.readonly
        with ro.view() as tx:
            assert tx.bucket("b").get(b"k") == b"v"
        assert ro.check() == [] and ro.stats()["keys"] == 1
        with pytest.raises(errors.ReadOnlyTxError):
            ro.update().__enter__()
        with pytest.raises(errors.ReadOnlyTxError):
            ro.update_fn(lambda tx: None)
        with pytest.raises(errors.DataDirLockedError):
            DB.open(tmp_path / "db")  # a lock-free reader keeps writers out
    assert fingerprint(tmp_path / "db") == before


WRITER = """
import sys
from boltraft.storage.db import DB
db = DB.open(sys.argv[1], initial_map_size=1 << 20, quota=64 << 20)
db.update_fn(lambda tx: tx.create_bucket_if_not_exists("w").put(b"n", b"0"))
print("ready", flush=True)
for line in sys.stdin:
    n = int(line)
    def fill(tx):
        b = tx.bucket("w")
        for i in range(n):
            b.put(b"k%08d" % i, b"x" * 200)
        b.put(b"n", str(n).encode())
    db.update_fn(fill)
    print("done", db.stats()["map_size"], flush=True)
db.close()
"""


def read_line(proc: subprocess.Popen[str], timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            return proc.stdout.readline().strip()
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    raise AssertionError("the writer process did not answer in time")


def test_reader_process_follows_a_live_writer_that_grows_the_map(tmp_path: Path) -> None:
    path = tmp_path / "db"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert read_line(proc) == "ready"
        with pytest.raises(errors.DataDirLockedError):
            DB.open(path)
        with DB.open(path, readonly=True) as ro:
            with ro.view() as tx:
                assert tx.bucket("w").get(b"n") == b"0"
            assert proc.stdin is not None
            proc.stdin.write("20000\n")
            proc.stdin.flush()
            done, map_size = read_line(proc).split()
            assert done == "done" and int(map_size) > SMALL  # the writer grew its map
            with ro.view() as tx:  # adopts the larger map (LMDB's MapResizedError)
                assert tx.bucket("w").get(b"n") == b"20000"
                assert tx.bucket("w").count() == 20001
            assert ro.check() == []
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- map growth and quota ----------------------------------------------------------------
def test_update_fn_grows_the_map_and_retries(tmp_path: Path) -> None:
    calls = []
    with DB.open(tmp_path / "db", initial_map_size=SMALL, quota=64 * SMALL) as db:

        def big(tx: Tx) -> str:
            calls.append(1)
            fill("b", 15000)(tx)
            return "ok"

        assert db.update_fn(big) == "ok"
        assert len(calls) > 1  # at least one attempt hit the full map
        assert db.stats()["map_size"] > SMALL
        with db.view() as tx:
            assert tx.bucket("b").count() == 15000
        assert db.check() == []


def test_quota_gives_no_space_writes_nothing_and_reads_go_on(tmp_path: Path) -> None:
    with DB.open(tmp_path / "db", initial_map_size=SMALL, quota=2 * SMALL) as db:
        db.update_fn(lambda tx: tx.create_bucket("keep").put(b"k", b"v"))
        with pytest.raises(errors.NoSpaceError) as info:
            db.update_fn(fill("big", 30000))
        assert info.value.details["retry"] is False
        assert info.value.details["quota"] == 2 * SMALL
        with db.view() as tx:
            assert tx.buckets() == [b"keep"]
            assert tx.bucket("keep").get(b"k") == b"v"
        assert db.check() == []
        db.update_fn(lambda tx: tx.bucket("keep").put(b"small", b"still fits"))
        with db.view() as tx:
            assert tx.bucket("keep").get(b"small") == b"still fits"


def test_a_full_disk_refuses_a_write_with_no_space_and_reads_go_on(tmp_path: Path) -> None:
    big = os.urandom(700 << 10)  # more pages than the file has free: it must grow

    def put_big(tx: Tx) -> None:
        tx.bucket("keep").put(b"big", big)

    with small_filesystem(tmp_path / "fs") as fs, DB.open(fs / "db") as db:
        db.update_fn(lambda tx: tx.create_bucket("keep").put(b"k", b"v"))
        filler = fill_disk(fs)
        with pytest.raises(errors.NoSpaceError) as info:
            db.update_fn(put_big)  # at once: growing the map cannot help
        assert info.value.details == {"retry": False, "disk_full": True}
        assert "disk" in info.value.message
        with pytest.raises(errors.NoSpaceError) as info, db.update() as tx:
            put_big(tx)
        assert info.value.details["disk_full"] is True
        os.truncate(filler, filler.stat().st_size - (64 << 10))  # a short write: LMDB's EIO
        with pytest.raises(errors.NoSpaceError) as info:
            db.update_fn(put_big)
        assert "Input/output error" in info.value.message
        assert info.value.details["disk_full"] is True
        with db.view() as tx:
            assert tx.bucket("keep").get(b"k") == b"v"
            assert tx.bucket("keep").get(b"big") is None
        assert db.check() == []
        filler.unlink()
        db.update_fn(put_big)
        with db.view() as tx:
            assert tx.bucket("keep").get(b"big") == big


def test_update_context_grows_and_asks_for_a_retry(tmp_path: Path) -> None:
    with DB.open(tmp_path / "db", initial_map_size=SMALL, quota=64 * SMALL) as db:
        failures = 0
        for _ in range(8):
            try:
                with db.update() as tx:
                    fill("b", 10000)(tx)
                break
            except errors.NoSpaceError as exc:
                assert exc.details["retry"] is True
                failures += 1
                with db.view() as tx:
                    assert tx.buckets() == []  # nothing of the failed attempt
        else:
            raise AssertionError("never fitted")
        assert failures >= 1
        with db.view() as tx:
            assert tx.bucket("b").count() == 10000


def test_full_map_in_a_savepoint_dooms_the_whole_transaction(tmp_path: Path) -> None:
    """A caller that turns errors into results (as the state machine does) still gets a
    clean retry: the doomed attempt is thrown away as a whole."""
    attempts: list[list[str]] = []
    with DB.open(tmp_path / "db", initial_map_size=SMALL, quota=64 * SMALL) as db:

        def apply(tx: Tx) -> list[str]:
            results = []
            for name in ("a", "b", "c"):
                try:
                    with tx.savepoint():
                        fill(name, 3000)(tx)
                    results.append("ok")
                except errors.BoltraftError as exc:
                    results.append(exc.code)
            attempts.append(results)
            return results

        assert db.update_fn(apply) == ["ok", "ok", "ok"]
        assert any("no_space" in a for a in attempts[:-1])
        with db.view() as tx:
            assert [tx.bucket(n).count() for n in "abc"] == [3000, 3000, 3000]


def test_growth_refused_while_the_same_thread_holds_a_transaction(tmp_path: Path) -> None:
    with DB.open(tmp_path / "db", initial_map_size=SMALL, quota=64 * SMALL) as db:
        with db.view():
            with pytest.raises(errors.NoSpaceError) as info:
                db.update_fn(fill("b", 15000))
            assert "open transaction" in info.value.message
        db.update_fn(fill("b", 15000))  # fine once the view is closed


def test_readers_in_threads_survive_map_growth(tmp_path: Path) -> None:
    with DB.open(tmp_path / "db", initial_map_size=SMALL, quota=256 * SMALL) as db:
        db.update_fn(lambda tx: tx.create_bucket("b").put(b"n", b"0"))
        stop = threading.Event()
        failures: list[BaseException] = []
        reads = [0]

        def reader() -> None:
            try:
                while not stop.is_set():
                    with db.view() as tx:
                        b = tx.bucket("b")
                        n = int(b.get(b"n") or b"0")
                        assert b.count() == n + 1
                    reads[0] += 1
            except BaseException as exc:
                failures.append(exc)

        # Three spinning readers: py-lmdb's write-txn abort (after the full map) waits until
        # no call is in flight in the process, which two such readers alone never allow;
        # the DB holds readers back while it aborts (db._Gate.quiesce), so this returns.
        threads = [threading.Thread(target=reader, daemon=True) for _ in range(3)]
        for t in threads:
            t.start()
        wrote = threading.Event()

        def write() -> None:
            for start in range(0, 30000, 5000):

                def more(tx: Tx, start: int = start) -> None:
                    b = tx.bucket("b")
                    for i in range(start, start + 5000):
                        b.put(b"k%08d" % i, b"x" * 200)
                    b.put(b"n", b"%d" % (start + 5000))

                db.update_fn(more)
            wrote.set()

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        finished = wrote.wait(120)  # starved, it would finish only once the readers stop
        stop.set()
        for t in [*threads, writer]:
            t.join(timeout=30)
        assert finished, "the writer was starved by the readers"
        assert not failures, failures
        assert reads[0] > 0
        assert db.stats()["map_size"] > 4 * SMALL


# --- copy, stats, check ------------------------------------------------------------------
def test_copy_is_consistent_while_a_writer_goes_on(tmp_path: Path) -> None:
    with DB.open(tmp_path / "db", initial_map_size=16 * SMALL) as db:
        db.update_fn(lambda tx: tx.create_bucket("b").put(b"n", b"0"))
        stop = threading.Event()

        def writer() -> None:
            i = 0
            while not stop.is_set():
                i += 1

                def step(tx: Tx, i: int = i) -> None:
                    b = tx.bucket("b")
                    b.put(b"k%08d" % i, b"v")
                    b.put(b"n", b"%d" % i)

                db.update_fn(step)

        t = threading.Thread(target=writer)
        t.start()
        try:
            deadline = time.monotonic() + 10
            while db.stats()["last_txnid"] < 20 and time.monotonic() < deadline:
                time.sleep(0.01)
            dest = db.copy(tmp_path / "copy")
        finally:
            stop.set()
            t.join(timeout=30)
        with pytest.raises(errors.InvalidArgumentError):
            db.copy(dest)  # not empty any more
    assert sorted(p.name for p in dest.iterdir()) == ["data.mdb"]
    with DB.open(dest, readonly=True) as cp:
        assert cp.check() == []
        with cp.view() as tx:
            b = tx.bucket("b")
            n = int(b.get(b"n") or b"")
            assert n >= 1 and b.count() == n + 1


def test_stats_counts(tmp_path: Path) -> None:
    with DB.open(tmp_path / "db", initial_map_size=SMALL) as db:
        with db.update() as tx:
            tx.create_bucket_if_not_exists(["a", "b", "c"]).put(b"k", b"v")
            tx.create_bucket("d").put(b"k", b"v")
            tx.meta_put(b"m", b"v")
        s = db.stats()
        assert (s["buckets"], s["max_depth"], s["keys"], s["meta_keys"]) == (4, 3, 2, 1)
        assert s["map_size"] >= SMALL and 0 < s["used_bytes"] <= s["file_bytes"]
        assert s["max_key_size"] == 511 and s["quota"] == 8 << 30


def corrupt(db: DB, sub: bytes, key: bytes, value: bytes) -> None:
    """Writes behind the engine's back; ``sub`` b"data" is the main db (the user data)."""
    handle = db.env.open_db(None if sub == b"data" else sub, create=False)
    with db.env.begin(write=True) as txn:
        txn.put(key, value, db=handle)


def _tagged(tag: int, length: int, rest: bytes) -> bytes:
    """Returns a stored key whose length byte is ``tag + length`` followed by ``rest``."""
    return bytes((tag + length,)) + rest


R = b"\x00" * 7  # a bucket record's id, less its last byte


@pytest.mark.parametrize("marker", [b"boltraft-5", b"boltraft-4"])
@pytest.mark.parametrize(
    ("sub", "key", "value", "problem"),
    [
        (b"data", (1, b"\x63orphan"), b"v", "orphan key(s) under unknown bucket id 99"),
        (b"data", (1, b"\x00rootkey"), b"v", "orphan key(s) under the root"),
        (b"data", (5, b"\x01"), b"v", "malformed data key"),
        (b"data", (8, b"\x01"), b"v", "malformed data key"),
        (b"data", (1, b"\x01n"), b"v", "both a value and a bucket"),
        (b"data", b"stray", b"v", "unexpected key b'stray' in the main db"),
        (b"buckets", (1, b"\x50lost"), R + b"\x51" + R + b"\x00", "missing parent"),
        (b"buckets", (1, b"\x00dup"), R + b"\x01" + R + b"\x00", "used twice"),
        (b"buckets", (1, b"\x00short"), b"\x01", "malformed bucket record"),
        (b"buckets", (1, b"\x00bad/name"), R + b"\x02" + R + b"\x00", "invalid"),
        (b"buckets", (9, b"\x00x"), R + b"\x03" + R + b"\x00", "malformed bucket entry key"),
        (b"sys", b"next_id", b"\x00" * 8, "not below the next id"),
        (b"sys", b"format", b"other", "format marker"),
    ],
)
def test_check_finds_corruption(
    tmp_path: Path, marker: bytes, sub: bytes, key: Any, value: bytes, problem: str
) -> None:
    """Keys given as (length, rest) get the store's prefix tag (HIGH_TAG in format 5)."""
    if marker != b"boltraft-5":
        create_store(tmp_path / "db", marker)
    with DB.open(tmp_path / "db", initial_map_size=SMALL) as db:
        assert db._dbs.format == marker
        with db.update() as tx:
            tx.create_bucket("b").put(b"k", b"v")
            tx.create_bucket(["b", "n"])
        assert db.check() == []
        if type(key) is tuple:
            key = _tagged(db._dbs.tag, *key)
        corrupt(db, sub, key, value)
        problems = db.check()
        assert any(problem in p for p in problems), problems


# --- the bucket directory of write transactions (DB._known) -----------------------------------
def test_bucket_directory_never_resolves_a_deleted_and_recreated_bucket(tmp_path: Path) -> None:
    with DB.open(tmp_path) as db:
        with db.update() as tx:
            tx.create_bucket((b"a",)).put(b"k", b"old")
        with db.update() as tx:
            tx.bucket((b"a",)).put(b"k2", b"v")  # learned by the directory at this commit
        assert (b"a",) in db._known
        old_id = db._known[(b"a",)][1]
        with db.update() as tx:
            tx.delete_bucket((b"a",))
            tx.create_bucket((b"a",))
        with db.update() as tx:
            b = tx.bucket((b"a",))
            assert b.id != old_id
            assert b.get(b"k") is None
            b.put(b"k3", b"new")
        with db.view() as tx:
            assert [tuple(i) for i in tx.bucket("a").scan()[0]] == [(b"k3", b"new")]


def test_bucket_directory_learns_new_nested_buckets(tmp_path: Path) -> None:
    with DB.open(tmp_path) as db:
        with db.update() as tx:
            tx.create_bucket("a")
        for _ in range(2):  # the second round resolves "a" through the directory
            with db.update() as tx:
                tx.bucket((b"a",)).put(b"k", b"v")
        assert db._known[(b"a",)][3] is False  # no nested bucket: puts skip the check
        with db.update() as tx:
            tx.create_bucket((b"a", b"sub"))
        with db.update() as tx, pytest.raises(errors.IncompatibleValueError):
            tx.bucket((b"a",)).put(b"sub", b"v")


def test_bucket_directory_forgets_rolled_back_and_failed_transactions(tmp_path: Path) -> None:
    with DB.open(tmp_path) as db:
        with db.update() as tx, pytest.raises(errors.BucketExistsError), tx.savepoint():
            tx.create_bucket("gone").put(b"k", b"v")
            tx.bucket((b"gone",)).put(b"k2", b"v")
            tx.create_bucket("gone")
        assert db._known == {}
        with db.update() as tx, pytest.raises(errors.BucketNotFoundError):
            tx.bucket((b"gone",))
        with pytest.raises(RuntimeError), db.update() as tx:
            tx.create_bucket("never")
            tx.bucket((b"never",)).put(b"k", b"v")
            raise RuntimeError("roll back")
        with db.update() as tx, pytest.raises(errors.BucketNotFoundError):
            tx.bucket((b"never",))


def test_readers_do_not_use_the_bucket_directory(tmp_path: Path) -> None:
    with DB.open(tmp_path) as db:
        with db.update() as tx:
            tx.create_bucket("a").put(b"k", b"v1")
        with db.update() as tx:
            tx.bucket((b"a",)).put(b"k", b"v2")
        db._known[(b"a",)] = ((b"a",), 999, b"bogus", False)  # a reader must not look
        with db.view() as tx:
            assert tx.bucket((b"a",)).get(b"k") == b"v2"


def test_bucket_directory_within_a_reshaping_transaction(tmp_path: Path) -> None:
    with DB.open(tmp_path) as db:
        with db.update() as tx:
            tx.create_bucket("a").put(b"k", b"v")
        with db.update() as tx:
            tx.bucket((b"a",)).put(b"k2", b"v")
        assert (b"a",) in db._known
        with db.update() as tx:
            tx.delete_bucket("a")
            with pytest.raises(errors.BucketNotFoundError):
                tx.bucket((b"a",))
            tx.create_bucket("a")
            tx.bucket((b"a",)).put(b"k3", b"v")
        with db.view() as tx:
            assert [item[0] for item in tx.bucket("a").scan()[0]] == [b"k3"]


def test_rollbacks_do_not_wait_for_a_copy_in_progress(tmp_path: Path) -> None:
    """A copy blocked half-way (its pipe is full and unread) must not hold up the writer's
    rollbacks: an in-process copy would (py-lmdb's abort waits for it), the child's does not.
    """
    with DB.open(tmp_path / "db", initial_map_size=16 * SMALL) as db:
        db.update_fn(fill("b", 4000, 500))  # ~2 MiB: far more than the pipe holds
        r, w = os.pipe()
        copier = threading.Thread(target=copy_store, args=(db.path,), kwargs={"fd": w})
        copier.start()
        try:
            # the copy has started once the pipe holds something (it then blocks when full)
            deadline = time.monotonic() + 30
            while not select.select([r], [], [], 0.05)[0]:
                assert time.monotonic() < deadline, "the copy never started"
            done = threading.Event()

            def roll_back() -> None:
                with (
                    db.update() as tx,
                    pytest.raises(errors.ConditionFailedError),
                    tx.savepoint(),
                ):
                    tx.bucket("b").put(b"k", b"v")
                    raise errors.ConditionFailedError("undo the savepoint")
                with pytest.raises(RuntimeError), db.update() as tx:
                    tx.bucket("b").put(b"k2", b"v")
                    raise RuntimeError("abort the transaction")
                done.set()

            t = threading.Thread(target=roll_back, daemon=True)
            t.start()
            assert done.wait(30), "a rollback waited for the copy"
        finally:
            chunks = []
            with os.fdopen(r, "rb") as pipe:
                reading = threading.Thread(target=lambda: chunks.append(pipe.read()))
                reading.start()
                copier.join(60)
                os.close(w)
                reading.join(60)
        image = tmp_path / "copy"
        image.mkdir()
        (image / "data.mdb").write_bytes(chunks[0])
        with DB.open(image, readonly=True) as copy, copy.view() as tx:
            assert tx.bucket("b").count() == 4000
            assert tx.bucket("b").get(b"k") is None


# --- a write transaction held open (hold_fn / end_held) ------------------------------------
def test_a_held_transaction_commits_or_rolls_back_when_its_holder_says(tmp_path: Path) -> None:
    with DB.open(tmp_path / "db", initial_map_size=SMALL) as db:
        db.update_fn(lambda tx: tx.create_bucket("b").put(b"k", b"old"))
        for commit, want in ((False, b"old"), (True, b"new")):
            held = db.hold_fn(lambda tx: tx.bucket("b").put(b"k", b"new") or "done")
            assert held is not None and held[1] == "done"
            seen: list[bytes | None] = []

            def read(seen: list[bytes | None] = seen) -> None:
                with db.view() as rtx:
                    seen.append(rtx.bucket("b").get(b"k"))

            reader = threading.Thread(target=read)  # another thread reads meanwhile
            reader.start()
            reader.join(10)
            with db.view() as rtx:  # and so does this one, beside its open write
                seen.append(rtx.bucket("b").get(b"k"))
            assert seen == [b"old", b"old"]
            assert db.end_held(held[0], commit) is commit
            with db.view() as rtx:
                assert rtx.bucket("b").get(b"k") == want
        db.update_fn(lambda tx: tx.bucket("b").put(b"after", b"1"))  # the lock was let go
        assert db.check() == []


def test_a_held_transaction_whose_body_fails_leaves_nothing_open(tmp_path: Path) -> None:
    with DB.open(tmp_path / "db", initial_map_size=SMALL, quota=SMALL) as db:

        def missing(tx: Tx) -> None:
            tx.create_bucket("x").put(b"k", b"v")
            tx.bucket("nope")  # BucketNotFoundError: rolled back, None

        assert db.hold_fn(missing) is None
        assert db.hold_fn(fill("big", 30000)) is None  # the map filled up: no growing here

        def crash(tx: Tx) -> None:
            tx.create_bucket("y")
            raise ZeroDivisionError

        with pytest.raises(ZeroDivisionError):  # not a BoltraftError: raised, rolled back
            db.hold_fn(crash)
        db.update_fn(lambda tx: tx.create_bucket("z"))
        with db.view() as tx:
            assert tx.buckets() == [b"z"]
