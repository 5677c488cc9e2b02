"""The Raft state machine of one node: every input, dispatched by role; elections and the
follower side.

``step()`` first applies the term rules shared by every role (paper 5.1, thesis 9.6
pre-vote and leader lease), then hands the message to the role's step function:
``Raft._step_follower``, ``Raft._step_candidate`` (pre-candidates too) or
:func:`boltraft.raft.leader.step_leader`, each a flat dispatch table keyed by MessageType.
``tick()`` and the runtime's requests (propose, read, transfer, reports) dispatch the same
way; leader-only requests on another role raise ProposalDroppedError or do nothing.

Outputs accumulate in ``msgs`` and ``read_states``; :class:`boltraft.raft.rawnode.RawNode`
turns them into ``Ready`` values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import itemgetter

from boltraft.errors import ProposalDroppedError
from boltraft.raft import leader
from boltraft.raft.quorum import VoteResult, vote_result
from boltraft.raft.state import RaftState
from boltraft.raft.types import (
    NONE,
    ConfChange,
    Entry,
    EntryType,
    Message,
    MessageType,
    NodeId,
    ReadState,
    Role,
)

MT = MessageType
TRANSFER_CONTEXT = b"transfer"  # on VOTE: a leadership transfer, bypasses the leader lease
_TYPE = itemgetter(2)  # an Entry's type: any(map(_TYPE, ents)) finds a conf change in C

_CAMPAIGN_PRE = 0
_CAMPAIGN_ELECTION = 1
_CAMPAIGN_TRANSFER = 2


class Raft(RaftState):
    """One node's consensus core: :class:`RaftState` and the behaviour of every role."""

    # --- input -------------------------------------------------------------------------------
    def tick(self) -> None:
        """Advances the logical clock one tick: a leader heartbeats (see
        ``leader.tick_heartbeat``), any other role counts toward its election timeout."""
        if self.role == Role.LEADER:
            leader.tick_heartbeat(self)
        else:
            self._tick_election()

    def step(self, m: Message) -> None:
        """Handles ``m``: the term rules first, then the role's step function. Messages of an
        older term are dropped (or answered so a stale node learns the term)."""
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
        _STEP[self.role](self, m)

    def hup(self) -> None:
        """Starts an election (a pre-vote first when configured). Does nothing on a leader,
        a non-voter, or while committed conf changes are not in effect."""
        if self.role == Role.LEADER:
            return
        self._campaign(_CAMPAIGN_PRE if self.cfg.pre_vote else _CAMPAIGN_ELECTION)

    def propose(self, datas: Sequence[bytes]) -> tuple[int, int]:
        """Appends one NORMAL entry per item of ``datas``; see ``leader.propose``.

        Raises ProposalDroppedError (``details["lead"]``) when not the leader, during a
        leadership transfer, or past ``max_uncommitted_size`` bytes of uncommitted data."""
        self._check_leader()
        return leader.propose(self, datas)

    def propose_conf_change(self, cc: ConfChange) -> tuple[int, int]:
        """Appends the conf change ``cc``; see ``leader.propose_conf_change``. Raises
        ProposalDroppedError when not the leader or transferring, MembershipError for an
        invalid change or while another one is not yet in effect."""
        self._check_leader()
        return leader.propose_conf_change(self, cc)

    def read_index(self, ctx: bytes) -> None:
        """Starts a linearizable read for ``ctx``: a ReadState appears in a later Ready (a
        follower asks its leader). A request is dropped silently if leadership changes
        meanwhile. Raises ProposalDroppedError when no leader is known."""
        if self.role == Role.LEADER:
            leader.read(self, self.id, ctx)
        elif self.lead == NONE:
            raise ProposalDroppedError("no leader known", lead=NONE)
        else:
            self.send(Message(MT.READ_INDEX, self.lead, self.id, context=ctx))

    def transfer_leader(self, target: NodeId) -> None:
        """Starts handing leadership to ``target``; see ``leader.transfer_leader``. Raises
        ProposalDroppedError when not the leader, MembershipError for a non-voter."""
        self._check_leader()
        leader.transfer_leader(self, target)

    def spare_voters(self) -> frozenset[NodeId]:
        """The followers a quorum does not need now (a leader only; see
        ``leader.spare_voters``)."""
        return leader.spare_voters(self) if self.role == Role.LEADER else frozenset()

    def report_snapshot(self, to: NodeId, ok: bool) -> None:
        """Notes whether the snapshot sent to ``to`` was installed (a leader only)."""
        if self.role == Role.LEADER:
            leader.report_snapshot(self, to, ok)

    def peer_disconnected(self, peer: NodeId) -> None:
        """Acts on the runtime's word that its connection to ``peer`` closed (the process
        exited, or the network dropped the connection); only a follower led by ``peer``
        acts. It forgets its leader, so it no longer honours the leader lease and grants
        the other survivors' (pre-)votes at once. A voter then campaigns well before its
        election timeout, staggered so that the survivors do not split the vote: the first
        voter after ``peer`` in id order (wrapping around) at once and again at each tick
        until it hears of a leader, the next one at its second tick, the one after at its
        third, and so on; a survivor whose log is ahead of an earlier one's stands as soon
        as that one asks for its vote (``_handle_vote_request``). The campaign starts with a
        pre-vote when configured: if ``peer``
        in fact still leads, the members that hear from it ignore the pre-vote (its lease)
        and nobody's term changes."""
        if self.role != Role.FOLLOWER or peer == NONE or self.lead != peer:
            return
        self.lead = NONE
        if not self.promotable():
            return
        self.lost_lead = True
        order = sorted(self.voters)
        if peer in self.voters:
            at = order.index(peer)
            order = order[at + 1 :] + order[:at]
        rank = order.index(self.id)
        self.election_elapsed = 0
        self.randomized_election_timeout = rank + 1
        if rank == 0:
            self.hup()

    def report_unreachable(self, to: NodeId) -> None:
        """Notes that a message to ``to`` could not be delivered (a leader only)."""
        if self.role == Role.LEADER:
            leader.report_unreachable(self, to)

    def self_acknowledge(self) -> None:
        """Counts a leader's own durable entries toward commit; see
        ``leader.self_acknowledge``."""
        if self.role == Role.LEADER:
            leader.self_acknowledge(self)

    def committed_handed_out(self, ents: list[Entry]) -> None:
        """Puts into effect every conf change among ``ents`` (which are being handed out as
        committed; a leader that is no longer a voter steps down), then, on a leader,
        releases the uncommitted budget of ``ents``."""
        if any(map(_TYPE, ents)):
            for e in ents:
                if e.type == EntryType.CONF_CHANGE:
                    self._apply_conf_change_entry(e)
                    if self.role == Role.LEADER:
                        leader.conf_changed(self)
        if self.role == Role.LEADER:
            leader.reduce_uncommitted(self, ents)

    def _check_leader(self) -> None:
        if self.role != Role.LEADER:
            raise ProposalDroppedError("not the leader", lead=self.lead)

    # --- elections ---------------------------------------------------------------------------
    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.election_elapsed >= self.randomized_election_timeout and self.promotable():
            self.election_elapsed = 0
            self.hup()

    def _has_unapplied_conf_change(self) -> bool:
        # Entries under a snapshot not yet handed out are compacted, and the snapshot's
        # membership is in effect already (set_conf when it arrived): scan after it.
        lo = max(self.log.applying + 1, self.log.first_index())
        hi = self.log.committed
        if lo > hi:
            return False
        return any(map(_TYPE, self.log.entries(lo, hi + 1)))

    def _campaign(self, kind: int) -> None:
        if not self.promotable() or self._has_unapplied_conf_change():
            return
        if kind == _CAMPAIGN_PRE:
            self.become_pre_candidate()
            vote_type, term = MT.PRE_VOTE, self.term + 1
        else:
            self.become_candidate()
            vote_type, term = MT.VOTE, self.term
        self.votes[self.id] = True
        if vote_result(self.voters, self.votes) == VoteResult.WON:
            if kind == _CAMPAIGN_PRE:
                self._campaign(_CAMPAIGN_ELECTION)
            else:
                leader.become_leader(self)
            return
        ctx = TRANSFER_CONTEXT if kind == _CAMPAIGN_TRANSFER else b""
        last = self.log.last_index()
        last_term = self.log.last_term()
        for nid in sorted(self.voters):
            if nid != self.id:
                self.send(Message(vote_type, nid, self.id, term, last_term, last, context=ctx))

    def _handle_vote_request(self, m: Message) -> None:
        can_vote = (
            self.vote == m.frm
            or (self.vote == NONE and self.lead == NONE)
            or (m.type == MT.PRE_VOTE and m.term > self.term)
        )
        resp = MT.VOTE_RESP if m.type == MT.VOTE else MT.PRE_VOTE_RESP
        up_to_date = self.log.is_up_to_date(m.index, m.log_term)
        if can_vote and up_to_date:
            # The reply carries the request's term so the candidate counts it (thesis 9.6).
            self.send(Message(resp, m.frm, self.id, m.term))
            if m.type == MT.VOTE:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self.send(Message(resp, m.frm, self.id, reject=True))
            if not up_to_date and self.lost_lead and self.role == Role.FOLLOWER:
                # In a staggered start (peer_disconnected) a survivor whose log is ahead of
                # an earlier one's stands at once: that one cannot win (the lost leader had
                # not yet brought it up to date: a spare follower, leader.spare_voters).
                self.hup()

    # --- follower and candidate --------------------------------------------------------------
    def _step_follower(self, m: Message) -> None:
        handler = _FOLLOWER.get(m.type)
        if handler is not None:
            handler(self, m)

    def _step_candidate(self, m: Message) -> None:
        handler = _CANDIDATE.get(m.type)
        if handler is not None:
            handler(self, m)

    def _heard_leader(self, m: Message) -> None:
        self.election_elapsed = 0
        self.lead = m.frm
        self.lost_lead = False

    def _follower_app(self, m: Message) -> None:
        self._heard_leader(m)
        self._handle_append(m)

    def _follower_heartbeat(self, m: Message) -> None:
        self._heard_leader(m)
        self.log.commit_to(min(m.commit, self.log.last_index()))
        self.send(Message(MT.HEARTBEAT_RESP, m.frm, self.id, index=m.index, context=m.context))

    def _follower_snap(self, m: Message) -> None:
        self._heard_leader(m)
        self._handle_snapshot(m)

    def _follower_timeout_now(self, m: Message) -> None:
        # Leadership transfer: campaign at once, skipping pre-vote (thesis 3.10).
        self._campaign(_CAMPAIGN_TRANSFER)

    def _follower_read_index_resp(self, m: Message) -> None:
        self.read_states.append(ReadState(m.index, m.context))

    def _candidate_app(self, m: Message) -> None:
        # A leader of our term exists (paper 5.2): follow it and handle the message.
        self.become_follower(m.term, m.frm)
        self._step_follower(m)

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
                leader.become_leader(self)
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
        self.set_conf(meta.conf_state)
        self.send(Message(MT.APP_RESP, m.frm, self.id, index=log.last_index()))


_Handler = Callable[[Raft, Message], None]

_FOLLOWER: dict[MessageType, _Handler] = {
    MT.APP: Raft._follower_app,
    MT.HEARTBEAT: Raft._follower_heartbeat,
    MT.SNAP: Raft._follower_snap,
    MT.TIMEOUT_NOW: Raft._follower_timeout_now,
    MT.READ_INDEX_RESP: Raft._follower_read_index_resp,
}

_CANDIDATE: dict[MessageType, _Handler] = {
    MT.APP: Raft._candidate_app,
    MT.HEARTBEAT: Raft._candidate_app,
    MT.SNAP: Raft._candidate_app,
    MT.VOTE_RESP: Raft._candidate_vote_resp,
    MT.PRE_VOTE_RESP: Raft._candidate_vote_resp,
}

_STEP: dict[Role, _Handler] = {
    Role.FOLLOWER: Raft._step_follower,
    Role.PRE_CANDIDATE: Raft._step_candidate,
    Role.CANDIDATE: Raft._step_candidate,
    Role.LEADER: leader.step_leader,
}
