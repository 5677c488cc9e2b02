"""Tx: one transaction over the bucket store (see boltraft.storage.db for the model).

A Tx resolves bucket paths (caching one Bucket object per bucket for its lifetime), creates
and deletes buckets, offers savepoints (LMDB nested transactions) and the internal meta
keyspace. Every method checks its arguments before writing; a refused call changes nothing.
A Tx sees the DB that opened it as a ``Store``, so this module imports nothing of ``db``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol

import lmdb

from boltraft.errors import (
    BucketExistsError,
    BucketNotFoundError,
    IncompatibleValueError,
    InvalidArgumentError,
    InvalidBucketNameError,
)
from boltraft.storage.bucket import (
    CLOSED,
    DELETED,
    DOOMED,
    READ,
    ROLLED_BACK,
    WRITE,
    Bucket,
    refusal,
)
from boltraft.storage.keys import (
    PATH_SEP,
    as_bytes,
    bucket_prefix,
    check_key,
    check_name,
    normalize_path,
    show_path,
)
from boltraft.storage.layout import NEXT_ID_KEY, RECORD, U64, SubDbs

KNOWN_MAX = 4096  # the DB's bucket directory starts over past this many paths

Known = dict[object, tuple[tuple[bytes, ...], int, bytes, "bool | None", bytes]]
"""The DB's bucket directory: path (as a write txn was given it) -> (names, id, entry key,
has-children flag, key prefix) of a bucket that exists in the latest committed state. Write
transactions resolve paths through it instead of walking the ``buckets`` sub-db; any bucket
creation or deletion clears it (so an entry is never stale); a commit that reshaped nothing
adds the buckets it used. Only write transactions read it: a reader's snapshot may be older."""


class Store(Protocol):
    """What a Tx uses of the DB that opened it (``boltraft.storage.db.DB``)."""

    env: lmdb.Environment  # for savepoints: nested transactions
    max_value_size: int
    _dbs: SubDbs
    _max_key_size: int  # LMDB's key limit
    _known: Known  # the bucket directory

    def abort_write(self, txn: lmdb.Transaction[bytes]) -> None:
        """Aborts a write transaction or savepoint of this thread (see ``DB.abort_write``)."""


