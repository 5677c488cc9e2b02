"""``boltraft up``: a local cluster of ``boltraft serve`` child processes, in the foreground.

Node ``nI`` of N listens on ``base_port + I - 1``, serves its metrics and health
(``/metrics``, ``/healthz``, ``/readyz``) on ``metrics_base_port + I - 1`` and keeps its
data in ``DATA/nI``; the command lines are the same on every run, so running it again brings
the same data back. The cluster runs with CurveZMQ: the first run makes its keys in
``DATA/keys`` (one folder per node and ``admin``, the client key every ``boltraft`` command
run from the same directory finds: cli/common.py), later runs use them again. Every port is
checked before anything starts: a port in use (another cluster, say) is refused in one line,
and the leader reported is one of this cluster's nodes.

Once a leader is known it prints the cluster: ``-w simple`` as lines with a few commands to
try, ``-w table`` the nodes as a table, ``-w json`` one JSON object (``data``, ``keys``: the
admin keys folder, ``nodes``: ``id``, ``listen``, ``pid``, ``metrics``, ``data``, ``log``
each, ``endpoints``, ``leader``) on stdout, with its progress lines on stderr so the JSON is
all stdout holds.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

import click

from boltraft.errors import ConfigError
from boltraft.transport.curve import PartyKeys, init_keys, load_keys

from .common import UP_KEYS
from .output import echo_json, output_options, print_table, write_out

SERVE = "from boltraft_cli.main import main; main()"


def node_plan(data: Path, nodes: int, host: str, base_port: int) -> list[tuple[str, str, Path]]:
    """Returns (id, address, data dir) of each node: n1..nN on consecutive ports."""
    return [
        (f"n{i}", f"tcp://{host}:{base_port + i - 1}", data / f"n{i}") for i in range(1, nodes + 1)
    ]


def serve_argv(
    plan: list[tuple[str, str, Path]],
    i: int,
    metrics_addr: str | None = None,
    keys: Path | None = None,
) -> list[str]:
    """Returns the command line of node ``i`` of ``plan`` (the same on every run), with the
    node's folder under the keys folder ``keys`` when given."""
    node_id, addr, ddir = plan[i]
    argv = [sys.executable, "-c", SERVE, "serve", "--id", node_id, "--data", str(ddir)]
    argv += ["--listen", addr]
    if keys is not None:
        argv += ["--keys", str(keys / node_id)]
    if metrics_addr:
        argv += ["--metrics-addr", metrics_addr]
    for other_id, other_addr, _ in plan:
        if other_id != node_id:
            argv += ["--peer", f"{other_id}={other_addr}"]
    return argv


def cluster_keys(root: Path, node_ids: list[str]) -> PartyKeys:
    """Returns the admin's keys of the local cluster under ``root/keys``, making the keys
    folder (a folder per node and ``admin``) on the first run. Raises ConfigError when the
    folder exists without a node of ``node_ids`` (the cluster grew: make it again)."""
    folder = root / "keys"
    if not folder.exists():
        init_keys(folder, node_ids, {"admin": "admin"})
    missing = [n for n in node_ids if not (folder / n).is_dir()]
    if missing:
        raise ConfigError(
            f"{folder} has no keys for {', '.join(missing)}: remove it to make new keys"
        )
    return load_keys(folder / "admin")


def ports_in_use(host: str, ports: list[int]) -> list[int]:
    """The ``ports`` of ``host`` that cannot be bound now (another process holds them).
    Bound as the nodes bind them (ZeroMQ's listener and the metrics server set
    ``SO_REUSEADDR``), so a port that only the connections of a cluster just stopped hold
    (in TIME_WAIT) is free: ``up`` runs again at once after Ctrl-C."""
    busy = []
    for port in ports:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                busy.append(port)
    return busy


