"""The Raft state machine of one node: terms, roles, elections and the follower side.

Roles are swapped functions: ``self.tick`` is ``_tick_election`` or ``_tick_heartbeat`` and
``self._step`` is one of ``_step_follower`` / ``_step_candidate`` / ``_step_leader``, each a
flat dispatch table keyed by MessageType. ``step()`` first applies the term rules shared by
every role (paper 5.1, thesis 9.6 pre-vote and leader lease), then dispatches. The leader's
handlers live in :mod:`boltraft.raft.leader`.

Outputs accumulate in ``msgs`` and ``read_states``; :class:`boltraft.raft.rawnode.RawNode`
turns them into ``Ready`` values.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import itemgetter

from boltraft.errors import ConfigError, MembershipError
from boltraft.raft.confchange import apply_conf_change, decode_conf_change
from boltraft.raft.config import Config
from boltraft.raft.leader import LeaderMixin
from boltraft.raft.log import RaftLog
from boltraft.raft.progress import Progress
from boltraft.raft.quorum import VoteResult, vote_result
from boltraft.raft.readonly import ReadOnly
from boltraft.raft.types import (
    NONE,
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    LogStore,
    Message,
    MessageType,
    NodeId,
    ReadState,
    Role,
)

MT = MessageType
TRANSFER_CONTEXT = b"transfer"  # on VOTE: a leadership transfer, bypasses the leader lease
_TYPE = itemgetter(2)

_CAMPAIGN_PRE = 0
_CAMPAIGN_ELECTION = 1
_CAMPAIGN_TRANSFER = 2


class Raft(LeaderMixin):
    """One node's consensus state.

    Invariants (``check_invariants``): ``term`` never decreases; ``vote`` changes only with
    a new term or from NONE; a LEADER has ``lead == id`` and ``id`` among the voters; a
    CANDIDATE has ``vote == id``; every progress has ``match < next``; the log invariants
    ``applied <= applying <= committed <= last_index`` hold.
    """

    def __init__(self, config: Config, storage: LogStore) -> None:
        config.validate()
        self.id: NodeId = config.id
        self.cfg = config
        self.log = RaftLog(storage, config.max_committed_size_per_ready)
        hs, cs = storage.initial_state()
        self.term: int = hs.term
        self.vote: NodeId = hs.vote
        if hs.commit > self.log.last_index():
            raise ConfigError(
                f"stored commit {hs.commit} is past the last index {self.log.last_index()}",
                field="storage",
            )
        self.log.commit_to(hs.commit)
        if config.applied > self.log.committed:
            # The state machine only ever applies committed entries, but a commit-only hard
            # state may be written unsynced (or deferred) and lost in a crash: the applied
            # index then proves that everything up to it was committed.
            if config.applied > self.log.last_index():
                raise ConfigError(
                    f"applied {config.applied} is past the last log index "
                    f"{self.log.last_index()}: the log lost applied entries",
                    field="applied",
                )
            self.log.commit_to(config.applied)
        first = self.log.first_index()
        self.conf: ConfState = cs
        applied = max(config.applied, first - 1)
        if applied >= first:
            for e in self.log.entries(first, applied + 1):
                if e.type == EntryType.CONF_CHANGE:
                    self._apply_conf_change_entry(e)
        self.log.applied_to(applied)
        self.conf_changed = False  # the runtime has not seen `conf` yet (Ready.conf_state)
        self.voters: frozenset[NodeId] = frozenset(self.conf.voters)
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self.role = Role.FOLLOWER
        self.lead: NodeId = NONE
        self.votes: dict[NodeId, bool] = {}
        self.progress: dict[NodeId, Progress] = {}
        self.election_elapsed = 0  # ticks since the last valid leader message / election
        self.heartbeat_elapsed = 0  # leader: ticks since the last heartbeat
        self.randomized_election_timeout = config.election_tick
        self.lead_transferee: NodeId = NONE  # leader: target of a transfer in progress
        self.pending_conf_index = 0  # leader: index of the latest conf change proposed
        self.uncommitted_size = 0  # leader: data bytes proposed and not yet handed out
        self.read_only = ReadOnly()
        self.pending_reads: list[tuple[NodeId, bytes]] = []  # before the term's first commit
        self.tick: Callable[[], None] = self._tick_election
        self._step: Callable[[Message], None] = self._step_follower
        self._handlers: dict[MessageType, Callable[[Message], None]] = {}
        self.become_follower(self.term, NONE)

    # --- helpers -----------------------------------------------------------------------------
    def promotable(self) -> bool:
        """Returns True when this node is a voter (only voters campaign)."""
        return self.id in self.voters

    def send(self, m: Message) -> None:
        """Returns None after queueing ``m`` (stamped with the current term unless set)."""
        if m.term == 0:
            m.term = self.term
        self.msgs.append(m)

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        et = self.cfg.election_tick
        self.randomized_election_timeout = et + self.cfg.rng.randrange(et)
        self.lead_transferee = NONE
        self.votes = {}
        self._reset_progress()
        self.pending_conf_index = 0
        self.uncommitted_size = 0
        self.read_only.reset()
        self.pending_reads = []

    def _reset_progress(self) -> None:
        nxt = self.log.last_index() + 1
        cfg = self.cfg
        prs: dict[NodeId, Progress] = {}
        for nid in self.conf.voters:
            prs[nid] = Progress(nxt, cfg.max_inflight_msgs, cfg.max_inflight_bytes)
        for nid in self.conf.learners:
            prs[nid] = Progress(nxt, cfg.max_inflight_msgs, cfg.max_inflight_bytes, True)
        me = prs.get(self.id)
        if me is not None:
            me.match = self.log.durable_index()
            me.recent_active = True
        self.progress = prs

    # --- role changes ------------------------------------------------------------------------
    def become_follower(self, term: int, lead: NodeId) -> None:
        """Returns None after becoming a follower of ``lead`` (NONE: unknown) in ``term``."""
        self._reset(term)
        self.lead = lead
        self.role = Role.FOLLOWER
        self.tick = self._tick_election
        self._step = self._step_follower
        self._handlers = {
            MT.APP: self._follower_app,
            MT.HEARTBEAT: self._follower_heartbeat,
            MT.SNAP: self._follower_snap,
            MT.TIMEOUT_NOW: self._follower_timeout_now,
            MT.READ_INDEX_RESP: self._follower_read_index_resp,
        }

    def _become_pre_candidate(self) -> None:
        # Term and vote are unchanged: a pre-vote round disturbs nobody (thesis 9.6).
        self.votes = {}
        self.lead = NONE
        self.role = Role.PRE_CANDIDATE
        self.tick = self._tick_election
        self._step = self._step_candidate
        self._handlers = self._candidate_handlers()

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE
        self.tick = self._tick_election
        self._step = self._step_candidate
        self._handlers = self._candidate_handlers()

    def _candidate_handlers(self) -> dict[MessageType, Callable[[Message], None]]:
        return {
            MT.APP: self._candidate_app,
            MT.HEARTBEAT: self._candidate_app,
            MT.SNAP: self._candidate_app,
            MT.VOTE_RESP: self._candidate_vote_resp,
            MT.PRE_VOTE_RESP: self._candidate_vote_resp,
        }

    # --- ticks -------------------------------------------------------------------------------
    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.election_elapsed >= self.randomized_election_timeout and self.promotable():
            self.election_elapsed = 0
            self.hup()

    # --- elections ---------------------------------------------------------------------------
    def hup(self) -> None:
        """Returns None after starting an election (a pre-vote first when configured); does
        nothing on a leader, a non-voter, or while committed conf changes are not in effect."""
        if self.role == Role.LEADER:
            return
        self._campaign(_CAMPAIGN_PRE if self.cfg.pre_vote else _CAMPAIGN_ELECTION)

    def _has_unapplied_conf_change(self) -> bool:
        lo, hi = self.log.applying + 1, self.log.committed
        if lo > hi:
            return False
        return any(map(_TYPE, self.log.entries(lo, hi + 1)))

    def _campaign(self, kind: int) -> None:
        if not self.promotable() or self._has_unapplied_conf_change():
            return
        if kind == _CAMPAIGN_PRE:
            self._become_pre_candidate()
            vote_type, term = MT.PRE_VOTE, self.term + 1
        else:
            self._become_candidate()
            vote_type, term = MT.VOTE, self.term
        self.votes[self.id] = True
        if vote_result(self.voters, self.votes) == VoteResult.WON:
            if kind == _CAMPAIGN_PRE:
                self._campaign(_CAMPAIGN_ELECTION)
            else:
                self.become_leader()
            return
        ctx = TRANSFER_CONTEXT if kind == _CAMPAIGN_TRANSFER else b""
        last = self.log.last_index()
        last_term = self.log.last_term()
        for nid in sorted(self.voters):
            if nid != self.id:
                self.send(Message(vote_type, nid, self.id, term, last_term, last, context=ctx))

    # --- step --------------------------------------------------------------------------------
    def step(self, m: Message) -> None:
        """Returns None after handling ``m``: the term rules first, then the role's handler.
        Messages of an older term are dropped (or answered so a stale node learns the term)."""
        if m.term > self.term:
            if m.type == MT.VOTE or m.type == MT.PRE_VOTE:
                in_lease = (
                    self.cfg.check_quorum
                    and self.lead != NONE
                    and self.election_elapsed < self.cfg.election_tick
                )
                if in_lease and m.context != TRANSFER_CONTEXT:
                    return  # leader lease: a live leader is known, ignore the disruption
            if m.type == MT.PRE_VOTE or (m.type == MT.PRE_VOTE_RESP and not m.reject):
                pass  # a pre-vote is about a future term; it changes nothing yet
            elif m.type in (MT.APP, MT.HEARTBEAT, MT.SNAP):
                self.become_follower(m.term, m.frm)
            else:
                self.become_follower(m.term, NONE)
        elif m.term < self.term:
            if (self.cfg.check_quorum or self.cfg.pre_vote) and m.type in (MT.APP, MT.HEARTBEAT):
                # A stale leader cut off by a partition learns the new term and steps down.
                self.send(Message(MT.APP_RESP, m.frm, self.id))
            elif m.type == MT.PRE_VOTE:
                self.send(Message(MT.PRE_VOTE_RESP, m.frm, self.id, reject=True))
            return
        if m.type == MT.VOTE or m.type == MT.PRE_VOTE:
            self._handle_vote_request(m)
            return
        self._step(m)

    def _handle_vote_request(self, m: Message) -> None:
        can_vote = (
            self.vote == m.frm
            or (self.vote == NONE and self.lead == NONE)
            or (m.type == MT.PRE_VOTE and m.term > self.term)
        )
        resp = MT.VOTE_RESP if m.type == MT.VOTE else MT.PRE_VOTE_RESP
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            # The reply carries the request's term so the candidate counts it (thesis 9.6).
            self.send(Message(resp, m.frm, self.id, m.term))
            if m.type == MT.VOTE:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self.send(Message(resp, m.frm, self.id, reject=True))

    def _step_follower(self, m: Message) -> None:
        handler = self._handlers.get(m.type)
        if handler is not None:
            handler(m)

    _step_candidate = _step_follower

    # --- follower handlers -------------------------------------------------------------------
    def _follower_app(self, m: Message) -> None:
        self.election_elapsed = 0
        self.lead = m.frm
        self._handle_append(m)

    def _follower_heartbeat(self, m: Message) -> None:
        self.election_elapsed = 0
        self.lead = m.frm
        self.log.commit_to(min(m.commit, self.log.last_index()))
        self.send(Message(MT.HEARTBEAT_RESP, m.frm, self.id, context=m.context))

    def _follower_snap(self, m: Message) -> None:
        self.election_elapsed = 0
        self.lead = m.frm
        self._handle_snapshot(m)

    def _follower_timeout_now(self, m: Message) -> None:
        # Leadership transfer: campaign at once, skipping pre-vote (thesis 3.10).
        self._campaign(_CAMPAIGN_TRANSFER)

    def _follower_read_index_resp(self, m: Message) -> None:
        self.read_states.append(ReadState(m.index, m.context))

    def _candidate_app(self, m: Message) -> None:
        # A leader of our term exists (paper 5.2): follow it and handle the message.
        self.become_follower(m.term, m.frm)
        self._step(m)

    def _candidate_vote_resp(self, m: Message) -> None:
        want = MT.PRE_VOTE_RESP if self.role == Role.PRE_CANDIDATE else MT.VOTE_RESP
        if m.type != want:
            return
        self.votes.setdefault(m.frm, not m.reject)
        res = vote_result(self.voters, self.votes)
        if res == VoteResult.WON:
            if self.role == Role.PRE_CANDIDATE:
                self._campaign(_CAMPAIGN_ELECTION)
            else:
                self.become_leader()
        elif res == VoteResult.LOST:
            self.become_follower(self.term, NONE)

    def _handle_append(self, m: Message) -> None:
        log = self.log
        if m.index < log.committed:
            self.send(Message(MT.APP_RESP, m.frm, self.id, index=log.committed))
            return
        last_new = log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            self.send(Message(MT.APP_RESP, m.frm, self.id, index=last_new))
            return
        # Fast back-off (thesis 5.3): name the conflicting term and the first index we hold
        # for it, or our last index + 1 when our log is too short.
        last = log.last_index()
        if m.index > last:
            hint, hint_term = last + 1, 0
        else:
            hint_term = log.term(m.index)
            hint = m.index
            floor = log.committed + 1
            while hint > floor and log.term_or_zero(hint - 1) == hint_term:
                hint -= 1
        self.send(
            Message(
                MT.APP_RESP,
                m.frm,
                self.id,
                index=m.index,
                reject=True,
                reject_hint=hint,
                hint_term=hint_term,
            )
        )

    def _handle_snapshot(self, m: Message) -> None:
        meta = m.snapshot
        log = self.log
        if meta is None or meta.index <= log.committed:
            self.send(Message(MT.APP_RESP, m.frm, self.id, index=log.committed))
            return
        if log.match_term(meta.index, meta.term):
            # The log already holds the snapshot's last entry (a snapshot that was delayed or
            # sent twice, paper section 7): the entries after it are valid and may have been
            # acknowledged, so they stay; only the commit index moves up to the snapshot.
            log.commit_to(meta.index)
            self.send(Message(MT.APP_RESP, m.frm, self.id, index=log.committed))
            return
        log.restore(meta)
        self._set_conf(meta.conf_state)
        self.send(Message(MT.APP_RESP, m.frm, self.id, index=log.last_index()))

    # --- membership --------------------------------------------------------------------------
    def _set_conf(self, cs: ConfState) -> None:
        self.conf = cs
        self.voters = frozenset(cs.voters)
        self.conf_changed = True

    def _apply_conf_change_entry(self, e: Entry) -> None:
        """Applies the conf change in ``e``; an invalid one is skipped on every node alike."""
        try:
            cc = decode_conf_change(e.data)
            cs = apply_conf_change(self.conf, cc)
        except MembershipError:
            return
        self.conf = cs
        self.voters = frozenset(cs.voters)
        self.conf_changed = True

    def apply_committed_conf_changes(self, ents: list[Entry]) -> None:
        """Returns None after putting into effect every conf change among ``ents`` (which
        are being handed out as committed). A leader that is no longer a voter steps down."""
        if not any(map(_TYPE, ents)):
            return
        for e in ents:
            if e.type == EntryType.CONF_CHANGE:
                self._apply_conf_change_entry(e)
                if self.role == Role.LEADER:
                    self.leader_conf_changed()

    def propose_conf_change(self, cc: ConfChange) -> tuple[int, int]:
        """Returns (term, index) of the proposed conf change entry; see LeaderMixin."""
        return self.leader_propose_conf_change(cc)

    # --- invariants --------------------------------------------------------------------------
    def check_invariants(self) -> None:
        """Returns None when every invariant holds; raises AssertionError otherwise."""
        self.log.check_invariants()
        if self.role == Role.LEADER and self.lead != self.id:
            raise AssertionError("leader does not name itself as lead")
        if self.role == Role.CANDIDATE and self.vote != self.id:
            raise AssertionError("candidate did not vote for itself")
        if set(self.conf.voters) & set(self.conf.learners):
            raise AssertionError("voters and learners overlap")
        for nid, pr in self.progress.items():
            if not pr.match < pr.next:
                raise AssertionError(f"progress of {nid}: match {pr.match} >= next {pr.next}")
