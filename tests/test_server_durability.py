"""The state DB's crash-safety settings: every apply commit fsyncs its data pages (LMDB
``sync``) but not its meta page (``metasync`` off), so a machine crash can undo the last
commit (the synced Raft log replays it) but never corrupt the store."""

from __future__ import annotations

from pathlib import Path

import pytest

from boltraft.errors import InvalidArgumentError
from boltraft.raft.types import Entry, EntryType
from boltraft.server.config import ServerConfig
from boltraft.server.datadir import DataDir
from boltraft.server.main import open_state_machine
from boltraft.storage import commands
from boltraft.storage.db import DB


def test_state_machine_syncs_data_but_not_meta(tmp_path: Path) -> None:
    cfg = ServerConfig(id="n1", data=tmp_path / "d", listen="tcp://127.0.0.1:1")
    datadir = DataDir.open(tmp_path / "d")
    try:
        sm = open_state_machine(cfg, datadir)
        try:
            flags = sm.db.env.flags()
            assert flags["sync"] is True
            assert flags["metasync"] is False
            cmd = commands.encode({"v": 1, "op": "create_bucket", "bucket": ["b"]})
            assert sm.apply([Entry(1, 1, EntryType.NORMAL, cmd)]) == [None]
        finally:
            sm.close()
        again = open_state_machine(cfg, datadir)
        try:
            assert again.applied == (1, 1)
        finally:
            again.close()
    finally:
        datadir.close()


@pytest.mark.parametrize(("sync", "metasync", "want"), [(True, None, True), (False, None, False)])
def test_db_metasync_defaults_to_sync(
    tmp_path: Path, sync: bool, metasync: bool | None, want: bool
) -> None:
    db = DB.open(tmp_path / "s", sync=sync, metasync=metasync)
    try:
        assert db.env.flags()["metasync"] is want
        assert db.env.flags()["sync"] is sync
    finally:
        db.close()


def test_db_open_bad_size_still_refused_with_metasync(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError):
        DB.open(tmp_path / "s", metasync=False, quota=0)
    assert not (tmp_path / "s").exists()
