"""The one output layer of every ``boltraft`` command: formats, encodings, the error line and
the exit codes.

Formats (``-w/--write-out``, on every command that prints a result; ``--json`` is short for
``-w json``):

- ``simple``: made for scripts and people alike: raw values, one item per line;
- ``json``: one JSON document on one line, keys sorted;
- ``table``: a table with a header row (``rich``).

JSON encodings, the same in every command:

- bytes: a string when they are valid UTF-8, otherwise ``{"base64": "..."}``
  (``from_json_bytes`` reads both back, and ``{"hex": "..."}`` too);
- a bucket path: the list of its names, each encoded as bytes are (``["users", "eu"]``);
- an enum: its name in lower case (``"replicate"``), never its number.

In text (``simple``, ``table`` and messages) bytes are shown as their text when it is
printable UTF-8, otherwise as ``0x`` and hex; a bucket path as ``a/b``.

A failure prints ONE line ``error: <code>: <message>`` to stderr and exits with the status
of its kind (``EXIT_CODES``; docs/operations.md lists them):

| status | meaning |
|---|---|
| 0 | success |
| 1 | any other failure |
| 2 | usage: a wrong command line (``usage``) |
| 3 | not found or condition failed (``key_not_found``, ``bucket_not_found``, ...) |
| 4 | unavailable or timeout (``unavailable``, ``timeout``, ``no_leader``, ...) |
| 130 | interrupted (Ctrl-C) |
"""

from __future__ import annotations

import base64
import enum
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn, TypeVar

import click

from boltraft.errors import (
    BoltraftError,
    InvalidArgumentError,
    LocalFileError,
    NoSpaceError,
    UsageError,
)

FORMATS = ("simple", "json", "table")
F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_OTHER = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_UNAVAILABLE = 4
EXIT_INTERRUPTED = 130

NOT_FOUND_CODES = frozenset(
    (
        "key_not_found",
        "bucket_not_found",
        "condition_failed",
        "data_dir_not_found",
        "node_removed",
    )
)
UNAVAILABLE_CODES = frozenset(
    (
        "unavailable",
        "timeout",
        "no_leader",
        "not_leader",
        "lag_exceeded",
        "proposal_dropped",
        "overloaded",
    )
)


def exit_code(code: str) -> int:
    """The exit status of a failure with error ``code`` (see the module docstring)."""
    if code == "usage":
        return EXIT_USAGE
    if code == "interrupted":
        return EXIT_INTERRUPTED
    if code in NOT_FOUND_CODES:
        return EXIT_NOT_FOUND
    if code in UNAVAILABLE_CODES:
        return EXIT_UNAVAILABLE
    return EXIT_OTHER


def one_line(text: str) -> str:
    """``text`` with every run of white space (newlines included) made one space."""
    return " ".join(str(text).split())


def error_line(err: BoltraftError) -> str:
    """``error: <code>: <message>``, on one line."""
    return f"error: {err.code}: {one_line(err.message)}"


def fail(err: BoltraftError) -> NoReturn:
    """Prints ``err``'s one line to stderr and ends the command with its exit status."""
    click.echo(error_line(err), err=True)
    raise click.exceptions.Exit(exit_code(err.code))


def file_error(exc: OSError, what: str = "") -> BoltraftError:
    """The error of a failed local file operation: ``no_space`` for a full disk, else
    ``file_error`` naming the file and the reason (never a Python repr)."""
    from boltraft.storage.fsutil import DISK_FULL_ERRNOS

    path = exc.filename if exc.filename is not None else ""
    reason = exc.strerror or str(exc)
    where = f"{what} {path}".strip() if path else what
    message = f"{where}: {reason}" if where else reason
    if exc.errno in DISK_FULL_ERRNOS:
        return NoSpaceError(message, path=str(path))
    return LocalFileError(message, path=str(path))


