"""The leader's behaviour: plain functions of the core's state ``r`` (etcd-io/raft's
``stepLeader`` shape). Replication, commit, heartbeats and check-quorum, ReadIndex,
leadership transfer, proposals and membership changes.

:mod:`boltraft.raft.raft` dispatches here by role: every public function but
``become_leader`` expects ``r.role == LEADER``. Invariants kept here: the leader's own
``match`` never passes its durable index (its copy of new entries counts only once
``self_acknowledge`` runs after the runtime wrote them, thesis 10.2.1); the commit index
moves only onto an entry of the current term (paper 5.4.2); a follower is never told to
commit past what it is known to hold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from boltraft.errors import LogCompactedError, MembershipError, ProposalDroppedError
from boltraft.raft.confchange import apply_conf_change, encode_conf_change
from boltraft.raft.log import data_size
from boltraft.raft.progress import Progress
from boltraft.raft.quorum import committed_index, has_quorum
from boltraft.raft.state import RaftState
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

MT = MessageType


# --- becoming leader, ticks, steps ------------------------------------------------------------
def become_leader(r: RaftState) -> None:
    """Makes ``r`` the leader of its current term and appends the term's no-op entry
    (paper 5.4.2: entries of earlier terms commit only under an entry of this term)."""
    r.reset(r.term)
    r.lead = r.id
    r.role = Role.LEADER
    me = r.progress[r.id]
    me.become_replicate()
    me.match = r.log.durable_index()
    me.next = r.log.last_index() + 1
    # Every conf change already in the log counts as pending: none may be proposed
    # until the no-op (and so everything before it) has committed.
    r.pending_conf_index = r.log.last_index()
    _append_and_broadcast(r, [Entry(r.term, r.log.last_index() + 1)])


def tick_heartbeat(r: RaftState) -> None:
    """Advances the leader's clock one tick: a heartbeat every ``heartbeat_tick`` ticks;
    every election timeout, a step down without a recently active quorum (check-quorum,
    thesis 6.2) and the end of an unfinished leadership transfer."""
    r.heartbeat_elapsed += 1
    r.election_elapsed += 1
    if r.election_elapsed >= r.cfg.election_tick:
        r.election_elapsed = 0
        if r.cfg.check_quorum and not _quorum_active(r):
            r.become_follower(r.term, NONE)
            return
        if r.lead_transferee != NONE:
            r.lead_transferee = NONE
    if r.heartbeat_elapsed >= r.cfg.heartbeat_tick:
        r.heartbeat_elapsed = 0
        _broadcast_heartbeat(r, r.read_only.last_ctx())


def step_leader(r: RaftState, m: Message) -> None:
    """Handles ``m`` (of the leader's term, not a vote request) on the leader; message types
    a leader does not expect are ignored."""
    handler = _HANDLERS.get(m.type)
    if handler is not None:
        handler(r, m)


def _quorum_active(r: RaftState) -> bool:
    """Tells whether a quorum was heard from since the last check, and starts a new check."""
    active = {r.id}
    for nid, pr in r.progress.items():
        if pr.recent_active:
            active.add(nid)
        if nid != r.id:
            pr.recent_active = False
    return has_quorum(r.voters, active)


# --- sending ----------------------------------------------------------------------------------
def send_append(r: RaftState, to: NodeId, send_if_empty: bool = True) -> bool:
    """Queues an APP (or a SNAP when the entries ``to`` needs are compacted) for ``to``.
    Returns False, sending nothing, for a paused or unknown member, when nothing is
    missing and not ``send_if_empty``, or when a SNAP would go to an inactive member.

    While ``to`` is probed (its log's match with ours is not known) an APP carries one
    entry: a rejected APP costs a round trip, not ``max_size_per_msg`` of entries, however
    many rejections it takes to find the match; once one is accepted, ``to`` replicates
    in full messages."""
    pr = r.progress.get(to)
    if pr is None or pr.is_paused():
        return False
    log = r.log
    prev = pr.next - 1
    last = log.last_index()
    size = 0 if pr.state == ProgressState.PROBE else r.cfg.max_size_per_msg
    try:
        prev_term = log.term(prev)
        ents = log.entries(pr.next, last + 1, size) if prev < last else []
    except LogCompactedError:
        return _send_snapshot(r, to, pr)
    if not ents and not send_if_empty:
        return False
    r.send(Message(MT.APP, to, r.id, r.term, prev_term, prev, ents, log.committed))
    if ents:
        pr.sent_entries(ents[-1].index, data_size(ents))
    else:
        pr.sent_entries(prev, 0)
    return True


def _send_snapshot(r: RaftState, to: NodeId, pr: Progress) -> bool:
    if not pr.recent_active:
        return False  # do not ship a snapshot to a node we have not heard from lately
    meta = r.log.storage.snapshot_meta()
    r.send(Message(MT.SNAP, to, r.id, snapshot=meta))
    pr.become_snapshot(meta.index)
    return True


def broadcast_append(r: RaftState) -> None:
    """Sends every other member what it lacks, or at least the commit index."""
    for nid in r.progress:
        if nid != r.id and send_append(r, nid):
            _send_all(r, nid)


def _send_all(r: RaftState, to: NodeId) -> None:
    # Pipelining: fill the in-flight window with as many APPs as it allows.
    while send_append(r, to, send_if_empty=False):
        pass


def _broadcast_heartbeat(r: RaftState, ctx: bytes = b"") -> None:
    committed = r.log.committed
    for nid, pr in r.progress.items():
        if nid != r.id:
            # Never tell a follower to commit past what it is known to hold. ``index``: the
            # last entry sent to it so far, which its answer carries back.
            r.send(
                Message(
                    MT.HEARTBEAT,
                    nid,
                    r.id,
                    index=pr.next - 1,
                    commit=min(pr.match, committed),
                    context=ctx,
                )
            )


# --- responses --------------------------------------------------------------------------------
def _app_resp(r: RaftState, m: Message) -> None:
    pr = r.progress.get(m.frm)
    if pr is None:
        return
    pr.recent_active = True
    if m.reject:
        if pr.maybe_decr_to(m.index, _next_hint(r, m)):
            send_append(r, m.frm)
        return
    was_paused = pr.is_paused()
    if not pr.maybe_update(m.index):
        if was_paused and not pr.is_paused():
            _send_all(r, m.frm)
        return
    r.match_rises += 1
    pr.reached = r.match_rises
    if pr.state == ProgressState.PROBE:
        pr.become_replicate()
    elif pr.state == ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
        pr.become_probe()
        pr.become_replicate()
    if not _commit_and_tell(r, m.frm):
        _send_all(r, m.frm)
    if m.frm == r.lead_transferee and pr.match == r.log.last_index():
        r.send(Message(MT.TIMEOUT_NOW, m.frm, r.id))


def _next_hint(r: RaftState, m: Message) -> int:
    """Returns where to probe next after the rejection ``m``: past our last entry of the
    follower's conflicting term when we hold that term, else the follower's first index
    of it (or its last index + 1 when its log was too short)."""
    if m.hint_term == 0:
        return m.reject_hint
    log = r.log
    i = min(m.index, log.last_index())
    floor = r.progress[m.frm].match
    while i > floor:
        t = log.term_or_zero(i)
        if t == m.hint_term:
            return i + 1
        if t < m.hint_term:
            break
        i -= 1
    return m.reject_hint


def _heartbeat_resp(r: RaftState, m: Message) -> None:
    pr = r.progress.get(m.frm)
    if pr is None:
        return
    pr.recent_active = True
    pr.probe_sent = False
    # A full window may hold lost APPs: its oldest one was sent before this heartbeat (its
    # last index is at most the one the heartbeat carried) and the follower, which
    # acknowledges what it got before answering a heartbeat, answered without
    # acknowledging it. Then it earns one more send, and a rejection of that drops it back
    # to probing. An APP sent after the heartbeat may just be on its way: freeing its slot
    # would let a busy follower's window grow with every heartbeat it answers. (An answer
    # carrying index 0 tells nothing: one more send.)
    if (
        pr.state == ProgressState.REPLICATE
        and pr.inflights.full()
        and (m.index == 0 or pr.inflights.oldest() <= m.index)
    ):
        pr.inflights.free_first_one()
    if pr.match < r.log.last_index():
        send_append(r, m.frm)
    if m.context:
        rnd = r.read_only.ack(m.context, m.frm)
        if rnd is not None and has_quorum(r.voters, rnd.acks):
            for done in r.read_only.release(rnd):
                for frm, ctx in done.requests:
                    _answer_read(r, frm, done.index, ctx)


def _read_index_req(r: RaftState, m: Message) -> None:
    read(r, m.frm, m.context)


_HANDLERS: dict[MessageType, Callable[[RaftState, Message], None]] = {
    MT.APP_RESP: _app_resp,
    MT.HEARTBEAT_RESP: _heartbeat_resp,
    MT.READ_INDEX: _read_index_req,
}


def spare_voters(r: RaftState) -> frozenset[NodeId]:
    """Returns the followers a quorum does not need now: the voters beyond the
    ``len(voters) // 2`` followers that, with the leader, make a quorum (``r.needed``),
    ranked by how far their match is (highest first), then the followers needed last time
    first (a tie does not move the role: the follower that carries the writes stays warm),
    then by who reached the match sooner (``Progress.reached``).

    None while the followers the quorum needs have not acknowledged every durable entry of
    the leader (writes in flight, pipelined: then every follower may carry the commit, the
    first to answer), when the leader is not a voter, and for a follower that is not
    replicating normally (a probed one must not wait for a batch). A spare follower whose
    match passes a needed one's (the needed one crashed or stalled) takes its place."""
    voters = r.conf.voters
    if r.id not in voters:
        return frozenset()
    prs, needed = r.progress, r.needed
    others = sorted(
        (nid for nid in voters if nid != r.id),
        key=lambda n: (-prs[n].match, n not in needed, prs[n].reached),
    )
    need = len(voters) // 2
    r.needed = frozenset(others[:need])
    durable = r.log.durable_index()
    if any(prs[nid].match < durable for nid in others[:need]):
        return frozenset()
    return frozenset(nid for nid in others[need:] if prs[nid].state == ProgressState.REPLICATE)


# --- commit -----------------------------------------------------------------------------------
def _maybe_commit(r: RaftState) -> bool:
    """Tells whether the match indexes of a quorum raised the commit index (onto an entry
    of this term only); reads deferred until the term's first commit then go ahead."""
    prs = r.progress
    mci = committed_index(r.voters, {nid: prs[nid].match for nid in r.voters})
    if not r.log.maybe_commit(mci, r.term):
        return False
    if r.pending_reads:
        pending, r.pending_reads = r.pending_reads, []
        for frm, ctx in pending:
            read(r, frm, ctx)
    return True


def self_acknowledge(r: RaftState) -> None:
    """Counts the leader's own durable entries toward commit (called by advance once the
    runtime wrote them, thesis 10.2.1)."""
    me = r.progress.get(r.id)
    if me is not None and me.maybe_update(r.log.durable_index()):
        _commit_and_tell(r)


def _commit_and_tell(r: RaftState, frm: NodeId = NONE) -> bool:
    """Tells whether the match indexes raised the commit index and ``frm`` was told at once.
    Without ``cfg.lazy_commit`` every follower is told at once (``broadcast_append``). With
    it, only the members of ``r.prompt_commit`` are, unless the newly committed entries hold
    the first entry of this term or the latest membership change (then every member, and a
    removed one, learns those promptly); any other commit reaches a follower with its next
    APP or heartbeat."""
    old_commit = r.log.committed
    if not _maybe_commit(r):
        return False
    if r.cfg.lazy_commit and not (
        old_commit < r.pending_conf_index <= r.log.committed
        or r.log.term_or_zero(old_commit) != r.term
    ):
        told = False
        for nid in r.prompt_commit:
            if nid != r.id and send_append(r, nid):
                _send_all(r, nid)
                told = told or nid == frm
        return told
    broadcast_append(r)
    return True


# --- proposals --------------------------------------------------------------------------------
def _check_no_transfer(r: RaftState) -> None:
    if r.lead_transferee != NONE:
        raise ProposalDroppedError(
            "leadership transfer in progress", lead=r.lead, transferee=r.lead_transferee
        )


def _append_and_broadcast(r: RaftState, ents: list[Entry]) -> None:
    # The leader's own copy counts only after advance() (self_acknowledge).
    r.log.append(ents)
    broadcast_append(r)


def propose(r: RaftState, datas: Sequence[bytes]) -> tuple[int, int]:
    """Appends one NORMAL entry per item of ``datas``. Returns (term, index of the last new
    entry); an empty ``datas`` appends nothing and returns the last index.

    Raises ProposalDroppedError (``details["lead"]``) during a leadership transfer or past
    ``max_uncommitted_size`` bytes of uncommitted data."""
    _check_no_transfer(r)
    if not datas:
        return r.term, r.log.last_index()
    size = sum(map(len, datas))
    if r.uncommitted_size and r.uncommitted_size + size > r.cfg.max_uncommitted_size:
        raise ProposalDroppedError("too much uncommitted data", lead=r.lead)
    r.uncommitted_size += size
    term = r.term
    start = r.log.last_index() + 1
    ents = [Entry(term, i, 0, d) for i, d in enumerate(datas, start)]
    _append_and_broadcast(r, ents)
    return term, ents[-1].index


def reduce_uncommitted(r: RaftState, ents: list[Entry]) -> None:
    """Releases the uncommitted budget of ``ents`` (handed out as committed)."""
    if r.uncommitted_size:
        r.uncommitted_size = max(0, r.uncommitted_size - data_size(ents))


def propose_conf_change(r: RaftState, cc: ConfChange) -> tuple[int, int]:
    """Appends the conf change ``cc``. Returns (term, index) of its entry.

    Raises ProposalDroppedError during a leadership transfer; MembershipError when the
    change is invalid for the current membership, while another change is not yet in
    effect, or before this leader's no-op committed (see confchange's docstring)."""
    _check_no_transfer(r)
    apply_conf_change(r.conf, cc)  # validates; raises MembershipError
    if r.pending_conf_index > r.log.applying:
        raise MembershipError(
            "another membership change is not yet in effect",
            pending_index=r.pending_conf_index,
        )
    if r.log.term_or_zero(r.log.committed) != r.term:
        raise MembershipError("the leader has not committed an entry of its term yet")
    index = r.log.last_index() + 1
    r.pending_conf_index = index
    _append_and_broadcast(r, [Entry(r.term, index, EntryType.CONF_CHANGE, encode_conf_change(cc))])
    return r.term, index


def conf_changed(r: RaftState) -> None:
    """Aligns progress with the membership now in effect: new members are probed, removed
    ones forgotten; a leader that is no longer a voter steps down."""
    if r.id not in r.voters:
        r.become_follower(r.term, NONE)
        return
    cfg = r.cfg
    nxt = r.log.last_index() + 1
    learners = set(r.conf.learners)
    members = set(r.conf.voters) | learners
    for nid in list(r.progress):
        if nid not in members:
            del r.progress[nid]
    for nid in r.conf.members():
        pr = r.progress.get(nid)
        if pr is None:
            pr = Progress(nxt, cfg.max_inflight_msgs, cfg.max_inflight_bytes)
            pr.recent_active = True
            r.progress[nid] = pr
        pr.is_learner = nid in learners
    if r.lead_transferee != NONE and r.lead_transferee not in r.voters:
        r.lead_transferee = NONE
    if _maybe_commit(r):
        broadcast_append(r)
    else:
        for nid in r.progress:
            if nid != r.id:
                send_append(r, nid, send_if_empty=False)


# --- reads ------------------------------------------------------------------------------------
def read(r: RaftState, frm: NodeId, ctx: bytes) -> None:
    """Starts the read ``ctx`` that ``frm`` (the leader itself or a follower) asked for: a
    single voter answers at once; otherwise the read joins a heartbeat round, or waits
    for the term's first commit (thesis 6.4 step 1: only then is the commit index known
    to be current)."""
    if r.voters == {r.id}:
        _answer_read(r, frm, r.log.committed, ctx)
    elif r.log.term_or_zero(r.log.committed) != r.term:
        r.pending_reads.append((frm, ctx))
    else:
        rnd, new = r.read_only.add_request(r.log.committed, frm, ctx, r.id)
        if new:
            _broadcast_heartbeat(r, rnd.ctx)


def _answer_read(r: RaftState, frm: NodeId, index: int, ctx: bytes) -> None:
    if frm == r.id:
        r.read_states.append(ReadState(index, ctx))
    else:
        r.send(Message(MT.READ_INDEX_RESP, frm, r.id, index=index, context=ctx))


# --- transfer ---------------------------------------------------------------------------------
def transfer_leader(r: RaftState, target: NodeId) -> None:
    """Starts handing leadership to ``target``: it is caught up, then sent TIMEOUT_NOW;
    proposals are dropped meanwhile; the transfer aborts after an election timeout.
    Transferring to itself, or to the target of the transfer under way, does nothing.

    Raises MembershipError when ``target`` is not a voter."""
    if target not in r.voters:
        raise MembershipError(f"{target} is not a voter", node_id=target)
    if target == r.id or target == r.lead_transferee:
        return
    r.election_elapsed = 0
    r.lead_transferee = target
    pr = r.progress[target]
    if pr.match == r.log.last_index():
        r.send(Message(MT.TIMEOUT_NOW, target, r.id))
    else:
        send_append(r, target)


# --- runtime reports --------------------------------------------------------------------------
def report_snapshot(r: RaftState, to: NodeId, ok: bool) -> None:
    """Moves ``to`` out of SNAPSHOT state (any other state: nothing happens): on success
    replication resumes after the snapshot, on failure from its match index; a probe
    waits for the next heartbeat response."""
    pr = r.progress.get(to)
    if pr is None or pr.state != ProgressState.SNAPSHOT:
        return
    if not ok:
        pr.pending_snapshot = 0
    pr.become_probe()
    pr.probe_sent = True


def report_unreachable(r: RaftState, to: NodeId) -> None:
    """Drops ``to`` back to PROBE if it was replicating."""
    pr = r.progress.get(to)
    if pr is not None and pr.state == ProgressState.REPLICATE:
        pr.become_probe()
