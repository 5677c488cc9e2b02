"""``boltraft cluster ...``: membership and snapshots of a running cluster.

- ``cluster members``: voters, learners, addresses, the leader (and, from the leader, each
  member's match index);
- ``cluster join --id ID --addr ADDR``: add a node (learner, caught up, then voter); a member
  at another address is moved to ADDR;
- ``cluster remove ID``; ``cluster transfer-leader [ID]``;
- ``cluster snapshot``: every node in ``--endpoints`` writes a snapshot and compacts its log.

Shared options and the error line: cli/common.py.
"""

from __future__ import annotations

import click

from boltraft.client import parse_endpoints
from boltraft.errors import BoltraftError

from .common import client_options, connect, echo_json, handle_errors


@click.group("cluster")
def cluster_group() -> None:
    """Membership and snapshots of a running cluster."""


@cluster_group.command("members")
@client_options
@handle_errors
def members_cmd(endpoints: str, timeout: float, as_json: bool) -> None:
    """Print the members: one line per node, ID ROLE ADDR [match=N] [leader]."""
    with connect(endpoints, timeout) as c:
        m = c.members()
        if m.get("leader") and m.get("leader_addr") and m["leader"] != m["id"]:
            m = c.members(m["leader_addr"])
    if as_json:
        echo_json(m)
        return
    progress = m.get("progress", {})
    for role in ("voters", "learners"):
        for nid in m[role]:
            line = f"{nid} {role[:-1]} {m['addrs'].get(nid, '')}"
            if nid in progress:
                line += f" match={progress[nid]['match']}"
            if nid == m.get("leader"):
                line += " leader"
            click.echo(line)


@cluster_group.command("join")
@click.option("--id", "node_id", required=True, help="The new node's id.")
@click.option("--addr", required=True, help="The new node's address, tcp://HOST:PORT.")
@client_options
@handle_errors
def join_cmd(node_id: str, addr: str, endpoints: str, timeout: float, as_json: bool) -> None:
    """Add node ID at ADDR as a learner, wait until it caught up, then make it a voter.
    (Give --timeout long enough for the node to catch up.)"""
    with connect(endpoints, timeout) as c:
        result = c.join(node_id, addr)
    echo_json(result) if as_json else click.echo(f"{node_id} is a voter at {addr}")


@cluster_group.command("remove")
@click.argument("node_id")
@client_options
@handle_errors
def remove_cmd(node_id: str, endpoints: str, timeout: float, as_json: bool) -> None:
    """Remove NODE_ID from the cluster (the removed node stops serving)."""
    with connect(endpoints, timeout) as c:
        result = c.remove(node_id)
    echo_json(result) if as_json else click.echo(f"{node_id} is not a member any more")


@cluster_group.command("transfer-leader")
@click.argument("node_id", required=False)
@client_options
@handle_errors
def transfer_cmd(node_id: str | None, endpoints: str, timeout: float, as_json: bool) -> None:
    """Hand leadership to NODE_ID (default: the most up-to-date other voter)."""
    with connect(endpoints, timeout) as c:
        result = c.transfer_leader(node_id)
    echo_json(result) if as_json else click.echo(f"{result['leader']} leads")


@cluster_group.command("snapshot")
@client_options
@handle_errors
def snapshot_cmd(endpoints: str, timeout: float, as_json: bool) -> None:
    """Make every node in --endpoints write a snapshot now and compact its log; prints
    ADDR INDEX SIZE SECONDS per node (exit 1 if any node failed)."""
    failed = False
    results = {}
    with connect(endpoints, timeout) as c:
        for ep in parse_endpoints(endpoints):
            try:
                results[ep] = c.snapshot(ep)
            except BoltraftError as err:
                failed = True
                results[ep] = {"error": err.to_wire()}
    if as_json:
        echo_json(results)
    else:
        for ep, r in results.items():
            if "error" in r:
                click.echo(f"{ep} error: {r['error']['code']}: {r['error']['message']}")
            else:
                click.echo(f"{ep} {r['index']} {r['size']} {r['seconds']:.3f}")
    if failed:
        raise click.exceptions.Exit(1)


@cluster_group.command("hash")
@click.option(
    "--settle",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds to keep asking until every member reports the same applied index.",
)
@client_options
@handle_errors
def hash_cmd(settle: float, endpoints: str, timeout: float, as_json: bool) -> None:
    """Ask every member for its replica hash (a sha256 over its whole bucket content) and say
    whether they agree at the same applied index; prints ID APPLIED SHA256 per member, then
    'agree' or 'DIFFER' (exit 1 unless they agree)."""
    with connect(endpoints, timeout) as c:
        result = c.cluster_hash(settle=settle)
    if as_json:
        echo_json(result)
    else:
        for node_id, m in result["members"].items():
            if "error" in m:
                click.echo(f"{node_id} error: {m['error']['code']}: {m['error']['message']}")
            else:
                click.echo(f"{node_id} {m['applied']} {m['sha256']}")
        if result["agree"]:
            click.echo("agree")
        elif not result["same_applied"]:
            click.echo("DIFFER: the members are not at the same applied index")
        else:
            click.echo("DIFFER: the same applied index, different content")
    if not result["agree"]:
        raise click.exceptions.Exit(1)


def register(group: click.Group) -> None:
    """Adds ``cluster`` to ``group``."""
    group.add_command(cluster_group)
