"""DB: BoltDB's model (DB, Tx, Bucket, Cursor) on one LMDB environment per data directory.

    db = DB.open(path)                      # writable: takes DIR/boltraft.lock
    with db.update() as tx:                 # commit on a clean exit, roll back on an exception
        tx.create_bucket_if_not_exists(["users", "eu"]).put(b"alice", b"1")
    with db.view() as tx:                   # read-only snapshot
        tx.bucket(["users", "eu"]).get(b"alice")
    db.update_fn(fn)                        # like update(), and grows a full map and retries
    held = db.hold_fn(fn)                   # None, or (tx, fn(tx)) with tx left open
    db.end_held(held[0], commit=True)       # until the caller ends it (or rolls it back)

Failing operations: every operation checks its arguments first and raises a typed error
before writing anything, so after a refused operation the transaction is still usable and
holds exactly what it held before. If the exception leaves ``update()``'s ``with`` block, the
whole transaction rolls back. ``tx.savepoint()`` makes a group of operations atomic inside a
transaction (an LMDB nested transaction).

A full map: inside a transaction, LMDB's MapFullError dooms the transaction (the operation
raises NoSpaceError(retry=True), so do all later ones, and nothing of it is committed).
``update_fn`` then grows the map (doubling, capped at ``quota``) and runs ``fn`` again;
``update()`` grows the map and raises NoSpaceError(retry=True) so the caller can retry. Once
the map is at its quota, NoSpaceError(retry=False): nothing is written, reads go on.
Growing remaps the file: every page this process had mapped leaves its RSS and comes back
as it is read again. A long-running writer that must keep its RSS steady (the server's state
DB) opens with ``initial_map_size`` equal to its ``quota``: the map is address space only
(without LMDB's WRITEMAP the file grows with the data, not with the map), and never remaps.

A full disk (LMDB cannot write its pages: ENOSPC, EDQUOT, or a short write, which LMDB
reports as EIO, while little is free: ``fsutil.lmdb_disk_full``; at commit or when a large
transaction spills pages): the transaction is rolled back and NoSpaceError(retry=False,
disk_full=True) raised; growing the map cannot help then. Reads go on, and a later write
succeeds once space is freed.

Modules: ``db`` (DB: the environment, the gate, whole-store operations) -> ``tx`` (Tx) ->
``bucket`` (Bucket) -> ``cursor`` (Cursor); each imports only the ones after it and sees the
one before it through a Protocol (``tx.Store``, ``bucket.Owner``, ``cursor.Source``) that
mypy checks the real class against. The copying child (``copier``) opens the environment
itself.

Threads: a DB may be shared by threads; each transaction belongs to the thread that opened it
(LMDB lets one write transaction run at a time). Growing the map waits until no transaction
is open in this process.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from threading import get_ident
from typing import Any, TypeVar

import lmdb

from boltraft.errors import (
    BoltraftError,
    InvalidArgumentError,
    NoSpaceError,
    ReadOnlyTxError,
    TxClosedError,
)
from boltraft.storage.bucket import (
    CLOSED,
    DOOMED,
    READ,
    WRITE,
    refusal,
)
from boltraft.storage.copier import copy_store
from boltraft.storage.fsutil import lmdb_disk_full
from boltraft.storage.keys import MAX_VALUE_SIZE
from boltraft.storage.layout import (
    SubDbs,
    check_store,
    keys_per_bucket,
    store_stats,
    walk_buckets,
)
from boltraft.storage.opening import open_readonly, open_writable, round_map
from boltraft.storage.pagecheck import check_pages
from boltraft.storage.tx import Known, Tx

T = TypeVar("T")

DEFAULT_QUOTA = 8 << 30  # the map never grows past this by default


class _Gate:
    """Tracks open transactions so that the map is resized only when none is open, and a
    write transaction is aborted only when no other thread has one open.

    Why the second: py-lmdb (3.0) makes a write transaction's abort wait until no operation
    of the environment is in flight in the whole process; reader threads that keep calls in
    flight (two spinning readers suffice) would starve it for ever. With the other threads'
    transactions closed and held back, nothing is in flight and the abort returns at once.

    Invariant: ``_owners`` maps each thread with open transactions to their number (> 0);
    ``_resizing`` is True only while one thread waits for or does a resize; ``_quiescer`` is
    the thread aborting a write transaction (0: none). New transactions wait for both,
    except in a thread that already has one open (no deadlock).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._owners: dict[int, int] = {}
        self._resizing = False
        self._quiescer = 0

    def enter(self) -> None:
        me = get_ident()
        with self._lock:
            mine = self._owners.get(me)
            if mine:
                self._owners[me] = mine + 1
                return
            while self._resizing or self._quiescer:
                self._cond.wait()
            self._owners[me] = 1

    def leave(self) -> None:
        me = get_ident()
        with self._lock:
            mine = self._owners[me]
            if mine > 1:
                self._owners[me] = mine - 1
                return
            del self._owners[me]
            if self._resizing or self._quiescer:
                self._cond.notify_all()

    @contextlib.contextmanager
    def quiesce(self) -> Iterator[None]:
        """Yields once no OTHER thread has a transaction open; none opens one until the block
        ends. For the one writer thread (LMDB has one write transaction at a time), which
        keeps its own transactions; a waiting resizer holds none, so it never blocks this."""
        me = get_ident()
        with self._lock:
            self._quiescer = me
            while any(t != me for t in self._owners):
                self._cond.wait()
        try:
            yield
        finally:
            with self._lock:
                self._quiescer = 0
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Yields once no transaction is open; raises NoSpaceError if this thread has one."""
        with self._lock:
            if self._owners.get(get_ident()):
                raise NoSpaceError(
                    "cannot grow the map while this thread holds an open transaction",
                    retry=False,
                )
            while self._resizing:
                self._cond.wait()
            self._resizing = True
            while self._owners:
                self._cond.wait()
        try:
            yield
        finally:
            with self._lock:
                self._resizing = False
                self._cond.notify_all()


class DB:
    """An open bucket store on one data directory; make one with ``DB.open``."""

    def __init__(
        self,
        path: Path,
        env: lmdb.Environment,
        dbs: SubDbs,
        *,
        readonly: bool,
        sync: bool,
        max_value_size: int,
        quota: int,
        lock_fd: int | None,
    ) -> None:
        self.path = path
        self.env = env  # for the state machine's snapshot code only
        self.readonly = readonly
        self.sync_commits = sync
        self.max_value_size = max_value_size
        self.quota = quota  # the map never grows past this many bytes
        self._dbs = dbs
        self._max_key_size: int = env.max_key_size()
        self._gate = _Gate()
        self._lock_fd = lock_fd  # flock'ed: LOCK_EX when writable, LOCK_SH for a lock-free read
        self._closed = False
        self._map_size: int = env.info()["map_size"]  # changed only by _grow, under the gate
        self._known: Known = {}  # the bucket directory of write transactions (see tx.Known)

    # --- opening -------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        readonly: bool = False,
        sync: bool = True,
        metasync: bool | None = None,
        max_value_size: int = MAX_VALUE_SIZE,
        quota: int = DEFAULT_QUOTA,
        initial_map_size: int = 64 << 20,
    ) -> DB:
        """Returns the store in directory ``path``, creating it (writable opens only).

        ``sync`` False skips fsync at commit (durable only after ``db.sync()``/``close()``).
        ``metasync`` (default: ``sync``) False with ``sync`` True fsyncs the data pages at each
        commit but not the meta page (LMDB's NOMETASYNC): a machine crash may undo the last
        commit, never corrupt the store (the next commit or ``sync()`` flushes the meta).
        A writable open takes ``path/boltraft.lock``; a read-only open never changes the
        store, and reads safely while a writer runs. Raises DataDirLockedError (another
        process has it open writable, or a lock-free reader holds it), DataDirNotFoundError
        (read-only open of a directory without a store), CorruptionError (not a boltraft
        store, or another format version), InvalidArgumentError (bad sizes).
        """
        for name, val in (
            ("max_value_size", max_value_size),
            ("quota", quota),
            ("initial_map_size", initial_map_size),
        ):
            if type(val) is not int or val <= 0:
                raise InvalidArgumentError(f"{name} must be a positive int, not {val!r}")
        if initial_map_size > quota:
            raise InvalidArgumentError(
                f"initial_map_size {initial_map_size} is larger than the quota {quota}"
            )
        p = Path(path)
        if readonly:
            env, dbs, fd = open_readonly(p)
        else:
            env, dbs, fd = open_writable(
                p, round_map(initial_map_size), sync, sync if metasync is None else metasync
            )
        return cls(
            p,
            env,
            dbs,
            readonly=readonly,
            sync=sync,
            max_value_size=max_value_size,
            quota=quota,
            lock_fd=fd,
        )

    # --- transactions --------------------------------------------------------------------
    def _begin(self, write: bool) -> Tx:
        if self._closed:
            raise TxClosedError("the database is closed")
        if write and self.readonly:
            raise ReadOnlyTxError("the database was opened read-only")
        while True:
            self._gate.enter()
            try:
                txn = self.env.begin(write=write, db=self._dbs.data)
            except lmdb.MapResizedError:
                self._gate.leave()
                with self._gate.exclusive():
                    self.env.set_mapsize(0)  # adopt the size another process grew it to
                continue
            except BaseException:
                self._gate.leave()
                raise
            return Tx(self, txn, WRITE if write else READ)

    def _end(self, tx: Tx, commit: bool) -> None:
        """Commits (if ``commit`` and not doomed) or aborts, then closes ``tx``."""
        try:
            if commit and tx._state == WRITE:
                tx.offer_known()  # still under LMDB's write lock
                try:
                    tx._txn.commit()
                except BaseException as exc:
                    self._known.clear()
                    if not isinstance(exc, lmdb.MapFullError):
                        full = self._disk_full(exc)
                        if full is None:
                            raise
                        tx._state = CLOSED  # LMDB already freed the failed txn
                        raise full from None
                    tx._doom()  # LMDB already freed the failed txn
                else:
                    tx._state = CLOSED
            elif tx._state == READ:
                tx._txn.abort()
                tx._state = CLOSED
            else:
                self.abort_write(tx._txn)
                if tx._state != DOOMED:
                    tx._state = CLOSED
        finally:
            tx._close()
            self._gate.leave()

    def abort_write(self, txn: lmdb.Transaction[bytes]) -> None:
        """Aborts the write transaction (or savepoint) ``txn`` of this thread, with the other
        threads' transactions closed meanwhile (see ``_Gate``)."""
        with self._gate.quiesce():
            txn.abort()

    @contextlib.contextmanager
    def view(self) -> Iterator[Tx]:
        """Yields a read-only Tx (a consistent snapshot); writes raise ReadOnlyTxError.

        Raises TxClosedError when the DB is closed.
        """
        tx = self._begin(False)
        try:
            yield tx
        finally:
            self._end(tx, False)

    @contextlib.contextmanager
    def update(self) -> Iterator[Tx]:
        """Yields a write Tx: committed when the block ends cleanly, rolled back on an exception.

        A full map during the block or at commit: nothing is committed, the map is grown
        (up to the quota) and NoSpaceError is raised with ``details["retry"]`` True when a
        retry can succeed. Raises ReadOnlyTxError (read-only DB), TxClosedError.
        """
        map_size = self._map_size
        tx = self._begin(True)
        try:
            yield tx
        except BaseException as exc:
            self._end(tx, False)
            if tx._state == DOOMED:
                self._grow(map_size)
                raise refusal(DOOMED, "") from None
            full = self._disk_full(exc)
            if full is not None:
                raise full from None
            raise
        self._end(tx, True)
        if tx._state == DOOMED:
            self._grow(map_size)
            raise refusal(DOOMED, "")

    def update_fn(self, fn: Callable[[Tx], T]) -> T:
        """Returns ``fn(tx)`` after committing the write transaction it ran in.

        If ``fn`` raises, the transaction rolls back and the exception propagates. If the
        map fills up (during ``fn`` or at commit) the attempt is rolled back, the map grows
        (doubling, capped at the quota) and ``fn`` runs again in a fresh transaction, so
        ``fn`` must not have effects outside the transaction. Past the quota: NoSpaceError
        (retry False), nothing written, reads still served. A full disk: NoSpaceError
        (retry False, ``details["disk_full"]`` True), nothing written, at once.
        """
        while True:
            map_size = self._map_size
            tx = self._begin(True)
            try:
                result = fn(tx)
            except BaseException as exc:
                self._end(tx, False)
                if tx._state != DOOMED:
                    full = self._disk_full(exc)
                    if full is not None:
                        raise full from None
                    raise
            else:
                self._end(tx, True)
                if tx._state != DOOMED:
                    return result
            self._grow(map_size)

    def hold_fn(self, fn: Callable[[Tx], T]) -> tuple[Tx, T] | None:
        """Returns ``(tx, fn(tx))`` with the write transaction ``tx`` still open, for the
        caller to end with ``end_held`` on the same thread; None, with nothing open and
        nothing written, when ``fn`` raised a BoltraftError or filled the map (no growing
        here: a later ``update_fn`` grows it).

        Until it ends, ``tx`` holds LMDB's write lock: this thread must begin no other
        write transaction (LMDB's lock is not reentrant), and no other thread or process
        can. Readers go on, and see none of it. Raises what ``_begin`` raises
        (ReadOnlyTxError, TxClosedError) and what ``fn`` raises besides BoltraftError."""
        tx = self._begin(True)
        try:
            result = fn(tx)
        except BoltraftError:
            self._end(tx, False)
            return None
        except BaseException:
            self._end(tx, False)
            raise
        if tx._state == DOOMED:
            self._end(tx, False)
            return None
        return tx, result

    def end_held(self, tx: Tx, commit: bool) -> bool:
        """Commits (``commit``) or rolls back the transaction ``hold_fn`` returned; True
        when it committed. A commit that filled the map rolls back and returns False.
        Raises NoSpaceError (``details["disk_full"]``) when the disk is full (rolled
        back), and LMDB's other errors."""
        self._end(tx, commit)
        return commit and tx._state != DOOMED

    def _disk_full(self, exc: BaseException) -> NoSpaceError | None:
        return lmdb_disk_full(exc, self.path, "bucket store")

    def _grow(self, seen: int) -> None:
        """Grows the map past ``seen`` bytes (unless another thread did); NoSpaceError at quota."""
        with self._gate.exclusive():
            current = self.env.info()["map_size"]
            if current > seen:
                return
            if current >= self.quota:
                raise NoSpaceError(
                    f"the store reached its quota of {self.quota} bytes; nothing was written",
                    retry=False,
                    quota=self.quota,
                    map_size=current,
                )
            self._map_size = min(self.quota, round_map(current * 2))
            self.env.set_mapsize(self._map_size)

    # --- whole-store operations ----------------------------------------------------------
    def copy(self, dest: str | os.PathLike[str], compact: bool = True) -> Path:
        """Returns the directory now holding a consistent copy of the store (``data.mdb``).

        Writers may go on meanwhile: the copy is one read snapshot, taken by a child process
        (``boltraft.storage.copier`` says why: an in-process copy would stall this process's
        aborting writers). ``dest`` must not exist or be an empty directory. Raises
        InvalidArgumentError (``dest`` not empty), TxClosedError, CopyFailedError.
        """
        if self._closed:
            raise TxClosedError("the database is closed")
        d = Path(dest)
        if d.exists() and (not d.is_dir() or any(d.iterdir())):
            raise InvalidArgumentError(f"copy destination {d} is not an empty directory")
        d.mkdir(parents=True, exist_ok=True)
        copy_store(self.path, dest=d, compact=compact)
        return d

    def stats(self) -> dict[str, Any]:
        """Returns the store format and sizes and counts: map/quota/used bytes, buckets,
        keys, meta keys, depth."""
        info = self.env.info()
        psize = self.env.stat()["psize"]
        with self.view() as tx:
            content = store_stats(tx._txn, self._dbs)
        data_file = self.path / "data.mdb"
        return {
            "path": str(self.path),
            "format": self._dbs.format.decode(),
            "readonly": self.readonly,
            "page_size": psize,
            "map_size": info["map_size"],
            "quota": self.quota,
            "used_bytes": (info["last_pgno"] + 1) * psize,
            "file_bytes": data_file.stat().st_size,
            "last_txnid": info["last_txnid"],
            "max_key_size": self._max_key_size,
            "max_value_size": self.max_value_size,
            **content,
        }

    def bucket_tree(self) -> list[dict[str, Any]]:
        """Returns every bucket, parents first in path order, as a dict with ``path`` (tuple
        of names), ``id``, ``sequence``, ``keys`` (values stored directly in it) and
        ``buckets`` (its direct nested buckets)."""
        with self.view() as tx:
            walked = walk_buckets(tx._txn, self._dbs)
            counts = keys_per_bucket(tx._txn, self._dbs)
        children = Counter(path[:-1] for path, _, _ in walked)
        return [
            {
                "path": path,
                "id": bid,
                "sequence": seq,
                "keys": counts[bid],
                "buckets": children[path],
            }
            for path, bid, seq in walked
        ]

    def check(self, *, pages: bool = True) -> list[str]:
        """Returns the consistency problems of the store (an empty list means it is sound).

        With ``pages``, the file's page structure is checked first (``check_pages``, read
        from the file: meant for a store no process writes); when it has problems they are
        the answer, as LMDB may abort the process on reading a damaged page. Without it,
        only what LMDB reads: the buckets, keys and value checksums."""
        if pages:
            damaged = check_pages(self.path / "data.mdb")
            if damaged:
                return damaged
        with self.view() as tx:
            return check_store(tx._txn, self._dbs)

    def sync(self) -> None:
        """Flushes committed data to disk (needed only with sync=False). Raises
        TxClosedError when the DB is closed."""
        if self._closed:
            raise TxClosedError("the database is closed")
        if not self.readonly:
            self.env.sync(True)

    def close(self) -> None:
        """Closes the environment and releases the lock; idempotent."""
        if self._closed:
            return
        self._closed = True
        self.env.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def closed(self) -> bool:
        """Returns True once ``close()`` ran."""
        return self._closed

    def __enter__(self) -> DB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "ro" if self.readonly else "rw"
        return f"<DB {self.path} {mode}{' closed' if self._closed else ''}>"
