"""The exactly-once table of the state machine: (client id, seq) -> the original result.

Everything lives in the engine's meta keyspace and is written in the SAME write transaction
as the commands it describes, so it is exactly as durable as the data and travels in every
snapshot.

Keys (``cid`` is at most 128 bytes, so every key stays far below LMDB's 511-byte limit)::

    RECORD_PREFIX + seq(u64 BE) + cid  ->  ts(u64 BE) + msgpack([ok, payload])
    GROUP_PREFIX + max_ts(u64 BE) + first_index(u64 BE)  ->  msgpack([[cid, seq], ...])
    SESSION_PREFIX + cid  ->  seq(u64 BE) + ts(u64 BE)
    SINDEX_PREFIX + bucket start(u64 BE) + cid  ->  b""

Records sort by seq first: clients that write at similar rates have similar seqs, so the
records one apply run writes land on a few B-tree pages instead of one page per client
(fewer pages copied and written per commit). That is store format ``boltraft-4``; a store
created as ``boltraft-3`` keeps its records keyed ``len(cid) + cid + seq`` (client first),
and is served in that layout (``record_key_cid_first``).

A record holds the result of the command's first application (``[0, result]`` or
``[1, error.to_wire()]``) and the time ``ts`` it was applied at: the state machine's clock at
that entry (so a command stamped by a leader whose clock lags is never born expired).

EXPIRY, deterministically. The state machine's clock is the largest "ts" applied so far
(stored with the applied index). A record is LIVE while ``clock <= ts + window`` and expired
after; the window defaults to 10 minutes (``DEFAULT_WINDOW_MS``). Expiry is LOGICAL: a lookup
checks the record's own ts against the clock at that very entry, so every replica answers a
retry the same way whatever its apply batching, restarts or snapshot history. Deleting
expired records is PHYSICAL clean-up only: each apply run writes one GROUP entry listing the
records it wrote, keyed by their largest ts, so the groups are a ts-ordered index and
clean-up is a short range walk from the front (a bounded number of groups per run).
The table therefore holds the commands of about one window (plus what one clean-up pass
leaves), whatever the number of clients.

SESSIONS. A retry whose record expired is never applied again: it is answered with
``SessionExpiredError`` (the Raft dissertation's rule for expired client sessions, section
6.3). The record itself tells while it is stored (logically expired, not yet cleaned up);
after clean-up the client's SESSION does: the highest seq of the client applied so far and
the ts of that apply (``SESSION_PREFIX + cid -> seq(u64 BE) + ts(u64 BE)``), written in the
transaction of the run that applied it. A (cid, seq) without a record and at or below its
client's highest seq is refused with ``session_expired`` too, so a client's seqs must be
applied in increasing order (one call at a time, or pipelined on one connection, as the
client library does). A session is kept ``SESSION_MS`` (a day) after its newest record
expired (again a logical rule, read against the clock); a retry later than that is a new
command. A stored record counts for ``SESSION_MS`` after it expired and no longer: an older
one may or may not have been cleaned up yet (clean-up is bounded per run, and replicas
batch their applies differently), so a lookup treats it as gone. Within that day the
record's session lasts too (its ts is at least the record's) and refuses the pair
whether or not the record is still there, so every replica answers alike; and a client
that came back after its session expired, and reuses seqs, starts a new session that its
old records do not touch.

The SESSION INDEX lets clean-up find the sessions to delete: ONE key per session,
``SINDEX_PREFIX + minute(u64 BE) + cid`` (empty value), where minute is the start of the
``SESSION_BUCKET_MS`` bucket holding the session's ts. A run that moves a session into
another bucket moves its key (a client writing all day moves it once a minute; within a
bucket nothing is written), so the index holds as many keys as there are sessions, however
many runs applied their writes. Older stores may also hold SGROUP entries
(``SGROUP_PREFIX + max_ts(u64 BE) + first_index(u64 BE) -> msgpack([cid, ...])``, one per
run); clean-up deletes them, and the expired sessions they list, once they are a day old.
Everything here depends only on the log (seqs, ts, the clock), never on when clean-up ran,
so every replica answers every retry the same way.

A client must not reuse a (cid, seq) for a different command inside the window: the retry
rule is "same command, same pair", and a reused pair answers with the first result.
"""

from __future__ import annotations

import struct
from typing import Any

import lmdb
import msgpack

from boltraft.errors import BoltraftError, SessionExpiredError
from boltraft.packing import pack
from boltraft.storage.layout import FORMAT_CID_FIRST

DEFAULT_WINDOW_MS = 10 * 60 * 1000
RECORD_PREFIX = b"sm.d"
GROUP_PREFIX = b"sm.g"
SESSION_PREFIX = b"sm.s"
SGROUP_PREFIX = b"sm.t"
SINDEX_PREFIX = b"sm.i"
SESSION_MS = 24 * 60 * 60 * 1000
SESSION_BUCKET_MS = 60 * 1000  # the session index's granularity
GC_GROUPS_PER_RUN = 256  # clean-up work per apply run is bounded by this many groups

