"""The bucket engine's ordered reads: cursors, scans with bounds, paging tokens, count."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from boltraft import errors
from boltraft.storage.db import DB


@pytest.fixture
def db(tmp_path: Path) -> Iterator[DB]:
    d = DB.open(tmp_path / "db", initial_map_size=1 << 20)
    with d.update() as tx:
        b = tx.create_bucket("b")
        for k in (b"a", b"b1", b"b2", b"b3", b"c", b"d\xff", b"d\xff\x01", b"e"):
            b.put(k, k.upper())
        b.create_bucket(b"b25")  # a nested bucket between keys
        tx.create_bucket("before").put(b"zz", b"not mine")
        tx.create_bucket("after").put(b"\x00", b"not mine")
    yield d
    d.close()


ALL = [b"a", b"b1", b"b2", b"b25", b"b3", b"c", b"d\xff", b"d\xff\x01", b"e"]


def keys(items: list[tuple[bytes, bytes | None]]) -> list[bytes]:
    return [k for k, _ in items]


def test_cursor_walks_both_ways_with_nested_buckets_as_none(db: DB) -> None:
    with db.view() as tx:
        c = tx.bucket("b").cursor()
        assert c.next() is None and c.prev() is None  # not positioned yet
        seen = [c.first()]
        while (item := c.next()) is not None:
            seen.append(item)
        assert keys(seen) == ALL  # type: ignore[arg-type]
        assert (b"b25", None) in seen and (b"b2", b"B2") in seen
        assert c.next() is None and c.prev() is None  # ran off the end
        back = [c.last()]
        while (item := c.prev()) is not None:
            back.append(item)
        assert keys(back) == ALL[::-1]  # type: ignore[arg-type]


def test_cursor_seek(db: DB) -> None:
    with db.view() as tx:
        c = tx.bucket("b").cursor()
        assert c.seek(b"b2") == (b"b2", b"B2")
        assert c.next() == (b"b25", None)
        assert c.seek(b"b4") == (b"c", b"C")
        assert c.prev() == (b"b3", b"B3")
        assert c.seek(b"") == (b"a", b"A")
        assert c.seek(b"f") is None
        with pytest.raises(errors.InvalidArgumentError):
            c.seek(3)  # type: ignore[arg-type]


def test_cursor_on_empty_bucket_and_sees_own_writes(db: DB) -> None:
    with db.update() as tx:
        e = tx.create_bucket("empty")
        c = e.cursor()
        assert c.first() is None and c.last() is None and c.seek(b"a") is None
        e.put(b"k", b"v")
        assert c.first() == (b"k", b"v")
        assert c.next() is None


def test_scan_all_and_reverse(db: DB) -> None:
    with db.view() as tx:
        b = tx.bucket("b")
        items, token = b.scan()
        assert keys(items) == ALL and token is None
        items, token = b.scan(reverse=True)
        assert keys(items) == ALL[::-1] and token is None


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"prefix": b"b"}, [b"b1", b"b2", b"b25", b"b3"]),
        ({"prefix": b"b2"}, [b"b2", b"b25"]),
        ({"prefix": b"d\xff"}, [b"d\xff", b"d\xff\x01"]),
        ({"prefix": b"x"}, []),
        ({"start": b"b2", "end": b"c"}, [b"b2", b"b25", b"b3"]),
        ({"start": b"b2"}, [b"b2", b"b25", b"b3", b"c", b"d\xff", b"d\xff\x01", b"e"]),
        ({"end": b"b2"}, [b"a", b"b1"]),
        ({"start": b"c", "end": b"c"}, []),
        ({"start": b"d", "end": b"a"}, []),
        ({"prefix": b"b", "start": b"b2", "end": b"b3"}, [b"b2", b"b25"]),
        ({"prefix": "b", "end": "b2"}, [b"b1"]),
    ],
)
def test_scan_bounds(db: DB, kwargs: dict[str, bytes], expected: list[bytes]) -> None:
    with db.view() as tx:
        b = tx.bucket("b")
        assert keys(b.scan(**kwargs)[0]) == expected  # type: ignore[arg-type]
        assert keys(b.scan(reverse=True, **kwargs)[0]) == expected[::-1]  # type: ignore[arg-type]


def test_prefix_of_all_ff_bytes(db: DB) -> None:
    with db.update() as tx:
        b = tx.create_bucket("ff")
        for k in (b"\xfe", b"\xff", b"\xff\xff", b"\xff\xff\x00"):
            b.put(k, b"v")
        assert keys(b.scan(prefix=b"\xff\xff")[0]) == [b"\xff\xff", b"\xff\xff\x00"]
        assert keys(b.scan(prefix=b"\xff", reverse=True)[0]) == [
            b"\xff\xff\x00",
            b"\xff\xff",
            b"\xff",
        ]


def test_paging_with_tokens_forward_and_reverse(db: DB) -> None:
    with db.view() as tx:
        b = tx.bucket("b")
        for reverse in (False, True):
            got: list[bytes] = []
            token = None
            pages = 0
            while True:
                items, token = b.scan(limit=2, reverse=reverse, after=token)
                got += keys(items)
                pages += 1
                if token is None:
                    break
                assert len(items) == 2
            assert got == (ALL[::-1] if reverse else ALL)
            assert pages == 5  # 9 entries in pages of 2; the last page says "no more"
        items, token = b.scan(limit=9)
        assert len(items) == 9 and token is None  # exactly exhausted: no token


def test_paging_within_bounds(db: DB) -> None:
    with db.view() as tx:
        b = tx.bucket("b")
        items, token = b.scan(prefix=b"b", limit=3)
        assert keys(items) == [b"b1", b"b2", b"b25"] and token is not None
        items, token = b.scan(prefix=b"b", limit=3, after=token)
        assert keys(items) == [b"b3"] and token is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"limit": 0},
        {"limit": -1},
        {"limit": 1.5},
        {"limit": True},
        {"after": b""},
        {"after": b"\x02abc"},
        {"after": "text"},
        {"prefix": 3},
        {"start": object()},
        {"end": 1.0},
    ],
)
def test_scan_argument_errors(db: DB, kwargs: dict[str, object]) -> None:
    with db.view() as tx, pytest.raises(errors.InvalidArgumentError):
        tx.bucket("b").scan(**kwargs)  # type: ignore[arg-type]


def test_count_includes_nested_buckets_and_no_neighbours(db: DB) -> None:
    with db.view() as tx:
        assert tx.bucket("b").count() == len(ALL)
        assert tx.bucket("before").count() == 1
        assert tx.bucket(["b", "b25"]).count() == 0


def test_neighbouring_bucket_ids_do_not_leak(tmp_path: Path) -> None:
    with DB.open(tmp_path / "db", initial_map_size=4 << 20) as db:
        with db.update() as tx:
            for i in range(1, 300):  # ids 255/256 change the prefix length
                tx.create_bucket(b"%03d" % i).put(b"k", b"%d" % i)
        with db.view() as tx:
            for i in (254, 255, 256, 257):
                b = tx.bucket(b"%03d" % i)
                assert b.scan() == ([(b"k", b"%d" % i)], None)
                assert b.scan(reverse=True) == ([(b"k", b"%d" % i)], None)
                assert b.cursor().last() == (b"k", b"%d" % i)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.sets(st.binary(min_size=1, max_size=4), max_size=25),
    prefix=st.none() | st.binary(max_size=2),
    start=st.none() | st.binary(max_size=3),
    end=st.none() | st.binary(max_size=3),
    limit=st.integers(min_value=1, max_value=6),
    reverse=st.booleans(),
)
def test_paged_scan_matches_a_sorted_model(
    tmp_path: Path,
    data: set[bytes],
    prefix: bytes | None,
    start: bytes | None,
    end: bytes | None,
    limit: int,
    reverse: bool,
) -> None:
    with DB.open(tmp_path / "prop", initial_map_size=1 << 20) as db:
        with db.update() as tx:
            if tx.buckets():  # tmp_path is shared by the examples of one run
                tx.delete_bucket("p")
            b = tx.create_bucket("p")
            for k in data:
                b.put(k, k[::-1])
        want = sorted(
            k
            for k in data
            if (prefix is None or k.startswith(prefix))
            and (start is None or k >= start)
            and (end is None or k < end)
        )
        if reverse:
            want.reverse()
        got: list[tuple[bytes, bytes | None]] = []
        token = None
        with db.view() as tx:
            b = tx.bucket("p")
            while True:
                items, token = b.scan(prefix, start, end, limit, reverse, token)
                assert len(items) <= limit
                got += items
                if token is None:
                    break
        assert got == [(k, k[::-1]) for k in want]


def test_max_bytes_cuts_a_page_after_the_item_that_reaches_it(db: DB) -> None:
    with db.update() as tx:
        b = tx.create_bucket("sized")
        for i in range(10):
            b.put(b"k%d" % i, b"v" * 98)  # 100 bytes of key and value each
        b.create_bucket("k55")  # a nested bucket counts its name only
    with db.view() as tx:
        b = tx.bucket("sized")
        items, token = b.scan(max_bytes=250)
        assert [k for k, _ in items] == [b"k0", b"k1", b"k2"] and token is not None
        seen = [k for k, _ in items]
        while token is not None:
            items, token = b.scan(max_bytes=250, after=token, limit=2)
            assert 1 <= len(items) <= 2
            seen += [k for k, _ in items]
        assert seen == sorted([b"k%d" % i for i in range(10)] + [b"k55"])
        assert b.scan(max_bytes=1)[0] == [(b"k0", b"v" * 98)]  # at least one item
        assert b.scan(max_bytes=10_000) == (b.scan()[0], None)
        with pytest.raises(errors.InvalidArgumentError):
            b.scan(max_bytes=0)