def stop_children(procs: list[subprocess.Popen[bytes]], timeout: float = 10.0) -> None:
    """Stops every child, SIGTERM first and SIGKILL after ``timeout`` seconds, and waits
    until all of them exited."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@click.command("up")
@click.option(
    "--data",
    default="./boltraft-data",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Parent folder of the nodes' data (n1, n2, ...).",
)
@click.option("--nodes", default=3, show_default=True, type=click.IntRange(1, 9))
@click.option("--base-port", default=7301, show_default=True, type=click.IntRange(1, 65000))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--metrics-base-port",
    default=None,
    type=click.IntRange(1, 65000),
    help="First port of the nodes' /metrics, /healthz, /readyz [base port + 1000].",
)
@output_options
def up_cmd(data: str, nodes: int, base_port: int, host: str, metrics_base_port: int | None) -> None:
    """Start a local cluster and keep it running until Ctrl-C; run again to get the same data
    back. Node logs go to DATA/nN.log."""
    from boltraft.errors import UnavailableError
    from boltraft.server.probe import status, wait_for_leader

    fmt = write_out()
    quiet = fmt != "simple"  # progress goes to stderr: stdout holds the table or the JSON

    def say(line: str) -> None:
        click.echo(line, err=fmt == "json")

    mbase = base_port + 1000 if metrics_base_port is None else metrics_base_port
    ports = [base_port + i for i in range(nodes)]
    mports = [mbase + i for i in range(nodes)]
    if set(ports) & set(mports):
        raise click.UsageError("--metrics-base-port overlaps the nodes' ports")
    if max(mports) > 65535:
        raise click.UsageError("--metrics-base-port: the nodes' metrics ports pass 65535")
    busy = ports_in_use(host, ports + mports)
    if busy:
        raise ConfigError(
            f"port{'s' if len(busy) > 1 else ''} {', '.join(map(str, busy))} on {host} "
            "in use (another cluster?): stop it, or choose --base-port / --metrics-base-port"
        )
    root = Path(data).absolute()
    root.mkdir(parents=True, exist_ok=True)
    plan = node_plan(root, nodes, host, base_port)
    admin = cluster_keys(root, [node_id for node_id, _, _ in plan])
    metrics = [f"{host}:{p}" for p in mports]
    addr_of = {node_id: addr for node_id, addr, _ in plan}
    stopping: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i, (node_id, _, _) in enumerate(plan):
            with open(root / f"{node_id}.log", "ab") as logf:
                # A new session: Ctrl-C reaches only us, and we stop the children in order.
                procs.append(
                    subprocess.Popen(
                        serve_argv(plan, i, metrics[i], root / "keys"),
                        stdout=logf,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                        env={**os.environ, "PYTHONUNBUFFERED": "1"},
                    )
                )
        endpoints = ",".join(addr for _, addr, _ in plan)
        described = [
            {
                "id": node_id,
                "listen": addr,
                "pid": p.pid,
                "metrics": f"http://{maddr}/metrics",
                "data": str(ddir),
                "log": str(root / f"{node_id}.log"),
            }
            for (node_id, addr, ddir), p, maddr in zip(plan, procs, metrics, strict=True)
        ]
        if not quiet:
            click.echo(f"boltraft: {nodes}-node cluster, data under {root}")
            for d in described:
                click.echo(
                    f"  {d['id']}  {d['listen']}  pid {d['pid']}  metrics {d['metrics']}  "
                    f"data {d['data']}  log {d['log']}"
                )
            click.echo(f"endpoints: {endpoints}")
        leader = None
        deadline = time.monotonic() + 30
        while leader is None and not stopping and time.monotonic() < deadline:
            if all(p.poll() is not None for p in procs):
                break
            found = wait_for_leader(
                [a for _, a, _ in plan], min(deadline, time.monotonic() + 1), keys=admin
            )
            if found is not None:  # one of ours: it answers at one of our addresses as itself
                st = status(addr_of[found], timeout=1.0, keys=admin) if found in addr_of else None
                mine = st is not None and st.get("listen") == addr_of[found]
                leader = found if mine else None
        if leader is None and not stopping:
            raise UnavailableError("no leader was elected; see the node logs")
        if leader is not None and fmt == "json":
            echo_json(
                {
                    "data": str(root),
                    "keys": str(root / "keys" / "admin"),
                    "nodes": described,
                    "endpoints": endpoints.split(","),
                    "leader": leader,
                }
            )
        elif leader is not None and fmt == "table":
            print_table(
                ["ID", "LISTEN", "PID", "METRICS", "DATA", "LOG"],
                [
                    [d[k] for k in ("id", "listen", "pid", "metrics", "data", "log")]
                    for d in described
                ],
            )
            click.echo(
                f"leader: {leader}; endpoints: {endpoints}; keys: {root / 'keys' / 'admin'}; "
                "Ctrl-C stops the cluster."
            )
        elif leader is not None:
            click.echo(f"leader: {leader}. Try, from another terminal in this directory:")
            env = (
                ""
                if base_port == 7301 and host == "127.0.0.1" and nodes == 3
                else (f"BOLTRAFT_ENDPOINTS={endpoints} ")
            )
            if Path(UP_KEYS).absolute() != root / "keys" / "admin":
                env += f"BOLTRAFT_KEYS={root / 'keys' / 'admin'} "
            click.echo(f"  {env}boltraft bucket create config")
            click.echo(f"  {env}boltraft put config color blue")
            click.echo(f"  {env}boltraft get config color")
            click.echo("Ctrl-C stops the cluster.")
        while not stopping:
            for (node_id, _, _), p in zip(plan, procs, strict=True):
                if p.returncode is None and p.poll() is not None:
                    click.echo(f"warning: {node_id} exited with status {p.returncode}", err=True)
            if all(p.returncode is not None for p in procs):
                raise UnavailableError("every node exited; see the node logs")
            time.sleep(0.2)
        say("stopping the cluster ...")
    finally:
        stop_children(procs)
        for s, handler in previous.items():
            signal.signal(s, handler)
    say("stopped.")


def register(group: click.Group) -> None:
    """Adds ``up`` to ``group``."""
    group.add_command(up_cmd)
