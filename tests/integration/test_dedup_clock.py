"""Exactly-once across a leader whose wall clock runs 20 minutes ahead (libfaketime's
scenario, with the process's clock moved by the test launcher): a retry of a write applied
before leadership moved to that node gets the first result, never a second apply."""

from __future__ import annotations

from boltraft.client import Client
from boltraft.server.probe import request

from .cluster import wait_until


def test_a_retry_is_not_applied_again_after_a_fast_clocked_node_leads(make_cluster) -> None:
    c = make_cluster({"clock_ahead_s": {"n1": 1200}})  # the dedup window is 10 minutes
    with Client(c.endpoints, timeout=10) as cl:
        cl.create_bucket("b")
        if cl.status()["lead"] == "n1":
            cl.transfer_leader("n2")
        lead = cl.status()["lead"]
        body = {"op": "next_sequence", "bucket": [b"b"], "cid": b"retrying", "seq": 1}
        first = request(c.addrs[lead], body, timeout=5)
        cl.transfer_leader("n1")
        wait_until(lambda: cl.status()["lead"] == "n1", 30, "n1 to lead")
        cl.put("b", "after", "a write stamped by n1")
        again = request(c.addrs["n1"], body, timeout=5)
        assert again == first  # the original result, not a second sequence number
        assert cl.next_sequence("b") == first + 1  # applied exactly once
