"""The replicated state machine: applies committed log entries to the bucket engine.

``BucketStateMachine.apply(entries)`` applies a run of entries in ONE LMDB write transaction
(``DB.update_fn``, so a full map grows up to the quota) and stores the last applied index and
term, and the clock, in that same transaction (the engine's state record,
``Tx.state_record``). The data and the applied index therefore move together: after a
crash, the entries at or below the stored index are exactly the ones applied, and the caller
replays the rest (replay skips what is applied).

A run of more than one command lifts the state record at the start of its transaction and
writes it back at the end, so in store format 5 the data it appends fills whole pages
(``boltraft.storage.layout``). A single command leaves it in place: lifting it makes LMDB
rebalance the last page while that is less than a quarter full (a node moves in from the
page before it: one more page written per commit); a single command's append therefore
splits its page half and half.

Results, aligned with the entries: None for a no-op (empty data), a CONF_CHANGE entry (the
consensus core handles those) or an entry already applied; otherwise the command's result
(put: None; delete: True/False, whether the key existed; conditional delete: True;
create_bucket/delete_bucket: None; next_sequence: the new sequence number; batch: the list of
its ops' results) or a BoltraftError INSTANCE: the engine's typed errors, and for an
undecodable entry MalformedCommandError / UnknownCommandError / UnsupportedVersionError.
Every replica reaches the same result for the same log: a bad command never stops the applier.

A run of one command (what a lightly loaded node applies, and a single durable commit) takes
``_apply_one``: the same work as ``_run`` without the run's bookkeeping.

Prepared. ``prepare([entry])`` applies ONE command entry, the next after the applied index,
before it is committed (a leader, while its followers persist it), in a write transaction
it leaves open: the next ``apply`` that begins with that entry (same index and term: the
same entry, by Raft's log matching) commits it and takes its result, so the apply costs
only the commit; an ``apply`` that begins otherwise, another ``prepare`` or ``close`` rolls
it back. Until then the applied index, the reads and the change feed see none of it (its
changes are reported at its commit), and the open transaction holds LMDB's write lock:
every writer of this store is this object's ``apply``, which ends it first.

Runs of puts are what clients send most. A run of at least ``BATCH_PATH_MIN`` puts to one
bucket, all exactly-once or all plain (no (cid, seq)), takes the batch path: decoded and
checked by ``commands.put_run`` in two comprehensions, its pairs written in one
``put_many``, and for exactly-once puts its dedup records looked up and written in one pass
each; the results are the general path's. The general path also writes a run of plain puts
to one bucket with one ``put_many``, after a loop over the decoded commands.

Repeats. ``repeated`` lists the indexes of the entries of the last ``apply`` whose (cid, seq)
was already recorded (or whose session had moved past it): they changed nothing, and their
result is the original one (or ``session_expired``).

Changes. With a ``report`` hook (``boltraft.storage.changes``), the apply notes each change
of the data as it writes it (the previous value from the write itself: ``Bucket.replace``,
``replace_many``, ``pop``) and hands the changes of each committed transaction to the hook
(a change feed: ``boltraft.server.watching``). What a transaction noted is dropped when it
does not commit (``update_fn`` runs it again after growing the map; the quota's
entry-by-entry fallback), and a failed batch's changes go with its savepoint. Without the
hook, the apply writes as it would with none (``put_many``'s one LMDB call).

Batch atomicity. A batch runs inside a savepoint (``tx.savepoint()``, an LMDB nested
transaction): when one of its ops fails, everything the batch wrote is undone, the batch's
result is that error (``details["index"]`` names the failing op), and the other commands of
the run go on in the same transaction.

Exactly-once. A command carrying (cid, seq) is looked up in the dedup table (see
``boltraft.storage.dedup``) in the same transaction: a live record returns the ORIGINAL result
and nothing is applied again; otherwise the command is applied and its result recorded. The
clock for expiry is the largest leader-stamped "ts" applied so far (0 before any); the window
is ``dedup_window_ms`` (default 10 minutes).

No space (the choice, and why). When the run does not fit under the quota, it is applied
again entry by entry, each in its own transaction; an entry that still does not fit yields a
NoSpaceError result, is not recorded for dedup (a retry after the operator raised the quota
applies it), and the applied index still advances past it, so the applier never wedges on a
full store. This is deterministic across replicas only when they have the same quota and the
same page layout: a replica installed from a compacted snapshot can have more free space than
one that grew by applying, and so apply an entry that another refused. We accept that rare
divergence, which needs a store at its quota, rather than stalling the whole cluster
(``db.stats()`` shows how close a store is to its quota). If not even the applied index can
be written, ``apply`` raises NoSpaceError: the entries up to ``applied`` are durable, and the
caller retries the rest once space is freed.

A full DISK is different: every replica with free space applies the entry, so skipping it
here would make this replica diverge. ``apply`` raises NoSpaceError with
``details["disk_full"]`` True (from ``DB``), the run's transaction rolled back, and the caller
applies the same entries again once space is freed (``boltraft.server.node`` keeps them and
retries at every tick). Only after a run already fell back to entry-by-entry transactions
(the quota) can some of its entries have been applied; ``applied`` says how far.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any, cast

import msgpack

from boltraft.errors import (
    BoltraftError,
    CommandError,
    CorruptionError,
    InvalidArgumentError,
    NoSpaceError,
)
from boltraft.packing import pack
from boltraft.raft.types import Entry, EntryType
from boltraft.storage import commands
from boltraft.storage.applied import APPLIED, read_applied
from boltraft.storage.bucket import Bucket
from boltraft.storage.changes import CREATE_BUCKET as _CREATE_BUCKET
from boltraft.storage.changes import DELETE as _DELETE
from boltraft.storage.changes import DELETE_BUCKET as _DELETE_BUCKET
from boltraft.storage.changes import PUT as _PUT
from boltraft.storage.changes import Change, Report
from boltraft.storage.commands import (
    BATCH,
    CREATE_BUCKET,
    DELETE,
    DELETE_BUCKET,
    NEXT_SEQUENCE,
    PUT,
    PUT_IF,
    Body,
    Parsed,
)
from boltraft.storage.db import DB
from boltraft.storage.dedup import DEFAULT_WINDOW_MS, MISSING, DedupRun
from boltraft.storage.queries import execute_reads
from boltraft.storage.snapio import write_snapshot
from boltraft.storage.snapshot import SnapshotInfo
from boltraft.storage.tx import Tx

KEYS_PREFIX = b"sm.k"  # meta keys of the CURVE allow-list: KEYS_PREFIX + name -> [kind, key, role]
BATCH_PATH_MIN = 8
"""Runs of at least this many puts to one bucket, all plain or all exactly-once, take the
batch path (``_commit_plain_puts``, ``_commit_puts``); shorter runs take the general path,
which costs less than the batch path's fixed cost there."""
_NORMAL = int(EntryType.NORMAL)

