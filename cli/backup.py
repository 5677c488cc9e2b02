"""``boltraft backup FILE`` and ``boltraft restore FILE --data DIR`` (boltraft.backup).

A backup is hot, streamed and checksummed, taken through any node; a restore seeds a new
single-node cluster (start it with ``boltraft serve --data DIR``; grow it with
``boltraft serve --join``).
"""

from __future__ import annotations

import click

from .common import client_options, echo_json, handle_errors


@click.command("backup")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--no-progress", is_flag=True, help="Do not draw a progress bar.")
@client_options
@handle_errors
def backup_cmd(file: str, no_progress: bool, endpoints: str, timeout: float, as_json: bool) -> None:
    """Write a consistent backup of the cluster to FILE (through the first node that
    answers); prints INDEX SIZE SHA256."""
    from tqdm import tqdm

    from boltraft.backup import backup

    bar: list[tqdm] = []

    def on_header(header: dict) -> None:
        bar.append(
            tqdm(total=header["size"], unit="B", unit_scale=True, disable=no_progress, desc=file)
        )

    try:
        header = backup(
            endpoints,
            file,
            timeout=max(timeout, 60.0),
            on_header=on_header,
            progress=lambda n: bar[0].update(n),
        )
    finally:
        for b in bar:
            b.close()
    if as_json:
        echo_json(header)
    else:
        click.echo(f"{header['index']} {header['size']} {header['sha256']}")


@click.command("restore")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--data", required=True, type=click.Path(file_okay=False), help="New data dir.")
@click.option("--id", "node_id", default="n1", show_default=True, help="The new node's id.")
@click.option("--listen", default="tcp://127.0.0.1:7301", show_default=True, help="Its address.")
@click.option("--json", "as_json", is_flag=True, help="Print the backup header as JSON.")
@handle_errors
def restore_cmd(file: str, data: str, node_id: str, listen: str, as_json: bool) -> None:
    """Seed DATA as a new single-node cluster holding the contents of backup FILE."""
    from boltraft.backup import restore

    header = restore(file, data, node_id=node_id, listen=listen)
    if as_json:
        echo_json(header)
    else:
        click.echo(
            f"restored index {header['index']} into {data}; start: boltraft serve --data {data}"
        )


def register(group: click.Group) -> None:
    """Adds ``backup`` and ``restore`` to ``group``."""
    group.add_command(backup_cmd)
    group.add_command(restore_cmd)
