"""The client commands: put, get, delete, scan, bucket create/list/delete, status.

They talk to a running cluster through ``boltraft.client.Client`` (see cli/common.py for the
shared options, the output conventions and the error line).

Bucket paths are written ``a/b`` for nested buckets. Keys and values on the command line are
taken as the bytes the shell passed (``os.fsencode``), so any byte string can be written.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import click

from boltraft.client import Client, parse_endpoints
from boltraft.errors import BoltraftError, KeyNotFoundError, UnavailableError

from .common import (
    bucket_path,
    client_options,
    connect,
    echo_bytes,
    echo_json,
    fail,
    handle_errors,
    jsonable,
    read_options,
)

_STATUS_FIELDS = ("id", "role", "term", "lead", "commit", "applied")
_SCAN_PAGE = 1000


def _b(text: str) -> bytes:
    """Returns the bytes the shell passed as ``text`` (``os.fsencode``)."""
    return os.fsencode(text)


def _opt_b(text: str | None) -> bytes | None:
    """Returns ``_b(text)``, or None when ``text`` is None (an option not given)."""
    return None if text is None else os.fsencode(text)


@click.command("put")
@click.argument("bucket")
@click.argument("key")
@click.argument("value")
@click.option("--if-value", default=None, help="Write only if the current value is this.")
@click.option("--if-absent", is_flag=True, help="Write only if the key does not exist.")
@client_options
@handle_errors
def put_cmd(
    bucket: str,
    key: str,
    value: str,
    if_value: str | None,
    if_absent: bool,
    endpoints: str,
    timeout: float,
    as_json: bool,
) -> None:
    """Set KEY to VALUE in BUCKET (prints nothing; --json prints {"ok": true})."""
    with connect(endpoints, timeout) as c:
        c.put(
            bucket_path(bucket),
            _b(key),
            _b(value),
            if_value=_opt_b(if_value),
            if_absent=if_absent,
        )
    if as_json:
        echo_json({"ok": True})


@click.command("get")
@click.argument("bucket")
@click.argument("key")
@read_options
@client_options
@handle_errors
def get_cmd(
    bucket: str,
    key: str,
    read: str,
    max_lag: int | None,
    endpoints: str,
    timeout: float,
    as_json: bool,
) -> None:
    """Print the value of KEY in BUCKET, raw, and a newline.

    A missing key exits 1 with "error: key_not_found: ..." (an empty value prints an empty
    line)."""
    with connect(endpoints, timeout) as c:
        value = c.get(bucket_path(bucket), _b(key), read=read, max_lag=max_lag)
    if value is None:
        raise KeyNotFoundError(f"key {key!r} not found in bucket {bucket!r}")
    if as_json:
        echo_json({"key": _b(key), "value": value})
    else:
        echo_bytes(value)


@click.command("delete")
@click.argument("bucket")
@click.argument("key")
@click.option("--if-value", default=None, help="Delete only if the current value is this.")
@client_options
@handle_errors
def delete_cmd(
    bucket: str, key: str, if_value: str | None, endpoints: str, timeout: float, as_json: bool
) -> None:
    """Delete KEY from BUCKET (prints nothing; deleting a missing key is not an error;
    --json prints {"deleted": true|false})."""
    with connect(endpoints, timeout) as c:
        existed = c.delete(bucket_path(bucket), _b(key), if_value=_opt_b(if_value))
    if as_json:
        echo_json({"deleted": existed})


@click.command("scan")
@click.argument("bucket")
@click.option("--prefix", default=None, help="Only keys starting with this.")
@click.option("--start", default=None, help="First key of the range (inclusive).")
@click.option("--end", default=None, help="End of the range (exclusive).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Print at most N.")
@click.option("--reverse", is_flag=True, help="Descending key order.")
@read_options
@client_options
@handle_errors
def scan_cmd(
    bucket: str,
    prefix: str | None,
    start: str | None,
    end: str | None,
    limit: int | None,
    reverse: bool,
    read: str,
    max_lag: int | None,
    endpoints: str,
    timeout: float,
    as_json: bool,
) -> None:
    """Print the keys of BUCKET in order, one "KEY<TAB>VALUE" line each; a nested bucket
    prints as "KEY/" (no TAB). --json prints [{"key", "value"}] (value null for a bucket).

    Pages are fetched as needed; each page is one read, so a long scan is not one snapshot."""
    items: list[tuple[bytes, bytes | None]] = []
    page_size = _SCAN_PAGE if limit is None else min(limit, _SCAN_PAGE)
    with connect(endpoints, timeout) as c:
        it = c.scan_all(
            bucket_path(bucket),
            prefix=_opt_b(prefix),
            start=_opt_b(start),
            end=_opt_b(end),
            reverse=reverse,
            page_size=page_size,
            read=read,
            max_lag=max_lag,
        )
        for count, (k, v) in enumerate(it, 1):
            if as_json:
                items.append((k, v))
            elif v is None:
                echo_bytes(k + b"/")
            else:
                echo_bytes(k, v)
            if limit is not None and count >= limit:
                break
    if as_json:
        echo_json([{"key": k, "value": v} for k, v in items])


@click.group("bucket")
def bucket_group() -> None:
    """Create, list and delete buckets (nested paths are written a/b)."""


@bucket_group.command("create")
@click.argument("path")
@click.option("--if-not-exists", is_flag=True, help="Succeed if the bucket already exists.")
@client_options
@handle_errors
def bucket_create(
    path: str, if_not_exists: bool, endpoints: str, timeout: float, as_json: bool
) -> None:
    """Create the bucket PATH (its parent must exist)."""
    with connect(endpoints, timeout) as c:
        c.create_bucket(bucket_path(path), if_not_exists=if_not_exists)
    if as_json:
        echo_json({"ok": True})


@bucket_group.command("list")
@click.argument("path", required=False)
@read_options
@client_options
@handle_errors
def bucket_list(
    path: str | None,
    read: str,
    max_lag: int | None,
    endpoints: str,
    timeout: float,
    as_json: bool,
) -> None:
    """Print the buckets directly under PATH (the top level when omitted), one per line."""
    with connect(endpoints, timeout) as c:
        names = c.buckets(None if path is None else bucket_path(path), read=read, max_lag=max_lag)
    if as_json:
        echo_json(names)
    else:
        for name in names:
            echo_bytes(name)


@bucket_group.command("delete")
@click.argument("path")
@client_options
@handle_errors
def bucket_delete(path: str, endpoints: str, timeout: float, as_json: bool) -> None:
    """Delete the bucket PATH and everything in it."""
    with connect(endpoints, timeout) as c:
        c.delete_bucket(bucket_path(path))
    if as_json:
        echo_json({"ok": True})


def _ask_status(endpoint: str, timeout: float, out: dict[str, Any]) -> None:
    try:
        with Client(endpoint, timeout=timeout) as c:
            out[endpoint] = c.status(endpoint)
    except BoltraftError as err:
        out[endpoint] = err


@click.command("status")
@client_options
@handle_errors
def status_cmd(endpoints: str, timeout: float, as_json: bool) -> None:
    """Ask every endpoint (in parallel) for its status: one line per node,
    "ENDPOINT id=.. role=.. term=.. lead=.. commit=.. applied=..", with " disk_full=yes"
    when the node's disk is full, or "ENDPOINT error: ..".
    Exits 1 when no node answered."""
    eps = parse_endpoints(endpoints)
    answers: dict[str, Any] = {}
    threads = [threading.Thread(target=_ask_status, args=(ep, timeout, answers)) for ep in eps]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = []
    for ep in eps:
        a = answers[ep]
        if isinstance(a, BoltraftError):
            rows.append({"endpoint": ep, "error": a.to_wire()})
            if not as_json:
                click.echo(f"{ep} error: {a.code}: {' '.join(a.message.split())}")
        else:
            rows.append({"endpoint": ep, "status": a})
            if not as_json:
                fields = " ".join(f"{k}={jsonable(a[k])}" for k in _STATUS_FIELDS if k in a)
                if a.get("disk_full"):  # the reason is in --json
                    fields += " disk_full=yes"
                click.echo(f"{ep} {fields}")
    if as_json:
        echo_json(rows)
    if all("error" in r for r in rows):
        fail(UnavailableError(f"none of the {len(eps)} endpoints answered"))


def register(group: click.Group) -> None:
    """Adds the client commands to ``group``."""
    for cmd in (put_cmd, get_cmd, delete_cmd, scan_cmd, bucket_group, status_cmd):
        group.add_command(cmd)
