"""Hostile input at the node's edge (issue 19), fast, on the in-memory world of ``memworld``:
each test hands a node real frames (msgpack bytes through the real codec, as the transport
does; a frame the codec refuses is counted and dropped there) or Messages no correct peer
sends, then checks that the node did not change what it must not and still serves. The same
frames against real processes: ``tests/integration/test_hostile.py``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from memworld import World

from boltraft.errors import ProtocolError
from boltraft.raft.types import MAX_INDEX, MAX_TERM, Entry, EntryType, Message, MessageType
from boltraft.transport import codec
from boltraft.transport.zmq_transport import Incoming

ROUNDS = 200  # loop iterations a test waits for an outcome, at most


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path, sm="twin")
    yield w
    w.close()


def _inject(world: World, node_id: str, frame: list[Any], sender: bytes = b"x") -> bool:
    """Hands the msgpack ``frame`` to ``node_id`` as its transport would; False when the
    codec refuses it (the transport counts and drops it)."""
    try:
        f = codec.decode_frame(msgpack.packb(frame))
    except ProtocolError:
        return False
    world.nets[node_id].inbox.append(Incoming(f.kind, f.payload, sender, None))
    return True


def _raw(m: Message) -> list[Any]:
    return codec.encode_messages([m])[0]


def _serves(world: World, key: str) -> None:
    """Asserts a write through the leader commits and every node applies it."""
    lead = world.elect()
    rid = 10_000 + len(world.responses(lead))
    world.request(lead, rid, {"op": "create_bucket", "bucket": "h", "if_not_exists": True})
    world.request(lead, rid + 1, {"op": "put", "bucket": "h", "key": key, "value": b"ok"})
    for _ in range(ROUNDS):
        world.step()
        resps = world.responses(lead)
        if rid + 1 in resps and all(
            n.applied >= world.nodes[lead].commit for n in world.nodes.values()
        ):
            break
    assert resps[rid + 1].ok, resps[rid + 1]
    for node in world.nodes.values():
        (value,) = node.sm.read([{"op": "get", "bucket": "h", "key": key}])
        assert value == b"ok"


# --- finding 6 -------------------------------------------------------------------------------
@pytest.mark.parametrize("term", [2**64 - 1, 2**63, MAX_INDEX, MAX_TERM + 1])
def test_term_past_the_limit_is_refused_by_codec_and_core(world: World, term: int) -> None:
    lead = world.elect()
    terms = {i: n.raw.status().term for i, n in world.nodes.items()}
    for node_id in world.nodes:
        other = next(i for i in world.nodes if i != node_id)
        hb = Message(MessageType.HEARTBEAT, node_id, other, term=term)
        assert not _inject(world, node_id, [1, "raft", [_raw(hb)]])
        # the core refuses it too, had it come past the codec
        world.nets[node_id].inbox.append(Incoming("raft", [hb], other.encode(), None))
    world.settle()
    assert {i: n.raw.status().term for i, n in world.nodes.items()} == terms
    assert all(n.counters["step_errors"] >= 1 for n in world.nodes.values())
    assert world.leader() == lead
    _serves(world, "after-term")


def test_index_past_the_limit_is_refused_by_the_codec() -> None:
    for field, value in ((3, MAX_TERM + 1), (4, MAX_TERM + 1), (5, MAX_INDEX + 1), (7, 2**63)):
        raw = _raw(Message(MessageType.APP, "n1", "n2", term=1))
        raw[field] = value
        with pytest.raises(ProtocolError):
            codec.decode_frame(msgpack.packb([1, "raft", [raw]]))
    raw = _raw(Message(MessageType.APP, "n1", "n2", term=1))
    raw[6] = [[1, MAX_INDEX + 1, 0, b""]]
    with pytest.raises(ProtocolError):
        codec.decode_frame(msgpack.packb([1, "raft", [raw]]))


# --- finding 7 -------------------------------------------------------------------------------
def test_append_response_past_the_leaders_log_is_refused(world: World) -> None:
    lead = world.elect()
    node = world.nodes[lead]
    follower = next(i for i in world.nodes if i != lead)
    term = node.raw.status().term
    for reject in (False, True):
        resp = Message(
            MessageType.APP_RESP,
            lead,
            follower,
            term=term,
            index=10**9,
            reject=reject,
            reject_hint=10**9,
        )
        assert _inject(world, lead, [1, "raft", [_raw(resp)]], follower.encode())
        world.settle()
        assert node.is_leader and node.raw.status().term == term
        assert node.raw.status().progress[follower].match < 10**6
    assert node.counters["step_errors"] == 2
    _serves(world, "after-app-resp")


# --- finding 9 -------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", ["gap", "backwards", "term_above", "term_below"])
def test_append_whose_entries_do_not_follow_its_index_is_refused(world: World, shape: str) -> None:
    lead = world.elect()
    follower = next(i for i in world.nodes if i != lead)
    node = world.nodes[follower]
    term = node.raw.status().term
    last = node.logstore.last_index()
    ents = {
        "gap": [Entry(term, last + 10**6, EntryType.NORMAL, b"")],
        "backwards": [
            Entry(term, last + 1, EntryType.NORMAL, b""),
            Entry(term, last, EntryType.NORMAL, b""),
        ],
        "term_above": [Entry(term + 1, last + 1, EntryType.NORMAL, b"")],
        "term_below": [Entry(term - 1 if term > 1 else 0, last + 1, EntryType.NORMAL, b"")],
    }[shape]
    app = Message(
        MessageType.APP,
        follower,
        lead,
        term=term,
        log_term=node.logstore.term(last),
        index=last,
        entries=ents,
        commit=last + len(ents),
    )
    assert (
        _inject(world, follower, [1, "raft", [_raw(app)]], lead.encode()) or shape == "term_below"
    )
    if shape == "term_below":  # the codec refuses term 0; the core refuses the lower term
        world.nets[follower].inbox.append(Incoming("raft", [app], lead.encode(), None))
    world.settle()
    assert node.logstore.last_index() == last or node.logstore.last_index() < 10**6
    assert node.counters["step_errors"] == 1
    _serves(world, f"after-{shape}")


# --- finding 8 -------------------------------------------------------------------------------
def test_forwarded_write_whose_op_is_not_a_string_is_answered(world: World) -> None:
    lead = world.elect()
    follower = next(i for i in world.nodes if i != lead)
    bodies: list[Any] = [{"op": [1]}, {"op": {"a": 1}}, {"op": 5}, {"op": None}]
    items = [[i, body] for i, body in enumerate(bodies)]
    assert _inject(world, lead, [1, "fwd", items], follower.encode())
    assert not _inject(world, lead, [1, "fwd", [[-1, {"op": "put"}]]], follower.encode())
    world.settle()
    assert world.nodes[lead].service.stats["bad_requests"] >= len(bodies)
    _serves(world, "after-fwd")


@pytest.mark.parametrize("bad", ["\x00x", "a" * 300, "n\n4", ""])
def test_join_with_an_unusable_id_is_refused(world: World, bad: str) -> None:
    lead = world.elect()
    world.request(lead, 7, {"op": "join", "id": bad, "addr": "tcp://127.0.0.1:1"})
    world.settle()
    resp = world.responses(lead)[7]
    assert not resp.ok and resp.error is not None and resp.error.code == "bad_request"
    assert sorted(world.nodes[lead].conf_state.members()) == sorted(world.nodes)
    _serves(world, "after-join")


def _offer(world: World, to: str, holder: str, **changes: Any) -> dict[str, Any]:
    node = world.nodes[to]
    meta = {
        "term": node.raw.status().term,
        "index": 10**6,
        "log_term": 1,
        "voters": sorted(world.nodes),
        "learners": [],
        "addrs": {i: n.cfg.listen for i, n in world.nodes.items()},
        "data_index": 10**6,
        "size": 4096,
        "sha256": "0" * 64,
        "chunk": 1024,
        "addr": world.nodes[holder].cfg.listen if holder in world.nodes else "tcp://h:1",
    }
    meta.update(changes)
    return meta


@pytest.mark.parametrize(
    ("sender", "changes"),
    [
        (b"\x00k\x8bEm", {}),  # a routing id ZeroMQ made up for a client: not a node id
        (b"", {}),
        (b"n9", {"addr": "not an address"}),
        (b"n9", {"addr": "tcp://127.0.0.1:99999"}),
        (b"n9", {"addr": 5}),
        (b"n9", {"addrs": {"n1": "tcp://h:1", "\x00": "tcp://h:2"}}),
        (b"n9", {"addrs": {"n1": "ipc:///tmp/x"}}),
        (b"n9", {"voters": ["n1", 7]}),
        (b"n9", {"voters": []}),
        (b"n9", {"size": 0}),
        (b"n9", {"size": 2**64}),
        (b"n9", {"chunk": 10**9}),
        (b"n9", {"term": MAX_TERM + 1}),
        (b"n9", {"index": "5"}),
        (b"n9", {"sha256": "xyz"}),
    ],
)
def test_offer_from_a_bad_holder_or_with_bad_fields_is_dropped(
    world: World, sender: bytes, changes: dict[str, Any]
) -> None:
    lead = world.elect()
    follower = next(i for i in world.nodes if i != lead)
    node = world.nodes[follower]
    peers = world.nets[follower].peers()
    sid = "1000000-0000000000000000"
    meta = _offer(world, follower, "n9", **changes)
    world.nets[follower].inbox.append(Incoming("snap", ["offer", sid, meta], sender, None))
    world.settle()
    transfers = node.ops.transfers
    assert transfers.stats["bad_offers"] == 1
    assert transfers.status().get("receiving") is None
    assert world.nets[follower].peers() == peers
    _serves(world, "after-offer")


# --- the removed notice ----------------------------------------------------------------------
def _notice(world: World, to: str, by: str, term: int, peer: str | None) -> None:
    payload = {"by": by, "term": term}
    sender = (peer or "client").encode()
    world.nets[to].inbox.append(Incoming("removed", payload, sender, peer))


def test_removed_notice_that_is_not_the_leaders_halts_no_node(world: World) -> None:
    lead = world.elect()
    term = world.nodes[lead].raw.status().term
    for node_id, node in world.nodes.items():
        other = next(i for i in world.nodes if i not in (node_id, lead))
        _notice(world, node_id, lead, term, None)  # a client's connection naming the leader
        _notice(world, node_id, "x", term, "x")  # not a member
        _notice(world, node_id, other, term, other)  # a member that does not lead
        _notice(world, node_id, lead, term - 1, lead)  # an older term
        _notice(world, node_id, node_id, term, node_id)  # itself
        world.settle()
        assert node.ops.halted is None, node.ops.halted
        assert node.counters["ignored_removed_notices"] == 5
    _serves(world, "after-notices")
    for node_id in world.nodes:
        assert not (world.nodes[node_id].cfg.data / "removed.json").exists()


def test_removed_notice_from_the_leaders_connection_halts(world: World) -> None:
    lead = world.elect()
    follower = next(i for i in world.nodes if i != lead)
    term = world.nodes[lead].raw.status().term
    _notice(world, follower, lead, term, lead)
    world.settle(1)
    assert world.nodes[follower].ops.halted is not None


# --- findings 1 and 2: nesting depth -----------------------------------------------------------
def _nested(depth: int) -> Any:
    v: Any = b"x"
    for _ in range(depth):
        v = [v]
    return v


@pytest.mark.parametrize("depth", [1000, codec.MAX_BODY_DEPTH])
def test_deeply_nested_request_is_answered_malformed(world: World, depth: int) -> None:
    """A body nesting past MAX_BODY_DEPTH (the body itself counts: ``key`` adds one) is
    refused by the codec with its request id, so the transport answers it; the node never
    sees it."""
    lead = world.elect()
    follower = next(i for i in world.nodes if i != lead)
    bodies = [
        {"op": "get", "bucket": "h", "key": _nested(depth)},
        {"op": "put", "bucket": "h", "key": b"k", "value": _nested(depth)},
        {"op": "scan", "bucket": _nested(depth)},
    ]
    for node_id in (lead, follower):
        for rid, body in enumerate(bodies):
            try:
                codec.decode_frame(msgpack.packb([1, "req", rid, body]))
            except ProtocolError as err:
                assert err.code == "malformed_frame" and err.details["request_id"] == rid
            else:
                raise AssertionError(f"a body {depth} deep was accepted")
        items = [[rid, body] for rid, body in enumerate(bodies)]
        assert not _inject(world, node_id, [1, "reqs", items])
    _serves(world, "after-depth")


def test_request_within_the_depth_limit_is_served_through_a_follower(world: World) -> None:
    """The deepest body a node accepts still travels in a fwd frame to the leader."""
    lead = world.elect()
    follower = next(i for i in world.nodes if i != lead)
    _serves(world, "setup")
    body = {"op": "put", "bucket": "h", "key": b"k", "value": _nested(codec.MAX_BODY_DEPTH - 2)}
    assert _inject(world, follower, [1, "req", 77, body], b"c")
    for _ in range(ROUNDS):
        world.step()
        if 77 in world.responses(follower):
            break
    resp = world.responses(follower)[77]
    assert not resp.ok and resp.error is not None and resp.error.code == "malformed_command"
    _serves(world, "after-forward")


def test_a_body_that_cannot_be_forwarded_is_answered(world: World) -> None:
    """Defence behind the codec: a body the follower cannot encode (here an object no
    client can send) is answered bad_request; the other writes of the frame go on."""
    lead = world.elect()
    follower = next(i for i in world.nodes if i != lead)
    _serves(world, "setup")
    world.request(follower, 1, {"op": "put", "bucket": "h", "key": b"a", "value": object()})
    world.request(follower, 2, {"op": "put", "bucket": "h", "key": b"b", "value": b"v"})
    for _ in range(ROUNDS):
        world.step()
        if {1, 2} <= world.responses(follower).keys():
            break
    resps = world.responses(follower)
    assert resps[1].error is not None and resps[1].error.code == "bad_request"
    assert resps[2].ok
