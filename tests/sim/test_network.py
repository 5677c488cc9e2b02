"""The seeded network: deterministic, and each fault does what it says."""

from __future__ import annotations

import random

import pytest

from boltraft.raft.types import Message, MessageType

from .network import TICK, LinkProfile, SimNetwork
from .trace import Trace, fmt_msg

pytestmark = pytest.mark.sim


def msg(i: int, frm: str = "n1", to: str = "n2") -> Message:
    return Message(MessageType.HEARTBEAT, to=to, frm=frm, term=1, commit=i)


def drain(net: SimNetwork) -> list[tuple[int, int]]:
    out = []
    while net.next_due() is not None:
        due, m = net.pop()
        out.append((due, m.commit))
    return out


def run(seed: int, profile: LinkProfile) -> list[tuple[int, int]]:
    net = SimNetwork(random.Random(seed), profile)
    for i in range(200):
        net.send(i, msg(i))
    return drain(net)


def test_same_seed_same_schedule_other_seed_other_schedule() -> None:
    p = LinkProfile(drop_rate=0.1, dup_rate=0.1, slow_rate=0.3)
    assert run(7, p) == run(7, p)
    assert run(7, p) != run(8, p)


def test_clean_profile_delivers_everything_once_in_time() -> None:
    got = run(1, LinkProfile(max_fast=3))
    assert sorted(c for _, c in got) == list(range(200))
    assert all(due - c in (1, 2, 3) for due, c in got)


def test_drop_dup_and_reorder_happen() -> None:
    got = run(3, LinkProfile(drop_rate=0.2, dup_rate=0.2, slow_rate=0.3, max_slow=3 * TICK))
    ids = [c for _, c in got]
    assert len(set(ids)) < 200  # some lost
    assert len(ids) > len(set(ids))  # some twice
    assert ids != sorted(ids)  # some overtaken
    assert [d for d, _ in got] == sorted(d for d, _ in got)  # popped in arrival order


def test_partitions_and_cuts() -> None:
    net = SimNetwork(random.Random(0), LinkProfile())
    net.partition([["n1", "n2"], ["n3"]])
    assert net.connected("n1", "n2")
    assert not net.connected("n1", "n3")
    assert not net.connected("n3", "n2")
    net.cut("n2", "n1")
    assert net.connected("n1", "n2")
    assert not net.connected("n2", "n1")
    assert "n2->n1" in net.describe()
    net.heal()
    assert net.connected("n2", "n1") and net.connected("n1", "n3")


def test_random_partition_isolates_someone() -> None:
    nodes = ["n1", "n2", "n3", "n4", "n5"]
    for seed in range(20):
        net = SimNetwork(random.Random(seed), LinkProfile())
        net.random_partition(nodes)
        assert any(not net.connected(a, b) for a in nodes for b in nodes if a != b)


def test_trace_keeps_the_last_events_and_formats_messages() -> None:
    t = Trace(size=3)
    for i in range(5):
        t.add(i * TICK + 2, "deliver", msg(i))
    text = t.render()
    assert text.splitlines()[0] == "... 2 earlier events not kept"
    assert "n1->n2 HEARTBEAT t1 c=4" in text
    assert "c=1" not in text
    app = Message(MessageType.APP, to="n3", frm="n1", term=2, index=4, log_term=1, commit=3)
    assert fmt_msg(app) == "n1->n3 APP t2 prev=4@1 ents=[] c=3"
