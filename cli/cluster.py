"""``boltraft cluster ...``: membership and snapshots of a running cluster.

- ``cluster members``: voters, learners, addresses, the leader (and, from the leader, each
  member's match index and replication state);
- ``cluster join --id ID --addr ADDR``: add a node (learner, caught up, then voter); a member
  at another address is moved to ADDR. When the join fails, the learner it added is removed
  again, so a failed join leaves the membership as it was;
- ``cluster remove ID``; ``cluster transfer-leader [ID]``;
- ``cluster snapshot``: every node in ``--endpoints`` writes a snapshot and compacts its log;
- ``cluster hash``: every member's replica hash, and whether they agree.

Shared options: cli/common.py; formats, the error line and exit codes: cli/output.py.
"""

from __future__ import annotations

import time
from typing import Any

import click

from boltraft.client import Client, parse_endpoints
from boltraft.errors import BoltraftError
from boltraft.raft.types import ProgressState

from .common import client_options, connect, handle_errors
from .output import emit, error_line, fail, one_line


@click.group("cluster")
def cluster_group() -> None:
    """Membership and snapshots of a running cluster."""


def leader_members(c: Client) -> dict[str, Any]:
    """The membership as the leader sees it (with its progress), or as the first node to
    answer sees it when the leader is not reachable."""
    m = c.members()
    if m.get("leader") and m.get("leader_addr") and m["leader"] != m["id"]:
        try:
            m = c.members(m["leader_addr"])
        except BoltraftError:
            pass
    return m


def _state_name(state: Any) -> Any:
    try:
        return ProgressState(int(state)).name.lower()
    except (TypeError, ValueError):
        return state


@cluster_group.command("members")
@client_options
@handle_errors
def members_cmd(endpoints: str, timeout: float) -> None:
    """Print the members: one line per node, ID ROLE ADDR [match=N] [leader]."""
    with connect(endpoints, timeout) as c:
        m = leader_members(c)
    progress = m.get("progress", {})
    for p in progress.values():
        if "state" in p:
            p["state"] = _state_name(p["state"])
    rows = []
    for role in ("voters", "learners"):
        for nid in m[role]:
            p = progress.get(nid, {})
            rows.append(
                [
                    nid,
                    role[:-1],
                    m["addrs"].get(nid, ""),
                    p.get("match"),
                    p.get("state"),
                    nid == m.get("leader"),
                ]
            )

    def simple() -> None:
        for nid, role, addr, match, _, leads in rows:
            line = f"{nid} {role} {addr}"
            if match is not None:
                line += f" match={match}"
            if leads:
                line += " leader"
            click.echo(line)

    emit(m, table=(["ID", "ROLE", "ADDRESS", "MATCH", "STATE", "LEADER"], rows), simple=simple)


def _is_member(m: dict[str, Any], node_id: str) -> bool:
    return node_id in m.get("voters", ()) or node_id in m.get("learners", ())


@cluster_group.command("join")
@click.option("--id", "node_id", required=True, help="The new node's id.")
@click.option("--addr", required=True, help="The new node's address, tcp://HOST:PORT.")
@client_options
@handle_errors
def join_cmd(node_id: str, addr: str, endpoints: str, timeout: float) -> None:
    """Add node ID at ADDR as a learner, wait until it caught up, then make it a voter.
    (Give --timeout long enough for the node to catch up.) When that fails, the learner
    it added is removed again."""
    with connect(endpoints, timeout) as c:
        before = c.members()
        try:
            result = c.join(node_id, addr)
        except BoltraftError as err:
            if not _is_member(before, node_id):
                err.message += _undo_join(endpoints, node_id)
            raise
    emit(
        result,
        table=(["ID", "ROLE", "ADDRESS"], [[node_id, "voter", addr]]),
        simple=lambda: click.echo(f"{node_id} is a voter at {addr}"),
    )


UNDO_STABLE_S = 1.0  # the learner must stay out this long: the node's join may still retry


