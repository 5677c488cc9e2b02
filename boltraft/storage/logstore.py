"""The durable Raft log: a ``LogStore`` on its own LMDB environment (apart from the bucket data).

Layout (one environment in ``path``; ``LOCK`` beside it holds an exclusive ``flock``):

- sub-db ``entries``: key = big-endian u64 index (so LMDB's order is log order); value = a
  9-byte header (big-endian u64 term, u8 type) followed by the entry's data. A fixed header
  beats msgpack here: packing is one ``struct`` call and reading needs no decoder.
- the main db (beside the record of the sub-db ``entries``): ``hs`` = big-endian u64 term,
  u64 commit, then the vote (UTF-8); ``snap`` = msgpack ``[index, term, voters, learners,
  addrs]``. The bootstrap membership is a ``snap`` at index 0. The main db is rewritten by
  every commit anyway (it holds the sub-db's root), so a hard state stored there dirties no
  extra page, where a sub-db of its own would add one page write to every synced append.

Every mutation is ONE write transaction (synced when the store was opened with ``sync=True``):
an append writes its entries (``putmulti``), deletes the stale suffix and stores the hard
state together. In memory the store keeps first/last index and the log's terms as runs
(start index, term), so ``first_index``/``last_index``/``term`` never touch LMDB.

Not thread-safe: one thread (or a lock held by the caller) uses a store at a time.
"""

from __future__ import annotations

import os
import struct
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO

import lmdb
import msgpack

from boltraft.errors import (
    CorruptionError,
    InvalidArgumentError,
    LogCompactedError,
    LogUnavailableError,
    NoSpaceError,
)
from boltraft.raft.memstore import (
    check_compact,
    check_conf_state,
    check_range,
    check_snapshot,
)
from boltraft.raft.types import ConfState, Entry, HardState, SnapshotMeta
from boltraft.storage.fsutil import lmdb_disk_full, lock_dir

_KEY = struct.Struct(">Q")
_HDR = struct.Struct(">QB")
_HDR_SIZE = _HDR.size
_HS = struct.Struct(">QQ")
_HS_KEY = b"hs"
_SNAP_KEY = b"snap"
_EMPTY_HS = HardState()
_EMPTY_CS = ConfState()


def _encode_hs(hs: HardState) -> bytes:
    """Returns the stored form of ``hs``: big-endian u64 term and commit, then the vote."""
    return _HS.pack(hs.term, hs.commit) + hs.vote.encode()


def _encode_snap(meta: SnapshotMeta) -> bytes:
    """Returns the stored form of ``meta`` (the membership with its addresses)."""
    cs = meta.conf_state
    return msgpack.packb((meta.index, meta.term, cs.voters, cs.learners, cs.addrs))


def _decode_state(hs_raw: bytes | None, snap_raw: bytes | None) -> tuple[HardState, SnapshotMeta]:
    """Returns the hard state and snapshot meta stored as ``hs_raw``/``snap_raw`` (defaults
    when absent). Raises CorruptionError when either cannot be decoded."""
    try:
        if hs_raw is None:
            hs = _EMPTY_HS
        else:
            term, commit = _HS.unpack_from(hs_raw)
            hs = HardState(term, hs_raw[_HS.size :].decode(), commit)
        if snap_raw is None:
            snap = SnapshotMeta()
        else:
            index, term, voters, learners, addrs = msgpack.unpackb(snap_raw)
            snap = SnapshotMeta(index, term, ConfState(tuple(voters), tuple(learners), addrs))
    except (ValueError, TypeError, struct.error, msgpack.UnpackException) as exc:
        raise CorruptionError(f"unreadable raft log state: {exc}") from None
    return hs, snap


