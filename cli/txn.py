"""``boltraft txn``: several writes as ONE atomic batch, read as JSON from stdin or a file.

The input is a JSON list of operations, applied in order in one transaction; if any fails
(a condition, a missing bucket), none is applied::

    [
      {"op": "put", "bucket": "config", "key": "color", "value": "blue"},
      {"op": "put", "bucket": "config", "key": "size", "value": "L", "if_absent": true},
      {"op": "put", "bucket": "config", "key": "mode", "value": "on", "if_value": "off"},
      {"op": "delete", "bucket": "config", "key": "old", "if_value": "x"},
      {"op": "create_bucket", "bucket": "config/sub", "if_not_exists": true},
      {"op": "delete_bucket", "bucket": "tmp"},
      {"op": "next_sequence", "bucket": "config"}
    ]

``bucket`` is a path written ``a/b`` or a list of names; keys and values are strings
(UTF-8), ``{"base64": "..."}`` or ``{"hex": "..."}`` (cli/output.py). Conditions are
``if_value`` (the current value must be this) and ``if_absent`` (the key must not exist) on
``put``, and ``if_value`` on ``delete``.

Prints one line per operation (``INDEX OP BUCKET KEY RESULT``); ``-w json`` prints
``{"results": [...]}``. A failed condition exits 3 with ``error: condition_failed: op N
(...): ...``; nothing was written then.
"""

from __future__ import annotations

import json
from typing import Any

import click

from boltraft.errors import BoltraftError, UsageError

from .common import bucket_path, client_options, connect, handle_errors, read_input
from .output import cell, emit, from_json_bytes, show, show_path

OPS = ("put", "delete", "create_bucket", "delete_bucket", "next_sequence")
_FIELDS = {
    "put": {"op", "bucket", "key", "value", "if_value", "if_absent"},
    "delete": {"op", "bucket", "key", "if_value"},
    "create_bucket": {"op", "bucket", "if_not_exists"},
    "delete_bucket": {"op", "bucket"},
    "next_sequence": {"op", "bucket"},
}
_REQUIRED = {"put": ("key", "value"), "delete": ("key",)}


def parse_ops(raw: bytes) -> list[dict[str, Any]]:
    """The batch ops of a JSON document (see the module docstring), with buckets, keys
    and values as bytes; raises UsageError naming the first thing wrong."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"txn input is not JSON: {exc}") from None
    if not isinstance(doc, list) or not doc:
        raise UsageError("txn input must be a non-empty JSON list of operations")
    ops = []
    for i, item in enumerate(doc):
        where = f"operation {i}"
        if not isinstance(item, dict) or item.get("op") not in OPS:
            raise UsageError(f"{where}: needs an 'op' among {', '.join(OPS)}")
        kind = item["op"]
        unknown = sorted(set(item) - _FIELDS[kind])
        if unknown:
            raise UsageError(f"{where} ({kind}): unknown fields {', '.join(unknown)}")
        for name in ("bucket", *_REQUIRED.get(kind, ())):
            if name not in item:
                raise UsageError(f"{where} ({kind}): missing '{name}'")
        op: dict[str, Any] = {"op": kind}
        bucket = item["bucket"]
        try:
            if isinstance(bucket, str):
                op["bucket"] = bucket_path(bucket)
            elif isinstance(bucket, list) and bucket:
                op["bucket"] = [from_json_bytes(n, f"{where}: bucket") for n in bucket]
            else:
                raise UsageError("bucket must be a path a/b or a list of names")
            for name in ("key", "value", "if_value"):
                if name in item:
                    op[name] = from_json_bytes(item[name], f"{where}: {name}")
        except BoltraftError as err:
            raise UsageError(f"{where} ({kind}): {err.message}") from None
        for flag in ("if_absent", "if_not_exists"):
            if flag in item:
                if not isinstance(item[flag], bool):
                    raise UsageError(f"{where} ({kind}): {flag} must be true or false")
                if item[flag]:
                    op[flag] = True
        if op.get("if_absent") and "if_value" in op:
            raise UsageError(f"{where} (put): if_value and if_absent exclude each other")
        ops.append(op)
    return ops


def describe(op: dict[str, Any]) -> str:
    """``put config color``: an op for messages."""
    key = f" {show(op['key'])}" if "key" in op else ""
    return f"{op['op']} {show_path(op['bucket'])}{key}"


@click.command("txn")
@click.option(
    "--file",
    "file_",
    type=click.Path(dir_okay=False),
    default="-",
    show_default=True,
    help="Read the JSON list of operations from this file (- for stdin).",
)
@client_options
@handle_errors
def txn_cmd(file_: str, endpoints: str, timeout: float) -> None:
    """Run a JSON list of writes (puts, deletes, with conditions) from stdin or --file as
    ONE atomic batch, and print each result (see docs/operations.md for the format)."""
    ops = parse_ops(read_input(file_))
    with connect(endpoints, timeout) as c:
        try:
            results = c.batch(ops)
        except BoltraftError as err:
            index = err.details.get("index")
            if isinstance(index, int) and 0 <= index < len(ops):
                err.message = f"op {index} ({describe(ops[index])}): {err.message}"
            raise
    rows = [
        [i, op["op"], op["bucket"], op.get("key"), _result(r)]
        for i, (op, r) in enumerate(zip(ops, results, strict=True))
    ]

    def simple() -> None:
        for i, kind, bucket, key, result in rows:
            words = [str(i), kind, show_path(bucket)]
            if key is not None:
                words.append(show(key))
            words.append(cell(result))
            click.echo(" ".join(words))

    emit(
        {
            "results": [
                {"op": op["op"], "bucket": op["bucket"], "key": op.get("key"), "result": r}
                for op, r in zip(ops, results, strict=True)
            ]
        },
        table=(
            ["#", "OP", "BUCKET", "KEY", "RESULT"],
            [[*r[:2], show_path(r[2]), *r[3:]] for r in rows],
        ),
        simple=simple,
    )


def _result(r: Any) -> Any:
    return "ok" if r is None else r


def register(group: click.Group) -> None:
    """Adds ``txn`` to ``group``."""
    group.add_command(txn_cmd)
