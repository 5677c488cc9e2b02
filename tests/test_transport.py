"""PeerTransport over real ZeroMQ sockets on 127.0.0.1 (random ports)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import msgpack
import pytest
import zmq

from boltraft import errors
from boltraft.raft.types import Entry, Message, MessageType
from boltraft.transport import codec
from boltraft.transport.zmq_transport import (
    PEER_DOWN,
    Incoming,
    PeerTransport,
    drain,
)

ANY = "tcp://127.0.0.1:*"
DEADLINE = 10.0


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


@pytest.fixture
def make() -> Iterator[Callable[..., PeerTransport]]:
    made: list[PeerTransport] = []

    def _make(node_id: str, peers: dict[str, str] | None = None, **kw: object) -> PeerTransport:
        t = PeerTransport(node_id, ANY, peers, **kw)  # type: ignore[arg-type]
        made.append(t)
        return t

    yield _make
    for t in made:
        t.close()


def hb(to: str, frm: str, term: int = 1, commit: int = 0) -> Message:
    return Message(MessageType.HEARTBEAT, to, frm, term=term, commit=commit)


def recv_until(
    t: PeerTransport,
    want: Callable[[list[Incoming]], bool],
    resend: Callable[[], object] | None = None,
) -> list[Incoming]:
    """Returns everything ``t`` received until ``want(received)``; fails after DEADLINE.

    ``resend`` runs before each poll: the first sends over a DEALER are dropped until its
    connection completes (IMMEDIATE), exactly as Raft's retries expect."""
    got: list[Incoming] = []
    end = time.monotonic() + DEADLINE
    while not want(got):
        assert time.monotonic() < end, f"timed out; got {got!r}; counters {t.counters()}"
        if resend is not None:
            resend()
        got.extend(t.recv(timeout=0.02))
    return got


def connected_pair(make: Callable[..., PeerTransport]) -> tuple[PeerTransport, PeerTransport]:
    a = make("n1")
    b = make("n2", {"n1": a.endpoint})
    a.add_peer("n2", b.endpoint)
    recv_until(b, bool, lambda: a.send([hb("n2", "n1")]))
    recv_until(a, bool, lambda: b.send([hb("n1", "n2")]))
    b.recv(0.05)
    return a, b


def test_one_frame_per_peer_per_flush(make: Callable[..., PeerTransport]) -> None:
    a, b = connected_pair(make)
    c = make("n3", {"n1": a.endpoint})
    a.add_peer("n3", c.endpoint)
    recv_until(c, bool, lambda: a.send([hb("n3", "n1")]))
    before = a.counters()
    app = Message(MessageType.APP, "n2", "n1", 2, entries=[Entry(2, 1, 0, b"x" * 100)])
    a.queue([hb("n2", "n1", commit=1), hb("n3", "n1", commit=1)])
    a.queue([app, hb("n2", "n1", commit=2)])
    assert a.flush() == 4
    assert a.flush() == 0  # nothing left
    after = a.counters()
    assert after["sent"] - before["sent"] == 2  # one frame to n2, one to n3
    assert after["sent_messages"] - before["sent_messages"] == 4
    (got,) = recv_until(b, bool)
    assert (got.kind, got.sender, got.peer) == ("raft", b"n1", None)
    assert [m.commit for m in got.payload] == [1, 0, 2]  # order kept, one frame
    assert got.payload[1].entries == [Entry(2, 1, 0, b"x" * 100)]
    (got,) = recv_until(c, bool)
    assert [m.commit for m in got.payload] == [1]


def test_unknown_and_unreachable_peers_are_dropped_and_counted(
    make: Callable[..., PeerTransport],
) -> None:
    a = make("n1")
    # a port held bound and never listening: connections to it are refused, and no other
    # process can bind it meanwhile (a freed port could be taken by a test running beside)
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    port = held.getsockname()[1]
    a.add_peer("n9", f"tcp://127.0.0.1:{port}")
    start = time.monotonic()
    for _ in range(50):
        assert a.send([hb("n9", "n1"), hb("n7", "n1")]) == 0
    assert time.monotonic() - start < 2.0  # never blocks
    c = a.counters()
    assert (c["dropped"], c["dropped_messages"], c["unknown_peer"], c["sent"]) == (50, 100, 50, 0)
    assert a.send_frame("n7", b"x") is False
    assert a.send_frame("n9", b"x") is False
    held.close()


