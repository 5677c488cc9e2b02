"""The one output layer (cli/output.py): JSON encodings of bytes, paths and enums, the text
shown for bytes, exit codes by error kind, and the server's JSON log lines."""

from __future__ import annotations

import json
import logging

import pytest
from boltraft_cli.output import (
    exit_code,
    from_json_bytes,
    json_path,
    show,
    to_json,
)

from boltraft.errors import InvalidArgumentError, error_codes
from boltraft.raft.types import ProgressState
from boltraft.server.main import JsonLogFormatter


def test_bytes_paths_and_enums_have_one_json_encoding() -> None:
    assert to_json(b"blue") == "blue"
    assert to_json(b"\xff\xfe") == {"base64": "//4="}
    assert json_path([b"users", b"eu"]) == ["users", "eu"]
    assert to_json({"state": ProgressState.REPLICATE, "k": (b"a", 1)}) == {
        "state": "replicate",
        "k": ["a", 1],
    }
    for value in (b"", b"text", bytes(range(256))):
        assert from_json_bytes(to_json(value)) == value
    assert from_json_bytes({"hex": "00ff"}) == b"\x00\xff"
    with pytest.raises(InvalidArgumentError):
        from_json_bytes({"base64": "!!"})
    with pytest.raises(InvalidArgumentError):
        from_json_bytes(3)


def test_text_for_people() -> None:
    assert show(b"color") == "color"
    assert show(b"\xff\x00") == "0xff00"
    assert show(b"a\nb") == "0x610a62"  # not printable: never breaks a line


def test_every_error_code_has_an_exit_status_of_its_kind() -> None:
    assert exit_code("usage") == 2
    assert exit_code("key_not_found") == exit_code("condition_failed") == 3
    assert exit_code("timeout") == exit_code("unavailable") == exit_code("no_leader") == 4
    assert exit_code("interrupted") == 130
    assert {exit_code(code) for code in error_codes()} == {1, 2, 3, 4, 130}


def test_json_log_lines() -> None:
    record = logging.LogRecord(
        "boltraft.server", logging.WARNING, __file__, 1, "a %s", ("b",), None
    )
    line = json.loads(JsonLogFormatter().format(record))
    assert line["level"] == "warning" and line["logger"] == "boltraft.server"
    assert line["msg"] == "a b" and line["ts"].endswith("+00:00")
