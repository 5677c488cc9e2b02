"""A client that floods a node with small frames and ZMTP heartbeats, then drops its
connection, round after round: no node may exit, and the cluster serves afterwards.

The scenario of ``bench/heartbeat_flood.py``, made certain: with a ZeroMQ inbound queue
that stops reading a connection (``RCVHWM``), libzmq 4.3.5 aborted the node when that
connection broke with a ZMTP heartbeat PING among the bytes it had read and not decoded
(it answers the PING on the broken connection: ``Assertion failed: !_io_error``,
docs/protocol.md, section 2.1). The flooding process speaks ZMTP 3.1 itself over a plain
TCP socket (a DEALER's NULL handshake), so that a PING comes every six frames, between
``status`` requests (far slower for the node to answer than for the client to send) and
frames of one byte; once it has sent ``FLOOD_FRAMES`` frames it is killed with SIGKILL
(its unread answers make its kernel reset the connection), and the test waits until the
node answers ``status`` again.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from boltraft.client import Client

from .cluster import Cluster, wait_until

ROUNDS = 10
FLOOD_FRAMES = 150_000  # each round: far more than a node's loop takes in meanwhile
_FLOOD = (  # bench/heartbeat_flood.py's ZMTP flooder, reporting once it sent N frames
    f"import sys; sys.path.insert(0, {str(Path(__file__).parents[2] / 'bench')!r}); "
    "from heartbeat_flood import flood_zmtp; flood_zmtp(sys.argv[1], int(sys.argv[2]))"
)


def _flood_round(addr: str) -> str:
    """Runs one flooding process against ``addr``, killed once it has sent FLOOD_FRAMES
    frames; returns its line ("flooded", or "" when it ended early: its connection was
    closed)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _FLOOD, addr, str(FLOOD_FRAMES)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()  # the flooder's own progress
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    return line or err.strip().splitlines()[-1:]


def test_a_flooding_client_that_drops_its_connection_kills_no_node(cluster: Cluster) -> None:
    leader = cluster.wait_for_leader()
    addr = cluster.addrs[leader]
    start = time.monotonic()
    for n in range(ROUNDS):
        line = _flood_round(addr)
        # the node reads out what the flood queued; an abort would come meanwhile
        wait_until(
            lambda: not cluster.running(leader) or cluster.status(leader, 2.0) is not None,
            30.0,
            f"{leader} to answer status after round {n + 1}",
        )
        exited = [i for i in cluster.ids if not cluster.running(i)]
        assert not exited, (
            f"round {n + 1} ({time.monotonic() - start:.1f} s): {exited} exited; "
            + (cluster.root / f"{exited[0]}.log").read_text(errors="replace")[-300:]
        )
        assert line == "flooded", f"round {n + 1}: the flooding process ended early"
    with Client(cluster.endpoints, timeout=10.0) as c:
        c.create_bucket("b")
        c.put("b", b"k", b"still serving")
        assert c.get("b", b"k") == b"still serving"
    assert all(cluster.running(i) for i in cluster.ids)
