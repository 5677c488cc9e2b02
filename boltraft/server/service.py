"""Returns nothing; client request handling inside the node loop.

Per loop iteration the node hands every client request to ``Service.on_request``; the service
only queues, and ``flush()`` (called once per iteration) acts on the queues in batches:

- writes on the leader: every write of the iteration becomes ONE ``propose()`` (one log
  append, one fsync); each is remembered by (term, index) and answered when the entry at that
  index is applied: with the state machine's result when the term matches, else with
  ``proposal_dropped`` (the client retries with the same cid/seq, deduplication makes that
  safe);
- writes on a follower: forwarded to the leader in ONE ``fwd`` frame and relayed back;
- linearizable reads: every read of the iteration shares ONE ReadIndex context; they are
  served once the applied index reaches the confirmed read index;
- stale reads and ``status``: served at once from local state.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from boltraft.errors import (
    BadRequestError,
    BoltraftError,
    LagExceededError,
    NoLeaderError,
    NoSpaceError,
    NotLeaderError,
    ProposalDroppedError,
    RequestTimeoutError,
    UnavailableError,
)
from boltraft.raft.types import Entry, ReadState
from boltraft.server.clusterops import OPS as CLUSTER_OPS
from boltraft.server.net import FWD, FWD_RESP, encode_ok, encode_response, encode_resps
from boltraft.storage import commands
from boltraft.storage.queries import execute_read, execute_reads
from boltraft.transport.codec import encode_frame

if TYPE_CHECKING:
    from boltraft.server.node import Node

WRITE_OPS = frozenset(("put", "delete", "create_bucket", "delete_bucket", "next_sequence", "batch"))
READ_OPS = frozenset(("get", "scan", "buckets", "count"))
_ELSEWHERE = "; read from another node"  # ends the answer to a read a full disk stalled


class Target(NamedTuple):
    """Where a response goes: ``via`` None means the client ``ident`` on our ROUTER (in a
    ``resps`` frame with others when ``many``: the request came in a ``reqs`` frame); else
    the peer id whose forwarded write ``rid`` this is."""

    ident: bytes
    rid: int
    via: str | None = None
    many: bool = False


def ok(result: Any) -> dict[str, Any]:
    """Returns the success response map."""
    return {"ok": True, "result": result}


def fail(err: BoltraftError) -> dict[str, Any]:
    """Returns the error response map."""
    return {"ok": False, "error": err.to_wire()}


class Service:
    """The request side of one node. Owned by the node loop's thread.

    Invariants: every index in ``_pending`` is above the applied index; every read in
    ``_waiting`` has a confirmed read index; each request gets at most one response.
    """

    def __init__(self, node: Node) -> None:
        self.node = node
        self._writes: list[tuple[Target, dict[str, Any]]] = []  # this iteration, to propose
        self._reads: list[tuple[Target, dict[str, Any]]] = []  # this iteration, to read_index
        self._pending: dict[int, tuple[int, Target]] = {}  # index -> (term, target)
        self._read_ctx: dict[bytes, tuple[float, list[tuple[Target, dict[str, Any]]]]] = {}
        self._waiting: list[tuple[int, int, list[tuple[Target, dict[str, Any]]]]] = []  # heap
        self._forwarded: dict[int, tuple[float, Target]] = {}  # our fid -> (deadline, client)
        self._fwd_out: dict[str, list[list[Any]]] = {}  # leader id -> [[fid, body], ...]
        self._fwd_replies: dict[str, list[list[Any]]] = {}  # peer id -> [[fid, resp], ...]
        self._resps: dict[bytes, list[list[Any]]] = {}  # client ident -> [[rid, resp], ...]
        self._ids = itertools.count(1)
        self.stats = {"writes": 0, "reads": 0, "forwarded": 0, "bad_requests": 0}

    @property
    def reads_waiting(self) -> bool:
        """Returns True while confirmed reads wait for the state machine to catch up."""
        return bool(self._waiting)

    # --- intake -----------------------------------------------------------------------------
    def on_request(self, target: Target, body: Any, now: float) -> None:
        """Returns None; answers at once (stale read, status, bad request) or queues."""
        op = body.get("op") if isinstance(body, dict) else None
        if op in WRITE_OPS:
            self.stats["writes"] += 1
            self._writes.append((target, body))
        elif op in READ_OPS:
            self.stats["reads"] += 1
            level = body.get("read", "linearizable")
            if level == "linearizable":
                self._reads.append((target, body))
            elif level == "stale":
                self._stale_read(target, body, now)
            else:
                self._bad(target, f"read must be 'linearizable' or 'stale', not {level!r}")
        elif op == "status":
            self.reply(target, ok(self.node.status_dict()))
        elif op in CLUSTER_OPS:  # snapshots, membership, backups (boltraft.server.clusterops)
            self.node.ops.on_request(target, body, now)
        elif op == "stats":  # per-batch stage timings for the benchmark (boltraft.benchmark)
            since = body.get("since", 0.0)
            if isinstance(since, bool) or not isinstance(since, (int, float)):
                self._bad(target, "since must be a number (wall-clock seconds)")
            else:
                self.reply(target, ok(self.node.stages.snapshot(float(since))))
        else:
            self._bad(target, f"unknown op {op!r}" if op is not None else "body needs an 'op'")

    def on_requests(self, sender: bytes, items: list[list[Any]], now: float) -> None:
        """Returns None; handles each ``[request_id, body]`` of a ``reqs`` frame like a
        ``req`` whose answer goes into a ``resps`` frame. Cluster operations are refused
        there (they go in ``req`` frames, one at a time)."""
        for rid, body in items:
            target = Target(sender, rid, None, True)
            if type(body) is not dict or type(body.get("op")) is not str:
                self._bad(target, "a request body must be a map with a string 'op'")
            elif self.is_cluster_op(body):
                self._bad(target, f"send {body['op']!r} in a 'req' frame, not in 'reqs'")
            else:
                self.on_request(target, body, now)

    @staticmethod
    def is_cluster_op(body: Any) -> bool:
        """Returns True when the request ``body`` is a cluster operation (snapshots,
        membership, backups: boltraft.server.clusterops), which may use the log store."""
        return isinstance(body, dict) and body.get("op") in CLUSTER_OPS

    def on_forward(self, peer: str, items: Any) -> None:
        """Returns None; queues writes a follower forwarded (``fwd`` frame) as if local."""
        if not isinstance(items, list):
            self.node.count("bad_fwd")
            return
        for item in items:
            if isinstance(item, list) and len(item) == 2 and isinstance(item[0], int):
                self.stats["forwarded"] += 1
                target = Target(peer.encode(), item[0], peer)
                if isinstance(item[1], dict) and item[1].get("op") in WRITE_OPS:
                    self._writes.append((target, item[1]))
                else:
                    self._bad(target, "only writes are forwarded")
            else:
                self.node.count("bad_fwd")

    def on_forward_reply(self, items: Any) -> None:
        """Returns None; relays the leader's answers (``fwdresp`` frame) to our clients."""
        if not isinstance(items, list):
            self.node.count("bad_fwd")
            return
        for item in items:
            if isinstance(item, list) and len(item) == 2 and isinstance(item[1], dict):
                entry = self._forwarded.pop(item[0], None)
                if entry is not None:
                    self.reply(entry[1], item[1])
            else:
                self.node.count("bad_fwd")

    # --- batching, once per loop iteration ----------------------------------------------------
    def flush(self, now: float) -> None:
        """Returns None; proposes/forwards this iteration's writes and starts its read index.
        A leader whose disk is full (``node.disk_full``) answers the writes ``unavailable``
        instead (nothing proposed): it could not apply them, and hands leadership over."""
        if self._writes:
            writes, self._writes = self._writes, []
            node = self.node
            if not node.is_leader:
                self._forward(writes, now)
            elif node.disk_full:  # retried (same cid and seq) at the leader it hands over to
                self._fail_all(writes, UnavailableError(node.disk_full + "; retry"))
            else:
                self._propose(writes)
        if self._reads:
            reads, self._reads = self._reads, []
            self._read_index(reads, now)

    def send_queued(self) -> None:
        """Returns None; sends the batched ``fwd``, ``fwdresp`` and ``resps`` frames of this
        iteration."""
        self._send_answers()
        if self._fwd_out:
            out, self._fwd_out = self._fwd_out, {}
            net = self.node.net
            for peer, items in out.items():
                net.send_frame(peer, encode_frame(FWD, items))

    def _send_answers(self) -> None:
        """Returns None; sends the batched ``resps`` and ``fwdresp`` frames queued so far."""
        net = self.node.net
        if self._resps:
            resps, self._resps = self._resps, {}
            for ident, pairs in resps.items():
                for frame in encode_resps(pairs):
                    net.reply(ident, frame)
        if self._fwd_replies:
            out, self._fwd_replies = self._fwd_replies, {}
            for peer, items in out.items():
                net.send_frame(peer, encode_frame(FWD_RESP, items))

    def _propose(self, writes: list[tuple[Target, dict[str, Any]]]) -> None:
        node = self.node
        ts = node.wall_ms()
        datas: list[bytes] = []
        targets: list[Target] = []
        encode = commands.encode
        for target, body in writes:
            cmd = dict(body)
            cmd["v"] = commands.VERSION
            cmd["ts"] = ts
            try:
                datas.append(encode(cmd))
            except BoltraftError as err:
                self.reply(target, fail(err))
                continue
            targets.append(target)
        for start in range(0, len(datas), node.cfg.max_batch):
            chunk = datas[start : start + node.cfg.max_batch]
            chunk_targets = targets[start : start + node.cfg.max_batch]
            try:
                term, last = node.raw.propose(chunk)
            except ProposalDroppedError:
                err = self._not_leader_error()
                for target in chunk_targets:
                    self.reply(target, fail(err))
                continue
            node.stages.proposed(last, len(chunk))
            pending = self._pending
            first = last - len(chunk) + 1
            for i, target in enumerate(chunk_targets, first):
                old = pending.get(i)
                if old is not None:
                    self.reply(old[1], fail(ProposalDroppedError("entry was overwritten")))
                pending[i] = (term, target)

    def _forward(self, writes: list[tuple[Target, dict[str, Any]]], now: float) -> None:
        lead = self.node.lead
        if not lead or lead not in self.node.peer_addrs:
            self._fail_all(writes, self._not_leader_error())
            return
        deadline = now + self.node.cfg.request_timeout_ms / 1000
        out = self._fwd_out.setdefault(lead, [])
        for target, body in writes:
            if target.via is not None:  # never forward twice: say who we think leads
                self.reply(target, fail(self._not_leader_error()))
                continue
            fid = next(self._ids)
            self._forwarded[fid] = (deadline, target)
            out.append([fid, body])

    def _read_index(self, reads: list[tuple[Target, dict[str, Any]]], now: float) -> None:
        ctx = next(self._ids).to_bytes(8, "big")
        self.node.count("read_index_calls")
        try:
            self.node.raw.read_index(ctx)
        except ProposalDroppedError:
            self._fail_all(reads, self._not_leader_error())
            return
        self._read_ctx[ctx] = (now + self.node.cfg.request_timeout_ms / 1000, reads)

    # --- completion ---------------------------------------------------------------------------
    def on_applied(self, entries: Sequence[Entry], results: Sequence[Any]) -> None:
        """Returns None; answers the writes whose entries were just applied, then the reads
        whose read index the applied index now reaches, and sends the answers batched for
        ``resps``/``fwdresp`` frames right away (the clients need not wait for the rest of
        the loop iteration)."""
        pending = self._pending
        if pending:
            pop = pending.pop
            for entry, result in zip(entries, results, strict=True):
                p = pop(entry.index, None)
                if p is None:
                    continue
                if p[0] != entry.term:
                    self.reply(p[1], fail(ProposalDroppedError("proposal lost in a new term")))
                elif isinstance(result, BoltraftError):
                    self.reply(p[1], fail(result))
                else:
                    self.reply_ok(p[1], result)
        if self._waiting:
            self._serve_waiting()
        self._send_answers()  # now, not at the end of the iteration: see send_queued

    def on_read_states(self, states: Sequence[ReadState]) -> None:
        """Returns None; serves (or parks until applied) the reads each state confirms."""
        applied = self.node.applied
        for rs in states:
            entry = self._read_ctx.pop(rs.context, None)
            if entry is None:
                continue
            if rs.index <= applied:
                self._serve_reads(entry[1])
            elif self.node.disk_full:  # it cannot apply up to the read index
                self._fail_all(entry[1], UnavailableError(self.node.disk_full + _ELSEWHERE))
            else:
                heapq.heappush(self._waiting, (rs.index, next(self._ids), entry[1]))

    def on_log_full(self, durable: int, sole_voter: bool) -> None:
        """Returns None after answering the writes this node proposed past ``durable``, the
        last index its log holds, for its disk is full (``node.disk_full`` says so) and their
        entries are gone from its log: ``no_space`` when it is the only voter (nobody else
        has them either), otherwise ``unavailable`` (they may still commit through the
        copies already sent: retry with the same cid and seq); then ``on_apply_stalled``."""
        why = self.node.disk_full
        lost: BoltraftError = (
            NoSpaceError(why + "; nothing was written")
            if sole_voter
            else UnavailableError(why + "; the write may or may not commit: retry it")
        )
        for index in [i for i in self._pending if i > durable]:
            self.reply(self._pending.pop(index)[1], fail(lost))
        self.on_apply_stalled()

    def on_apply_stalled(self) -> None:
        """Returns None after answering ``unavailable`` to the confirmed reads that wait for
        an apply this node cannot make now (``node.disk_full``): read from another node."""
        if self._waiting:
            waiting, self._waiting = self._waiting, []
            err = UnavailableError(self.node.disk_full + _ELSEWHERE)
            for _, _, reads in waiting:
                self._fail_all(reads, err)

    def on_leader_change(self) -> None:
        """Returns None; fails reads whose read index can no longer be confirmed (the core
        forgets them when leadership moves) so that their clients retry at once."""
        if self._read_ctx:
            ctxs, self._read_ctx = self._read_ctx, {}
            err = UnavailableError("leadership changed before the read was confirmed")
            for _, reads in ctxs.values():
                self._fail_all(reads, err)

    def expire(self, now: float) -> None:
        """Returns None; times out read contexts and forwarded writes past their deadline."""
        if self._read_ctx:
            late = [c for c, (deadline, _) in self._read_ctx.items() if deadline <= now]
            for ctx in late:
                self._fail_all(
                    self._read_ctx.pop(ctx)[1], RequestTimeoutError("read index not confirmed")
                )
        if self._forwarded:
            late_f = [f for f, (deadline, _) in self._forwarded.items() if deadline <= now]
            for fid in late_f:
                target = self._forwarded.pop(fid)[1]
                self.reply(target, fail(RequestTimeoutError("leader did not answer in time")))

    def _serve_waiting(self) -> None:
        applied = self.node.applied
        waiting = self._waiting
        while waiting and waiting[0][0] <= applied:
            self._serve_reads(heapq.heappop(waiting)[2])

    def _fail_all(self, requests: list[tuple[Target, dict[str, Any]]], err: BoltraftError) -> None:
        """Returns None after answering every ``(target, body)`` of ``requests`` with ``err``."""
        for target, _ in requests:
            self.reply(target, fail(err))

    def _serve_reads(self, reads: list[tuple[Target, dict[str, Any]]]) -> None:
        results = execute_reads(self.node.sm.db, [body for _, body in reads])
        for (target, _), result in zip(reads, results, strict=True):
            if isinstance(result, BoltraftError):
                self.reply(target, fail(result))
            else:
                self.reply_ok(target, result)

    def _stale_read(self, target: Target, body: dict[str, Any], now: float) -> None:
        max_lag = body.get("max_lag")
        if max_lag is not None:
            if isinstance(max_lag, bool) or not isinstance(max_lag, int) or max_lag < 0:
                self._bad(target, "max_lag must be an integer >= 0")
                return
            node = self.node
            lag = node.commit - node.applied
            if lag > max_lag or not node.leader_recently_heard(now):
                err = LagExceededError(
                    "this node is too far behind for the requested max_lag",
                    lag=lag,
                    max_lag=max_lag,
                    leader_id=node.lead,
                    leader_addr=node.addr_of(node.lead),
                )
                self.reply(target, fail(err))
                return
        self.reply(target, self._execute(self.node.sm.db, body))

    @staticmethod
    def _execute(db: Any, body: dict[str, Any]) -> dict[str, Any]:
        try:  # execute_read ignores the read level fields ("read", "max_lag")
            return ok(execute_read(db, body))
        except BoltraftError as err:
            return fail(err)

    def _not_leader_error(self) -> BoltraftError:
        lead = self.node.lead
        if not lead and self.node.disk_full:
            return UnavailableError(self.node.disk_full + "; no leader is known")
        if not lead:
            return NoLeaderError("no leader is known right now; retry shortly")
        return NotLeaderError(
            f"{self.node.id} is not the leader; {lead} is",
            leader_id=lead,
            leader_addr=self.node.addr_of(lead),
        )

    def _bad(self, target: Target, message: str) -> None:
        self.stats["bad_requests"] += 1
        self.reply(target, fail(BadRequestError(message)))

    def reply_ok(self, target: Target, result: Any) -> None:
        """Returns None; ``reply(target, ok(result))`` without building the map for a client
        on our ROUTER (the hot path of every write and read)."""
        if target.many or target.via is not None:
            self._batch_answer(target, ok(result))
        else:
            self.node.net.reply(target.ident, encode_ok(target.rid, result))

    def reply(self, target: Target, response: dict[str, Any]) -> None:
        """Returns None; sends ``response`` to ``target`` (batched when it is a peer's)."""
        if target.many or target.via is not None:
            self._batch_answer(target, response)
        else:
            self.node.net.reply(target.ident, encode_response(target.rid, response))

    def _batch_answer(self, target: Target, response: dict[str, Any]) -> None:
        """Returns None; queues ``response`` for the next ``resps`` frame to the client
        (``many``) or ``fwdresp`` frame to the peer (``via``)."""
        if target.many:
            self._resps.setdefault(target.ident, []).append([target.rid, response])
        else:
            self._fwd_replies.setdefault(target.via, []).append([target.rid, response])
