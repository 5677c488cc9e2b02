"""The bucket engine: buckets, keys, conditions, sequences, transactions, savepoints, meta."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from boltraft import errors
from boltraft.storage.db import DB


@pytest.fixture
def db(tmp_path: Path) -> Iterator[DB]:
    d = DB.open(tmp_path / "db", initial_map_size=1 << 20)
    yield d
    d.close()


def contents(db: DB, path: object) -> list[tuple[bytes, bytes | None]]:
    with db.view() as tx:
        return tx.bucket(path).scan()[0]


# --- buckets -----------------------------------------------------------------------------
def test_create_lookup_and_list_buckets(db: DB) -> None:
    with db.update() as tx:
        users = tx.create_bucket("users")
        eu = users.create_bucket(b"eu")
        tx.create_bucket(["users", "us"])
        tx.create_bucket(b"apps")
        assert tx.bucket(["users", "eu"]) is eu
        assert tx.bucket((b"users", b"eu")) is eu
        assert tx.bucket("users") is users is tx.bucket(b"users")
        assert eu.path == (b"users", b"eu") and eu.name == b"eu"
    with db.view() as tx:
        assert tx.buckets() == [b"apps", b"users"]
        assert tx.buckets("users") == [b"eu", b"us"]
        assert tx.bucket("users").buckets() == [b"eu", b"us"]
        assert tx.buckets(["users", "eu"]) == []


def test_bucket_not_found_and_exists(db: DB) -> None:
    with db.update() as tx:
        tx.create_bucket("a")
        with pytest.raises(errors.BucketExistsError):
            tx.create_bucket("a")
        with pytest.raises(errors.BucketNotFoundError) as info:
            tx.create_bucket(["missing", "child"])
        assert "missing" in info.value.message
        with pytest.raises(errors.BucketNotFoundError):
            tx.bucket(["a", "b"])
        with pytest.raises(errors.BucketNotFoundError):
            tx.delete_bucket("nope")
        with pytest.raises(errors.BucketNotFoundError):
            tx.buckets("nope")
    with db.view() as tx:
        assert tx.buckets() == [b"a"]


def test_create_if_not_exists_makes_ancestors_and_returns_existing(db: DB) -> None:
    with db.update() as tx:
        deep = tx.create_bucket_if_not_exists(["a", "b", "c"])
        deep.put(b"k", b"v")
        again = tx.create_bucket_if_not_exists(["a", "b", "c"])
        assert again is deep
    with db.view() as tx:
        assert tx.bucket(["a", "b", "c"]).get(b"k") == b"v"
        assert tx.buckets("a") == [b"b"]


@pytest.mark.parametrize("path", [b"", "", "a/b", b"x/", [], (), ["ok", ""], 5, ["ok", 7], None])
def test_invalid_bucket_names(db: DB, path: object) -> None:
    with db.update() as tx:
        tx.create_bucket("ok")
        for op in (tx.create_bucket, tx.create_bucket_if_not_exists, tx.bucket):
            with pytest.raises(errors.InvalidBucketNameError):
                op(path)
        with pytest.raises(errors.InvalidBucketNameError):
            tx.delete_bucket(path)
    assert db.check() == []
    with db.view() as tx:
        assert tx.buckets() == [b"ok"]


def test_bucket_name_too_long_states_the_limit(db: DB) -> None:
    with db.update() as tx:
        tx.create_bucket(b"n" * 509)  # 511 - 2 bytes of root prefix
        with pytest.raises(errors.InvalidBucketNameError) as info:
            tx.create_bucket(b"n" * 510)
        assert "509" in info.value.message


def test_key_and_bucket_names_are_incompatible(db: DB) -> None:
    with db.update() as tx:
        b = tx.create_bucket("b")
        b.put(b"plain", b"1")
        b.create_bucket("nested")
        with pytest.raises(errors.IncompatibleValueError):
            b.create_bucket("plain")
        with pytest.raises(errors.IncompatibleValueError):
            tx.create_bucket_if_not_exists(["b", "plain", "x"])
        with pytest.raises(errors.IncompatibleValueError):
            b.put(b"nested", b"x")
        with pytest.raises(errors.IncompatibleValueError):
            b.delete(b"nested")
        with pytest.raises(errors.IncompatibleValueError):
            b.put_if(b"nested", b"x", None)
        with pytest.raises(errors.IncompatibleValueError):
            b.delete_if(b"nested", b"x")
        with pytest.raises(errors.IncompatibleValueError):
            b.delete_bucket("plain")
        with pytest.raises(errors.BucketNotFoundError):
            b.bucket("plain")
        assert b.get(b"nested") is None
    assert contents(db, "b") == [(b"nested", None), (b"plain", b"1")]


def test_delete_bucket_is_recursive_and_leaves_no_orphans(db: DB) -> None:
    with db.update() as tx:
        a = tx.create_bucket("a")
        for i in range(50):
            a.put(b"k%d" % i, b"v")
        deep = tx.create_bucket_if_not_exists(["a", "b", "c"])
        deep.put(b"x", b"y")
        tx.create_bucket("keep").put(b"k", b"v")
    with db.update() as tx:
        tx.delete_bucket("a")
        with pytest.raises(errors.BucketNotFoundError):
            tx.bucket(["a", "b"])
    stats = db.stats()
    assert stats["keys"] == 1 and stats["buckets"] == 1
    assert db.check() == []
    with db.update() as tx:
        assert tx.create_bucket("a").scan() == ([], None)  # a fresh, empty bucket


def test_bucket_objects_of_a_deleted_bucket_refuse_use(db: DB) -> None:
    with db.update() as tx:
        child = tx.create_bucket_if_not_exists(["p", "c"])
        tx.delete_bucket("p")
        for op in (lambda: child.put(b"k", b"v"), lambda: child.get(b"k"), child.count):
            with pytest.raises(errors.BucketNotFoundError):
                op()


# --- keys --------------------------------------------------------------------------------
def test_get_put_delete(db: DB) -> None:
    with db.update() as tx:
        b = tx.create_bucket("b")
        assert b.get(b"k") is None
        b.put(b"k", b"v1")
        b.put("text", "value")
        b.put(bytearray(b"ba"), memoryview(b"mv"))
        b.put(b"empty", b"")
        assert b.get(b"k") == b"v1"
        b.put(b"k", b"v2")
        assert b.get("k") == b"v2"
        assert b.get(b"text") == b"value" and b.get(b"ba") == b"mv"
        assert b.get(b"empty") == b""
        assert b.delete(b"k") is True
        assert b.delete(b"k") is False
        assert b.get(b"k") is None
    assert contents(db, "b") == [(b"ba", b"mv"), (b"empty", b""), (b"text", b"value")]


def test_keys_are_separate_per_bucket(db: DB) -> None:
    with db.update() as tx:
        tx.create_bucket("a").put(b"k", b"in a")
        tx.create_bucket(["a", "n"]).put(b"k", b"in a/n")
        tx.create_bucket("b").put(b"k", b"in b")
    assert contents(db, "a") == [(b"k", b"in a"), (b"n", None)]
    assert contents(db, ["a", "n"]) == [(b"k", b"in a/n")]
    assert contents(db, "b") == [(b"k", b"in b")]


def test_key_errors_are_typed_and_write_nothing(db: DB) -> None:
    with db.update() as tx:
        b = tx.create_bucket("b")
        b.put(b"keep", b"1")
        with pytest.raises(errors.KeyRequiredError):
            b.put(b"", b"v")
        with pytest.raises(errors.KeyRequiredError):
            b.get(b"")
        with pytest.raises(errors.KeyRequiredError):
            b.delete("")
        with pytest.raises(errors.InvalidArgumentError):
            b.put(5, b"v")  # type: ignore[arg-type]
        with pytest.raises(errors.InvalidArgumentError):
            b.put(b"k", None)  # type: ignore[arg-type]
        b.put(b"after", b"2")  # the transaction is still usable
    assert contents(db, "b") == [(b"after", b"2"), (b"keep", b"1")]


def test_key_too_large_says_the_real_maximum_for_the_bucket(db: DB) -> None:
    with db.update() as tx:
        b = tx.create_bucket("b")  # id 1: 2-byte prefix, 509-byte keys fit
        assert b.max_key_size == 509
        b.put(b"k" * 509, b"v")
        with pytest.raises(errors.KeyTooLargeError) as info:
            b.put(b"k" * 510, b"v")
        assert "509" in info.value.message and info.value.details["max"] == 509
        with pytest.raises(errors.KeyTooLargeError):
            b.get(b"k" * 600)
        for i in range(300):  # ids past 255 take a 3-byte prefix
            tx.create_bucket(b"x%d" % i)
        big = tx.create_bucket("late")
        assert big.id > 255 and big.max_key_size == 508
        with pytest.raises(errors.KeyTooLargeError) as info:
            big.put(b"k" * 509, b"v")
        assert "508" in info.value.message
        assert big.count() == 0


def test_value_too_large(tmp_path: Path) -> None:
    db = DB.open(tmp_path / "db", max_value_size=10, initial_map_size=1 << 20)
    with db, db.update() as tx:
        b = tx.create_bucket("b")
        b.put(b"k", b"x" * 10)
        with pytest.raises(errors.ValueTooLargeError) as info:
            b.put(b"k", b"x" * 11)
        assert info.value.details == {"size": 11, "max": 10}
        with pytest.raises(errors.ValueTooLargeError):
            b.put_if(b"k", b"x" * 11, b"x" * 10)
        assert b.get(b"k") == b"x" * 10


def test_default_max_value_is_one_mib(db: DB) -> None:
    with db.update() as tx:
        b = tx.create_bucket("b")
        with pytest.raises(errors.ValueTooLargeError):
            b.put(b"k", b"x" * ((1 << 20) + 1))
        assert b.get(b"k") is None


# --- conditions --------------------------------------------------------------------------
def test_put_many_answers_each_pair_like_put_and_writes_the_valid_ones(db: DB) -> None:
    with db.update() as tx:
        b = tx.create_bucket("b")
        b.create_bucket("nested")
        big_key = b"k" * (b.max_key_size + 1)
        big_value = b"v" * (db.max_value_size + 1)
        res = b.put_many(
            [
                (b"a", b"1"),
                (big_key, b"x"),
                (b"b", big_value),
                (b"nested", b"x"),
                (b"", b"x"),
                (b"a", b"2"),  # a later pair for the same key wins, as with put
                ("c", b"3"),
            ]
        )
        kinds = [type(r) for r in res]
        assert kinds == [
            type(None),
            errors.KeyTooLargeError,
            errors.ValueTooLargeError,
            errors.IncompatibleValueError,
            errors.KeyRequiredError,
            type(None),
            type(None),
        ]
        assert b.put_many([]) == []
        flat = tx.create_bucket("flat")  # no nested bucket: the all-valid fast path
        assert flat.put_many([(b"x", b"1"), (b"y", b"2"), (b"x", b"3")]) == [None] * 3
        assert flat.get(b"x") == b"3" and flat.get(b"y") == b"2"
        assert [type(r) for r in flat.put_many([(b"z", b"1"), (b"", b"2")])] == [
            type(None),
            errors.KeyRequiredError,
        ]
        assert flat.get(b"z") == b"1"
    with db.view() as tx:
        b = tx.bucket("b")
        assert [(k, v) for k, v in b.scan()[0]] == [(b"a", b"2"), (b"c", b"3"), (b"nested", None)]
        with pytest.raises(errors.ReadOnlyTxError):
            b.put_many([(b"a", b"1")])


def test_replace_replace_many_and_pop_write_like_put_and_delete_and_give_the_old_value(
    db: DB,
) -> None:
    with db.update() as tx:
        for name, nested in (("b", True), ("flat", False)):  # the checked path; the fast one
            b = tx.create_bucket(name)
            if nested:
                b.create_bucket("nested")
            assert b.replace(b"a", b"1") is None
            assert b.replace(b"a", b"2") == b"1"
            res, prevs = b.replace_many(
                [
                    (b"a", b"3"),
                    (b"k" * (b.max_key_size + 1), b"x"),
                    (b"b", b"v" * (db.max_value_size + 1)),
                    (b"", b"x"),
                    (b"a", b"4"),  # sees the pair before it
                    ("c", b"5"),
                ]
            )
            assert [type(r) for r in res] == [
                type(None),
                errors.KeyTooLargeError,
                errors.ValueTooLargeError,
                errors.KeyRequiredError,
                type(None),
                type(None),
            ]
            assert prevs == [b"2", None, None, None, b"3", None]
            assert b.get(b"a") == b"4" and b.get(b"c") == b"5"
            assert b.pop(b"a") == b"4" and b.get(b"a") is None
            assert b.pop(b"a") is None
        b = tx.bucket("b")
        with pytest.raises(errors.IncompatibleValueError):
            b.replace(b"nested", b"x")
        with pytest.raises(errors.IncompatibleValueError):
            b.pop(b"nested")
        res, prevs = b.replace_many([(b"nested", b"x")])
        assert [type(r) for r in res] == [errors.IncompatibleValueError] and prevs == [None]
    with db.view() as tx:
        assert [(k, v) for k, v in tx.bucket("b").scan()[0]] == [(b"c", b"5"), (b"nested", None)]
        with pytest.raises(errors.ReadOnlyTxError):
            tx.bucket("b").replace_many([(b"a", b"1")])


def test_put_if_and_delete_if(db: DB) -> None:
    with db.update() as tx:
        b = tx.create_bucket("b")
        b.put_if(b"k", b"v1", None)  # must be absent: it is
        with pytest.raises(errors.ConditionFailedError) as info:
            b.put_if(b"k", b"v2", None)
        assert info.value.details["current"] == b"v1"
        with pytest.raises(errors.ConditionFailedError) as info:
            b.put_if(b"k", b"v2", b"wrong")
        assert info.value.details["current"] == b"v1"
        b.put_if(b"k", b"v2", b"v1")
        with pytest.raises(errors.ConditionFailedError):
            b.delete_if(b"k", b"v1")
        with pytest.raises(errors.ConditionFailedError) as info:
            b.delete_if(b"absent", b"x")
        assert info.value.details["current"] is None
        assert b.get(b"k") == b"v2"
        b.delete_if(b"k", b"v2")
        assert b.get(b"k") is None
        with pytest.raises(errors.KeyRequiredError):
            b.put_if(b"", b"v", None)
        with pytest.raises(errors.InvalidArgumentError):
            b.delete_if(b"k", 3)  # type: ignore[arg-type]


# --- sequences ---------------------------------------------------------------------------
def test_next_sequence_per_bucket_persists_and_rolls_back(db: DB) -> None:
    with db.update() as tx:
        a, b = tx.create_bucket("a"), tx.create_bucket("b")
        assert a.sequence() == 0
        assert [a.next_sequence() for _ in range(3)] == [1, 2, 3]
        assert b.next_sequence() == 1
    with pytest.raises(RuntimeError), db.update() as tx:
        assert tx.bucket("a").next_sequence() == 4
        raise RuntimeError("roll back")
    with db.update() as tx:
        assert tx.bucket("a").next_sequence() == 4
    with db.view() as tx:
        assert tx.bucket("a").sequence() == 4
        with pytest.raises(errors.ReadOnlyTxError):
            tx.bucket("a").next_sequence()


# --- transactions ------------------------------------------------------------------------
def test_update_rolls_back_on_exception(db: DB) -> None:
    with db.update() as tx:
        tx.create_bucket("b").put(b"k", b"old")
    with pytest.raises(ValueError), db.update() as tx:
        tx.bucket("b").put(b"k", b"new")
        tx.create_bucket("c")
        raise ValueError("boom")
    with db.view() as tx:
        assert tx.bucket("b").get(b"k") == b"old"
        assert tx.buckets() == [b"b"]


def test_update_fn_returns_result_and_propagates_errors(db: DB) -> None:
    assert db.update_fn(lambda tx: tx.create_bucket("b").next_sequence()) == 1

    def failing(tx: object) -> None:
        tx.bucket("b").put(b"k", b"v")  # type: ignore[attr-defined]
        tx.bucket("missing")  # type: ignore[attr-defined]

    with pytest.raises(errors.BucketNotFoundError):
        db.update_fn(failing)
    assert contents(db, "b") == []


def test_view_refuses_every_write(db: DB) -> None:
    with db.update() as tx:
        tx.create_bucket("b").put(b"k", b"v")
    with db.view() as tx:
        b = tx.bucket("b")
        assert not tx.writable
        writes = [
            lambda: b.put(b"k", b"v"),
            lambda: b.delete(b"k"),
            lambda: b.put_if(b"k", b"v", None),
            lambda: b.delete_if(b"k", b"v"),
            lambda: b.create_bucket("x"),
            lambda: tx.create_bucket("x"),
            lambda: tx.create_bucket_if_not_exists("x"),
            lambda: tx.delete_bucket("b"),
            lambda: tx.meta_put(b"m", b"v"),
            lambda: tx.meta_delete(b"m"),
            lambda: tx.savepoint().__enter__(),
        ]
        for write in writes:
            with pytest.raises(errors.ReadOnlyTxError):
                write()
        assert b.get(b"k") == b"v"


def test_closed_transaction_refuses_use(db: DB) -> None:
    with db.update() as tx:
        b = tx.create_bucket("b")
        cur = b.cursor()
    for op in (
        lambda: b.get(b"k"),
        lambda: b.put(b"k", b"v"),
        lambda: tx.bucket("b"),
        lambda: tx.bucket("other"),
        lambda: tx.buckets(),
        lambda: tx.meta_get(b"k"),
        cur.first,
        b.cursor,
    ):
        with pytest.raises(errors.TxClosedError):
            op()


def test_closed_db_refuses_transactions(tmp_path: Path) -> None:
    db = DB.open(tmp_path / "db", initial_map_size=1 << 20)
    db.close()
    db.close()  # idempotent
    assert db.closed
    with pytest.raises(errors.TxClosedError):
        db.view().__enter__()
    with pytest.raises(errors.TxClosedError):
        db.update_fn(lambda tx: None)


# --- savepoints --------------------------------------------------------------------------
def test_savepoint_keeps_or_undoes_its_writes(db: DB) -> None:
    with db.update() as tx:
        b = tx.create_bucket("b")
        b.put(b"before", b"1")
        with tx.savepoint():
            b.put(b"kept", b"2")
        with pytest.raises(errors.ConditionFailedError), tx.savepoint():
            b.put(b"undone", b"3")
            tx.create_bucket("undone_bucket")
            b.put_if(b"before", b"x", b"not this")
        assert b.get(b"undone") is None
        assert tx.buckets() == [b"b"]
        b.put(b"after", b"4")
    assert contents(db, "b") == [(b"after", b"4"), (b"before", b"1"), (b"kept", b"2")]


def test_savepoints_nest_and_restore_bucket_objects(db: DB) -> None:
    with db.update() as tx:
        keep = tx.create_bucket("keep")
        with pytest.raises(KeyError), tx.savepoint():
            made = tx.create_bucket("made")
            with tx.savepoint():
                keep.put(b"inner", b"1")
            tx.delete_bucket("keep")
            raise KeyError("undo all")
        keep.put(b"k", b"v")  # deleted inside the undone savepoint: usable again
        assert keep.get(b"inner") is None
        with pytest.raises(errors.BucketNotFoundError):
            made.put(b"k", b"v")
        with pytest.raises(errors.BucketNotFoundError):
            tx.bucket("made")
    assert contents(db, "keep") == [(b"k", b"v")]
    assert db.check() == []


def test_an_undone_savepoint_restores_what_buckets_know_of_their_nested_buckets(
    db: DB,
) -> None:
    """Inside the block the parent's last nested bucket is deleted and a put then finds it
    has none; once the block is undone the nested bucket is back, so its name must again be
    refused as a key."""
    with db.update() as tx:
        tx.create_bucket("a").create_bucket(b"n")
    with db.update() as tx:
        a = tx.bucket("a")
        assert tx.bucket(["a", "n"]) is not None
        with pytest.raises(errors.BucketNotFoundError), tx.savepoint():
            tx.delete_bucket(["a", "n"])
            a.put(b"k", b"v")  # learns: no nested bucket (inside the block)
            tx.delete_bucket("a")
            tx.bucket("a")
        assert tx.buckets("a") == [b"n"]
        with pytest.raises(errors.IncompatibleValueError):
            a.put(b"n", b"v")
        assert a.put_many([(b"n", b"v"), (b"x", b"1")])[0].code == "incompatible_value"
        with pytest.raises(errors.IncompatibleValueError):
            a.put_if(b"n", b"v", None)
    assert db.check() == []
    assert contents(db, "a") == [(b"n", None), (b"x", b"1")]


# --- the meta keyspace -------------------------------------------------------------------
def test_meta_keyspace_is_separate_and_scannable(db: DB) -> None:
    with db.update() as tx:
        tx.meta_put(b"applied", b"\x00\x05")
        for i in range(5):
            tx.meta_put(b"dedup/%d" % i, b"r%d" % i)
        tx.create_bucket("b")
    with db.update() as tx:
        assert tx.meta_get(b"applied") == b"\x00\x05"
        assert tx.meta_get(b"missing") is None
        assert [k for k, _ in tx.meta_scan(b"dedup/")] == [b"dedup/%d" % i for i in range(5)]
        assert tx.meta_scan(b"dedup/", limit=2) == [(b"dedup/0", b"r0"), (b"dedup/1", b"r1")]
        assert len(tx.meta_scan()) == 6
        assert tx.meta_delete(b"dedup/0") is True
        assert tx.meta_delete(b"dedup/0") is False
        assert tx.buckets() == [b"b"] and tx.bucket("b").count() == 0
        with pytest.raises(errors.KeyRequiredError):
            tx.meta_put(b"", b"v")
        with pytest.raises(errors.KeyTooLargeError):
            tx.meta_get(b"m" * 512)
        with pytest.raises(errors.InvalidArgumentError):
            tx.meta_scan(b"", limit=0)
    assert db.stats()["meta_keys"] == 5
    assert db.check() == []