Work = list[tuple[int, Parsed]]  # (position in the entries, decoded command)
BucketCache = dict[tuple[bytes, ...], Bucket]  # per transaction; cleared when buckets may go
Noted = list[Change] | None  # a transaction's changes so far (None: no report hook)
_OneDone = tuple[Any, int | None, bool, Noted]  # result, oldest dedup group, repeat, noted


@dataclass(slots=True)
class _Prepared:
    """An entry applied ahead of its commit (``prepare``): its open transaction ``tx``, the
    dedup clock after it, and what its apply returned."""

    tx: Tx
    entry: Entry
    clock: int
    result: Any
    oldest: int | None
    repeat: bool
    noted: Noted


class BucketStateMachine:
    """The bucket store as a replicated state machine (see the module docstring).

    Not thread-safe for writers: one thread calls ``apply``; readers use ``db`` freely.
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        dedup_window_ms: int = DEFAULT_WINDOW_MS,
        **db_options: Any,
    ) -> None:
        """Opens (creating if needed) the store in ``data_dir`` with ``DB.open(**db_options)``.

        Raises InvalidArgumentError for a negative window, and what ``DB.open`` raises.
        """
        if type(dedup_window_ms) is not int or dedup_window_ms < 0:
            raise InvalidArgumentError(
                "dedup_window_ms must be a non-negative integer", argument="dedup_window_ms"
            )
        self.dedup_window_ms = dedup_window_ms
        self.db = DB.open(data_dir, **db_options)
        # Mirrors of the stored applied record, updated only after a commit.
        self._index, self._term, self._clock = read_applied(self.db)
        self._oldest_group: int | None = None  # dedup clean-up hint; None = unknown
        self.repeated: list[int] = []  # see "Repeats" in the module docstring
        self.report: Report | None = None  # see "Changes" in the module docstring
        self._prepared: _Prepared | None = None  # see "Prepared" in the module docstring

    @property
    def applied(self) -> tuple[int, int]:
        """Returns ``(index, term)`` of the last applied entry ((0, 0) for a new store)."""
        return self._index, self._term

    @property
    def clock_ms(self) -> int:
        """Returns the dedup clock: the largest "ts" applied so far (0 before any)."""
        return self._clock

    @property
    def closed(self) -> bool:
        """True once ``close`` ran."""
        return self.db.closed

    def close(self) -> None:
        """Closes the store (rolling back a prepared entry); the object is unusable
        afterwards."""
        self._drop_prepared()
        self.db.close()

    def read(self, requests: Sequence[Any]) -> list[Any]:
        """One result per read request (``boltraft.storage.queries``), all from ONE read
        transaction; a request that fails has its BoltraftError in its place. Safe from any
        thread."""
        return execute_reads(self.db, requests)

    def content_hash(self) -> tuple[int, str]:
        """``(applied index, sha256 hex)`` of the whole bucket content (every bucket path,
        key, value and bucket sequence, in key order), both read from ONE read transaction:
        replicas at the same applied index must give the same hash (etcd's HashKV). The
        exactly-once table is left out (its clean-up runs at different times on each
        replica). Safe from any thread; takes time in proportion to the data."""
        h = hashlib.sha256()
        with self.db.view() as tx:
            raw = tx.state_record()
            index = APPLIED.unpack(raw)[0] if raw else 0
            stack: list[tuple[bytes, ...]] = [(name,) for name in reversed(tx.buckets())]
            while stack:
                path = stack.pop()
                bucket = tx.bucket(list(path))
                h.update(b"B" + pack([list(path), bucket.sequence()]))
                children = []
                items, _ = bucket.scan()
                for key, value in items:
                    if value is None:
                        children.append((*path, key))
                    else:
                        h.update(b"K" + pack([key, value]))
                stack.extend(reversed(children))
        return index, h.hexdigest()

    def key_records(self) -> dict[str, tuple[str, str, str]]:
        """Returns the replicated CURVE allow-list entries, name -> (kind, key, role) (an
        empty key: revoked), as applied ``keys`` commands left them. Safe from any thread."""
        with self.db.view() as tx:
            rows = tx.meta_scan(KEYS_PREFIX)
        out = {}
        for k, v in rows:
            kind, key, role = msgpack.unpackb(v)
            out[k[len(KEYS_PREFIX) :].decode()] = (kind.decode(), key.decode(), role.decode())
        return out

    def sync(self) -> None:
        """Makes every applied entry durable (the log may then forget them)."""
        self.db.sync()

    def snapshot(self, parent: Path, *, rate: float = 0.0) -> SnapshotInfo:
        """Writes a durable snapshot of the applied state into ``parent/<index>-<term>/``
        (``boltraft.storage.snapio.write_snapshot``: runs beside ``apply`` on another thread,
        at most ``rate`` bytes/s when ``rate`` > 0). I/O errors propagate and leave nothing."""
        return write_snapshot(self.db, parent, fsync=True, rate=rate)

    def __enter__(self) -> BucketStateMachine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- applying ----------------------------------------------------------------------------
    def apply(self, entries: Sequence[Entry]) -> list[Any]:
        """Returns one result per entry (see the module docstring) after applying ``entries``
        in one durable write transaction.

        ``entries`` must be in log order; those at or below the applied index are skipped, the
        rest must continue it without a gap. Raises InvalidArgumentError for a gap or disorder
        (nothing applied), NoSpaceError when not even the applied index fits under the quota
        or the disk is full (``details["disk_full"]``; see the module docstring),
        CorruptionError when a value a command reads fails its checksum (nothing applied:
        this replica cannot apply the entry as the others do, and must not go on), and lets
        LMDB's own I/O errors through.
        """
        n = len(entries)
        results: list[Any] = [None] * n
        self.repeated = []
        start = 0
        while start < n and entries[start].index <= self._index:
            start += 1
        if start == n:
            return results
        prepared = self._prepared
        if prepared is not None:
            self._prepared = None
            head = entries[start]
            if head.index == prepared.entry.index and head.term == prepared.entry.term:
                if self._commit_prepared(prepared):
                    results[start] = prepared.result
                    if start + 1 == n:
                        return results
                    repeated = self.repeated
                    results[start + 1 :] = self.apply(entries[start + 1 :])
                    self.repeated = repeated + self.repeated
                    return results
            else:
                self.db.end_held(prepared.tx, False)
        run = entries[start:]
        expect = self._index + 1
        if n - start == 1 and run[0][1] == expect and run[0][3] and run[0][2] == _NORMAL:
            try:  # one command: what a lightly loaded node applies (see _apply_one)
                results[start] = self._apply_one(run[0], commands.parse(run[0][3]))
                return results
            except CommandError:
                pass  # the general path answers it
            except NoSpaceError as err:
                if err.details.get("disk_full"):
                    raise
        if [e[1] for e in run] != list(range(expect, expect + n - start)):
            for pos in range(start, n):  # name the first entry out of place
                index = entries[pos][1]
                if index != expect:
                    raise InvalidArgumentError(
                        f"entry index {index} does not follow {expect - 1}",
                        index=index,
                        expected=expect,
                    )
                expect += 1
        if len(run) >= BATCH_PATH_MIN:
            datas = [e[3] for e in run if e[2] == _NORMAL]
            puts = commands.put_run(datas) if len(datas) == len(run) else None
            if puts is not None:  # what clients send most: puts to one bucket
                try:
                    if puts.rows[0][1] is None:
                        results[start:] = self._commit_plain_puts(puts, run[-1])
                    else:
                        put, again = self._commit_puts(puts, run[0].index, run[-1])
                        results[start:] = put
                        self.repeated = [run[pos].index for pos in again]
                    return results
                except NoSpaceError as err:
                    if err.details.get("disk_full"):
                        raise
                    # the general path below applies the run entry by entry
        parse = commands.parse
        try:  # one comprehension: no per-entry Python statements when every command parses
            work: Work = [
                (pos, parse(e[3])) for pos, e in enumerate(run, start) if e[3] and e[2] == _NORMAL
            ]
        except CommandError:
            work = []
            for pos in range(start, n):
                _, _, etype, data = entries[pos]
                if data and etype == _NORMAL:
                    try:
                        work.append((pos, parse(data)))
                    except CommandError as err:
                        results[pos] = err
        repeats: list[int] = []
        try:
            offset = entries[start].index - start
            self._commit(work, entries[start].index, entries[-1], results, repeats, offset)
        except NoSpaceError as err:
            if err.details.get("disk_full"):
                raise
            repeats = []
            self._commit_one_by_one(work, entries, start, results, repeats)
        self.repeated = [entries[pos].index for pos in repeats]
        return results

    def prepare(self, entries: Sequence[Entry]) -> list[Any] | None:
        """``[result]``, the result ``apply`` will return, when ``entries``, one command
        entry that continues the applied index, were applied in a transaction left open for
        the next ``apply`` (see "Prepared" in the module docstring); None, with nothing
        prepared, for anything else (several entries, a gap, a no-op or conf change, an
        undecodable command) and when the command failed to apply for want of space or a
        damaged value (``apply`` meets the error again). A prepared entry not yet applied
        is rolled back first."""
        self._drop_prepared()
        if len(entries) != 1:
            return None
        e = entries[0]
        if e.index != self._index + 1 or not e.data or e.type != _NORMAL:
            return None
        try:
            cmd = commands.parse(e.data)
        except CommandError:
            return None
        run, clock = self._one(e, cmd)
        held = self.db.hold_fn(run)
        if held is None:
            return None
        tx, (res, oldest, repeat, noted) = held
        self._prepared = _Prepared(tx, e, clock, res, oldest, repeat, noted)
        return [res]

    def _commit_prepared(self, p: _Prepared) -> bool:
        """True after committing the prepared entry ``p`` (as ``_apply_one`` would have);
        False when its commit filled the map (rolled back: the caller applies it afresh).
        Raises NoSpaceError for a full disk (rolled back)."""
        if not self.db.end_held(p.tx, True):
            return False
        self._committed(p.entry, p.clock, p.oldest, p.noted)
        self.repeated = [p.entry.index] if p.repeat else []
        return True

    def _drop_prepared(self) -> None:
        """Rolls back the prepared entry, if any."""
        prepared = self._prepared
        if prepared is not None:
            self._prepared = None
            self.db.end_held(prepared.tx, False)

    def _apply_one(self, e: Entry, cmd: Parsed) -> Any:
        """Returns the result of ``cmd``, the command of entry ``e`` (the next to apply),
        after applying it in one transaction: ``_run``'s work for a run of one, without the
        run's bookkeeping. Raises NoSpaceError (nothing written)."""
        run, clock = self._one(e, cmd)
        res, oldest, repeat, noted = self.db.update_fn(run)
        self._committed(e, clock, oldest, noted)
        if repeat:
            self.repeated = [e.index]
        return res

    def _one(self, e: Entry, cmd: Parsed) -> tuple[Callable[[Tx], _OneDone], int]:
        """The transaction body that applies ``cmd``, the command of entry ``e`` (the next
        to apply), and the dedup clock after it."""
        _, cid, seq, ts, body = cmd
        clock = ts if ts is not None and ts > self._clock else self._clock
        record = APPLIED.pack(e.index, e.term, clock)

        report = self.report

        def run(tx: Tx) -> _OneDone:
            noted: Noted = None if report is None else []
            if cid is None:
                res = _execute_one(tx, body, noted, e.index)
                tx.put_state_record(record)
                return res, self._oldest_group, False, noted
            assert seq is not None  # parse() sets cid and seq together
            dedup = DedupRun(tx, self.dedup_window_ms, self._oldest_group)
            res = dedup.lookup(cid, seq, clock)
            repeat = res is not MISSING
            if not repeat:
                res = _execute_one(tx, body, noted, e.index)
                dedup.record(cid, seq, clock, res)
            tx.put_state_record(record)
            dedup.finish(e.index, clock)
            return res, dedup.oldest_group_ts, repeat, noted

        return run, clock

    def _commit(
        self,
        work: Work,
        first_index: int,
        last: Entry,
        results: list[Any],
        repeats: list[int],
        offset: int,
    ) -> None:
        """Applies ``work`` in one transaction (see ``_run``; ``offset``: an entry's index
        minus its position); adds the positions of its repeated commands to ``repeats``.
        Raises NoSpaceError (nothing written)."""
        report = self.report

        def run(tx: Tx) -> tuple[int, int | None, list[int], Noted]:
            if len(work) > 1:  # see the module docstring
                tx.lift_state_record()
            mine: list[int] = []  # per attempt: update_fn may run this again
            noted: Noted = None if report is None else []
            clock, oldest = self._run(tx, work, first_index, last, results, mine, noted, offset)
            return clock, oldest, mine, noted

        clock, oldest, mine, noted = self.db.update_fn(run)
        self._committed(last, clock, oldest, noted)
        repeats.extend(mine)

    def _committed(self, last: Entry, clock: int, oldest: int | None, noted: Noted = None) -> None:
        """Notes that a committed transaction applied everything up to ``last``, with the
        clock at ``clock`` and its oldest dedup group at ``oldest``, and reports the changes
        it ``noted``."""
        self._index, self._term, self._clock = last.index, last.term, clock
        self._oldest_group = oldest
        if noted and self.report is not None:
            self.report(noted)

    def _commit_plain_puts(self, puts: commands.PutRun, last: Entry) -> list[Any]:
        """Returns one result per put after applying the run ``puts`` of plain puts (none
        with a (cid, seq); the run ends with ``last``) in one transaction: the pairs in one
        ``put_many`` (every one gets the bucket's error when it cannot be opened). Raises
        NoSpaceError (nothing written)."""
        clock = max([self._clock, *[t[3] or 0 for t in puts.rows]])
        record = APPLIED.pack(last.index, last.term, clock)
        report = self.report
        first = last.index - len(puts.rows) + 1

        def run(tx: Tx) -> tuple[list[Any], Noted]:
            tx.lift_state_record()
            noted: Noted = None if report is None else []
            put = _put_pairs(tx, puts.path, puts.pairs, {}, noted, range(first, last.index + 1))
            tx.put_state_record(record)
            return put, noted

        put, noted = self.db.update_fn(run)
        self._committed(last, clock, self._oldest_group, noted)
        return put

    def _commit_puts(
        self, puts: commands.PutRun, first_index: int, last: Entry
    ) -> tuple[list[Any], list[int]]:
        """Returns one result per put, and the positions in the run of the repeated ones,
        after applying the run ``puts`` (entries
        ``first_index`` .. ``last``) in one transaction: when none of its (cid, seq) has a
        record yet or repeats, the pairs in one ``put_many`` (every one gets the bucket's
        error when it cannot be opened) and the records in one call; otherwise through
        ``_run``, each looked up on its own, in the same transaction. Raises NoSpaceError
        (nothing written)."""
        rows = puts.rows
        clocks = list(accumulate([t[3] or 0 for t in rows], max, initial=self._clock))[1:]
        clock = clocks[-1]
        ids = cast(list[tuple[bytes, int]], [(t[1], t[2]) for t in rows])  # all exactly-once

        report = self.report

        def run(tx: Tx) -> tuple[list[Any], int | None, list[int], Noted]:
            tx.lift_state_record()
            noted: Noted = None if report is None else []
            dedup = DedupRun(tx, self.dedup_window_ms, self._oldest_group)
            keys = dedup.unrecorded(ids, self._clock)
            if keys is None:  # a retry among them
                out: list[Any] = [None] * len(rows)
                repeats: list[int] = []
                work = list(enumerate(rows))
                oldest = self._run(tx, work, first_index, last, out, repeats, noted, first_index)[1]
                return out, oldest, repeats, noted
            indexes = range(first_index, last.index + 1)
            put = _put_pairs(tx, puts.path, puts.pairs, {}, noted, indexes)
            dedup.record_many(ids, keys, clocks, put)
            tx.put_state_record(APPLIED.pack(last.index, last.term, clock))
            dedup.finish(first_index, clock)
            return put, dedup.oldest_group_ts, [], noted

        put, oldest, repeats, noted = self.db.update_fn(run)
        self._committed(last, clock, oldest, noted)
        return put, repeats

    def _commit_one_by_one(
        self,
        work: Work,
        entries: Sequence[Entry],
        start: int,
        results: list[Any],
        repeats: list[int],
    ) -> None:
        by_pos = dict(work)
        for pos in range(start, len(entries)):
            e = entries[pos]
            if e.index <= self._index:
                continue  # committed before the run hit the quota
            parsed = by_pos.get(pos)
            one: Work = [] if parsed is None else [(pos, parsed)]
            try:
                self._commit(one, e.index, e, results, repeats, e.index - pos)
            except NoSpaceError as err:
                if err.details.get("disk_full"):
                    raise
                results[pos] = err
                ts = None if parsed is None else parsed[3]
                self._skip(e, self._clock if ts is None else max(self._clock, ts))

    def _skip(self, e: Entry, clock: int) -> None:
        """Advances the applied record past entry ``e`` (with the clock at ``clock``) in a
        transaction of its own, without applying ``e``. Raises NoSpaceError."""
        record = APPLIED.pack(e.index, e.term, clock)
        self.db.update_fn(lambda tx: tx.put_state_record(record))
        self._index, self._term, self._clock = e.index, e.term, clock

    def _run(
        self,
        tx: Tx,
        work: Work,
        first_index: int,
        last: Entry,
        results: list[Any],
        repeats: list[int],
        noted: Noted = None,
        offset: int = 0,
    ) -> tuple[int, int | None]:
        """Returns ``(clock, oldest dedup group ts)`` after applying ``work`` in ``tx`` and
        writing the applied record (its caller lifted it, or not: see the module docstring);
        fills ``results``, adds the positions of the repeated commands to ``repeats`` and
        the changes to ``noted`` (an entry's index: its position + ``offset``).
        Raises NoSpaceError (which ``update_fn`` handles by growing the map and running this
        again)."""
        clock = self._clock
        cache: BucketCache = {}
        dedup: DedupRun | None = None  # made by the run's first command with a (cid, seq)
        path: tuple[bytes, ...] | None = None  # the previous exactly-once put's bucket ...
        b: Any = None  # ... and that Bucket
        n = len(work)
        k = 0
        while k < n:
            pos, (_, cid, seq, ts, body) = work[k]
            k += 1
            if ts is not None and ts > clock:
                clock = ts
            if cid is None and body[0] == PUT:
                # a run of plain puts to one bucket without (cid, seq): ONE put_many
                where = body[1]
                positions = [pos]
                pairs = [(body[2], body[3])]
                while k < n:
                    p2, (_, c2, _, t2, b2) = work[k]
                    if c2 is not None or b2[0] != PUT or b2[1] != where:
                        break
                    if t2 is not None and t2 > clock:
                        clock = t2
                    positions.append(p2)
                    pairs.append((b2[2], b2[3]))
                    k += 1
                path = None
                put = _put_pairs(tx, where, pairs, cache, noted, [p + offset for p in positions])
                for p2, r in zip(positions, put, strict=True):
                    results[p2] = r
                continue
            if cid is None:  # not a put: those went into a run of plain puts above
                path = None  # the command may delete or roll back buckets
                results[pos] = _execute(tx, body, cache, noted, pos + offset)
                continue
            assert seq is not None  # parse() sets cid and seq together
            if dedup is None:
                dedup = DedupRun(tx, self.dedup_window_ms, self._oldest_group)
            res = dedup.lookup(cid, seq, clock)
            if res is MISSING:
                if body[0] == PUT:  # the hot path: exactly-once puts, mostly to one bucket
                    try:
                        if body[1] != path:
                            path = None
                            b = _get_bucket(tx, body[1], cache)
                            path = body[1]
                        if noted is None:
                            b.put(body[2], body[3])
                        else:
                            prev = b.replace(body[2], body[3])
                            noted.append((pos + offset, 0, _PUT, body[1], body[2], body[3], prev))
                        res = None
                    except NoSpaceError:
                        raise
                    except BoltraftError as err:
                        res = err
                else:
                    path = None  # the command may delete or roll back buckets
                    res = _execute(tx, body, cache, noted, pos + offset)
                dedup.record(cid, seq, clock, res)
            else:
                repeats.append(pos)
            results[pos] = res
        tx.put_state_record(APPLIED.pack(last.index, last.term, clock))
        if dedup is None:  # no new records: the clean-up waits for a run that adds some
            return clock, self._oldest_group
        dedup.finish(first_index, clock)
        return clock, dedup.oldest_group_ts


def _execute(tx: Tx, body: Body, cache: BucketCache, noted: Noted, index: int) -> Any:
    """Returns the result of one non-put command (of entry ``index``), or its error
    instance; adds its changes to ``noted`` (a failed batch: none). Raises NoSpaceError."""
    try:
        if body[0] != BATCH:
            return _op(tx, body, cache, noted, index, 0)
        mark = 0 if noted is None else len(noted)
        try:
            with tx.savepoint():
                out = []
                for i, sub in enumerate(body[1]):
                    try:
                        out.append(_op(tx, sub, cache, noted, index, i))
                    except BoltraftError as err:
                        err.details.setdefault("index", i)
                        raise
                return out
        except BoltraftError:
            cache.clear()  # buckets first seen inside the savepoint are gone
            if noted is not None:
                del noted[mark:]  # the batch's writes were undone
            raise
    except (NoSpaceError, CorruptionError):
        raise
    except BoltraftError as err:
        return err


def _execute_one(tx: Tx, body: Body, noted: Noted, index: int) -> Any:
    """Returns the result of one command's ``body`` (entry ``index``), or its error
    instance; adds its changes to ``noted``. Raises NoSpaceError."""
    if body[0] != PUT:
        return _execute(tx, body, {}, noted, index)
    return _put_pairs(tx, body[1], [(body[2], body[3])], {}, noted, (index,))[0]


def _put_pairs(
    tx: Tx,
    path: tuple[bytes, ...],
    pairs: list[tuple[bytes, bytes]],
    cache: BucketCache,
    noted: Noted = None,
    indexes: Sequence[int] = (),
) -> list[Any]:
    """Returns ``Bucket.put_many``'s results for ``pairs`` in the bucket ``path``, or the
    bucket's error for every pair when it cannot be opened; adds a change for each pair
    written to ``noted`` (``indexes``: each pair's entry index). Raises NoSpaceError."""
    try:
        b = _get_bucket(tx, path, cache)
        if noted is not None:
            out, prevs = b.replace_many(pairs)
            for (k, v), err, prev, index in zip(pairs, out, prevs, indexes, strict=True):
                if err is None:
                    noted.append((index, 0, _PUT, path, k, v, prev))
            return out
        if len(pairs) == 1:  # one put: no cursor, no comprehension
            b.put(*pairs[0])
            return [None]
        return b.put_many(pairs)
    except NoSpaceError:
        raise
    except BoltraftError as err:
        return [err] * len(pairs)


def _get_bucket(tx: Tx, path: tuple[bytes, ...], cache: BucketCache) -> Bucket:
    b = cache.get(path)
    if b is None:
        b = cache[path] = tx.bucket(path)
    return b


def _exists(tx: Tx, path: tuple[bytes, ...]) -> bool:
    try:
        tx.bucket(path)
    except BoltraftError:
        return False
    return True


def _op(tx: Tx, body: Body, cache: BucketCache, noted: Noted, index: int, pos: int) -> Any:
    """Returns the result of one non-batch op (at ``pos`` of entry ``index``) and adds its
    change to ``noted``. Raises the engine's typed errors; a failing op writes nothing (the
    engine's guarantee)."""
    code = body[0]
    if code == commands.KEYS:
        tx.meta_put(KEYS_PREFIX + body[1], pack(body[2:]))
        return commands.KEYS_SET
    path = body[1]
    if code == CREATE_BUCKET:
        if body[2]:
            existed = noted is not None and _exists(tx, path)
            tx.create_bucket_if_not_exists(path)
        else:
            existed = False
            tx.create_bucket(path)
        if noted is not None and not existed:
            noted.append((index, pos, _CREATE_BUCKET, path, None, None, None))
        return None
    if code == DELETE_BUCKET:
        tx.delete_bucket(path)
        cache.clear()
        if noted is not None:
            noted.append((index, pos, _DELETE_BUCKET, path, None, None, None))
        return None
    b = _get_bucket(tx, path, cache)
    if code == PUT:
        if noted is None:
            return b.put(body[2], body[3])
        prev = b.replace(body[2], body[3])
        noted.append((index, pos, _PUT, path, body[2], body[3], prev))
        return None
    if code == PUT_IF:
        b.put_if(body[2], body[3], body[4])
        if noted is not None:
            noted.append((index, pos, _PUT, path, body[2], body[3], body[4]))
        return None
    if code == DELETE:
        if noted is None:
            return b.delete(body[2])
        prev = b.pop(body[2])
        if prev is None:
            return False
        noted.append((index, pos, _DELETE, path, body[2], None, prev))
        return True
    if code == NEXT_SEQUENCE:
        return b.next_sequence()
    b.delete_if(body[2], body[3])  # DELETE_IF: parse() admits no other opcode here
    if noted is not None:
        noted.append((index, pos, _DELETE, path, body[2], None, body[3]))
    return True
