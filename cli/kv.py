"""The client commands: put, get, delete, scan, bucket create/list/delete, status.

They talk to a running cluster through ``boltraft.client.Client`` (see cli/common.py for the
shared options and inputs, cli/output.py for the formats, the error line and exit codes).

Bucket paths are written ``a/b`` for nested buckets. Keys and values on the command line are
taken as the bytes the shell passed (``os.fsencode``), or as hex with ``--hex``; ``put``
reads its value from stdin when it is ``-``, or from ``--file F``.
"""

from __future__ import annotations

import threading
from typing import Any

import click

from boltraft.client import Client, parse_endpoints
from boltraft.errors import BoltraftError, KeyNotFoundError, UnavailableError, UsageError

from .common import (
    arg_bytes,
    bucket_path,
    check_read,
    client_keys,
    client_options,
    connect,
    handle_errors,
    hex_option,
    opt_bytes,
    read_input,
    read_options,
)
from .output import (
    echo_line,
    emit,
    fail,
    json_bytes,
    one_line,
    show,
    write_out,
)

_STATUS_FIELDS = ("id", "role", "term", "lead", "commit", "applied")
_SCAN_PAGE = 1000


def _text(b: bytes, hex_: bool) -> bytes:
    """A key or value as ``simple`` output prints it: raw, or hex with ``--hex``."""
    return b.hex().encode() if hex_ else b


@click.command("put")
@click.argument("bucket")
@click.argument("key")
@click.argument("value", required=False)
@click.option(
    "--file",
    "file_",
    type=click.Path(dir_okay=False),
    default=None,
    help="Read the value from this file (give no VALUE).",
)
@click.option("--if-value", default=None, help="Write only if the current value is this.")
@click.option("--if-absent", is_flag=True, help="Write only if the key does not exist.")
@hex_option
@client_options
@handle_errors
def put_cmd(
    bucket: str,
    key: str,
    value: str | None,
    file_: str | None,
    if_value: str | None,
    if_absent: bool,
    hex_: bool,
    endpoints: str,
    timeout: float,
) -> None:
    """Set KEY to VALUE in BUCKET. VALUE "-" reads the value from stdin (all of it, as it
    is: `printf` rather than `echo` when the newline is not wanted); --file F reads it from
    F. Prints nothing (-w json: {"ok": true})."""
    if file_ is not None and value is not None:
        raise UsageError("give either VALUE or --file, not both")
    if file_ is None and value is None:
        raise UsageError("missing VALUE (or - for stdin, or --file F)")
    if if_value is not None and if_absent:
        raise UsageError("--if-value and --if-absent exclude each other")
    if file_ is not None:
        data = read_input(file_)
    elif value == "-":
        data = read_input("-")
    else:
        assert value is not None
        data = arg_bytes(value, hex_, "VALUE")
    path = bucket_path(bucket)
    k = arg_bytes(key, hex_, "KEY")
    expect = opt_bytes(if_value, hex_, "--if-value")
    with connect(endpoints, timeout) as c:
        c.put(path, k, data, if_value=expect, if_absent=if_absent)
    if write_out() != "simple":
        emit({"ok": True}, table=(["OK"], [[True]]))


@click.command("get")
@click.argument("bucket")
@click.argument("key")
@hex_option
@read_options
@client_options
@handle_errors
def get_cmd(
    bucket: str,
    key: str,
    hex_: bool,
    read: str,
    max_lag: int | None,
    endpoints: str,
    timeout: float,
) -> None:
    """Print the value of KEY in BUCKET, raw (hex with --hex), and a newline.

    A missing key exits 3 with "error: key_not_found: ..." (an empty value prints an empty
    line)."""
    check_read(read, max_lag)
    path = bucket_path(bucket)
    k = arg_bytes(key, hex_, "KEY")
    with connect(endpoints, timeout) as c:
        value = c.get(path, k, read=read, max_lag=max_lag)
    if value is None:
        raise KeyNotFoundError(f"key {show(k)} not found in bucket {bucket}")
    emit(
        {"key": k, "value": value},
        table=(["KEY", "VALUE"], [[_text(k, hex_), _text(value, hex_)]]),
        simple=lambda: echo_line(_text(value, hex_)),
    )


