"""Store format 5 (the user data after the sub-db records, the state record last) next to
format 4, which the engine still serves: same results, and format 5's full pages."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import lmdb
import pytest
from fsm_model import dump  # tests/ is on sys.path under pytest
from storeformats import create_store

from boltraft.raft.types import Entry, EntryType
from boltraft.storage import commands
from boltraft.storage.fsm import BucketStateMachine
from boltraft.storage.layout import STATE_KEY, STATE_KEY_TAIL

VALUE = b"v" * 100


def ent(index: int, cmd: dict[str, Any] | None) -> Entry:
    return Entry(1, index, EntryType.NORMAL, b"" if cmd is None else commands.encode(cmd))


def put(bucket: Any, key: bytes, value: bytes = VALUE, **extra: Any) -> dict[str, Any]:
    return {"op": "put", "bucket": bucket, "key": key, "value": value, **extra}


def machine(path: Path, marker: bytes, **options: Any) -> BucketStateMachine:
    """Returns a state machine on a new store of format ``marker``."""
    if marker != b"boltraft-5":
        create_store(path, marker)
    sm = BucketStateMachine(path, **options)
    assert sm.db._dbs.format == marker
    return sm


def main_keys(sm: BucketStateMachine) -> list[bytes]:
    with sm.db.env.begin() as txn:
        return list(txn.cursor().iternext(keys=True, values=False))


def test_format_5_puts_the_data_after_the_sub_db_records_and_the_state_record_last(
    tmp_path: Path,
) -> None:
    sm = machine(tmp_path / "s", b"boltraft-5")
    try:
        sm.apply([ent(1, {"op": "create_bucket", "bucket": "a"}), ent(2, put("a", b"k"))])
        keys = main_keys(sm)
        assert keys[:3] == [b"buckets", b"meta", b"sys"]
        assert keys[3:] == [b"\xf1\x01k", STATE_KEY_TAIL]
        assert sm.db.stats()["format"] == "boltraft-5"
    finally:
        sm.close()


def test_format_4_keeps_its_layout(tmp_path: Path) -> None:
    sm = machine(tmp_path / "s", b"boltraft-4")
    try:
        sm.apply([ent(1, {"op": "create_bucket", "bucket": "a"}), ent(2, put("a", b"k"))])
        assert main_keys(sm) == [b"\x01\x01k", b"buckets", b"meta", STATE_KEY, b"sys"]
        assert sm.db.stats()["format"] == "boltraft-4"
    finally:
        sm.close()


def test_every_kind_of_apply_leaves_the_state_record_last(tmp_path: Path) -> None:
    """The batch path, the general path, a rolled-back batch and the entry-by-entry path of
    a full store all write the record back after the data."""
    quota = 1 << 20
    sm = machine(tmp_path / "s", b"boltraft-5", quota=quota, initial_map_size=quota)
    try:
        runs = [
            [ent(1, {"op": "create_bucket", "bucket": "a"})],
            [ent(2, put("a", b"k1")), ent(3, put("a", b"k2"))],  # the batch path
            [ent(4, None), ent(5, put("a", b"k3", cid=b"c", seq=1))],  # the general path
            [ent(6, {"op": "batch", "ops": [put("a", b"k4"), put("zz", b"k")]})],  # rolled back
            [ent(i, put("a", b"big%d" % i, b"x" * (300 << 10))) for i in range(7, 12)],
        ]
        for run in runs:
            sm.apply(run)
            assert main_keys(sm)[-1] == STATE_KEY_TAIL
        assert sm.applied == (11, 1)
        assert sm.db.check() == []
    finally:
        sm.close()
    with BucketStateMachine(tmp_path / "s") as again:
        assert again.applied == (11, 1)


def _leaf_pages_after_sequential_puts(
    sm: BucketStateMachine, raw: lmdb.Environment, exactly_once: bool, run: int = 100
) -> tuple[int, int]:
    """Returns (the store's leaf pages, raw LMDB's) after 3,000 sequential puts applied in runs
    of ``run``, and raw LMDB putting the same keys and values in one transaction per run.
    ``exactly_once``: the puts carry (cid, seq)."""
    sm.apply([ent(1, {"op": "create_bucket", "bucket": "a"})])
    for start in range(2, 3002, run):
        keys = [b"key-%010d" % i for i in range(start, start + run)]
        sm.apply(
            [
                ent(i, put("a", k, **({"cid": b"c", "seq": i} if exactly_once else {})))
                for i, k in enumerate(keys, start)
            ]
        )
        with raw.begin(write=True) as txn:
            for k in keys:
                txn.put(k, VALUE)
    with sm.db.env.begin() as txn:
        mine = txn.stat(sm.db._dbs.data)["leaf_pages"]
    return mine, raw.stat()["leaf_pages"]


@pytest.mark.parametrize("exactly_once", [False, True])
@pytest.mark.parametrize("marker", [b"boltraft-5", b"boltraft-4"])
def test_sequential_puts_fill_their_pages_in_format_5(
    tmp_path: Path, marker: bytes, exactly_once: bool
) -> None:
    """Format 5 fills pages like raw LMDB; format 4's trailing records halve its fill."""
    sm = machine(tmp_path / "s", marker, sync=False)
    raw = lmdb.open(str(tmp_path / "raw"), map_size=1 << 28, sync=False)
    try:
        mine, theirs = _leaf_pages_after_sequential_puts(sm, raw, exactly_once)
    finally:
        sm.close()
        raw.close()
    if marker == b"boltraft-5":
        assert mine <= theirs * 1.05 + 1
    else:
        assert mine >= theirs * 1.6


