"""``boltraft inspect``: the offline inspector of a bucket store.

    boltraft inspect DIR buckets | keys BUCKET | get BUCKET KEY | stats | check | dump
    boltraft inspect demo DIR          # make a small demo store (only if DIR does not exist)

DIR is an engine data directory, or a server data directory (then DIR/state is used). The
store is opened read-only and never changed. BUCKET is a path written ``a/b``. Tables are for
people; ``-w json`` (or ``--json``) is for scripts, with the encodings of cli/output.py
(bytes as a string when they are UTF-8, otherwise ``{"base64": "..."}``; a bucket path as
the list of its names). Exit status: 0 ok, 3 for a key or bucket not found, 1 on another
error or (``check``) a problem found.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from boltraft.errors import BoltraftError, IncompatibleValueError, KeyNotFoundError
from boltraft.storage.db import DB
from boltraft.storage.pagecheck import check_pages

from .output import echo_json, fail, json_bytes, output_options, print_table, show, write_out

DUMP_PAGE = 1000


def register(group: click.Group) -> None:
    """Adds the ``inspect`` command group to ``group``."""
    group.add_command(inspect_group)


# --- rendering (cli/output.py) ------------------------------------------------------------
jbytes = json_bytes


def emit_json(obj: Any) -> None:
    echo_json(obj)


def table(headers: list[str], rows: list[list[str]]) -> None:
    """Prints ``rows`` under ``headers`` (the one table printer, cli/output.py)."""
    print_table(headers, rows)


def parse_path(text: str) -> list[bytes]:
    """Returns the bucket names of a path written ``a/b`` (leading/trailing ``/`` ignored)."""
    names = [n.encode("utf-8") for n in text.strip("/").split("/")]
    if names == [b""]:
        raise click.BadParameter("a bucket path is required", param_hint="BUCKET")
    return names


def store_dir(d: Path) -> Path:
    """Returns the engine directory for ``d``: ``d/state`` for a server data dir, else ``d``."""
    return d / "state" if (d / "state").is_dir() else d


@contextmanager
def exit_on_error(ctx: click.Context) -> Iterator[None]:
    """Turns a BoltraftError raised inside the block into ``error: <code>: <message>`` on
    stderr and the exit status of its kind (cli/output.py)."""
    try:
        yield
    except BoltraftError as exc:
        fail(exc)


@contextmanager
def opened(ctx: click.Context) -> Iterator[DB]:
    """Yields the store opened read-only; a BoltraftError, raised by the open or inside the
    block, ends the command with status 1 (see ``exit_on_error``)."""
    with exit_on_error(ctx), DB.open(store_dir(ctx.obj), readonly=True) as db:
        yield db


# --- the group -----------------------------------------------------------------------------
class _InspectGroup(click.Group):
    """``inspect demo DIR`` is read as ``inspect DIR demo`` (DIR comes first otherwise)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if len(args) >= 2 and args[0] == "demo" and args[1] not in self.commands:
            args = [args[1], "demo", *args[2:]]
        return super().parse_args(ctx, args)


@click.group("inspect", cls=_InspectGroup)
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.pass_context
def inspect_group(ctx: click.Context, data_dir: Path) -> None:
    """Inspect a bucket store offline (read-only): DIR is a data directory."""
    ctx.obj = data_dir


