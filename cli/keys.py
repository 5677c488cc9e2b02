"""``boltraft keys ...``: the CurveZMQ keys of a cluster (docs/security.md).

- ``keys init DIR --nodes n1,n2,n3 --clients admin:admin,app:write,ro:read``: one folder per
  party under DIR, each holding its own key pair (``self.json``, mode 0600) and the public
  keys it must know (``known.json``); start each node with ``serve --keys DIR/ID`` and give
  clients ``--keys DIR/NAME``;
- ``keys add-client DIR NAME:ROLE``: a new client folder, its key added to the running
  cluster's allow-list (an admin's ``--keys``); in effect on every node without a restart;
- ``keys add-node DIR ID``: a new node's folder, its key bound to member id ID in the
  allow-list; then start it with ``serve --keys DIR/ID --join ADDR``;
- ``keys revoke NAME``: the client's or node's key stops working on every node.
"""

from __future__ import annotations

from pathlib import Path

import click

from boltraft.errors import ConfigError
from boltraft.transport.curve import (
    add_party,
    check_name,
    find_node_folder,
    init_keys,
    new_keypair,
    parse_clients,
)

from .common import client_options, connect, handle_errors
from .output import emit


@click.group("keys")
def keys_group() -> None:
    """CurveZMQ keys: make them, add and revoke clients and nodes."""


def _add_party(
    folder: str, name: str, kind: str, role: str, endpoints: str, timeout: float
) -> Path:
    """Returns the folder made for the new party ``name`` under the keys folder ``folder``,
    after the cluster allowed its fresh key (as ``kind`` with ``role``). The folder is
    checked first (a keys folder without ``name`` in it), so the cluster is told only of a
    key whose folder can be written; a refused request (a non-admin key) writes nothing.
    Raises ConfigError for the folder, or the cluster's error."""
    find_node_folder(folder)
    if (Path(folder) / name).exists():
        raise ConfigError(f"{Path(folder) / name} already exists", path=str(Path(folder) / name))
    pub, sec = new_keypair()
    with connect(endpoints, timeout) as c:
        c.set_key(name, kind, pub, role)
    add_party(folder, name, kind, role, (pub, sec))
    return Path(folder) / name


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


@keys_group.command("init")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--nodes", required=True, help="Comma-separated node ids: n1,n2,n3.")
@click.option(
    "--clients",
    default="admin:admin",
    show_default=True,
    help="Comma-separated NAME:ROLE (role: read, write, admin).",
)
@handle_errors
def init_cmd(folder: str, nodes: str, clients: str) -> None:
    """Create the key folders of a new cluster under FOLDER: one per node and client."""
    made = init_keys(folder, _names(nodes), parse_clients(_names(clients)))
    for path in made:
        click.echo(str(path))


@keys_group.command("add-client")
@click.argument("folder", type=click.Path(file_okay=False))
@click.argument("spec", metavar="NAME:ROLE")
@client_options
@handle_errors
def add_client_cmd(folder: str, spec: str, endpoints: str, timeout: float) -> None:
    """Create FOLDER/NAME for a new client with ROLE and allow its key cluster-wide."""
    ((name, role),) = parse_clients([spec]).items()
    path = _add_party(folder, name, "client", role, endpoints, timeout)
    emit({"name": name, "role": role, "folder": str(path)}, simple=lambda: click.echo(str(path)))


@keys_group.command("add-node")
@click.argument("folder", type=click.Path(file_okay=False))
@click.argument("node_id", metavar="ID")
@client_options
@handle_errors
def add_node_cmd(folder: str, node_id: str, endpoints: str, timeout: float) -> None:
    """Create FOLDER/ID for a new node and bind its key to member id ID cluster-wide; then
    start it with serve --keys FOLDER/ID --join ADDR."""
    path = _add_party(folder, check_name(node_id, "node id"), "node", "node", endpoints, timeout)
    emit({"name": node_id, "folder": str(path)}, simple=lambda: click.echo(str(path)))


@keys_group.command("revoke")
@click.argument("name")
@client_options
@handle_errors
def revoke_cmd(name: str, endpoints: str, timeout: float) -> None:
    """Revoke the key of client or node NAME on every node (its open connections stop
    working too)."""
    with connect(endpoints, timeout) as c:
        c.set_key(name, "client", "", "read")
    emit({"revoked": name}, simple=lambda: click.echo(f"revoked {name}"))


def register(group: click.Group) -> None:
    """Adds the ``keys`` group to ``group``."""
    group.add_command(keys_group)
