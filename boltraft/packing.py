"""``pack``: msgpack encoding through one shared ``msgpack.Packer``.

``msgpack.packb`` builds a new Packer (and its buffer) on every call, which costs more than
packing a small value does; the hot paths (log commands, frames, replies, dedup records,
WAL records) pack through this one instead.

Sharing it is safe in CPython: ``Packer.pack`` runs in C without releasing the GIL and calls
no Python code for the plain types boltraft packs, so two threads never interleave inside
it. It encodes exactly as ``msgpack.packb(obj, use_bin_type=True)`` does, and on an object
it cannot encode raises the same TypeError, ValueError or OverflowError after resetting its
buffer.

A Packer keeps its buffer as large as the largest output it ever made. ``pack_bulk`` packs
what may be large (a log append's batch of entries, a raft frame: as large as the window of
a follower catching up) through a Packer of its own, replaced after an output over
``BULK_KEEP_BYTES``, so such a burst leaves no buffer of its size behind; the one ``pack``
shares only ever grows to the largest single command, reply or frame of the other kinds.
"""

from __future__ import annotations

from typing import Any

import msgpack

pack = msgpack.Packer(use_bin_type=True).pack

BULK_KEEP_BYTES = 1 << 20
_bulk = [msgpack.Packer(use_bin_type=True)]


def pack_bulk(obj: Any) -> bytes:
    """Returns what ``pack(obj)`` returns, through the bulk Packer (see the module
    docstring); raises like ``pack``."""
    out: bytes = _bulk[0].pack(obj)
    if len(out) > BULK_KEEP_BYTES:
        _bulk[0] = msgpack.Packer(use_bin_type=True)
    return out
