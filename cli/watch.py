"""``boltraft watch``: print the changes of a bucket as they happen, one line each, until
Ctrl-C (``boltraft.client.Client.watch``; docs/protocol.md, section 5.1).

Each line is one change, in Raft order, each exactly once even while nodes fail:
``INDEX.POS<TAB>TYPE<TAB>BUCKET<TAB>KEY<TAB>VALUE`` (``-w json``: one JSON object per line
with ``index``, ``pos``, ``type``, ``bucket``, ``key``, ``value`` and, with ``--prev``,
``prev``). Keys and values print raw (hex with ``--hex``); a bucket event has no key.
"""

from __future__ import annotations

from typing import Any

import click

from boltraft.errors import UsageError
from boltraft.transport.watchwire import Event

from .common import bucket_path, client_options, connect, handle_errors, hex_option, opt_bytes
from .output import echo_json, echo_line, json_bytes, json_path, show_path, write_out


def _text(b: bytes | None, hex_: bool) -> bytes:
    if b is None:
        return b""
    return b.hex().encode() if hex_ else b


def _json(ev: Event, prev: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "index": ev.index,
        "pos": ev.pos,
        "type": ev.type,
        "bucket": json_path(ev.bucket),
        "key": None if ev.key is None else json_bytes(ev.key),
        "value": None if ev.value is None else json_bytes(ev.value),
    }
    if prev:
        out["prev"] = None if ev.prev is None else json_bytes(ev.prev)
    return out


@click.command("watch")
@click.argument("bucket")
@click.option("--prefix", default=None, help="Only keys (and nested buckets) starting with this.")
@click.option(
    "--from-index",
    "from_index",
    type=click.IntRange(min=1),
    default=None,
    help="Start at this Raft index (default: from now).",
)
@click.option("--recursive", is_flag=True, help="Also the changes in nested buckets.")
@click.option("--prev", is_flag=True, help="Also print each key's value before the change.")
@hex_option
@client_options
@handle_errors
def watch_cmd(
    bucket: str,
    prefix: str | None,
    from_index: int | None,
    recursive: bool,
    prev: bool,
    hex_: bool,
    endpoints: str,
    timeout: float,
) -> None:
    """Print the changes of BUCKET as they happen, one line each, until Ctrl-C:
    "INDEX.POS<TAB>TYPE<TAB>BUCKET<TAB>KEY<TAB>VALUE" (with --prev, a last column PREV);
    -w json prints one JSON object per line. A start index the cluster no longer retains
    exits 1 with "error: compacted: ..." (details name the oldest index it can serve)."""
    fmt = write_out()
    if fmt == "table":
        raise UsageError("watch prints lines: -w simple or -w json")
    path = bucket_path(bucket)
    with connect(endpoints, timeout) as c:
        w = c.watch(
            path,
            prefix=opt_bytes(prefix, hex_, "--prefix"),
            start_index=from_index,
            recursive=recursive,
            prev_value=prev,
        )
        try:
            for ev in w:
                if fmt == "json":
                    echo_json(_json(ev, prev))
                    continue
                parts: list[bytes | str] = [
                    f"{ev.index}.{ev.pos}",
                    ev.type,
                    show_path(ev.bucket),
                    _text(ev.key, hex_),
                    _text(ev.value, hex_),
                ]
                if prev:
                    parts.append(_text(ev.prev, hex_))
                echo_line(*parts)
        except KeyboardInterrupt:  # the way to stop it
            pass
        finally:
            w.close()


def register(group: click.Group) -> None:
    """Adds ``watch`` to ``group``."""
    group.add_command(watch_cmd)
