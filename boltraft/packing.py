"""``pack``: msgpack encoding through one shared ``msgpack.Packer``.

``msgpack.packb`` builds a new Packer (and its buffer) on every call, which costs more than
packing a small value does; the hot paths (log commands, frames, replies, dedup records,
WAL records) pack through this one instead.

Sharing it is safe in CPython: ``Packer.pack`` runs in C without releasing the GIL and calls
no Python code for the plain types boltraft packs, so two threads never interleave inside
it. It encodes exactly as ``msgpack.packb(obj, use_bin_type=True)`` does, and on an object
it cannot encode raises the same TypeError, ValueError or OverflowError after resetting its
buffer.
"""

from __future__ import annotations

import msgpack

pack = msgpack.Packer(use_bin_type=True).pack