def test_full_queue_drops_instead_of_blocking(
    make: Callable[..., PeerTransport], ctx: zmq.Context
) -> None:
    a = make("n1", sndhwm=2)
    b = ctx.socket(zmq.ROUTER)  # a peer that never reads: its queue and the TCP buffers fill
    b.setsockopt(zmq.LINGER, 0)
    b.setsockopt(zmq.RCVHWM, 2)
    port = b.bind_to_random_port("tcp://127.0.0.1")
    a.add_peer("n2", f"tcp://127.0.0.1:{port}")
    recv_until(a, lambda got: a.connected("n2"))
    before = a.counters()
    big = Message(MessageType.APP, "n2", "n1", 1, entries=[Entry(1, 1, 0, b"x" * (1 << 20))])
    end = time.monotonic() + DEADLINE
    while a.counters()["dropped"] == before["dropped"]:
        assert time.monotonic() < end, a.counters()
        a.send([big])
    assert a.counters()["sent"] > before["sent"]


def test_bad_frames_are_counted_and_never_fatal(
    make: Callable[..., PeerTransport], ctx: zmq.Context
) -> None:
    node = make("n1", max_frame_size=4096)
    raw = ctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.setsockopt(zmq.RCVTIMEO, int(DEADLINE * 1000))
    raw.connect(node.endpoint)
    raw.send(b"\xc1garbage")
    raw.send_multipart([b"two", b"parts"])
    raw.send(b"\x00" * 5000)  # oversized
    raw.send(msgpack.packb([7, "raft", []]))  # unknown version, no request id
    raw.send(msgpack.packb([1, "nope"]))  # unknown kind
    raw.send(msgpack.packb([1, "raft", [[99]]]))  # malformed raft batch
    raw.send(msgpack.packb([1, "req", 5, {"no": "op"}]))  # bad request: answered
    raw.send(msgpack.packb([2, "req", 6, {"op": "get"}]))  # unknown version: answered
    raw.send(codec.encode_request(7, {"op": "status"}))  # a good one still gets through
    got = recv_until(node, bool)
    assert [(g.kind, g.payload.request_id) for g in got] == [("req", 7)]
    c = node.counters()
    assert (c["malformed"], c["oversized"], c["unsupported"], c["bad_request"]) == (3, 1, 3, 1)
    assert c["received"] == 1
    replies = [codec.decode_frame(raw.recv()).payload for _ in range(2)]
    assert [(r.request_id, r.error.code) for r in replies] == [
        (5, "bad_request"),
        (6, "unsupported_protocol"),
    ]
    assert node.reply(got[0].sender, codec.encode_result(7, {"role": "leader"}))
    assert codec.decode_frame(raw.recv()).payload.result == {"role": "leader"}
    raw.close(0)


def test_reply_to_a_gone_client_is_counted(make: Callable[..., PeerTransport]) -> None:
    node = make("n1")
    assert node.reply(b"\x00nobody", codec.encode_result(1, None)) is False
    assert node.counters()["reply_dropped"] == 1


def test_peer_address_update_and_removal(make: Callable[..., PeerTransport]) -> None:
    a, b = connected_pair(make)
    b2 = make("n2")  # n2 "moved" to another address
    a.set_peer("n2", b.endpoint)  # same address: nothing changes
    assert a.peers() == {"n2": b.endpoint}
    a.set_peer("n2", b2.endpoint)
    assert a.peers() == {"n2": b2.endpoint}
    recv_until(b2, bool, lambda: a.send([hb("n2", "n1", commit=5)]))
    assert b.recv(0.1) == []  # the old address gets nothing more
    assert a.remove_peer("n2") is True
    assert a.remove_peer("n2") is False
    assert a.peers() == {}
    assert a.send([hb("n7", "n1")]) == 0  # neither in the table nor connected
    assert a.counters()["unknown_peer"] >= 1


