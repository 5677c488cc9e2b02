"""The client commands (put/get/delete/scan/bucket/status) run with CliRunner against a fake
node made of real ZeroMQ sockets (tests/fake_node.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import zmq
from boltraft_cli.common import DEFAULT_ENDPOINTS
from boltraft_cli.main import main
from boltraft_cli.output import exit_code
from click.testing import CliRunner, Result
from fake_node import FakeNode, FakeStore


@pytest.fixture
def store() -> FakeStore:
    return FakeStore(page_limit=2)  # small pages: the CLI must follow continuation tokens


@pytest.fixture
def node(store: FakeStore) -> Iterator[FakeNode]:
    n = FakeNode(store)
    yield n
    n.close()


def dead_endpoint() -> str:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    sock.close(0)
    ctx.term()
    return f"tcp://127.0.0.1:{port}"


def run(node: FakeNode | str, *args: str) -> Result:
    ep = node if isinstance(node, str) else node.endpoint
    return CliRunner().invoke(main, list(args), env={"BOLTRAFT_ENDPOINTS": ep})


def ok(result: Result) -> bytes:
    assert result.exit_code == 0, (result.output, result.exception)
    assert result.stderr == ""
    return result.stdout_bytes


def failed(result: Result, code: str) -> str:
    assert result.exit_code == exit_code(code), result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {code}: "), result.stderr
    assert result.stdout == ""
    return lines[0]


def test_quick_start_flow(node: FakeNode) -> None:
    assert ok(run(node, "bucket", "create", "config")) == b""
    assert ok(run(node, "bucket", "create", "config/sub")) == b""
    assert ok(run(node, "bucket", "create", "config", "--if-not-exists")) == b""
    assert ok(run(node, "put", "config", "color", "blue")) == b""
    assert ok(run(node, "put", "config", "empty", "")) == b""
    assert ok(run(node, "get", "config", "color")) == b"blue\n"
    assert ok(run(node, "get", "config", "empty")) == b"\n"
    assert ok(run(node, "scan", "config")) == b"color\tblue\nempty\t\nsub/\n"
    scanned = json.loads(ok(run(node, "scan", "config", "--json")))
    assert scanned["items"] == [
        {"key": "color", "value": "blue"},
        {"key": "empty", "value": ""},
        {"key": "sub", "value": None},
    ]
    assert type(scanned["applied_index"]) is int
    assert ok(run(node, "bucket", "list")) == b"config\n"
    assert ok(run(node, "bucket", "list", "config")) == b"sub\n"
    assert json.loads(ok(run(node, "bucket", "list", "config", "--json"))) == ["sub"]
    assert json.loads(ok(run(node, "delete", "config", "color", "--json"))) == {"deleted": True}
    assert ok(run(node, "delete", "config", "color")) == b""
    failed(run(node, "get", "config", "color"), "key_not_found")
    assert ok(run(node, "bucket", "delete", "config/sub")) == b""
    assert ok(run(node, "bucket", "list", "config")) == b""
    create = node.bodies()[1]
    assert create["bucket"] == [b"config", b"sub"]


def test_scan_options(node: FakeNode, store: FakeStore) -> None:
    store.root[b"b"] = {f"k{i}".encode(): f"v{i}".encode() for i in range(6)}
    store.root[b"b"][b"other"] = b"o"
    assert ok(run(node, "scan", "b", "--prefix", "k", "--limit", "3")) == (
        b"k0\tv0\nk1\tv1\nk2\tv2\n"
    )
    assert ok(run(node, "scan", "b", "--start", "k2", "--end", "k5", "--reverse")) == (
        b"k4\tv4\nk3\tv3\nk2\tv2\n"
    )
    assert len(json.loads(ok(run(node, "scan", "b", "--json", "--limit", "5")))["items"]) == 5
    assert ok(run(node, "scan", "b", "--read", "stale", "--max-lag", "4", "--prefix", "o")) == (
        b"other\to\n"
    )
    last = node.bodies()[-1]
    assert (last["read"], last["max_lag"], last["prefix"]) == ("stale", 4, b"o")
    failed(run(node, "scan", "b", "--prefix", "k", "--start", "a"), "usage")


def test_bytes_that_are_not_utf8(node: FakeNode, store: FakeStore) -> None:
    store.root[b"b"] = {}
    assert ok(run(node, "put", "b", "bin", "\udcff\udcfe")) == b""  # argv bytes ff fe
    assert store.root[b"b"][b"bin"] == b"\xff\xfe"
    assert ok(run(node, "get", "b", "bin")) == b"\xff\xfe\n"
    assert json.loads(ok(run(node, "get", "b", "bin", "--json"))) == {
        "key": "bin",
        "value": {"base64": "//4="},
    }


def test_errors_are_one_line_with_the_exit_status_of_their_kind(
    node: FakeNode, store: FakeStore
) -> None:
    failed(run(node, "put", "missing", "k", "v"), "bucket_not_found")
    failed(run(node, "bucket", "create", "a//b"), "usage")
    store.root[b"b"] = {b"k": b"v1"}
    failed(run(node, "put", "b", "k", "v2", "--if-value", "nope"), "condition_failed")
    assert ok(run(node, "put", "b", "k", "v2", "--if-value", "v1")) == b""
    line = failed(run(dead_endpoint(), "get", "b", "k", "--timeout", "0.3"), "timeout")
    assert "unavailable" in line


def test_endpoints_option_beats_the_environment(node: FakeNode) -> None:
    result = CliRunner().invoke(
        main,
        ["bucket", "create", "x", "--endpoints", f"{dead_endpoint()},{node.endpoint}"],
        env={"BOLTRAFT_ENDPOINTS": dead_endpoint()},
    )
    assert ok(result) == b""
    assert node.bodies()[-1]["bucket"] == [b"x"]
    assert "tcp://127.0.0.1:7301" in DEFAULT_ENDPOINTS  # what `boltraft up` serves


def test_status_lists_every_node(node: FakeNode, store: FakeStore) -> None:
    dead = dead_endpoint()
    out = ok(run(f"{node.endpoint},{dead}", "status", "--timeout", "0.5")).decode()
    first, second = out.splitlines()
    assert first == f"{node.endpoint} id=n1 role=leader term=3 lead=n1 commit=9"
    assert second.startswith(f"{dead} error: timeout: ")
    rows = json.loads(ok(run(f"{node.endpoint},{dead}", "status", "--json", "--timeout", "0.5")))
    assert rows[0] == {"endpoint": node.endpoint, "status": store.status}
    assert (rows[1]["endpoint"], rows[1]["error"]["code"]) == (dead, "timeout")
    store.status["disk_full"] = "node n1's disk is full: its raft log cannot grow"
    out = ok(run(node.endpoint, "status")).decode()
    assert out == f"{node.endpoint} id=n1 role=leader term=3 lead=n1 commit=9 disk_full=yes\n"
    result = run(dead, "status", "--timeout", "0.3")
    assert result.exit_code == 4
    assert result.stdout.startswith(f"{dead} error: timeout")
    assert result.stderr.startswith("error: unavailable: none of the 1 endpoints answered")
