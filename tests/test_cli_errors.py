"""No tracebacks: every command, run through the installed entry point with bad arguments,
prints ONE line ``error: <code>: <message>`` on stderr and exits with the documented status
of its kind (cli/output.py: 2 usage, 3 not found, 4 unavailable, 1 other). Also: the safe
admin paths (a failed restore or serve leaves no data directory, ``up`` refuses ports in
use), help that shows true defaults, and the light install."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from boltraft_cli.main import main
from boltraft_cli.output import EXIT_NOT_FOUND, EXIT_OTHER, EXIT_UNAVAILABLE, EXIT_USAGE

BIN = Path(sys.executable).parent
BOLTRAFT = shutil.which("boltraft", path=str(BIN)) or "boltraft"
LINE = re.compile(r"^error: [a-z_]+: \S.*$")


def dead_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def run(*args: str, stdin: bytes = b"", cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "BOLTRAFT_ENDPOINTS": dead_endpoint()}
    env.pop("BOLTRAFT_TRACEBACK", None)
    return subprocess.run(
        [BOLTRAFT, *args], input=stdin, capture_output=True, env=env, timeout=60, cwd=cwd
    )


def one_error(result: subprocess.CompletedProcess, code: str, status: int) -> str:
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, result.stderr.decode()
    assert LINE.match(lines[0]) and lines[0].startswith(f"error: {code}: "), lines[0]
    assert result.returncode == status, (result.returncode, lines[0])
    assert b"Traceback" not in result.stdout + result.stderr
    return lines[0]


def every_command(group: click.Group = main, prefix: tuple[str, ...] = ()) -> Iterator[tuple]:
    """The path of every leaf command of the ``boltraft`` tree."""
    for name, cmd in sorted(group.commands.items()):
        if isinstance(cmd, click.Group):
            yield from every_command(cmd, (*prefix, name))
        else:
            yield (*prefix, name)


COMMANDS = list(every_command())


def test_the_tree_is_what_the_docs_name() -> None:
    names = {" ".join(c) for c in COMMANDS}
    for expected in ("txn", "endpoint health", "status", "put", "serve", "up", "backup"):
        assert expected in names


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_refuses_an_unknown_option_in_one_line(path: tuple[str, ...]) -> None:
    args = list(path)
    if path[0] == "inspect":  # inspect DIR COMMAND
        args = ["inspect", "somewhere", *path[1:]]
    line = one_error(run(*args, "--no-such-option"), "usage", EXIT_USAGE)
    assert "--no-such-option" in line and "--help" in line


@pytest.mark.parametrize(
    ("args", "code", "status"),
    [
        (("put", "b"), "usage", EXIT_USAGE),  # a missing argument
        (("put", "b", "k"), "usage", EXIT_USAGE),  # no value, no --file
        (("get", "b", "k", "--max-lag", "5"), "usage", EXIT_USAGE),  # without --read stale
        (("scan", "b", "--max-lag", "5"), "usage", EXIT_USAGE),
        (("get", "b", "zz", "--hex"), "usage", EXIT_USAGE),
        (("get", "a//b", "k"), "usage", EXIT_USAGE),
        (("get", "b", "k", "-w", "yaml"), "usage", EXIT_USAGE),
        (("get", "b", "k", "--json", "-w", "table"), "usage", EXIT_USAGE),
        (("serve", "--data", "x", "--log-level", "bogus"), "usage", EXIT_USAGE),
        (("serve", "--data", "x", "--log-format", "xml"), "usage", EXIT_USAGE),
        (("serve", "--data", "x", "-w", "table"), "usage", EXIT_USAGE),
        (("serve", "--data", "x", "-w", "json", "--log-format", "text"), "usage", EXIT_USAGE),
        (("serve", "--join", "tcp://127.0.0.1:1", "--peer", "a=tcp://h:1"), "usage", EXIT_USAGE),
        (("txn",), "usage", EXIT_USAGE),  # empty stdin: not JSON
        (("txn", "--file", "/no/such/ops.json"), "file_error", EXIT_OTHER),
        (("backup", "/no/such/dir/b.bak"), "file_error", EXIT_OTHER),
        (("restore", "/no/such/b.bak", "--data", "/tmp/x"), "file_error", EXIT_OTHER),
        (("get", "b", "k", "--timeout", "0.3"), "timeout", EXIT_UNAVAILABLE),
        (("status", "--timeout", "0.3"), "unavailable", EXIT_UNAVAILABLE),
        (("endpoint", "health", "--timeout", "0.3"), "unavailable", EXIT_UNAVAILABLE),
        (("inspect", "/no/such/store", "buckets"), "data_dir_not_found", EXIT_NOT_FOUND),
        (("bench", "cluster", "--keep"), "usage", EXIT_USAGE),  # --keep needs --endpoints
        (("bench", "cluster", "--keys", "k"), "usage", EXIT_USAGE),  # --keys needs --endpoints
        (("bench", "cluster", "--endpoints", "tcp://h:1", "--nodes", "5"), "usage", EXIT_USAGE),
        (("up", "--nodes", "0"), "usage", EXIT_USAGE),
        (("chaos", "run", "--faults", "kill,bogus"), "usage", EXIT_USAGE),
        (("chaos", "run", "--nodes", "0"), "usage", EXIT_USAGE),
        (("chaos", "run", "--duration", "0"), "usage", EXIT_USAGE),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else str(v),
)
def test_bad_arguments_print_one_line_and_the_documented_status(
    args: tuple[str, ...], code: str, status: int
) -> None:
    one_error(run(*args), code, status)


def test_txn_input_errors_name_the_operation(tmp_path: Path) -> None:
    bad = b'[{"op": "put", "bucket": "b", "key": "k"}]'
    assert "operation 0 (put): missing 'value'" in one_error(
        run("txn", stdin=bad), "usage", EXIT_USAGE
    )
    line = one_error(run("txn", stdin=b'[{"op": "frobnicate"}]'), "usage", EXIT_USAGE)
    assert "operation 0" in line


def test_bench_report_of_a_file_that_is_not_a_result(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(range(256)))
    line = one_error(run("bench", "report", str(junk)), "bad_request", EXIT_OTHER)
    assert "not a result file" in line


def test_a_failed_restore_leaves_nothing_behind(tmp_path: Path) -> None:
    fake = tmp_path / "fake.bak"
    fake.write_bytes(b"not a backup at all")
    target = tmp_path / "new" / "data"
    one_error(run("restore", str(fake), "--data", str(target)), "snapshot_error", EXIT_OTHER)
    assert not (tmp_path / "new").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    one_error(run("restore", str(fake), "--data", str(empty)), "snapshot_error", EXIT_OTHER)
    assert empty.is_dir() and not any(empty.iterdir())


def test_a_failed_serve_leaves_nothing_behind(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        data = tmp_path / "node"
        base = ["serve", "--id", "n1", "--data", str(data)]
        line = one_error(
            run(*base, "--listen", f"tcp://127.0.0.1:{port}"), "unavailable", EXIT_UNAVAILABLE
        )
        assert "Address already in use" in line
        assert not data.exists()
        free = dead_endpoint()
        line = one_error(
            run(*base, "--listen", free, "--metrics-addr", f"127.0.0.1:{port}"),
            "config_error",
            EXIT_OTHER,
        )
        assert "metrics address" in line
        assert not data.exists()
    one_error(run(*base, "--listen", "nonsense"), "config_error", EXIT_OTHER)
    assert not data.exists()


def test_up_refuses_ports_in_use_before_starting_anything(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("up", "--data", str(tmp_path / "d"), "--base-port", str(port - 1))
    line = one_error(result, "config_error", EXIT_OTHER)
    # the busy port is named (another process may hold one of the other ports too)
    assert re.search(rf"ports? (\d+, )*{port}(, \d+)* on 127\.0\.0\.1 in use", line), line
    assert result.stdout == b""  # no banner, no leader of somebody else's cluster
    assert not (tmp_path / "d").exists()


def test_a_port_held_only_by_closed_connections_is_free_for_up() -> None:
    """A cluster just stopped leaves its accepted connections in TIME_WAIT on its ports;
    the nodes bind with SO_REUSEADDR, so ``up`` must not call those ports in use."""
    from boltraft_cli.up import ports_in_use

    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ZeroMQ's does
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()  # the listening side closes first: its port goes to TIME_WAIT
        client.recv(1)
        client.close()
    assert ports_in_use("127.0.0.1", [port]) == []
    with socket.socket() as live:
        live.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        live.bind(("127.0.0.1", port))
        live.listen()
        assert ports_in_use("127.0.0.1", [port]) == [port]


def test_help_shows_the_true_defaults() -> None:
    from boltraft.server.config import ServerConfig

    cfg = ServerConfig(id="x", data=Path("."), listen="tcp://h:1")
    text = " ".join(run("serve", "--help").stdout.decode().split())
    assert f"[{cfg.snapshot_entries}]" in text
    assert f"Length of one Raft tick [{cfg.tick_ms}]" in text
    assert f"Election timeout in ticks [{cfg.election_tick}]" in text
    assert f"Heartbeat interval in ticks [{cfg.heartbeat_tick}]" in text


def test_python_dash_m_boltraft_and_the_package_files() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "boltraft", "--version"], capture_output=True, timeout=60
    )
    assert out.returncode == 0 and out.stdout.decode().startswith("boltraft, version ")
    root = Path(__file__).resolve().parents[1]
    assert (root / "LICENSE").read_text().startswith("MIT License")
    import boltraft_cli

    import boltraft

    assert (Path(boltraft.__file__).parent / "py.typed").exists()
    assert (Path(boltraft_cli.__file__).parent / "py.typed").exists()


def test_the_base_install_pulls_no_benchmark_libraries() -> None:
    reqs = importlib.metadata.requires("boltraft") or []
    base = [r for r in reqs if "extra ==" not in r]
    bench = [r for r in reqs if 'extra == "bench"' in r]
    heavy = ("matplotlib", "numpy", "pillow", "hdrhistogram", "tqdm", "fonttools")
    assert not [r for r in base if r.lower().startswith(heavy)], base
    assert {r.split(">")[0].split(";")[0].strip() for r in bench} >= {
        "hdrhistogram",
        "matplotlib",
        "tqdm",
    }
    assert any(r.startswith("prometheus-client") or r.startswith("prometheus_client") for r in base)


def test_a_bench_command_without_its_extra_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import importlib.util

    from click.testing import CliRunner

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "hdrh" else real(name, *a)
    )
    result = CliRunner().invoke(main, ["bench", "disk", "--dir", str(tmp_path)])
    assert result.exit_code == EXIT_OTHER
    assert result.stderr.splitlines() == [
        "error: missing_extra: boltraft bench needs the bench extra (hdrh missing): "
        "pip install 'boltraft[bench]'"
    ]
