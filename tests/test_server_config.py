"""The node's data directory (layout, lock, node.json) and configuration resolution."""

from __future__ import annotations

import errno
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from boltraft_cli.main import main
from click.testing import CliRunner

from boltraft.benchmark.localcluster import free_ports
from boltraft.errors import ConfigError, DataDirLockedError
from boltraft.raft.types import Entry
from boltraft.server.config import load_config_file, parse_peer, resolve_config
from boltraft.server.datadir import DataDir, NodeInfo
from boltraft.storage.logstore import LmdbLogStore
from boltraft.storage.wal import WalLogStore


def test_open_creates_layout_and_node_info_round_trips(tmp_path: Path) -> None:
    with DataDir.open(tmp_path / "d") as dd:
        assert {p.name for p in dd.path.iterdir()} == {"LOCK", "state", "snapshots"}
        assert dd.read_node_info() is None
        info = NodeInfo("n1", "tcp://127.0.0.1:1", {"n2": "tcp://127.0.0.1:2"})
        dd.write_node_info(info)
        assert dd.read_node_info() == info


def test_second_open_is_refused_until_closed(tmp_path: Path) -> None:
    dd = DataDir.open(tmp_path)
    with pytest.raises(DataDirLockedError):
        DataDir.open(tmp_path)
    dd.close()
    DataDir.open(tmp_path).close()


def test_lock_is_held_against_another_process(tmp_path: Path) -> None:
    code = (
        "import sys\nfrom boltraft.server.datadir import DataDir\n"
        "from boltraft.errors import DataDirLockedError\n"
        "try:\n    DataDir.open(sys.argv[1])\nexcept DataDirLockedError:\n    sys.exit(3)\n"
    )
    with DataDir.open(tmp_path):
        held = subprocess.run([sys.executable, "-c", code, str(tmp_path)], timeout=60)
    free = subprocess.run([sys.executable, "-c", code, str(tmp_path)], timeout=60)
    assert (held.returncode, free.returncode) == (3, 0)


def test_malformed_node_json_is_a_config_error(tmp_path: Path) -> None:
    with DataDir.open(tmp_path) as dd:
        (tmp_path / "node.json").write_text("{nope")
        with pytest.raises(ConfigError):
            dd.read_node_info()
        (tmp_path / "node.json").write_text(json.dumps({"id": "", "listen": "x"}))
        with pytest.raises(ConfigError):
            dd.read_node_info()


def test_data_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ConfigError):
        DataDir.open(f)


