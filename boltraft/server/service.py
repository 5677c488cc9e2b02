"""Client requests on data, inside the node loop: writes, reads and forwarded writes.

The node hands each data request to ``on_request``; the service only queues, and ``flush()``
(once per loop iteration) acts on the queues in batches:

- writes on the leader: every write of the iteration becomes ONE ``propose()`` (one log
  append, one fsync); each is remembered by (term, index) and answered when the entry at that
  index is applied: with the state machine's result when the term matches, else with
  ``proposal_dropped`` (the client retries with the same cid/seq, deduplication makes that
  safe); a client's writes past its share of the log (``logshares``) are held, in order,
  for a later flush;
- writes on a follower: forwarded to the leader in ONE ``fwd`` frame and relayed back;
- linearizable reads: every read of the iteration shares ONE ReadIndex context; they are
  served once the applied index reaches the confirmed read index;
- stale reads: served at once from local state.

What it needs comes as arguments: a read-only view of the node, the core's intake (a
``Proposer``), the state machine to read from, the answers (``Replies``) and the network for
``fwd`` frames; the node loop calls back with applied entries, read states and leader
changes.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from boltraft.errors import (
    BadRequestError,
    BoltraftError,
    CorruptionError,
    LagExceededError,
    MalformedFrameError,
    NoSpaceError,
    ProposalDroppedError,
    RequestTimeoutError,
    UnavailableError,
)
from boltraft.raft.types import Entry, ReadState
from boltraft.server.logshares import LogShares, Request, client_key
from boltraft.server.ports import CommitObserver, Net, NodeView, Proposer, StateMachine
from boltraft.server.replies import Replies, Target
from boltraft.server.wire import FWD, fail
from boltraft.storage import commands
from boltraft.transport.codec import encode_frame

WRITE_OPS = frozenset(
    ("put", "delete", "create_bucket", "delete_bucket", "next_sequence", "batch", "keys")
)
READ_OPS = frozenset(("get", "scan", "buckets", "count"))
DATA_OPS = WRITE_OPS | READ_OPS
_ELSEWHERE = "; read from another node"  # ends the answer to a read a full disk stalled
# a client's commands in the log and not yet applied, past which its writes wait (logshares)
CLIENT_LOG_BYTES = 1 << 20


class Service:
    """The data-request side of one node. Owned by the node loop's thread.

    Invariants: every index in ``_pending`` is above the applied index; every read in
    ``_waiting`` has a confirmed read index; each request gets at most one answer.
    """

    def __init__(
        self,
        view: NodeView,
        core: Proposer,
        sm: StateMachine,
        replies: Replies,
        net: Net,
        *,
        observer: CommitObserver,
        counters: dict[str, int],
        max_batch: int,
        request_timeout_s: float,
        stamp: Callable[[], int],
        on_corruption: Callable[[str], None] = lambda why: None,
        client_log_bytes: int = CLIENT_LOG_BYTES,
    ) -> None:
        """``sm``: the state machine reads are served from (the node replaces it after a
        snapshot install); ``counters``: the node's counters this service adds to;
        ``stamp``: the time in ms the leader stamps into commands
        (``boltraft.server.stamps``); ``on_corruption``: told why when a read found
        damaged data (answered ``corruption``, never served); ``client_log_bytes``: each
        client's share of the log (``boltraft.server.logshares``)."""
        self.view = view
        self.core = core
        self.sm = sm
        self.replies = replies
        self._net = net
        self._observer = observer
        self._counters = counters
        self._max_batch = max_batch
        self._timeout_s = request_timeout_s
        self._stamp = stamp
        self._on_corruption = on_corruption
        self._writes: list[Request] = []  # this iteration, to propose
        self._reads: list[Request] = []  # this iteration, to read_index
        self._pending: dict[int, tuple[int, Target]] = {}  # index -> (term, target)
        self._read_ctx: dict[bytes, tuple[float, list[Request]]] = {}
        self._waiting: list[tuple[int, int, list[Request]]] = []  # heap by read index
        # our fid -> (deadline, client, the leader it went to)
        self._forwarded: dict[int, tuple[float, Target, str]] = {}
        self._fwd_out: dict[str, list[list[Any]]] = {}  # leader id -> [[fid, body], ...]
        self._ids = itertools.count(1)
        self.stats = {
            "writes": 0,
            "reads": 0,
            "forwarded": 0,
            "bad_requests": 0,
            "corrupt_reads": 0,
            "held_writes": 0,
        }
        self._shares = LogShares(client_log_bytes)

    @property
    def writes_ready(self) -> bool:
        """True when a client with held writes has room in the log again (the loop then
        flushes once more in the same iteration)."""
        return bool(self._shares.held) and self._shares.any_fits(self.view.applied)

    @property
    def queued(self) -> bool:
        """True while requests wait for the next ``flush`` (they came after this
        iteration's)."""
        return bool(self._writes or self._reads)

    @property
    def reads_waiting(self) -> bool:
        """True while confirmed reads wait for the state machine to catch up."""
        return bool(self._waiting)

    def _count(self, name: str) -> None:
        self._counters[name] = self._counters.get(name, 0) + 1

    # --- intake -----------------------------------------------------------------------------
    def on_request(self, target: Target, body: Any, now: float) -> None:
        """Answers at once (stale read, bad request) or queues a data request."""
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
                got = (
                    repr(level) if type(level) is str and len(level) <= 64 else type(level).__name__
                )
                self.bad(target, f"read must be 'linearizable' or 'stale', not {got}")
        else:
            self.bad(target, f"unknown op {op!r}" if op is not None else "body needs an 'op'")

    def on_forward(self, peer: str, items: Any) -> None:
        """Queues the writes a follower forwarded (``fwd`` frame) as if they were local."""
        if not isinstance(items, list):
            self._count("bad_fwd")
            return
        for item in items:
            if isinstance(item, list) and len(item) == 2 and isinstance(item[0], int):
                self.stats["forwarded"] += 1
                target = Target(peer.encode(), item[0], peer)
                op = item[1].get("op") if isinstance(item[1], dict) else None
                if type(op) is str and op in WRITE_OPS:
                    self._writes.append((target, item[1]))
                else:
                    self.bad(target, "only writes are forwarded")
            else:
                self._count("bad_fwd")

    def on_forward_reply(self, peer: str, items: Any) -> None:
        """Relays the leader's answers (``fwdresp`` frame from ``peer``) to our clients; an
        answer to a write that was not forwarded to ``peer`` is dropped and counted."""
        if not isinstance(items, list):
            self._count("bad_fwd")
            return
        forwarded = self._forwarded
        for item in items:
            if isinstance(item, list) and len(item) == 2 and isinstance(item[1], dict):
                entry = forwarded.get(item[0])
                if entry is None:
                    continue
                if entry[2] != peer:
                    self._count("fwdresp_wrong_peer")
                    continue
                del forwarded[item[0]]
                self.replies.reply(entry[1], item[1])
            else:
                self._count("bad_fwd")

    # --- batching, once per loop iteration ----------------------------------------------------
    def flush(self, now: float) -> None:
        """Proposes or forwards this iteration's writes and starts its read index. A leader
        whose disk is full answers the writes ``unavailable`` instead (nothing proposed): it
        could not apply them, and hands leadership over."""
        view = self.view
        if self._writes or self._shares.held:
            writes, self._writes = self._writes, []
            if not view.is_leader:  # held writes too: this node led when they came
                self._forward([*self._shares.take_held(), *writes], now)
            elif view.disk_full:  # retried (same cid and seq) at the leader it hands over to
                err = UnavailableError(view.disk_full + "; retry")
                self._fail_all([*self._shares.take_held(), *writes], err)
            else:
                self._propose(writes)
        if self._reads:
            reads, self._reads = self._reads, []
            self._read_index(reads, now)

    def send_queued(self) -> None:
        """Sends the batched ``fwd``, ``fwdresp`` and ``resps`` frames of this iteration. The
        writes of a ``fwd`` frame the leader's connection cannot take (it is down) are
        answered ``unavailable`` at once: the client retries elsewhere."""
        if self._fwd_out:
            out, self._fwd_out = self._fwd_out, {}
            for peer, items in out.items():
                try:
                    frame = encode_frame(FWD, items)
                except MalformedFrameError:  # a body that cannot travel: answer it alone
                    items = [i for i in items if self._encodable(i)]
                    frame = encode_frame(FWD, items)
                if not self._net.send_frame(peer, frame):
                    err = UnavailableError(f"cannot reach the leader {peer}; retry")
                    self._fail_forwarded([fid for fid, _ in items], err)
        self.replies.send()

    def _encodable(self, item: list[Any]) -> bool:
        """True when the forwarded ``[fid, body]`` can be encoded; otherwise answers its
        client ``bad_request`` and returns False."""
        try:
            encode_frame(FWD, [item])
        except MalformedFrameError as err:
            entry = self._forwarded.pop(item[0], None)
            if entry is not None:
                self.bad(entry[1], f"the request cannot be forwarded: {err.message}")
            return False
        return True

    def _propose(self, writes: list[Request]) -> None:
        """Proposes the held writes whose clients have room in the log again, then
        ``writes``; a write whose client's share is full is held (``logshares``), and so
        are that client's later ones."""
        shares = self._shares
        if shares.held:
            writes = [*shares.take_held(), *writes]
        ts = self._stamp()
        shares.settle(self.view.applied)
        datas: list[bytes] = []
        targets: list[Target] = []
        keys: list[Hashable] = []
        taking: dict[Hashable, int] = {}  # bytes each client takes in this round
        full: set[Hashable] = set()
        encode = commands.encode
        for target, body in writes:
            key = client_key(target, body)
            if key in full:
                shares.hold(key, (target, body))
                continue
            cmd = dict(body)
            cmd["v"] = commands.VERSION
            cmd["ts"] = ts
            try:
                data = encode(cmd)
            except BoltraftError as err:
                self.replies.reply(target, fail(err))
                continue
            took = taking.get(key, 0)
            if not shares.fits(key, took, len(data)):
                full.add(key)
                shares.hold(key, (target, body))
                self.stats["held_writes"] += 1
                continue
            taking[key] = took + len(data)
            datas.append(data)
            targets.append(target)
            keys.append(key)
        size = self._max_batch
        for start in range(0, len(datas), size):
            chunk = datas[start : start + size]
            chunk_targets = targets[start : start + size]
            try:
                term, last = self.core.propose(chunk)
            except ProposalDroppedError:
                refused = fail(self.view.not_leader_error())
                for target in chunk_targets:
                    self.replies.reply(target, refused)
                continue
            self._observer.proposed(last, len(chunk))
            pending = self._pending
            first = last - len(chunk) + 1
            for i, target in enumerate(chunk_targets, first):
                old = pending.get(i)
                if old is not None:
                    dropped = ProposalDroppedError("entry was overwritten")
                    self.replies.reply(old[1], fail(dropped))
                pending[i] = (term, target)
            charged: dict[Hashable, int] = {}
            for i, data in enumerate(chunk, start):
                charged[keys[i]] = charged.get(keys[i], 0) + len(data)
            for key, nbytes in charged.items():
                shares.charge(key, last, nbytes)

    def _forward(self, writes: list[Request], now: float) -> None:
        lead = self.view.lead
        if not lead or lead not in self.view.peer_addrs:
            self._fail_all(writes, self.view.not_leader_error())
            return
        deadline = now + self._timeout_s
        out = self._fwd_out.setdefault(lead, [])
        for target, body in writes:
            if target.via is not None:  # never forward twice: say who we think leads
                self.replies.reply(target, fail(self.view.not_leader_error()))
                continue
            fid = next(self._ids)
            self._forwarded[fid] = (deadline, target, lead)
            out.append([fid, body])

    def _fail_forwarded(self, fids: Sequence[int], err: BoltraftError) -> None:
        """Answers the clients of the forwarded writes ``fids`` (those still waiting) with
        ``err``."""
        response = fail(err)
        forwarded = self._forwarded
        for fid in fids:
            entry = forwarded.pop(fid, None)
            if entry is not None:
                self.replies.reply(entry[1], response)

    def _read_index(self, reads: list[Request], now: float) -> None:
        ctx = next(self._ids).to_bytes(8, "big")
        self._count("read_index_calls")
        try:
            self.core.read_index(ctx)
        except ProposalDroppedError:
            self._fail_all(reads, self.view.not_leader_error())
            return
        self._read_ctx[ctx] = (now + self._timeout_s, reads)

    # --- completion ---------------------------------------------------------------------------
    def on_applied(self, entries: Sequence[Entry], results: Sequence[Any]) -> None:
        """Answers the writes whose entries were just applied, then the reads whose read
        index the applied index now reaches, and sends the batched answers right away (the
        clients need not wait for the rest of the loop iteration)."""
        pending = self._pending
        if pending:
            pop = pending.pop
            replies = self.replies
            for entry, result in zip(entries, results, strict=True):
                p = pop(entry.index, None)
                if p is None:
                    continue
                if p[0] != entry.term:
                    dropped = ProposalDroppedError("proposal lost in a new term")
                    replies.reply(p[1], fail(dropped))
                elif isinstance(result, BoltraftError):
                    replies.reply(p[1], fail(result))
                else:
                    replies.reply_ok(p[1], result)
        if self._waiting:
            self._serve_waiting()
        self.replies.send()  # now, not at the end of the iteration: see send_queued

    def on_read_states(self, states: Sequence[ReadState]) -> None:
        """Serves (or parks until applied) the reads each confirmed state covers."""
        applied = self.view.applied
        for rs in states:
            entry = self._read_ctx.pop(rs.context, None)
            if entry is None:
                continue
            if rs.index <= applied:
                self._serve_reads(entry[1])
            elif self.view.disk_full:  # it cannot apply up to the read index
                self._fail_all(entry[1], UnavailableError(self.view.disk_full + _ELSEWHERE))
            else:
                heapq.heappush(self._waiting, (rs.index, next(self._ids), entry[1]))

    def on_log_full(self, durable: int, sole_voter: bool) -> None:
        """Answers the writes this node proposed past ``durable``, the last index its log
        holds, for its disk is full and their entries are gone from its log: ``no_space``
        when it is the only voter (nobody else has them either), otherwise ``unavailable``
        (they may still commit through the copies already sent: retry with the same cid and
        seq); then ``on_apply_stalled``."""
        why = self.view.disk_full
        lost: BoltraftError = (
            NoSpaceError(why + "; nothing was written")
            if sole_voter
            else UnavailableError(why + "; the write may or may not commit: retry it")
        )
        for index in [i for i in self._pending if i > durable]:
            self.replies.reply(self._pending.pop(index)[1], fail(lost))
        self.on_apply_stalled()

    def on_apply_stalled(self) -> None:
        """Answers ``unavailable`` to the confirmed reads that wait for an apply this node
        cannot make now (its disk is full): read from another node."""
        if self._waiting:
            waiting, self._waiting = self._waiting, []
            err = UnavailableError(self.view.disk_full + _ELSEWHERE)
            for _, _, reads in waiting:
                self._fail_all(reads, err)

    def on_leader_change(self) -> None:
        """Fails the reads whose read index can no longer be confirmed (the core forgets
        them when leadership moves) and the writes forwarded to a node that no longer leads
        here (it may have died with them), so that their clients retry at once: a retry
        with the same cid and seq is applied once (docs/protocol.md, section 7.2)."""
        if self._read_ctx:
            ctxs, self._read_ctx = self._read_ctx, {}
            err = UnavailableError("leadership changed before the read was confirmed")
            for _, reads in ctxs.values():
                self._fail_all(reads, err)
        if self._forwarded:
            lead = self.view.lead
            gone = [fid for fid, (_, _, to) in self._forwarded.items() if to != lead]
            if gone:
                self._fail_forwarded(
                    gone,
                    UnavailableError(
                        "leadership changed before the leader answered the forwarded write; "
                        "it may or may not have been applied: retry it"
                    ),
                )

    def expire(self, now: float) -> None:
        """Times out read contexts and forwarded writes past their deadline."""
        if self._read_ctx:
            late = [c for c, (deadline, _) in self._read_ctx.items() if deadline <= now]
            for ctx in late:
                self._fail_all(
                    self._read_ctx.pop(ctx)[1], RequestTimeoutError("read index not confirmed")
                )
        if self._forwarded:
            late_f = [f for f, (deadline, _, _) in self._forwarded.items() if deadline <= now]
            if late_f:
                self._fail_forwarded(late_f, RequestTimeoutError("leader did not answer in time"))

    def _serve_waiting(self) -> None:
        applied = self.view.applied
        waiting = self._waiting
        while waiting and waiting[0][0] <= applied:
            self._serve_reads(heapq.heappop(waiting)[2])

    def _fail_all(self, requests: list[Request], err: BoltraftError) -> None:
        """Answers every ``(target, body)`` of ``requests`` with ``err``."""
        response = fail(err)
        for target, _ in requests:
            self.replies.reply(target, response)

    def _serve_reads(self, reads: list[Request]) -> None:
        results = self.sm.read([body for _, body in reads])
        replies = self.replies
        for (target, _), result in zip(reads, results, strict=True):
            if isinstance(result, BoltraftError):
                if isinstance(result, CorruptionError):
                    self.stats["corrupt_reads"] += 1
                    self._on_corruption(f"node {self.view.id}: a read found {result.message}")
                replies.reply(target, fail(result))
            else:
                replies.reply_ok(target, result)

    def _stale_read(self, target: Target, body: dict[str, Any], now: float) -> None:
        max_lag = body.get("max_lag")
        if max_lag is not None:
            if isinstance(max_lag, bool) or not isinstance(max_lag, int) or max_lag < 0:
                self.bad(target, "max_lag must be an integer >= 0")
                return
            view = self.view
            lag = view.commit - view.applied
            if lag > max_lag or not view.leader_recently_heard(now):
                err = LagExceededError(
                    "this node is too far behind for the requested max_lag",
                    lag=lag,
                    max_lag=max_lag,
                    leader_id=view.lead,
                    leader_addr=view.addr_of(view.lead),
                )
                self.replies.reply(target, fail(err))
                return
        self._serve_reads([(target, body)])  # the read level fields are ignored there

    def bad(self, target: Target, message: str) -> None:
        """Answers ``target`` with bad_request ``message`` (and counts it)."""
        self.stats["bad_requests"] += 1
        self.replies.reply(target, fail(BadRequestError(message)))
