"""Helpers shared by the client commands: their options, their inputs and their error exit.

Conventions of every client command: ``--endpoints`` (comma-separated; env
``BOLTRAFT_ENDPOINTS``; default: the three ports ``boltraft up`` uses), ``--keys`` (a client
keys folder, env ``BOLTRAFT_KEYS``; default: ``boltraft-data/keys/admin`` when the folder
``boltraft up`` made is in the current directory, else none: no CURVE), ``--timeout``
seconds per command, ``-w/--write-out simple|json|table`` (``--json`` short for ``-w
json``). Output, encodings, the error line and exit codes: cli/output.py.

Keys and values on the command line are the bytes the shell passed (``os.fsencode``), or
hex with ``--hex``; a value ``-`` is read from stdin, ``--file F`` from a file.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

import click

from boltraft.client import Client
from boltraft.errors import BoltraftError, UsageError
from boltraft.transport.curve import PartyKeys, load_keys

from .output import echo_json, fail, file_error, output_options

DEFAULT_ENDPOINTS = "tcp://127.0.0.1:7301,tcp://127.0.0.1:7302,tcp://127.0.0.1:7303"
ENDPOINTS_ENV = "BOLTRAFT_ENDPOINTS"
KEYS_ENV = "BOLTRAFT_KEYS"
UP_KEYS = os.path.join("boltraft-data", "keys", "admin")  # what ``boltraft up`` makes here
_KEYS_META = "boltraft.keys"

F = TypeVar("F", bound=Callable[..., Any])
P = ParamSpec("P")
R = TypeVar("R")

__all__ = ["echo_json", "fail"]


def keys_option(f: F) -> F:
    """Returns ``f`` with the ``--keys`` option (env ``BOLTRAFT_KEYS``), read back with
    ``client_keys()``."""
    return click.option(
        "--keys",
        envvar=KEYS_ENV,
        expose_value=False,
        callback=_remember_keys,
        type=click.Path(file_okay=False),
        help=f"A client keys folder for a cluster with CURVE (env {KEYS_ENV}) "
        f"[{UP_KEYS} when it exists].",
    )(f)


def client_options(f: F) -> F:
    """Returns ``f`` with the ``--endpoints``, ``--keys``, ``--timeout`` and output options."""
    f = keys_option(output_options(f))
    f = click.option(
        "--timeout",
        default=5.0,
        show_default=True,
        type=click.FloatRange(min=0.001),
        help="Seconds the command may take, retries included.",
    )(f)
    return click.option(
        "--endpoints",
        envvar=ENDPOINTS_ENV,
        default=DEFAULT_ENDPOINTS,
        show_default=True,
        help=f"Comma-separated node addresses (env {ENDPOINTS_ENV}).",
    )(f)


def read_options(f: F) -> F:
    """Returns ``f`` with the ``--read`` and ``--max-lag`` options (``check_read`` refuses
    a ``--max-lag`` without ``--read stale``)."""
    f = click.option(
        "--max-lag",
        type=click.IntRange(min=0),
        default=None,
        help="With --read stale: most log entries the answering node may lag behind.",
    )(f)
    return click.option(
        "--read",
        type=click.Choice(["linearizable", "stale"]),
        default="linearizable",
        show_default=True,
        help="linearizable (via the leader's read index) or stale (any node, local data).",
    )(f)


def check_read(read: str, max_lag: int | None) -> None:
    """Raises UsageError for ``--max-lag`` without ``--read stale`` (it would do nothing)."""
    if max_lag is not None and read != "stale":
        raise UsageError("--max-lag applies to --read stale only")


def handle_errors(f: Callable[P, R]) -> Callable[P, R]:
    """Wraps ``f`` so that a BoltraftError or a failed local file operation it raises becomes
    the one-line error and its exit status (also when the command runs outside ``main``)."""

    @functools.wraps(f)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return f(*args, **kwargs)
        except BoltraftError as err:
            fail(err)
        except OSError as exc:
            fail(file_error(exc))

    return wrapper


def _remember_keys(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    ctx.meta[_KEYS_META] = value


def client_keys() -> PartyKeys | None:
    """Returns the keys of the running command: ``--keys`` (or ``BOLTRAFT_KEYS``), else
    ``UP_KEYS`` when that folder exists, else None. Raises ConfigError for an unusable
    folder. Call it on the command's thread (it reads the click context)."""
    ctx = click.get_current_context(silent=True)
    given = None if ctx is None else ctx.meta.get(_KEYS_META)
    if given:
        return load_keys(given)
    return load_keys(UP_KEYS) if os.path.isdir(UP_KEYS) else None


@contextmanager
def connect(endpoints: str, timeout: float) -> Iterator[Client]:
    """A Client of ``endpoints`` (with ``client_keys()``) for the ``with`` block, closed
    when it ends."""
    client = Client(endpoints, timeout=timeout, keys=client_keys())
    try:
        yield client
    finally:
        client.close()


def bucket_path(text: str) -> list[bytes]:
    """Returns the bucket path written ``a/b/c`` as UTF-8 names; raises UsageError for an
    empty path or an empty name (``a//b``, ``/a``)."""
    names = text.split("/")
    if not text or any(not n for n in names):
        raise UsageError(f"invalid bucket path {text} (write nested buckets as a/b)")
    return [os.fsencode(n) for n in names]


def arg_bytes(text: str, hex_: bool, what: str) -> bytes:
    """The bytes of a key or value given on the command line: the shell's bytes, or hex
    with ``hex_`` (a UsageError when it is not hex)."""
    if not hex_:
        return os.fsencode(text)
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise UsageError(f"{what} is not hex: {text}") from None


def opt_bytes(text: str | None, hex_: bool, what: str) -> bytes | None:
    """``arg_bytes`` of an option, None when it was not given."""
    return None if text is None else arg_bytes(text, hex_, what)


def read_input(source: str) -> bytes:
    """The bytes of ``source``: stdin for ``-``, else the file it names (a failure is a
    file_error naming it)."""
    if source == "-":
        return sys.stdin.buffer.read()
    try:
        with open(source, "rb") as f:
            return f.read()
    except OSError as exc:
        raise file_error(exc, "cannot read") from None


def hex_option(f: F) -> F:
    """Adds ``--hex``: keys and values on the command line are hex, and printed as hex."""
    return click.option(
        "--hex",
        "hex_",
        is_flag=True,
        help="Keys and values are written in hex (given and printed).",
    )(f)
