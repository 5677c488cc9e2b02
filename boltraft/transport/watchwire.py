"""The change feed's wire format (docs/protocol.md, section 5.1), shared by the node that
streams it (``boltraft.server.watching``) and the clients that read it
(``boltraft.client.Watch``).

A watch streams ``[1, "events", watch_id, index, [event, ...], error]`` frames to the
client's connection. ``index`` is the node's progress: every matching change up to it has
been sent, in this frame or before. ``error`` is nil, or the wire form of the error that
ended the watch (after this frame's events). Each event is the array
``[index, pos, type, bucket, key, value, prev]``:

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

from dataclasses import dataclass
from typing import Any

import msgpack

from boltraft.errors import BoltraftError, ProtocolError
from boltraft.packing import pack
from boltraft.transport import codec

EVENTS = "events"
EVENT_TYPES = ("put", "delete", "create_bucket", "delete_bucket")
_TYPES = frozenset(EVENT_TYPES)

_HEAD = b"\x96" + msgpack.packb(codec.PROTOCOL_VERSION) + msgpack.packb(EVENTS)
_NIL = b"\xc0"


@dataclass(slots=True)
class Event:
    """One change of the cluster's data (see the module docstring for each field). Read
    only by convention: a node shares its events between watches (not frozen: a frozen
    dataclass costs four times as much to make, and a watcher makes one per change)."""

    index: int
    pos: int
    type: str
    bucket: tuple[bytes, ...]
    key: bytes | None
    value: bytes | None
    prev: bytes | None = None

    def to_wire(self, prev: bool) -> list[Any]:
        """The event's array; ``prev`` False leaves the previous value out (nil)."""
        return [
            self.index,
            self.pos,
            self.type,
            list(self.bucket),
            self.key,
            self.value,
            self.prev if prev else None,
        ]


def encode_events_frame(wid: int, index: int, packed_events: bytes, error: bytes = _NIL) -> bytes:
    """The ``events`` frame for watch ``wid`` with progress ``index``; ``packed_events`` is
    the msgpack array of the events' arrays (packed once for every watch that gets the same
    events), ``error`` the packed error map that ends the watch (nil by default)."""
    return _HEAD + pack(wid) + pack(index) + packed_events + error


def encode_end(wid: int, index: int, err: BoltraftError) -> bytes:
    """The last ``events`` frame of watch ``wid``: no events, progress ``index``, ``err``."""
    return encode_events_frame(wid, index, b"\x90", pack(err.to_wire()))


def decode_events_frame(
    fields: list[Any],
) -> tuple[int, int, list[Event], BoltraftError | None]:
    """``(watch_id, index, events, error)`` of an ``events`` frame's fields (those after
    the kind). Raises ProtocolError when the frame's shape is wrong."""
    if len(fields) != 4:
        raise ProtocolError("an events frame has 4 fields")
    wid, index, raw, err = fields
    if type(wid) is not int or type(index) is not int or type(raw) is not list:
        raise ProtocolError("an events frame is [watch_id, index, [event, ...], error]")
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
    error = None
    if err is not None:
        error = BoltraftError.from_wire(err) if isinstance(err, dict) else None
        if error is None:
            raise ProtocolError("an events frame's error must be an error map")
    return wid, index, events, error