def test_a_peer_not_in_the_table_is_answered_on_the_connection_it_opened(
    make: Callable[..., PeerTransport],
) -> None:
    # a node whose membership does not name its leader (a joining node starts from the
    # cluster's log base, which may predate the leader) must still answer it
    a = make("n1")  # knows nobody
    b = make("n2", {"n1": a.endpoint})  # b's DEALER connects to a's ROUTER as "n2"
    (got,) = recv_until(a, bool, lambda: b.send([hb("n1", "n2")]))
    assert got.sender == b"n2" and a.peers() == {}
    # b's connection to a is up (its frame came in): one send, no resend that could make two
    a.send([hb("n2", "n1", commit=7)])
    (back,) = recv_until(b, bool)
    assert (back.kind, back.sender, back.peer) == ("raft", b"n1", "n1")
    assert [m.commit for m in back.payload] == [7]
    assert a.send_frame("n2", codec.encode_raft([])) is True
    c = a.counters()
    assert c["sent_back"] == 2 and c["unknown_peer"] == 0


def test_a_busy_transport_still_sees_frames_on_its_dealers_and_lost_connections(
    make: Callable[..., PeerTransport], ctx: zmq.Context
) -> None:
    """While frames keep coming on the ROUTER a wait watches it alone (module docstring,
    "Waiting"), and every WATCH_S it still looks at the DEALERs and their monitors."""
    a = make("n1")  # knows nobody: it answers n2 on the connection n2 opened
    b = make("n2", {"n1": a.endpoint})
    client = ctx.socket(zmq.DEALER)
    client.setsockopt(zmq.LINGER, 0)
    client.connect(b.endpoint)
    request = codec.encode_frame(codec.KIND_REQ, 1, {"op": "status"})

    def busy() -> None:
        client.send(request)

    recv_until(a, bool, lambda: b.send([hb("n1", "n2")]))
    recv_until(b, lambda got: any(f.kind == "req" for f in got), busy)
    a.send([hb("n2", "n1", commit=7)])  # comes back on b's DEALER
    got = recv_until(b, lambda got: any(f.kind == "raft" for f in got), busy)
    assert [m.commit for f in got if f.kind == "raft" for m in f.payload] == [7]
    assert any(f.kind == "req" for f in got)  # it was busy meanwhile
    a.close()  # b's connection to n1 closes
    got = recv_until(b, lambda got: any(f.kind == PEER_DOWN for f in got), busy)
    assert [f.payload for f in got if f.kind == PEER_DOWN] == ["n1"]
    assert any(f.kind == "req" for f in got)
    client.close(0)


def test_replies_reach_a_restarted_peer_with_the_same_identity(
    make: Callable[..., PeerTransport],
) -> None:
    a, b = connected_pair(make)
    b.close()
    b_again = make("n2", {"n1": a.endpoint})
    got = recv_until(a, bool, lambda: b_again.send([hb("n1", "n2", term=9)]))
    assert got[0].sender == b"n2"

    def answer() -> None:
        a.reply(b"n2", codec.encode_result(1, "hello"))

    back = recv_until(b_again, lambda g: any(i.kind == "resp" for i in g), answer)
    resp = next(i for i in back if i.kind == "resp")
    assert (resp.peer, resp.payload.result) == ("n1", "hello")


def test_outgoing_batches_over_the_frame_limit_are_split(
    make: Callable[..., PeerTransport],
) -> None:
    a, b = connected_pair(make)
    a.max_frame_size = 3000
    msgs = [
        Message(MessageType.APP, "n2", "n1", 1, commit=i, entries=[Entry(1, 1, 0, b"x" * 1000)])
        for i in range(6)
    ]
    before = a.counters()
    giant = Message(MessageType.APP, "n2", "n1", entries=[Entry(1, 1, 0, b"y" * 4000)])
    assert a.send([*msgs, giant]) == 6
    after = a.counters()
    assert after["sent"] - before["sent"] >= 3
    assert after["dropped_messages"] - before["dropped_messages"] == 1
    got = recv_until(b, lambda g: sum(len(i.payload) for i in g) >= 6)
    assert [m.commit for i in got for m in i.payload] == list(range(6))


def test_invalid_arguments_and_closed_use(make: Callable[..., PeerTransport]) -> None:
    a = make("n1")
    with pytest.raises(errors.BadRequestError):
        a.add_peer("n1", "tcp://127.0.0.1:1")
    with pytest.raises(errors.BadRequestError):
        a.add_peer("n2", "not-an-address")
    with pytest.raises(errors.BadRequestError):
        a.add_peer("", "tcp://127.0.0.1:1")
    with pytest.raises(errors.BadRequestError):
        PeerTransport("\x00bad", ANY)
    with pytest.raises(errors.UnavailableError):
        PeerTransport("n5", a.endpoint)  # address in use
    a.close()
    a.close()
    with pytest.raises(errors.UnavailableError):
        a.send([hb("n2", "n1")])
    with pytest.raises(errors.UnavailableError):
        a.recv()