class LmdbLogStore:
    """A durable ``LogStore`` (see ``boltraft.raft.types.LogStore``) in the directory ``path``.

    ``sync``: every write transaction is fsynced before it returns (``append`` explains its
    per-call ``sync``); with ``sync=False`` nothing is fsynced, for tests and benchmarks.
    The map starts at ``map_size`` bytes and doubles whenever it is full, up to
    ``max_map_size``; past it a write raises NoSpaceError and writes nothing.
    Raises DataDirLockedError when another open store (in any process) holds ``path``, and
    CorruptionError when the stored log is not contiguous from the snapshot index.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        sync: bool = True,
        map_size: int = 64 << 20,
        max_map_size: int = 8 << 30,
    ) -> None:
        if map_size <= 0 or max_map_size < map_size:
            raise InvalidArgumentError(
                "need 0 < map_size <= max_map_size", map_size=map_size, max_map_size=max_map_size
            )
        self.path = Path(path)
        self.max_map_size = max_map_size
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock: BinaryIO | None = lock_dir(self.path)
        # A hard state appended with sync=False and no entries: kept here (self._hs already
        # holds it) and written by the next write transaction or close().
        self._pending_hs: bytes | None = None
        try:
            self._env = lmdb.open(
                str(self.path),
                map_size=map_size,
                max_dbs=1,
                sync=sync,
                metasync=sync,
                readahead=False,
                subdir=True,
            )
            self._db_entries = self._env.open_db(b"entries")
            self._db_state = self._env.open_db(None)  # the main db: see the module docstring
            self._recover()
        except BaseException:
            self._release()
            raise

    # --- recovery ----------------------------------------------------------------------
    def _recover(self) -> None:
        """Loads hard state, snapshot, first/last index and the term runs from disk."""
        with self._env.begin() as txn:
            self._hs, self._snap = _decode_state(
                txn.get(_HS_KEY, db=self._db_state), txn.get(_SNAP_KEY, db=self._db_state)
            )
            # Invariant: entries [first, last] are all stored; first == snapshot index + 1.
            self._first = self._snap.index + 1
            self._last = self._snap.index
            # Invariant: _run_idx ascending, _run_idx[0] == _first when the log is not empty;
            # entries [_run_idx[k], _run_idx[k+1]) all have term _run_term[k].
            self._run_idx: list[int] = []
            self._run_term: list[int] = []
            cur = txn.cursor(db=self._db_entries)
            if not cur.first():
                return
            first = _KEY.unpack(cur.key())[0]
            cur.last()
            last = _KEY.unpack(cur.key())[0]
            count = txn.stat(self._db_entries)["entries"]
            if first != self._first or count != last - first + 1:
                raise CorruptionError(
                    f"raft log holds {count} entries in [{first}, {last}] after snapshot "
                    f"{self._snap.index}",
                    first=first,
                    last=last,
                    count=count,
                    snapshot_index=self._snap.index,
                )
            self._last = last

            def term_of(i: int) -> int:
                raw = txn.get(_KEY.pack(i), db=self._db_entries)
                if raw is None:
                    raise CorruptionError(f"raft log entry {i} is missing", index=i)
                return _HDR.unpack_from(raw)[0]

            i = first
            while i <= last:  # terms never decrease: binary-search the end of each run
                t = term_of(i)
                self._run_idx.append(i)
                self._run_term.append(t)
                lo, hi = i, last
                while lo < hi:
                    mid = (lo + hi + 1) // 2
                    if term_of(mid) == t:
                        lo = mid
                    else:
                        hi = mid - 1
                i = lo + 1

    # --- reads -------------------------------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        """Returns the stored hard state and the membership as of the snapshot."""
        return self._hs, self._snap.conf_state

    def first_index(self) -> int:
        """Returns the snapshot index + 1."""
        return self._first

    def last_index(self) -> int:
        """Returns the index of the last entry, or the snapshot index when the log is empty."""
        return self._last

    def snapshot_meta(self) -> SnapshotMeta:
        """Returns the latest snapshot's metadata (index 0 when there is none)."""
        return self._snap

    def term(self, index: int) -> int:
        """Returns the term of entry ``index`` (the snapshot's term at the snapshot index),
        from memory. Raises LogCompactedError below the snapshot index, LogUnavailableError
        past the end."""
        if index >= self._first:
            if index > self._last:
                raise LogUnavailableError(
                    f"index {index} is past the last index {self._last}", index=index
                )
            idx = self._run_idx
            if index >= idx[-1]:
                return self._run_term[-1]
            return self._run_term[bisect_right(idx, index) - 1]
        if index == self._first - 1:
            return self._snap.term
        raise LogCompactedError(f"index {index} is compacted", index=index)

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Returns entries ``[lo, hi)`` (empty when ``lo == hi``); with ``max_bytes``, the
        longest prefix whose data totals <= ``max_bytes``, but at least one entry.

        Raises LogCompactedError when ``lo`` <= the snapshot index, LogUnavailableError when
        ``hi`` > last index + 1, InvalidArgumentError when ``lo > hi``."""
        if not check_range(lo, hi, self._first, self._last):
            return []
        n = hi - lo
        with self._env.begin(db=self._db_entries) as txn:
            cur = txn.cursor()
            if not cur.set_key(_KEY.pack(lo)):
                raise CorruptionError(f"raft log entry {lo} is missing", index=lo)
            it = cur.iternext(keys=False)
            if max_bytes is None:
                vals = list(islice(it, n))
            else:
                vals = []
                total = 0  # bytes of data so far
                for raw in islice(it, n):
                    total += len(raw) - _HDR_SIZE
                    if total > max_bytes and vals:
                        n = len(vals)
                        break
                    vals.append(raw)
        if len(vals) != n:
            raise CorruptionError(f"raft log entry {lo + len(vals)} is missing", index=lo)
        unpack = _HDR.unpack_from
        return [Entry(unpack(v)[0], i, v[8], v[_HDR_SIZE:]) for i, v in enumerate(vals, lo)]

    # --- writes ------------------------------------------------------------------------
    def append(
        self, entries: Sequence[Entry], hard_state: HardState | None = None, sync: bool = True
    ) -> None:
        """Writes ``entries`` (replacing the stored suffix from ``entries[0].index``; entries
        at or below the snapshot index are skipped) and ``hard_state`` in one transaction,
        synced when the store syncs.

        ``sync=False`` matters only without entries: the hard state (typically a new commit
        index, which Raft need not persist) is then kept in memory and written by the next
        write transaction or ``close()``; it costs no I/O and a crash may lose it. Entries
        are always written at once (and synced when the store syncs).

        Raises InvalidArgumentError for a gap after the last index, non-contiguous indexes or
        a decreasing term; NoSpaceError when the map cannot grow; nothing is written then."""
        last = self._last
        if not entries:
            if hard_state is not None:
                raw = _encode_hs(hard_state)
                if sync:
                    self._write(lambda txn: txn.put(_HS_KEY, raw, db=self._db_state))
                else:
                    self._pending_hs = raw
                self._hs = hard_state
            return
        start = entries[0].index
        if start != last + 1:
            if start > last + 1:
                raise InvalidArgumentError(
                    f"append from {start} would leave a gap after the last index {last}",
                    index=start,
                    last_index=last,
                )
            if start < self._first:
                entries = entries[self._first - start :]
                if not entries:
                    self.append((), hard_state)
                    return
                start = self._first
        run_idx, run_term = self._run_idx, self._run_term
        cut = bisect_left(run_idx, start)  # runs from `cut` on start inside the replaced part
        run_t = run_term[cut - 1] if cut else 0  # term of the run the new entries continue
        term = self.term(start - 1)
        new_idx: list[int] = []
        new_term: list[int] = []
        items: list[tuple[bytes, bytes]] = []
        key, pack = _KEY.pack, _HDR.pack
        i = start
        for e in entries:
            t = e.term
            if e.index != i or t < term or t < 1:
                raise InvalidArgumentError(
                    f"entry {e.index} (term {t}) does not follow entry {i - 1} (term {term})",
                    index=e.index,
                )
            if t != run_t:
                new_idx.append(i)
                new_term.append(t)
                run_t = t
            items.append((key(i), pack(t, e.type) + e.data))
            term = t
            i += 1
        new_last = i - 1
        hs_raw = self._pending_hs if hard_state is None else _encode_hs(hard_state)
        env, db = self._env, self._db_entries
        while True:  # inlined _write: this is the hot path
            try:
                with env.begin(write=True) as txn:
                    if start == last + 1:
                        if len(items) == 1:
                            txn.put(items[0][0], items[0][1], db=db, append=True)
                        else:
                            txn.cursor(db=db).putmulti(items, append=True)
                    else:
                        cur = txn.cursor(db=db)
                        if new_last < last:
                            _delete_range(cur, new_last + 1, last)
                        cur.putmulti(items)
                    if hs_raw is not None:
                        txn.put(_HS_KEY, hs_raw, db=self._db_state)
                break
            except lmdb.MapFullError:
                self._grow()
            except lmdb.Error as exc:
                raise lmdb_disk_full(exc, self.path, "raft log") or exc from None
        self._pending_hs = None
        del run_idx[cut:]
        del run_term[cut:]
        run_idx += new_idx
        run_term += new_term
        self._last = new_last
        if hard_state is not None:
            self._hs = hard_state

    def compact(self, meta: SnapshotMeta) -> None:
        """Drops the entries up to ``meta.index`` and records ``meta``, in one transaction.
        Raises LogCompactedError when ``meta.index`` <= the snapshot index,
        LogUnavailableError past the last index, InvalidArgumentError when ``meta.term`` is
        not the term of entry ``meta.index``; nothing changes then."""
        check_compact(meta, self._snap.index, self.term)
        raw = _encode_snap(meta)
        first = self._first

        def write(txn: lmdb.Transaction[bytes]) -> None:
            _delete_range(txn.cursor(db=self._db_entries), first, meta.index)
            txn.put(_SNAP_KEY, raw, db=self._db_state)

        self._write(write)
        new_first = meta.index + 1
        if new_first > self._last:
            self._run_idx, self._run_term = [], []
        else:
            k = bisect_right(self._run_idx, new_first) - 1
            self._run_idx = [new_first, *self._run_idx[k + 1 :]]
            self._run_term = self._run_term[k:]
        self._snap = meta
        self._first = new_first

    def apply_snapshot(self, meta: SnapshotMeta, hard_state: HardState | None = None) -> None:
        """Replaces the whole log by ``meta`` (empty at ``meta.index``) and stores
        ``hard_state`` when given, in one transaction.

        Raises LogCompactedError (changing nothing) when ``meta.index`` is below the current
        snapshot index; NoSpaceError when the map cannot grow."""
        check_snapshot(meta, self._snap.index)
        raw = _encode_snap(meta)
        hs_raw = None if hard_state is None else _encode_hs(hard_state)

        def write(txn: lmdb.Transaction[bytes]) -> None:
            txn.drop(self._db_entries, delete=False)
            txn.put(_SNAP_KEY, raw, db=self._db_state)
            if hs_raw is not None:
                txn.put(_HS_KEY, hs_raw, db=self._db_state)

        self._write(write)
        self._snap = meta
        self._first, self._last = meta.index + 1, meta.index
        self._run_idx, self._run_term = [], []
        if hard_state is not None:
            self._hs = hard_state

    def bootstrap(self, conf_state: ConfState) -> bool:
        """Returns True after durably recording ``conf_state`` as the membership of an empty
        store; False, changing nothing, when the store holds any entry, snapshot, hard state
        or membership. Raises InvalidArgumentError for a membership without voters or with a
        member listed twice."""
        check_conf_state(conf_state)
        snap = self._snap
        if self._last or snap.index or self._hs != _EMPTY_HS or snap.conf_state != _EMPTY_CS:
            return False
        meta = SnapshotMeta(0, 0, conf_state)
        raw = _encode_snap(meta)
        self._write(lambda txn: txn.put(_SNAP_KEY, raw, db=self._db_state))
        self._snap = meta
        return True

    def sync(self) -> None:
        """Writes a hard state pending from ``append((), hs, sync=False)``, synced when the
        store syncs (entries always are already). Raises NoSpaceError when the map cannot
        grow."""
        if self._pending_hs is not None:
            self._write(lambda txn: None)

    def close(self) -> None:
        """Closes the environment and releases the directory lock; closing twice is harmless.
        The store must not be used afterwards. Writes a hard state still pending from
        ``append((), hs, sync=False)`` first (may raise NoSpaceError)."""
        if self._pending_hs is not None:
            self._write(lambda txn: None)
        self._release()

    # --- internals ---------------------------------------------------------------------
    def _write(self, fn: Callable[[lmdb.Transaction[bytes]], Any]) -> None:
        """Runs ``fn`` in one write transaction (after writing a pending hard state, which
        ``fn`` may overwrite) and commits it; when the map is full, aborts, doubles the map
        (up to ``max_map_size``) and retries. Raises NoSpaceError past it."""
        env = self._env
        while True:
            try:
                with env.begin(write=True) as txn:
                    if self._pending_hs is not None:
                        txn.put(_HS_KEY, self._pending_hs, db=self._db_state)
                    fn(txn)
                self._pending_hs = None
                return
            except lmdb.MapFullError:
                self._grow()
            except lmdb.Error as exc:
                raise lmdb_disk_full(exc, self.path, "raft log") or exc from None

    def _grow(self) -> None:
        """Doubles the map (up to ``max_map_size``); raises NoSpaceError when it is there."""
        size = self._env.info()["map_size"]
        if size >= self.max_map_size:
            raise NoSpaceError(f"raft log map is full at {size} bytes", map_size=size) from None
        self._env.set_mapsize(min(size * 2, self.max_map_size))

    def _release(self) -> None:
        env = getattr(self, "_env", None)  # None when __init__ failed before opening it
        if env is not None:
            env.close()  # a second close does nothing
        if self._lock is not None:
            self._lock.close()  # closing the descriptor drops the flock
            self._lock = None


def _delete_range(cur: lmdb.Cursor[bytes], lo: int, hi: int) -> None:
    """Deletes entries ``[lo, hi]`` (all present) through ``cur``. Raises CorruptionError
    when one is missing, which aborts the enclosing transaction."""
    if lo > hi:
        return
    if not cur.set_key(_KEY.pack(lo)):
        raise CorruptionError(f"raft log entry {lo} is missing", index=lo)
    for _ in range(hi - lo + 1):
        if not cur.delete():
            raise CorruptionError(f"raft log range [{lo}, {hi}] is not contiguous")
