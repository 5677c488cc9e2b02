"""The offline inspector: every subcommand through click's CliRunner, and as real processes."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from boltraft_cli.main import main
from click.testing import CliRunner

from boltraft.storage.db import DB
from boltraft.storage.layout import seal


def run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(main, ["inspect", *args], catch_exceptions=False)
    assert result.exit_code == code, (result.output, result.stderr)
    return result.stdout if code == 0 else result.stderr + result.stdout


def fingerprint(d: Path) -> dict[str, tuple[str, int]]:
    return {
        f.name: (hashlib.sha256(f.read_bytes()).hexdigest(), f.stat().st_mtime_ns)
        for f in sorted(d.iterdir())
    }


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    d = tmp_path / "demo-store"
    assert "created a demo store" in run("demo", str(d))
    return d


def test_demo_refuses_to_touch_an_existing_dir(demo: Path) -> None:
    before = fingerprint(demo)
    assert "left unchanged" in run("demo", str(demo))
    assert fingerprint(demo) == before


def test_buckets_table_and_json(demo: Path) -> None:
    out = run(str(demo), "buckets")
    lines = out.splitlines()
    assert lines[0].split() == ["BUCKET", "KEYS", "BUCKETS", "SEQUENCE"]
    assert [line.split()[0] for line in lines[1:]] == [
        "config",
        "metrics",
        "metrics/2024",
        "users",
        "users/eu",
        "users/us",
    ]
    assert lines[4].split() == ["users", "2", "2", "1"]
    data = json.loads(run(str(demo), "buckets", "--json"))
    assert data[0] == {"path": ["config"], "keys": 3, "buckets": 0, "sequence": 1}
    assert {"path": ["users", "eu"], "keys": 1, "buckets": 0, "sequence": 1} in data


def test_keys_with_paging(demo: Path) -> None:
    out = run(str(demo), "keys", "users")
    rows = [line.split() for line in out.splitlines()]
    assert rows == [
        ["KEY", "SIZE"],
        ["alice", "34"],
        ["bob", "15"],
        ["eu", "(bucket)"],
        ["us", "(bucket)"],
    ]
    page = json.loads(run(str(demo), "keys", "users", "--limit", "3", "--json"))
    assert [i["key"] for i in page["items"]] == ["alice", "bob", "eu"]
    assert page["items"][2] == {"key": "eu", "size": None, "bucket": True}
    rest = json.loads(run(str(demo), "keys", "users", "--after", page["next"], "--json"))
    assert [i["key"] for i in rest["items"]] == ["us"] and rest["next"] is None
    out = run(str(demo), "keys", "users", "--limit", "1", "--reverse")
    assert out.splitlines()[1].split()[0] == "us" and "more: --after" in out
    out = json.loads(run(str(demo), "keys", "users", "--prefix", "b", "--json"))
    assert [i["key"] for i in out["items"]] == ["bob"]


def test_keys_errors(demo: Path) -> None:
    assert "bucket_not_found" in run(str(demo), "keys", "nope", code=3)
    assert "invalid_argument" in run(str(demo), "keys", "users", "--after", "02", code=1)
    assert "hex" in run(str(demo), "keys", "users", "--after", "zz", code=2)
    assert "required" in run(str(demo), "keys", "/", code=2)


def test_get(demo: Path) -> None:
    assert run(str(demo), "get", "users/eu", "carol").strip() == '{"name": "Carol", "city": "Lyon"}'
    assert json.loads(run(str(demo), "get", "config", "mode", "--json")) == {
        "key": "mode",
        "value": "demo",
    }
    assert json.loads(run(str(demo), "get", "config", "blob", "--json"))["value"] == {
        "base64": "+vv8/f7/"
    }
    assert run(str(demo), "get", "config", "blob").strip() == "0xfafbfcfdfeff"
    assert run(str(demo), "get", "config", "6d6f6465", "--hex").strip() == "demo"
    assert "not found" in run(str(demo), "get", "config", "missing", code=3)
    assert "nested bucket" in run(str(demo), "get", "users", "eu", code=1)
    assert "bucket_not_found" in run(str(demo), "get", "nope", "k", code=3)
    assert "key_required" in run(str(demo), "get", "users", "", code=1)


def test_get_raw_bytes(demo: Path) -> None:
    result = CliRunner().invoke(main, ["inspect", str(demo), "get", "config", "blob", "--raw"])
    assert result.exit_code == 0 and result.stdout_bytes == bytes(range(250, 256))


def test_stats_and_check(demo: Path) -> None:
    stats = json.loads(run(str(demo), "stats", "--json"))
    assert (stats["buckets"], stats["keys"], stats["readonly"]) == (6, 9, True)
    assert "buckets" in run(str(demo), "stats")
    assert run(str(demo), "check").strip() == "ok"
    assert json.loads(run(str(demo), "check", "--json")) == {"ok": True, "problems": []}


def test_check_fails_on_a_corrupt_store(demo: Path) -> None:
    with DB.open(demo) as db:
        data = db.env.open_db(None)  # the user data live in the main db
        with db.env.begin(write=True) as txn:
            txn.put(b"\xf1\x63orphan", seal(b"\xf1\x63orphan", b"v"), db=data)  # bucket id 99
    out = run(str(demo), "check", code=1)
    assert "orphan key(s) under unknown bucket id 99" in out
    report = json.loads(CliRunner().invoke(main, ["inspect", str(demo), "check", "--json"]).stdout)
    assert report["ok"] is False and len(report["problems"]) == 1


def test_dump(demo: Path) -> None:
    out = run(str(demo), "dump")
    assert "users/eu/\n  carol = " in out and "  blob = 0xfafbfcfdfeff" in out
    data = json.loads(run(str(demo), "dump", "--json"))
    by_path = {"/".join(e["path"]): e for e in data}
    assert by_path["metrics/2024"]["items"] == [
        {"key": "errors", "value": "3"},
        {"key": "requests", "value": "1024"},
    ]
    assert by_path["metrics"]["items"] == []  # nested buckets are listed on their own


def test_server_data_dir_uses_its_state_subdir(tmp_path: Path) -> None:
    run("demo", str(tmp_path / "server" / "state"))
    assert "users/eu" in run(str(tmp_path / "server"), "buckets")


def test_missing_store(tmp_path: Path) -> None:
    assert "data_dir_not_found" in run(str(tmp_path / "nothing"), "buckets", code=3)
    assert not (tmp_path / "nothing").exists()


def test_every_read_command_leaves_the_files_alone(demo: Path) -> None:
    before = fingerprint(demo)
    for args in (
        ["buckets"],
        ["keys", "users"],
        ["get", "users", "bob"],
        ["stats"],
        ["check"],
        ["dump", "--json"],
    ):
        run(str(demo), *args)
    assert fingerprint(demo) == before


def test_a_store_dir_named_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run("demo", "demo")  # `inspect demo DIR` with DIR = "demo"
    assert "users" in run("demo", "buckets")  # `inspect DIR buckets` with DIR = "demo"


# --- as real processes -------------------------------------------------------------------
def test_as_subprocesses(tmp_path: Path) -> None:
    store = tmp_path / "boltraft-demo"
    script = Path(sys.executable).parent / "boltraft"
    assert script.exists(), "pip install -e . installs the boltraft script"
    made = subprocess.run(
        [sys.executable, "-m", "boltraft_cli.main", "inspect", "demo", str(store)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    listed = subprocess.run(
        [str(script), "inspect", str(store), "buckets", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert ["users", "eu"] in [b["path"] for b in json.loads(listed.stdout)]
    with DB.open(store) as db:
        sysdb = db.env.open_db(b"sys", create=False)
        with db.env.begin(write=True) as txn:
            txn.put(b"next_id", b"\x00" * 8, db=sysdb)
    checked = subprocess.run(
        [str(script), "inspect", str(store), "check"], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 1 and "not below the next id" in checked.stdout
    missing = subprocess.run(
        [str(script), "inspect", str(tmp_path / "none"), "stats"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 3 and "data_dir_not_found" in missing.stderr
