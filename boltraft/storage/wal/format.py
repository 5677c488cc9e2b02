"""The WAL's record framing and the payload of each record type.

A record is a 9-byte little-endian header, then its payload::

    u32 length of the payload | u32 crc32 of (type byte + payload) | u8 type | payload

Payloads (``FORMAT_VERSION`` 1):

- ``STATE`` (first record of every segment): msgpack ``[version, reset, snap_index,
  snap_term, voters, learners, addrs, hs_term, hs_vote, hs_commit]``: the snapshot meta and
  hard state when the segment was opened. ``reset`` is true when the segment was opened by
  ``apply_snapshot`` (the log is empty at ``snap_index`` and older segments are obsolete).
- ``ENTRIES``: msgpack of the appended batch, one array ``[term, index, type, data]`` per
  entry (``Entry`` tuples pack as they are: one C call for the whole batch).
  ``ENTRIES_HS`` is the same when the append also stored a hard state: its ``HARD_STATE``
  record follows at once, and the two stand or fall together (a torn ``HARD_STATE`` after
  it drops the entries too, so no append is ever half applied).
- ``HARD_STATE``: u64 term, u64 commit (little-endian), then the vote in UTF-8.
- ``SNAPSHOT`` (written by ``compact``): msgpack ``[index, term, voters, learners, addrs]``.
- ``BOOTSTRAP``: msgpack ``[voters, learners, addrs]``, the initial membership.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from enum import IntEnum
from operator import itemgetter
from typing import Any

import msgpack

from boltraft.packing import pack_bulk
from boltraft.raft.types import ConfState, Entry, HardState, SnapshotMeta

FORMAT_VERSION = 1
HEADER = struct.Struct("<IIB")
HEADER_SIZE = HEADER.size
_HS = struct.Struct("<QQ")
_TERM = itemgetter(0)


class RecordType(IntEnum):
    STATE = 1
    ENTRIES = 2
    HARD_STATE = 3
    SNAPSHOT = 4
    BOOTSTRAP = 5
    ENTRIES_HS = 6  # ENTRIES followed by the HARD_STATE record of the same append


_TYPE_CRC = {int(t): zlib.crc32(bytes([t])) for t in RecordType}


def header(rtype: int, payload: bytes) -> bytes:
    """Returns the header that frames ``payload`` as a record of type ``rtype``."""
    return HEADER.pack(len(payload), zlib.crc32(payload, _TYPE_CRC[rtype]), rtype)


def frame(rtype: int, payload: bytes) -> bytes:
    """Returns the whole record (header and payload) of type ``rtype``."""
    return header(rtype, payload) + payload


def read_record(buf: memoryview, off: int) -> tuple[int, memoryview, int] | None:
    """Returns ``(type, payload, next offset)`` of the record at ``off`` in ``buf``, or None
    when ``buf`` holds no whole valid record there (too short, a CRC mismatch or an unknown
    type): the caller decides whether that is a torn tail or corruption."""
    end = off + HEADER_SIZE
    if end > len(buf):
        return None
    length, crc, rtype = HEADER.unpack_from(buf, off)
    init = _TYPE_CRC.get(rtype)
    if init is None or end + length > len(buf):
        return None
    payload = buf[end : end + length]
    if zlib.crc32(payload, init) != crc:
        return None
    return rtype, payload, end + length


def encode_hs(hs: HardState) -> bytes:
    """Returns the ``HARD_STATE`` payload of ``hs``."""
    return _HS.pack(hs.term, hs.commit) + hs.vote.encode()


def decode_hs(payload: memoryview | bytes) -> HardState:
    """Returns the hard state in a ``HARD_STATE`` payload. Raises ValueError or struct.error
    when it is malformed."""
    term, commit = _HS.unpack_from(payload)
    return HardState(term, bytes(payload[_HS.size :]).decode(), commit)


def _conf(voters: Any, learners: Any, addrs: Any) -> ConfState:
    if not isinstance(addrs, dict):
        raise ValueError("addrs must be a map")
    return ConfState(tuple(voters), tuple(learners), addrs)


def encode_snap(meta: SnapshotMeta) -> bytes:
    """Returns the ``SNAPSHOT`` payload of ``meta`` (the membership with its addresses)."""
    cs = meta.conf_state
    return msgpack.packb((meta.index, meta.term, cs.voters, cs.learners, cs.addrs))


def decode_snap(payload: memoryview | bytes) -> SnapshotMeta:
    """Returns the snapshot meta in a ``SNAPSHOT`` payload. Raises ValueError (or a msgpack
    error) when it is malformed."""
    index, term, voters, learners, addrs = msgpack.unpackb(payload)
    return SnapshotMeta(int(index), int(term), _conf(voters, learners, addrs))


def encode_conf(cs: ConfState) -> bytes:
    """Returns the ``BOOTSTRAP`` payload of ``cs``."""
    return msgpack.packb((cs.voters, cs.learners, cs.addrs))


def decode_conf(payload: memoryview | bytes) -> ConfState:
    """Returns the membership in a ``BOOTSTRAP`` payload. Raises ValueError when malformed."""
    voters, learners, addrs = msgpack.unpackb(payload)
    return _conf(voters, learners, addrs)


def encode_state(snap: SnapshotMeta, hs: HardState, reset: bool) -> bytes:
    """Returns the ``STATE`` payload that opens a segment (``reset``: by apply_snapshot)."""
    cs = snap.conf_state
    return msgpack.packb(
        (
            FORMAT_VERSION,
            reset,
            snap.index,
            snap.term,
            cs.voters,
            cs.learners,
            cs.addrs,
            hs.term,
            hs.vote,
            hs.commit,
        )
    )


def decode_state(payload: memoryview | bytes) -> tuple[bool, SnapshotMeta, HardState]:
    """Returns ``(reset, snapshot meta, hard state)`` from a ``STATE`` payload. Raises
    ValueError when it is malformed or of an unknown format version."""
    version, reset, index, term, voters, learners, addrs, hs_term, vote, commit = msgpack.unpackb(
        payload
    )
    if version != FORMAT_VERSION:
        raise ValueError(f"unknown WAL format version {version!r}")
    snap = SnapshotMeta(int(index), int(term), _conf(voters, learners, addrs))
    return bool(reset), snap, HardState(int(hs_term), str(vote), int(commit))


def encode_entries(entries: Sequence[Entry]) -> bytes:
    """Returns the ``ENTRIES`` payload of a batch (a list or tuple packs without a copy)."""
    return pack_bulk(entries if isinstance(entries, (list, tuple)) else list(entries))


def decode_entries(payload: memoryview | bytes) -> list[Entry]:
    """Returns the entries of an ``ENTRIES`` payload. Raises ValueError / TypeError (or a
    msgpack error) when it is malformed."""
    return list(map(Entry._make, msgpack.unpackb(payload, use_list=False)))


def entry_terms(payload: memoryview | bytes) -> tuple[int, list[int]]:
    """Returns ``(first index, terms)`` of an ``ENTRIES`` payload without building entries.
    Raises ValueError when the batch is empty or its indexes are not contiguous."""
    raw = msgpack.unpackb(payload, use_list=False)
    if not raw:
        raise ValueError("empty ENTRIES record")
    start = raw[0][1]
    if raw[-1][1] != start + len(raw) - 1:
        raise ValueError("ENTRIES record indexes are not contiguous")
    return start, list(map(_TERM, raw))
