"""Bucket: one named collection of keys (and nested buckets) inside a transaction.

Every operation checks its arguments BEFORE writing, so a refused operation writes nothing
and leaves the transaction usable. Bucket objects are made by ``Tx`` (one per bucket and
transaction) and are valid only while that transaction is open. A Bucket sees its
transaction as an ``Owner``, so this module imports nothing of ``tx`` or ``db``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

import lmdb

from boltraft.errors import (
    BoltraftError,
    BucketNotFoundError,
    ConditionFailedError,
    IncompatibleValueError,
    InvalidArgumentError,
    NoSpaceError,
    ReadOnlyTxError,
    TxClosedError,
)
from boltraft.storage.cursor import Cursor, Item, walk_bucket
from boltraft.storage.keys import (
    as_bytes,
    bucket_prefix,
    check_key,
    check_value,
    decode_token,
    encode_token,
    prefix_end,
    show_bytes,
    show_path,
)
from boltraft.storage.layout import RECORD, SubDbs, seal, unseal

# Bucket and transaction states; 0 is the only one that allows writes, <= 1 allows reads.
WRITE = 0
READ = 1
CLOSED = 2
DELETED = 3
DOOMED = 4
ROLLED_BACK = 5


def refusal(state: int, what: str) -> Exception:
    """Returns the error for an operation refused in ``state`` (``what`` names the bucket)."""
    if state == READ:
        return ReadOnlyTxError("this is a read-only transaction (use db.update())")
    if state == DELETED:
        return BucketNotFoundError(f"bucket {what} was deleted in this transaction")
    if state == ROLLED_BACK:
        return BucketNotFoundError(
            f"bucket {what} was obtained in a savepoint that rolled back: look it up again"
        )
    if state == DOOMED:
        return NoSpaceError(
            "the transaction ran out of map space and must be retried (db.update_fn does)",
            retry=True,
        )
    return TxClosedError("the transaction is closed")


class Owner(Protocol):
    """What a Bucket uses of the transaction that made it (``boltraft.storage.tx.Tx``)."""

    _txn: lmdb.Transaction[bytes]  # the innermost open LMDB transaction (savepoints nest)
    _dbs: SubDbs
    _state: int  # WRITE, READ, CLOSED or DOOMED
    _max_key_size: int  # LMDB's key limit
    _max_value_size: int

    def _doom(self) -> Exception:
        """Dooms the transaction after LMDB reported a full map; returns the error to raise."""

    # a Bucket's nested-bucket calls go to these with the path from the root
    def bucket(self, path: object) -> Bucket: ...

    def create_bucket(self, path: object) -> Bucket: ...

    def create_bucket_if_not_exists(self, path: object) -> Bucket: ...

    def delete_bucket(self, path: object) -> None: ...

    def buckets(self, path: object = ()) -> list[bytes]: ...


class Bucket:
    """A bucket inside one transaction; see the module notes for validity and errors."""

    __slots__ = (
        "_has_children",
        "_max_key",
        "_max_value",
        "_prefix",
        "_rkey",
        "_state",
        "_tx",
        "id",
        "path",
    )

    def __init__(
        self,
        tx: Owner,
        path: tuple[bytes, ...],
        bucket_id: int,
        rkey: bytes,
        prefix: bytes | None = None,
    ) -> None:
        self._tx = tx
        self.path = path  # the names from the root down to this bucket (never empty)
        self.id = bucket_id  # > the parent's id; never reused while the store lives
        self._rkey = rkey  # this bucket's entry key in the ``buckets`` sub-db
        # this bucket's keys all start with it (``prefix``, when given, must be it)
        self._prefix = bucket_prefix(bucket_id, tx._dbs.tag) if prefix is None else prefix
        self._state = tx._state  # WRITE/READ; any other state refuses everything
        # None = unknown, False = no nested bucket (puts skip the bucket-name check), True =
        # may have some. Only ever goes from False to True inside one transaction.
        self._has_children: bool | None = None
        self._max_key = tx._max_key_size - len(self._prefix)
        self._max_value = tx._max_value_size

    def __repr__(self) -> str:
        return f"<Bucket {show_path(self.path)} id={self.id}>"

    @property
    def name(self) -> bytes:
        """Returns this bucket's own name (the last element of its path)."""
        return self.path[-1]

    @property
    def max_key_size(self) -> int:
        """Returns the longest key this bucket accepts: LMDB's limit minus the bucket prefix."""
        return self._max_key

    # --- internal checks -----------------------------------------------------------------
    def _check_read(self) -> None:
        if self._state > READ:
            raise refusal(self._state, show_path(self.path))

    def _key(self, key: object) -> bytes:
        return check_key(key, self._max_key, show_path(self.path))

    def _may_have_children(self) -> bool:
        if self._has_children is None:
            cur = self._tx._txn.cursor(db=self._tx._dbs.buckets)
            found = cur.set_range(self._prefix)
            self._has_children = found and cur.key().startswith(self._prefix)
        return self._has_children

    def _names_bucket(self, full: bytes) -> bool:
        return self._may_have_children() and (
            self._tx._txn.get(full, db=self._tx._dbs.buckets) is not None
        )

    def _deleted(self, key: object) -> bytes:
        """The stored key ``delete(key)`` and ``pop(key)`` remove; raises what they raise
        before touching LMDB (nothing is deleted)."""
        if self._state:
            raise refusal(self._state, show_path(self.path))
        k = key if type(key) is bytes and 0 < len(key) <= self._max_key else self._key(key)
        full = self._prefix + k
        if self._has_children is not False and self._names_bucket(full):
            raise self._incompatible(k)
        return full

    def _incompatible(self, key: bytes) -> IncompatibleValueError:
        return IncompatibleValueError(
            f"key {show_bytes(key)} in bucket {show_path(self.path)} is a nested bucket, "
            "not a value",
            key=key,
        )

    # --- keys ----------------------------------------------------------------------------
    def get(self, key: bytes) -> bytes | None:
        """Returns the value of ``key``, or None if it is absent or names a nested bucket.

        Raises KeyRequiredError, KeyTooLargeError (a key this bucket could never hold),
        InvalidArgumentError (not bytes/str), TxClosedError, CorruptionError (the stored
        value fails its checksum).
        """
        if self._state > READ:
            raise refusal(self._state, show_path(self.path))
        if type(key) is not bytes or not key or len(key) > self._max_key:
            key = self._key(key)
        full = self._prefix + key
        stored = self._tx._txn.get(full)
        if stored is None or not self._tx._dbs.crc:
            return stored
        return unseal(full, stored)

    def put(self, key: bytes, value: bytes) -> None:
        """Sets ``key`` to ``value`` (overwriting any old value).

        Raises KeyRequiredError, KeyTooLargeError, ValueTooLargeError, InvalidArgumentError,
        IncompatibleValueError (``key`` names a nested bucket), ReadOnlyTxError,
        TxClosedError, and NoSpaceError(retry=True) when the map is full (the transaction is
        then doomed: every later operation raises it too, and it cannot commit).
        """
        if self._state:
            raise refusal(self._state, show_path(self.path))
        full, value = self._stored(key, value)
        try:
            self._tx._txn.put(full, value)
        except lmdb.MapFullError:
            raise self._tx._doom()

    def _stored(self, key: object, value: object) -> tuple[bytes, bytes]:
        """Returns the stored key and the value ``put(key, value)`` writes; raises what put
        raises for them (nothing is written)."""
        k = key if type(key) is bytes and 0 < len(key) <= self._max_key else self._key(key)
        if type(value) is not bytes or len(value) > self._max_value:
            value = check_value(value, self._max_value)
        full = self._prefix + k
        if self._has_children is not False and self._names_bucket(full):
            raise self._incompatible(k)
        return full, seal(full, value) if self._tx._dbs.crc else value

    def put_many(self, pairs: Sequence[tuple[bytes, bytes]]) -> list[BoltraftError | None]:
        """Returns one result per ``(key, value)`` pair, in order: None once it is set, or
        the error ``put`` would raise for it (that pair is not written; the others are).
        The valid pairs go to LMDB in ONE call, so a long run of puts costs less than as
        many ``put`` calls and ends in the same state.

        Raises, writing nothing, only what refuses the whole call: ReadOnlyTxError,
        TxClosedError, and NoSpaceError(retry=True) when the map is full (the transaction
        is then doomed, as with ``put``).
        """
        if self._state:
            raise refusal(self._state, show_path(self.path))
        prefix, max_key, max_value = self._prefix, self._max_key, self._max_value
        out: list[BoltraftError | None] | None = None
        if self._has_children is False:  # the common case: every pair valid, one comprehension
            items = [
                (prefix + k, v)
                for k, v in pairs
                if type(k) is bytes and 0 < len(k) <= max_key
                if type(v) is bytes and len(v) <= max_value
            ]
            if self._tx._dbs.crc:
                items = [(k, seal(k, v)) for k, v in items]
            if len(items) == len(pairs):
                out = [None] * len(items)
        if out is None:
            out, items = [], []
            for key, value in pairs:
                try:
                    items.append(self._stored(key, value))
                except BoltraftError as err:
                    out.append(err)
                    continue
                out.append(None)
        if items:
            try:
                self._tx._txn.cursor().putmulti(items)
            except lmdb.MapFullError:
                raise self._tx._doom()
        return out

    def replace(self, key: bytes, value: bytes) -> bytes | None:
        """``put``, returning the value ``key`` had before (None: none), which LMDB's
        replace gives with the write: what a change feed needs, without a read of its own.
        Raises what ``put`` raises, and CorruptionError (the old value fails its checksum).
        """
        if self._state:
            raise refusal(self._state, show_path(self.path))
        full, value = self._stored(key, value)
        try:
            old = self._tx._txn.replace(full, value)
        except lmdb.MapFullError:
            raise self._tx._doom()
        if old is None or not self._tx._dbs.crc:
            return old
        return unseal(full, old)

    def replace_many(
        self, pairs: Sequence[tuple[bytes, bytes]]
    ) -> tuple[list[BoltraftError | None], list[bytes | None]]:
        """``put_many``, also returning the value each key had before its pair was written
        (None: none, or the pair was refused), as ``replace`` does: a later pair of the same
        key sees the earlier one's value. Raises what ``put_many`` raises."""
        if self._state:
            raise refusal(self._state, show_path(self.path))
        out: list[BoltraftError | None] = []
        prevs: list[bytes | None] = []
        crc = self._tx._dbs.crc
        replace = self._tx._txn.replace
        prefix, max_key, max_value = self._prefix, self._max_key, self._max_value
        plain = self._has_children is False  # the common case: no bucket-name check
        for key, value in pairs:
            if (
                plain
                and type(key) is bytes
                and 0 < len(key) <= max_key
                and type(value) is bytes
                and len(value) <= max_value
            ):
                full = prefix + key
                stored = seal(full, value) if crc else value
            else:
                try:
                    full, stored = self._stored(key, value)
                except BoltraftError as err:
                    out.append(err)
                    prevs.append(None)
                    continue
            try:
                old = replace(full, stored)
            except lmdb.MapFullError:
                raise self._tx._doom()
            out.append(None)
            prevs.append(unseal(full, old) if old is not None and crc else old)
        return out, prevs

    def pop(self, key: bytes) -> bytes | None:
        """``delete``, returning the value ``key`` had (None: it was absent, nothing
        deleted), which LMDB's pop gives with the delete. Raises what ``delete`` raises,
        and CorruptionError (the old value fails its checksum)."""
        full = self._deleted(key)
        try:
            old = self._tx._txn.pop(full)
        except lmdb.MapFullError:
            raise self._tx._doom()
        if old is None or not self._tx._dbs.crc:
            return old
        return unseal(full, old)

    def delete(self, key: bytes) -> bool:
        """Returns True if ``key`` existed and was deleted, False if it was absent.

        Raises like ``put`` (IncompatibleValueError when ``key`` names a nested bucket: use
        ``delete_bucket``).
        """
        full = self._deleted(key)
        try:
            return self._tx._txn.delete(full)
        except lmdb.MapFullError:
            raise self._tx._doom()

    def put_if(self, key: bytes, value: bytes, expect: bytes | None) -> None:
        """Sets ``key`` to ``value`` if its current value equals ``expect``.

        ``expect`` None means "``key`` must be absent". Raises ConditionFailedError with
        ``details["current"]`` (the current value, or None) when the condition does not
        hold, and everything ``put`` raises.
        """
        if self._state:
            raise refusal(self._state, show_path(self.path))
        key = self._key(key)
        value = check_value(value, self._max_value)
        if expect is not None:
            expect = as_bytes(expect, "expect")
        self._write_if(key, value, expect)

    def delete_if(self, key: bytes, expect: bytes) -> None:
        """Deletes ``key`` if its current value equals ``expect``.

        Raises ConditionFailedError (``details["current"]``, None when absent) and
        everything ``delete`` raises.
        """
        if self._state:
            raise refusal(self._state, show_path(self.path))
        key = self._key(key)
        self._write_if(key, None, as_bytes(expect, "expect"))

    def _write_if(self, key: bytes, value: bytes | None, expect: bytes | None) -> None:
        """Sets ``key`` to ``value`` (None: deletes it) if it holds ``expect``.

        ``expect`` None means "``key`` must be absent"; the caller has checked the arguments.

        Raises IncompatibleValueError (``key`` names a nested bucket), ConditionFailedError
        (``details["current"]``), NoSpaceError(retry=True) (the transaction is then doomed),
        CorruptionError (the current value fails its checksum).
        """
        full = self._prefix + key
        if self._names_bucket(full):
            raise self._incompatible(key)
        current = self._tx._txn.get(full)
        if current is not None and self._tx._dbs.crc:
            current = unseal(full, current)
        if current != expect:
            raise ConditionFailedError(
                f"condition failed for key {show_bytes(key)} in bucket {show_path(self.path)}",
                current=current,
            )
        try:
            if value is None:
                self._tx._txn.delete(full)
            else:
                self._tx._txn.put(full, seal(full, value) if self._tx._dbs.crc else value)
        except lmdb.MapFullError:
            raise self._tx._doom()

    # --- ordered reads -------------------------------------------------------------------
    def cursor(self) -> Cursor:
        """Returns a new, unpositioned Cursor over this bucket (see Cursor)."""
        self._check_read()
        return Cursor(self)

    def scan(
        self,
        prefix: bytes | str | None = None,
        start: bytes | str | None = None,
        end: bytes | str | None = None,
        limit: int | None = None,
        reverse: bool = False,
        after: bytes | None = None,
        max_bytes: int | None = None,
    ) -> tuple[list[Item], bytes | None]:
        """Returns ``(items, token)``: entries with ``prefix`` and ``start <= key < end``.

        All bounds are optional and combine (intersection). Items come in key order, or
        descending with ``reverse``; nested buckets appear with value None. At most ``limit``
        items (None = all), and with ``max_bytes`` no more items once their keys and values
        total ``max_bytes`` or more (at least one item: a page of one large value passes it);
        ``token`` is None when nothing is left, otherwise an opaque bytes token: pass it back
        as ``after`` (with the same other arguments) for the next page. Raises
        InvalidArgumentError (a bound not bytes/str, ``limit`` or ``max_bytes`` < 1, a bad
        token).
        """
        self._check_read()
        lo, hi = _bounds(prefix, start, end)
        if limit is not None and (type(limit) is not int or limit < 1):
            raise InvalidArgumentError(f"limit must be a positive int, not {limit!r}")
        if max_bytes is not None and (type(max_bytes) is not int or max_bytes < 1):
            raise InvalidArgumentError(f"max_bytes must be a positive int, not {max_bytes!r}")
        if after is not None:
            last = decode_token(after)
            if reverse:
                hi = last if hi is None else min(hi, last)
            else:
                lo = max(lo, last + b"\x00")
        if hi is not None and lo >= hi:
            return [], None
        items: list[Item] = []
        total = 0
        budget = max_bytes
        for item in self._entries(lo, hi, reverse):
            if len(items) == limit or (budget is not None and total >= budget):
                return items, encode_token(items[-1][0])
            items.append(item)
            if budget is not None:
                value = item[1]
                total += len(item[0]) + (0 if value is None else len(value))
        return items, None

    def _entries(self, lo: bytes, hi: bytes | None, reverse: bool) -> Iterator[Item]:
        """Yields this bucket's entries with ``lo <= key < hi`` (``cursor.walk_bucket``),
        through the LMDB transaction current at the call."""
        tx = self._tx
        nested = self._may_have_children()
        return walk_bucket(tx._txn, tx._dbs, self._prefix, nested, lo, hi, reverse)

    def count(self) -> int:
        """Returns the number of entries (keys plus nested buckets) directly in this bucket."""
        self._check_read()
        n = 0
        tx = self._tx
        for db, on in ((tx._dbs.data, True), (tx._dbs.buckets, self._may_have_children())):
            if not on:
                continue
            cur = tx._txn.cursor(db=db)
            if cur.set_range(self._prefix):
                prefix = self._prefix
                for k in cur.iternext(keys=True, values=False):
                    if not k.startswith(prefix):
                        break
                    n += 1
        return n

    # --- sequence ------------------------------------------------------------------------
    def sequence(self) -> int:
        """Returns the last number ``next_sequence`` handed out (0 for a new bucket)."""
        self._check_read()
        return self._record()[1]

    def next_sequence(self) -> int:
        """Returns the bucket's next sequence number (1, 2, ...), persisted with the txn.

        Raises ReadOnlyTxError, TxClosedError, NoSpaceError(retry=True).
        """
        if self._state:
            raise refusal(self._state, show_path(self.path))
        seq: int = self._record()[1]
        try:
            self._tx._txn.put(self._rkey, RECORD.pack(self.id, seq + 1), db=self._tx._dbs.buckets)
        except lmdb.MapFullError:
            raise self._tx._doom()
        return seq + 1

    def _record(self) -> tuple[int, int]:
        """Returns ``(id, sequence)`` from this bucket's entry (it exists while the bucket is
        usable, which the caller checked)."""
        rec = self._tx._txn.get(self._rkey, db=self._tx._dbs.buckets)
        assert rec is not None
        return RECORD.unpack(rec)

    # --- nested buckets (addressed relative to this one) ---------------------------------
    def bucket(self, name: bytes | str) -> Bucket:
        """Returns the nested bucket ``name``; raises BucketNotFoundError (see Tx.bucket)."""
        return self._tx.bucket((*self.path, name))

    def create_bucket(self, name: bytes | str) -> Bucket:
        """Returns the new nested bucket ``name``; raises as Tx.create_bucket."""
        return self._tx.create_bucket((*self.path, name))

    def create_bucket_if_not_exists(self, name: bytes | str) -> Bucket:
        """Returns the nested bucket ``name``, creating it if needed (see Tx)."""
        return self._tx.create_bucket_if_not_exists((*self.path, name))

    def delete_bucket(self, name: bytes | str) -> None:
        """Deletes nested bucket ``name`` and all it holds (see Tx.delete_bucket)."""
        self._tx.delete_bucket((*self.path, name))

    def buckets(self) -> list[bytes]:
        """Returns the names of the buckets directly inside this one, in order."""
        return self._tx.buckets(self.path)


def _bounds(prefix: object, start: object, end: object) -> tuple[bytes, bytes | None]:
    """Returns the ``[lo, hi)`` key range (hi None = unbounded) of a prefix/start/end scan."""
    lo = b"" if start is None else as_bytes(start, "start")
    hi = None if end is None else as_bytes(end, "end")
    if prefix is not None:
        p = as_bytes(prefix, "prefix")
        lo = max(lo, p)
        p_end = prefix_end(p)
        if p_end is not None:
            hi = p_end if hi is None else min(hi, p_end)
    return lo, hi