class Tx:
    """A transaction: a consistent snapshot (view) or the one writer (update).

    Valid until its ``with`` block ends; afterwards every call raises TxClosedError.
    """

    __slots__ = (
        "_cache",
        "_db",
        "_dbs",
        "_max_key_size",
        "_max_value_size",
        "_reshaped",
        "_state",
        "_txn",
    )

    def __init__(self, db: Store, txn: lmdb.Transaction[bytes], state: int) -> None:
        self._db = db
        self._txn = txn  # the innermost open LMDB txn (a child while a savepoint runs)
        self._dbs = db._dbs
        self._max_key_size = db._max_key_size
        self._max_value_size = db.max_value_size
        self._state = state  # WRITE, READ, CLOSED or DOOMED
        # path (as given, or normalized) -> live Bucket; one Bucket object per bucket id
        self._cache: dict[object, Bucket] = {}
        # True once this write txn created or deleted a bucket: the DB's bucket directory was
        # cleared then, and this txn's lookups are not offered to it at commit
        self._reshaped = False

    @property
    def writable(self) -> bool:
        """Returns True for an update transaction that can still write."""
        return self._state == WRITE

    # --- state ---------------------------------------------------------------------------
    def _check(self, write: bool) -> None:
        if self._state > READ or (write and self._state):
            raise refusal(self._state, "")

    def _doom(self) -> Exception:
        """Returns the error to raise after LMDB reported a full map; dooms the txn."""
        self._state = DOOMED
        for b in self._cache.values():
            if b._state <= READ:
                b._state = DOOMED
        return refusal(DOOMED, "")

    def _close(self) -> None:
        for b in self._cache.values():
            b._state = CLOSED
        self._cache = {}

    # --- buckets -------------------------------------------------------------------------
    def _names(self, path: object) -> tuple[bytes, ...]:
        """Returns ``path`` as a tuple of valid names; raises InvalidBucketNameError."""
        limit = self._max_key_size - len(self._dbs.root)
        kind = type(path)
        parts = (path,) if kind is bytes or kind is str else path
        if type(parts) is tuple or type(parts) is list:
            out = []
            for n in parts:  # the common case, without the checker's generality
                if type(n) is str:
                    n = n.encode("utf-8")
                if type(n) is not bytes or not n or PATH_SEP in n or len(n) > limit:
                    break
                out.append(n)
            else:
                if out:
                    return tuple(out)
        return tuple(check_name(n, limit) for n in normalize_path(path))

    def _child(self, parent: Bucket | None, names: tuple[bytes, ...]) -> Bucket | None:
        """Returns the bucket ``names`` (whose parent is ``parent``), or None if absent."""
        b = self._cache.get(names)
        if b is not None:
            return b
        prefix = self._dbs.root if parent is None else parent._prefix
        full = prefix + names[-1]
        if len(full) > self._max_key_size:
            return None
        rec = self._txn.get(full, db=self._dbs.buckets)
        if rec is None:
            return None
        b = Bucket(self, names, RECORD.unpack(rec)[0], full)
        self._cache[names] = b
        return b

    def _walk(self, names: tuple[bytes, ...]) -> Bucket | None:
        """Returns the bucket at ``names`` (None for the empty path = root)."""
        b = self._cache.get(names)
        if b is not None or not names:
            return b
        parent: Bucket | None = None
        for i in range(1, len(names) + 1):
            child = self._child(parent, names[:i])
            if child is None:
                raise BucketNotFoundError(
                    f"bucket {show_path(names[:i])} not found", path=list(names[:i])
                )
            parent = child
        return parent

    def bucket(self, path: object) -> Bucket:
        """Returns the bucket at ``path`` (a name, or a sequence of names from the root).

        Names are bytes (str is UTF-8 encoded). Raises BucketNotFoundError (missing, or a
        key rather than a bucket), InvalidBucketNameError (empty path, bad name),
        TxClosedError.
        """
        hashable = type(path) is not list
        b = self._cache.get(path) if hashable else None
        if b is None:
            self._check(False)
            hit = self._db._known.get(path) if hashable and self._state == WRITE else None
            if hit is not None:
                b = self._cache.get(hit[0])
                if b is None:
                    b = self._cache[hit[0]] = Bucket(self, hit[0], hit[1], hit[2], hit[4])
                    b._has_children = hit[3]
            elif type(path) is bytes and path and PATH_SEP not in path:
                b = self._child(None, (path,))
                if b is None:
                    raise BucketNotFoundError(f"bucket {show_path((path,))} not found")
            else:
                b = self._walk(self._names(path))
                assert b is not None  # a path's names are never empty: _walk found a bucket
            if isinstance(path, bytes | str | tuple):
                self._cache[path] = b
        if b._state > READ:
            raise refusal(b._state, show_path(b.path))
        return b

    def _reshape(self) -> None:
        """Forgets the DB's bucket directory (a bucket is about to be created or deleted:
        paths, ids and has-children flags may all change)."""
        self._reshaped = True
        self._db._known.clear()

    def offer_known(self) -> None:
        """Tells the DB's bucket directory the buckets this write txn resolved (called by the
        DB just before the commit, under LMDB's write lock). Only a txn that reshaped
        nothing offers them, as they are then exactly the committed buckets; otherwise, or
        past ``KNOWN_MAX`` paths, the directory is emptied."""
        known = self._db._known
        if self._reshaped or len(known) > KNOWN_MAX:
            known.clear()
            return
        for path, b in self._cache.items():
            if b._state == WRITE:
                known[path] = (b.path, b.id, b._rkey, b._has_children, b._prefix)

    def _create(self, parent: Bucket | None, names: tuple[bytes, ...]) -> Bucket:
        self._reshape()
        prefix = self._dbs.root if parent is None else parent._prefix
        name = names[-1]
        full = prefix + name
        room = self._max_key_size - len(prefix)
        if len(name) > room:
            raise InvalidBucketNameError(
                f"bucket name of {len(name)} bytes is too long: at most {room} bytes "
                f"fit under {show_path(names[:-1])}",
                size=len(name),
                max=room,
            )
        txn = self._txn
        if txn.get(full, db=self._dbs.buckets) is not None:
            raise BucketExistsError(f"bucket {show_path(names)} exists", path=list(names))
        if txn.get(full) is not None:
            raise IncompatibleValueError(
                f"{show_path(names)} is a key, not a bucket", path=list(names)
            )
        next_id = txn.get(NEXT_ID_KEY, db=self._dbs.sys)
        assert next_id is not None  # written with the store's format marker
        (new_id,) = U64.unpack(next_id)
        try:
            txn.put(NEXT_ID_KEY, U64.pack(new_id + 1), db=self._dbs.sys)
            txn.put(full, RECORD.pack(new_id, 0), db=self._dbs.buckets)
        except lmdb.MapFullError:
            raise self._doom()
        b = Bucket(self, names, new_id, full)
        b._has_children = False
        self._cache[names] = b
        if parent is not None:
            parent._has_children = True
        return b

    def create_bucket(self, path: object) -> Bucket:
        """Returns the new bucket at ``path``; its parent must exist.

        Raises BucketExistsError, BucketNotFoundError (missing parent),
        IncompatibleValueError (the name is a key of the parent), InvalidBucketNameError
        (also a name too long for LMDB's key limit under that parent), ReadOnlyTxError,
        TxClosedError, NoSpaceError(retry=True).
        """
        self._check(True)
        names = self._names(path)
        return self._create(self._walk(names[:-1]), names)

    def create_bucket_if_not_exists(self, path: object) -> Bucket:
        """Returns the bucket at ``path``, creating it and any missing ancestors.

        Raises IncompatibleValueError when a name on the path is a key, and the errors of
        ``create_bucket`` otherwise.
        """
        self._check(True)
        names = self._names(path)
        parent: Bucket | None = None
        for i in range(1, len(names) + 1):
            child = self._child(parent, names[:i])
            parent = child if child is not None else self._create(parent, names[:i])
        assert parent is not None
        return parent

    def delete_bucket(self, path: object) -> None:
        """Deletes the bucket at ``path``, its keys and nested buckets.

        Bucket objects of the deleted buckets refuse further use (BucketNotFoundError).
        Raises BucketNotFoundError, IncompatibleValueError (``path`` names a key),
        InvalidBucketNameError, ReadOnlyTxError, TxClosedError, NoSpaceError(retry=True).
        """
        self._check(True)
        names = self._names(path)
        parent = self._walk(names[:-1])
        self._reshape()
        full = (self._dbs.root if parent is None else parent._prefix) + names[-1]
        txn = self._txn
        rec = txn.get(full, db=self._dbs.buckets) if len(full) <= self._max_key_size else None
        if rec is None:
            if len(full) <= self._max_key_size and txn.get(full) is not None:
                raise IncompatibleValueError(
                    f"{show_path(names)} is a key, not a bucket", path=list(names)
                )
            raise BucketNotFoundError(f"bucket {show_path(names)} not found", path=list(names))
        try:
            todo = [RECORD.unpack(rec)[0]]
            while todo:
                prefix = bucket_prefix(todo.pop(), self._dbs.tag)
                for db in (self._dbs.buckets, self._dbs.data):
                    cur = txn.cursor(db=db)
                    if not cur.set_range(prefix):
                        continue
                    while cur.key().startswith(prefix):
                        if db is self._dbs.buckets:
                            todo.append(RECORD.unpack(cur.value())[0])
                        cur.delete()
            txn.delete(full, db=self._dbs.buckets)
        except lmdb.MapFullError:
            raise self._doom()
        n = len(names)
        for key, b in list(self._cache.items()):
            if b.path[:n] == names:
                b._state = DELETED
                del self._cache[key]

    def buckets(self, path: object = ()) -> list[bytes]:
        """Returns the names of the buckets directly under ``path`` (the root when empty).

        Raises BucketNotFoundError, InvalidBucketNameError, TxClosedError.
        """
        self._check(False)
        prefix = self._dbs.root if path == () or path == [] else self.bucket(path)._prefix
        cur = self._txn.cursor(db=self._dbs.buckets)
        out: list[bytes] = []
        if cur.set_range(prefix):
            n = len(prefix)
            for k in cur.iternext(keys=True, values=False):
                if not k.startswith(prefix):
                    break
                out.append(k[n:])
        return out

    # --- savepoints ----------------------------------------------------------------------
    @contextlib.contextmanager
    def savepoint(self) -> Iterator[Tx]:
        """Yields this transaction with a nested LMDB transaction for the block's writes.

        A clean exit keeps the block's writes; an exception undoes all of them (and is
        re-raised). Bucket objects obtained before the block are as they were before it
        (usable again if deleted inside it); those first obtained inside an undone block
        refuse further use (BucketNotFoundError: look them up again). Savepoints nest.
        Raises ReadOnlyTxError, TxClosedError.
        """
        self._check(True)
        parent = self._txn
        saved_cache = dict(self._cache)
        # what a Bucket knows of the data is undone with it: its state (deleted inside the
        # block) and whether it has nested buckets (found none after a delete in the block)
        saved_states = {id(b): (b, b._state, b._has_children) for b in saved_cache.values()}
        child = self._db.env.begin(write=True, parent=parent, db=self._dbs.data)
        self._txn = child
        try:
            yield self
        except BaseException:
            self._txn = parent
            self._db.abort_write(child)
            if self._state != DOOMED:
                for b in self._cache.values():
                    if id(b) not in saved_states:
                        b._state = ROLLED_BACK
                for b, state, has_children in saved_states.values():
                    b._state = state
                    b._has_children = has_children
                self._cache = saved_cache
            raise
        self._txn = parent
        if self._state == DOOMED:
            self._db.abort_write(child)
            raise refusal(DOOMED, "")
        try:
            child.commit()
        except lmdb.MapFullError:
            raise self._doom()

    # --- the state record (one value in the main db; see boltraft.storage.layout) ---------
    def state_record(self) -> bytes | None:
        """Returns the state record (None until one was written). Raises TxClosedError."""
        self._check(False)
        return self._txn.get(self._dbs.state_key, db=self._dbs.main)

    def lift_state_record(self) -> None:
        """Takes the state record out of a format 5 store until ``put_state_record`` writes
        it back, which the caller must do before the commit (a store without it reads as
        new). Meanwhile the newest user data is the main db's last
        key, so appends fill B-tree pages (``boltraft.storage.layout``). Does nothing in
        older formats. Raises ReadOnlyTxError, TxClosedError, NoSpaceError(retry=True)."""
        if self._state:
            raise refusal(self._state, "")
        if self._dbs.tag:
            try:
                self._txn.delete(self._dbs.state_key, db=self._dbs.main)
            except lmdb.MapFullError:
                raise self._doom()

    def put_state_record(self, value: bytes) -> None:
        """Replaces the state record by ``value`` (a small bytes value its one owner, the
        state machine, rewrites at every commit: keep it well under a page). Raises
        InvalidArgumentError (not bytes), ReadOnlyTxError, TxClosedError,
        NoSpaceError(retry=True)."""
        if self._state:
            raise refusal(self._state, "")
        if type(value) is not bytes:
            value = as_bytes(value, "value")
        try:
            self._txn.put(self._dbs.state_key, value, db=self._dbs.main)
        except lmdb.MapFullError:
            raise self._doom()

    # --- the internal meta keyspace ------------------------------------------------------
    def _meta_key(self, key: object) -> bytes:
        return check_key(key, self._max_key_size, "(meta)")

    def meta_get(self, key: bytes) -> bytes | None:
        """Returns the value of internal meta ``key``, or None. Raises like Bucket.get."""
        self._check(False)
        return self._txn.get(self._meta_key(key), db=self._dbs.meta)

    def meta_put(self, key: bytes, value: bytes) -> None:
        """Sets internal meta ``key`` to ``value`` (no value size limit).

        Raises KeyRequiredError, KeyTooLargeError, InvalidArgumentError, ReadOnlyTxError,
        TxClosedError, NoSpaceError(retry=True).
        """
        self._check(True)
        key = self._meta_key(key)
        value = as_bytes(value, "value")
        try:
            self._txn.put(key, value, db=self._dbs.meta)
        except lmdb.MapFullError:
            raise self._doom()

    def meta_delete(self, key: bytes) -> bool:
        """Returns True if internal meta ``key`` existed and was deleted. Raises like meta_put."""
        self._check(True)
        key = self._meta_key(key)
        try:
            return self._txn.delete(key, db=self._dbs.meta)
        except lmdb.MapFullError:
            raise self._doom()

    def meta_scan(self, prefix: bytes = b"", limit: int | None = None) -> list[tuple[bytes, bytes]]:
        """Returns the internal meta entries whose key starts with ``prefix``, in key order.

        At most ``limit`` entries (None = all). Raises InvalidArgumentError, TxClosedError.
        """
        self._check(False)
        prefix = as_bytes(prefix, "prefix")
        if limit is not None and (type(limit) is not int or limit < 1):
            raise InvalidArgumentError(f"limit must be a positive int, not {limit!r}")
        out: list[tuple[bytes, bytes]] = []
        cur = self._txn.cursor(db=self._dbs.meta)
        if not cur.set_range(prefix):
            return out
        for k, v in cur.iternext():
            if not k.startswith(prefix) or (limit is not None and len(out) >= limit):
                break
            out.append((k, v))
        return out