def test_drain_yields_whole_waiting_messages_up_to_the_limit_and_never_blocks() -> None:
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    dealer = ctx.socket(zmq.DEALER)
    try:
        router.bind("inproc://drain")
        dealer.connect("inproc://drain")
        assert list(drain(router, 10)) == []  # nothing waiting: no zmq.Again escapes
        for i in range(5):
            dealer.send_multipart([b"a%d" % i, b"b%d" % i])
        assert router.poll(1000)
        first = list(drain(router, 2))
        assert [p[1:] for p in first] == [[b"a0", b"b0"], [b"a1", b"b1"]]  # identity first
        rest = list(drain(router, 10))
        assert [p[1:] for p in rest] == [[b"a%d" % i, b"b%d" % i] for i in range(2, 5)]
        assert list(drain(router, 10)) == []
        assert list(drain(router, 0)) == []
    finally:
        router.close(0)
        dealer.close(0)
        ctx.term()


_PEER_PROCESS = """
import sys
from boltraft.transport.zmq_transport import PeerTransport
t = PeerTransport("n2", sys.argv[1])
print(t.endpoint, flush=True)
while True:
    t.recv(0.1)
"""


def _peer_process(addr: str) -> tuple[subprocess.Popen[str], str]:
    """Starts a process whose transport (node n2) listens at ``addr``; returns it and its
    bound endpoint."""
    p = subprocess.Popen(
        [sys.executable, "-c", _PEER_PROCESS, addr], stdout=subprocess.PIPE, text=True
    )
    assert p.stdout is not None
    return p, p.stdout.readline().strip()


def test_a_killed_peer_process_comes_out_as_one_peer_down(
    make: Callable[..., PeerTransport],
) -> None:
    a = make("n1")
    proc, ep = _peer_process(ANY)
    try:
        a.add_peer("n2", ep)
        recv_until(a, lambda got: a.connected("n2"))
        assert a.counters()["peers_connected"] == 1
        proc.kill()
        proc.wait()
        got = recv_until(a, lambda got: any(f.kind == PEER_DOWN for f in got))
        down = [f for f in got if f.kind == PEER_DOWN]
        assert down == [Incoming(PEER_DOWN, "n2", b"n2", "n2")]
        for _ in range(3):  # it keeps reconnecting in vain: no second report
            assert not [f for f in a.recv(0.2) if f.kind == PEER_DOWN]
        c = a.counters()
        assert (c["peer_disconnects"], c["peers_connected"]) == (1, 0)
        assert not a.connected("n2")
        proc, _ = _peer_process(ep)  # back at the same address
        recv_until(a, lambda got: a.connected("n2"))
        assert a.counters()["peers_connected"] == 1
    finally:
        proc.kill()
        proc.wait()


def test_removing_a_peer_reports_no_peer_down(
    make: Callable[..., PeerTransport], ctx: zmq.Context
) -> None:
    a = make("n1")
    b = make("n2", {"n1": a.endpoint})
    a.add_peer("n2", b.endpoint)
    recv_until(a, lambda got: a.connected("n2"), resend=lambda: b.recv(0.0))
    a.remove_peer("n2")  # our own close: not a peer going down
    b.close()
    assert not [f for f in a.recv(0.2) if f.kind == PEER_DOWN]
    assert a.counters()["peer_disconnects"] == 0


