"""The change feed's wire format (docs/protocol.md, section 5.1), shared by the node that
streams it (``boltraft.server.watching``) and the clients that read it
(``boltraft.client.Watch``).

A node streams the watches of one client connection in ``events_batch`` frames:
``[1, "events_batch", [[event, ...], ...], [[watch_id, index, list, error], ...]]``. The
first array holds event lists; each item of the second speaks for one watch of that
connection: ``index`` is the node's progress for it (every matching change up to it has
been sent, in this frame or before), ``list`` the position in the first array of the
watch's new events (nil: none), ``error`` nil or the wire form of the error that ended the
watch (after this item's events). Watches that get the same events share one list: a
client decodes it once. One frame carries what one round of sending has for every watch
of the connection (its items in the order the node made them: a watch's items in stream
order). Each event is the array ``[index, pos, type, bucket, key, value, prev]``:

- ``index``: the Raft index of the entry that made the change; ``pos``: the op's position
  inside a ``batch`` entry (0 for other entries). ``(index, pos)`` orders every change of
  the cluster, and is the same on every node.
- ``type``: ``"put"``, ``"delete"``, ``"create_bucket"`` or ``"delete_bucket"``.
- ``bucket``: the bucket path (array of bin); for a bucket event, the path of the bucket
  created or deleted.
- ``key``: bin (nil for a bucket event); ``value``: the new value (nil unless ``put``);
  ``prev``: the value before the change when the watch asked for ``prev_value`` (nil when
  the key had none), else nil.

Invariant: events of one watch come in strictly increasing ``(index, pos)`` order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from boltraft.errors import BoltraftError, ProtocolError
from boltraft.packing import pack
from boltraft.transport import codec

EVENTS_BATCH = "events_batch"
EVENT_TYPES = ("put", "delete", "create_bucket", "delete_bucket")
_TYPES = frozenset(EVENT_TYPES)

_HEAD = b"\x94" + msgpack.packb(codec.PROTOCOL_VERSION) + msgpack.packb(EVENTS_BATCH)
_header = msgpack.Packer(use_bin_type=True).pack_array_header


@dataclass(slots=True)
class Event:
    """One change of the cluster's data (see the module docstring for each field). Read
    only by convention: a client shares the events of one list between its watches (not
    frozen: a frozen dataclass costs four times as much to make)."""

    index: int
    pos: int
    type: str
    bucket: tuple[bytes, ...]
    key: bytes | None
    value: bytes | None
    prev: bytes | None = None


def encode_item(wid: int, index: int, slot: int | None, error: BoltraftError | None) -> bytes:
    """One watch's item of an ``events_batch`` frame: its progress ``index``, ``slot`` the
    position of its event list in the frame (None: no events), ``error`` what ended it."""
    return pack((wid, index, slot, None if error is None else error.to_wire()))


def encode_batch(lists: Sequence[bytes], items: Sequence[bytes]) -> bytes:
    """The ``events_batch`` frame of the packed event lists ``lists`` (each a msgpack array
    of event arrays, packed once for every watch that gets it) and the packed ``items``
    (``encode_item``)."""
    return b"".join((_HEAD, _header(len(lists)), *lists, _header(len(items)), *items))


def decode_batch(
    fields: list[Any],
) -> list[tuple[int, int, list[Event], BoltraftError | None]]:
    """``[(watch_id, index, events, error), ...]`` of an ``events_batch`` frame's fields
    (those after the kind), in the frame's order; watches that share a list share its
    ``Event`` objects (and the list). Raises ProtocolError when the frame's shape is
    wrong."""
    if len(fields) != 2 or type(fields[0]) is not list or type(fields[1]) is not list:
        raise ProtocolError("an events_batch frame is [[[event, ...], ...], [item, ...]]")
    raw_lists, raw_items = fields
    lists: list[list[Event] | None] = [None] * len(raw_lists)
    out: list[tuple[int, int, list[Event], BoltraftError | None]] = []
    for item in raw_items:
        if type(item) is not list or len(item) != 4:
            raise ProtocolError("an events_batch item is [watch_id, index, list, error]")
        wid, index, slot, err = item
        if type(wid) is not int or type(index) is not int:
            raise ProtocolError("an events_batch item is [watch_id, index, list, error]")
        events: list[Event] = []
        if slot is not None:
            if type(slot) is not int or not 0 <= slot < len(raw_lists):
                raise ProtocolError("an events_batch item names no list", list=repr(slot))
            got = lists[slot]
            if got is None:
                got = lists[slot] = _events(raw_lists[slot])
            events = got
        error = None
        if err is not None:
            error = BoltraftError.from_wire(err) if isinstance(err, dict) else None
            if error is None:
                raise ProtocolError("an events_batch item's error must be an error map")
        out.append((wid, index, events, error))
    return out


def _events(raw: Any) -> list[Event]:
    if type(raw) is not list:
        raise ProtocolError("an events_batch list must be an array of events")
    events: list[Event] = []
    append = events.append
    for item in raw:
        if type(item) is not list or len(item) != 7:
            raise ProtocolError("a malformed watch event", event=repr(item)[:200])
        at, pos, kind, bucket, key, value, prev = item
        if type(at) is not int or type(pos) is not int or type(bucket) is not list:
            raise ProtocolError("a malformed watch event", event=repr(item)[:200])
        if kind not in _TYPES:
            raise ProtocolError("a malformed watch event", event=repr(item)[:200])
        append(Event(at, pos, kind, tuple(bucket), key, value, prev))
    return events
