"""``boltraft backup FILE`` and ``boltraft restore FILE --data DIR`` (boltraft.backup).

A backup is hot, streamed and checksummed, taken through any node; a restore seeds a new
single-node cluster (start it with ``boltraft serve --data DIR``; grow it with
``boltraft serve --join``). A failed backup leaves no file, a failed restore no data
directory; progress bars are drawn only when stderr is a terminal.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from boltraft.errors import LocalFileError

from .common import client_keys, client_options, handle_errors
from .output import emit, output_options
from .progress import byte_bar


@click.command("backup")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--no-progress", is_flag=True, help="Do not draw a progress bar.")
@client_options
@handle_errors
def backup_cmd(file: str, no_progress: bool, endpoints: str, timeout: float) -> None:
    """Write a consistent backup of the cluster to FILE (through the first node that
    answers); prints INDEX SIZE SHA256."""
    from boltraft.backup import backup

    parent = Path(file).absolute().parent
    if not parent.is_dir():
        raise LocalFileError(f"cannot write {file}: folder {parent} does not exist", path=file)
    if not os.access(parent, os.W_OK):
        raise LocalFileError(f"cannot write {file}: folder {parent} is not writable", path=file)
    with byte_bar(file, no_progress) as bar:
        header = backup(
            endpoints,
            file,
            timeout=max(timeout, 60.0),
            on_header=lambda h: bar.start(int(h["size"])),
            progress=bar.advance,
            keys=client_keys(),
        )
    emit(
        header,
        table=(
            ["INDEX", "SIZE", "SHA256"],
            [[header["index"], header["size"], header["sha256"]]],
        ),
        simple=lambda: click.echo(f"{header['index']} {header['size']} {header['sha256']}"),
    )


@click.command("restore")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--data", required=True, type=click.Path(file_okay=False), help="New data dir.")
@click.option("--id", "node_id", default="n1", show_default=True, help="The new node's id.")
@click.option("--listen", default="tcp://127.0.0.1:7301", show_default=True, help="Its address.")
@click.option("--no-progress", is_flag=True, help="Do not draw a progress bar.")
@output_options
@handle_errors
def restore_cmd(file: str, data: str, node_id: str, listen: str, no_progress: bool) -> None:
    """Seed DATA as a new single-node cluster holding the contents of backup FILE."""
    from boltraft.backup import read_header, restore

    if not Path(file).is_file():
        raise LocalFileError(f"backup file {file} does not exist", path=file)
    with open(file, "rb") as f:
        size = int(read_header(f)["size"])
    with byte_bar(file, no_progress) as bar:
        bar.start(size)
        header = restore(file, data, node_id=node_id, listen=listen, progress=bar.advance)
    emit(
        header,
        table=(
            ["INDEX", "DATA", "START WITH"],
            [[header["index"], data, f"boltraft serve --data {data}"]],
        ),
        simple=lambda: click.echo(
            f"restored index {header['index']} into {data}; start: boltraft serve --data {data}"
        ),
    )


def register(group: click.Group) -> None:
    """Adds ``backup`` and ``restore`` to ``group``."""
    group.add_command(backup_cmd)
    group.add_command(restore_cmd)
