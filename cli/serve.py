"""``boltraft serve``: run one node in the foreground until SIGTERM or Ctrl-C.

A start that fails prints one line ``error: <code>: <message>`` and leaves no new data
directory behind; ``--metrics-addr HOST:PORT`` serves ``/metrics``, ``/healthz`` and
``/readyz`` (docs/operations.md); ``--keys DIR/ID`` turns CurveZMQ on (docs/security.md), and
without it a node refuses an address other than loopback unless ``--insecure``. The defaults
shown in ``--help`` are the node's own (``boltraft.server.defaults``). What a node writes is
its log: ``-w json`` (or ``--log-format json``) makes each log line one JSON object; ``-w
table`` is a usage error.
"""

from __future__ import annotations

from typing import Any

import click

from boltraft.errors import ConfigError, DiskFailedError, NoSpaceError
from boltraft.server import defaults

from .output import output_options, write_out

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@click.command("serve")
@click.option("--id", "node_id", help="This node's id (remembered in DATA/node.json).")
@click.option(
    "--data",
    "data",
    type=click.Path(file_okay=False),
    help="Data directory (required, here or in the config file).",
)
@click.option("--listen", help="Address to bind, tcp://HOST:PORT.")
@click.option("--peer", "peers", multiple=True, help="Another member, ID=tcp://HOST:PORT.")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="JSON or TOML (*.toml) file with the same keys; flags win over it.",
)
@click.option("--tick-ms", type=int, help=f"Length of one Raft tick [{defaults.TICK_MS}].")
@click.option(
    "--election-tick", type=int, help=f"Election timeout in ticks [{defaults.ELECTION_TICK}]."
)
@click.option(
    "--heartbeat-tick", type=int, help=f"Heartbeat interval in ticks [{defaults.HEARTBEAT_TICK}]."
)
@click.option("--no-fsync", is_flag=True, default=None, help="Do not fsync the log (tests).")
@click.option(
    "--log-store",
    type=click.Choice(["wal", "lmdb"]),
    help=f"The Raft log's kind for a new node [{defaults.LOG_STORE}]; an existing log keeps "
    "its kind.",
)
@click.option(
    "--join",
    "join",
    help="A NEW node: ask the cluster at this member address to add it (no --peer needed).",
)
@click.option(
    "--snapshot-entries",
    type=int,
    help=f"Snapshot after this many applied entries [{defaults.SNAPSHOT_ENTRIES}].",
)
@click.option(
    "--metrics-addr",
    help="Serve /metrics, /healthz and /readyz over HTTP at HOST:PORT [none].",
)
@click.option(
    "--keys",
    "keys",
    type=click.Path(file_okay=False),
    help="This node's CurveZMQ keys folder (boltraft keys init DIR: DIR/ID), remembered in "
    "DATA/node.json; '' serves without keys [the remembered folder, else none].",
)
@click.option(
    "--insecure",
    is_flag=True,
    default=None,
    help="Serve without keys on an address other than loopback (logs a warning).",
)
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    help="Least level of the log lines written.",
)
@click.option(
    "--log-format",
    default=None,
    type=click.Choice(["text", "json"]),
    help="Log lines as text, or one JSON object per line [text; json with -w json].",
)
@output_options
@click.pass_obj
def serve_cmd(
    obj: dict[str, Any] | None,
    node_id: str | None,
    data: str | None,
    listen: str | None,
    peers: tuple[str, ...],
    config_file: str | None,
    tick_ms: int | None,
    election_tick: int | None,
    heartbeat_tick: int | None,
    no_fsync: bool | None,
    log_store: str | None,
    join: str | None,
    snapshot_entries: int | None,
    metrics_addr: str | None,
    keys: str | None,
    insecure: bool | None,
    log_level: str,
    log_format: str | None,
) -> None:
    """Run one node. A new cluster bootstraps from its peer list; a new node with --join
    asks an existing cluster to add it; a restarted node resumes from DATA with the same
    command line, or with just --data. Exits 0 after SIGTERM or Ctrl-C, 3 when the node
    was removed from its cluster."""
    # ``obj["serve_hooks"]``: the ServeHooks a test or benchmark launcher passes in
    # (boltraft.server.main); a plain ``boltraft serve`` runs with none.
    from boltraft.server.config import load_config_file
    from boltraft.server.main import configure_logging, serve

    if join and peers:
        raise click.UsageError("--join starts a new node: give no --peer")
    fmt = write_out()
    if fmt == "table":
        raise click.UsageError("serve writes log lines: -w simple or -w json")
    if fmt == "json" and log_format == "text":
        raise click.UsageError("-w json and --log-format text disagree")
    log_format = log_format or ("json" if fmt == "json" else "text")
    try:
        values: dict[str, Any] = load_config_file(config_file) if config_file else {}
        flags = {
            "id": node_id,
            "listen": listen,
            "peers": list(peers) or None,
            "tick_ms": tick_ms,
            "election_tick": election_tick,
            "heartbeat_tick": heartbeat_tick,
            "fsync": False if no_fsync else None,
            "log_store": log_store,
            "snapshot_entries": snapshot_entries,
            "metrics_addr": metrics_addr,
            "keys": keys,
            "insecure": insecure,
        }
        values.update({k: v for k, v in flags.items() if v is not None})
        data_dir = data or values.pop("data", None)
        values.pop("data", None)
        if not data_dir:
            raise click.UsageError("--data is required (or 'data' in the config file)")
        if join and values.get("peers"):
            raise ConfigError("--join starts a new node: the config file gives peers")
        configure_logging(log_level, log_format)
        hooks = (obj or {}).get("serve_hooks")
        status = serve(values, data_dir, join=join, hooks=hooks)
    except OSError as exc:  # writing its files at start-up: the node never served
        from boltraft.storage.fsutil import DISK_FULL_ERRNOS

        full = exc.errno in DISK_FULL_ERRNOS
        raise (NoSpaceError if full else DiskFailedError)(f"cannot start: {exc}") from None
    if status:
        raise click.exceptions.Exit(status)


def register(group: click.Group) -> None:
    """Adds ``serve`` to ``group``."""
    group.add_command(serve_cmd)
