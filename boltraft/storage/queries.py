"""Read requests against the bucket engine: get, scan, buckets, count.

A read request is a map (the body of a client read request):

    {"op": "get", "bucket": path, "key": k}                  -> bytes | None
    {"op": "scan", "bucket": path, ["prefix": p | "start": s, "end": e], ["limit": n],
     ["reverse": bool], ["after": token]}                      -> {"items": [[k, v], ...],
                                                                   "next": token | None,
                                                                   "index": applied index}
    {"op": "buckets", ["bucket": path]}                        -> [name, ...] (root if absent)
    {"op": "count", "bucket": path}                            -> int

``path`` is a bucket name or a non-empty list of names; names, keys and bounds are bytes (str
is UTF-8 encoded). In a scan, ``next`` is the opaque continuation token to pass as ``after``
for the following page (None when the scan is complete), and ``index`` the applied index of
the state the page was read from (the "scan, then watch from ``index + 1``" pattern of
docs/protocol.md, section 5.1); a page holds at most ``limit`` items and stops once their
keys and values reach ``SCAN_PAGE_BYTES``; a nested bucket's entry has value None. The
server's own fields "read", "max_lag", "v", "cid" and "seq" are accepted and ignored here.
Every request is checked before the store is touched: BadRequestError for a missing field, an
unknown field or a wrong type; the engine raises its own typed errors (BucketNotFoundError,
InvalidArgumentError for a bad token...).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lmdb

from boltraft.errors import BadRequestError, BoltraftError, CorruptionError
from boltraft.storage.applied import APPLIED
from boltraft.storage.commands import MAX_PATH_BYTES, MAX_PATH_DEPTH
from boltraft.storage.db import DB
from boltraft.storage.tx import Tx

SCAN_PAGE_BYTES = 4 << 20
"""A scan answer stops after the item that brings its keys and values to this many bytes
(with ``next`` set): one answer stays far below the 16 MiB frame limit."""
LMDB_DAMAGE = (lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.BadRslotError)
"""What LMDB raises when it reads a damaged page."""
_IGNORED = frozenset({"op", "read", "max_lag", "v", "cid", "seq"})
_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    # op -> (required fields, optional fields)
    "get": (frozenset({"bucket", "key"}), frozenset()),
    "scan": (
        frozenset({"bucket"}),
        frozenset({"prefix", "start", "end", "limit", "reverse", "after"}),
    ),
    "buckets": (frozenset(), frozenset({"bucket"})),
    "count": (frozenset({"bucket"}), frozenset()),
}
READ_OPS = tuple(_FIELDS)


def _bad(message: str, **details: Any) -> BadRequestError:
    return BadRequestError(message, **details)


def _bytes(value: Any, field: str) -> bytes:
    if type(value) is bytes:
        return value
    if type(value) is str:
        return value.encode()
    raise _bad(f"field {field!r} must be bytes or str, not {type(value).__name__}", field=field)


def _path(value: Any) -> tuple[bytes, ...]:
    """The bucket path ``value`` names; BadRequestError past the limits of write paths
    (``commands.MAX_PATH_DEPTH`` names, ``commands.MAX_PATH_BYTES`` bytes)."""
    if type(value) is list or type(value) is tuple:
        if not value:
            raise _bad("field 'bucket' must name at least one bucket", field="bucket")
        path = tuple([_bytes(name, "bucket") for name in value[: MAX_PATH_DEPTH + 1]])
    elif type(value) is bytes or type(value) is str:
        path = (_bytes(value, "bucket"),)
    else:
        raise _bad("field 'bucket' must be a bucket name or a list of names", field="bucket")
    if len(path) > MAX_PATH_DEPTH or sum(map(len, path)) > MAX_PATH_BYTES:
        raise _bad(
            f"field 'bucket': a bucket path has at most {MAX_PATH_DEPTH} names of at most "
            f"{MAX_PATH_BYTES} bytes in all",
            field="bucket",
        )
    return path


def validate_read(request: Any) -> dict[str, Any]:
    """Returns the normalized read request (paths as tuples of bytes, bounds as bytes).

    Raises BadRequestError (see the module docstring); never changes ``request``.
    """
    if type(request) is not dict:
        raise _bad(f"a read request must be a map, not {type(request).__name__}")
    op = request.get("op")
    spec = _FIELDS.get(op) if type(op) is str else None
    if spec is None:
        raise _bad(f"unknown read op {op!r}", field="op")
    required, optional = spec
    out: dict[str, Any] = {"op": op}
    for field, value in request.items():
        if field in _IGNORED:
            continue
        if field not in required and field not in optional:
            raise _bad(f"unknown field {field!r} for {op!r}", field=field)
        if field == "bucket":
            out[field] = _path(value)
        elif field == "limit":
            if value is not None and (type(value) is not int or value < 0):
                raise _bad("field 'limit' must be a non-negative integer", field=field)
            out[field] = value
        elif field == "reverse":
            if type(value) is not bool:
                raise _bad("field 'reverse' must be a boolean", field=field)
            out[field] = value
        elif value is not None:
            out[field] = _bytes(value, field)
    missing = sorted(required - out.keys())
    if missing:
        raise _bad(f"{op!r} is missing field(s) {missing}", missing=missing)
    if "prefix" in out and ("start" in out or "end" in out):
        raise _bad("a scan takes a prefix or a start/end range, not both", field="prefix")
    return out


def execute_read(db: DB, request: Any) -> Any:
    """Returns the result of the read ``request`` (see the module docstring for each op).

    Runs in one read transaction. Raises BadRequestError for a bad request, and the engine's
    typed errors (e.g. BucketNotFoundError) for a request the store refuses.
    """
    req = validate_read(request)
    with db.view() as tx:
        return _read(tx, req)


def execute_reads(db: DB, requests: Sequence[Any]) -> list[Any]:
    """Returns one entry per request, in order: its result as ``execute_read`` would return
    it, or the BoltraftError instance it failed with (one bad or refused read never stops
    the others; a value that fails its checksum, or a page LMDB finds damaged, is a
    CorruptionError there). All of them run in ONE read transaction, so they see one snapshot and a
    bucket path is walked once; an empty ``requests`` gives [] without opening one."""
    if not requests:
        return []
    out: list[Any] = []
    append = out.append
    with db.view() as tx:
        for request in requests:
            try:
                append(_read(tx, validate_read(request)))
            except BoltraftError as err:
                append(err)
            except LMDB_DAMAGE as exc:  # LMDB found a damaged page: never served
                append(CorruptionError(f"the state store is damaged: {exc}"))
    return out


def _read(tx: Tx, req: dict[str, Any]) -> Any:
    """Returns the result of the validated read ``req`` inside ``tx``; raises the engine's
    typed errors."""
    op = req["op"]
    if op == "buckets":
        return tx.buckets(req.get("bucket", ()))
    bucket = tx.bucket(req["bucket"])
    if op == "get":
        return bucket.get(req["key"])
    if op == "count":
        return bucket.count()
    items, token = bucket.scan(
        prefix=req.get("prefix"),
        start=req.get("start"),
        end=req.get("end"),
        limit=req.get("limit"),
        reverse=req.get("reverse", False),
        after=req.get("after"),
        max_bytes=SCAN_PAGE_BYTES,
    )
    raw = tx.state_record()
    index = APPLIED.unpack(raw)[0] if raw else 0
    return {"items": [[k, v] for k, v in items], "next": token, "index": index}
