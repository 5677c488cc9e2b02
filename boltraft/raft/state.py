"""What one node's consensus core knows, and the role changes that only change that state.

:class:`RaftState` holds the term, the vote, the log, the membership, the role and the
leader's replication bookkeeping. Behaviour sits on top of it: the leader's in
:mod:`boltraft.raft.leader` (plain functions of a ``RaftState``), the follower's and the
candidate's, and the dispatch of every input by role, in :mod:`boltraft.raft.raft`. The
imports run one way: ``state`` <- ``leader`` <- ``raft`` <- ``rawnode``.
"""

from __future__ import annotations

from boltraft.errors import ConfigError, MembershipError
from boltraft.raft.confchange import apply_conf_change, decode_conf_change
from boltraft.raft.config import Config
from boltraft.raft.log import RaftLog
from boltraft.raft.progress import Progress
from boltraft.raft.readonly import ReadOnly
from boltraft.raft.types import (
    NONE,
    ConfState,
    Entry,
    EntryType,
    LogStore,
    Message,
    NodeId,
    ReadState,
    Role,
)


class RaftState:
    """One node's consensus state.

    Invariants: ``term`` never decreases; ``vote`` changes only with a new term or from
    NONE; a LEADER has ``lead == id`` and ``id`` among the voters; a CANDIDATE has
    ``vote == id``; every progress has ``match < next``; the log invariants
    ``applied <= applying <= committed <= last_index`` hold. Fields marked "leader:" mean
    nothing in another role and are cleared by ``reset``.
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
        lo = first
        # From the store (everything up to applied is stored), max_size_per_msg at a time:
        # the log since the snapshot may be far larger than anything worth holding at once.
        while lo <= applied:
            ents = storage.entries(lo, applied + 1, config.max_size_per_msg)
            for e in ents:
                if e.type == EntryType.CONF_CHANGE:
                    self._apply_conf_change_entry(e)
            lo += len(ents)
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
        # leader: read requests (requester, context) waiting for the term's first commit
        self.pending_reads: list[tuple[NodeId, bytes]] = []
        # with lazy_commit, the members a leader tells of every raised commit at once (set by
        # the runtime, RawNode.set_prompt_commit; kept across terms and roles)
        self.prompt_commit: frozenset[NodeId] = frozenset()
        # leader: how many times a follower's match has risen (never reset); each
        # Progress.reached is this count at that follower's latest rise
        self.match_rises = 0
        self.needed: frozenset[NodeId] = frozenset()  # leader: see leader.spare_voters
        # follower: its leader's connection closed and no leader has been heard of since
        # (Raft.peer_disconnected: a staggered start)
        self.lost_lead = False
        self.become_follower(self.term, NONE)

    def promotable(self) -> bool:
        """Tells whether this node is a voter (only voters campaign)."""
        return self.id in self.voters

    def send(self, m: Message) -> None:
        """Queues ``m`` for the runtime, stamped with the current term unless it has one."""
        if m.term == 0:
            m.term = self.term
        self.msgs.append(m)

    def reset(self, term: int) -> None:
        """Enters ``term`` (forgetting the vote when it is a new one) with no known leader:
        clears the timers, the votes, every leader-only field and the progress of every
        member (``next`` after the last index; the node's own ``match`` is its durable
        index). The election timeout is drawn anew from ``cfg.rng``."""
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

    # --- role changes (becoming leader is leader.become_leader) ------------------------------
    def become_follower(self, term: int, lead: NodeId) -> None:
        """Makes this node a follower of ``lead`` (NONE: unknown) in ``term``."""
        self.reset(term)
        self.lead = lead
        self.lost_lead = self.lost_lead and lead == NONE
        self.role = Role.FOLLOWER

    def become_pre_candidate(self) -> None:
        """Makes this node a pre-candidate. Term and vote are unchanged: a pre-vote round
        disturbs nobody (thesis 9.6)."""
        self.votes = {}
        self.lead = NONE
        self.role = Role.PRE_CANDIDATE

    def become_candidate(self) -> None:
        """Makes this node a candidate of the next term, voting for itself."""
        self.reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    # --- membership --------------------------------------------------------------------------
    def set_conf(self, cs: ConfState) -> None:
        """Puts the membership ``cs`` into effect and flags it for the next Ready."""
        self.conf = cs
        self.voters = frozenset(cs.voters)
        self.conf_changed = True

    def _apply_conf_change_entry(self, e: Entry) -> None:
        """Puts the conf change in ``e`` into effect; an invalid one is skipped on every node
        alike."""
        try:
            cc = decode_conf_change(e.data)
            cs = apply_conf_change(self.conf, cc)
        except MembershipError:
            return
        self.set_conf(cs)

    # --- invariants --------------------------------------------------------------------------
    def check_invariants(self) -> None:
        """Checks the invariants one state can show (all of the class docstring's but the
        monotonic term and vote). Raises AssertionError naming the first broken one."""
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
