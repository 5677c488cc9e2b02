"""boltraft.Client against fake nodes made of real ZeroMQ sockets on 127.0.0.1."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq
from fake_node import CRASH, FakeNode, FakeStore, fail, ok

from boltraft import errors
from boltraft.client import Client, Page, parse_endpoints

FAST = {"attempt_timeout": 0.2, "backoff": (0.005, 0.02)}


@pytest.fixture
def nodes() -> Iterator[Callable[..., FakeNode]]:
    made: list[FakeNode] = []

    def _make(handler: Callable[[int, dict[str, Any]], list[bytes]]) -> FakeNode:
        node = FakeNode(handler)
        made.append(node)
        return node

    yield _make
    for node in made:
        node.close()


def answer(result: Any = None) -> Callable[[int, dict[str, Any]], list[bytes]]:
    return lambda rid, body: [ok(rid, result)]


def drop(rid: int, body: dict[str, Any]) -> list[bytes]:
    return []


def dead_endpoint() -> str:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    sock.close(0)
    ctx.term()
    return f"tcp://127.0.0.1:{port}"


def test_requests_carry_normalized_fields(nodes: Callable[..., FakeNode]) -> None:
    store = FakeStore()
    node = nodes(store)
    with Client(node.endpoint, timeout=5, client_id="me") as c:
        c.create_bucket("a")
        c.create_bucket(["a", b"b"])
        c.put(["a", "b"], "k", b"\x00v")
        assert c.get(["a", "b"], "k") == b"\x00v"
        assert c.get(("a", "b"), "nope", read="stale", max_lag=3) is None
        assert c.delete(["a", "b"], "k") is True
        assert c.delete(["a", "b"], "k") is False
    _, create, put, get, stale, delete, _ = node.bodies()
    assert create == {"op": "create_bucket", "bucket": [b"a", b"b"], "cid": b"me", "seq": 2}
    assert put == {
        "op": "put",
        "bucket": [b"a", b"b"],
        "key": b"k",
        "value": b"\x00v",
        "cid": b"me",
        "seq": 3,
    }
    assert get == {"op": "get", "bucket": [b"a", b"b"], "key": b"k", "read": "linearizable"}
    assert (stale["read"], stale["max_lag"]) == ("stale", 3)
    assert "cid" not in get and delete["seq"] == 4


def test_not_leader_hint_is_followed_and_remembered(nodes: Callable[..., FakeNode]) -> None:
    leader = nodes(answer("done"))
    follower = nodes(
        lambda rid, body: [
            fail(rid, errors.NotLeaderError("no", leader_id="n2", leader_addr=leader.endpoint))
        ]
    )
    with Client([follower.endpoint], timeout=5, **FAST) as c:
        assert c.next_sequence("b") == "done"
        assert c.current_endpoint == leader.endpoint
        assert leader.endpoint in c.endpoints  # learned from the hint
        c.put("b", "k", "v")
    assert len(follower.requests) == 1  # the second call went straight to the leader
    first, second = leader.bodies()
    assert (first["op"], second["op"]) == ("next_sequence", "put")


def test_timeout_retries_next_endpoint_with_the_same_cid_and_seq(
    nodes: Callable[..., FakeNode],
) -> None:
    silent = nodes(drop)
    good = nodes(answer(None))
    with Client([silent.endpoint, good.endpoint], timeout=5, **FAST) as c:
        c.put("b", "k", "v")
        c.put("b", "k", "w")
    (lost,) = silent.requests
    probe, (rid1, retried), (_, second) = good.requests
    assert probe[1] == {"op": "status"}  # after the timeout: who leads? (in parallel)
    assert (lost[1]["cid"], lost[1]["seq"]) == (retried["cid"], retried["seq"])
    assert lost[1] == retried and lost[0] != rid1  # same body, new request id
    assert second["seq"] == retried["seq"] + 1


def test_a_node_that_closes_the_connection_fails_the_attempt_at_once(
    nodes: Callable[..., FakeNode],
) -> None:
    good = nodes(answer("done"))
    dying = nodes(answer({"id": "n1"}))
    # the attempt timeout outlasts the call: only the closed connection can end the attempt
    with Client([dying.endpoint, good.endpoint], timeout=20, attempt_timeout=60) as c:
        c.status(dying.endpoint)  # connected to it
        dying.handler = lambda rid, body: CRASH
        assert c.next_sequence("b") == "done"
        assert c.current_endpoint == good.endpoint
        assert c.next_sequence("b") == "done"  # the closed node is skipped from now on
    assert dying.crashed.is_set()
    assert [b["op"] for b in dying.bodies()] == ["status", "next_sequence"]
    first, second = good.bodies()
    assert first == {**second, "seq": first["seq"]} and second["seq"] == first["seq"] + 1


def test_a_hint_naming_a_node_whose_connection_closed_is_not_followed(
    nodes: Callable[..., FakeNode],
) -> None:
    """Just after a leader died, a follower that has not seen it yet names it: following
    that hint would wait out the attempt for a connection that does not come (the attempt
    timeout outlasts the call here: only skipping the hint ends the call in time)."""
    good = nodes(answer("done"))
    dying = nodes(answer({"id": "n1"}))
    stale = nodes(
        lambda rid, body: [
            fail(rid, errors.NotLeaderError("no", leader_id="n1", leader_addr=dying.endpoint))
        ]
    )
    endpoints = [dying.endpoint, stale.endpoint, good.endpoint]
    with Client(endpoints, timeout=20, attempt_timeout=60, backoff=(0.005, 0.02)) as c:
        c.status(dying.endpoint)  # connected to it
        dying.handler = lambda rid, body: CRASH
        assert c.next_sequence("b") == "done"
        assert c.current_endpoint == good.endpoint
    assert [b["op"] for b in dying.bodies()] == ["status", "next_sequence"]
    assert [b["op"] for b in stale.bodies()] == ["next_sequence"]


def test_after_a_timeout_the_others_are_asked_who_leads_and_the_call_goes_there(
    nodes: Callable[..., FakeNode],
) -> None:
    leader = nodes(answer("done"))

    def follower(rid: int, body: dict[str, Any]) -> list[bytes]:
        if body["op"] == "status":
            return [ok(rid, {"id": "n2", "role": "follower", "leader_addr": leader.endpoint})]
        return [fail(rid, errors.NoLeaderError("no leader"))]  # never a hint: only status

    def hung(rid: int, body: dict[str, Any]) -> list[bytes]:  # alive, but stuck on writes
        return [ok(rid, {"id": "n1"})] if body["op"] == "status" else []

    silent = nodes(hung)
    other = nodes(follower)
    with Client([silent.endpoint, other.endpoint], timeout=5, **FAST) as c:
        c.status(silent.endpoint)  # connected to it
        assert c.next_sequence("b") == "done"
        assert c.current_endpoint == leader.endpoint
    assert [b["op"] for b in other.bodies()] == ["status"]
    assert [b["op"] for b in leader.bodies()] == ["next_sequence"]


def test_late_answer_to_an_earlier_attempt_settles_the_call(
    nodes: Callable[..., FakeNode],
) -> None:
    seen: list[int] = []

    def handler(rid: int, body: dict[str, Any]) -> list[bytes]:
        seen.append(rid)
        if len(seen) == 2:  # answer the FIRST attempt now, never the second
            return [ok(seen[0], "first attempt")]
        return []

    node = nodes(handler)
    with Client(node.endpoint, timeout=5, **FAST) as c:
        assert c.next_sequence("b") == "first attempt"
    first, second = node.bodies()
    assert first == second


def test_stale_and_duplicate_replies_are_discarded(nodes: Callable[..., FakeNode]) -> None:
    def handler(rid: int, body: dict[str, Any]) -> list[bytes]:
        value = body["key"]
        return [
            ok(rid + 1000, b"stranger"),  # an id this client never used
            ok(rid - 1, b"old") if rid > 1 else ok(rid + 2000, b"x"),  # the previous call's
            ok(rid, value),
            ok(rid, value),  # duplicate: must not leak into the next call
        ]

    node = nodes(handler)
    with Client(node.endpoint, timeout=5) as c:
        for i in range(5):
            assert c.get("b", f"k{i}") == f"k{i}".encode()


def test_retryable_errors_back_off_then_succeed(nodes: Callable[..., FakeNode]) -> None:
    store = FakeStore()
    store.fail_with = [
        errors.NoLeaderError("election"),
        errors.ProposalDroppedError("dropped"),
        errors.UnavailableError("busy"),
        errors.RequestTimeoutError("slow commit"),
    ]
    node = nodes(store)
    with Client(node.endpoint, timeout=5, **FAST) as c:
        c.create_bucket("b")
    bodies = node.bodies()
    assert len(bodies) == 5 and all(b == bodies[0] for b in bodies)


def test_typed_errors_are_raised_without_retry(nodes: Callable[..., FakeNode]) -> None:
    node = nodes(FakeStore())
    with Client(node.endpoint, timeout=5) as c:
        with pytest.raises(errors.BucketNotFoundError):
            c.put("missing", "k", "v")
        c.create_bucket("b")
        c.put("b", "k", "v1")
        with pytest.raises(errors.ConditionFailedError) as exc:
            c.cas("b", "k", "wrong", "v2")
        assert exc.value.details["current"] == b"v1"
        c.cas("b", "k", "v1", "v2")
        assert c.get("b", "k") == b"v2"
    assert len(node.requests) == 6


def test_unknown_error_code_keeps_its_code(nodes: Callable[..., FakeNode]) -> None:
    node = nodes(lambda rid, body: [codec_error(rid, {"code": "from_the_future", "message": "m"})])
    with Client(node.endpoint, timeout=5) as c, pytest.raises(errors.BoltraftError) as exc:
        c.get("b", "k")
    assert (type(exc.value), exc.value.code) == (errors.BoltraftError, "from_the_future")


def codec_error(rid: int, wire: dict[str, Any]) -> bytes:
    from boltraft.transport import codec

    return codec.encode_frame("resp", rid, {"ok": False, "error": wire})


def test_call_timeout_when_nobody_answers(nodes: Callable[..., FakeNode]) -> None:
    silent = nodes(drop)
    with Client([silent.endpoint, dead_endpoint()], timeout=0.6, **FAST) as c:
        start = time.monotonic()
        with pytest.raises(errors.RequestTimeoutError) as exc:
            c.put("b", "k", "v")
        elapsed = time.monotonic() - start
    assert 0.5 < elapsed < 5
    assert exc.value.details["attempts"] >= 2
    assert exc.value.details["last_error"] in ("timeout", "unavailable")
    with (
        Client(dead_endpoint(), timeout=0.3, **FAST) as c,
        pytest.raises(errors.RequestTimeoutError) as exc,
    ):
        c.status()
    assert exc.value.details["last_error"] == "unavailable"


def test_scan_pages_and_scan_all(nodes: Callable[..., FakeNode]) -> None:
    store = FakeStore(page_limit=3)
    node = nodes(store)
    with Client(node.endpoint, timeout=5) as c:
        c.create_bucket("b")
        c.create_bucket(["b", "sub"])
        c.batch([{"op": "put", "bucket": "b", "key": f"k{i}", "value": f"v{i}"} for i in range(7)])
        page = c.scan("b", prefix="k", limit=2)
        assert page == Page([(b"k0", b"v0"), (b"k1", b"v1")], b"k1")
        assert c.scan("b", prefix="k", after=page.next, limit=2).items[0] == (b"k2", b"v2")
        everything = list(c.scan_all("b", page_size=2))
        assert [k for k, _ in everything] == [*(f"k{i}".encode() for i in range(7)), b"sub"]
        assert everything[-1] == (b"sub", None)
        rev = list(c.scan_all("b", start="k2", end="k5", reverse=True))
        assert [k for k, _ in rev] == [b"k4", b"k3", b"k2"]
        assert c.buckets() == [b"b"] and c.buckets("b") == [b"sub"]
    batch = node.bodies()[2]
    assert batch["ops"][0] == {"op": "put", "bucket": [b"b"], "key": b"k0", "value": b"v0"}
    assert "cid" in batch and "cid" not in batch["ops"][0]


def test_bad_arguments_fail_before_sending(nodes: Callable[..., FakeNode]) -> None:
    node = nodes(answer())
    with Client(node.endpoint, timeout=5) as c:
        for call in (
            lambda: c.put("b", 5, "v"),  # type: ignore[arg-type]
            lambda: c.put([], "k", "v"),
            lambda: c.put("b", "k", "v", if_value="x", if_absent=True),
            lambda: c.get("b", "k", read="eventual"),
            lambda: c.get("b", "k", max_lag=-1),
            lambda: c.scan("b", prefix="a", start="b"),
            lambda: c.scan("b", limit=-1),
            lambda: c.scan("b", limit=0),
            lambda: c.batch({"op": "put"}),  # type: ignore[arg-type]
            lambda: c.batch([{"no": "op"}]),
            lambda: c.get("b", "k", timeout=0),
        ):
            with pytest.raises(errors.BadRequestError):
                call()
    assert node.requests == []
    for bad in ("", ",", []):
        with pytest.raises(errors.BadRequestError):
            Client(bad)
    with pytest.raises(errors.BadRequestError):
        Client("tcp://127.0.0.1:1", client_id=b"")
    assert parse_endpoints("127.0.0.1:1, tcp://h:2,") == ["tcp://127.0.0.1:1", "tcp://h:2"]


def test_shared_between_threads(nodes: Callable[..., FakeNode]) -> None:
    node = nodes(lambda rid, body: [ok(rid, body["key"])])
    results: dict[int, list[bytes | None]] = {}
    with Client(node.endpoint, timeout=10) as c:

        def work(t: int) -> None:
            results[t] = [c.get("b", f"{t}-{i}") for i in range(25)]

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
    assert results == {t: [f"{t}-{i}".encode() for i in range(25)] for t in range(4)}


def test_status_pins_an_endpoint_and_closed_client_refuses(
    nodes: Callable[..., FakeNode],
) -> None:
    a = nodes(answer({"id": "n1"}))
    b = nodes(answer({"id": "n2"}))
    c = Client([a.endpoint, b.endpoint], timeout=5)
    assert c.status()["id"] == "n1"
    assert c.status(b.endpoint)["id"] == "n2"
    c.close()
    c.close()
    with pytest.raises(errors.UnavailableError):
        c.status()


def test_package_exports_the_client() -> None:
    import boltraft

    assert boltraft.Client is Client