_U64 = struct.Struct(">Q")
_GROUP_KEY = struct.Struct(">QQ")
_SESSION = struct.Struct(">QQ")  # (highest seq applied, ts of that apply)
NO_GROUPS = 1 << 64
"""The oldest group's ts when there is no group at all (later than any ts)."""
MISSING = object()
"""``lookup`` returns this when the pair has no live record."""


def record_key(cid: bytes, seq: int) -> bytes:
    """Returns the meta key of the record for ``(cid, seq)`` (cid: 1..128 bytes; the seq
    has a fixed width, so the key is unique)."""
    return RECORD_PREFIX + _U64.pack(seq) + cid


def session_bucket(ts: int) -> int:
    """Returns the start of the session index bucket holding ``ts``."""
    return ts - ts % SESSION_BUCKET_MS


def session_index_key(cid: bytes, ts: int) -> bytes:
    """Returns the session index key of ``cid``'s session applied at ``ts``: the start of
    ts's bucket, then the cid."""
    return SINDEX_PREFIX + _U64.pack(session_bucket(ts)) + cid


def record_key_cid_first(cid: bytes, seq: int) -> bytes:
    """Returns the record key of ``(cid, seq)`` in a ``boltraft-3`` store (cid: 1..255
    bytes)."""
    return RECORD_PREFIX + bytes((len(cid),)) + cid + _U64.pack(seq)


_OK_NONE = msgpack.packb((0, None))


def encode_result(result: Any) -> bytes:
    """Returns the stored form of a command result (a value, a list, or a BoltraftError).

    An error whose details msgpack cannot encode is stored with each such detail as its
    ``repr`` (deterministic, so every replica stores the same bytes).
    """
    if result is None:
        return _OK_NONE
    if isinstance(result, BoltraftError):
        wire = result.to_wire()
        try:
            return pack((1, wire))
        except (TypeError, ValueError, OverflowError):
            details = {}
            for k, v in wire["details"].items():
                try:
                    pack(v)
                    details[k] = v
                except (TypeError, ValueError, OverflowError):
                    details[k] = repr(v)
            return pack((1, {**wire, "details": details}))
    return pack((0, result))


def decode_result(data: bytes) -> Any:
    """Returns the result ``encode_result`` stored: errors come back as BoltraftError
    instances of the same class (by code), values as msgpack gives them (lists for arrays)."""
    ok, payload = msgpack.unpackb(data, raw=False)
    if ok:
        return BoltraftError.from_wire(payload)
    return payload


