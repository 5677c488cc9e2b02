"""On-disk layout of the bucket engine, and the whole-store walks (tree, stats, check).

One LMDB environment per data directory: the user data in the main (unnamed) db, next to
three named sub-dbs and the state record. In format 5 (``boltraft-5``, what a new store is
created as):

- main db, below ``HIGH_DATA``: the records of the sub-dbs ``buckets``, ``meta`` and ``sys``
  (their names sort there);
- main db, in ``[HIGH_DATA, HIGH_DATA_END)``: ``bucket_prefix(id, HIGH_TAG) + key -> value``,
  every user key of every bucket;
- main db, last: ``STATE_KEY_TAIL -> the state record`` (``Tx.state_record``: the state
  machine's applied index).
- ``buckets``: ``bucket_prefix(parent_id, tag) + name -> RECORD(id, sequence)``: one entry per
  bucket, under its parent (the root has id 0 and no record).
- ``meta``:    the internal keyspace of ``Tx.meta_*`` (the dedup table...).
- ``sys``:     ``FORMAT_KEY -> FORMAT`` and ``NEXT_ID_KEY -> u64`` (the next bucket id).

Why the main db: a durable apply then writes the same pages as a raw LMDB put of the same
key (the data leaf and, on its path, the state record), and no sub-db root record besides.

Why the data sorts after the sub-db records, and the state record after the data (format 5):
LMDB fills a page completely only when a key is added at the END of a page (it then splits
100/0); anywhere else it splits 50/50. Keys appended at the end of the last bucket (sequential
keys, the common case of logs and ids) therefore make full pages only when nothing follows
them. An apply of several commands lifts the state record first and writes it back last
(``Tx.lift_state_record``), so the record still shares the newest data's page and the data
appends fill their pages (a single command leaves the record in place:
``boltraft.storage.fsm`` says why). The price: the sub-db records sit on the main db's first
leaf, so a commit that changes a sub-db (the dedup records of exactly-once writes, in
``meta``) also writes that leaf and its branch.

Value checksums (every format): a store whose ``sys`` sub-db holds ``VALUE_CRC_KEY`` stores
each user value followed by 4 bytes, the CRC32 (little-endian) of its stored key and the
value (``seal``), and every read verifies it (``unseal``: CorruptionError for a value that
does not match, so a flipped bit is never served and a value is never read under another
key). A new store is created with it; a store opened writable without it (made before value
checksums) is migrated in one write transaction that seals every value and sets the key; a
read-only open of such a store serves its values as they are (``SubDbs.crc`` False).

Formats 3 and 4 (``FORMATS_LOW_DATA``) put the user data first, under prefixes of tag 0
(below ``DATA_END``), and ``STATE_KEY`` among the sub-db records after it: the same logical
content, served as it is. Format 4 keys the dedup records seq first, formats 3 client id first
(``boltraft.storage.dedup``); format 5 keys them like format 4. Older formats are refused by
their marker.

Invariants (``check_store`` verifies them): a child's id is greater than its parent's and
less than the next id, ids are unique, every bucket entry's parent exists, every data key
belongs to an existing bucket other than the root, and no name is both a key and a bucket
in the same parent.
"""

from __future__ import annotations

import struct
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import lmdb

from boltraft.errors import CorruptionError, DataDirNotFoundError
from boltraft.storage.keys import HIGH_TAG, PATH_SEP, ROOT_ID, bucket_prefix, split_prefix

LEGACY_DATA_DB = b"data"  # formats 1 and 2 kept the user data in this sub-db
BUCKETS_DB = b"buckets"
META_DB = b"meta"
SYS_DB = b"sys"
MAX_DBS = 8

FORMAT_KEY = b"format"
FORMAT = b"boltraft-5"  # what a new store is created as
FORMAT_LOW_DATA = b"boltraft-4"  # the user data before the sub-db records, tag 0
FORMAT_CID_FIRST = b"boltraft-3"  # format 4 but for its dedup records' key layout
FORMATS_LOW_DATA = (FORMAT_LOW_DATA, FORMAT_CID_FIRST)
FORMATS = (FORMAT, *FORMATS_LOW_DATA)  # every format this code reads and writes
STATE_KEY = b"state"  # formats 3 and 4
STATE_KEY_TAIL = b"\xff"  # format 5: after every data key
DATA_END = b"\x09"  # formats 3 and 4: data keys sort below it, the internal records above
HIGH_DATA = bytes((HIGH_TAG + 1,))  # format 5: data keys sort from here ...
HIGH_DATA_END = bytes((HIGH_TAG + 9,))  # ... up to here
NEXT_ID_KEY = b"next_id"
VALUE_CRC_KEY = b"value_crc"  # in sys: the user values carry their checksum (``seal``)
VALUE_CRC = b"crc32"

