"""Value checksums of the bucket engine (``boltraft.storage.layout``: ``seal``/``unseal``): a
value whose stored bytes changed is never served, by any read path, and ``check`` reports
it; a store made before value checksums is migrated by a writable open and served as it is
by a read-only one."""

from __future__ import annotations

import struct
from pathlib import Path

import lmdb
import pytest
from storeformats import create_store  # tests/ is on sys.path under pytest

from boltraft.errors import CorruptionError
from boltraft.raft.types import Entry, EntryType
from boltraft.storage import commands
from boltraft.storage.db import DB
from boltraft.storage.fsm import BucketStateMachine
from boltraft.storage.keys import bucket_prefix
from boltraft.storage.layout import CRC_SIZE, RECORD, VALUE_CRC, VALUE_CRC_KEY
from boltraft.storage.queries import execute_reads


def _flip(path: Path, value: bytes) -> None:
    """Flips one bit of the (single) stored copy of ``value`` in the LMDB file at ``path``."""
    data = path / "data.mdb"
    raw = bytearray(data.read_bytes())
    at = raw.find(value)
    assert at >= 0 and raw.find(value, at + 1) < 0
    raw[at + len(value) // 2] ^= 0x08
    data.write_bytes(bytes(raw))


def _store(tmp_path: Path) -> Path:
    with DB.open(tmp_path / "s") as db, db.update() as tx:
        b = tx.create_bucket(["b"])
        b.put(b"good", b"fine value")
        b.put(b"bad", b"precious value that will rot")
        b.put_many([(b"many1", b"v1"), (b"many2", b"v2")])
        b.put_if(b"cas", b"x", None)
    return tmp_path / "s"


def test_every_read_path_refuses_a_value_whose_bits_changed(tmp_path: Path) -> None:
    path = _store(tmp_path)
    _flip(path, b"precious value that will rot")
    with DB.open(path) as db:
        with db.view() as tx:
            b = tx.bucket(["b"])
            assert b.get(b"good") == b"fine value"
            assert b.get(b"many2") == b"v2" and b.get(b"cas") == b"x"
            with pytest.raises(CorruptionError, match="fails its checksum") as err:
                b.get(b"bad")
            assert err.value.code == "corruption"
            with pytest.raises(CorruptionError):
                b.scan()
            with pytest.raises(CorruptionError):
                b.cursor().first()
            assert b.scan(prefix=b"g")[0] == [(b"good", b"fine value")]
        with pytest.raises(CorruptionError), db.update() as tx:
            tx.bucket(["b"]).put_if(b"bad", b"new", b"old")
        reads = execute_reads(db, [{"op": "get", "bucket": "b", "key": "bad"}])
        assert isinstance(reads[0], CorruptionError)
        problems = db.check()
        assert len(problems) == 1 and "fails its checksum" in problems[0]


def test_a_command_that_reads_a_damaged_value_is_not_applied(tmp_path: Path) -> None:
    sm = BucketStateMachine(tmp_path / "sm", sync=False)
    make = {"op": "create_bucket", "bucket": [b"b"]}
    put = {"op": "put", "bucket": [b"b"], "key": b"k", "value": b"a value to damage"}
    cmds = [make, put]
    sm.apply([Entry(1, i + 1, EntryType.NORMAL, commands.encode(c)) for i, c in enumerate(cmds)])
    sm.close()
    _flip(tmp_path / "sm", b"a value to damage")
    sm = BucketStateMachine(tmp_path / "sm", sync=False)
    cas = {"op": "put", "bucket": [b"b"], "key": b"k", "value": b"new", "if_value": b"old"}
    with pytest.raises(CorruptionError):
        sm.apply([Entry(1, 3, EntryType.NORMAL, commands.encode(cas))])
    assert sm.applied[0] == 2  # nothing applied: this replica cannot apply it as the others do
    with pytest.raises(CorruptionError):
        sm.content_hash()
    sm.close()


def _old_store(path: Path, marker: bytes) -> None:
    """A store of format ``marker`` made before value checksums: bucket ``b`` holding
    ``k -> v``."""
    path.mkdir()
    create_store(path, marker)
    env = lmdb.open(str(path), map_size=1 << 20, max_dbs=8)
    with env.begin(write=True) as txn:
        buckets, sysdb = env.open_db(b"buckets", txn=txn), env.open_db(b"sys", txn=txn)
        txn.put(bucket_prefix(0) + b"b", RECORD.pack(1, 0), db=buckets)
        txn.put(b"next_id", struct.pack(">Q", 2), db=sysdb)
        txn.put(bucket_prefix(1) + b"k", b"v")
    env.close()


@pytest.mark.parametrize("marker", [b"boltraft-4", b"boltraft-3"])
def test_a_store_made_before_value_checksums_is_served_and_migrated(
    tmp_path: Path, marker: bytes
) -> None:
    path = tmp_path / "old"
    _old_store(path, marker)
    with DB.open(path, readonly=True) as db, db.view() as tx:  # served as it is
        assert tx.bucket(["b"]).get(b"k") == b"v"
    with DB.open(path) as db:  # a writable open seals every value
        with db.view() as tx:
            assert tx.bucket(["b"]).scan()[0] == [(b"k", b"v")]
            assert tx._txn.get(VALUE_CRC_KEY, db=db._dbs.sys) == VALUE_CRC
            assert len(tx._txn.get(bucket_prefix(1) + b"k")) == 1 + CRC_SIZE
        with db.update() as tx:
            tx.bucket(["b"]).put(b"k2", b"v2")
        assert db.check() == []
    with DB.open(path, readonly=True) as db, db.view() as tx:
        assert tx.bucket(["b"]).scan()[0] == [(b"k", b"v"), (b"k2", b"v2")]