@click.command("delete")
@click.argument("bucket")
@click.argument("key")
@click.option("--if-value", default=None, help="Delete only if the current value is this.")
@hex_option
@client_options
@handle_errors
def delete_cmd(
    bucket: str, key: str, if_value: str | None, hex_: bool, endpoints: str, timeout: float
) -> None:
    """Delete KEY from BUCKET (prints nothing; deleting a missing key is not an error;
    -w json prints {"deleted": true|false})."""
    path = bucket_path(bucket)
    k = arg_bytes(key, hex_, "KEY")
    expect = opt_bytes(if_value, hex_, "--if-value")
    with connect(endpoints, timeout) as c:
        existed = c.delete(path, k, if_value=expect)
    if write_out() != "simple":
        emit({"deleted": existed}, table=(["DELETED"], [[existed]]))


@click.command("scan")
@click.argument("bucket")
@click.option("--prefix", default=None, help="Only keys starting with this.")
@click.option("--start", default=None, help="First key of the range (inclusive).")
@click.option("--end", default=None, help="End of the range (exclusive).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Print at most N.")
@click.option("--reverse", is_flag=True, help="Descending key order.")
@hex_option
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
    hex_: bool,
    read: str,
    max_lag: int | None,
    endpoints: str,
    timeout: float,
) -> None:
    """Print the keys of BUCKET in order, one "KEY<TAB>VALUE" line each; a nested bucket
    prints as "KEY/" (no TAB). -w json prints {"applied_index": N, "items": [{"key",
    "value"}]} (value null for a bucket): N is the applied index the scan read at (the
    lowest of its pages'), so "watch BUCKET --from-index N+1" misses no later change.

    Pages are fetched as needed; each page is one read, so a long scan is not one snapshot."""
    check_read(read, max_lag)
    if prefix is not None and (start is not None or end is not None):
        raise UsageError("--prefix and --start/--end exclude each other")
    fmt = write_out()
    items: list[tuple[bytes, bytes | None]] = []
    page_size = _SCAN_PAGE if limit is None else min(limit, _SCAN_PAGE)
    path = bucket_path(bucket)
    applied: int | None = None
    count = 0
    after: bytes | None = None
    with connect(endpoints, timeout) as c:
        while limit is None or count < limit:
            page = c.scan(
                path,
                prefix=opt_bytes(prefix, hex_, "--prefix"),
                start=opt_bytes(start, hex_, "--start"),
                end=opt_bytes(end, hex_, "--end"),
                limit=page_size if limit is None else min(page_size, limit - count),
                reverse=reverse,
                after=after,
                read=read,
                max_lag=max_lag,
            )
            applied = page.applied_index if applied is None else min(applied, page.applied_index)
            for k, v in page.items:
                if fmt != "simple":
                    items.append((k, v))
                elif v is None:
                    echo_line(_text(k, hex_) + b"/")
                else:
                    echo_line(_text(k, hex_), _text(v, hex_))
            count += len(page.items)
            if page.next is None:
                break
            after = page.next
    if fmt != "simple":
        emit(
            {"applied_index": applied or 0, "items": [{"key": k, "value": v} for k, v in items]},
            table=(
                ["KEY", "VALUE"],
                [[_text(k, hex_), "(bucket)" if v is None else _text(v, hex_)] for k, v in items],
            ),
        )


@click.group("bucket")
def bucket_group() -> None:
    """Create, list and delete buckets (nested paths are written a/b)."""


@bucket_group.command("create")
@click.argument("path")
@click.option("--if-not-exists", is_flag=True, help="Succeed if the bucket already exists.")
@client_options
@handle_errors
def bucket_create(path: str, if_not_exists: bool, endpoints: str, timeout: float) -> None:
    """Create the bucket PATH (its parent must exist)."""
    names = bucket_path(path)
    with connect(endpoints, timeout) as c:
        c.create_bucket(names, if_not_exists=if_not_exists)
    if write_out() != "simple":
        emit({"ok": True}, table=(["OK"], [[True]]))


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
) -> None:
    """Print the buckets directly under PATH (the top level when omitted), one per line."""
    check_read(read, max_lag)
    parent = None if path is None else bucket_path(path)
    with connect(endpoints, timeout) as c:
        names = c.buckets(parent, read=read, max_lag=max_lag)

    def simple() -> None:
        for name in names:
            echo_line(name)

    emit(names, table=(["BUCKET"], [[n] for n in names]), simple=simple)


