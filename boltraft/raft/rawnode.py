"""RawNode: the runtime's handle on the consensus core (etcd's rawnode.go).

The runtime drives it with ``tick()``, ``step(msg)``, ``propose(datas)`` and friends, and
collects work with ``ready()`` / ``advance(ready)`` following the contract written on
:class:`boltraft.raft.types.Ready`. Everything is deterministic: the only randomness is
``Config.rng``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from boltraft.errors import BadRequestError
from boltraft.raft.config import Config
from boltraft.raft.raft import Raft
from boltraft.raft.types import (
    MAX_INDEX,
    MAX_TERM,
    ConfChange,
    HardState,
    LogStore,
    Message,
    MessageType,
    NodeId,
    ProgressStatus,
    Ready,
    Role,
    SoftState,
    Status,
)

__all__ = ["ProgressStatus", "RawNode", "Status"]

_EARLY = (MessageType.APP, MessageType.HEARTBEAT)


def _set_spare(rd: Ready, spare: frozenset[NodeId]) -> None:
    """Moves the appends carrying entries to the ``spare`` followers out of
    ``rd.early_messages`` into ``rd.spare_messages``."""
    if not spare:
        return
    early: list[Message] = []
    for m in rd.early_messages:
        if m.to in spare and m.entries and m.type == MessageType.APP:
            rd.spare_messages.append(m)
        else:
            early.append(m)
    rd.early_messages = early


class RawNode:
    """A Raft node without I/O. At most one Ready is outstanding: call ``advance(ready)``
    before the next ``ready()``.

    Invariant: ``_prev_hard`` is the hard state last handed out (what the runtime persisted
    or is persisting); its term never decreases."""

    __slots__ = ("_prev_hard", "_prev_soft", "raft")

    def __init__(self, config: Config, storage: LogStore) -> None:
        self.raft = Raft(config, storage)
        r = self.raft
        self._prev_soft = SoftState(r.lead, r.role)
        self._prev_hard = HardState(r.term, r.vote, r.log.committed)

    # --- input -------------------------------------------------------------------------------
    def tick(self) -> None:
        """Advances the logical clock by one tick."""
        self.raft.tick()

    def step(self, msg: Message) -> None:
        """Handles a message from a peer; one addressed to another node is ignored. Raises
        BadRequestError (changing nothing) for a non-Message or one no correct peer sends
        (``check_message``)."""
        if not isinstance(msg, Message) or not isinstance(msg.type, MessageType):
            raise BadRequestError(f"not a raft message: {msg!r}")
        if msg.to != self.raft.id:
            return
        self.check_message(msg)
        self.raft.step(msg)

    def check_message(self, m: Message) -> None:
        """Raises BadRequestError when ``m`` could not come from a correct peer: a term past
        MAX_TERM or an index past MAX_INDEX; an append whose entries do not follow its index
        one by one, with terms from its log term up to its own term; an append response that
        acknowledges or rejects an index past the last one of this node as the leader of
        the message's term (its log bounds every index it sent in its term; a node that
        restarted in that term as a follower may have lost entries it sent, and ignores
        the response anyway)."""
        if not (
            0 <= m.term <= MAX_TERM
            and 0 <= m.log_term <= MAX_TERM
            and 0 <= m.hint_term <= MAX_TERM
            and 0 <= m.index <= MAX_INDEX
            and 0 <= m.commit <= MAX_INDEX
            and 0 <= m.reject_hint <= MAX_INDEX
        ):
            raise BadRequestError(f"{m.type.name} from {m.frm!r}: a term or index out of range")
        snap = m.snapshot
        if snap is not None and not (0 <= snap.index <= MAX_INDEX and 0 <= snap.term <= MAX_TERM):
            raise BadRequestError(f"{m.type.name} from {m.frm!r}: a snapshot out of range")
        if m.type == MessageType.APP:
            if m.log_term > m.term:
                raise BadRequestError(f"APP from {m.frm!r}: log term {m.log_term} > {m.term}")
            prev_term, expect = m.log_term, m.index + 1
            for e in m.entries:
                if e.index != expect or not prev_term <= e.term <= m.term:
                    raise BadRequestError(
                        f"APP from {m.frm!r}: entry ({e.term}, {e.index}) does not follow"
                        f" ({prev_term}, {expect - 1})"
                    )
                prev_term, expect = e.term, expect + 1
        elif (
            m.type == MessageType.APP_RESP
            and self.raft.role == Role.LEADER
            and m.term == self.raft.term
            and m.index > self.raft.log.last_index()
        ):
            raise BadRequestError(
                f"APP_RESP from {m.frm!r}: index {m.index} is past the last index"
                f" {self.raft.log.last_index()}"
            )

    def campaign(self) -> None:
        """Starts an election now (pre-vote first when configured)."""
        self.raft.hup()

    def propose(self, datas: Sequence[bytes]) -> tuple[int, int]:
        """Proposes one entry per item of ``datas``. Returns (term, index of the LAST new
        entry); see ``Raft.propose`` for what it raises."""
        return self.raft.propose(datas)

    def propose_conf_change(self, cc: ConfChange) -> tuple[int, int]:
        """Proposes the membership change ``cc``. Returns (term, index) of its entry. Raises
        ProposalDroppedError when not the leader or transferring, MembershipError for an
        invalid change or while another one is not yet in effect."""
        return self.raft.propose_conf_change(cc)

    def read_index(self, context: bytes) -> None:
        """Starts a linearizable read: a ReadState(index, context) appears in a later Ready.
        Raises ProposalDroppedError when no leader is known."""
        self.raft.read_index(context)

    def transfer_leader(self, target: NodeId) -> None:
        """Starts a leadership transfer to ``target``. Raises ProposalDroppedError when not
        the leader, MembershipError for a non-voter."""
        self.raft.transfer_leader(target)

    def report_snapshot(self, to: NodeId, ok: bool) -> None:
        """Notes whether the snapshot sent to ``to`` was installed."""
        self.raft.report_snapshot(to, ok)

    def report_unreachable(self, to: NodeId) -> None:
        """Notes that a message to ``to`` could not be delivered."""
        self.raft.report_unreachable(to)

    def report_disconnected(self, peer: NodeId) -> None:
        """Tells the core that the runtime's connection to ``peer`` closed: a follower led
        by ``peer`` forgets it and campaigns soon (``Raft.peer_disconnected``)."""
        self.raft.peer_disconnected(peer)

    def set_prompt_commit(self, members: Iterable[NodeId]) -> None:
        """With ``lazy_commit``: while leading, tells ``members`` of every raised commit index
        at once (an empty APP when nothing else goes to them), as without ``lazy_commit``;
        the others learn it with their next APP or heartbeat. Replaces the previous set; ids
        that are not members are ignored."""
        self.raft.prompt_commit = frozenset(members)

    # --- output ------------------------------------------------------------------------------
    def has_ready(self) -> bool:
        """Returns True when ``ready()`` would return something to do."""
        r = self.raft
        log = r.log
        return bool(
            r.msgs
            or log.ents
            or log.snapshot is not None
            or r.read_states
            or r.conf_changed
            or log.has_next_committed_entries()
            or SoftState(r.lead, r.role) != self._prev_soft
            or HardState(r.term, r.vote, log.committed) != self._prev_hard
        )

    def ready(self) -> Ready:
        """Returns the work to do now (see the contract on Ready) and marks it handed out:
        committed conf changes take effect here and ``Ready.conf_state`` carries the result.
        """
        r = self.raft
        log = r.log
        rd = Ready()
        snap = log.snapshot
        if snap is not None:
            rd.snapshot = snap
            if snap.index > log.applying:
                log.applying = snap.index
        else:
            committed = log.next_committed_entries()
            if committed:
                rd.committed_entries = committed
                log.applying = committed[-1].index
                r.committed_handed_out(committed)
        if log.ents:
            rd.entries = log.ents[:]
        soft = SoftState(r.lead, r.role)
        if soft != self._prev_soft:
            rd.soft_state = soft
            self._prev_soft = soft
        hard = HardState(r.term, r.vote, log.committed)
        term_changed = hard.term != self._prev_hard.term
        if hard != self._prev_hard:
            rd.hard_state = hard
            self._prev_hard = hard
        if r.conf_changed:
            rd.conf_state = r.conf
            r.conf_changed = False
        msgs = r.msgs
        if msgs:
            r.msgs = []
            r.read_only.close_open()
            if r.role == Role.LEADER and not term_changed:
                rd.early_messages = [m for m in msgs if m.type in _EARLY]
                if len(rd.early_messages) != len(msgs):
                    rd.messages = [m for m in msgs if m.type not in _EARLY]
                if r.cfg.spare_appends:
                    _set_spare(rd, r.spare_voters())
            else:
                rd.messages = msgs
        if r.read_states:
            rd.read_states = r.read_states
            r.read_states = []
        return rd

    def advance(self, rd: Ready) -> None:
        """Records that ``rd`` was carried out: its snapshot and entries are durable and its
        committed entries applied. A leader then counts its own copy of those entries toward
        commit."""
        log = self.raft.log
        if rd.snapshot is not None:
            log.stable_snap_to(rd.snapshot.index)
            log.applied_to(rd.snapshot.index)
        if rd.entries:
            last = rd.entries[-1]
            log.stable_to(last.index, last.term)
        if rd.committed_entries:
            log.applied_to(rd.committed_entries[-1].index)
        self.raft.self_acknowledge()

    # --- observation -------------------------------------------------------------------------
    def status(self) -> Status:
        """Returns a snapshot of this node's state (progress only on a leader)."""
        r = self.raft
        progress = (
            {nid: pr.status() for nid, pr in r.progress.items()} if r.role == Role.LEADER else {}
        )
        return Status(
            r.id,
            r.term,
            r.vote,
            r.log.committed,
            r.log.applied,
            r.lead,
            r.role,
            r.conf,
            progress,
        )

    def check_invariants(self) -> None:
        """Checks every invariant of the core. Raises AssertionError naming a broken one."""
        r = self.raft
        r.check_invariants()
        if r.term < self._prev_hard.term:
            raise AssertionError(f"term went back from {self._prev_hard.term} to {r.term}")
        if r.log.committed < self._prev_hard.commit:
            raise AssertionError("commit index went back")
