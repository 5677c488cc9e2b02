"""The page-structure check of an LMDB file (``boltraft.storage.pagecheck``), on real LMDB
files: a sound store passes; a flipped bit in any header field of any page the store
reaches is reported, by ``check_pages`` and by ``DB.check``, without LMDB ever reading the
damaged page (it would abort the process on some of them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from boltraft.errors import CorruptionError
from boltraft.storage.db import DB
from boltraft.storage.pagecheck import (
    P_BRANCH,
    P_LEAF,
    P_OVERFLOW,
    check_pages,
)

PAGE = 4096


def _store(path: Path) -> Path:
    """A store with nested buckets, enough keys for branch pages and values on overflow
    pages; returns its data file."""
    with DB.open(path) as db:
        with db.update() as tx:
            b = tx.create_bucket(["b"])
            b.put_many([(b"k%05d" % i, b"v" * 100) for i in range(2000)])
            tx.create_bucket(["b", "inner"]).put(b"big", b"x" * 20_000)
        with db.update() as tx:  # a second commit leaves free pages and a free-page tree
            tx.bucket(["b"]).put(b"k00001", b"changed")
    return path / "data.mdb"


def _reached(data: Path) -> list[tuple[int, int]]:
    """(page number, page type) of every branch, leaf and first overflow page whose header
    names it: the reachable ones are among them."""
    raw = data.read_bytes()
    out = []
    for pgno in range(2, len(raw) // PAGE):
        at = pgno * PAGE
        kind = raw[at + 10] & (P_BRANCH | P_LEAF | P_OVERFLOW)
        if int.from_bytes(raw[at : at + 8], "little") == pgno and kind:
            out.append((pgno, kind))
    return out


def test_a_sound_store_passes(tmp_path: Path) -> None:
    data = _store(tmp_path / "s")
    assert check_pages(data) == []
    with DB.open(tmp_path / "s", readonly=True) as db:
        assert db.check() == []


@pytest.mark.parametrize(
    ("offset", "bit"),
    [(0, 0x01), (10, None), (12, 0x04), (14, 0x08)],
    ids=["pgno", "type", "lower", "upper"],
)
def test_a_flipped_header_bit_of_a_reached_page_is_reported(
    tmp_path: Path, offset: int, bit: int | None
) -> None:
    data = _store(tmp_path / "s")
    clean = data.read_bytes()
    pages = _reached(data)
    assert {kind for _, kind in pages} == {P_BRANCH, P_LEAF, P_OVERFLOW}
    caught = checked = 0
    for pgno, kind in pages:
        raw = bytearray(clean)
        raw[pgno * PAGE + offset] ^= kind if bit is None else bit
        data.write_bytes(bytes(raw))
        problems = check_pages(data)
        if problems:
            caught += 1
            try:
                with DB.open(tmp_path / "s", readonly=True) as db:
                    assert db.check() == problems
                checked += 1
            except CorruptionError:
                pass  # the open itself met the damaged page (a sub-DB's root)
    data.write_bytes(clean)
    # a flip may pass only on a free page (an old copy LMDB no longer reads)
    free = len(pages) - caught
    assert caught > 0 and free < len(pages) // 2, (caught, len(pages))
    assert checked > 0


def test_a_file_that_is_not_lmdb_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "data.mdb"
    bad.write_bytes(b"\0" * 3 * PAGE)
    assert check_pages(bad) == [f"{bad}: no valid meta page"]
    assert check_pages(tmp_path / "missing.mdb")[0].startswith("cannot read ")