RECORD = struct.Struct(">QQ")
"""A bucket record: (bucket id, last sequence number handed out by next_sequence)."""
U64 = struct.Struct(">Q")
_CRC = struct.Struct("<I")
CRC_SIZE = _CRC.size


def seal(full_key: bytes, value: bytes) -> bytes:
    """Returns what a checksummed store keeps for ``value`` at ``full_key``: the value, then
    the CRC32 of key and value."""
    return value + _CRC.pack(zlib.crc32(value, zlib.crc32(full_key)))


def unseal(full_key: bytes, stored: bytes) -> bytes:
    """Returns the value ``seal(full_key, value)`` kept. Raises CorruptionError (details
    ``key`` in hex) when ``stored`` is too short or its checksum does not match."""
    value = stored[:-CRC_SIZE]
    if len(stored) < CRC_SIZE or _CRC.unpack_from(stored, len(value))[0] != zlib.crc32(
        value, zlib.crc32(full_key)
    ):
        raise CorruptionError(
            f"the stored value of key {full_key.hex()} fails its checksum: the state store "
            "is damaged",
            key=full_key.hex(),
        )
    return value


class SubDbs(NamedTuple):
    """The db handles of one environment (``data`` and ``main`` are both the main db), its
    format marker (one of ``FORMATS``) and what the format fixes: the prefix tag, the root's
    prefix and the state record's key."""

    data: lmdb._Database
    buckets: lmdb._Database
    meta: lmdb._Database
    sys: lmdb._Database
    main: lmdb._Database
    format: bytes = FORMAT
    crc: bool = True  # the user values carry their checksum (``seal``)
    tag: int = HIGH_TAG
    root: bytes = bucket_prefix(ROOT_ID, HIGH_TAG)
    state_key: bytes = STATE_KEY_TAIL


def _format_fields(fmt: bytes) -> dict[str, Any]:
    """Returns the SubDbs fields that format ``fmt`` (one of FORMATS) fixes."""
    if fmt in FORMATS_LOW_DATA:
        return {"format": fmt, "tag": 0, "root": bucket_prefix(ROOT_ID), "state_key": STATE_KEY}
    return {"format": fmt}


def data_range(dbs: SubDbs) -> tuple[bytes, bytes]:
    """Returns ``(first, end)``: the main db's user data keys are ``first <= key < end``."""
    return (HIGH_DATA, HIGH_DATA_END) if dbs.tag else (b"", DATA_END)


def _keys_between(cur: lmdb.Cursor[bytes], lo: bytes, hi: bytes | None) -> Iterator[bytes]:
    """Yields the keys ``lo <= key < hi`` (``hi`` None: to the end) of ``cur``'s db."""
    if not (cur.set_range(lo) if lo else cur.first()):
        return
    for k in cur.iternext(keys=True, values=False):
        if hi is not None and k >= hi:
            return
        yield k


