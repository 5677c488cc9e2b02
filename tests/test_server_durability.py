"""The state DB's crash safety (``boltraft.server.main.open_state_machine``): unsynced commits
under a ``state.unsynced`` boot marker, rebuilt after a machine crash; or, without a boot id,
synced data pages with an unsynced meta page. Either way a torn state DB is never used."""

from __future__ import annotations

from pathlib import Path

import pytest

from boltraft.errors import InvalidArgumentError
from boltraft.raft.types import Entry, EntryType
from boltraft.server import main
from boltraft.server.config import ServerConfig
from boltraft.server.datadir import DataDir, current_boot_id
from boltraft.storage import commands
from boltraft.storage.db import DB, DEFAULT_QUOTA

CREATE = commands.encode({"v": 1, "op": "create_bucket", "bucket": ["b"]})


@pytest.fixture
def datadir(tmp_path: Path):
    d = DataDir.open(tmp_path / "d")
    yield d
    d.close()


def _cfg(datadir: DataDir, fsync: bool = True) -> ServerConfig:
    return ServerConfig(id="n1", data=datadir.path, listen="tcp://127.0.0.1:1", fsync=fsync)


def test_synced_mode_without_a_boot_id(datadir: DataDir, monkeypatch) -> None:
    monkeypatch.setattr(main, "current_boot_id", lambda: None)
    sm = main.open_state_machine(_cfg(datadir), datadir)
    flags = sm.db.env.flags()
    assert (flags["sync"], flags["metasync"]) == (True, False)
    assert datadir.state_unsynced_boot() is None
    assert sm.apply([Entry(1, 1, EntryType.NORMAL, CREATE)]) == [None]
    main.close_state_machine([sm], datadir)
    again = main.open_state_machine(_cfg(datadir), datadir)
    assert again.applied == (1, 1)
    main.close_state_machine([again], datadir)


def test_unsynced_mode_marks_the_boot_and_a_clean_close_clears_it(
    datadir: DataDir, monkeypatch
) -> None:
    monkeypatch.setattr(main, "current_boot_id", lambda: "boot-a")
    sm = main.open_state_machine(_cfg(datadir), datadir)
    assert sm.db.env.flags()["sync"] is False
    assert datadir.state_unsynced_boot() == "boot-a"
    assert sm.apply([Entry(1, 1, EntryType.NORMAL, CREATE)]) == [None]
    main.close_state_machine([sm, sm], datadir)  # closing twice is harmless
    assert datadir.state_unsynced_boot() is None
    assert not datadir.discard_state_if_crashed("boot-b")
    again = main.open_state_machine(_cfg(datadir), datadir)
    assert again.applied == (1, 1)
    main.close_state_machine([again], datadir)


def test_fsync_off_never_marks(datadir: DataDir, monkeypatch) -> None:
    monkeypatch.setattr(main, "current_boot_id", lambda: "boot-a")
    sm = main.open_state_machine(_cfg(datadir, fsync=False), datadir)
    assert sm.db.env.flags()["sync"] is True
    assert datadir.state_unsynced_boot() is None
    main.close_state_machine([sm], datadir)


def test_a_marker_from_another_boot_discards_the_state(datadir: DataDir, monkeypatch) -> None:
    monkeypatch.setattr(main, "current_boot_id", lambda: "boot-a")
    sm = main.open_state_machine(_cfg(datadir), datadir)
    sm.apply([Entry(1, 1, EntryType.NORMAL, CREATE)])
    sm.db.sync()
    sm.close()  # as after a crash: the marker stays
    assert not datadir.discard_state_if_crashed("boot-a")  # same boot: the page cache held it
    assert (datadir.state_path / "data.mdb").exists()
    assert datadir.discard_state_if_crashed("boot-b")  # the machine went down meanwhile
    assert not (datadir.state_path / "data.mdb").exists()
    monkeypatch.setattr(main, "current_boot_id", lambda: "boot-b")
    fresh = main.open_state_machine(_cfg(datadir), datadir)
    assert fresh.applied == (0, 0)  # the node replays the log from here
    assert datadir.state_unsynced_boot() == "boot-b"
    main.close_state_machine([fresh], datadir)


def test_unreadable_marker_counts_as_another_boot(datadir: DataDir) -> None:
    (datadir.path / DataDir.STATE_UNSYNCED).write_bytes(b"\xff\xfe")
    assert datadir.state_unsynced_boot() == ""
    assert datadir.discard_state_if_crashed("boot-a")
    assert datadir.discard_state_if_crashed(None)


def test_current_boot_id(tmp_path: Path) -> None:
    p = tmp_path / "boot_id"
    assert current_boot_id(p) is None
    p.write_text("abc\n")
    assert current_boot_id(p) == "abc"
    p.write_text("\n")
    assert current_boot_id(p) is None


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


@pytest.mark.parametrize("boot", [None, "boot-a"])
def test_the_state_db_maps_its_whole_quota_from_the_start(
    datadir: DataDir, monkeypatch, boot: str | None
) -> None:
    """A map that grows is remapped, and the remap drops every mapped page from the RSS (the
    memory bench saw RSS fall 50 MB and climb back); the state DB never grows its map, and
    the file stays as small as the data."""
    monkeypatch.setattr(main, "current_boot_id", lambda: boot)
    sm = main.open_state_machine(_cfg(datadir), datadir)
    try:
        assert sm.db.env.info()["map_size"] == sm.db.quota == DEFAULT_QUOTA
        assert sm.apply([Entry(1, 1, EntryType.NORMAL, CREATE)]) == [None]
        sm.db.sync()
        assert (datadir.state_path / "data.mdb").stat().st_size < 1 << 20
    finally:
        main.close_state_machine([sm], datadir)
