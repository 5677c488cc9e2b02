"""A leader frozen by SIGSTOP (a long GC pause, a stalled VM, a stuck disk), for real: the
others replace it, the clients' retries reach the new leader, and when the old one wakes up
with stale requests and stale messages queued in its sockets, it steps down: every write is
acknowledged once and applied once."""

from __future__ import annotations

import os
import signal

import pytest

from boltraft.client import Client

from .cluster import Cluster, wait_until

pytestmark = pytest.mark.integration


def test_a_paused_leader_is_replaced_and_no_write_is_lost_or_applied_twice(
    cluster: Cluster,
) -> None:
    seqs: list[int] = []
    with Client(cluster.endpoints, timeout=15.0) as client:
        client.create_bucket("b")

        def write(i: int) -> None:
            client.put("b", b"k%d" % i, b"v%d" % i)
            seqs.append(client.next_sequence("b"))

        for i in range(20):
            write(i)
        old = cluster.wait_for_leader()
        pid = cluster.procs[old].pid
        os.kill(pid, signal.SIGSTOP)
        try:
            for i in range(20, 50):  # the first ones wait out the client's attempt timeout
                write(i)
            new = cluster.wait_for_leader()
            assert new != old
        finally:
            os.kill(pid, signal.SIGCONT)
        for i in range(50, 80):
            write(i)

        def old_steps_down() -> bool:
            st = cluster.status(old)
            return bool(st and st["role"] == "follower" and st["lead"] == new)

        wait_until(old_steps_down, 20, f"{old} to follow {new}")
        last = cluster.status(new)["last_index"]  # type: ignore[index]
        for node_id in cluster.ids:
            cluster.wait_applied(node_id, last)
            with Client([cluster.addrs[node_id]], timeout=5.0) as one:
                for i in range(80):
                    assert one.get("b", b"k%d" % i, read="stale") == b"v%d" % i
        # each next_sequence was applied exactly once, retries and stale copies included
        assert seqs == list(range(1, 81))
        assert client.next_sequence("b") == 81
