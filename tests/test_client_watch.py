"""``Client.watch`` against scripted fake nodes (real ZeroMQ sockets, tests/fake_node.py):
where a watch resumes after a node ends it or refuses it, and that it delivers each change
once, in order, when the next node sends again what it already had."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fake_node import FakeNode, fail, ok

from boltraft.client import Client, wait_watches
from boltraft.errors import BoltraftError, CompactedError, UnavailableError
from boltraft.packing import pack
from boltraft.transport.watchwire import encode_batch, encode_item


def ev(index: int, pos: int) -> list[Any]:
    return [index, pos, "put", [b"b"], b"k%d.%d" % (index, pos), b"v", None]


def frames(wid: int, index: int, *events: list[Any]) -> bytes:
    """The ``events_batch`` frame of one watch's item: ``events``, progress ``index``."""
    lists = [pack(list(events))] if events else []
    return encode_batch(lists, [encode_item(wid, index, 0 if events else None, None)])


def encode_end(wid: int, index: int, err: BoltraftError) -> bytes:
    return encode_batch([], [encode_item(wid, index, None, err)])


@pytest.fixture
def nodes() -> Iterator[list[FakeNode]]:
    made: list[FakeNode] = []
    yield made
    for n in made:
        n.close()


def test_a_watch_resumes_on_the_next_node_from_its_last_index_without_repeats(
    nodes: list[FakeNode],
) -> None:
    a_calls: list[dict[str, Any]] = []
    b_calls: list[dict[str, Any]] = []

    def node_a(rid: int, body: dict[str, Any]) -> list[bytes]:
        if body["op"] != "watch":
            return [ok(rid)]
        a_calls.append(body)
        if len(a_calls) == 1:  # two of the three changes of entry 5, then the end
            return [
                ok(rid, {"watch": 1, "start_index": 5, "oldest_index": 1}),
                frames(1, 4, ev(5, 0), ev(5, 1)),
                encode_end(1, 4, UnavailableError("the feed started over")),
            ]
        return [fail(rid, CompactedError("too old", oldest_index=9))]

    def node_b(rid: int, body: dict[str, Any]) -> list[bytes]:
        if body["op"] != "watch":
            return [ok(rid)]
        b_calls.append(body)
        return [
            ok(rid, {"watch": 7, "start_index": body["start_index"], "oldest_index": 1}),
            frames(7, 6, ev(5, 0), ev(5, 1), ev(5, 2), ev(6, 0)),
        ]

    nodes += [FakeNode(node_a), FakeNode(node_b)]
    with Client([n.endpoint for n in nodes]) as c:
        w = c.watch("b", start_index=5)
        got = [next(w) for _ in range(4)]
        w.close()
    assert [(e.index, e.pos) for e in got] == [(5, 0), (5, 1), (5, 2), (6, 0)]
    assert [b.get("start_index") for b in a_calls] == [5, 5]
    assert [b["start_index"] for b in b_calls] == [5]  # entry 5 was not seen whole
    assert w.progress == 6 and w.resumes == 1


def test_a_watch_resumes_after_the_progress_index_when_that_is_later(
    nodes: list[FakeNode],
) -> None:
    calls: list[dict[str, Any]] = []

    def node(rid: int, body: dict[str, Any]) -> list[bytes]:
        if body["op"] != "watch":
            return [ok(rid)]
        calls.append(body)
        if len(calls) == 1:
            return [
                ok(rid, {"watch": 1, "start_index": 3, "oldest_index": 1}),
                frames(1, 3, ev(3, 0)),
                frames(1, 40),  # progress: nothing matched up to 40
                encode_end(1, 40, UnavailableError("the feed started over")),
            ]
        return [ok(rid, {"watch": 2, "start_index": body["start_index"], "oldest_index": 1})]

    nodes.append(FakeNode(node))
    with Client([nodes[0].endpoint]) as c:
        w = c.watch("b")  # from now: the node says it starts at 3
        assert (next(w).index, w.poll(0.5)) == (3, 0)
        w.close()
    assert "start_index" not in calls[0]
    assert calls[1]["start_index"] == 41


def test_compacted_everywhere_is_raised_with_the_oldest_index(nodes: list[FakeNode]) -> None:
    def node(oldest: int) -> Any:
        return lambda rid, body: [fail(rid, CompactedError("too old", oldest_index=oldest))]

    nodes += [FakeNode(node(50)), FakeNode(node(30))]
    with Client([n.endpoint for n in nodes]) as c, pytest.raises(CompactedError) as info:
        c.watch("b", start_index=2)
    assert info.value.details["oldest_index"] == 30


