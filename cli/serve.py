"""``boltraft serve``: run one node in the foreground until SIGTERM or Ctrl-C."""

from __future__ import annotations

from typing import Any

import click

from boltraft.errors import BoltraftError, DiskFailedError, NoSpaceError
from boltraft.storage.fsutil import DISK_FULL_ERRNOS


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
@click.option("--tick-ms", type=int, help="Length of one Raft tick [100].")
@click.option("--election-tick", type=int, help="Election timeout in ticks [10].")
@click.option("--heartbeat-tick", type=int, help="Heartbeat interval in ticks [1].")
@click.option("--no-fsync", is_flag=True, default=None, help="Do not fsync the log (tests).")
@click.option(
    "--log-store",
    type=click.Choice(["wal", "lmdb"]),
    help="The Raft log's kind for a new node [wal]; an existing log keeps its kind.",
)
@click.option(
    "--join",
    "join",
    help="A NEW node: ask the cluster at this member address to add it (no --peer needed).",
)
@click.option(
    "--snapshot-entries", type=int, help="Snapshot after this many applied entries [10000]."
)
@click.option("--log-level", default="INFO", show_default=True, help="Python log level.")
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
    log_level: str,
) -> None:
    """Run one node. A new cluster bootstraps from its peer list; a new node with --join
    asks an existing cluster to add it; a restarted node resumes from DATA with the same
    command line, or with just --data."""
    # ``obj["serve_hooks"]``: the ServeHooks a test or benchmark launcher passes in
    # (boltraft.server.main); a plain ``boltraft serve`` runs with none.
    from boltraft.server.config import load_config_file
    from boltraft.server.main import configure_logging, serve

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
        }
        values.update({k: v for k, v in flags.items() if v is not None})
        data_dir = data or values.pop("data", None)
        values.pop("data", None)
        if not data_dir:
            raise click.UsageError("--data is required (or 'data' in the config file)")
        configure_logging(log_level)
        if join and values.get("peers"):
            raise click.UsageError("--join starts a new node: give no --peer")
        hooks = (obj or {}).get("serve_hooks")
        raise SystemExit(serve(values, data_dir, join=join, hooks=hooks))
    except OSError as exc:  # writing its files at start-up: the node never served
        full = exc.errno in DISK_FULL_ERRNOS
        err = (NoSpaceError if full else DiskFailedError)(f"cannot start: {exc}")
        click.echo(f"error: {err.code}: {err.message}", err=True)
        raise SystemExit(1)
    except BoltraftError as err:
        click.echo(f"error: {err.code}: {err.message}", err=True)
        raise SystemExit(1)


def register(group: click.Group) -> None:
    """Adds ``serve`` to ``group``."""
    group.add_command(serve_cmd)
