"""Stores of the older formats the engine still serves, made the way their code made them."""

from __future__ import annotations

import struct
from pathlib import Path

import lmdb


def create_store(path: Path, marker: bytes) -> None:
    """Returns None after creating an empty bucket store of format ``marker`` (b"boltraft-3"
    or b"boltraft-4") in ``path``: its sub-dbs, format marker and next bucket id. DB.open
    serves it in that format from then on."""
    env = lmdb.open(str(path), map_size=1 << 20, max_dbs=8)
    try:
        with env.begin(write=True) as txn:
            env.open_db(b"buckets", txn=txn)
            env.open_db(b"meta", txn=txn)
            sysdb = env.open_db(b"sys", txn=txn)
            txn.put(b"format", marker, db=sysdb)
            txn.put(b"next_id", struct.pack(">Q", 1), db=sysdb)
    finally:
        env.close()
