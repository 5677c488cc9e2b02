"""``boltraft endpoint health``: is every member of the cluster able to serve?

The members are found from any endpoint that answers (its membership; the given endpoints
it does not list are checked too). A member is healthy when, within ``--timeout``, it
answers its status knowing a leader, its disk is not full, and a linearizable read through
it completes (the read of a bucket that does not exist: it needs the leader's read index,
as any linearizable request does). Prints one line per member, ``ENDPOINT is healthy: took
N ms`` or ``ENDPOINT is unhealthy: took N ms: error: <code>: <message>``; exits 4 when any
member is unhealthy.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import click

from boltraft.client import Client, parse_endpoints
from boltraft.errors import BoltraftError, NoLeaderError, UnavailableError
from boltraft.transport.curve import PartyKeys

from .common import client_keys, client_options, handle_errors
from .kv import discover
from .output import emit, fail, one_line

_PROBE_BUCKET = [b"\x00boltraft-health-probe"]  # never created: the read answers not found


def check(endpoint: str, timeout: float, keys: PartyKeys | None = None) -> dict[str, Any]:
    """``{"endpoint", "health", "took_ms", "error"}`` of one member (see the module
    docstring), asked with ``keys``."""
    t0 = time.perf_counter()
    error: BoltraftError | None = None
    try:
        with Client(endpoint, timeout=timeout, keys=keys) as c:
            st = c.status(endpoint)
            if st.get("disk_full"):
                error = UnavailableError(str(st["disk_full"]))
            elif not st.get("lead"):
                error = NoLeaderError("the node knows no leader")
            else:
                try:
                    c.get(_PROBE_BUCKET, b"k")
                except BoltraftError as err:
                    if err.code not in ("bucket_not_found",):
                        raise
    except BoltraftError as err:
        error = err
    took = (time.perf_counter() - t0) * 1000
    return {
        "endpoint": endpoint,
        "health": error is None,
        "took_ms": round(took, 3),
        "error": None if error is None else error.to_wire(),
    }


@click.group("endpoint")
def endpoint_group() -> None:
    """Check the cluster's members."""


@endpoint_group.command("health")
@client_options
@handle_errors
def health_cmd(endpoints: str, timeout: float) -> None:
    """Check every member (found from any endpoint): healthy, how long it took, or the
    error; exits 4 when any member is unhealthy."""
    members = discover(parse_endpoints(endpoints), timeout)
    results: dict[str, dict[str, Any]] = {}
    keys = client_keys()

    def run(ep: str) -> None:
        results[ep] = check(ep, timeout, keys)

    threads = [threading.Thread(target=run, args=(ep,)) for ep in members]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = [results[ep] for ep in members]

    def line(r: dict[str, Any]) -> str:
        took = f"took {r['took_ms']:.1f} ms"
        if r["health"]:
            return f"{r['endpoint']} is healthy: {took}"
        e = r["error"]
        return f"{r['endpoint']} is unhealthy: {took}: error: {e['code']}: {one_line(e['message'])}"

    def simple() -> None:
        for r in rows:
            click.echo(line(r))

    emit(
        rows,
        table=(
            ["ENDPOINT", "HEALTH", "TOOK", "ERROR"],
            [
                [
                    r["endpoint"],
                    r["health"],
                    f"{r['took_ms']:.1f} ms",
                    ""
                    if r["error"] is None
                    else f"{r['error']['code']}: {one_line(r['error']['message'])}",
                ]
                for r in rows
            ],
        ),
        simple=simple,
    )
    bad = [r for r in rows if not r["health"]]
    if bad:
        fail(UnavailableError(f"{len(bad)} of {len(rows)} members are unhealthy"))


def register(group: click.Group) -> None:
    """Adds ``endpoint`` to ``group``."""
    group.add_command(endpoint_group)
