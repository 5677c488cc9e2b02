"""Returns nothing; the node loop: ONE thread owns the RawNode, the network, the log store and
the state machine, so none of them needs a lock (the one exception: the log's flush runs on
the sync thread while the loop leaves the log store alone).

Each iteration (``process``): take every frame that is ready (waiting at most until the next
tick), step Raft messages into the core and queue client requests, tick the core on the
monotonic clock, let the service batch the iteration's requests (one ``propose()`` for all
writes, one ReadIndex context for all linearizable reads), then drain the core's Readys
following the contract in ``boltraft.raft.types``:

1. send ``early_messages`` (the leader's appends: it writes its own log while they travel);
2. write entries + hard state in ONE log append (a hard state that only raises the commit
   index waits for the next append: ``_unwritten_hs``); when anything in it must be durable
   (entries, a new term or vote), flush it: on the sync
   thread while step 3 applies (``boltraft.server.syncer``); with nothing to apply, while
   the loop steps the Raft messages and requests already waiting (``_flush_stepping``),
   or inline when there are none;
3. apply ``committed_entries`` in ONE state-machine ``apply()``, answer their writes, then
   answer read states (a read waits until applied >= its read index). A follower with
   ``lazy_apply`` keeps them instead and applies what it kept in one batch later
   (``boltraft.server.applying``); its flush then runs without a thread hand-off (step 2);
4. send ``messages``, after the flush (persist before send). Without a flush a follower
   sends them before applying (heartbeat responses confirm reads), a leader after (it
   answers its clients first);
5. ``advance()``.

A full disk never stops the node: a log that cannot take a Ready restarts the core from the
log (``_on_log_full``); a state machine that cannot apply keeps the entries and retries at
every tick (``boltraft.server.applying``).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from boltraft.benchmark.stages import StageRecorder
from boltraft.errors import BoltraftError, NoSpaceError
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
)
from boltraft.server.applying import LAZY_APPLY_IDLE_S, ApplyMixin
from boltraft.server.clusterops import FRAME_KINDS, ClusterOps
from boltraft.server.config import ServerConfig
from boltraft.server.logevery import LogEvery
from boltraft.server.net import FWD, FWD_RESP, REQS, Net, set_peers
from boltraft.server.service import Service, Target
from boltraft.server.syncer import Syncer
from boltraft.storage.fsm import BucketStateMachine
from boltraft.transport.zmq_transport import Incoming

log = logging.getLogger("boltraft.server")

# pipelined data requests, writes a follower forwards and their answers: never cluster ops
_DATA_FRAMES = frozenset((REQS, FWD, FWD_RESP))
_ROLE_NAMES = {Role.FOLLOWER: "follower", Role.PRE_CANDIDATE: "pre_candidate"}
_ROLE_NAMES.update({Role.CANDIDATE: "candidate", Role.LEADER: "leader"})
FULL_WARN_S = 10.0  # a full disk is logged as a warning at most this often


class Node(ApplyMixin):
    """One running member of the cluster (its stores are opened and closed by the caller).

    Invariants: ``applied <= commit``; ``lead`` is "" or a member id; only the loop's thread
    touches this object; ``_unapplied`` holds committed entries past ``applied`` in index
    order, and is empty unless this node is a follower with ``lazy_apply`` (then none of
    them is a membership change) or its state machine found the disk full (``_apply_full``);
    ``disk_full`` is "" unless the last log append or apply found the disk full.
    """

    def __init__(
        self,
        cfg: ServerConfig,
        *,
        net: Net,
        logstore: LogStore,
        sm: BucketStateMachine,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.id = cfg.id
        self.net = net
        self.logstore = logstore
        self.sm = sm
        self._clock = clock
        self._wall = wall_clock
        if logstore.bootstrap(ConfState(voters=tuple(sorted(cfg.members)), addrs=cfg.members)):
            log.info("bootstrapped a new cluster: %s", cfg.members)
        self._rng = rng or random.Random()
        self.applied: int = sm.applied[0]
        self.commit: int = self.applied
        self._hard_state: HardState = HardState()
        self.raw: RawNode = self._start_core()
        conf_state = self.raw.status().conf_state  # with the log's conf changes replayed
        self.lead: str = ""
        self.role: Role = Role.FOLLOWER
        self.conf_state: ConfState = conf_state
        self.peer_addrs: dict[str, str] = {}
        self._set_members(conf_state, initial=cfg.peers)
        self._tick_s = cfg.tick_ms / 1000
        self._election_s = cfg.election_tick * self._tick_s
        now = clock()
        self._next_tick = now + self._tick_s
        self._leader_heard = -1e18  # monotonic time a message from the leader last arrived
        self.service = Service(self)
        self.ops = ClusterOps(self)  # snapshots, snapshot transfer, membership, backups
        self.stages = StageRecorder()  # per-batch commit stage timings (the stats op)
        self.counters: dict[str, int] = {"ticks": 0, "readys": 0, "fsyncs": 0, "step_errors": 0}
        self._syncer = Syncer()  # flushes the log while the loop applies (see syncer.py)
        self._deferred: list[Incoming] = []  # frames _flush_stepping left for the next turn
        self._unapplied: list[Entry] = []  # lazy_apply: committed, kept for a later batch
        self._unapplied_bytes = 0  # their command bytes
        # the latest hard state that only raised the commit index, not yet written (None when
        # the log store has the latest): Raft needs no durable commit index (a restart learns
        # it again), so it is written with the next append of entries, a new term or vote,
        # or at close, not in a write of its own on every commit
        self._unwritten_hs: HardState | None = None
        self.counters["stepped_during_flush"] = 0
        # why the disk is full ("" when it is not): the log could not take the last Ready
        # (cleared by the next append that succeeds), or the state machine could not apply
        # (cleared by the next apply that succeeds); see _on_log_full and _apply
        self._log_full = ""
        self._apply_full = ""
        self._full_log = LogEvery(FULL_WARN_S)  # the full-disk warning, now and then
        self.counters["log_disk_full"] = 0
        self.counters["apply_disk_full"] = 0

    def _start_core(self) -> RawNode:
        """Returns a consensus core started from what the log store holds (what a restart of
        the process would start from), after noting its hard state and raising ``commit`` to
        its commit index."""
        cfg = self.cfg
        hard_state, _ = self.logstore.initial_state()
        self._hard_state = hard_state
        self.commit = max(self.commit, hard_state.commit)
        raft_cfg = Config(
            id=cfg.id,
            election_tick=cfg.election_tick,
            heartbeat_tick=cfg.heartbeat_tick,
            pre_vote=cfg.pre_vote,
            check_quorum=cfg.check_quorum,
            lazy_commit=cfg.lazy_commit,
            applied=min(self.applied, hard_state.commit),  # a snapshot install may be ahead
            rng=self._rng,
        )
        return RawNode(raft_cfg, self.logstore)

    # --- small helpers used by the service ----------------------------------------------------
    @property
    def disk_full(self) -> str:
        """Returns why this node's disk counts as full ("" when it does not): its log could
        not take the last entries, or its state machine could not apply."""
        return self._log_full or self._apply_full

    @property
    def is_leader(self) -> bool:
        """Returns True while this node is the leader."""
        return self.role == Role.LEADER

    def wall_ms(self) -> int:
        """Returns the wall clock in milliseconds (the leader stamps commands with it)."""
        return int(self._wall() * 1000)

    def addr_of(self, node_id: str) -> str:
        """Returns the address of a member ("" when unknown or ``node_id`` is "")."""
        if node_id == self.id:
            return self.cfg.listen
        return self.peer_addrs.get(node_id, "")

    def leader_recently_heard(self, now: float) -> bool:
        """Returns True when this node leads, or heard its leader within an election timeout."""
        if self.role == Role.LEADER:
            return True
        return bool(self.lead) and now - self._leader_heard <= self._election_s

    def count(self, name: str) -> None:
        """Returns None after incrementing the counter ``name``."""
        self.counters[name] = self.counters.get(name, 0) + 1

    def status_dict(self) -> dict[str, Any]:
        """Returns the ``status`` op's result (ids, role, term, indexes, members, counters)."""
        st = self.raw.status()
        cs = self.conf_state
        return {
            "id": self.id,
            "listen": self.cfg.listen,
            "role": _ROLE_NAMES.get(self.role, str(self.role)),
            "term": st.term,
            "lead": self.lead,
            "leader_addr": self.addr_of(self.lead),
            "commit": self.commit,
            "applied": self.applied,
            "last_index": self.logstore.last_index(),
            "disk_full": self.disk_full,
            "members": {"voters": list(cs.voters), "learners": list(cs.learners)},
            "addrs": {m: self.addr_of(m) for m in cs.members()},
            "node": dict(self.counters),
            "service": dict(self.service.stats),
            "transport": self.net.counters(),
            "cluster": self.ops.status(),
        }

    def close(self) -> None:
        """Returns None after applying the entries a follower kept and writing the latest
        commit index, then stopping the cluster operations' background work and the log sync
        thread (the stores stay open: their opener closes them)."""
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
            self._syncer.close()

    # --- the loop ----------------------------------------------------------------------------
    def run(self, should_stop: Callable[[], bool]) -> None:
        """Returns None once ``should_stop()`` is true (checked at least once per tick)."""
        net, clock = self.net, self._clock
        while not should_stop():
            # frames left by the last flush (_flush_stepping) are handled without waiting
            timeout = 0.0 if self._deferred else self._next_tick - clock()
            idle_apply = bool(self._unapplied) and not self._deferred and not self._apply_full
            if idle_apply and timeout > LAZY_APPLY_IDLE_S:
                timeout = LAZY_APPLY_IDLE_S
            frames = net.recv(timeout if timeout > 0 else 0.0)
            if idle_apply and not frames:
                self.catch_up()
            self.process(frames)

    def process(self, frames: Sequence[Incoming]) -> None:
        """Returns None after handling one iteration's frames, ticks, batches and Readys."""
        now = self._clock()
        self.stages.iteration(now)
        if self._deferred:  # left by the last flush (_flush_stepping): they came first
            frames = [*self._deferred, *frames]
            self._deferred = []
        for frame in frames:
            self._dispatch(frame, now)
        if now >= self._next_tick:
            self._tick(now)
        service = self.service
        service.flush(now)
        while self.raw.has_ready():  # self.raw: _on_log_full may start a new core
            self._handle_ready(self.raw.ready())
        service.send_queued()
        self.net.flush()

    def _tick(self, now: float) -> None:
        # ONE tick however late the loop is (etcd's ticker drops missed ticks too): after a
        # stall (a huge apply that every node makes, a starved machine) a burst would expire
        # the election timers and the leader's quorum check at once, before the peers, held
        # up by the same work, could be heard: a healthy leader would be deposed. The
        # logical clock just runs slow while the loop does.
        self.catch_up()  # with a full disk (_apply_full): the one retry per tick
        if self._apply_full and self.role == Role.LEADER:
            self.ops.members.hand_over()  # it cannot answer writes: another voter can
        self.raw.tick()
        self.counters["ticks"] += 1
        self._next_tick += self._tick_s
        if now >= self._next_tick:
            self._next_tick = now + self._tick_s
        self.service.expire(now)
        self.ops.tick(now)

    def _dispatch(self, frame: Incoming, now: float) -> None:
        kind = frame.kind
        if kind != "raft" and self._unapplied and not self._apply_full:
            self.catch_up()  # requests and cluster operations see every entry it knows committed
        if kind == "raft":
            raw, lead = self.raw, self.lead
            if self.role == Role.LEADER:
                self.stages.observe_messages(frame.payload)
                if frame.payload and frame.payload[0].frm not in self.member_ids:
                    self.ops.on_stranger(frame, frame.payload[0].frm)
            for m in frame.payload:
                if m.frm == lead:
                    self._leader_heard = now
                if m.type == MessageType.SNAP:
                    # Snapshots travel as "snap" frames (snaptransfer), never in a raft frame.
                    self.count("snap_unsupported")
                    continue
                try:
                    raw.step(m)
                except BoltraftError:
                    self.counters["step_errors"] += 1
        elif kind == "req":
            rid, body = frame.payload
            self.service.on_request(Target(frame.sender, rid), body, now)
        elif kind == REQS:
            self.service.on_requests(frame.sender, frame.payload, now)
        elif kind == FWD:
            self.service.on_forward(frame.sender.decode(errors="replace"), frame.payload)
        elif kind == FWD_RESP:
            self.service.on_forward_reply(frame.payload)
        elif kind in FRAME_KINDS:
            self.ops.on_frame(frame)
        else:
            self.count("unexpected_frames")

    def _handle_ready(self, rd: Ready) -> None:
        net = self.net
        self.counters["readys"] += 1
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state.lead, rd.soft_state.role)
        if rd.early_messages:
            net.queue(self._outgoing(rd.early_messages))
            net.flush()
        committed = self._lazy_apply(rd)
        hs = rd.hard_state
        syncing = False
        try:
            if rd.snapshot is not None:
                self.ops.on_ready_snapshot(rd.snapshot, hs or self._hard_state)
            if rd.entries or hs is not None:
                old = self._hard_state
                commit_only = hs is not None and hs.term == old.term and hs.vote == old.vote
                syncing = self.cfg.fsync and (bool(rd.entries) or not commit_only)
                if rd.entries or not commit_only:
                    # written now (into the page cache), flushed on the sync thread while we
                    # apply
                    self.logstore.append(rd.entries, hs or self._unwritten_hs, sync=False)
                    self._unwritten_hs = None
                    self._log_full = ""
                else:  # a raised commit alone need not be durable: the next append takes it
                    self._unwritten_hs = hs
        except NoSpaceError as err:  # nothing of this Ready was written
            self._on_log_full(err)
            return
        if rd.entries or hs is not None:
            if syncing:
                self.counters["fsyncs"] += 1
                if committed:
                    self._syncer.start(self.logstore.sync)
                else:
                    self._flush_stepping()
            if hs is not None:
                self._hard_state = hs
                if hs.commit > self.commit:
                    self.commit = hs.commit
        if syncing:
            if committed and not self._apply(committed):
                committed = []
            self._syncer.wait()  # persist before sending what depends on it
            if rd.entries:
                self.stages.persisted(rd.entries[-1].index)
            if rd.messages:
                net.queue(self._outgoing(rd.messages))
                net.flush()
        else:
            if rd.entries:
                self.stages.persisted(rd.entries[-1].index)
            # A leader answers its clients first: its messages here (no new entries: those
            # left as early_messages) are commit notices and heartbeats, which can wait for
            # the apply. A follower's heartbeat responses confirm reads: they go first.
            apply_first = self.role == Role.LEADER
            if committed and apply_first and not self._apply(committed):
                committed = []
            if rd.messages:
                net.queue(self._outgoing(rd.messages))
                net.flush()
            if committed and not apply_first and not self._apply(committed):
                committed = []
        if rd.conf_state is not None:
            self._set_members(rd.conf_state)
        if committed or rd.conf_state is not None:
            self.ops.on_applied(committed, rd.conf_state)
        if rd.read_states:
            self.service.on_read_states(rd.read_states)
        self.raw.advance(rd)

    def _on_log_full(self, err: NoSpaceError) -> None:
        """Returns None after restarting the consensus core from what the log store holds,
        because the disk was too full to persist a Ready (``err``; the store wrote nothing of
        it). This is what a crash and restart of the process would do, without the process
        dying: the Ready's messages were not sent (they depended on what was not written),
        its committed entries come again from the new core (which starts at ``applied``),
        and this node is a follower until an election says otherwise. The writes it
        proposed past its log's end and the reads waiting for an apply are answered
        (``Service.on_log_full``). The next append that succeeds ends the condition."""
        self.counters["log_disk_full"] += 1
        self._log_full = f"node {self.id}'s disk is full: its raft log cannot grow"
        self._warn_full(err)
        self._take_kept()  # committed, not applied: the new core hands them out again
        self._unwritten_hs = None
        self.service.on_log_full(self.logstore.last_index(), self.conf_state.voters == (self.id,))
        self.raw = self._start_core()
        self._on_soft_state("", Role.FOLLOWER)
        self.service.on_leader_change()  # the new core knows no read it was asked to confirm
        self._set_members(self.raw.status().conf_state)

    def _flush_stepping(self) -> None:
        """Returns None once the log is flushed; meanwhile (the flush on the sync thread)
        steps the Raft messages, data requests and forwarded writes that have already
        arrived, which would otherwise wait for the flush. Frames that may touch the log
        store (snapshot transfers, cluster operations, traffic from non-members) wait for
        the next iteration, which then starts without waiting. With nothing waiting, the
        flush runs here: a thread hand-off would only add its latency."""
        frames = self.net.recv(0.0)
        if not frames:
            self.logstore.sync()
            return
        self._syncer.start(self.logstore.sync)
        now = self._clock()
        members = self.member_ids
        stepped = 0
        for frame in frames:
            kind = frame.kind
            if (
                (kind == "raft" and all(m.frm in members for m in frame.payload))
                or (kind == "req" and not self.service.is_cluster_op(frame.payload[1]))
                or kind in _DATA_FRAMES
            ):
                self._dispatch(frame, now)
                stepped += 1
            else:
                self._deferred.append(frame)
        self.counters["stepped_during_flush"] += stepped
        self._syncer.wait()

    def _outgoing(self, msgs: list[Message]) -> list[Message]:
        for m in msgs:
            if m.type == MessageType.SNAP:  # shipped in chunks on its own path instead
                snaps = [x for x in msgs if x.type == MessageType.SNAP]
                for x in snaps:
                    self.ops.on_snap_out(x)
                return [x for x in msgs if x.type != MessageType.SNAP]
        return msgs

    def _on_soft_state(self, lead: str, role: Role) -> None:
        if lead != self.lead:
            log.info("%s: leader is now %r (role %s)", self.id, lead, _ROLE_NAMES.get(role))
            self.lead = lead
            self.service.on_leader_change()
        self.role = role

    def _set_members(self, cs: ConfState, initial: dict[str, str] | None = None) -> None:
        self.conf_state = cs
        self.member_ids = frozenset(cs.members())
        addrs = dict(initial or {})
        addrs.update(cs.addrs)
        self.peer_addrs = {m: addrs[m] for m in cs.members() if m != self.id and addrs.get(m)}
        set_peers(self.net, self.peer_addrs)