def _undo_join(endpoints: str, node_id: str, timeout: float = 15.0) -> str:
    """Removes ``node_id`` if a failed join left it in the membership, until it stays out
    (the node's own join operation ends at about the time the client gave up, and may add
    it once more before); the words to add to the join's error."""
    deadline = time.monotonic() + timeout
    removed = False
    clear_since: float | None = None
    try:
        with connect(endpoints, timeout) as c:
            while time.monotonic() < deadline:
                now = time.monotonic()
                if _is_member(leader_members(c), node_id):
                    c.remove(node_id)
                    removed, clear_since = True, None
                elif clear_since is None:
                    clear_since = now
                elif now - clear_since >= UNDO_STABLE_S:
                    break
                time.sleep(0.1)
    except BoltraftError as err:
        return f"; the learner {node_id} it added could not be removed ({err.code}): remove it"
    if not removed:
        return ""
    return f"; the learner {node_id} it added was removed again"


@cluster_group.command("remove")
@click.argument("node_id")
@client_options
@handle_errors
def remove_cmd(node_id: str, endpoints: str, timeout: float) -> None:
    """Remove NODE_ID from the cluster (the removed node stops serving)."""
    with connect(endpoints, timeout) as c:
        result = c.remove(node_id)
    emit(
        result,
        table=(["REMOVED"], [[node_id]]),
        simple=lambda: click.echo(f"{node_id} is not a member any more"),
    )


@cluster_group.command("transfer-leader")
@click.argument("node_id", required=False)
@client_options
@handle_errors
def transfer_cmd(node_id: str | None, endpoints: str, timeout: float) -> None:
    """Hand leadership to NODE_ID (default: the most up-to-date other voter)."""
    with connect(endpoints, timeout) as c:
        result = c.transfer_leader(node_id)
    emit(
        result,
        table=(["LEADER", "ADDRESS"], [[result.get("leader"), result.get("leader_addr")]]),
        simple=lambda: click.echo(f"{result['leader']} leads"),
    )


@cluster_group.command("snapshot")
@client_options
@handle_errors
def snapshot_cmd(endpoints: str, timeout: float) -> None:
    """Make every node in --endpoints write a snapshot now and compact its log; prints
    ADDR INDEX SIZE SECONDS per node (-w table: with a header; exit non-zero if any node
    failed)."""
    errors: list[BoltraftError] = []
    results: dict[str, Any] = {}
    with connect(endpoints, timeout) as c:
        for ep in parse_endpoints(endpoints):
            try:
                results[ep] = c.snapshot(ep)
            except BoltraftError as err:
                errors.append(err)
                results[ep] = {"error": err.to_wire()}
    rows = [
        [
            ep,
            r.get("index"),
            r.get("size"),
            r.get("seconds"),
            f"{r['error']['code']}: {one_line(r['error']['message'])}" if "error" in r else "",
        ]
        for ep, r in results.items()
    ]

    def simple() -> None:
        for ep, r in results.items():
            if "error" in r:
                click.echo(f"{ep} {error_line(BoltraftError.from_wire(r['error']))}")
            else:
                click.echo(f"{ep} {r['index']} {r['size']} {r['seconds']:.3f}")

    emit(results, table=(["ENDPOINT", "INDEX", "SIZE", "SECONDS", "ERROR"], rows), simple=simple)
    if errors:
        fail(errors[0])


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
def hash_cmd(settle: float, endpoints: str, timeout: float) -> None:
    """Ask every member for its replica hash (a sha256 over its whole bucket content) and say
    whether they agree at the same applied index; prints ID APPLIED SHA256 per member, then
    'agree' or 'DIFFER' (exit 1 unless they agree)."""
    with connect(endpoints, timeout) as c:
        result = c.cluster_hash(settle=settle)
    members = result["members"]
    rows = [
        [
            node_id,
            m.get("applied"),
            m.get("sha256", ""),
            f"{m['error']['code']}: {one_line(m['error']['message'])}" if "error" in m else "",
        ]
        for node_id, m in members.items()
    ]

    def simple() -> None:
        for node_id, m in members.items():
            if "error" in m:
                click.echo(f"{node_id} {error_line(BoltraftError.from_wire(m['error']))}")
            else:
                click.echo(f"{node_id} {m['applied']} {m['sha256']}")
        if result["agree"]:
            click.echo("agree")
        elif not result["same_applied"]:
            click.echo("DIFFER: the members are not at the same applied index")
        else:
            click.echo("DIFFER: the same applied index, different content")

    emit(result, table=(["ID", "APPLIED", "SHA256", "ERROR"], rows), simple=simple)
    if not result["agree"]:
        raise click.exceptions.Exit(1)


def register(group: click.Group) -> None:
    """Adds ``cluster`` to ``group``."""
    group.add_command(cluster_group)
