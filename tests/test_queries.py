"""execute_read: get / scan / buckets / count on a real store, and request validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from boltraft.errors import BadRequestError, BucketNotFoundError
from boltraft.storage.db import DB
from boltraft.storage.queries import execute_read, execute_reads, validate_read


@pytest.fixture
def db(tmp_path: Path) -> Any:
    store = DB.open(tmp_path / "s", sync=False)
    with store.update() as tx:
        users = tx.create_bucket("users")
        for i in range(10):
            users.put(b"u%02d" % i, b"v%d" % i)
        tx.create_bucket(["users", "nested"])
        tx.create_bucket("empty")
    yield store
    store.close()


def test_get(db: DB) -> None:
    assert execute_read(db, {"op": "get", "bucket": "users", "key": b"u03"}) == b"v3"
    assert execute_read(db, {"op": "get", "bucket": ["users"], "key": "u04"}) == b"v4"
    assert execute_read(db, {"op": "get", "bucket": "users", "key": b"zz"}) is None


def test_count_and_buckets(db: DB) -> None:
    assert execute_read(db, {"op": "count", "bucket": "empty"}) == 0
    assert execute_read(db, {"op": "buckets"}) == [b"empty", b"users"]
    assert execute_read(db, {"op": "buckets", "bucket": "users"}) == [b"nested"]


def test_scan_prefix_range_reverse_and_paging(db: DB) -> None:
    page = execute_read(db, {"op": "scan", "bucket": "users", "prefix": b"u0", "limit": 3})
    assert [k for k, _ in page["items"]] == [b"u00", b"u01", b"u02"]
    keys = [k for k, _ in page["items"]]
    while page["next"] is not None:
        page = execute_read(
            db,
            {"op": "scan", "bucket": "users", "prefix": b"u0", "limit": 3, "after": page["next"]},
        )
        keys += [k for k, _ in page["items"]]
    assert keys == [b"u%02d" % i for i in range(10)]
    rng = execute_read(
        db, {"op": "scan", "bucket": "users", "start": b"u02", "end": b"u05", "reverse": True}
    )
    assert rng == {
        "items": [[b"u04", b"v4"], [b"u03", b"v3"], [b"u02", b"v2"]],
        "next": None,
        "index": 0,  # the applied index of the store (a bare engine has applied nothing)
    }
    everything = execute_read(db, {"op": "scan", "bucket": "users"})
    assert [b"nested", None] in everything["items"]


def test_server_fields_are_ignored(db: DB) -> None:
    req = {"op": "count", "bucket": "users", "read": "stale", "max_lag": 5, "v": 1}
    assert execute_read(db, req) == 11


def test_missing_bucket_is_the_engines_error(db: DB) -> None:
    with pytest.raises(BucketNotFoundError):
        execute_read(db, {"op": "get", "bucket": "nope", "key": b"k"})


BAD = [
    None,
    [],
    {},
    {"op": "put", "bucket": "users"},
    {"op": 5},
    {"op": "get", "bucket": "users"},
    {"op": "get", "key": b"k"},
    {"op": "get", "bucket": "users", "key": 5},
    {"op": "get", "bucket": [], "key": b"k"},
    {"op": "get", "bucket": 3, "key": b"k"},
    {"op": "get", "bucket": ["users", 3], "key": b"k"},
    {"op": "get", "bucket": "users", "key": b"k", "limit": 3},
    {"op": "count", "bucket": "users", "extra": True},
    {"op": "scan", "bucket": "users", "limit": -1},
    {"op": "scan", "bucket": "users", "limit": "3"},
    {"op": "scan", "bucket": "users", "limit": True},
    {"op": "scan", "bucket": "users", "reverse": 1},
    {"op": "scan", "bucket": "users", "prefix": 5},
    {"op": "scan", "bucket": "users", "prefix": b"u", "start": b"u1"},
    {"op": "buckets", "bucket": {}},
]


@pytest.mark.parametrize("request_", BAD, ids=repr)
def test_bad_requests(db: DB, request_: Any) -> None:
    with pytest.raises(BadRequestError):
        execute_read(db, request_)


def test_validate_normalizes() -> None:
    assert validate_read({"op": "scan", "bucket": "a", "prefix": "p", "limit": None}) == {
        "op": "scan",
        "bucket": (b"a",),
        "prefix": b"p",
        "limit": None,
    }


def test_execute_reads_shares_one_snapshot_and_isolates_failures(db: DB) -> None:
    assert execute_reads(db, []) == []
    out = execute_reads(
        db,
        [
            {"op": "get", "bucket": "users", "key": b"u01"},
            {"op": "get", "bucket": "nope", "key": b"k"},
            {"op": "count", "bucket": 5},
            {"op": "count", "bucket": "users"},
        ],
    )
    assert out[0] == b"v1" and out[3] == 11
    assert isinstance(out[1], BucketNotFoundError)
    assert isinstance(out[2], BadRequestError)
