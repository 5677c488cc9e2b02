"""The applied record: ``(index, term, clock_ms)`` of the last entry the state machine
applied, stored in the same LMDB transaction as the data it covers (so the data and the
index never disagree). Index and clock never decrease."""

from __future__ import annotations

import struct

from boltraft.storage.db import DB

APPLIED = struct.Struct(">QQQ")


def read_applied(db: DB) -> tuple[int, int, int]:
    """``(index, term, clock_ms)`` stored in ``db``; ``(0, 0, 0)`` for a new store."""
    with db.view() as tx:
        raw = tx.state_record()
    index, term, clock = APPLIED.unpack(raw) if raw else (0, 0, 0)
    return index, term, clock
