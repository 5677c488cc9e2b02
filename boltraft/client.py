"""The Python client of a boltraft cluster (the protocol is in docs/protocol.md).

```python
from boltraft.client import Client
with Client("tcp://127.0.0.1:7301,tcp://127.0.0.1:7302,tcp://127.0.0.1:7303") as c:
    c.create_bucket("config", if_not_exists=True)
    c.put("config", "color", "blue")
    c.get("config", "color")            # b"blue"
```

How a call runs: the request goes to the node believed to lead (the first endpoint at first).
A ``not_leader`` answer names the leader (``details["leader_addr"]``) and the call follows it
at once; ``no_leader``, ``unavailable``, ``timeout``, ``proposal_dropped``, ``node_removed``,
``lag_exceeded`` and an attempt left unanswered for ``attempt_timeout`` seconds move the call
to the next endpoint after an exponential backoff with jitter. The whole call gives up with
RequestTimeoutError after ``timeout`` seconds (per call, overridable). Every other error
answer is raised as its typed class (``BoltraftError.from_wire``).

Exactly-once writes: every write carries ``cid`` (this client's id, random unless given) and
``seq`` (one more per write call); every retry of one call re-sends the SAME (cid, seq), so
the cluster applies it once and answers a retry with the original result. Each attempt gets
a new request id; a reply whose id belongs to no attempt of the current call is stale and
discarded (an answer to an earlier attempt of the same call is accepted).

Thread safety: a Client may be shared between threads; a lock runs one call at a time (use
one Client per thread for parallel calls). Its ZeroMQ sockets are only touched under that
lock.

Arguments: a bucket is a name or a sequence of names (a nested path); names, keys and values
are bytes, and str is UTF-8 encoded. Bad arguments raise BadRequestError before anything is
sent.
"""

from __future__ import annotations

import itertools
import math
import os
import random
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import zmq

from boltraft.errors import (
    BadRequestError,
    BoltraftError,
    CompactedError,
    ProtocolError,
    RequestTimeoutError,
    UnavailableError,
)
from boltraft.transport import codec
from boltraft.transport.curve import PartyKeys, load_keys
from boltraft.transport.rpc import RETRYABLE, Channel, parse_endpoints
from boltraft.transport.watchwire import EVENTS_BATCH, Event, decode_batch
from boltraft.transport.zmq_transport import connect_dealer, drain, monitor_events

__all__ = [
    "READ_LEVELS",
    "RETRYABLE",
    "Client",
    "Event",
    "Page",
    "Watch",
    "parse_endpoints",
    "wait_watches",
]

Bytesish = bytes | str
BucketPath = Bytesish | Sequence[Bytesish]

READ_LEVELS = ("linearizable", "stale")
WATCH_WINDOW = 1024  # events a node may send a watch before the client acknowledges them


class Page(NamedTuple):
    """One page of a scan: ``items`` in scan order (a nested bucket's value is None),
    ``next``, the token to pass as ``after`` for the next page (None: the scan is complete),
    and ``applied_index``, the applied index the page was read at (0 from a node that does
    not say; when ``Client.scan`` followed several pages of the node, the first one's, the
    lowest): ``Client.watch(..., start_index=page.applied_index + 1)`` sees every change
    after the page."""

    items: list[tuple[bytes, bytes | None]]
    next: bytes | None
    applied_index: int = 0


def _bytes(value: Any, what: str) -> bytes:
    t = type(value)
    if t is bytes:
        return value
    if t is str:
        return value.encode()
    if t is bytearray or t is memoryview:
        return bytes(value)
    raise BadRequestError(f"{what} must be bytes or str, not {t.__name__}", field=what)


def _path(bucket: Any) -> list[bytes]:
    if isinstance(bucket, (str, bytes, bytearray, memoryview)):
        return [_bytes(bucket, "bucket")]
    if isinstance(bucket, Sequence) and bucket:
        return [_bytes(name, "bucket") for name in bucket]
    raise BadRequestError("bucket must be a name or a non-empty sequence of names")