def json_option(f: Any) -> Any:
    """``-w/--write-out`` and ``--json`` (cli/output.py), read back as ``as_json``."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return f(*args, as_json=write_out() == "json", **kwargs)

    return output_options(wrapper)


@inspect_group.command("buckets")
@json_option
@click.pass_context
def buckets_cmd(ctx: click.Context, as_json: bool) -> None:
    """List every bucket (nested ones as a/b) with its key count."""
    with opened(ctx) as db:
        tree = db.bucket_tree()
    if as_json:
        emit_json(
            [
                {
                    "path": [jbytes(n) for n in b["path"]],
                    "keys": b["keys"],
                    "buckets": b["buckets"],
                    "sequence": b["sequence"],
                }
                for b in tree
            ]
        )
        return
    rows = [
        [
            "/".join(show(n) for n in b["path"]),
            str(b["keys"]),
            str(b["buckets"]),
            str(b["sequence"]),
        ]
        for b in tree
    ]
    table(["BUCKET", "KEYS", "BUCKETS", "SEQUENCE"], rows)


@inspect_group.command("keys")
@click.argument("bucket")
@click.option("--prefix", default=None, help="Only keys starting with this text.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N keys.")
@click.option("--after", default=None, help="Resume after this paging token (hex).")
@click.option("--reverse", is_flag=True, help="Descending key order.")
@json_option
@click.pass_context
def keys_cmd(
    ctx: click.Context,
    bucket: str,
    prefix: str | None,
    limit: int | None,
    after: str | None,
    reverse: bool,
    as_json: bool,
) -> None:
    """List the keys of BUCKET (a/b for nested) with value sizes."""
    path = parse_path(bucket)
    try:
        token = bytes.fromhex(after) if after is not None else None
    except ValueError:
        raise click.BadParameter("not a hex paging token", param_hint="--after")
    with opened(ctx) as db, db.view() as tx:
        items, nxt = tx.bucket(path).scan(
            prefix=None if prefix is None else prefix.encode("utf-8"),
            limit=limit,
            reverse=reverse,
            after=token,
        )
    if as_json:
        emit_json(
            {
                "items": [
                    {"key": jbytes(k), "size": None if v is None else len(v), "bucket": v is None}
                    for k, v in items
                ],
                "next": None if nxt is None else nxt.hex(),
            }
        )
        return
    table(
        ["KEY", "SIZE"],
        [[show(k), "(bucket)" if v is None else str(len(v))] for k, v in items],
    )
    if nxt is not None:
        click.echo(f"more: --after {nxt.hex()}")


@inspect_group.command("get")
@click.argument("bucket")
@click.argument("key")
@click.option("--hex", "key_hex", is_flag=True, help="KEY is written in hex.")
@click.option("--raw", is_flag=True, help="Write the value's bytes as they are.")
@json_option
@click.pass_context
def get_cmd(
    ctx: click.Context, bucket: str, key: str, key_hex: bool, raw: bool, as_json: bool
) -> None:
    """Print the value of KEY in BUCKET (exit 1 when there is none)."""
    path = parse_path(bucket)
    try:
        k = bytes.fromhex(key) if key_hex else key.encode("utf-8")
    except ValueError:
        raise click.BadParameter("not hex", param_hint="KEY") from None
    with opened(ctx) as db, db.view() as tx:
        value = tx.bucket(path).get(k)
        is_bucket = value is None and k in tx.buckets(path)
    if value is None and is_bucket:
        fail(IncompatibleValueError(f"key {show(k)} in bucket {bucket} is a nested bucket"))
    if value is None:
        fail(KeyNotFoundError(f"key {show(k)} not found in bucket {bucket}"))
    if raw:
        sys.stdout.buffer.write(value)
        sys.stdout.buffer.flush()
    elif as_json:
        emit_json({"key": jbytes(k), "value": jbytes(value)})
    else:
        click.echo(show(value))


@inspect_group.command("stats")
@json_option
@click.pass_context
def stats_cmd(ctx: click.Context, as_json: bool) -> None:
    """Print sizes and counts of the store."""
    with opened(ctx) as db:
        stats = db.stats()
    if as_json:
        emit_json(stats)
        return
    table(["STAT", "VALUE"], [[k, str(v)] for k, v in stats.items()])


@inspect_group.command("check")
@json_option
@click.pass_context
def check_cmd(ctx: click.Context, as_json: bool) -> None:
    """Verify the store's internal consistency; exit 1 if a problem is found."""
    data = store_dir(ctx.obj) / "data.mdb"
    # the pages first, from the file: LMDB aborts the process on some damaged pages
    problems = check_pages(data) if data.is_file() else []
    if not problems:
        with opened(ctx) as db:
            problems = db.check(pages=False)
    if as_json:
        emit_json({"ok": not problems, "problems": problems})
    elif problems:
        for p in problems:
            click.echo(f"problem: {p}")
    else:
        click.echo("ok")
    if problems:
        ctx.exit(1)


@inspect_group.command("dump")
@json_option
@click.pass_context
def dump_cmd(ctx: click.Context, as_json: bool) -> None:
    """Print every bucket with all its keys and values."""
    out: list[dict[str, Any]] = []
    with opened(ctx) as db:
        tree = db.bucket_tree()
        with db.view() as tx:
            for entry in tree:
                b = tx.bucket(entry["path"])
                items: list[tuple[bytes, bytes]] = []
                token = None
                while True:
                    page, token = b.scan(limit=DUMP_PAGE, after=token)
                    items += [(k, v) for k, v in page if v is not None]
                    if token is None:
                        break
                out.append({"path": entry["path"], "sequence": entry["sequence"], "items": items})
    if as_json:
        emit_json(
            [
                {
                    "path": [jbytes(n) for n in e["path"]],
                    "sequence": e["sequence"],
                    "items": [{"key": jbytes(k), "value": jbytes(v)} for k, v in e["items"]],
                }
                for e in out
            ]
        )
        return
    for e in out:
        click.echo("/".join(show(n) for n in e["path"]) + "/")
        for k, v in e["items"]:
            click.echo(f"  {show(k)} = {show(v)}")


DEMO: dict[tuple[str, ...], dict[str, bytes]] = {
    ("users",): {"alice": b'{"name": "Alice", "role": "admin"}', "bob": b'{"name": "Bob"}'},
    ("users", "eu"): {"carol": b'{"name": "Carol", "city": "Lyon"}'},
    ("users", "us"): {"dave": b'{"name": "Dave", "city": "Austin"}'},
    ("config",): {"mode": b"demo", "version": b"1", "blob": bytes(range(250, 256))},
    ("metrics", "2024"): {"requests": b"1024", "errors": b"3"},
}


@inspect_group.command("demo")
@click.pass_context
def demo_cmd(ctx: click.Context) -> None:
    """Create a small demo store in DIR (nested buckets, a few keys) if DIR does not exist."""
    target: Path = ctx.obj
    if target.exists():
        click.echo(f"{target} exists; left unchanged")
        return

    def fill(tx: Any) -> None:
        for path, items in DEMO.items():
            b = tx.create_bucket_if_not_exists(list(path))
            for k, v in items.items():
                b.put(k, v)
            b.next_sequence()

    with exit_on_error(ctx), DB.open(target, initial_map_size=1 << 20, quota=64 << 20) as db:
        db.update_fn(fill)
    click.echo(f"created a demo store in {target}; try: boltraft inspect {target} buckets")