def test_first_start_needs_id_and_listen(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--id"):
        resolve_config({"listen": "tcp://127.0.0.1:1"}, None, tmp_path)
    with pytest.raises(ConfigError, match="--listen"):
        resolve_config({"id": "n1"}, None, tmp_path)


def test_flags_resolve_and_peers_exclude_self(tmp_path: Path) -> None:
    cfg = resolve_config(
        {
            "id": "n1",
            "listen": "tcp://127.0.0.1:7301",
            "peers": ["n1=tcp://127.0.0.1:7301", "n2=tcp://127.0.0.1:7302"],
            "tick_ms": 50,
            "fsync": False,
        },
        None,
        tmp_path,
    )
    assert cfg.peers == {"n2": "tcp://127.0.0.1:7302"}
    assert cfg.members == {"n1": "tcp://127.0.0.1:7301", "n2": "tcp://127.0.0.1:7302"}
    assert (cfg.tick_ms, cfg.fsync, cfg.election_tick) == (50, False, 10)


def test_restart_with_only_data_uses_node_json(tmp_path: Path) -> None:
    info = NodeInfo("n2", "tcp://127.0.0.1:2", {"n1": "tcp://127.0.0.1:1"})
    cfg = resolve_config({}, info, tmp_path)
    assert cfg.node_info() == info
    with pytest.raises(ConfigError, match="belongs to node"):
        resolve_config({"id": "n3"}, info, tmp_path)


def test_the_keys_folder_is_remembered_absolute_and_a_given_one_replaces_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    first = resolve_config({"id": "n1", "listen": "tcp://127.0.0.1:1", "keys": "k/n1"}, None, "d")
    assert first.keys == str(tmp_path / "k" / "n1")
    info = first.node_info()
    assert NodeInfo.from_json(info.to_json(), "node.json") == info
    assert info.to_json()["keys"] == str(tmp_path / "k" / "n1")
    assert resolve_config({}, info, "d").keys == info.keys  # a restart without --keys
    assert resolve_config({"keys": "/new/n1"}, info, "d").keys == "/new/n1"
    assert resolve_config({"keys": ""}, info, "d").keys == ""  # --keys '' forgets them
    plain = resolve_config({"id": "n1", "listen": "tcp://127.0.0.1:1"}, None, "d").node_info()
    assert "keys" not in plain.to_json()
    with pytest.raises(ConfigError, match="'keys'"):
        NodeInfo.from_json({"id": "n1", "listen": "x", "keys": 3}, "node.json")


@pytest.mark.parametrize(
    "values",
    [
        {"tick_ms": 0},
        {"tick_ms": "100"},
        {"election_tick": True},
        {"fsync": "yes"},
        {"heartbeat_tick": 10, "election_tick": 10},
        {"listen": "127.0.0.1:7301"},
        {"listen": "tcp://127.0.0.1:99999"},
        {"peers": ["n2"]},
        {"peers": ["n2=tcp://a:1", "n2=tcp://a:2"]},
        {"peers": {"n2": 5}},
        {"peers": ["n1=tcp://127.0.0.1:9"]},
        {"log_store": "sqlite"},
        {"log_store": 1},
        {"max_inflight_bytes": 0},
        {"max_apply_bytes": "1MiB"},
    ],
)
def test_bad_values_are_config_errors(tmp_path: Path, values: dict[str, object]) -> None:
    base = {"id": "n1", "listen": "tcp://127.0.0.1:1"}
    with pytest.raises(ConfigError):
        resolve_config({**base, **values}, None, tmp_path)


def test_memory_bounds_are_settings(tmp_path: Path) -> None:
    base = {"id": "n1", "listen": "tcp://127.0.0.1:1"}
    cfg = resolve_config(base, None, tmp_path)
    assert (cfg.max_inflight_bytes, cfg.max_apply_bytes) == (4 << 20, 1 << 20)
    cfg = resolve_config(
        {**base, "max_inflight_bytes": 65536, "max_apply_bytes": 4096}, None, tmp_path
    )
    assert (cfg.max_inflight_bytes, cfg.max_apply_bytes) == (65536, 4096)


def test_config_files_json_and_toml(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text(json.dumps({"id": "n1", "peers": {"n2": "tcp://h:2"}}))
    (tmp_path / "c.toml").write_text('id = "n1"\ntick_ms = 20\n[peers]\nn2 = "tcp://h:2"\n')
    assert load_config_file(tmp_path / "c.json")["peers"] == {"n2": "tcp://h:2"}
    toml = load_config_file(tmp_path / "c.toml")
    assert (toml["tick_ms"], toml["peers"]) == (20, {"n2": "tcp://h:2"})
    (tmp_path / "bad.json").write_text(json.dumps({"id": "n1", "colour": "blue"}))
    with pytest.raises(ConfigError, match="unknown keys"):
        load_config_file(tmp_path / "bad.json")
    with pytest.raises(ConfigError):
        load_config_file(tmp_path / "missing.toml")
    (tmp_path / "broken.toml").write_text("id = ")
    with pytest.raises(ConfigError):
        load_config_file(tmp_path / "broken.toml")


def test_parse_peer() -> None:
    assert parse_peer(" n2 = tcp://h:2") == ("n2", "tcp://h:2")
    with pytest.raises(ConfigError):
        parse_peer("=tcp://h:2")


def test_log_store_setting_resolves(tmp_path: Path) -> None:
    base = {"id": "n1", "listen": "tcp://127.0.0.1:1"}
    assert resolve_config(base, None, tmp_path).log_store is None
    assert resolve_config({**base, "log_store": "lmdb"}, None, tmp_path).log_store == "lmdb"
    (tmp_path / "c.toml").write_text('log_store = "wal"\n')
    assert load_config_file(tmp_path / "c.toml") == {"log_store": "wal"}


def test_new_data_dir_gets_a_wal_and_the_kind_is_remembered(tmp_path: Path) -> None:
    with DataDir.open(tmp_path) as dd:
        assert dd.log_kind() is None
        store = dd.open_log_store(None, sync=False)
        assert isinstance(store, WalLogStore) and store.path == dd.wal_path
        store.append([Entry(1, 1)])
        store.close()
        assert dd.log_kind() == "wal"
        store = dd.open_log_store(None)  # restart without the setting: still the WAL
        assert isinstance(store, WalLogStore) and store.last_index() == 1
        store.close()
        store = dd.open_log_store("wal")
        store.close()
        with pytest.raises(ConfigError, match="holds a wal log"):
            dd.open_log_store("lmdb")
        assert not dd.log_path.exists()  # the refused open created nothing


def test_lmdb_data_dir_keeps_lmdb(tmp_path: Path) -> None:
    with DataDir.open(tmp_path) as dd:
        store = dd.open_log_store("lmdb")
        assert isinstance(store, LmdbLogStore) and store.path == dd.log_path
        store.append([Entry(1, 1)])
        store.close()
        assert dd.log_kind() == "lmdb"
        store = dd.open_log_store(None)
        assert isinstance(store, LmdbLogStore) and store.last_index() == 1
        store.close()
        with pytest.raises(ConfigError, match="holds a lmdb log"):
            dd.open_log_store("wal")
        assert not dd.wal_path.exists()
        WalLogStore(dd.wal_path).close()  # now both: which one is the log is unclear
        with pytest.raises(ConfigError, match="both"):
            dd.open_log_store(None)


def test_unknown_log_store_kind_is_refused(tmp_path: Path) -> None:
    with DataDir.open(tmp_path) as dd, pytest.raises(ConfigError, match="unknown log store"):
        dd.open_log_store("sqlite")


def test_serve_refuses_a_log_store_flag_that_contradicts_the_data_dir(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGINT)
    with DataDir.open(tmp_path) as dd:
        dd.open_log_store("lmdb").close()
    args = ["serve", "--data", str(tmp_path), "--id", "n1", "--listen", "tcp://127.0.0.1:1"]
    result = CliRunner().invoke(main, [*args, "--log-store", "wal"])
    assert result.exit_code == 1
    assert "error: config_error" in result.output and "holds a lmdb log" in result.output
    assert signal.getsignal(signal.SIGINT) is before  # refused before taking the signals
    bad = CliRunner().invoke(main, ["serve", "--data", str(tmp_path), "--log-store", "x"])
    assert bad.exit_code == 2 and "--log-store" in bad.output


def test_serve_stops_with_one_line_when_the_log_cannot_be_flushed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed fsync is not a full disk: the node stops (nothing it acknowledges after it
    could be trusted), saying so in one line."""

    def broken(self: WalLogStore) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(WalLogStore, "sync", broken)
    (port,) = free_ports(1)
    args = ["serve", "--data", str(tmp_path), "--id", "n1", "--listen", f"tcp://127.0.0.1:{port}"]
    result = CliRunner().invoke(main, [*args, "--tick-ms", "10"])  # elects itself, then syncs
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("error: disk_failed: [Errno 5] Input/output error")
    assert "restart it once the disk is fixed" in lines[-1]