def _uint(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise BadRequestError(f"{what} must be an integer >= 0", field=what)
    return value


def _op(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Returns one batch op with its bucket/key/value/if_value fields normalized to bytes."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("op"), str):
        raise BadRequestError("each batch op must be a map with a string 'op'")
    op = dict(raw)
    if "bucket" in op:
        op["bucket"] = _path(op["bucket"])
    for name in ("key", "value", "if_value"):
        if name in op:
            op[name] = _bytes(op[name], name)
    return op


class Client:
    """Returns a client of the cluster at ``endpoints`` (see the module docstring).

    ``timeout``: seconds a call may take in all (retries included); ``attempt_timeout``:
    seconds one attempt waits for its answer before the call tries the next endpoint;
    ``client_id``: the cid of every write (1..128 bytes; random when None; reuse one only
    for the same logical writer); ``read``: the default read level; ``keys``: a client keys
    folder (``boltraft keys init``) or its loaded ``PartyKeys``, for a cluster with CURVE
    (docs/security.md). Thread-safe (one call at a time). Raises BadRequestError for bad
    arguments, ConfigError for an unusable keys folder."""

    def __init__(
        self,
        endpoints: str | Sequence[str],
        timeout: float = 5.0,
        client_id: Bytesish | None = None,
        read: str = "linearizable",
        *,
        attempt_timeout: float = 1.0,
        backoff: tuple[float, float] = (0.02, 1.0),
        max_frame_size: int = codec.DEFAULT_MAX_FRAME_SIZE,
        keys: str | os.PathLike[str] | PartyKeys | None = None,
    ) -> None:
        if read not in READ_LEVELS:
            raise BadRequestError(f"read must be one of {READ_LEVELS}, not {read!r}")
        if not timeout > 0:
            raise BadRequestError("timeout must be > 0")
        cid = os.urandom(16) if client_id is None else _bytes(client_id, "client_id")
        if not 0 < len(cid) <= 128:
            raise BadRequestError("client_id must be 1..128 bytes")
        self.client_id: bytes = cid
        self.timeout = float(timeout)
        self.read = read
        self._seq = 0  # the last seq used by a write; the next write uses _seq + 1
        self._lock = threading.Lock()  # held for a whole call: guards _chan, _seq, _closed
        self._chan = Channel(
            endpoints,
            attempt_timeout=attempt_timeout,
            backoff=backoff,
            max_frame_size=max_frame_size,
            keys=keys if keys is None or isinstance(keys, PartyKeys) else load_keys(keys),
        )
        self._closed = False

    # --- lifecycle ---------------------------------------------------------------------------
    @property
    def endpoints(self) -> list[str]:
        """Returns the known endpoints (those given, plus leader addresses learned)."""
        return self._chan.endpoints

    @property
    def current_endpoint(self) -> str:
        """Returns the endpoint the next call goes to first (the last known leader)."""
        return self._chan.current_endpoint

    def close(self) -> None:
        """Closes every socket; calling it again does nothing."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._chan.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(
        self,
        body: dict[str, Any],
        *,
        write: bool = False,
        timeout: float | None = None,
        endpoint: str | None = None,
    ) -> Any:
        """Returns the result of request ``body`` (see the module docstring for the retries).

        ``endpoint`` pins every attempt to that node. Raises the server's typed error, or
        RequestTimeoutError when ``timeout`` (default ``self.timeout``) runs out."""
        limit = self.timeout if timeout is None else timeout
        if not limit > 0:
            raise BadRequestError("timeout must be > 0")
        with self._lock:
            if self._closed:
                raise UnavailableError("the client is closed")
            if write:
                self._seq += 1
                body["cid"] = self.client_id
                body["seq"] = self._seq
            return self._chan.call(body, limit, endpoint)

    def _read(
        self, body: dict[str, Any], read: str | None, max_lag: int | None, timeout: float | None
    ) -> Any:
        level = self.read if read is None else read
        if level not in READ_LEVELS:
            raise BadRequestError(f"read must be one of {READ_LEVELS}, not {level!r}")
        body["read"] = level
        if max_lag is not None:
            body["max_lag"] = _uint(max_lag, "max_lag")
        return self._call(body, timeout=timeout)

    # --- keys --------------------------------------------------------------------------------
    def put(
        self,
        bucket: BucketPath,
        key: Bytesish,
        value: Bytesish,
        *,
        if_value: Bytesish | None = None,
        if_absent: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Sets ``key`` to ``value``. With ``if_value`` the current value must equal it, with
        ``if_absent`` the key must not exist (ConditionFailedError, whose
        ``details["current"]`` is the value found). Raises BucketNotFoundError and the
        engine's other typed errors."""
        body: dict[str, Any] = {
            "op": "put",
            "bucket": _path(bucket),
            "key": _bytes(key, "key"),
            "value": _bytes(value, "value"),
        }
        if if_value is not None and if_absent:
            raise BadRequestError("if_value and if_absent exclude each other")
        if if_value is not None:
            body["if_value"] = _bytes(if_value, "if_value")
        if if_absent:
            body["if_absent"] = True
        self._call(body, write=True, timeout=timeout)

    def cas(
        self,
        bucket: BucketPath,
        key: Bytesish,
        expect: Bytesish | None,
        value: Bytesish,
        *,
        timeout: float | None = None,
    ) -> None:
        """Sets ``key`` from ``expect`` (None: absent) to ``value`` (compare-and-set); raises
        ConditionFailedError when the current value differs."""
        if expect is None:
            self.put(bucket, key, value, if_absent=True, timeout=timeout)
        else:
            self.put(bucket, key, value, if_value=expect, timeout=timeout)

    def get(
        self,
        bucket: BucketPath,
        key: Bytesish,
        *,
        read: str | None = None,
        max_lag: int | None = None,
        timeout: float | None = None,
    ) -> bytes | None:
        """Returns the value of ``key``, or None when the key does not exist (or names a
        nested bucket). ``read``: "linearizable" (default) or "stale"; a stale read with
        ``max_lag`` fails over to another node when the answering one lags by more entries.
        Raises BucketNotFoundError."""
        body = {"op": "get", "bucket": _path(bucket), "key": _bytes(key, "key")}
        return self._read(body, read, max_lag, timeout)

    def delete(
        self,
        bucket: BucketPath,
        key: Bytesish,
        *,
        if_value: Bytesish | None = None,
        timeout: float | None = None,
    ) -> bool:
        """Returns True if ``key`` existed (and is now gone), False if it did not exist.
        With ``if_value`` the current value must equal it (ConditionFailedError)."""
        body: dict[str, Any] = {"op": "delete", "bucket": _path(bucket), "key": _bytes(key, "key")}
        if if_value is not None:
            body["if_value"] = _bytes(if_value, "if_value")
        return bool(self._call(body, write=True, timeout=timeout))

    def scan(
        self,
        bucket: BucketPath,
        *,
        prefix: Bytesish | None = None,
        start: Bytesish | None = None,
        end: Bytesish | None = None,
        limit: int | None = None,
        reverse: bool = False,
        after: bytes | None = None,
        read: str | None = None,
        max_lag: int | None = None,
        timeout: float | None = None,
    ) -> Page:
        """Returns one Page of ``bucket`` in key order (``reverse``: descending): the keys
        with ``prefix``, or in ``[start, end)`` (either bound optional), at most ``limit``
        items (all of them when None); ``after`` continues from a previous
        Page's ``next``. A node answers at most 4 MiB of keys and values at once
        (``SCAN_PAGE_BYTES``): this follows its ``next`` tokens, one read each (so a scan
        of more than that is not one snapshot), until ``limit`` items or the end. Raises
        BadRequestError when ``prefix`` is mixed with a range."""
        if prefix is not None and (start is not None or end is not None):
            raise BadRequestError("give prefix or a start/end range, not both")
        body: dict[str, Any] = {"op": "scan", "bucket": _path(bucket)}
        for name, value in (("prefix", prefix), ("start", start), ("end", end)):
            if value is not None:
                body[name] = _bytes(value, name)
        if limit is not None:
            if _uint(limit, "limit") < 1:
                raise BadRequestError("limit must be >= 1", field="limit")
            body["limit"] = limit
        if reverse:
            body["reverse"] = True
        if after is not None:
            body["after"] = _bytes(after, "after")
        items: list[tuple[bytes, bytes | None]] = []
        first_index: int | None = None
        while True:
            result = self._read(body, read, max_lag, timeout)
            if not isinstance(result, dict) or not isinstance(result.get("items"), list):
                raise ProtocolError("a scan result must be a map with 'items'", result=repr(result))
            for item in result["items"]:
                if type(item) is not list or len(item) != 2:
                    raise ProtocolError("scan items must be [key, value] pairs", item=repr(item))
                items.append((item[0], item[1]))
            index = result.get("index", 0)
            if type(index) is not int or index < 0:
                raise ProtocolError("a scan's index must be an integer >= 0", index=repr(index))
            if first_index is None:  # the pages' lowest: a watch from it + 1 misses nothing
                first_index = index
            token = result.get("next")
            if token is None or (limit is not None and len(items) >= limit):
                return Page(items, token, first_index)
            if type(token) is not bytes:
                raise ProtocolError("a scan's next token must be bytes", token=repr(token))
            body["after"] = token
            if limit is not None:
                body["limit"] = limit - len(items)

    def scan_all(
        self,
        bucket: BucketPath,
        *,
        prefix: Bytesish | None = None,
        start: Bytesish | None = None,
        end: Bytesish | None = None,
        reverse: bool = False,
        page_size: int = 1000,
        read: str | None = None,
        max_lag: int | None = None,
        timeout: float | None = None,
    ) -> Iterator[tuple[bytes, bytes | None]]:
        """Returns an iterator over every ``(key, value)`` the scan matches, fetched
        ``page_size`` at a time (each page is its own call, so the whole scan is not one
        snapshot). Raises like ``scan``."""
        after: bytes | None = None
        while True:
            page = self.scan(
                bucket,
                prefix=prefix,
                start=start,
                end=end,
                limit=page_size,
                reverse=reverse,
                after=after,
                read=read,
                max_lag=max_lag,
                timeout=timeout,
            )
            yield from page.items
            if page.next is None:
                return
            after = page.next

    def count(
        self,
        bucket: BucketPath,
        *,
        read: str | None = None,
        max_lag: int | None = None,
        timeout: float | None = None,
    ) -> int:
        """Returns the number of keys (nested buckets included) directly in ``bucket``."""
        return self._read({"op": "count", "bucket": _path(bucket)}, read, max_lag, timeout)

    def next_sequence(self, bucket: BucketPath, *, timeout: float | None = None) -> int:
        """Returns the bucket's next sequence number (1, 2, ...; each call is applied once)."""
        body = {"op": "next_sequence", "bucket": _path(bucket)}
        return self._call(body, write=True, timeout=timeout)

    # --- buckets -----------------------------------------------------------------------------
    def create_bucket(
        self, bucket: BucketPath, *, if_not_exists: bool = False, timeout: float | None = None
    ) -> None:
        """Creates ``bucket``, whose parent must exist; with ``if_not_exists`` an existing
        bucket is fine and missing ancestors are created too. Raises BucketExistsError
        unless ``if_not_exists``, BucketNotFoundError for a missing parent."""
        body: dict[str, Any] = {"op": "create_bucket", "bucket": _path(bucket)}
        if if_not_exists:
            body["if_not_exists"] = True
        self._call(body, write=True, timeout=timeout)

    def delete_bucket(self, bucket: BucketPath, *, timeout: float | None = None) -> None:
        """Deletes ``bucket`` and everything in it; raises BucketNotFoundError."""
        self._call({"op": "delete_bucket", "bucket": _path(bucket)}, write=True, timeout=timeout)

    def buckets(
        self,
        bucket: BucketPath | None = None,
        *,
        read: str | None = None,
        max_lag: int | None = None,
        timeout: float | None = None,
    ) -> list[bytes]:
        """Returns the names of the buckets directly under ``bucket`` (the root if None)."""
        body: dict[str, Any] = {"op": "buckets"}
        if bucket is not None:
            body["bucket"] = _path(bucket)
        return self._read(body, read, max_lag, timeout)

    # --- many ops, status --------------------------------------------------------------------
    def batch(self, ops: Sequence[Mapping[str, Any]], *, timeout: float | None = None) -> list:
        """Returns the list of results of ``ops`` applied atomically: write-op maps as in
        docs/protocol.md (``{"op": "put", "bucket": ..., "key": ..., "value": ...,
        ["if_value"|"if_absent"]}``, delete, create_bucket, delete_bucket, next_sequence).
        If one fails, none is applied and its error is raised with ``details["index"]``."""
        if isinstance(ops, Mapping) or not isinstance(ops, Sequence):
            raise BadRequestError("ops must be a sequence of op maps")
        body = {"op": "batch", "ops": [_op(op) for op in ops]}
        return self._call(body, write=True, timeout=timeout)

    def status(self, endpoint: str | None = None, *, timeout: float | None = None) -> dict:
        """Returns the status map of ``endpoint`` (a node's id, role, term, lead, commit,
        applied...), or of whichever node answers first when None."""
        ep = None if endpoint is None else parse_endpoints([endpoint])[0]
        return self._call({"op": "status"}, timeout=timeout, endpoint=ep)

    # --- cluster operations (docs/protocol.md, "Cluster operations") --------------------------
    def members(self, endpoint: str | None = None, *, timeout: float | None = None) -> dict:
        """Returns the membership as ``endpoint`` (or whichever node answers) sees it:
        ``voters``, ``learners``, ``addrs``, ``leader``, and ``progress`` from a leader."""
        ep = None if endpoint is None else parse_endpoints([endpoint])[0]
        return self._call({"op": "members"}, timeout=timeout, endpoint=ep)

    def join(self, node_id: str, addr: str, *, timeout: float | None = None) -> dict:
        """Returns the membership once ``node_id`` at ``addr`` is a voter (added as a
        learner, caught up, then promoted; idempotent; a member at another address is moved
        to ``addr``). Raises MembershipError, RequestTimeoutError."""
        limit = self.timeout if timeout is None else timeout
        body = {"op": "join", "id": node_id, "addr": addr, "timeout_ms": int(limit * 1000)}
        return self._call(body, timeout=limit)

    def remove(self, node_id: str, *, timeout: float | None = None) -> dict:
        """Returns the membership once ``node_id`` is not a member (removing the leader hands
        leadership over first). Raises MembershipError (e.g. the last voter)."""
        limit = self.timeout if timeout is None else timeout
        body = {"op": "remove", "id": node_id, "timeout_ms": int(limit * 1000)}
        return self._call(body, timeout=limit)

    def set_key(
        self, name: str, kind: str, key: str, role: str, *, timeout: float | None = None
    ) -> None:
        """Sets the cluster's allow-list entry of ``name`` (a ``kind`` "client" with ``role``
        read, write or admin; or a "node", role "node") to the CURVE public ``key`` (Z85);
        an empty ``key`` revokes the name. In effect on every node once applied there, no
        restart needed; an admin key's request. Raises PermissionDeniedError,
        MalformedCommandError for a bad entry, BadRequestError on a node without keys."""
        body = {"op": "keys", "name": name, "kind": kind, "key": key, "role": role}
        self._call(body, write=True, timeout=timeout)

    def transfer_leader(self, node_id: str | None = None, *, timeout: float | None = None) -> dict:
        """Returns ``{"leader", "leader_addr"}`` once ``node_id`` (default: the most
        up-to-date other voter) leads. Raises MembershipError for a non-voter."""
        body: dict[str, Any] = {"op": "transfer_leader"}
        if node_id is not None:
            body["id"] = node_id
        return self._call(body, timeout=timeout)

    def hash(self, endpoint: str, *, timeout: float | None = None) -> dict:
        """``{"id", "applied", "sha256"}``: ``endpoint``'s replica hash, a sha256 over its
        whole bucket content at the applied index it reports (equal on replicas that agree).
        """
        ep = parse_endpoints([endpoint])[0]
        return self._call({"op": "hash"}, timeout=timeout, endpoint=ep)

    def cluster_hash(self, *, settle: float = 10.0) -> dict:
        """Every member's replica hash, asked again until all report the same applied index
        or ``settle`` seconds passed: ``{"members": {id: {"addr", "applied", "sha256"} or
        {"addr", "error"}}, "same_applied": bool, "agree": bool}``; ``agree`` is True only
        when every member answered, at the same applied index, with the same hash. The
        members are those the leader (or whichever node answers) lists."""
        addrs = self.members()["addrs"]
        deadline = time.monotonic() + settle
        while True:
            out: dict[str, dict[str, Any]] = {}
            for node_id, addr in sorted(addrs.items()):
                try:
                    r = self.hash(addr)
                    out[node_id] = {"addr": addr, "applied": r["applied"], "sha256": r["sha256"]}
                except BoltraftError as err:
                    out[node_id] = {"addr": addr, "error": err.to_wire()}
            applied = {m.get("applied") for m in out.values()}
            same = len(applied) == 1 and None not in applied
            if same or time.monotonic() >= deadline:
                digests = {m.get("sha256") for m in out.values()}
                agree = same and len(digests) == 1
                return {"members": out, "same_applied": same, "agree": agree}
            time.sleep(0.05)

    def snapshot(self, endpoint: str | None = None, *, timeout: float | None = None) -> dict:
        """Returns ``{"index", "term", "size", "sha256", "seconds", "log_first"}`` after
        ``endpoint`` (or whichever node answers) wrote a snapshot and compacted its log."""
        ep = None if endpoint is None else parse_endpoints([endpoint])[0]
        return self._call({"op": "snapshot"}, timeout=timeout, endpoint=ep)

    def backup_begin(self, endpoint: str, *, timeout: float | None = None) -> dict:
        """Returns the description of a fresh snapshot ``endpoint`` keeps for a backup
        (``backup`` token, ``size``, ``sha256``, ``index``, ``term``, membership)."""
        return self._call({"op": "backup_begin"}, timeout=timeout, endpoint=endpoint)

    def backup_read(
        self, endpoint: str, token: str, offset: int, length: int, *, timeout: float | None = None
    ) -> bytes:
        """Returns up to ``length`` bytes of backup ``token`` from ``offset`` (crc-checked;
        ProtocolError on a mismatch)."""
        body = {"op": "backup_read", "backup": token, "offset": offset, "length": length}
        result = self._call(body, timeout=timeout, endpoint=endpoint)
        data = result.get("data") if isinstance(result, dict) else None
        if not isinstance(data, bytes) or zlib.crc32(data) != result.get("crc32"):
            raise ProtocolError("backup chunk failed its crc32 check", offset=offset)
        return data

    def backup_end(self, endpoint: str, token: str, *, timeout: float | None = None) -> None:
        """Tells ``endpoint`` to release backup ``token``."""
        self._call({"op": "backup_end", "backup": token}, timeout=timeout, endpoint=endpoint)

    # --- the change feed ---------------------------------------------------------------------
    def watch(
        self,
        bucket: BucketPath,
        *,
        prefix: Bytesish | None = None,
        start_index: int | None = None,
        recursive: bool = False,
        prev_value: bool = False,
        window: int = WATCH_WINDOW,
        reconnect_timeout: float = 30.0,
    ) -> Watch:
        """Returns a ``Watch``: an iterator over the changes of ``bucket`` (with ``prefix``:
        of its keys starting with it; ``recursive``: of its nested buckets too) from Raft
        index ``start_index`` on, or, when None, from now (after a read index a quorum
        confirmed: every change acknowledged before this call is left out, every later one
        comes). ``prev_value``: events carry the value before the change. ``window``: events
        in flight from the node. The watch follows the cluster across failures: see
        ``Watch``. Raises BadRequestError for bad arguments (at once); the iterator raises
        the errors that end it."""
        body: dict[str, Any] = {"op": "watch", "bucket": _path(bucket)}
        if prefix is not None:
            body["prefix"] = _bytes(prefix, "prefix")
        if recursive:
            body["recursive"] = True
        if prev_value:
            body["prev_value"] = True
        if type(window) is not int or not 4 <= window <= 65536:
            raise BadRequestError("window must be an integer 4..65536", field="window")
        body["window"] = window
        if start_index is not None:
            _uint(start_index, "start_index")
        if not reconnect_timeout > 0:
            raise BadRequestError("reconnect_timeout must be > 0")
        watch = Watch(
            self.endpoints,
            body,
            start_index,
            attempt_timeout=self._chan.attempt_timeout,
            reconnect_timeout=reconnect_timeout,
            max_frame_size=self._chan.max_frame_size,
            curve=self._chan.curve,
        )
        watch.start()
        return watch


WATCH_SILENCE_S = 3.0  # a node that sent a watch nothing for this long is taken as gone
WATCH_CHECK_S = 0.1  # how often wait_watches looks at each connection's monitor
_ENDED_RETRY = frozenset((*RETRYABLE, "watch_lagged", "watch_not_found"))


class _Link:
    """One DEALER connection (and its monitor) to one node, shared by the watches of one
    thread on that node (``_link``): the node sends all of them one ``events_batch`` frame
    per round, and ``wait_watches`` polls one socket per node. It routes each item of a
    frame to the watch with that id (items of watch ids it no longer knows: an ended
    watch's, dropped) and each answer to the request awaiting it. Lives while a watch holds
    it (``users``); ``dead`` once its connection closed (every watch on it then resumes).
    The watches' acknowledgements wait in ``acks`` and go in one ``watch_ack`` request
    (``send_acks``) before the next wait for frames."""

    def __init__(
        self, ctx: zmq.Context[Any], ep: str, max_frame: int, curve: Mapping[int, Any]
    ) -> None:
        self.ep = ep
        self.max_frame = max_frame
        self.key = _link_key(ep, max_frame, curve)
        self.sock = connect_dealer(ctx, ep, max_frame, curve, monitor=True)
        self.monitor = self.sock.get_monitor_socket()
        self.watches: dict[int, Watch] = {}  # watch id -> the watch streaming on it
        self.owners: dict[int, Watch] = {}  # request id -> the watch that sent it
        self.answer: tuple[int, codec.Response] | None = None  # of the request awaited
        self.acks: dict[int, int] = {}  # watch id -> events delivered, not acknowledged yet
        self.ack_rids: set[int] = set()  # the requests of send_acks not answered yet
        self.awaited: int | None = None
        self.rids = itertools.count(1)
        self.users = 0
        self.dead = False
        self.checked = 0.0  # when wait_watches last looked at its monitor
        self.serial = next(_serials)  # names it in _poller's cache (an id() can be reused)

    def send(self, owner: Watch, body: dict[str, Any], wait: float = 0.0) -> int:
        """Sends ``body`` for ``owner``, waiting up to ``wait`` seconds for a connection;
        returns its request id (a send that could not go is dropped: the silence or the
        monitor moves the watch on)."""
        rid = next(self.rids)
        self.sock.setsockopt(zmq.SNDTIMEO, max(0, int(wait * 1000)))
        try:
            self.sock.send(codec.encode_request(rid, body))
        except zmq.ZMQError:
            return rid
        self.owners[rid] = owner
        return rid

    def send_acks(self) -> None:
        """Sends the acknowledgements waiting in ``acks`` in ONE request."""
        if self.acks:
            acks, self.acks = self.acks, {}
            rid = next(self.rids)
            body = {"op": "watch_ack", "acks": [[wid, n] for wid, n in acks.items()]}
            self.sock.setsockopt(zmq.SNDTIMEO, 0)
            try:
                self.sock.send(codec.encode_request(rid, body))
            except zmq.ZMQError:
                return  # dropped: the silence or the monitor moves the watches on
            self.ack_rids.add(rid)

    def read(self) -> None:
        """Handles the frames waiting now (never blocks); stops after the answer awaited
        (``awaited``), so that the frames after it go to the watch it starts."""
        for parts in drain(self.sock, 1024):
            if len(parts) != 1:
                continue
            try:
                frame = codec.unpack_frame(parts[0], self.max_frame)
            except BoltraftError:
                continue
            kind = frame[1]
            if kind == EVENTS_BATCH:
                try:
                    items = decode_batch(frame[2:])
                except ProtocolError:
                    continue
                now = time.monotonic()
                for wid, index, events, err in items:
                    w = self.watches.get(wid)
                    if w is not None:
                        w._item(index, events, err, now)
                if self.dead:  # the last watch on it ended and let go of it
                    return
            elif kind == codec.KIND_RESP:
                try:
                    resp = codec.decode_frame(parts[0], self.max_frame)[1]
                except BoltraftError:
                    continue
                owner = self.owners.pop(resp.request_id, None)
                if resp.request_id == self.awaited:
                    self.answer = (resp.request_id, resp)
                    return
                if owner is not None:
                    owner._answer(resp)
                elif resp.request_id in self.ack_rids:
                    self.ack_rids.discard(resp.request_id)
                    now = time.monotonic()
                    for w in self.watches.values():
                        w._heard = max(w._heard, now)
                    if resp.ok and type(resp.result) is list:
                        for wid in resp.result:  # the node forgot them: they start again
                            w = self.watches.get(wid)
                            if w is not None:
                                w._unbind()

    def disconnected(self) -> bool:
        return _disconnected(self.monitor)

    def fail(self) -> None:
        """Its connection closed: every watch on it resumes (on its next node)."""
        self.dead = True
        _forget_link(self)
        for w in list(self.watches.values()):
            w._lost()

    def close(self) -> None:
        self.dead = True
        _forget_link(self)
        self.sock.disable_monitor()
        self.monitor.close(0)
        self.sock.close(0)


_local = threading.local()  # links: {_link_key(...): _Link} of this thread
_serials = itertools.count(1)
_LinkKey = tuple[str, int, tuple[tuple[int, Any], ...]]


def _link_key(ep: str, max_frame: int, curve: Mapping[int, Any]) -> _LinkKey:
    """What a link is shared by: the node, the frame limit and the CURVE keys (watches of
    clients with different keys never share a connection)."""
    return ep, max_frame, tuple(sorted(curve.items()))


def _link(ctx: zmq.Context[Any], ep: str, max_frame: int, curve: Mapping[int, Any]) -> _Link:
    """This thread's live link to ``ep`` with ``curve`` (made when it has none), with one
    more user."""
    links: dict[_LinkKey, _Link] = _local.__dict__.setdefault("links", {})
    key = _link_key(ep, max_frame, curve)
    link = links.get(key)
    if link is None or link.dead:
        link = links[key] = _Link(ctx, ep, max_frame, curve)
    link.users += 1
    return link


def _forget_link(link: _Link) -> None:
    links: dict[_LinkKey, _Link] = _local.__dict__.get("links", {})
    if links.get(link.key) is link:
        del links[link.key]


class Watch:
    """An iterator over the changes of a watch (``Client.watch``), each an ``Event`` with
    its Raft ``index`` and its ``pos`` in a batch, in increasing ``(index, pos)`` order,
    each exactly once, across node failures, leader changes and restarts.

    How: the watch streams from one node (docs/protocol.md, section 5.1), on a connection
    the watches of one thread on that node share (``_Link``). When that node's connection
    closes, it sends nothing (not even its progress, every second) for
    ``WATCH_SILENCE_S``, or it ends the watch with a retryable error (``watch_lagged``,
    ``unavailable``, ...), the watch starts again on the same or the next node from the last
    index it received (skipping the events of that index it has), or from the node's last
    progress index when that is later. A node that does not retain that index answers
    ``compacted``; the watch then asks the other nodes, and raises CompactedError (with
    ``details["oldest_index"]``) only when none does. It raises RequestTimeoutError when no
    node took it for ``reconnect_timeout`` seconds, and any other error that ends it.

    ``last_index`` is the index of every change delivered so far, ``progress`` the index up
    to which every matching change was received. Not thread-safe (use a watch from the
    thread that made it); ``close()`` cancels it.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        body: dict[str, Any],
        start_index: int | None,
        *,
        attempt_timeout: float,
        reconnect_timeout: float,
        max_frame_size: int,
        curve: Mapping[int, Any] = {},
    ) -> None:
        self._eps = list(endpoints)
        self._curve = curve
        self._ep = 0
        self._body = body
        self._window = int(body["window"])
        self._start = start_index
        self._attempt_timeout = attempt_timeout
        self._reconnect_timeout = reconnect_timeout
        self._max_frame = max_frame_size
        self._ctx: zmq.Context[Any] = zmq.Context.instance()
        self._link: _Link | None = None
        self._wid: int | None = None
        self._buf: deque[Event] = deque()
        self._recv_last: tuple[int, int] | None = None  # (index, pos) of the last received
        self._error: BoltraftError | None = None  # what ended it, raised at the next read
        self.progress = 0 if start_index is None else start_index - 1
        self.last_index = 0
        self._unacked = 0  # delivered to the caller, not yet acknowledged to the node
        self._heard = 0.0
        self._closed = False
        self._known = start_index is not None  # where to resume is known
        self.resumes = 0  # how many times it started again on a node (for tests, tools)

    def __iter__(self) -> Watch:
        return self

    def __next__(self) -> Event:
        while not self._buf:
            if self._closed:
                self._raise()
                raise StopIteration
            self.poll(1.0)
        ev = self._buf.popleft()
        self._delivered(1, ev.index)
        return ev

    def take(self, limit: int | None = None) -> list[Event]:
        """The events waiting now, at most ``limit`` (all when None), in order and without
        waiting: what iterating would give, for one call instead of one per event (``poll``
        or ``wait_watches`` first to wait for some); empty when none are waiting."""
        buf = self._buf
        n = len(buf) if limit is None else max(0, min(limit, len(buf)))
        if n == 0:
            return []
        if n == len(buf):
            out = list(buf)
            buf.clear()
        else:
            out = [buf.popleft() for _ in range(n)]
        self._delivered(n, out[-1].index)
        return out

    def _delivered(self, n: int, last_index: int) -> None:
        """Notes ``n`` more events handed to the caller, the last at ``last_index``, and
        acknowledges them once a quarter of the window waits for it."""
        self.last_index = last_index
        self._unacked += n
        if self._unacked >= self._window // 4:
            self._ack()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Cancels the watch on its node (best effort) and lets go of its connection."""
        if self._closed and self._link is None:
            return
        self._closed = True
        if self._link is not None and self._wid is not None:
            self._link.acks.pop(self._wid, None)
            self._link.send(self, {"op": "watch_cancel", "watch": self._wid})
        self._drop()

    def start(self) -> None:
        """Starts the watch on a node now (``Client.watch`` calls it: "from now" is the
        time of that call); a no-op once started. Raises what ``poll`` raises."""
        if self._wid is None and not self._closed:
            self._subscribe()

    def poll(self, timeout: float) -> int:
        """Waits up to ``timeout`` seconds for events; returns how many are waiting to be
        iterated, at once (reading nothing more) when some already are. Resuming on another
        node may take longer (up to ``reconnect_timeout``). Raises what ends the watch."""
        if self._link is not None:
            self._link.send_acks()
        if self._buf:
            return len(self._buf)
        deadline = time.monotonic() + timeout
        while not self._closed:
            if self._wid is None:
                self._subscribe()
            link = self._link
            assert link is not None
            link.send_acks()
            wait = max(0, math.ceil((deadline - time.monotonic()) * 1000))
            got = dict(_poller([link]).poll(wait))
            if link.monitor in got and link.disconnected():
                link.fail()  # the node closed the connection
            elif link.sock in got:
                link.read()
            self._raise()
            now = time.monotonic()
            if self._wid is not None and now - self._heard > WATCH_SILENCE_S:
                self._lost()  # the node sent nothing, not even its progress
            if self._buf or now >= deadline:
                break
        self._raise()
        return len(self._buf)

    def _raise(self) -> None:
        """Raises the error that ended the watch, once."""
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    # --- the stream --------------------------------------------------------------------------
    def _item(self, index: int, events: list[Event], err: BoltraftError | None, now: float) -> None:
        """Takes this watch's item of an ``events_batch`` frame (``_Link.read``)."""
        self._heard = now
        last = self._recv_last
        if events and (last is None or (events[0].index, events[0].pos) > last):
            self._buf.extend(events)  # a list's events come in increasing order
            last = (events[-1].index, events[-1].pos)
        else:
            for ev in events:
                if last is None or (ev.index, ev.pos) > last:
                    self._buf.append(ev)
                    last = (ev.index, ev.pos)
        self._recv_last = last
        if index > self.progress:
            self.progress = index
        if err is not None:
            self._unbind()
            if err.code not in _ENDED_RETRY:
                self._closed = True
                self._error = err
                self._drop()
            else:
                self.resumes += 1
        elif not events:  # progress: the node knows we are alive
            self._ack()

    def _answer(self, resp: codec.Response) -> None:
        """An answer to one of its ``watch_ack`` or ``watch_cancel`` requests."""
        self._heard = time.monotonic()
        if not resp.ok and resp.error is not None and resp.error.code == "watch_not_found":
            self._unbind()  # the node forgot it: start again

    def _ack(self) -> None:
        """Notes its acknowledgement on its link (``_Link.send_acks`` sends it)."""
        if self._link is not None and self._wid is not None:
            acks = self._link.acks
            acks[self._wid] = acks.get(self._wid, 0) + self._unacked
            self._unacked = 0

    def _unbind(self) -> None:
        """The watch no longer streams on its link (it ended there)."""
        if self._link is not None and self._wid is not None:
            self._link.watches.pop(self._wid, None)
        self._wid = None

    def _lost(self) -> None:
        """The node is gone: the watch starts again on the next node."""
        self._drop()
        self._ep = (self._ep + 1) % len(self._eps)
        self.resumes += 1

    def _drop(self) -> None:
        """Lets go of its link (closed when no other watch holds it)."""
        self._unbind()
        link, self._link = self._link, None
        if link is not None:
            link.users -= 1
            if link.users <= 0:
                link.close()

    def _connect(self) -> None:
        self._drop()
        self._link = _link(self._ctx, self._eps[self._ep], self._max_frame, self._curve)

    def _subscribe(self) -> None:
        """Starts the watch on a node from where it left off (see the class docstring)."""
        give_up = time.monotonic() + self._reconnect_timeout
        compacted: dict[int, CompactedError] = {}
        failures = 0
        while True:
            if self._link is None or self._link.dead:
                self._connect()
            body = dict(self._body)
            if self._known:
                last = self._recv_last
                start = self.progress + 1
                if last is not None and self.progress < last[0]:
                    start = last[0]  # the rest of that entry's events may be missing
                body["start_index"] = start
            try:
                result = self._request(body)
            except CompactedError as err:
                compacted[self._ep] = err
                if len(compacted) == len(self._eps):
                    self._closed = True
                    self._drop()
                    oldest = min(int(e.details.get("oldest_index", 0)) for e in compacted.values())
                    raise CompactedError(
                        f"no node retains the changes from index {body.get('start_index')}",
                        oldest_index=oldest,
                        start_index=body.get("start_index"),
                    ) from None
                result = None
            except BoltraftError as err:
                if err.code not in _ENDED_RETRY:
                    self._closed = True
                    self._drop()
                    raise
                result = None
            if result is not None:
                if (
                    not isinstance(result, dict)
                    or type(result.get("watch")) is not int
                    or type(result.get("start_index")) is not int
                ):
                    self._closed = True
                    self._drop()
                    raise ProtocolError("a watch's answer must be {watch, start_index, ...}")
                assert self._link is not None
                self._wid = int(result["watch"])
                self._link.watches[self._wid] = self
                self._known = True
                first = int(result["start_index"])
                if first - 1 > self.progress:
                    self.progress = first - 1
                self._heard = time.monotonic()
                return
            if time.monotonic() >= give_up:
                self._closed = True
                self._drop()
                raise RequestTimeoutError(f"no node took the watch for {self._reconnect_timeout} s")
            failures += 1
            self._drop()
            self._ep = (self._ep + 1) % len(self._eps)
            if failures >= len(self._eps):
                time.sleep(min(0.5, 0.02 * 2 ** min(failures, 5)) * random.uniform(0.5, 1))

    def _request(self, body: dict[str, Any]) -> Any:
        """Returns the result of ``body`` sent to the current node; raises its error, or
        UnavailableError when it does not answer within the attempt timeout (what arrives
        meanwhile for the other watches of the link goes to them)."""
        link = self._link
        assert link is not None
        rid = link.send(self, body, self._attempt_timeout)
        link.owners.pop(rid, None)
        link.awaited, link.answer = rid, None
        try:
            deadline = time.monotonic() + self._attempt_timeout
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise UnavailableError("the node did not answer the watch in time")
                got = dict(_poller([link]).poll(max(1, int(remaining * 1000))))
                if link.monitor in got and link.disconnected():
                    link.fail()
                    raise UnavailableError("the node closed the connection")
                if link.sock in got:
                    link.read()
                if link.answer is not None:
                    resp = link.answer[1]
                    if resp.ok:
                        return resp.result
                    raise resp.error or ProtocolError("a failed answer without an error")
        finally:
            link.awaited, link.answer = None, None


def _poller(links: Sequence[_Link]) -> zmq.Poller:
    """A poller of the sockets and monitors of ``links``; this thread keeps the last few
    it made, so that a thread waiting on the same watches again and again makes none."""
    cache: dict[tuple[int, ...], zmq.Poller] = _local.__dict__.setdefault("pollers", {})
    key = tuple(link.serial for link in links)
    poller = cache.get(key)
    if poller is None:
        if len(cache) >= 8:
            cache.clear()
        poller = cache[key] = zmq.Poller()
        for link in links:
            poller.register(link.sock, zmq.POLLIN)
            poller.register(link.monitor, zmq.POLLIN)
    return poller


def wait_watches(watches: Sequence[Watch], timeout: float) -> list[Watch]:
    """The watches of ``watches`` that have events waiting, after waiting up to ``timeout``
    seconds for one of them (not at all when one has some already): one thread can serve
    many watches. One poll covers their connections (one per node: the watches of a thread
    share them); what arrived is read and decoded once for every watch of the connection;
    their monitors and silences are looked at every ``WATCH_CHECK_S``. Raises what ends one
    of them."""
    for w in watches:
        if w._link is not None and w._link.acks:
            w._link.send_acks()
    ready = [w for w in watches if w._buf]
    if ready:
        return ready
    links: dict[int, _Link] = {}
    for w in watches:
        if w._closed:
            continue
        if w._link is None or w._wid is None:  # between nodes: it starts again now
            w.poll(0)
            if w._link is None or w._wid is None:
                continue
        links.setdefault(id(w._link), w._link)
    if links:
        live = sorted(links.values(), key=lambda link: link.serial)
        got = dict(_poller(live).poll(max(0, math.ceil(timeout * 1000))))
        now = time.monotonic()
        for link in live:
            if link.sock in got:
                link.read()
            if link.monitor in got or now - link.checked >= WATCH_CHECK_S:
                link.checked = now
                if link.disconnected():
                    link.fail()
    elif timeout > 0:
        time.sleep(min(timeout, WATCH_CHECK_S))
    now = time.monotonic()
    for w in watches:
        w._raise()
        if w._wid is not None and now - w._heard > WATCH_SILENCE_S:
            w._lost()
    return [w for w in watches if w._buf]


def _disconnected(monitor: zmq.Socket[Any]) -> bool:
    """True when one of the events waiting on ``monitor`` is a closed connection."""
    return any(e == int(zmq.EVENT_DISCONNECTED) for e in monitor_events(monitor))
