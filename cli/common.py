"""Helpers shared by the client commands: their options, their output and their error exit.

Conventions of every client command: ``--endpoints`` (comma-separated; env
``BOLTRAFT_ENDPOINTS``; default: the three ports ``boltraft up`` uses), ``--timeout`` seconds
per command, ``--json`` for structured output. Plain output is made for scripts: raw bytes,
one item per line. On failure a command prints ONE line ``error: <code>: <message>`` to
stderr and exits with status 1.

In ``--json`` output, bytes that are valid UTF-8 appear as JSON strings; any other bytes as
``{"base64": "..."}``.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, ParamSpec, TypeVar

import click

from boltraft.client import Client
from boltraft.errors import BadRequestError, BoltraftError

DEFAULT_ENDPOINTS = "tcp://127.0.0.1:7301,tcp://127.0.0.1:7302,tcp://127.0.0.1:7303"
ENDPOINTS_ENV = "BOLTRAFT_ENDPOINTS"

F = TypeVar("F", bound=Callable[..., Any])
P = ParamSpec("P")
R = TypeVar("R")


def client_options(f: F) -> F:
    """Returns ``f`` with the ``--endpoints``, ``--timeout`` and ``--json`` options."""
    f = click.option(
        "--json", "as_json", is_flag=True, help="Print structured JSON instead of plain text."
    )(f)
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
    """Returns ``f`` with the ``--read`` and ``--max-lag`` options."""
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


def fail(err: BoltraftError) -> NoReturn:
    """Prints ``error: <code>: <message>`` (one line) to stderr and exits with status 1."""
    message = " ".join(str(err.message).split())  # one line, whatever the message holds
    click.echo(f"error: {err.code}: {message}", err=True)
    raise click.exceptions.Exit(1)


def handle_errors(f: Callable[P, R]) -> Callable[P, R]:
    """Wraps ``f`` so that a BoltraftError it raises becomes the one-line error and exit 1."""

    @functools.wraps(f)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return f(*args, **kwargs)
        except BoltraftError as err:
            fail(err)

    return wrapper


@contextmanager
def connect(endpoints: str, timeout: float) -> Iterator[Client]:
    """A Client of ``endpoints`` for the ``with`` block, closed when it ends."""
    client = Client(endpoints, timeout=timeout)
    try:
        yield client
    finally:
        client.close()


def bucket_path(text: str) -> list[bytes]:
    """Returns the bucket path written ``a/b/c`` as UTF-8 names; raises BadRequestError for
    an empty path or an empty name (``a//b``, ``/a``)."""
    names = text.split("/")
    if not text or any(not n for n in names):
        raise BadRequestError(f"invalid bucket path {text!r} (write nested buckets as a/b)")
    return [n.encode() for n in names]


def jsonable(value: Any) -> Any:
    """Returns ``value`` with bytes made JSON-friendly (see the module docstring)."""
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {str(jsonable(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def echo_json(value: Any) -> None:
    """Prints ``value`` as one line of JSON, keys sorted, bytes as ``jsonable`` makes them."""
    click.echo(json.dumps(jsonable(value), sort_keys=True))


def echo_bytes(*parts: bytes) -> None:
    """Writes ``parts`` joined by TAB, and a newline, as raw bytes."""
    click.echo(b"\t".join(parts))
