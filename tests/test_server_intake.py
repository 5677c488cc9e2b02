"""The node's byte budget of unanswered client requests (``boltraft.server.intake``): what
one connection and all of them may hold, the one frame a connection holding nothing always
gets, the release of each answered request, and the ``overloaded`` refusal that charges
nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from memworld import World

from boltraft.errors import OverloadedError
from boltraft.server.intake import Intake
from boltraft.transport import codec
from boltraft.transport.zmq_transport import Incoming


def test_a_connection_is_refused_past_its_budget_until_its_answers_come() -> None:
    intake = Intake(per_client=100, total=1000)
    assert intake.admit(b"a", [1], 60) is None
    err = intake.admit(b"a", [2], 60)
    assert isinstance(err, OverloadedError) and err.code == "overloaded"
    assert err.details["limit"] == 100 and "this connection" in err.message
    assert intake.bytes(b"a") == 60  # the refused frame charged nothing
    assert intake.admit(b"b", [1], 60) is None  # another connection has its own budget
    intake.release(b"a", 1)
    assert intake.bytes(b"a") == 0
    assert intake.admit(b"a", [2], 60) is None
    st = intake.status()
    assert (st["bytes"], st["clients"], st["refused_frames"], st["refused_requests"]) == (
        120,
        2,
        1,
        1,
    )


def test_a_connection_holding_nothing_gets_one_frame_larger_than_its_budget() -> None:
    intake = Intake(per_client=100, total=1000)
    assert intake.admit(b"a", [1], 500) is None
    assert isinstance(intake.admit(b"a", [2], 1), OverloadedError)
    intake.release(b"a", 1)
    assert intake.admit(b"a", [2], 500) is None


def test_the_node_budget_is_shared_by_every_connection() -> None:
    intake = Intake(per_client=100, total=150)
    assert intake.admit(b"a", [1], 100) is None
    err = intake.admit(b"b", [1], 60)
    assert isinstance(err, OverloadedError) and err.details["limit"] == 150
    assert "on this node" in err.message
    assert intake.admit(b"b", [1], 50) is None  # what is left
    intake.release(b"a", 1)
    assert intake.admit(b"c", [1], 60) is None


def test_a_frame_of_many_requests_is_released_request_by_request() -> None:
    intake = Intake(per_client=1000, total=1000)
    assert intake.admit(b"a", [1, 2, 3, 4], 400) is None
    assert intake.bytes(b"a") == 400
    for rid, left in ((2, 300), (4, 200), (1, 100), (3, 0)):
        intake.release(b"a", rid)
        assert intake.bytes(b"a") == left
    assert intake.status()["clients"] == 0 and intake.total_bytes == 0


def test_a_request_id_reused_while_in_progress_is_released_once_per_answer() -> None:
    """A client reusing an id must not free more than one request per answer: two
    requests with id 7 in progress stay charged until both are answered."""
    intake = Intake(per_client=100, total=1000)
    assert intake.admit(b"a", [7], 40) is None
    assert intake.admit(b"a", [7], 40) is None
    assert isinstance(intake.admit(b"a", [7], 40), OverloadedError)
    intake.release(b"a", 7)
    assert intake.bytes(b"a") == 40
    assert isinstance(intake.admit(b"a", [7], 70), OverloadedError)
    intake.release(b"a", 7)
    assert intake.bytes(b"a") == 0


@pytest.mark.parametrize(("ident", "rid"), [(b"a", 99), (b"nobody", 1), (b"", 0)])
def test_releasing_what_was_never_charged_changes_nothing(ident: bytes, rid: int) -> None:
    intake = Intake(per_client=100, total=1000)
    assert intake.admit(b"a", [1], 10) is None
    intake.release(ident, rid)
    assert (intake.bytes(b"a"), intake.total_bytes) == (10, 10)


def test_a_node_answers_overloaded_past_a_connections_budget_and_serves_the_others(
    tmp_path: Path,
) -> None:
    """The node loop with the in-memory world: a connection's second large frame in one
    iteration is answered ``overloaded`` (a ``req`` and a ``reqs`` frame alike) and not
    applied, another connection's request is served, and once the first is answered the
    budget is back."""
    w = World(tmp_path, sm="twin", max_client_pending_bytes=1000, max_pending_bytes=10_000)
    try:
        lead = w.elect()
        w.request(lead, 1, {"op": "create_bucket", "bucket": "b"})
        w.settle()
        inbox = w.nets[lead].inbox
        for rid in (10, 11):
            put = codec.Request(rid, {"op": "put", "bucket": "b", "key": f"g{rid}", "value": "v"})
            inbox.append(Incoming("req", put, b"g", None, None, 600))
        items = [
            [20 + i, {"op": "put", "bucket": "b", "key": f"m{i}", "value": "v"}] for i in (0, 1)
        ]
        inbox.append(Incoming("reqs", items, b"g", None, None, 600))
        put = codec.Request(30, {"op": "put", "bucket": "b", "key": "other", "value": "v"})
        inbox.append(Incoming("req", put, b"c", None, None, 600))
        node = w.nodes[lead]
        node.process(w.nets[lead].recv())
        assert node.intake.bytes(b"g") == 600 and node.intake.bytes(b"c") == 600
        w.settle()
        mine, theirs = w.responses(lead, b"g"), w.responses(lead, b"c")
        assert mine[10].ok and theirs[30].ok
        assert not mine[11].ok and mine[11].error.code == "overloaded"
        piped = w.pipelined(lead, b"g")
        assert [piped[r]["error"]["code"] for r in (20, 21)] == ["overloaded", "overloaded"]
        reads = node.sm.read([{"op": "get", "bucket": "b", "key": k} for k in ("g11", "m0")])
        assert reads == [None, None]  # nothing of the refused frames was applied
        st = node.status_dict()["intake"]
        assert (st["bytes"], st["refused_frames"], st["refused_requests"]) == (0, 2, 3)
        put = codec.Request(12, {"op": "put", "bucket": "b", "key": "g12", "value": "v"})
        w.nets[lead].inbox.append(Incoming("req", put, b"g", None, None, 600))
        w.settle()
        assert w.responses(lead, b"g")[12].ok
    finally:
        w.close()