def test_take_hands_over_what_is_waiting_in_order_and_acknowledges_it(
    nodes: list[FakeNode],
) -> None:
    acks: list[int] = []

    def node(rid: int, body: dict[str, Any]) -> list[bytes]:
        if body["op"] == "watch_ack":
            acks.extend(n for wid, n in body["acks"] if wid == 1)
            return [ok(rid, [])]
        if body["op"] != "watch":
            return [ok(rid)]
        return [
            ok(rid, {"watch": 1, "start_index": 5, "oldest_index": 1}),
            frames(1, 6, ev(5, 0), ev(5, 1), ev(6, 0)),
            frames(1, 8, ev(7, 0), ev(8, 0), ev(8, 1)),
        ]

    nodes.append(FakeNode(node))
    with Client([nodes[0].endpoint]) as c:
        w = c.watch("b", start_index=5, window=8)  # acknowledges every 2 events
        got = []
        deadline = time.monotonic() + 10
        while len(got) < 6:
            assert time.monotonic() < deadline, got
            for ready in wait_watches([w], 0.2):
                got += ready.take(2)
        assert w.take() == []
        while sum(acks) < 5:  # what is left unacknowledged stays below window // 4
            assert time.monotonic() < deadline, acks
            wait_watches([w], 0.01)  # the acknowledgements go before the next wait
        w.close()
    assert [(e.index, e.pos) for e in got] == [(5, 0), (5, 1), (6, 0), (7, 0), (8, 0), (8, 1)]
    assert w.last_index == 8 and w.progress == 8


def test_the_watches_of_a_thread_share_one_connection_per_node_and_its_frames(
    nodes: list[FakeNode],
) -> None:
    wids = iter(range(1, 100))

    def node(rid: int, body: dict[str, Any]) -> list[bytes]:
        if body["op"] != "watch":
            return [ok(rid)]
        wid = next(wids)
        out = [ok(rid, {"watch": wid, "start_index": 5, "oldest_index": 1})]
        if wid == 2:
            # the first watch's change arrives while the second awaits its answer, then one
            # frame for both (right after the answer: the second must know its id by then)
            both = encode_batch(
                [pack([ev(6, 0)]), pack([ev(5, 0), ev(6, 0)])],
                [encode_item(1, 6, 0, None), encode_item(2, 6, 1, None)],
            )
            out = [frames(1, 5, ev(5, 0)), *out, both]
        return out

    nodes.append(FakeNode(node))
    with Client([nodes[0].endpoint]) as c:
        w1 = c.watch("b", start_index=5)
        w2 = c.watch("b", start_index=5)
        got: dict[int, list[tuple[int, int]]] = {1: [], 2: []}
        deadline = time.monotonic() + 10
        while len(got[1]) < 2 or len(got[2]) < 2:
            assert time.monotonic() < deadline, got
            for ready in wait_watches([w1, w2], 0.2):
                got[1 if ready is w1 else 2] += [(e.index, e.pos) for e in ready.take()]
        w1.close()
        w2.close()
    assert got == {1: [(5, 0), (6, 0)], 2: [(5, 0), (6, 0)]}

    def ops() -> list[str]:
        return [b["op"] for b in nodes[0].bodies() if b["op"] != "watch_ack"]

    while len(ops()) < 4:  # the cancels are on their way to the node
        assert time.monotonic() < deadline, ops()
        time.sleep(0.01)
    assert ops() == ["watch", "watch", "watch_cancel", "watch_cancel"]
    assert len(set(nodes[0].idents)) == 1  # both watches (and their cancels): one connection


def test_the_acknowledgements_of_a_connection_go_in_one_request(nodes: list[FakeNode]) -> None:
    acks: list[list[list[int]]] = []
    wids = iter(range(1, 100))

    def node(rid: int, body: dict[str, Any]) -> list[bytes]:
        if body["op"] == "watch_ack":
            acks.append(body["acks"])
            return [ok(rid, [2])]  # the node no longer knows watch 2: it starts again
        if body["op"] != "watch":
            return [ok(rid)]
        wid = next(wids)
        out = [ok(rid, {"watch": wid, "start_index": 5, "oldest_index": 1})]
        if wid == 2:
            out.append(
                encode_batch(
                    [pack([ev(5, 0), ev(6, 0)])],
                    [encode_item(1, 6, 0, None), encode_item(2, 6, 0, None)],
                )
            )
        return out

    nodes.append(FakeNode(node))
    with Client([nodes[0].endpoint]) as c:
        w1 = c.watch("b", start_index=5, window=8)  # acknowledges every 2 events
        w2 = c.watch("b", start_index=5, window=8)
        deadline = time.monotonic() + 10
        while len(w1._buf) < 2 or len(w2._buf) < 2:
            assert time.monotonic() < deadline
            wait_watches([w1, w2], 0.2)
        assert len(w1.take()) == len(w2.take()) == 2
        assert acks == []  # they wait for the next wait
        while not acks or w2.resumes == 0:
            assert time.monotonic() < deadline, acks
            wait_watches([w1, w2], 0.05)
        w1.close()
        w2.close()
    assert acks[0] == [[1, 2], [2, 2]]
    watches = [b for b in nodes[0].bodies() if b["op"] == "watch"]
    assert len(watches) == 3 and watches[2]["start_index"] == 7  # watch 2 again, after 6