def test_frames_from_a_lost_peer_are_dropped_until_its_connection_is_back(
    make: Callable[..., PeerTransport], ctx: zmq.Context
) -> None:
    """Its two connections close one after the other: what still comes in on the other one
    left the peer before it was lost (a dead leader's last heartbeat must not revive it)."""
    a = make("n1")
    its_router = ctx.socket(zmq.ROUTER)  # where our DEALER to n2 connects
    its_router.setsockopt(zmq.LINGER, 0)
    port = its_router.bind_to_random_port("tcp://127.0.0.1")
    its_dealer = ctx.socket(zmq.DEALER)  # n2's own DEALER to us
    its_dealer.setsockopt(zmq.LINGER, 0)
    its_dealer.setsockopt(zmq.IDENTITY, b"n2")
    its_dealer.connect(a.endpoint)
    a.add_peer("n2", f"tcp://127.0.0.1:{port}")
    frame = codec.encode_raft([hb("n1", "n2")])
    got = recv_until(a, lambda got: a.connected("n2") and got, lambda: its_dealer.send(frame))
    assert got[0].kind == "raft"
    its_router.close(0)  # one of n2's connections closes...
    recv_until(a, lambda got: any(f.kind == PEER_DOWN for f in got))
    its_dealer.send(frame)  # ...and the other still delivers what n2 sent before
    end = time.monotonic() + DEADLINE
    while a.counters()["from_lost_peer"] == 0:
        assert time.monotonic() < end, "the frame never came"
        assert not [f for f in a.recv(0.05) if f.kind == "raft"]
    its_router = ctx.socket(zmq.ROUTER)
    its_router.setsockopt(zmq.LINGER, 0)
    its_router.bind(f"tcp://127.0.0.1:{port}")  # n2 is back: our DEALER reconnects
    got = recv_until(
        a, lambda got: any(f.kind == "raft" for f in got), lambda: its_dealer.send(frame)
    )
    assert a.connected("n2")
    its_router.close(0)
    its_dealer.close(0)


def test_one_recv_takes_frames_up_to_its_byte_budget_and_keeps_the_rest_in_its_inbox(
    make: Callable[..., PeerTransport], ctx: zmq.Context
) -> None:
    """Of a greedy client's 10 MiB frames one call hands over two (RECV_BYTES); what it
    read beyond waits in the inbox up to the client's budget, and the rest is refused
    (counted): every frame is handed over or refused, and the other client's gets through."""
    node = make("n1")
    big = codec.encode_frame(codec.KIND_REQ, 1, {"op": "status", "pad": b"x" * (10 << 20)})
    small = codec.encode_frame(codec.KIND_REQ, 2, {"op": "status"})
    greedy, other = ctx.socket(zmq.DEALER), ctx.socket(zmq.DEALER)
    for s in (greedy, other):
        s.setsockopt(zmq.LINGER, 0)
        s.connect(node.endpoint)
    for _ in range(8):
        greedy.send(big)
    other.send(small)
    end = time.monotonic() + DEADLINE
    got: list[Incoming] = []

    def bigs() -> int:
        return sum(1 for f in got if f.payload[0] == 1)

    while bigs() + node.counters()["inbox_refused"] < 8 or len(got) == bigs():
        assert time.monotonic() < end, f"got {len(got)} frames; {node.counters()}"
        batch = node.recv(timeout=0.05)
        assert sum(1 for f in batch if f.payload[0] == 1) <= 2  # 16 MiB: two 10 MiB frames
        got += batch
    assert bigs() + node.counters()["inbox_refused"] == 8
    assert [f.payload[0] for f in got].count(2) == 1


def test_pending_sees_a_frame_on_the_router_or_in_the_inbox_until_it_is_read(
    make: Callable[..., PeerTransport], ctx: zmq.Context
) -> None:
    a, b = connected_pair(make)
    while b.recv(0.02):  # the heartbeats connected_pair sent more than once
        pass
    assert not b.pending()
    a.send([hb("n2", "n1", commit=7)])
    end = time.monotonic() + DEADLINE
    while not b.pending():  # the frame travels: pending turns True once it waits
        assert time.monotonic() < end, b.counters()
        time.sleep(0.001)
    (got,) = b.recv(0.0)
    assert [m.commit for m in got.payload] == [7]
    assert not b.pending()
    # frames one recv did not hand over wait in the inbox: pending while they do (the
    # three requests are sent again until one recv found them all arrived at once)
    client = ctx.socket(zmq.DEALER)
    client.setsockopt(zmq.LINGER, 0)
    client.connect(b.endpoint)
    kept_seen = False
    while not kept_seen:
        assert time.monotonic() < end, b.counters()
        for rid in (1, 2, 3):
            client.send(codec.encode_frame(codec.KIND_REQ, rid, {"op": "status"}))
        taken: list[Incoming] = []
        while len(taken) < 3:
            assert time.monotonic() < end, b.counters()
            taken += b.recv(timeout=0.02, max_frames=1)
            if b.counters()["inbox_frames"]:
                kept_seen = True
                assert b.pending()
        assert [f.payload[0] for f in taken] == [1, 2, 3] and not b.pending()
    b.close()
    with pytest.raises(errors.UnavailableError):
        b.pending()
