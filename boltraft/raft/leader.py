"""The leader side of the core: replication, commit, heartbeats and check-quorum, ReadIndex,
leadership transfer, proposals and membership changes. A mixin of
:class:`boltraft.raft.raft.Raft` (it uses that class's state; see its invariants)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from boltraft.errors import LogCompactedError, MembershipError, ProposalDroppedError
from boltraft.raft.confchange import apply_conf_change, encode_conf_change
from boltraft.raft.log import data_size
from boltraft.raft.progress import Progress
from boltraft.raft.quorum import committed_index, has_quorum
from boltraft.raft.types import (
    NONE,
    ConfChange,
    Entry,
    EntryType,
    Message,
    MessageType,
    NodeId,
    ProgressState,
    ReadState,
    Role,
)

if TYPE_CHECKING:
    from boltraft.raft.raft import Raft

MT = MessageType


class LeaderMixin:
    """Leader behaviour; every method here assumes ``self`` is a Raft."""

    # --- becoming leader ---------------------------------------------------------------------
    def become_leader(self: Raft) -> None:
        """Returns None after becoming leader of the current term and appending its no-op
        (paper 5.4.2: entries of earlier terms commit only under an entry of this term)."""
        self._reset(self.term)
        self.lead = self.id
        self.role = Role.LEADER
        self.tick = self._tick_heartbeat
        self._step = self._step_leader
        self._handlers = {
            MT.APP_RESP: self._leader_app_resp,
            MT.HEARTBEAT_RESP: self._leader_heartbeat_resp,
            MT.READ_INDEX: self._leader_read_index,
        }
        me = self.progress[self.id]
        me.become_replicate()
        me.match = self.log.durable_index()
        me.next = self.log.last_index() + 1
        # Every conf change already in the log counts as pending: none may be proposed
        # until the no-op (and so everything before it) has committed.
        self.pending_conf_index = self.log.last_index()
        self._append_and_broadcast([Entry(self.term, self.log.last_index() + 1)])

    def _step_leader(self: Raft, m: Message) -> None:
        handler = self._handlers.get(m.type)
        if handler is not None:
            handler(m)

    def _tick_heartbeat(self: Raft) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.cfg.election_tick:
            self.election_elapsed = 0
            if self.cfg.check_quorum and not self._quorum_active():
                self.become_follower(self.term, NONE)  # check-quorum (thesis 6.2)
                return
            if self.lead_transferee != NONE:
                self.lead_transferee = NONE  # the transfer did not finish in time: abort
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick:
            self.heartbeat_elapsed = 0
            self._broadcast_heartbeat(self.read_only.last_ctx())

    def _quorum_active(self: Raft) -> bool:
        active = {self.id}
        for nid, pr in self.progress.items():
            if pr.recent_active:
                active.add(nid)
            if nid != self.id:
                pr.recent_active = False
        return has_quorum(self.voters, active)

    # --- sending -----------------------------------------------------------------------------
    def send_append(self: Raft, to: NodeId, send_if_empty: bool = True) -> bool:
        """Returns True when an APP (or a SNAP) was queued for ``to``: nothing is sent to a
        paused follower, and an empty APP only when ``send_if_empty``."""
        pr = self.progress.get(to)
        if pr is None or pr.is_paused():
            return False
        log = self.log
        prev = pr.next - 1
        last = log.last_index()
        try:
            prev_term = log.term(prev)
            ents = log.entries(pr.next, last + 1, self.cfg.max_size_per_msg) if prev < last else []
        except LogCompactedError:
            return self._send_snapshot(to, pr)
        if not ents and not send_if_empty:
            return False
        self.send(Message(MT.APP, to, self.id, self.term, prev_term, prev, ents, log.committed))
        if ents:
            pr.sent_entries(ents[-1].index, data_size(ents))
        else:
            pr.sent_entries(prev, 0)
        return True

    def _send_snapshot(self: Raft, to: NodeId, pr: Progress) -> bool:
        if not pr.recent_active:
            return False  # do not ship a snapshot to a node we have not heard from lately
        meta = self.log.storage.snapshot_meta()
        self.send(Message(MT.SNAP, to, self.id, snapshot=meta))
        pr.become_snapshot(meta.index)
        return True

    def broadcast_append(self: Raft) -> None:
        """Returns None after sending every other member what it lacks (or the commit)."""
        for nid in self.progress:
            if nid != self.id and self.send_append(nid):
                self._send_all(nid)

    def _broadcast_heartbeat(self: Raft, ctx: bytes = b"") -> None:
        committed = self.log.committed
        for nid, pr in self.progress.items():
            if nid != self.id:
                # Never tell a follower to commit past what it is known to hold.
                self.send(
                    Message(
                        MT.HEARTBEAT, nid, self.id, commit=min(pr.match, committed), context=ctx
                    )
                )

    # --- responses ---------------------------------------------------------------------------
    def _leader_app_resp(self: Raft, m: Message) -> None:
        pr = self.progress.get(m.frm)
        if pr is None:
            return
        pr.recent_active = True
        if m.reject:
            if pr.maybe_decr_to(m.index, self._next_hint(m)):
                self.send_append(m.frm)
            return
        was_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            if was_paused and not pr.is_paused():
                self._send_all(m.frm)
            return
        if pr.state == ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state == ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
            pr.become_probe()
            pr.become_replicate()
        if not self._commit_and_tell():
            self._send_all(m.frm)
        if m.frm == self.lead_transferee and pr.match == self.log.last_index():
            self.send(Message(MT.TIMEOUT_NOW, m.frm, self.id))

    def _send_all(self: Raft, to: NodeId) -> None:
        # Pipelining: fill the in-flight window with as many APPs as it allows.
        while self.send_append(to, send_if_empty=False):
            pass

    def _next_hint(self: Raft, m: Message) -> int:
        """Returns where to probe next after a rejection: past our last entry of the
        follower's conflicting term when we hold that term, else the follower's first
        index of it (or its last index + 1 when its log was too short)."""
        if m.hint_term == 0:
            return m.reject_hint
        log = self.log
        i = min(m.index, log.last_index())
        floor = self.progress[m.frm].match
        while i > floor:
            t = log.term_or_zero(i)
            if t == m.hint_term:
                return i + 1
            if t < m.hint_term:
                break
            i -= 1
        return m.reject_hint

    def _leader_heartbeat_resp(self: Raft, m: Message) -> None:
        pr = self.progress.get(m.frm)
        if pr is None:
            return
        pr.recent_active = True
        pr.probe_sent = False
        if pr.state == ProgressState.REPLICATE and pr.inflights.full():
            # The window may be full of lost APPs: a live follower earns one more send, and
            # a rejection of it drops the follower back to probing.
            pr.inflights.free_first_one()
        if pr.match < self.log.last_index():
            self.send_append(m.frm)
        if m.context:
            rnd = self.read_only.ack(m.context, m.frm)
            if rnd is not None and has_quorum(self.voters, rnd.acks):
                for done in self.read_only.release(rnd):
                    for frm, ctx in done.requests:
                        self._answer_read(frm, done.index, ctx)

    def _maybe_commit(self: Raft) -> bool:
        """Returns True when the match indexes of a quorum raised the commit index."""
        prs = self.progress
        mci = committed_index(self.voters, {nid: prs[nid].match for nid in self.voters})
        if not self.log.maybe_commit(mci, self.term):
            return False
        if self.pending_reads:
            pending, self.pending_reads = self.pending_reads, []
            for frm, ctx in pending:
                self._leader_read(frm, ctx)
        return True

    def self_acknowledge(self: Raft) -> None:
        """Returns None after counting the leader's own durable entries toward commit (called
        by advance once the runtime wrote them, thesis 10.2.1)."""
        if self.role != Role.LEADER:
            return
        me = self.progress.get(self.id)
        if me is not None and me.maybe_update(self.log.durable_index()):
            self._commit_and_tell()

    def _commit_and_tell(self: Raft) -> bool:
        """Returns True when the match indexes raised the commit index and the followers
        were told at once (``broadcast_append``): always, unless ``cfg.lazy_commit``. With
        it, only when the newly committed entries hold the first entry of this term or the
        latest membership change (so every member, and a removed one, learns those
        promptly); any other commit reaches a follower with its next APP or heartbeat."""
        old_commit = self.log.committed
        if not self._maybe_commit():
            return False
        if self.cfg.lazy_commit and not (
            old_commit < self.pending_conf_index <= self.log.committed
            or self.log.term_or_zero(old_commit) != self.term
        ):
            return False
        self.broadcast_append()
        return True

    # --- proposals ---------------------------------------------------------------------------
    def _check_can_propose(self: Raft) -> None:
        if self.role != Role.LEADER:
            raise ProposalDroppedError("not the leader", lead=self.lead)
        if self.lead_transferee != NONE:
            raise ProposalDroppedError(
                "leadership transfer in progress", lead=self.lead, transferee=self.lead_transferee
            )

    def _append_and_broadcast(self: Raft, ents: list[Entry]) -> None:
        # The leader's own copy counts only after advance() (self_acknowledge).
        self.log.append(ents)
        self.broadcast_append()

    def propose(self: Raft, datas: Sequence[bytes]) -> tuple[int, int]:
        """Returns (term, index of the last new entry) after appending one NORMAL entry per
        item of ``datas`` (an empty sequence appends nothing and returns the last index).

        Raises ProposalDroppedError (``details["lead"]``) when not the leader, during a
        leadership transfer, or past ``max_uncommitted_size`` bytes of uncommitted data."""
        self._check_can_propose()
        if not datas:
            return self.term, self.log.last_index()
        size = sum(map(len, datas))
        if self.uncommitted_size and self.uncommitted_size + size > self.cfg.max_uncommitted_size:
            raise ProposalDroppedError("too much uncommitted data", lead=self.lead)
        self.uncommitted_size += size
        term = self.term
        start = self.log.last_index() + 1
        ents = [Entry(term, i, 0, d) for i, d in enumerate(datas, start)]
        self._append_and_broadcast(ents)
        return term, ents[-1].index

    def reduce_uncommitted(self: Raft, ents: list[Entry]) -> None:
        """Returns None after releasing the uncommitted budget of ``ents`` (handed out)."""
        if self.uncommitted_size:
            self.uncommitted_size = max(0, self.uncommitted_size - data_size(ents))

    def leader_propose_conf_change(self: Raft, cc: ConfChange) -> tuple[int, int]:
        """Returns (term, index) of the appended conf change entry.

        Raises ProposalDroppedError when not the leader or transferring; MembershipError
        when the change is invalid for the current membership, while another change is not
        yet in effect, or before this leader's no-op committed (see confchange's docstring).
        """
        self._check_can_propose()
        apply_conf_change(self.conf, cc)  # validates; raises MembershipError
        if self.pending_conf_index > self.log.applying:
            raise MembershipError(
                "another membership change is not yet in effect",
                pending_index=self.pending_conf_index,
            )
        if self.log.term_or_zero(self.log.committed) != self.term:
            raise MembershipError("the leader has not committed an entry of its term yet")
        index = self.log.last_index() + 1
        self.pending_conf_index = index
        self._append_and_broadcast(
            [Entry(self.term, index, EntryType.CONF_CHANGE, encode_conf_change(cc))]
        )
        return self.term, index

    def leader_conf_changed(self: Raft) -> None:
        """Returns None after aligning progress with the new membership: new members are
        probed, removed ones forgotten; a leader that is no longer a voter steps down."""
        if self.id not in self.voters:
            self.become_follower(self.term, NONE)
            return
        cfg = self.cfg
        nxt = self.log.last_index() + 1
        learners = set(self.conf.learners)
        members = set(self.conf.voters) | learners
        for nid in list(self.progress):
            if nid not in members:
                del self.progress[nid]
        for nid in self.conf.members():
            pr = self.progress.get(nid)
            if pr is None:
                pr = Progress(nxt, cfg.max_inflight_msgs, cfg.max_inflight_bytes)
                pr.recent_active = True
                self.progress[nid] = pr
            pr.is_learner = nid in learners
        if self.lead_transferee != NONE and self.lead_transferee not in self.voters:
            self.lead_transferee = NONE
        if self._maybe_commit():
            self.broadcast_append()
        else:
            for nid in self.progress:
                if nid != self.id:
                    self.send_append(nid, send_if_empty=False)

    # --- reads -------------------------------------------------------------------------------
    def read_index(self: Raft, ctx: bytes) -> None:
        """Returns None after starting a linearizable read for ``ctx``: a ReadState appears
        in a later Ready (a follower asks its leader). Raises ProposalDroppedError when no
        leader is known. A request is dropped silently if leadership changes meanwhile."""
        if self.role == Role.LEADER:
            self._leader_read(self.id, ctx)
        elif self.lead == NONE:
            raise ProposalDroppedError("no leader known", lead=NONE)
        else:
            self.send(Message(MT.READ_INDEX, self.lead, self.id, context=ctx))

    def _leader_read_index(self: Raft, m: Message) -> None:
        self._leader_read(m.frm, m.context)

    def _leader_read(self: Raft, frm: NodeId, ctx: bytes) -> None:
        if self.voters == {self.id}:
            self._answer_read(frm, self.log.committed, ctx)
        elif self.log.term_or_zero(self.log.committed) != self.term:
            # The commit index is only known to be current once an entry of this term
            # committed (thesis 6.4 step 1): defer.
            self.pending_reads.append((frm, ctx))
        else:
            rnd, new = self.read_only.add_request(self.log.committed, frm, ctx, self.id)
            if new:
                self._broadcast_heartbeat(rnd.ctx)

    def _answer_read(self: Raft, frm: NodeId, index: int, ctx: bytes) -> None:
        if frm == self.id:
            self.read_states.append(ReadState(index, ctx))
        else:
            self.send(Message(MT.READ_INDEX_RESP, frm, self.id, index=index, context=ctx))

    # --- transfer ----------------------------------------------------------------------------
    def transfer_leader(self: Raft, target: NodeId) -> None:
        """Returns None after starting to hand leadership to ``target``: it is caught up,
        then sent TIMEOUT_NOW; proposals are dropped meanwhile; the transfer aborts after an
        election timeout. Transferring to itself does nothing.

        Raises ProposalDroppedError when not the leader; MembershipError when ``target`` is
        not a voter."""
        if self.role != Role.LEADER:
            raise ProposalDroppedError("not the leader", lead=self.lead)
        if target not in self.voters:
            raise MembershipError(f"{target} is not a voter", node_id=target)
        if target == self.id or target == self.lead_transferee:
            return
        self.election_elapsed = 0
        self.lead_transferee = target
        pr = self.progress[target]
        if pr.match == self.log.last_index():
            self.send(Message(MT.TIMEOUT_NOW, target, self.id))
        else:
            self.send_append(target)

    # --- runtime reports ---------------------------------------------------------------------
    def report_snapshot(self: Raft, to: NodeId, ok: bool) -> None:
        """Returns None after moving ``to`` out of SNAPSHOT state: on success replication
        resumes after the snapshot, on failure from its match index; a probe waits for the
        next heartbeat response."""
        pr = self.progress.get(to)
        if self.role != Role.LEADER or pr is None or pr.state != ProgressState.SNAPSHOT:
            return
        if not ok:
            pr.pending_snapshot = 0
        pr.become_probe()
        pr.probe_sent = True

    def report_unreachable(self: Raft, to: NodeId) -> None:
        """Returns None after dropping ``to`` back to PROBE if it was replicating."""
        pr = self.progress.get(to)
        if self.role == Role.LEADER and pr is not None and pr.state == ProgressState.REPLICATE:
            pr.become_probe()