@bucket_group.command("delete")
@click.argument("path")
@client_options
@handle_errors
def bucket_delete(path: str, endpoints: str, timeout: float) -> None:
    """Delete the bucket PATH and everything in it."""
    names = bucket_path(path)
    with connect(endpoints, timeout) as c:
        c.delete_bucket(names)
    if write_out() != "simple":
        emit({"ok": True}, table=(["OK"], [[True]]))


# --- status ---------------------------------------------------------------------------------
def ask_all(
    endpoints: list[str], timeout: float, op: str = "status"
) -> dict[str, dict[str, Any] | BoltraftError]:
    """Asks every endpoint (in parallel) for ``op`` (``status``); endpoint -> its answer or
    the error it gave."""
    out: dict[str, dict[str, Any] | BoltraftError] = {}
    keys = client_keys()

    def ask(endpoint: str) -> None:
        try:
            with Client(endpoint, timeout=timeout, keys=keys) as c:
                out[endpoint] = c.status(endpoint) if op == "status" else c.members(endpoint)
        except BoltraftError as err:
            out[endpoint] = err

    threads = [threading.Thread(target=ask, args=(ep,)) for ep in endpoints]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def discover(endpoints: list[str], timeout: float) -> list[str]:
    """Every member's address, as the first of ``endpoints`` to answer knows them (its
    membership), followed by the given endpoints it does not list; raises UnavailableError
    when none answers."""
    answers = ask_all(endpoints, timeout)
    for ep in endpoints:
        a = answers[ep]
        if isinstance(a, dict) and a.get("addrs"):
            members = [addr for _, addr in sorted(a["addrs"].items()) if addr]
            return members + [e for e in endpoints if e not in members]
    raise UnavailableError(f"none of the {len(endpoints)} endpoints answered")


@click.command("status")
@click.option(
    "--cluster",
    "whole_cluster",
    is_flag=True,
    help="Ask every member of the cluster, as any endpoint that answers knows them.",
)
@client_options
@handle_errors
def status_cmd(whole_cluster: bool, endpoints: str, timeout: float) -> None:
    """Ask every endpoint (in parallel) for its status: one line per node,
    "ENDPOINT id=.. role=.. term=.. lead=.. commit=.. applied=..", with " disk_full=yes"
    when the node's disk is full, or "ENDPOINT error: ..". With --cluster, every member
    the cluster knows (found from any endpoint) instead. Exits 4 when no node answered."""
    eps = parse_endpoints(endpoints)
    if whole_cluster:
        eps = discover(eps, timeout)
    answers = ask_all(eps, timeout)
    rows: list[dict[str, Any]] = []
    for ep in eps:
        a = answers[ep]
        if isinstance(a, BoltraftError):
            rows.append({"endpoint": ep, "error": a.to_wire()})
        else:
            rows.append({"endpoint": ep, "status": a})

    def simple() -> None:
        for ep in eps:
            a = answers[ep]
            if isinstance(a, BoltraftError):
                click.echo(f"{ep} error: {a.code}: {one_line(a.message)}")
            else:
                fields = " ".join(f"{k}={_field(a[k])}" for k in _STATUS_FIELDS if k in a)
                if a.get("disk_full"):  # the reason is in -w json
                    fields += " disk_full=yes"
                click.echo(f"{ep} {fields}")

    table_rows: list[list[Any]] = []
    for ep in eps:
        a = answers[ep]
        if isinstance(a, BoltraftError):
            table_rows.append([ep, "", "", "", "", "", "", "", f"{a.code}: {one_line(a.message)}"])
        else:
            table_rows.append(
                [
                    ep,
                    a.get("id"),
                    a.get("role"),
                    a.get("term"),
                    a.get("lead"),
                    a.get("commit"),
                    a.get("applied"),
                    bool(a.get("disk_full")),
                    "",
                ]
            )
    headers = [
        "ENDPOINT",
        "ID",
        "ROLE",
        "TERM",
        "LEADER",
        "COMMIT",
        "APPLIED",
        "DISK FULL",
        "ERROR",
    ]
    emit(rows, table=(headers, table_rows), simple=simple)
    if all("error" in r for r in rows):
        fail(UnavailableError(f"none of the {len(eps)} endpoints answered"))


def _field(value: Any) -> Any:
    if isinstance(value, bytes):
        return json_bytes(value)
    return value


def register(group: click.Group) -> None:
    """Adds the client commands to ``group``."""
    for cmd in (put_cmd, get_cmd, delete_cmd, scan_cmd, bucket_group, status_cmd):
        group.add_command(cmd)
