"""Ordered iteration over one bucket: the Cursor, and the range walks that scans use.

A bucket's entries are its keys (in the main db) and its nested buckets (in the
``buckets`` sub-db), both under the bucket's prefix. A key and a bucket never share a name,
so the bucket's ordered view is the merge of two sorted runs; a nested bucket's entry
carries the value None, as in bbolt. A Cursor sees its bucket as a ``Source``, so this
module imports nothing of ``bucket``.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from operator import itemgetter
from typing import Protocol

import lmdb

from boltraft.storage.keys import as_bytes, prefix_end
from boltraft.storage.layout import SubDbs, unseal

Item = tuple[bytes, bytes | None]

_first = itemgetter(0)


class Source(Protocol):
    """What a Cursor uses of its bucket (``boltraft.storage.bucket.Bucket``)."""

    def _check_read(self) -> None:
        """Raises the bucket's refusal unless it can be read."""

    def _entries(self, lo: bytes, hi: bytes | None, reverse: bool) -> Iterator[Item]:
        """Yields the bucket's entries with ``lo <= key < hi``, as ``walk_bucket`` does."""


def _walk(
    txn: lmdb.Transaction[bytes],
    db: lmdb._Database,
    prefix: bytes,
    lo: bytes,
    hi: bytes | None,
    reverse: bool,
    values: bool,
    crc: bool = False,
) -> Iterator[Item]:
    """Yields ``(key, value)`` for the stored keys ``prefix + key`` with ``lo <= key < hi``.

    ``hi`` None means "to the end of the bucket". With ``values`` False every value is None
    (used for bucket entries, whose stored value is an internal record); with ``crc`` each
    value is verified and unsealed (``layout.unseal``: CorruptionError when it fails).
    """
    plen = len(prefix)
    upper = prefix + hi if hi is not None else prefix_end(prefix)
    cur = txn.cursor(db=db)
    if not reverse:
        if not cur.set_range(prefix + lo):
            return
        if values:
            for k, v in cur.iternext():
                if upper is not None and k >= upper:
                    return
                yield k[plen:], unseal(k, v) if crc else v
        else:
            for k in cur.iternext(keys=True, values=False):
                if upper is not None and k >= upper:
                    return
                yield k[plen:], None
        return
    ok = cur.prev() if upper is not None and cur.set_range(upper) else cur.last()
    if not ok:
        return
    low = prefix + lo
    if values:
        for k, v in cur.iterprev():
            if k < low:
                return
            yield k[plen:], unseal(k, v) if crc else v
    else:
        for k in cur.iterprev(keys=True, values=False):
            if k < low:
                return
            yield k[plen:], None


def walk_bucket(
    txn: lmdb.Transaction[bytes],
    dbs: SubDbs,
    prefix: bytes,
    nested: bool,
    lo: bytes,
    hi: bytes | None,
    reverse: bool,
) -> Iterator[Item]:
    """Yields the entries with ``lo <= key < hi`` of the bucket whose stored keys start with
    ``prefix``, in key order (or reversed).

    Nested buckets appear with value None; ``nested`` False says the bucket has none (the
    ``buckets`` sub-db is then not read). The walk reads through ``txn``; it must be consumed
    before that transaction ends. A value that fails its checksum raises CorruptionError
    when the walk reaches it.
    """
    values = _walk(txn, dbs.data, prefix, lo, hi, reverse, True, dbs.crc)
    if not nested:
        return values
    children = _walk(txn, dbs.buckets, prefix, lo, hi, reverse, False)
    return heapq.merge(values, children, key=_first, reverse=reverse)


class Cursor:
    """A position in one bucket's ordered entries, moved by first/last/seek/next/prev.

    Every move returns ``(key, value)`` (value None for a nested bucket) or None when there is
    no such entry. ``next``/``prev`` move from the current position; before the first
    ``first``/``last``/``seek``, or after running off either end, they return None. Each move
    re-reads the transaction, so writes made through the same transaction are seen. A cursor
    is valid only as long as its bucket's transaction; using it afterwards raises
    TxClosedError (BucketNotFoundError once its bucket was deleted).
    """

    __slots__ = ("_bucket", "_key")

    def __init__(self, bucket: Source) -> None:
        self._bucket = bucket
        self._key: bytes | None = None  # the current entry's key; None = not positioned

    def _settle(self, item: Item | None) -> Item | None:
        self._key = None if item is None else item[0]
        return item

    def _one(self, lo: bytes, hi: bytes | None, reverse: bool) -> Item | None:
        self._bucket._check_read()
        return self._settle(next(iter(self._bucket._entries(lo, hi, reverse)), None))

    def first(self) -> Item | None:
        """Returns the bucket's first entry, or None if the bucket is empty."""
        return self._one(b"", None, False)

    def last(self) -> Item | None:
        """Returns the bucket's last entry, or None if the bucket is empty."""
        return self._one(b"", None, True)

    def seek(self, key: bytes) -> Item | None:
        """Returns the first entry whose key is >= ``key``, or None if there is none.

        Raises InvalidArgumentError when ``key`` is not bytes/str (an empty key seeks to the
        first entry).
        """
        return self._one(as_bytes(key, "key"), None, False)

    def next(self) -> Item | None:
        """Returns the entry after the current one, or None (see the class notes)."""
        if self._key is None:
            self._bucket._check_read()
            return None
        return self._one(self._key + b"\x00", None, False)

    def prev(self) -> Item | None:
        """Returns the entry before the current one, or None (see the class notes)."""
        if self._key is None:
            self._bucket._check_read()
            return None
        return self._one(b"", self._key, True)
