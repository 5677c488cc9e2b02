"""An in-memory twin of ``boltraft.storage.fsm.BucketStateMachine``: the ``StateMachine``
seam of ``boltraft.server.ports`` with no LMDB, for unit tests of the node loop.

``MemStateMachine()`` starts empty; ``MemStateMachine.from_snapshot(path)`` opens the state a
``snapshot`` call wrote (what a node reopens after installing a snapshot).
``tests/test_sm_conformance.py`` runs one suite against both implementations.

What it copies from the real one:

- Commands are decoded and validated by ``boltraft.storage.commands.parse``, so an
  undecodable entry gets the same CommandError.
- The engine's checks, in the engine's order, with its error classes and details: bucket
  names (InvalidBucketNameError), missing buckets (BucketNotFoundError with the first
  missing prefix as ``path``), keys (KeyRequiredError, KeyTooLargeError), values
  (ValueTooLargeError), keys that name a nested bucket and buckets named like a key
  (IncompatibleValueError), conditions (ConditionFailedError with ``current``).
  Bucket ids are handed out as the engine does (1, 2, ...; never reused), because a
  bucket's key limit is LMDB's 511 bytes minus its key prefix, which grows with the id.
- A batch is atomic (an undo journal plays the savepoint); its error carries
  ``details["index"]``. A command other than a batch is not wrapped: like the engine,
  ``create_bucket`` with ``if_not_exists`` keeps the ancestors it created before a name
  that does not fit.
- Exactly-once by (cid, seq): a live record answers with the stored first result, round
  tripped through ``boltraft.storage.dedup.encode_result``/``decode_result`` as the real
  table stores it. The clock is the largest leader-stamped ``ts`` applied so far; a record
  lives while ``clock <= its ts + dedup_window_ms``.
- With a ``report`` hook, ``apply`` hands it the changes it made
  (``boltraft.storage.changes``), all of one ``apply`` in one call: the real one calls it
  once per transaction, which for a run that fits is once per ``apply`` too.
- ``apply`` skips the leading entries at or below the applied index and raises
  InvalidArgumentError (``index``, ``expected``) for a gap or disorder, applying nothing.
  Non-NORMAL entries and empty data (the leader's no-op) only advance the applied index.
- ``read`` validates with ``boltraft.storage.queries.validate_read`` and answers with the
  same shapes as ``execute_reads`` (get: bytes | None, scan: {"items", "next", "index"}, buckets:
  names, count: int), each failure in its place.

What it leaves out: the quota and a full disk (it never raises NoSpaceError), durability
(``sync`` is a no-op; snapshot files are not fsynced) and the ``rate`` of ``snapshot``.
After ``close`` it refuses ``snapshot`` too (TxClosedError); the real one still copies
its files then.

A snapshot is ``parent/<index:020d>-<term>/data.mdb`` holding the state as msgpack (not an
LMDB file: only ``from_snapshot`` reads it), with ``snapshot.json`` beside it, so
``boltraft.server.snapshots.SnapshotStore`` lists it like a real one.

Thread safety: one lock around every method, so ``read`` and ``snapshot`` may run on other
threads beside ``apply`` (the Protocol's rule).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgpack

from boltraft.errors import (
    BoltraftError,
    BucketExistsError,
    BucketNotFoundError,
    ChecksumMismatchError,
    CommandError,
    ConditionFailedError,
    IncompatibleValueError,
    InvalidArgumentError,
    InvalidBucketNameError,
    KeyRequiredError,
    KeyTooLargeError,
    SnapshotError,
    TxClosedError,
    ValueTooLargeError,
)
from boltraft.packing import pack
from boltraft.raft.types import Entry, EntryType
from boltraft.storage import commands
from boltraft.storage.changes import Change, Report
from boltraft.storage.commands import (
    BATCH,
    CREATE_BUCKET,
    DELETE,
    DELETE_BUCKET,
    DELETE_IF,
    NEXT_SEQUENCE,
    PUT,
    PUT_IF,
    Body,
)
from boltraft.storage.dedup import (
    DEFAULT_WINDOW_MS,
    SESSION_MS,
    decode_result,
    encode_result,
    expired_error,
)
from boltraft.storage.keys import (
    PATH_SEP,
    decode_token,
    encode_token,
    prefix_end,
    show_path,
)
from boltraft.storage.queries import validate_read
from boltraft.storage.snapshot import DATA_FILE, META_FILE, SnapshotInfo, load_snapshot_info

LMDB_MAX_KEY = 511  # lmdb's max_key_size() for the builds boltraft runs on
DEFAULT_MAX_VALUE = 1 << 20  # DB.open's default max_value_size
SNAPSHOT_FORMAT = "boltraft-memsm-1"
_NORMAL = int(EntryType.NORMAL)
_ABSENT = object()

Names = tuple[bytes, ...]
DedupKey = tuple[bytes, int]


def _prefix_len(bucket_id: int) -> int:
    """Returns the length of the engine's key prefix of a bucket id (``keys.bucket_prefix``:
    a length byte, then the id in 1..8 big-endian bytes); the root (id 0) has 2 bytes."""
    return 1 + ((bucket_id.bit_length() + 7) // 8 or 1)


class _Bucket:
    """One bucket: its id, its sequence, its keys and its nested buckets (by name)."""

    __slots__ = ("children", "id", "keys", "seq")

    def __init__(self, bucket_id: int, seq: int = 0) -> None:
        self.id = bucket_id
        self.seq = seq
        self.keys: dict[bytes, bytes] = {}
        self.children: dict[bytes, _Bucket] = {}


class MemStateMachine:
    """The bucket store as a replicated state machine, in memory (see the module docstring).

    ``dedup_window_ms`` as in BucketStateMachine; ``max_value_size`` as in ``DB.open``;
    ``max_key_size`` stands for LMDB's key limit.
    """

    def __init__(
        self,
        *,
        dedup_window_ms: int = DEFAULT_WINDOW_MS,
        max_value_size: int = DEFAULT_MAX_VALUE,
        max_key_size: int = LMDB_MAX_KEY,
    ) -> None:
        """Returns an empty state (applied (0, 0)). Raises InvalidArgumentError for a
        negative window or a non-positive size."""
        if type(dedup_window_ms) is not int or dedup_window_ms < 0:
            raise InvalidArgumentError(
                "dedup_window_ms must be a non-negative integer", argument="dedup_window_ms"
            )
        for name, val in (("max_value_size", max_value_size), ("max_key_size", max_key_size)):
            if type(val) is not int or val <= 0:
                raise InvalidArgumentError(f"{name} must be a positive int, not {val!r}")
        self.dedup_window_ms = dedup_window_ms
        self.max_value_size = max_value_size
        self.max_key_size = max_key_size
        self._root = _Bucket(0)
        self._next_id = 1
        self._index = 0
        self._term = 0
        self._clock = 0
        # (cid, seq) -> (ts, stored result); insertion order is ts order (expired ones are
        # dropped from the front; a lookup checks expiry itself, so that is only clean-up)
        self._dedup: dict[DedupKey, tuple[int, bytes]] = {}
        # cid -> (highest seq applied, its ts): a pair without record at or below it is a
        # retry whose result is gone (``session_expired``), while the session lasts
        self._sessions: dict[bytes, tuple[int, int]] = {}
        self._undo: list[Callable[[], None]] = []
        self.repeated: list[int] = []  # as BucketStateMachine.repeated
        self.report: Report | None = None  # as BucketStateMachine.report
        self._keys: dict[str, tuple[str, str, str]] = {}  # the allow-list (not in snapshots)
        self._closed = False
        self._lock = threading.RLock()

    # --- the Protocol ------------------------------------------------------------------------
    @property
    def applied(self) -> tuple[int, int]:
        """Returns ``(index, term)`` of the last applied entry ((0, 0) for a new state)."""
        return self._index, self._term

    @property
    def clock_ms(self) -> int:
        """Returns the dedup clock: the largest "ts" applied so far (0 before any)."""
        return self._clock

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Closes the state machine (idempotent); ``applied`` stays readable."""
        self._closed = True

    def key_records(self) -> dict[str, tuple[str, str, str]]:
        """The allow-list entries applied ``keys`` commands left (see the Protocol)."""
        return dict(self._keys)

    def sync(self) -> None:
        """Nothing to make durable. Raises TxClosedError once closed (like the real one)."""
        self._check_open()

    def __enter__(self) -> MemStateMachine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def apply(self, entries: Sequence[Entry]) -> list[Any]:
        """Returns one result per entry (see BucketStateMachine.apply) after applying the
        entries past the applied index, all or nothing.

        Raises InvalidArgumentError for a gap or disorder (nothing applied), TxClosedError
        once closed (unless every entry is already applied).
        """
        with self._lock:
            n = len(entries)
            results: list[Any] = [None] * n
            self.repeated = []
            repeated: list[int] = []
            start = 0
            while start < n and entries[start].index <= self._index:
                start += 1
            if start == n:
                return results
            expect = self._index + 1
            for pos in range(start, n):
                index = entries[pos].index
                if index != expect:
                    raise InvalidArgumentError(
                        f"entry index {index} does not follow {expect - 1}",
                        index=index,
                        expected=expect,
                    )
                expect += 1
            self._check_open()
            clock = self._clock
            self._undo = []
            noted: list[Change] | None = None if self.report is None else []
            try:
                for pos in range(start, n):
                    _, _, etype, data = entries[pos]
                    if not data or etype != _NORMAL:
                        continue
                    try:
                        _, cid, seq, ts, body = commands.parse(data)
                    except CommandError as err:
                        results[pos] = err
                        continue
                    if ts is not None and ts > clock:
                        clock = ts
                    index = entries[pos].index
                    if cid is None or seq is None:
                        results[pos] = self._execute(body, noted, index)
                        continue
                    record = self._dedup.get((cid, seq))
                    if record is not None and clock <= record[0] + self.dedup_window_ms:
                        results[pos] = decode_result(record[1])
                        repeated.append(entries[pos].index)
                        continue
                    # an expired record counts for SESSION_MS, as its session does
                    recent = (
                        record is not None
                        and clock <= record[0] + self.dedup_window_ms + SESSION_MS
                    )
                    session = self._sessions.get(cid)
                    if recent or (
                        session is not None
                        and seq <= session[0]
                        and clock <= session[1] + self.dedup_window_ms + SESSION_MS
                    ):
                        results[pos] = expired_error(cid, seq)
                        repeated.append(entries[pos].index)
                        continue
                    res = self._execute(body, noted, index)
                    self._record((cid, seq), clock, encode_result(res))
                    results[pos] = res
            except BaseException:
                self._rollback(0)
                raise
            finally:
                self._undo = []
            last = entries[-1]
            self._index, self._term, self._clock = last.index, last.term, clock
            self.repeated = repeated
            self._forget_expired()
            if noted and self.report is not None:
                self.report(noted)
            return results

    def prepare(self, entries: Sequence[Entry]) -> list[Any] | None:
        """None: the twin declines every entry and applies them at ``apply`` (the Protocol
        lets a state machine decline any; what is observable is the same)."""
        return None

    def read(self, requests: Sequence[Any]) -> list[Any]:
        """Returns one result (or BoltraftError) per read request, as
        ``boltraft.storage.queries.execute_reads`` does; [] for no requests. Raises
        TxClosedError once closed."""
        if not requests:
            return []
        with self._lock:
            self._check_open()
            out: list[Any] = []
            for request in requests:
                try:
                    out.append(self._read(validate_read(request)))
                except BoltraftError as err:
                    out.append(err)
            return out

    def snapshot(self, parent: Path, *, rate: float = 0.0) -> SnapshotInfo:
        """Returns the description of a snapshot of the applied state written into
        ``parent/<index:020d>-<term>/`` (the existing one when that directory exists).
        ``rate`` is accepted and ignored. Raises TxClosedError once closed, and I/O errors
        (leaving nothing behind)."""
        with self._lock:
            self._check_open()
            index, term = self._index, self._term
            data = self._serialize()
        parent = Path(parent)
        dest = parent / f"{index:020d}-{term}"
        if dest.exists():
            return load_snapshot_info(dest)
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".new-", dir=parent))
        try:
            (tmp / DATA_FILE).write_bytes(data)
            info = SnapshotInfo(
                index,
                term,
                len(data),
                hashlib.sha256(data).hexdigest(),
                dest / DATA_FILE,
                int(time.time() * 1000),
            )
            (tmp / META_FILE).write_text(json.dumps(info.to_json(), indent=1) + "\n")
            os.rename(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return info

    # --- snapshots ---------------------------------------------------------------------------
    @classmethod
    def from_snapshot(
        cls,
        path: str | os.PathLike[str],
        info: SnapshotInfo | None = None,
        *,
        dedup_window_ms: int = DEFAULT_WINDOW_MS,
        max_value_size: int = DEFAULT_MAX_VALUE,
        max_key_size: int = LMDB_MAX_KEY,
    ) -> MemStateMachine:
        """Returns the state machine a snapshot holds. ``path`` is the snapshot's data file
        or its directory; with ``info``, the file's size and sha256 must match it.

        Raises SnapshotError (missing, or not a twin snapshot), ChecksumMismatchError.
        """
        src = Path(path)
        if src.is_dir():
            src = src / DATA_FILE
        try:
            data = src.read_bytes()
        except OSError as exc:
            raise SnapshotError(f"snapshot file {src} not found: {exc}", path=str(src))
        if info is not None:
            digest = hashlib.sha256(data).hexdigest()
            if len(data) != info.size or digest != info.sha256:
                raise ChecksumMismatchError(
                    f"snapshot {src} does not match its metadata",
                    expected_sha256=info.sha256,
                    actual_sha256=digest,
                    expected_size=info.size,
                    actual_size=len(data),
                )
        sm = cls(
            dedup_window_ms=dedup_window_ms,
            max_value_size=max_value_size,
            max_key_size=max_key_size,
        )
        try:
            state = msgpack.unpackb(data, raw=False, use_list=False, strict_map_key=False)
            if type(state) is not dict or state.get("format") != SNAPSHOT_FORMAT:
                raise ValueError("not a snapshot of the in-memory twin")
            sm._index, sm._term, sm._clock = state["index"], state["term"], state["clock"]
            sm._next_id = state["next_id"]
            sm._root = _load_bucket(state["root"])
            for cid, seq, ts, stored in state["dedup"]:
                sm._dedup[(cid, seq)] = (ts, stored)
            for cid, seq, ts in state["sessions"]:
                sm._sessions[cid] = (seq, ts)
        except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
            raise SnapshotError(f"cannot read snapshot {src}: {exc}", path=str(src))
        return sm

    def _serialize(self) -> bytes:
        """Returns the whole state as msgpack (deterministic: same state, same bytes)."""
        return pack(
            {
                "format": SNAPSHOT_FORMAT,
                "index": self._index,
                "term": self._term,
                "clock": self._clock,
                "next_id": self._next_id,
                "root": _dump_bucket(self._root),
                "dedup": sorted(
                    (cid, seq, ts, stored) for (cid, seq), (ts, stored) in self._dedup.items()
                ),
                "sessions": sorted((cid, seq, ts) for cid, (seq, ts) in self._sessions.items()),
            }
        )

    def content_hash(self) -> tuple[int, str]:
        """``(applied index, sha256 hex)`` of the bucket content, computed as
        BucketStateMachine.content_hash does (so equal content gives equal digests across
        both kinds)."""
        with self._lock:
            self._check_open()
            h = hashlib.sha256()
            stack: list[tuple[Names, _Bucket]] = [
                ((name,), b) for name, b in sorted(self._root.children.items(), reverse=True)
            ]
            while stack:
                path, b = stack.pop()
                h.update(b"B" + pack([list(path), b.seq]))
                for key in sorted(set(b.keys) | set(b.children)):
                    if key in b.keys:
                        h.update(b"K" + pack([key, b.keys[key]]))
                stack.extend(
                    ((*path, name), child)
                    for name, child in sorted(b.children.items(), reverse=True)
                )
            return self._index, h.hexdigest()

    # --- for tests ---------------------------------------------------------------------------
    def dump(self) -> dict[Names, tuple[dict[bytes, bytes], int]]:
        """Returns every bucket as ``path -> (keys, sequence)``, the shape of
        ``tests/fsm_model.dump`` (for comparison with a real store)."""
        with self._lock:
            return {path: (dict(b.keys), b.seq) for path, b in self._walk_all()}

    def _walk_all(self) -> Iterator[tuple[Names, _Bucket]]:
        stack: list[tuple[Names, _Bucket]] = [((), self._root)]
        while stack:
            path, b = stack.pop()
            if path:
                yield path, b
            stack.extend(((*path, name), child) for name, child in b.children.items())

    # --- internals ---------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise TxClosedError("the database is closed")

    def _rollback(self, mark: int) -> None:
        """Undoes every change journaled after ``mark`` (newest first)."""
        undo = self._undo
        while len(undo) > mark:
            undo.pop()()

    def _record(self, key: DedupKey, ts: int, stored: bytes) -> None:
        table, sessions = self._dedup, self._sessions
        old = table.pop(key, None)
        table[key] = (ts, stored)
        cid, seq = key
        old_session = sessions.get(cid)
        if old_session is None or seq > old_session[0]:
            sessions[cid] = (seq, ts)

        def undo() -> None:
            del table[key]
            if old is not None:
                table[key] = old
            if old_session is None:
                sessions.pop(cid, None)
            else:
                sessions[cid] = old_session

        self._undo.append(undo)

    def _forget_expired(self) -> None:
        """Drops records expired at the clock from the front of the table (clean-up only)."""
        expired_before = self._clock - self.dedup_window_ms
        table = self._dedup
        while table:
            key, (ts, _) = next(iter(table.items()))
            if ts >= expired_before:
                break
            del table[key]

    # journaled changes (the only ways the buckets change)
    def _set_key(self, b: _Bucket, key: bytes, value: bytes | None) -> None:
        old = b.keys.get(key, _ABSENT)
        if value is None:
            del b.keys[key]
        else:
            b.keys[key] = value

        def undo() -> None:
            if old is _ABSENT:
                b.keys.pop(key, None)
            else:
                b.keys[key] = old  # type: ignore[assignment]

        self._undo.append(undo)

    def _set_seq(self, b: _Bucket, seq: int) -> None:
        old = b.seq
        b.seq = seq

        def undo() -> None:
            b.seq = old

        self._undo.append(undo)

    def _add_child(self, parent: _Bucket, name: bytes) -> _Bucket:
        old_next = self._next_id
        child = parent.children[name] = _Bucket(old_next)
        self._next_id = old_next + 1

        def undo() -> None:
            del parent.children[name]
            self._next_id = old_next

        self._undo.append(undo)
        return child

    def _remove_child(self, parent: _Bucket, name: bytes) -> None:
        child = parent.children.pop(name)

        def undo() -> None:
            parent.children[name] = child

        self._undo.append(undo)

    # the engine's checks (boltraft.storage.tx / bucket / keys), in its order
    def _names(self, path: Names) -> Names:
        limit = self.max_key_size - _prefix_len(0)
        for name in path:
            if not name:
                raise InvalidBucketNameError("a bucket name must not be empty")
            if PATH_SEP in name:
                raise InvalidBucketNameError(f"a bucket name must not contain '/': {name!r}")
            if len(name) > limit:
                raise InvalidBucketNameError(
                    f"bucket name of {len(name)} bytes is too long: at most {limit} bytes here",
                    size=len(name),
                    max=limit,
                )
        return path

    def _walk(self, names: Names) -> _Bucket:
        b = self._root
        for i, name in enumerate(names, 1):
            child = b.children.get(name)
            if child is None:
                raise BucketNotFoundError(
                    f"bucket {show_path(names[:i])} not found", path=list(names[:i])
                )
            b = child
        return b

    def _bucket(self, path: Names) -> _Bucket:
        return self._walk(self._names(path))

    def _key(self, b: _Bucket, key: bytes, path: Names) -> bytes:
        most = self.max_key_size - _prefix_len(b.id)
        if not key:
            raise KeyRequiredError("a key is required (got an empty key)")
        if len(key) > most:
            raise KeyTooLargeError(
                f"key of {len(key)} bytes is too large: at most {most} bytes fit in bucket "
                f"{show_path(path)}",
                size=len(key),
                max=most,
            )
        return key

    def _value(self, value: bytes) -> bytes:
        if len(value) > self.max_value_size:
            raise ValueTooLargeError(
                f"value of {len(value)} bytes is too large: at most {self.max_value_size} bytes",
                size=len(value),
                max=self.max_value_size,
            )
        return value

    @staticmethod
    def _not_a_bucket(b: _Bucket, key: bytes, path: Names) -> None:
        if key in b.children:
            raise IncompatibleValueError(
                f"key {key!r} in bucket {show_path(path)} is a nested bucket, not a value",
                key=key,
            )

    def _create(self, parent: _Bucket, names: Names) -> _Bucket:
        name = names[-1]
        room = self.max_key_size - _prefix_len(parent.id)
        if len(name) > room:
            raise InvalidBucketNameError(
                f"bucket name of {len(name)} bytes is too long: at most {room} bytes "
                f"fit under {show_path(names[:-1])}",
                size=len(name),
                max=room,
            )
        if name in parent.children:
            raise BucketExistsError(f"bucket {show_path(names)} exists", path=list(names))
        if name in parent.keys:
            raise IncompatibleValueError(
                f"{show_path(names)} is a key, not a bucket", path=list(names)
            )
        return self._add_child(parent, name)

    # applying
    def _execute(self, body: Body, noted: list[Change] | None, index: int) -> Any:
        """Returns the result of one command body (of entry ``index``), or its error
        instance; adds its changes to ``noted``."""
        if body[0] != BATCH:
            try:
                return self._op(body, noted, index, 0)
            except BoltraftError as err:
                return err
        mark = len(self._undo)
        noted_mark = 0 if noted is None else len(noted)
        out = []
        for i, sub in enumerate(body[1]):
            try:
                out.append(self._op(sub, noted, index, i))
            except BoltraftError as err:
                err.details.setdefault("index", i)
                self._rollback(mark)
                if noted is not None:
                    del noted[noted_mark:]
                return err
        return out

    def _op(self, body: Body, noted: list[Change] | None, index: int, pos: int) -> Any:
        """Returns the result of one op other than a batch (at ``pos`` of entry ``index``)
        and adds its change to ``noted``; raises the engine's errors, and like the engine
        writes nothing before a check fails (but see create_bucket)."""
        code, path = body[0], body[1]
        if code == commands.KEYS:
            self._keys[body[1].decode()] = (body[2].decode(), body[3].decode(), body[4].decode())
            return commands.KEYS_SET
        if code == CREATE_BUCKET:
            names = self._names(path)
            created = True
            if body[2]:  # like mkdir -p; ancestors created before a failure stay
                b = self._root
                for i in range(1, len(names) + 1):
                    child = b.children.get(names[i - 1])
                    created = child is None
                    b = child if child is not None else self._create(b, names[:i])
            else:
                self._create(self._walk(names[:-1]), names)
            if noted is not None and created:
                noted.append((index, pos, "create_bucket", path, None, None, None))
            return None
        if code == DELETE_BUCKET:
            names = self._names(path)
            parent = self._walk(names[:-1])
            name = names[-1]
            fits = _prefix_len(parent.id) + len(name) <= self.max_key_size
            if fits and name in parent.children:
                self._remove_child(parent, name)
                if noted is not None:
                    noted.append((index, pos, "delete_bucket", path, None, None, None))
                return None
            if fits and name in parent.keys:
                raise IncompatibleValueError(
                    f"{show_path(names)} is a key, not a bucket", path=list(names)
                )
            raise BucketNotFoundError(f"bucket {show_path(names)} not found", path=list(names))
        b = self._bucket(path)
        if code == NEXT_SEQUENCE:
            self._set_seq(b, b.seq + 1)
            return b.seq
        key = self._key(b, body[2], path)
        if code == PUT:
            new = self._value(body[3])
            self._not_a_bucket(b, key, path)
            if noted is not None:
                noted.append((index, pos, "put", path, key, new, b.keys.get(key)))
            self._set_key(b, key, new)
            return None
        if code == DELETE:
            self._not_a_bucket(b, key, path)
            if key not in b.keys:
                return False
            if noted is not None:
                noted.append((index, pos, "delete", path, key, None, b.keys[key]))
            self._set_key(b, key, None)
            return True
        value: bytes | None = None  # None: delete
        if code == PUT_IF:
            value, expect = self._value(body[3]), body[4]
        else:  # DELETE_IF: parse() admits no other opcode here
            assert code == DELETE_IF
            expect = body[3]
        self._not_a_bucket(b, key, path)
        current = b.keys.get(key)
        if current != expect:
            raise ConditionFailedError(
                f"condition failed for key {key!r} in bucket {show_path(path)}", current=current
            )
        self._set_key(b, key, value)
        if noted is not None:
            kind = "put" if value is not None else "delete"
            noted.append((index, pos, kind, path, key, value, current))
        return None if value is not None else True

    # reading (boltraft.storage.queries._read and Bucket.scan/count)
    def _read(self, req: dict[str, Any]) -> Any:
        op = req["op"]
        if op == "buckets":
            path = req.get("bucket", ())
            b = self._bucket(path) if path else self._root
            return sorted(b.children)
        path = req["bucket"]
        b = self._bucket(path)
        if op == "get":
            return b.keys.get(self._key(b, req["key"], path))
        if op == "count":
            return len(b.keys) + len(b.children)
        items, token = self._scan(
            b,
            prefix=req.get("prefix"),
            start=req.get("start"),
            end=req.get("end"),
            limit=req.get("limit"),
            reverse=req.get("reverse", False),
            after=req.get("after"),
        )
        return {"items": [[k, v] for k, v in items], "next": token, "index": self._index}

    @staticmethod
    def _scan(
        b: _Bucket,
        prefix: bytes | None,
        start: bytes | None,
        end: bytes | None,
        limit: int | None,
        reverse: bool,
        after: bytes | None,
    ) -> tuple[list[tuple[bytes, bytes | None]], bytes | None]:
        lo = b"" if start is None else start
        hi = end
        if prefix is not None:
            lo = max(lo, prefix)
            p_end = prefix_end(prefix)
            if p_end is not None:
                hi = p_end if hi is None else min(hi, p_end)
        if limit is not None and limit < 1:
            raise InvalidArgumentError(f"limit must be a positive int, not {limit!r}")
        if after is not None:
            last = decode_token(after)
            if reverse:
                hi = last if hi is None else min(hi, last)
            else:
                lo = max(lo, last + b"\x00")
        if hi is not None and lo >= hi:
            return [], None
        entries: dict[bytes, bytes | None] = {**b.keys, **dict.fromkeys(b.children)}
        keys = sorted((k for k in entries if lo <= k and (hi is None or k < hi)), reverse=reverse)
        if limit is not None and len(keys) > limit:
            keys = keys[:limit]
            return [(k, entries[k]) for k in keys], encode_token(keys[-1])
        return [(k, entries[k]) for k in keys], None


def _dump_bucket(b: _Bucket) -> list[Any]:
    return [
        b.id,
        b.seq,
        sorted(b.keys.items()),
        [[name, _dump_bucket(child)] for name, child in sorted(b.children.items())],
    ]


def _load_bucket(raw: Any) -> _Bucket:
    bucket_id, seq, keys, children = raw
    b = _Bucket(bucket_id, seq)
    b.keys = {bytes(k): bytes(v) for k, v in keys}
    b.children = {bytes(name): _load_bucket(child) for name, child in children}
    return b