# --- the formats ----------------------------------------------------------------------------
def _store_format(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is None or value is False:
        return value
    chosen = "json" if param.name == "as_json" else value
    previous = ctx.meta.get("boltraft.write_out")
    if previous is not None and previous != chosen:
        raise click.BadParameter(
            f"--json and -w {previous if chosen == 'json' else chosen} contradict each other"
        )
    ctx.meta["boltraft.write_out"] = chosen
    return value


def output_options(f: F) -> F:
    """Adds ``-w/--write-out simple|json|table`` and its short form ``--json`` to ``f``
    (read back with ``write_out()``)."""
    f = click.option(
        "--json",
        "as_json",
        is_flag=True,
        default=False,
        expose_value=False,
        callback=_store_format,
        help="Short for -w json.",
    )(f)
    return click.option(
        "-w",
        "--write-out",
        "write_out_",
        type=click.Choice(FORMATS),
        default=None,
        expose_value=False,
        callback=_store_format,
        help="Output format: simple (default), json or table.",
    )(f)


def write_out() -> str:
    """The output format the running command was given (``simple`` by default)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return "simple"
    return str(ctx.meta.get("boltraft.write_out") or "simple")


# --- encodings -------------------------------------------------------------------------------
def json_bytes(b: bytes) -> Any:
    """``b`` for JSON: the string when it is UTF-8, else ``{"base64": ...}``."""
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(b).decode("ascii")}


def from_json_bytes(value: Any, what: str = "value") -> bytes:
    """The bytes a JSON value stands for: a string (UTF-8), ``{"base64": ...}`` or
    ``{"hex": ...}``; raises InvalidArgumentError for anything else."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict) and len(value) == 1:
        ((kind, text),) = value.items()
        try:
            if kind == "base64" and isinstance(text, str):
                return base64.b64decode(text.encode("ascii"), validate=True)
            if kind == "hex" and isinstance(text, str):
                return bytes.fromhex(text)
        except ValueError:
            raise InvalidArgumentError(f"{what}: malformed {kind} text") from None
    raise InvalidArgumentError(
        f'{what}: expected a string, {{"base64": "..."}} or {{"hex": "..."}}'
    )


def json_path(path: Sequence[bytes]) -> list[Any]:
    """A bucket path for JSON: the list of its names."""
    return [json_bytes(n) for n in path]


def to_json(value: Any) -> Any:
    """``value`` made JSON-ready with the encodings above (bytes, enums; tuples as lists)."""
    if isinstance(value, bytes):
        return json_bytes(value)
    if isinstance(value, enum.Enum):
        return value.name.lower()
    if isinstance(value, dict):
        return {
            str(to_json(k)) if not isinstance(k, str) else k: to_json(v) for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, BoltraftError):
        return value.to_wire()
    return value


def show(b: bytes) -> str:
    """``b`` as text for people: its text when it is printable UTF-8, else ``0x`` + hex."""
    try:
        text = b.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + b.hex()
    return text if text.isprintable() else "0x" + b.hex()


def show_path(path: Sequence[bytes]) -> str:
    """A bucket path as text: ``a/b``."""
    return "/".join(show(n) for n in path)


def cell(value: Any) -> str:
    """One table cell: bytes shown as ``show`` does, None as "", enums by name, lists
    joined with commas."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return show(value)
    if isinstance(value, enum.Enum):
        return value.name.lower()
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, (list, tuple)):
        return ",".join(cell(v) for v in value)
    return str(value)


# --- printing --------------------------------------------------------------------------------
def echo_json(value: Any) -> None:
    """Prints ``value`` as one line of JSON, keys sorted, with the encodings above."""
    click.echo(json.dumps(to_json(value), sort_keys=True))


def echo_line(*parts: bytes | str) -> None:
    """Writes ``parts`` joined by TAB, and a newline (bytes as they are)."""
    click.echo(b"\t".join(p if isinstance(p, bytes) else p.encode() for p in parts))


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Prints ``rows`` under a header row, in columns (``rich``); when stdout is not a
    terminal, plain text that never wraps or cuts a cell, without trailing blanks."""
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for h in headers:
        table.add_column(h, overflow="fold", no_wrap=not sys.stdout.isatty())
    for row in rows:
        table.add_row(*(cell(v) for v in row))
    tty = sys.stdout.isatty()
    if tty:
        Console(file=sys.stdout, highlight=False).print(table)
        return
    console = Console(width=100_000, highlight=False, soft_wrap=True, color_system=None)
    with console.capture() as captured:
        console.print(table)
    for line in captured.get().splitlines():
        click.echo(line.rstrip())


def emit(
    data: Any,
    *,
    table: tuple[Sequence[str], Iterable[Sequence[Any]]] | None = None,
    simple: Callable[[], None] | None = None,
) -> None:
    """Prints a command's result in the chosen format: ``data`` as JSON, ``table`` (headers,
    rows) as a table, ``simple()`` in simple form (when a form is not given, the table or
    the JSON stands in for it)."""
    fmt = write_out()
    if fmt == "json" or (simple is None and table is None):
        echo_json(data)
    elif fmt == "table" and table is not None:
        print_table(*table)
    elif simple is not None:
        simple()
    else:
        assert table is not None
        print_table(*table)


def usage(message: str) -> UsageError:
    """The usage error ``message`` (a flag that does nothing in its context, say)."""
    return UsageError(message)
