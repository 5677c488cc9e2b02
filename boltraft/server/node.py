"""The node loop: ONE thread owns the consensus core, the network, the log store and the
state machine, so none of them needs a lock (the exceptions: the log's flush runs on the
sync thread while the loop leaves the log store alone; the transport's drain thread reads
the ROUTER, under the transport's own lock, while the loop is away from ``recv``).

The loop drives its parts, each given what it needs and nothing more: the request service
(``service``), the applier (``applying``), the cluster operations (``clusterops``:
snapshots, snapshot transfer, membership, backups). They read the node through a
``NodeState`` view, call the core through a ``CoreHandle`` and answer through ``Replies``
(``boltraft.server.state``, ``boltraft.server.replies``); none of them sees the Node.

Each iteration (``process``): take every frame that is ready (waiting at most until the next
tick), step Raft messages into the core and queue client requests, tick the core on the
monotonic clock, let the service batch the iteration's requests (one ``propose()`` for all
writes, one ReadIndex context for all linearizable reads), then drain the core's Readys
following the contract in ``boltraft.raft.types``:

1. send ``early_messages`` (the leader's appends: it writes its own log while they travel);
   hold ``spare_messages`` (the appends to the followers a quorum does not need now) for
   the next batch, which leaves within ``spare_append_ms`` (``boltraft.server.spare``);
2. write entries + hard state in ONE log append (a hard state that only raises the commit
   index waits for the next append: ``_unwritten_hs``); when anything in it must be durable
   (entries, a new term or vote), flush it: on the sync
   thread while step 3 applies (``boltraft.server.syncer``) and then, until the flush
   ends, the loop steps the Raft messages and requests arriving (``_step_until_synced``);
   with nothing to apply, the same from the start when frames are already waiting
   (``_flush_stepping``), else inline; a leader with nothing to apply then has the state
   machine apply its new entry ahead of the commit (``Applier.prepare``: at the commit its
   writes are answered first, then the apply only commits it);
3. apply ``committed_entries`` in ONE state-machine ``apply()``, answer their writes (the
   answers leave at once, before anything else of the Ready), then answer read states (a
   read waits until applied >= its read index). A follower with ``lazy_apply`` keeps them
   instead and applies what it kept in one batch later (``boltraft.server.applying``); its
   flush then runs without a thread hand-off (step 2);
4. send ``messages``, after the flush (persist before send). Without a flush a follower
   sends them before applying (heartbeat responses confirm reads), a leader after (it
   answers its clients first);
5. ``advance()``.

A full disk never stops the node: a log that cannot take a Ready restarts the core from the
log (``_on_log_full``); a state machine that cannot apply keeps the entries and retries at
every tick (``boltraft.server.applying``).

A ``CommitObserver`` (``boltraft.server.ports``; a no-op unless a benchmark installs one)
sees each batch of writes pass the leader's stages.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from boltraft.errors import BoltraftError, NoSpaceError, SnapshotError
from boltraft.raft.config import Config
from boltraft.raft.rawnode import RawNode
from boltraft.raft.types import (
    ConfState,
    Entry,
    HardState,
    LogStore,
    Message,
    MessageType,
    Ready,
    Role,
    SnapshotMeta,
)
from boltraft.server import wire
from boltraft.server.access import PEER_FRAMES, Access, denied, permits
from boltraft.server.applying import LAZY_APPLY_IDLE_S, Applier
from boltraft.server.clusterops import OPS as CLUSTER_OPS
from boltraft.server.clusterops import ClusterOps
from boltraft.server.commitnotice import CommitNotices
from boltraft.server.config import ServerConfig
from boltraft.server.corruptcheck import CorruptCheck
from boltraft.server.intake import Intake
from boltraft.server.logevery import LogEvery
from boltraft.server.ports import CommitObserver, Net, NullObserver, StateMachine
from boltraft.server.replies import INTERNAL, Replies, Target
from boltraft.server.service import DATA_OPS, Service
from boltraft.server.spare import SpareBatches
from boltraft.server.stamps import LeaderClock
from boltraft.server.state import CoreHandle, NodeState
from boltraft.server.syncer import Syncer
from boltraft.server.watching import WATCH_OPS, WatchHub
from boltraft.server.watchlog import WatchLog
from boltraft.server.wire import (
    FWD,
    FWD_RESP,
    HASH,
    REMOVED,
    REQS,
    SNAP,
    WATCHING,
    WATCHING_FRAME,
    fail,
    ok,
)
from boltraft.storage.commands import KEYS_SET
from boltraft.transport.zmq_transport import PEER_DOWN, Incoming

log = logging.getLogger("boltraft.server")

# pipelined data requests, writes a follower forwards and their answers: never cluster ops
_DATA_FRAMES = frozenset((REQS, FWD, FWD_RESP))
_CLUSTER_FRAMES = frozenset((SNAP, REMOVED))
KNOWN_OPS = frozenset(DATA_OPS | CLUSTER_OPS | WATCH_OPS | {"status", "stats"})
"""Every op a client request may name (the others are answered bad_request)."""
_ROLE_NAMES = {Role.FOLLOWER: "follower", Role.PRE_CANDIDATE: "pre_candidate"}
_ROLE_NAMES.update({Role.CANDIDATE: "candidate", Role.LEADER: "leader"})
FULL_WARN_S = 10.0  # a full disk is logged as a warning at most this often


def is_cluster_op(body: Any) -> bool:
    """True when the request ``body`` is a cluster operation (snapshots, membership,
    backups: boltraft.server.clusterops), which may use the log store."""
    return isinstance(body, dict) and body.get("op") in CLUSTER_OPS


class Node:
    """One running member of the cluster (its stores are opened and closed by the caller).

    Invariants: the ``NodeState`` invariants; only the loop's thread touches this object;
    ``disk_full`` is "" unless the last log append or apply found the disk full.
    """

    def __init__(
        self,
        cfg: ServerConfig,
        *,
        net: Net,
        logstore: LogStore,
        sm: StateMachine,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        observer: CommitObserver | None = None,
        reopen_sm: Callable[[], StateMachine] | None = None,
        install_step: Callable[[str], None] = lambda step: None,
        access: Access | None = None,
        watch_log: WatchLog | None = None,
    ) -> None:
        """``observer``: sees the commit stages (default: none); ``reopen_sm``: opens the
        state machine again after a snapshot install replaced its files (None: this node
        cannot install snapshots); ``install_step``: a fault-injection point at each step of
        a snapshot install (``boltraft.server.snapshots``); ``access``: the allow-list of a
        node with CURVE keys, which every frame is checked against (None: no checks);
        ``watch_log``: the change feed's history on disk (None: in memory only)."""
        wire.register_kinds()
        self._access = access
        if access is not None:
            access.load(sm.key_records())
        self.cfg = cfg
        self.id = cfg.id
        self.net = net
        self.logstore = logstore
        self.sm = sm
        self.observer: CommitObserver = observer or NullObserver()
        self._clock = clock
        self._stamps = LeaderClock(clock)  # the ts a leader stamps into commands
        if logstore.bootstrap(ConfState(voters=tuple(sorted(cfg.members)), addrs=cfg.members)):
            log.info("bootstrapped a new cluster: %s", cfg.members)
        self._rng = rng or random.Random()
        self._tick_s = cfg.tick_ms / 1000
        self.state = NodeState(cfg.id, cfg.listen, cfg.election_tick * self._tick_s)
        self.state.applied = self.state.commit = sm.applied[0]
        self._hard_state: HardState = HardState()
        self.core = CoreHandle(self._start_core())
        self._set_members(self.raw.status().conf_state, initial=cfg.peers)
        self._next_tick = clock() + self._tick_s
        self.counters: dict[str, int] = {
            "ticks": 0,
            "readys": 0,
            "fsyncs": 0,
            "step_errors": 0,
            "stepped_during_flush": 0,
            "prepared": 0,
            "log_disk_full": 0,
            "apply_disk_full": 0,
        }
        self.intake = Intake(cfg.max_client_pending_bytes, cfg.max_pending_bytes)
        self.replies = Replies(net, KNOWN_OPS, self.intake)
        self.corrupt = CorruptCheck(
            self.state, net, lambda: self.sm.content_hash(), cfg.corrupt_check_ms / 1000
        )
        self.service = Service(
            self.state,
            self.core,
            sm,
            self.replies,
            net,
            observer=self.observer,
            counters=self.counters,
            max_batch=cfg.max_batch,
            request_timeout_s=cfg.request_timeout_ms / 1000,
            stamp=lambda: self._stamps.stamp(self.sm.clock_ms),
            on_corruption=self.corrupt.raise_alarm,
        )
        self.ops = ClusterOps(
            cfg,
            self.state,
            self.core,
            logstore,
            sm,
            net,
            self.replies,
            self.counters,
            reopen_sm=reopen_sm,
            install_step=install_step,
            revoke=self._revoke,
        )
        self.watches = WatchHub(
            self.state,
            self.core,
            self.replies,
            net,
            history_events=cfg.watch_history_events,
            history_bytes=cfg.watch_history_bytes,
            max_lag=cfg.watch_max_lag,
            max_watches=cfg.watch_max,
            request_timeout_s=cfg.request_timeout_ms / 1000,
            cut_off_s=2 * cfg.election_tick * self._tick_s,
            clock=clock,
            history=watch_log,
        )
        sm.report = self.watches.report  # the apply reports its changes to the feed
        self.applier = Applier(sm, self.observer, node_id=cfg.id, lazy=cfg.lazy_apply)
        self._syncer = Syncer()  # flushes the log while the loop applies (see syncer.py)
        self._notices = CommitNotices()  # prompt commits for followers serving watches
        self._spare = SpareBatches(cfg.spare_append_ms / 1000)  # boltraft.server.spare
        self._deferred: list[Incoming] = []  # frames a flush left for the next turn
        # the latest hard state that only raised the commit index, not yet written (None when
        # the log store has the latest): Raft needs no durable commit index (a restart learns
        # it again), so it is written with the next append of entries, a new term or vote,
        # or at close, not in a write of its own on every commit
        self._unwritten_hs: HardState | None = None
        self._full_log = LogEvery(FULL_WARN_S)  # the full-disk warning, now and then
        self._logged_lead = ""  # the leader the last "leader is now" line named
        self._refused_log = LogEvery(FULL_WARN_S)  # peer frames refused by the allow-list

    def _start_core(self) -> RawNode:
        """A consensus core started from what the log store holds (what a restart of the
        process would start from); notes its hard state and raises the commit index to
        its."""
        cfg = self.cfg
        hard_state, _ = self.logstore.initial_state()
        self._hard_state = hard_state
        self.state.commit = max(self.state.commit, hard_state.commit)
        raft_cfg = Config(
            id=cfg.id,
            election_tick=cfg.election_tick,
            heartbeat_tick=cfg.heartbeat_tick,
            pre_vote=cfg.pre_vote,
            check_quorum=cfg.check_quorum,
            lazy_commit=cfg.lazy_commit,
            spare_appends=cfg.spare_append_ms > 0,
            max_inflight_bytes=cfg.max_inflight_bytes,
            max_committed_size_per_ready=cfg.max_apply_bytes,
            applied=min(self.state.applied, hard_state.commit),  # an install may be ahead
            rng=self._rng,
        )
        return RawNode(raft_cfg, self.logstore)

    # --- what the node knows of itself (its NodeState) ----------------------------------------
    @property
    def raw(self) -> RawNode:
        """The current consensus core (replaced after a full disk: ``_on_log_full``)."""
        return self.core.raw

    @property
    def applied(self) -> int:
        return self.state.applied

    @property
    def commit(self) -> int:
        return self.state.commit

    @property
    def lead(self) -> str:
        return self.state.lead

    @property
    def role(self) -> Role:
        return self.state.role

    @property
    def conf_state(self) -> ConfState:
        return self.state.conf_state

    @property
    def disk_full(self) -> str:
        """Why this node's disk counts as full ("" when it does not): its log could not
        take the last entries, or its state machine could not apply."""
        return self.state.disk_full

    @property
    def is_leader(self) -> bool:
        return self.state.is_leader

    def status_dict(self) -> dict[str, Any]:
        """The ``status`` op's result (ids, role, term, indexes, members, counters)."""
        st = self.raw.status()
        state = self.state
        cs = state.conf_state
        return {
            "id": self.id,
            "listen": self.cfg.listen,
            "role": _ROLE_NAMES.get(state.role, str(state.role)),
            "term": st.term,
            "lead": state.lead,
            "leader_addr": state.addr_of(state.lead),
            "commit": state.commit,
            "applied": state.applied,
            "last_index": self.logstore.last_index(),
            "disk_full": state.disk_full,
            "corrupt": self.corrupt.alarm,
            "corrupt_check": self.corrupt.status(),
            "leader_gap_max_ms": round(state.leader_gap * 1000, 1),
            "prompt_commit": self._notices.members,
            "members": {"voters": list(cs.voters), "learners": list(cs.learners)},
            "addrs": {m: state.addr_of(m) for m in cs.members()},
            "node": dict(self.counters),
            "service": dict(self.service.stats),
            "transport": self.net.counters(),
            "cluster": self.ops.status(),
            "watch": self.watches.status(),
            "intake": self.intake.status(),
        }

    def close(self) -> None:
        """Applies the entries a follower kept and writes the latest commit index, then
        stops the cluster operations' background work and the log sync thread. The stores
        stay open: their opener closes them (``sm`` may be a state machine a snapshot
        install reopened)."""
        try:
            self.catch_up()
            if self._unwritten_hs is not None:
                try:
                    self.logstore.append([], self._unwritten_hs, sync=False)
                except NoSpaceError:  # only a commit index: a restart learns it again
                    log.warning("%s: the disk is full: the commit index was not written", self.id)
                self._unwritten_hs = None
            self.ops.close()
        finally:
            self.corrupt.close()
            self._syncer.close()

    # --- the loop ----------------------------------------------------------------------------
    def run(self, should_stop: Callable[[], bool]) -> None:
        """Runs the loop until ``should_stop()`` is true (checked at least once per tick)."""
        net, clock = self.net, self._clock
        while not should_stop():
            # frames left by the last flush (_step_until_synced), or requests it queued, are
            # handled without waiting
            busy = self._deferred or self.service.queued
            timeout = 0.0 if busy else self._next_tick - clock()
            applier = self.applier
            idle_apply = applier.has_kept and not busy and not applier.full
            if idle_apply and timeout > LAZY_APPLY_IDLE_S:
                timeout = LAZY_APPLY_IDLE_S
            for due in (self.watches.due, self._spare.due):
                if due is not None and due - clock() < timeout:
                    timeout = due - clock()
            frames = net.recv(timeout if timeout > 0 else 0.0)
            if idle_apply and not frames:
                self.catch_up()
            self.process(frames)

    def process(self, frames: Sequence[Incoming]) -> None:
        """Handles one iteration's frames, tick, batches and Readys."""
        now = self._clock()
        self.observer.iteration(now)
        if self._deferred:  # left by the last flush (_step_until_synced): they came first
            frames = [*self._deferred, *frames]
            self._deferred = []
        for frame in frames:
            self._dispatch(frame, now)
        if now >= self._next_tick:
            self._tick(now)
        state = self.state
        watching = state.role == Role.FOLLOWER and self.watches.live
        if self._notices.due(now, state.lead, watching):
            self.net.send_frame(state.lead, WATCHING_FRAME)
        service = self.service
        service.flush(now)
        while self.raw.has_ready():  # self.raw: _on_log_full may start a new core
            self._handle_ready(self.raw.ready())
        if service.writes_ready:  # an apply made room for a client's held writes
            service.flush(now)
            while self.raw.has_ready():
                self._handle_ready(self.raw.ready())
        service.send_queued()
        now = self._clock()
        self.watches.flush(now)
        if self._spare.due is not None:  # a SNAP that waited behind a batch starts a transfer
            self.net.queue(self._outgoing(self._spare.release(now)))
        self.net.flush()

    def catch_up(self) -> None:
        """Applies the committed entries a follower kept (``lazy_apply``) in ONE state-machine
        ``apply()``; a no-op when it kept none."""
        ents = self.applier.take_kept()
        if ents and self._apply(ents):
            self.ops.on_applied(ents, None)

    def _tick(self, now: float) -> None:
        # ONE tick however late the loop is (etcd's ticker drops missed ticks too): after a
        # stall (a huge apply that every node makes, a starved machine) a burst would expire
        # the election timers and the leader's quorum check at once, before the peers, held
        # up by the same work, could be heard: a healthy leader would be deposed. The
        # logical clock just runs slow while the loop does.
        self.catch_up()  # with a full disk (applier.full): the one retry per tick
        if self.applier.full and self.state.is_leader:
            self.ops.members.hand_over()  # it cannot answer writes: another voter can
        self.raw.tick()
        self.counters["ticks"] += 1
        self._next_tick += self._tick_s
        if now >= self._next_tick:
            self._next_tick = now + self._tick_s
        self.service.expire(now)
        if self._notices.expire(now):
            self.raw.set_prompt_commit(self._notices.members)
        self.watches.tick(now)
        self.ops.tick(now)
        self.corrupt.tick(now)

    def _dispatch(self, frame: Incoming, now: float) -> None:
        kind = frame.kind
        if kind == PEER_DOWN:
            self._on_peer_down(frame.payload)
            return
        access = self._access
        if access is not None and not self._admitted(access, frame):
            return
        if kind != "raft" and self.applier.has_kept and not self.applier.full:
            self.catch_up()  # requests and cluster operations see every entry it knows committed
        if kind == "raft":
            raw, state = self.raw, self.state
            lead = state.lead
            if state.role == Role.LEADER:
                self.observer.observe_messages(frame.payload)
                if frame.payload and frame.payload[0].frm not in state.member_ids:
                    self.ops.on_stranger(frame, frame.payload[0].frm)
            for m in frame.payload:
                if m.frm == lead:
                    if state.heard_lead == lead and now - state.leader_heard > state.leader_gap:
                        state.leader_gap = now - state.leader_heard
                    state.leader_heard = now
                    state.heard_lead = lead
                if m.type == MessageType.SNAP:
                    # Snapshots travel as "snap" frames (snaptransfer), never in a raft frame.
                    self.counters["snap_unsupported"] = self.counters.get("snap_unsupported", 0) + 1
                    continue
                try:
                    raw.step(m)
                except BoltraftError:
                    self.counters["step_errors"] += 1
        elif kind == "req":
            rid, body = frame.payload
            op = body.get("op") if type(body) is dict else None
            target = Target(frame.sender, rid, None, False, op if type(op) is str else "")
            refused = self.intake.admit(frame.sender, (rid,), frame.size)
            if refused is None:
                self._on_request(target, body, now)
            else:
                self.replies.refuse(target, fail(refused))
        elif kind == REQS:
            items = frame.payload
            refused = self.intake.admit(frame.sender, [it[0] for it in items], frame.size)
            if refused is None:
                self._on_requests(frame.sender, items, now)
            else:
                for rid, body in items:
                    op = body.get("op") if type(body) is dict else None
                    target = Target(frame.sender, rid, None, True, op if type(op) is str else "")
                    self.replies.refuse(target, fail(refused))
        elif kind == FWD:
            self.service.on_forward(frame.sender.decode(errors="replace"), frame.payload)
        elif kind == FWD_RESP:
            peer = frame.peer or frame.sender.decode(errors="replace")
            self.service.on_forward_reply(peer, frame.payload)
        elif kind in _CLUSTER_FRAMES:
            self.ops.on_frame(frame)
        elif kind == HASH:
            self.corrupt.on_frame(frame.sender.decode(errors="replace"), frame.payload)
        elif kind == WATCHING:
            peer = frame.peer or frame.sender.decode(errors="replace")
            if peer in self.state.member_ids and self._notices.heard(peer, now):
                self.raw.set_prompt_commit(self._notices.members)
        else:
            self.counters["unexpected_frames"] = self.counters.get("unexpected_frames", 0) + 1

    def _admitted(self, access: Access, frame: Incoming) -> bool:
        """True when ``frame`` may be handled: a peer frame from the member it claims to
        be, or client requests the connection's key may send (the others are answered
        ``permission_denied`` here, and the frame goes on with the rest). A frame refused
        whole is counted in ``refused_frames``."""
        kind = frame.kind
        if kind in PEER_FRAMES:
            if access.admits_peer_frame(frame):
                return True
        elif kind == "req" or kind == REQS:
            who = access.principal(frame.user)
            if kind == "req":
                rid, body = frame.payload
                if who is not None and permits(who, body):
                    return True
                op = body.get("op") if type(body) is dict else None
                target = Target(frame.sender, rid, None, False, op if type(op) is str else "")
                self.replies.reply(target, fail(denied(who, body)))
                self.counters["denied"] = self.counters.get("denied", 0) + 1
                return False
            items = frame.payload
            allowed = [it for it in items if who is not None and permits(who, it[1])]
            if len(allowed) < len(items):
                for rid, body in items:
                    if who is None or not permits(who, body):
                        op = body.get("op") if type(body) is dict else None
                        target = Target(
                            frame.sender, rid, None, True, op if type(op) is str else ""
                        )
                        self.replies.reply(target, fail(denied(who, body)))
                self.counters["denied"] = self.counters.get("denied", 0) + 1
                items[:] = allowed
            return True
        self.counters["refused_frames"] = self.counters.get("refused_frames", 0) + 1
        who = access.principal(frame.user)
        if self._refused_log.due(kind, self._clock()):
            log.warning(
                "%s: refused a %r frame as %r from %s",
                self.id,
                kind,
                frame.sender.decode(errors="replace"),
                "an unknown key" if who is None else f"{who.kind} {who.name!r}",
            )
        return False

    def _revoke(self, node_id: str) -> None:
        """Revokes the CURVE key of the removed node ``node_id`` through the log (a ``keys``
        write nobody waits for); nothing without keys."""
        if self._access is not None:
            body = {"op": "keys", "name": node_id, "kind": "node", "key": "", "role": "node"}
            self.service.on_request(INTERNAL, body, self._clock())

    def _on_peer_down(self, peer: str) -> None:
        """The connection to ``peer`` closed: when ``peer`` leads, the core forgets it and
        the survivors elect a new leader without waiting for an election timeout
        (``RawNode.report_disconnected``)."""
        if peer == self.state.lead and peer != self.id:
            log.info("%s: the connection to the leader %s closed", self.id, peer)
        self.raw.report_disconnected(peer)

    def _on_request(self, target: Target, body: Any, now: float) -> None:
        """Routes one client request: node status and stage timings are answered here,
        cluster operations go to ``ops``, everything else to the request service."""
        op = body.get("op") if isinstance(body, dict) else None
        if op == "status":
            self.replies.reply(target, ok(self.status_dict()))
        elif op == "stats":  # per-batch stage timings (the observer's; boltraft.benchmark)
            since = body.get("since", 0.0)
            if isinstance(since, bool) or not isinstance(since, (int, float)):
                self.service.bad(target, "since must be a number (wall-clock seconds)")
            else:
                self.replies.reply(target, ok(self.observer.snapshot(float(since))))
        elif op in CLUSTER_OPS:
            self.ops.on_request(target, body, now)
        elif op in WATCH_OPS:
            self.watches.on_request(target, body, now)
        elif op == "keys" and self._access is None:
            self.service.bad(target, "this node runs without CURVE keys: no allow-list to change")
        else:
            self.service.on_request(target, body, now)

    def _on_requests(self, sender: bytes, items: list[list[Any]], now: float) -> None:
        """Handles each ``[request_id, body]`` of a ``reqs`` frame like a ``req`` whose answer
        goes into a ``resps`` frame. Cluster operations are refused there (they go in ``req``
        frames, one at a time)."""
        for rid, body in items:
            op = body.get("op") if type(body) is dict else None
            target = Target(sender, rid, None, True, op if type(op) is str else "")
            if type(op) is not str:
                self.service.bad(target, "a request body must be a map with a string 'op'")
            elif is_cluster_op(body) or body["op"] in WATCH_OPS:
                self.service.bad(target, f"send {body['op']!r} in a 'req' frame, not in 'reqs'")
            else:
                self._on_request(target, body, now)

    def _handle_ready(self, rd: Ready) -> None:
        net, state = self.net, self.state
        self.counters["readys"] += 1
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state.lead, rd.soft_state.role)
        if rd.early_messages or rd.spare_messages:
            if rd.spare_messages:
                self._spare.hold(rd.spare_messages, self._clock())
            net.queue(self._outgoing(self._spare.route(rd.early_messages)))
            net.flush()
        committed = self.applier.select(
            rd,
            state.role == Role.FOLLOWER,
            self.service.reads_waiting,
            self.watches.live,
            now=self._clock(),
        )
        hs = rd.hard_state
        syncing = False
        on_thread = False  # the flush runs on the sync thread while the loop applies
        if rd.snapshot is not None:
            try:
                self._install(rd.snapshot, hs or self._hard_state)
            except SnapshotError as err:  # nothing was changed: the leader offers it again
                self.counters["snapshot_refused"] = self.counters.get("snapshot_refused", 0) + 1
                log.warning(
                    "%s: cannot install snapshot %d: %s", self.id, rd.snapshot.index, err.message
                )
                self._restart_core()
                return
        try:
            if rd.entries or hs is not None:
                old = self._hard_state
                commit_only = hs is not None and hs.term == old.term and hs.vote == old.vote
                syncing = self.cfg.fsync and (bool(rd.entries) or not commit_only)
                if rd.entries or not commit_only:
                    # written now (into the page cache), flushed on the sync thread while we
                    # apply
                    self.logstore.append(rd.entries, hs or self._unwritten_hs, sync=False)
                    self._unwritten_hs = None
                    state.log_full = ""
                else:  # a raised commit alone need not be durable: the next append takes it
                    self._unwritten_hs = hs
        except NoSpaceError as err:  # nothing of this Ready was written
            self._on_log_full(err)
            return
        if rd.entries or hs is not None:
            if syncing:
                self.counters["fsyncs"] += 1
                on_thread = bool(committed)
                if on_thread:
                    self._syncer.start(self.logstore.sync)
                else:
                    self._flush_stepping()
            if hs is not None:
                self._hard_state = hs
                if hs.commit > state.commit:
                    state.commit = hs.commit
        # a leader's own entries, durable now: applied ahead while the followers persist them
        if (
            rd.entries
            and not committed
            and state.role == Role.LEADER
            and self.applier.prepare(rd.entries)
        ):
            self.counters["prepared"] += 1
        if syncing:
            if on_thread:
                if not self._apply(committed):
                    committed = []
                # persist before sending what depends on it; what arrives meanwhile is stepped
                self._step_until_synced(self._arrived() if not self._syncer.done else [])
            if rd.entries:
                self.observer.persisted(rd.entries[-1].index)
            if rd.messages:
                net.queue(self._outgoing(self._spare.route(rd.messages)))
                net.flush()
        else:
            if rd.entries:
                self.observer.persisted(rd.entries[-1].index)
            # A leader answers its clients first: its messages here (no new entries: those
            # left as early_messages) are commit notices and heartbeats, which can wait for
            # the apply. A follower's heartbeat responses confirm reads: they go first.
            apply_first = state.role == Role.LEADER
            if committed and apply_first and not self._apply(committed):
                committed = []
            if rd.messages:
                net.queue(self._outgoing(self._spare.route(rd.messages)))
                net.flush()
            if committed and not apply_first and not self._apply(committed):
                committed = []
        if rd.conf_state is not None:
            self._set_members(rd.conf_state)
        if committed or rd.conf_state is not None:
            self.ops.on_applied(committed, rd.conf_state)
        if rd.read_states:
            self.service.on_read_states(rd.read_states)
            self.watches.on_read_states(rd.read_states)
        self.raw.advance(rd)

    def _apply(self, ents: list[Entry]) -> bool:
        """True after applying committed ``ents`` and answering the writes and the reads
        waiting for them; False when the disk was too full (the applier kept the entries
        it could not apply for the retry at the next tick; meanwhile a leader answers new
        writes ``unavailable`` and hands leadership over, and confirmed reads that would
        wait for the apply are answered ``unavailable``). The writes of an entry applied
        ahead are answered first, before the apply commits it (``Applier.ahead``)."""
        ahead = self.applier.ahead(ents)
        if ahead is not None:
            self.service.on_applied(ents, ahead)  # reads wait: state.applied has not moved
        out = self.applier.apply(ents)
        state = self.state
        if out.entries:
            last = out.entries[-1].index
            if last > state.applied:
                state.applied = last
            if not out.stalled and last > state.commit:
                state.commit = last
        state.apply_full = self.applier.full
        if out.stalled:
            assert out.error is not None
            self.counters["apply_disk_full"] += 1
            self._warn_full(out.error)
            if out.entries:
                self.service.on_applied(out.entries, out.results)
                self.watches.reset(state.applied, "an apply was cut short by a full disk")
            self.service.on_apply_stalled()
            return False
        self.service.on_applied(out.entries, out.results)
        if self._access is not None and KEYS_SET in out.results:
            self._access.load(self.sm.key_records())
        # the answers leave now, before the Ready's messages and the change feed's work
        self.service.send_queued()
        self.observer.replied(ents[-1].index)
        self.watches.on_applied(out.entries)
        return True

    def _install(self, meta: SnapshotMeta, hard_state: HardState) -> None:
        """Installs the snapshot the core accepted and moves every part to the reopened
        state machine (or, when the state already covers it, only the log)."""
        sm = self.ops.install(meta, hard_state, self.state.applied)
        state = self.state
        if sm is not None:
            self.sm = self.service.sm = self.applier.sm = sm
            sm.report = self.watches.report
            state.applied = sm.applied[0]
            self.watches.reset(state.applied, "it installed a snapshot")
            if self._access is not None:
                self._access.load(sm.key_records())
        state.commit = max(state.commit, meta.index, state.applied)

    def _warn_full(self, err: NoSpaceError) -> None:
        if self._full_log.due("", self._clock()):
            log.warning("%s: %s (%s); retrying", self.id, self.disk_full, err.message)

    def _on_log_full(self, err: NoSpaceError) -> None:
        """Restarts the consensus core from what the log store holds, because the disk was
        too full to persist a Ready (``err``; the store wrote nothing of it). This is what a
        crash and restart of the process would do, without the process dying: the Ready's
        messages were not sent (they depended on what was not written), its committed
        entries come again from the new core (which starts at ``applied``), and this node is
        a follower until an election says otherwise. The writes it proposed past its log's
        end and the reads waiting for an apply are answered (``Service.on_log_full``). The
        next append that succeeds ends the condition."""
        self.counters["log_disk_full"] += 1
        self.state.log_full = f"node {self.id}'s disk is full: its raft log cannot grow"
        self._warn_full(err)
        sole_voter = self.state.conf_state.voters == (self.id,)
        self.service.on_log_full(self.logstore.last_index(), sole_voter)
        self._restart_core(quiet=True)

    def _restart_core(self, quiet: bool = False) -> None:
        """Starts a new consensus core from what the log store holds, as a restart of the
        process would: the committed entries kept for a later apply come again from the new
        core, the node is a follower until an election says otherwise, and reads waiting for
        a confirmation are answered (the new core knows none). ``quiet``: the leader the new
        core forgot is not logged as a leader change (a full log restarts the core at every
        append it cannot take, and the same leader is heard again at once)."""
        self.applier.take_kept()
        self._unwritten_hs = None
        self.core.raw = self._start_core()
        self.raw.set_prompt_commit(self._notices.members)
        self._on_soft_state("", Role.FOLLOWER, quiet)
        self.service.on_leader_change()
        self.watches.on_leader_change()
        self._set_members(self.raw.status().conf_state)

    def _flush_stepping(self) -> None:
        """Flushes the log; meanwhile (the flush on the sync thread) steps the frames that
        have already arrived and those that arrive before it ends (``_step_until_synced``).
        With nothing arrived (``_arrived``), the flush runs here: a thread hand-off would
        only add its latency."""
        frames = self._arrived()
        if not frames:
            self.logstore.sync()
            return
        self._syncer.start(self.logstore.sync)
        self._step_until_synced(frames)

    def _step_until_synced(self, frames: list[Incoming]) -> None:
        """Steps ``frames``, then what keeps arriving while the flush started on the sync
        thread runs, and returns once the flush ended (re-raising its error). Stepped: Raft
        messages from members, data requests and forwarded writes, which would otherwise
        wait for the flush; the core's Readys they cause wait for the next turn, and so do
        the requests the service queued (the loop then does not wait for a frame or a tick:
        ``Service.queued``). Frames that may touch the log store (snapshot transfers,
        cluster operations, traffic from non-members) wait for the next iteration, which
        then starts without waiting."""
        syncer = self._syncer
        stepped = 0
        while frames:
            now = self._clock()
            members = self.state.member_ids
            for frame in frames:
                kind = frame.kind
                if (
                    (kind == "raft" and all(m.frm in members for m in frame.payload))
                    or (kind == "req" and not is_cluster_op(frame.payload[1]))
                    or kind in _DATA_FRAMES
                    or kind == PEER_DOWN
                ):
                    self._dispatch(frame, now)
                    stepped += 1
                else:
                    self._deferred.append(frame)
            if syncer.done or self._deferred:
                break
            frames = self._arrived()
        self.counters["stepped_during_flush"] += stepped
        syncer.wait()

    def _arrived(self) -> list[Incoming]:
        """The frames that have arrived, without waiting; [] at once when the cheap look
        (``Net.pending``) sees none, without a ``recv`` of every socket."""
        return self.net.recv(0.0) if self.net.pending() else []

    def _outgoing(self, msgs: list[Message]) -> list[Message]:
        for m in msgs:
            if m.type == MessageType.SNAP:  # shipped in chunks on its own path instead
                for x in msgs:
                    if x.type == MessageType.SNAP:
                        self.ops.on_snap_out(x)
                return [x for x in msgs if x.type != MessageType.SNAP]
        return msgs

    def _on_soft_state(self, lead: str, role: Role, quiet: bool = False) -> None:
        """Records the core's leader and role. A leader change is logged unless ``quiet``
        or it names the leader the last such line named (a quiet change and back)."""
        state = self.state
        if lead != state.lead:
            if not quiet and lead != self._logged_lead:
                log.info("%s: leader is now %r (role %s)", self.id, lead, _ROLE_NAMES.get(role))
                self._logged_lead = lead
            state.lead = lead
            self.service.on_leader_change()
            self.watches.on_leader_change()
        if role == Role.LEADER and state.role != Role.LEADER:
            self._stamps.start(self.sm.clock_ms)
        state.role = role

    def _set_members(self, cs: ConfState, initial: dict[str, str] | None = None) -> None:
        state = self.state
        state.conf_state = cs
        state.member_ids = frozenset(cs.members())
        addrs = dict(initial or {})
        addrs.update(cs.addrs)
        state.peer_addrs = {m: addrs[m] for m in cs.members() if m != self.id and addrs.get(m)}
        set_peers(self.net, state.peer_addrs)


def set_peers(net: Net, addrs: dict[str, str]) -> None:
    """Makes ``net``'s peer table exactly ``addrs`` (unchanged entries keep their sockets;
    an entry the network refuses is logged and left out)."""
    current = net.peers()
    for pid in current.keys() - addrs.keys():
        net.remove_peer(pid)
    for pid, addr in addrs.items():
        if current.get(pid) != addr:
            try:
                net.add_peer(pid, addr)
            except BoltraftError as err:  # an unusable id or address in the membership
                log.error("cannot reach member %r at %r: %s", pid, addr, err.message)