def _items_between(cur: lmdb.Cursor[bytes], lo: bytes, hi: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Yields the items ``lo <= key < hi`` of ``cur``'s db."""
    if not (cur.set_range(lo) if lo else cur.first()):
        return
    for k, v in cur.iternext():
        if k >= hi:
            return
        yield k, v


def data_keys(txn: lmdb.Transaction[bytes], dbs: SubDbs) -> Iterator[bytes]:
    """Yields every user data key of the store, in order."""
    return _keys_between(txn.cursor(db=dbs.data), *data_range(dbs))


def walk_buckets(
    txn: lmdb.Transaction[bytes], dbs: SubDbs
) -> list[tuple[tuple[bytes, ...], int, int]]:
    """Returns every bucket as ``(path, id, sequence)``, parents before children, in key order.

    Entries whose parent is missing are not reachable and so are left out (``check_store``
    reports them).
    """
    out: list[tuple[tuple[bytes, ...], int, int]] = []
    stack: list[tuple[tuple[bytes, ...], int]] = [((), ROOT_ID)]
    while stack:
        path, bid = stack.pop()
        prefix = bucket_prefix(bid, dbs.tag)
        children: list[tuple[tuple[bytes, ...], int]] = []
        cur = txn.cursor(db=dbs.buckets)
        if cur.set_range(prefix):
            for k, v in cur.iternext():
                if not k.startswith(prefix):
                    break
                if len(v) != RECORD.size:
                    continue
                cid, seq = RECORD.unpack(v)
                if cid <= bid:
                    continue  # would loop; check_store reports it
                child = (*path, k[len(prefix) :])
                out.append((child, cid, seq))
                children.append((child, cid))
        stack.extend(reversed(children))
    out.sort(key=lambda item: item[0])
    return out


def keys_per_bucket(txn: lmdb.Transaction[bytes], dbs: SubDbs) -> Counter[int]:
    """Returns the number of data keys stored under each bucket id (one pass, keys only)."""
    counts: Counter[int] = Counter()
    for k in data_keys(txn, dbs):
        split = split_prefix(k, dbs.tag)
        counts[split[0] if split else -1] += 1
    return counts


def store_stats(txn: lmdb.Transaction[bytes], dbs: SubDbs) -> dict[str, Any]:
    """Returns counts of the store's contents: buckets, keys, meta keys, depth, sub-db pages."""
    buckets = walk_buckets(txn, dbs)
    data = txn.stat(dbs.data)
    pages = 0
    for db in (dbs.main, dbs.buckets, dbs.meta, dbs.sys):
        st = txn.stat(db)
        pages += st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
    return {
        "buckets": len(buckets),
        "max_depth": max((len(p) for p, _, _ in buckets), default=0),
        "keys": data["entries"] - len(internal_records(txn, dbs)),
        "meta_keys": txn.stat(dbs.meta)["entries"],
        "btree_depth": data["depth"],
        "tree_pages": pages,
    }


def check_store(txn: lmdb.Transaction[bytes], dbs: SubDbs) -> list[str]:
    """Returns the consistency problems found in one read transaction (empty list = ok).

    Never raises for a bad store: what LMDB itself refuses to read is reported as a problem.
    """
    try:
        return _check(txn, dbs)
    except lmdb.Error as exc:
        return [f"lmdb error while checking: {exc}"]


def _check(txn: lmdb.Transaction[bytes], dbs: SubDbs) -> list[str]:
    problems: list[str] = []
    fmt = txn.get(FORMAT_KEY, db=dbs.sys)
    if fmt not in FORMATS:
        problems.append(f"format marker is {fmt!r}, expected one of {FORMATS!r}")
    raw_next = txn.get(NEXT_ID_KEY, db=dbs.sys)
    next_id = U64.unpack(raw_next)[0] if raw_next and len(raw_next) == U64.size else None
    if next_id is None:
        problems.append(f"next bucket id is missing or malformed: {raw_next!r}")

    # Pass 1: bucket records.
    parent_of: dict[int, int] = {}
    name_of: dict[int, bytes] = {}
    entry_keys: set[bytes] = set()
    bucket_entries = 0
    for k, v in txn.cursor(db=dbs.buckets).iternext():
        bucket_entries += 1
        split = split_prefix(k, dbs.tag)
        if split is None:
            problems.append(f"malformed bucket entry key {k!r}")
            continue
        parent, plen = split
        name = k[plen:]
        if not name or PATH_SEP in name:
            problems.append(f"invalid bucket name {name!r} under bucket id {parent}")
        if len(v) != RECORD.size:
            problems.append(f"malformed bucket record for {name!r} under id {parent}: {v!r}")
            continue
        cid = RECORD.unpack(v)[0]
        if cid in parent_of:
            problems.append(f"bucket id {cid} is used twice ({name!r} under id {parent})")
            continue
        if cid <= parent:
            problems.append(f"bucket id {cid} is not greater than its parent's id {parent}")
        if next_id is not None and cid >= next_id:
            problems.append(f"bucket id {cid} is not below the next id {next_id}")
        parent_of[cid] = parent
        name_of[cid] = name
        entry_keys.add(k)
    for cid, parent in parent_of.items():
        if parent != ROOT_ID and parent not in parent_of:
            problems.append(
                f"bucket {name_of[cid]!r} (id {cid}) has a missing parent bucket id {parent}"
            )

    # Pass 2: data keys.
    orphans: Counter[int] = Counter()
    data_entries = 0
    for k in data_keys(txn, dbs):
        data_entries += 1
        split = split_prefix(k, dbs.tag)
        if split is None or split[1] == len(k):
            problems.append(f"malformed data key {k!r}")
            continue
        if split[0] not in parent_of:
            orphans[split[0]] += 1
        elif k in entry_keys:
            problems.append(f"key {k!r} is both a value and a bucket")
    if dbs.crc:
        first, end = data_range(dbs)
        for k, v in _items_between(txn.cursor(db=dbs.data), first, end):
            if len(v) < CRC_SIZE or seal(k, v[:-CRC_SIZE]) != v:
                problems.append(f"the value of data key {k!r} fails its checksum")
    for bid, n in sorted(orphans.items()):
        where = "the root" if bid == ROOT_ID else f"unknown bucket id {bid}"
        problems.append(f"{n} orphan key(s) under {where}")

    # The main db holds nothing but the user data, the sub-db records and the state record.
    records = internal_records(txn, dbs)
    for k in sorted(set(records) - {BUCKETS_DB, META_DB, SYS_DB, dbs.state_key}):
        problems.append(f"unexpected key {k!r} in the main db, outside the user data")

    # Counts: what a full walk sees must agree with LMDB's own entry counts.
    internal = len(records)
    for label, db, seen in (
        ("data", dbs.data, data_entries + internal),
        ("buckets", dbs.buckets, bucket_entries),
    ):
        recorded = txn.stat(db)["entries"]
        if recorded != seen:
            problems.append(f"{label}: LMDB counts {recorded} entries but a walk found {seen}")
    reachable = len(walk_buckets(txn, dbs))
    if reachable != len(parent_of) and not problems:
        problems.append(f"{len(parent_of) - reachable} bucket(s) not reachable from the root")
    return problems


def internal_records(txn: lmdb.Transaction[bytes], dbs: SubDbs | None = None) -> list[bytes]:
    """Returns the keys of the main db outside the user data: sub-db records and the state
    record (a handful; anything else there means the environment is not a bucket store).
    Without ``dbs`` (format not known yet): the keys outside the data of every format."""
    cur = txn.cursor(db=None if dbs is None else dbs.main)
    gaps: tuple[tuple[bytes, bytes | None], ...]
    if dbs is None:
        gaps = ((DATA_END, HIGH_DATA), (HIGH_DATA_END, None))
    else:
        first, end = data_range(dbs)
        gaps = ((b"", first), (end, None)) if first else ((end, None),)
    return [k for lo, hi in gaps for k in _keys_between(cur, lo, hi)]


def open_store(env: lmdb.Environment, p: Path) -> SubDbs:
    """Returns the db handles, creating an empty store in a fresh writable environment.

    Raises CorruptionError when the environment holds something else or another format
    (also an older one of ours), or LMDB finds a damaged page on the way (it aborts the
    process on some: ``pagecheck.check_pages`` finds them first), and DataDirNotFoundError
    for a read-only open of an environment that has no store yet.
    """
    try:
        return _open_store(env, p)
    except lmdb.CorruptedError as exc:
        raise CorruptionError(f"cannot open the store in {p}: {exc}", path=str(p)) from None


def _open_store(env: lmdb.Environment, p: Path) -> SubDbs:
    subs = {BUCKETS_DB, META_DB, SYS_DB}
    readonly = env.flags()["readonly"]
    with env.begin() as txn:
        names = set(internal_records(txn))
        has_data = txn.cursor().first()
    if names - subs - {STATE_KEY, STATE_KEY_TAIL, LEGACY_DATA_DB} or (
        has_data and SYS_DB not in names
    ):
        raise CorruptionError(f"{p} holds an LMDB environment that is not a bucket store")
    if readonly and not subs <= names:
        raise DataDirNotFoundError(f"no bucket store in {p}", path=str(p))
    # Handles opened inside a transaction are private to it until it commits, so open them
    # with py-lmdb's own short transaction.
    main = env.open_db(None)
    buckets, meta, sys_db = (
        env.open_db(n, create=not readonly) for n in (BUCKETS_DB, META_DB, SYS_DB)
    )
    dbs = SubDbs(main, buckets, meta, sys_db, main)
    with env.begin(write=not readonly) as txn:
        fmt = txn.get(FORMAT_KEY, db=dbs.sys)
        if fmt is None and not readonly:
            fmt = FORMAT
            txn.put(FORMAT_KEY, FORMAT, db=dbs.sys)
            txn.put(NEXT_ID_KEY, U64.pack(ROOT_ID + 1), db=dbs.sys)
            txn.put(VALUE_CRC_KEY, VALUE_CRC, db=dbs.sys)
        elif fmt not in FORMATS:
            raise CorruptionError(f"{p} has store format {fmt!r}, expected one of {FORMATS!r}")
        dbs = dbs._replace(**_format_fields(bytes(fmt)))
        crc = txn.get(VALUE_CRC_KEY, db=dbs.sys)
        if crc is None and not readonly:
            _seal_all(txn, dbs)
            crc = VALUE_CRC
        if crc not in (None, VALUE_CRC):
            raise CorruptionError(f"{p} has value checksums {crc!r}, expected {VALUE_CRC!r}")
    return dbs._replace(crc=crc is not None)


def _seal_all(txn: lmdb.Transaction[bytes], dbs: SubDbs) -> None:
    """Migrates a store made before value checksums: seals every user value and sets
    ``VALUE_CRC_KEY``, in the write transaction ``txn``."""
    first, end = data_range(dbs)
    sealed = [(k, seal(k, v)) for k, v in _items_between(txn.cursor(db=dbs.data), first, end)]
    if sealed:
        txn.cursor(db=dbs.data).putmulti(sealed)
    txn.put(VALUE_CRC_KEY, VALUE_CRC, db=dbs.sys)