class DedupRun:
    """The dedup work of one apply run (one write transaction): lookups, new records, one
    group entry, and bounded clean-up. Build a fresh one for every attempt of a transaction.
    """

    __slots__ = (
        "_key",
        "_key_of",
        "_max_ts",
        "_meta",
        "_pairs",
        "_sessions",
        "_stored",
        "_tx",
        "oldest_group_ts",
        "window_ms",
    )

    def __init__(self, tx: Any, window_ms: int, oldest_group_ts: int | None) -> None:
        self._tx = tx
        self._meta = tx._dbs.meta  # the records are ours: built here, never user input
        cid_first = tx._dbs.format == FORMAT_CID_FIRST
        self._key_of = record_key_cid_first if cid_first else record_key
        self.window_ms = window_ms
        self._pairs: list[tuple[bytes, int]] = []
        self._sessions: dict[bytes, tuple[int, int]] = {}  # cid -> (seq, ts) applied here
        # cid -> its stored session as read before this run wrote any (None: it has none)
        self._stored: dict[bytes, bytes | None] = {}
        self._max_ts = -1
        self._key: tuple[bytes, int, bytes] | None = None  # (cid, seq, key) of the last lookup
        # A lower bound of the oldest group's max ts (None = unknown: clean-up looks;
        # NO_GROUPS = none). After ``finish`` it is the value to keep if the transaction
        # commits. Invariant: never above the true value, so clean-up is never skipped.
        self.oldest_group_ts = oldest_group_ts

    def lookup(self, cid: bytes, seq: int, clock: int) -> Any:
        """The original result of ``(cid, seq)`` if its record is live at ``clock``; a
        SessionExpiredError when its record expired less than ``SESSION_MS`` ago, or when it
        has no such record and its client already applied a seq at least as high (see
        SESSIONS); else MISSING (a new command)."""
        key = self._key_of(cid, seq)
        self._key = (cid, seq, key)
        raw = self._tx._txn.get(key, db=self._meta)  # the txn of the moment (savepoints)
        if raw is not None:
            ts = _U64.unpack_from(raw)[0]
            if clock <= ts + self.window_ms:
                return decode_result(raw[8:])
            if clock <= ts + self.window_ms + SESSION_MS:
                return expired_error(cid, seq)
            # older: it counts no more, as where clean-up removed it (see SESSIONS)
        if seq <= self._highest(cid, clock):
            return expired_error(cid, seq)
        return MISSING

    def _highest(self, cid: bytes, clock: int) -> int:
        """The highest seq ``cid`` applied (this run included) while its session lasts at
        ``clock``; -1 when it has none (seqs start at 0)."""
        mine = self._sessions.get(cid)
        if mine is not None:
            return mine[0]
        raw = self._tx._txn.get(SESSION_PREFIX + cid, db=self._meta)
        self._stored[cid] = raw  # sessions are written only by finish: it stays valid
        if raw is None:
            return -1
        seq, ts = _SESSION.unpack(raw)
        return seq if clock <= ts + self.window_ms + SESSION_MS else -1

    def record(self, cid: bytes, seq: int, ts: int, result: Any) -> None:
        """Stores ``result`` as the outcome of ``(cid, seq)`` at ``ts``."""
        last = self._key
        key = last[2] if last is not None and last[0] == cid and last[1] == seq else None
        tx = self._tx
        if key is None or tx._state:  # a doomed txn: let meta_put raise its refusal
            tx.meta_put(self._key_of(cid, seq), _U64.pack(ts) + encode_result(result))
        else:
            try:
                tx._txn.put(key, _U64.pack(ts) + encode_result(result), db=self._meta)
            except lmdb.MapFullError:
                raise tx._doom() from None
        self._pairs.append((cid, seq))
        if ts > self._max_ts:
            self._max_ts = ts
        if seq > self._sessions.get(cid, (-1, 0))[0]:
            self._sessions[cid] = (seq, ts)

    def unrecorded(self, ids: list[tuple[bytes, int]], clock: int) -> list[bytes] | None:
        """The record keys of ``ids`` (pairs (cid, seq)) when none of them has a record,
        live or expired, none repeats, each client's seqs rise in the order of ``ids``,
        and each is above its client's highest seq at ``clock`` (the clock before the run);
        None otherwise (then each needs its own ``lookup``)."""
        key_of = self._key_of
        keys = [key_of(cid, seq) for cid, seq in ids]
        if len(set(keys)) != len(keys):
            return None
        get, meta = self._tx._txn.get, self._meta
        if [k for k in keys if get(k, db=meta) is not None]:
            return None
        first: dict[bytes, int] = {}  # cid -> its first seq in ids
        last: dict[bytes, int] = {}
        for cid, seq in ids:
            if cid not in last:
                first[cid] = seq
            elif seq <= last[cid]:
                return None  # out of order: a lookup refuses the later lower seq
            last[cid] = seq
        if any(seq <= self._highest(cid, clock) for cid, seq in first.items()):
            return None
        return keys

    def record_many(
        self, ids: list[tuple[bytes, int]], keys: list[bytes], ts: list[int], results: list[Any]
    ) -> None:
        """Stores ``results[i]`` as the outcome of ``ids[i]`` at ``ts[i]`` (non-decreasing)
        under ``keys[i]`` (from ``unrecorded``): what ``record`` does for each, in one LMDB
        call. Raises TxClosedError, NoSpaceError(retry=True)."""
        tx = self._tx
        tx._check(True)
        pack_ts = _U64.pack
        items = [
            (k, pack_ts(t) + encode_result(r)) for k, t, r in zip(keys, ts, results, strict=True)
        ]
        try:
            tx._txn.cursor(db=self._meta).putmulti(items)
        except lmdb.MapFullError:
            raise tx._doom() from None
        self._pairs.extend(ids)
        if ts[-1] > self._max_ts:
            self._max_ts = ts[-1]
        sessions = self._sessions
        for (cid, seq), t in zip(ids, ts, strict=True):
            if seq > sessions.get(cid, (-1, 0))[0]:
                sessions[cid] = (seq, t)

    def finish(self, first_index: int, clock: int) -> None:
        """Writes this run's group entry and cleans up expired groups.

        ``first_index`` is the log index of the run's first entry (it makes the group key
        unique); ``clock`` is the clock after the run.
        """
        if self._pairs:
            key = GROUP_PREFIX + _GROUP_KEY.pack(self._max_ts, first_index)
            self._tx.meta_put(key, pack(self._pairs))
            self._write_sessions()
        expired_before = clock - self.window_ms  # a record with ts < this is expired
        oldest = self.oldest_group_ts
        if oldest is None or oldest < expired_before:
            oldest = self._clean(expired_before)
            self._clean_session_index(expired_before - SESSION_MS)
            self._clean_sessions(expired_before - SESSION_MS)
        if self._pairs and self._max_ts < oldest:
            oldest = self._max_ts
        self.oldest_group_ts = oldest

    def _write_sessions(self) -> None:
        """Stores the sessions this run moved on, and moves the session index key of each
        one whose bucket changed, in one LMDB call for the puts (the keys are built here from
        checked cids). Raises TxClosedError, NoSpaceError(retry=True)."""
        tx = self._tx
        txn, meta, stored = tx._txn, self._meta, self._stored
        puts: list[tuple[bytes, bytes]] = []
        gone: list[bytes] = []  # index keys of sessions that moved to another bucket
        for cid, (seq, ts) in self._sessions.items():
            key = SESSION_PREFIX + cid
            raw = stored[cid] if cid in stored else txn.get(key, db=meta)
            if raw is None:
                puts.append((key, _SESSION.pack(seq, ts)))
                puts.append((session_index_key(cid, ts), b""))
                continue
            old_seq, old_ts = _SESSION.unpack(raw)
            if old_seq < seq:
                puts.append((key, _SESSION.pack(seq, ts)))
                if session_bucket(old_ts) != session_bucket(ts):
                    gone.append(session_index_key(cid, old_ts))
                    puts.append((session_index_key(cid, ts), b""))
        tx._check(True)
        try:
            for key in gone:
                txn.delete(key, db=meta)
            if puts:
                txn.cursor(db=meta).putmulti(puts)
        except lmdb.MapFullError:
            raise tx._doom() from None

    def _clean_session_index(self, before: int) -> None:
        """Deletes the sessions whose newest apply is older than ``before``, and their index
        keys, looking at up to GC_GROUPS_PER_RUN keys of buckets that start before it."""
        tx = self._tx
        cur = tx._txn.cursor(db=self._meta)
        due: list[bytes] = []
        if cur.set_range(SINDEX_PREFIX):
            start = len(SINDEX_PREFIX)
            for key in cur.iternext(values=False):
                if (
                    not key.startswith(SINDEX_PREFIX)
                    or _U64.unpack_from(key, start)[0] >= before
                    or len(due) >= GC_GROUPS_PER_RUN
                ):
                    break
                due.append(key)
        for key in due:
            skey = SESSION_PREFIX + key[len(SINDEX_PREFIX) + 8 :]
            raw = tx.meta_get(skey)
            if raw is None or _SESSION.unpack(raw)[1] < before:  # else: later in its bucket
                if raw is not None:
                    tx.meta_delete(skey)
                tx.meta_delete(key)

    def _clean_sessions(self, before: int) -> None:
        """Deletes up to GC_GROUPS_PER_RUN SGROUP entries older than ``before`` and the
        sessions they list whose newest apply is older too (the others moved on since)."""
        tx = self._tx
        due = []
        for key, value in tx.meta_scan(SGROUP_PREFIX, limit=GC_GROUPS_PER_RUN):
            if _GROUP_KEY.unpack_from(key, len(SGROUP_PREFIX))[0] >= before:
                break
            due.append((key, value))
        for key, value in due:
            for cid in msgpack.unpackb(value, raw=False):
                skey = SESSION_PREFIX + cid
                raw = tx.meta_get(skey)
                if raw is not None and _SESSION.unpack(raw)[1] < before:
                    tx.meta_delete(skey)
            tx.meta_delete(key)

    def _clean(self, expired_before: int) -> int:
        """Returns the max ts of the oldest group left (NO_GROUPS: none) after deleting up to
        GC_GROUPS_PER_RUN fully expired groups and their expired records."""
        tx = self._tx
        due: list[tuple[bytes, bytes]] = []
        oldest = NO_GROUPS
        for key, value in tx.meta_scan(GROUP_PREFIX, limit=GC_GROUPS_PER_RUN + 1):
            max_ts = _GROUP_KEY.unpack_from(key, len(GROUP_PREFIX))[0]
            if max_ts >= expired_before or len(due) >= GC_GROUPS_PER_RUN:
                oldest = max_ts
                break
            due.append((key, value))
        for key, value in due:
            for cid, seq in msgpack.unpackb(value, raw=False):
                rkey = self._key_of(cid, seq)
                raw = tx.meta_get(rkey)
                if raw is not None and _U64.unpack_from(raw)[0] < expired_before:
                    tx.meta_delete(rkey)
            tx.meta_delete(key)
        return oldest


def expired_error(cid: bytes, seq: int) -> SessionExpiredError:
    """The answer to a retry of ``(cid, seq)`` whose result is gone."""
    return SessionExpiredError(
        f"write {seq} of client {cid.hex()} was applied too long ago to answer its retry "
        "(or a later write of that client was); it was not applied again",
        cid=cid.hex(),
        seq=seq,
    )
