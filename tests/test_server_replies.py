"""Replies: where each answer goes, and the error answers counted by (op, code)."""

from __future__ import annotations

from typing import Any, cast

from boltraft.errors import BucketNotFoundError, NotLeaderError
from boltraft.server.node import KNOWN_OPS
from boltraft.server.ports import Net
from boltraft.server.replies import Replies, Target
from boltraft.server.wire import fail, ok, register_kinds
from boltraft.transport.codec import decode_frame


class Wire:
    """Collects what Replies hands to the network."""

    def __init__(self) -> None:
        self.replies: list[tuple[bytes, Any]] = []
        self.frames: list[tuple[str, Any]] = []

    def reply(self, sender: bytes, frame: bytes) -> bool:
        self.replies.append((sender, decode_frame(frame)))
        return True

    def send_frame(self, peer_id: str, frame: bytes) -> bool:
        self.frames.append((peer_id, decode_frame(frame)))
        return True


def test_error_answers_to_clients_count_by_op_and_code() -> None:
    register_kinds()
    wire = Wire()
    replies = Replies(cast(Net, wire), KNOWN_OPS)
    replies.reply(Target(b"c1", 1, op="put"), fail(BucketNotFoundError("no bucket a")))
    replies.reply(Target(b"c1", 2, op="put"), fail(BucketNotFoundError("no bucket b")))
    replies.reply(Target(b"c2", 3, many=True, op="get"), fail(NotLeaderError("not me")))
    replies.reply(Target(b"c2", 4, op="made-up-op"), fail(BucketNotFoundError("x")))
    replies.reply(Target(b"c3", 5), fail(BucketNotFoundError("no op at all")))
    replies.reply(Target(b"c3", 6, op="get"), ok(b"v"))  # not an error
    replies.reply_ok(Target(b"c3", 7, op="get"), b"v")
    replies.reply(Target(b"n2", 8, via="n2", op="put"), fail(BucketNotFoundError("fwd")))
    assert replies.errors == {
        ("put", "bucket_not_found"): 2,
        ("get", "not_leader"): 1,
        ("unknown", "bucket_not_found"): 2,
    }
    assert [s for s, _ in wire.replies] == [b"c1", b"c1", b"c2", b"c3", b"c3", b"c3"]
    replies.send()  # the answer to a request of a ``reqs`` frame leaves in a ``resps`` batch
    assert [s for s, _ in wire.replies][6:] == [b"c2"]
    assert [p for p, _ in wire.frames] == ["n2"]  # a peer's forwarded write: its fwdresp
