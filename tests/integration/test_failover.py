"""Real processes: a SIGKILLed leader is replaced because its connections close, not because
an election timeout ran out, and a client writing through the crash carries on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from boltraft.client import Client

from .cluster import Cluster, running, sequence_writer, wait_connected, wait_until

pytestmark = pytest.mark.integration

TICK_MS = 50
LONG = 2_000  # election ticks: 100-200 s, far beyond every deadline below


class FirstLeads(Cluster):
    """n1 has the usual election timeout, so it is elected first; the others wait
    ``LONG`` ticks before a campaign of their own, so only a closed connection can make
    one of them campaign within a test's deadlines."""

    def argv(self, node_id: str) -> list[str]:
        ticks = "10" if node_id == "n1" else str(LONG)
        return [*super().argv(node_id), "--election-tick", ticks]


@pytest.fixture
def first_leads(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FirstLeads]:
    c = FirstLeads(tmp_path, tick_ms=TICK_MS)
    with running(c, request):
        assert c.wait_for_leader() == "n1"
        wait_connected(c)
        yield c


def test_the_survivors_elect_a_leader_when_the_leaders_connections_close(
    first_leads: FirstLeads,
) -> None:
    c = first_leads
    with Client(c.endpoints, timeout=30) as client:
        client.create_bucket("b")
        client.put("b", "before", "1")
        term = c.status("n2")["term"]
        c.kill("n1")
        # n2 comes first after n1: it campaigns at once and n3 votes for it, unless n2 was
        # n1's spare follower and lacks n1's last entry: then n3 refuses and stands itself
        new = wait_until(c.leader, 20, "a new leader, long before any election timeout")
        assert new in ("n2", "n3")
        assert {c.status(i)["term"] for i in ("n2", "n3")} == {term + 1}  # one election
        client.put("b", "after", "2")
        assert client.get("b", "before") == b"1"
    c.start("n1")
    wait_until(lambda: (c.status("n1") or {}).get("lead") == new, 20, f"n1 to follow {new}")


def test_writes_running_through_the_crash_are_each_applied_once(
    first_leads: FirstLeads,
) -> None:
    c = first_leads
    with Client(c.endpoints, timeout=30) as client:
        client.create_bucket("b")
    with sequence_writer(c.endpoints, "b") as (got, failure):
        wait_until(lambda: len(got) >= 20 or failure, 20, "20 writes")
        c.kill("n1")  # most likely with a call in flight
        at_kill = len(got)
        wait_until(lambda: len(got) >= at_kill + 20 or failure, 30, "20 writes after the kill")
    assert not failure, failure
    assert got == list(range(1, len(got) + 1))  # no retry applied twice, none lost
