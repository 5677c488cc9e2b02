"""ReadIndex bookkeeping on the leader (Raft thesis 6.4): read requests wait for a quorum of
heartbeat acknowledgements sent after they arrived; one heartbeat round serves every request
that joins it before its heartbeats leave (the round is "open" until then)."""

from __future__ import annotations

from collections import OrderedDict

from boltraft.raft.types import NodeId


class ReadRound:
    """One heartbeat round and the read requests it confirms.

    Invariant: ``index`` is at least the leader's commit index when each request joined;
    ``acks`` always contains the leader itself."""

    __slots__ = ("acks", "ctx", "index", "requests")

    def __init__(self, ctx: bytes, index: int, leader: NodeId) -> None:
        self.ctx = ctx  # the heartbeat context followers echo back
        self.index = index
        self.acks: set[NodeId] = {leader}
        self.requests: list[tuple[NodeId, bytes]] = []  # (requester, its context)


class ReadOnly:
    """The leader's pending read rounds, oldest first."""

    __slots__ = ("_counter", "open", "rounds")

    def __init__(self) -> None:
        self.rounds: OrderedDict[bytes, ReadRound] = OrderedDict()
        self.open: ReadRound | None = None  # the round whose heartbeats have not left yet
        self._counter = 0  # makes round contexts unique for the life of this node

    def add_request(
        self, commit: int, frm: NodeId, ctx: bytes, leader: NodeId
    ) -> tuple[ReadRound, bool]:
        """Adds the read ``ctx`` of ``frm`` at ``commit`` to the open round, or to a new one.
        Returns (that round, True when it is new and its heartbeats must be sent)."""
        rnd = self.open
        if rnd is not None:
            if commit > rnd.index:
                rnd.index = commit
            rnd.requests.append((frm, ctx))
            return rnd, False
        self._counter += 1
        rnd = ReadRound(b"\x00ri" + self._counter.to_bytes(8, "big"), commit, leader)
        rnd.requests.append((frm, ctx))
        self.rounds[rnd.ctx] = rnd
        self.open = rnd
        return rnd, True

    def close_open(self) -> None:
        """Closes the open round (its heartbeats are leaving now)."""
        self.open = None

    def ack(self, ctx: bytes, frm: NodeId) -> ReadRound | None:
        """Records ``frm``'s ack of the round ``ctx`` names. Returns that round, or None
        when no pending round has that context."""
        rnd = self.rounds.get(ctx)
        if rnd is not None:
            rnd.acks.add(frm)
        return rnd

    def release(self, rnd: ReadRound) -> list[ReadRound]:
        """Removes ``rnd`` and every older round (a quorum confirming a later round confirms
        the earlier ones too) and returns them, oldest first."""
        out: list[ReadRound] = []
        while self.rounds:
            _, first = self.rounds.popitem(last=False)
            out.append(first)
            if self.open is first:
                self.open = None
            if first is rnd:
                break
        return out

    def last_ctx(self) -> bytes:
        """Returns the context of the newest pending round, or b"" when none is pending."""
        if not self.rounds:
            return b""
        return next(reversed(self.rounds))

    def reset(self) -> None:
        """Drops every pending round (leadership lost)."""
        self.rounds.clear()
        self.open = None