def _random_log(rng: random.Random, n: int) -> list[dict[str, Any]]:
    """Returns ``n`` commands over a few nested buckets: every kind, failures included."""
    paths: list[Any] = ["a", ["a", "b"], "c", ["c", "d", "e"], "gone"]
    out: list[dict[str, Any]] = []
    for _ in range(n):
        path = rng.choice(paths)
        key = b"k%d" % rng.randrange(12)
        kind = rng.randrange(20)
        if kind < 8:
            out.append(put(path, key, b"%d" % rng.randrange(1000)))
        elif kind < 10:
            out.append({"op": "delete", "bucket": path, "key": key})
        elif kind < 13:
            out.append({"op": "create_bucket", "bucket": path, "if_not_exists": True})
        elif kind == 13:
            out.append({"op": "delete_bucket", "bucket": path})
        elif kind < 16:
            out.append({"op": "next_sequence", "bucket": path, "cid": b"c", "seq": len(out)})
        elif kind < 18:
            out.append(put(path, key, b"new", if_value=b"%d" % rng.randrange(1000)))
        else:
            ops = [put(path, key, b"b"), {"op": "delete", "bucket": rng.choice(paths), "key": key}]
            out.append({"op": "batch", "ops": ops})
    return out


def _outcome(result: Any) -> Any:
    return (type(result).__name__, result.details) if isinstance(result, Exception) else result


@pytest.mark.parametrize("seed", range(8))
def test_both_formats_give_the_same_results(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    log = _random_log(rng, 300)
    sms = [machine(tmp_path / m.decode(), m) for m in (b"boltraft-5", b"boltraft-4")]
    try:
        index = 1
        while index <= len(log):
            size = rng.randrange(1, 40)
            run = [ent(i, cmd) for i, cmd in enumerate(log[index - 1 : index - 1 + size], index)]
            got = [[_outcome(r) for r in sm.apply(run)] for sm in sms]
            assert got[0] == got[1]
            index += size
        assert dump(sms[0].db) == dump(sms[1].db)
        for sm in sms:
            assert sm.db.check() == []
        stats = [sm.db.stats() for sm in sms]
        assert [(s["buckets"], s["keys"], s["meta_keys"]) for s in stats] == [
            (s["buckets"], s["keys"], s["meta_keys"]) for s in stats[::-1]
        ]
    finally:
        for sm in sms:
            sm.close()


def test_single_puts_leave_the_state_record_in_place(tmp_path: Path) -> None:
    """One command per apply: the record is not lifted (``boltraft.storage.fsm`` says why),
    so sequential single puts split pages half and half, as in format 4."""
    sm = machine(tmp_path / "s", b"boltraft-5", sync=False)
    raw = lmdb.open(str(tmp_path / "raw"), map_size=1 << 28, sync=False)
    try:
        mine, theirs = _leaf_pages_after_sequential_puts(sm, raw, True, run=1)
    finally:
        sm.close()
        raw.close()
    assert mine >= theirs * 1.6
