"""``LogShares``: a client's share of the log (``boltraft.server.logshares``), alone and in
the service of a leader on the in-memory world of ``memworld``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from memworld import World

from boltraft.server.logshares import LogShares, client_key
from boltraft.server.replies import Target
from boltraft.storage import commands


def test_a_client_with_nothing_in_the_log_may_always_propose_one_write() -> None:
    s = LogShares(100)
    assert s.fits("a", 0, 1000)  # one write of any size
    assert not s.fits("a", 1000, 1)  # but nothing after it in the same round
    assert s.fits("a", 40, 60) and not s.fits("a", 40, 61)


def test_what_a_client_has_in_the_log_counts_until_it_is_applied() -> None:
    s = LogShares(100)
    s.charge("a", 5, 70)
    s.charge("b", 6, 30)
    s.charge("a", 7, 20)
    s.settle(4)
    assert s.in_log("a") == 90 and s.in_log("b") == 30
    assert s.fits("a", 0, 10) and not s.fits("a", 0, 11)
    assert s.in_log("c") == 0 and s.fits("c", 0, 500)
    s.settle(6)  # indexes 5 and 6 applied
    assert s.in_log("a") == 20 and s.in_log("b") == 0
    s.settle(9)
    assert s.in_log("a") == 0 and s.fits("a", 0, 500)


def test_clients_that_come_and_go_leave_nothing_behind() -> None:
    s = LogShares(100)
    for i in range(1000):  # a new connection for every write
        s.charge(b"conn%d" % i, i + 1, 10)
        s.settle(i)
    s.settle(1000)
    assert not s._bytes and not s._charges


def test_held_writes_come_back_in_each_clients_order() -> None:
    s = LogShares(100)
    t = Target(b"a", 1)
    for i in range(3):
        s.hold("a", (t, {"n": i}))
    s.hold("b", (t, {"n": 9}))
    assert s.held == 4
    s.charge("a", 3, 50)
    assert s.any_fits(applied=2)  # b has nothing in the log
    assert [body["n"] for _, body in s.take_held()] == [0, 1, 2, 9]
    assert s.held == 0 and not s.any_fits(applied=2)


def test_a_client_is_its_connection_or_the_forwarding_follower_and_cid() -> None:
    assert client_key(Target(b"conn", 1), {"cid": b"x"}) == b"conn"
    assert client_key(Target(b"n2", 7, "n2"), {"cid": b"x"}) == ("n2", b"x")
    assert client_key(Target(b"n2", 7, "n2"), {}) == ("n2", 7)  # no cid: a client of its own


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.close()


def _put(i: int, key: str, size: int) -> list[Any]:
    return [i, {"op": "put", "bucket": "b", "key": key, "value": b"v" * size}]


def test_a_greedy_clients_writes_go_one_share_at_a_time_and_others_go_between(
    world: World,
) -> None:
    lead = world.elect()
    node = world.nodes[lead]
    world.request(lead, 1, {"op": "create_bucket", "bucket": "b"})
    world.settle()
    base = node.commit
    share = node.service._shares.limit
    big = share * 3 // 5  # two of them do not fit in one share
    world.pipeline(lead, [_put(i, f"g{i}", big) for i in range(4)], client=b"greedy")
    world.request(lead, 2, {"op": "put", "bucket": "b", "key": "small", "value": "x"})
    node.process(world.nets[lead].recv())  # one iteration: nothing committed yet
    assert node.raw.status().commit == base  # (no follower answered)
    assert node.logstore.last_index() == base + 2  # g0 and the small write; g1..g3 held
    assert node.service.stats["held_writes"] == 1  # g1, then its client was full
    world.settle(20)
    answers = world.pipelined(lead, client=b"greedy")
    assert [answers[i]["ok"] for i in range(4)] == [True] * 4
    assert world.responses(lead)[2].ok
    ents = node.logstore.entries(base + 1, node.commit + 1)
    keys = [commands.decode(e.data)["key"] for e in ents if e.data]
    assert keys == [b"g0", b"small", b"g1", b"g2", b"g3"]  # the greedy writes one by one
    with node.sm.db.view() as tx:
        assert len(tx.bucket("b").get(b"g3") or b"") == big
