"""Membership operations of the running cluster, on the node loop's thread.

Ops (client ``req`` bodies; answered by the leader, others answer ``not_leader`` so the
client follows the hint):

- ``{"op": "join", "id": ID, "addr": ADDR}``: add ID as a learner at ADDR, wait until its
  match index reaches the leader's commit index of that moment, then promote it to voter.
  Idempotent (a voter already at ADDR is answered at once; concurrent joins of one id share
  one procedure). A member at ANOTHER address is re-added at ADDR (as a learner first, then
  promoted again): a node that comes back at a new address replaces its old entry.
- ``{"op": "remove", "id": ID}``: remove ID (success when it is not a member), then revoke
  its CURVE key (``revoke``, on a node with keys: a ``keys`` write). Removing the
  leader first hands leadership to the most up-to-date voter and answers ``not_leader`` so
  that the client repeats the call at the new leader.
- ``{"op": "members"}``: any node; voters, learners, addresses, leader, and (on the leader)
  each member's match/next index.
- ``{"op": "transfer_leader", ["id": ID]}``: hand leadership to ID (default: the voter with
  the highest match index); answered once that node leads.

Each waiting operation is answered on success, on timeout (``timeout_ms`` in the body,
default 60 s; RequestTimeoutError) or when this node stops leading (NotLeaderError).

A removed node usually never hears that its removal committed (the leader stops talking to
it). So a leader that has applied everything it committed in its own term answers any Raft
traffic from a non-member with ``[1, "removed", {"by": ID, "term": T}]`` (at most once a
second per sender); the removed node (which accepts the notice only from the leader's
connection: ``Membership.on_removed_notice``) writes ``DATA/removed.json``, stops serving and
says why; it refuses to start again until its data directory is wiped (a fresh node may then
join under the same id). A node that applies its own removal does the same once no leader
replicates to it any more: the membership it applied may be behind the cluster's (a node
joining again under its old id may install a snapshot taken between its removal and its
re-addition).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from boltraft.errors import (
    BadRequestError,
    BoltraftError,
    ConfigError,
    MembershipError,
    NodeRemovedError,
    NotLeaderError,
    ProposalDroppedError,
    RequestTimeoutError,
)
from boltraft.raft.types import ConfChange, ConfChangeType, ConfState, LogStore, Role
from boltraft.server.config import ServerConfig, check_address, check_node_id
from boltraft.server.ports import MemberCore, Net, NodeView
from boltraft.server.replies import Replies, Target
from boltraft.server.wire import REMOVED, conf_to_json, fail, ok
from boltraft.transport import codec
from boltraft.transport.zmq_transport import Incoming

log = logging.getLogger("boltraft.server")

REMOVED_FILE = "removed.json"
MEMBER_OPS = frozenset(("join", "remove", "members", "transfer_leader"))
DEFAULT_TIMEOUT_MS = 60_000
_RETRY_LATER = "not yet in effect"  # the core's MembershipError messages worth a retry
_NO_TERM_COMMIT = "not committed an entry"


def check_removed(data_dir: str | Path) -> None:
    """Raises NodeRemovedError when ``data_dir`` belongs to a node removed from its cluster
    (start-up refuses to serve such a directory)."""
    p = Path(data_dir) / REMOVED_FILE
    if p.exists():
        try:
            why = json.loads(p.read_text()).get("reason", "removed")
        except (OSError, ValueError, AttributeError):
            why = "removed"
        raise NodeRemovedError(
            f"this node was removed from the cluster ({why}); wipe {data_dir} to join again",
            path=str(p),
        )


@dataclass(slots=True)
class _Op:
    """One waiting operation (a join, remove or transfer of ``node_id``).

    Invariant: ``targets`` are the requests waiting for it, all answered together."""

    kind: str
    node_id: str
    addr: str
    deadline: float
    targets: list[Target] = field(default_factory=list)
    catch_up: int = 0  # join: the match index the learner must reach before promotion
    proposed: int = 0  # index of our last conf change for it (0 = none pending)


class Membership:
    """The membership side of one node; every method runs on the loop thread."""

    def __init__(
        self,
        cfg: ServerConfig,
        view: NodeView,
        core: MemberCore,
        logstore: LogStore,
        replies: Replies,
        net: Net,
        counters: dict[str, int],
        revoke: Callable[[str], None] = lambda node_id: None,
    ) -> None:
        """``counters``: the node's counters this part adds to; ``revoke``: called with the
        id of a node once its removal is in effect, to revoke its CURVE key (a no-op
        without keys)."""
        self._revoke = revoke
        self.cfg = cfg
        self.view = view
        self.core = core
        self.logstore = logstore
        self.replies = replies
        self.net = net
        self._ops: dict[tuple[str, str], _Op] = {}
        self._noticed: dict[str, float] = {}  # stranger id -> last notice time
        self._seen_lead = view.lead
        self._was_member = view.id in view.conf_state.members()
        self._removed: str | None = None  # why, once its applied membership left it out
        self.halted: str | None = None
        self._counters = counters

    # --- requests -------------------------------------------------------------------------
    def on_request(self, target: Target, body: dict[str, Any], now: float) -> None:
        """Answers or queues one membership request."""
        view = self.view
        op = body["op"]
        if op == "members":
            self.replies.reply(target, ok(self.members()))
            return
        try:
            timeout_ms = body.get("timeout_ms", DEFAULT_TIMEOUT_MS)
            if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or timeout_ms < 1:
                raise BadRequestError("timeout_ms must be an integer >= 1")
            given = body.get("id")
            if (op in ("join", "remove") or given is not None) and (
                not isinstance(given, str) or not given
            ):
                raise BadRequestError(f"{op} needs a non-empty string 'id'")
            if op == "join":
                try:
                    check_node_id(given)
                except ConfigError as err:
                    raise BadRequestError(err.message) from None
            addr = body.get("addr", "") if op == "join" else ""
            if not isinstance(addr, str) or (op == "join" and not addr):
                raise BadRequestError("join needs 'addr': tcp://HOST:PORT")
            if addr:
                check_address(addr)
            if not view.is_leader:
                raise view.not_leader_error()
            node_id = given if isinstance(given, str) else self._best_voter()
            key = (op, node_id)
            entry = self._ops.get(key)
            if entry is None or (op == "join" and entry.addr != addr):
                limit = timeout_ms / 1000
                if op == "transfer_leader":  # the core gives up after an election timeout
                    limit = min(limit, 3 * self.cfg.election_tick * self.cfg.tick_ms / 1000)
                entry = _Op(op, node_id, addr, now + limit)
                self._ops[key] = entry
                if op == "transfer_leader":
                    self._start_transfer(entry)
                elif op == "remove" and node_id == view.id:
                    self._ops.pop(key)
                    self._remove_self()
                    return
            entry.targets.append(target)
        except BoltraftError as err:
            self.replies.reply(target, fail(err))
            return
        self._advance(entry, now)

    def members(self) -> dict[str, Any]:
        """Returns the ``members`` result of this node."""
        view = self.view
        out: dict[str, Any] = {
            "id": view.id,
            **conf_to_json(view.conf_state),
            "leader": view.lead,
            "leader_addr": view.addr_of(view.lead),
        }
        meta = self.logstore.snapshot_meta()
        out["log_base"] = {"index": meta.index, **conf_to_json(meta.conf_state)}
        if view.is_leader:
            out["progress"] = {
                nid: {"match": p.match, "next": p.next, "state": int(p.state)}
                for nid, p in self.core.status().progress.items()
            }
        return out

    def hand_over(self) -> str:
        """Returns the voter this leader starts handing leadership to (the one whose log
        matches furthest), or "" when there is none or the core refuses (not the leader, a
        transfer already running)."""
        try:
            target = self._best_voter()
            self.core.transfer_leader(target)
        except (MembershipError, ProposalDroppedError):
            return ""
        log.debug("%s: handing leadership to %s", self.view.id, target)
        return target

    def _best_voter(self) -> str:
        progress = self.core.status().progress
        others = [v for v in self.view.conf_state.voters if v != self.view.id]
        if not others:
            raise MembershipError("there is no other voter to hand leadership to")
        return max(others, key=lambda v: progress[v].match if v in progress else -1)

    def _start_transfer(self, op: _Op) -> None:
        if op.node_id == self.view.id:
            return  # already leading: answered by _advance
        if op.node_id not in self.view.conf_state.voters:
            raise MembershipError(f"{op.node_id} is not a voter", node_id=op.node_id)
        self.core.transfer_leader(op.node_id)

    def _remove_self(self) -> None:
        view = self.view
        target = self._best_voter()
        log.info("%s: removing this leader: handing leadership to %s first", view.id, target)
        self.core.transfer_leader(target)
        raise NotLeaderError(
            f"{view.id} is handing leadership to {target}; repeat the removal there",
            leader_id=target,
            leader_addr=view.addr_of(target),
        )

    # --- progress -------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Advances every waiting operation (and notices a leader change); halts a node that
        applied its own removal and no longer hears a leader."""
        self._halt_if_abandoned(now)
        if self.view.lead != self._seen_lead:
            self._seen_lead = self.view.lead
            self._on_leader_change()
        for entry in list(self._ops.values()):
            if now >= entry.deadline:
                self._answer(entry, RequestTimeoutError(f"{entry.kind} {entry.node_id} timed out"))
            else:
                self._advance(entry, now)

    def _on_leader_change(self) -> None:
        view = self.view
        for entry in list(self._ops.values()):
            if entry.kind == "transfer_leader":
                if view.lead == entry.node_id:
                    self._answer(entry, self._lead_result())
                elif view.lead:
                    self._answer(entry, view.not_leader_error())
            elif not view.is_leader:
                self._answer(entry, view.not_leader_error())

    def _advance(self, op: _Op, now: float) -> None:
        view = self.view
        if op.kind == "transfer_leader":
            if view.lead == op.node_id:
                self._answer(op, self._lead_result())
            return
        if not view.is_leader:
            self._answer(op, view.not_leader_error())
            return
        if op.proposed > view.applied:
            return  # our last change is not in effect yet
        cs = view.conf_state
        nid = op.node_id
        if op.kind == "remove":
            if nid not in cs.members():
                self._revoke(nid)
                self._answer(op, {"removed": nid, **conf_to_json(cs)})
            else:
                self._propose(op, ConfChangeType.REMOVE_NODE)
            return
        same_addr = cs.addrs.get(nid) == op.addr
        if nid in cs.voters and same_addr:
            self._answer(op, {"joined": nid, **conf_to_json(cs)})
        elif nid in cs.learners and same_addr:
            if not op.catch_up:
                op.catch_up = max(view.commit, 1)
            pr = self.core.status().progress.get(nid)
            if pr is not None and pr.match >= op.catch_up:
                self._propose(op, ConfChangeType.ADD_VOTER)
        elif nid == view.id:
            self._answer(op, MembershipError("the leader cannot change its own address"))
        else:
            op.catch_up = 0
            self._propose(op, ConfChangeType.ADD_LEARNER)

    def _propose(self, op: _Op, typ: ConfChangeType) -> None:
        try:
            _, index = self.core.propose_conf_change(ConfChange(typ, op.node_id, op.addr))
        except ProposalDroppedError:
            self._answer(op, self.view.not_leader_error())
            return
        except MembershipError as err:
            if _RETRY_LATER in err.message or _NO_TERM_COMMIT in err.message:
                return  # another change is in flight, or our no-op is not committed: later
            self._answer(op, err)
            return
        op.proposed = index
        log.info("%s: proposed %s %s %s at %d", self.view.id, typ.name, op.node_id, op.addr, index)

    def _answer(self, op: _Op, result: Any) -> None:
        self._ops.pop((op.kind, op.node_id), None)
        resp = fail(result) if isinstance(result, BoltraftError) else ok(result)
        for target in op.targets:
            self.replies.reply(target, resp)

    def _lead_result(self) -> dict[str, str]:
        view = self.view
        return {"leader": view.lead, "leader_addr": view.addr_of(view.lead)}

    # --- membership changes and removed nodes ---------------------------------------------
    def on_conf_state(self, cs: ConfState) -> None:
        """Reacts to a membership change that took effect: waiting operations move on; a
        node that applied its own removal halts once its leader no longer replicates to it
        (``tick``), unless a membership naming it takes effect first."""
        view = self.view
        member = view.id in cs.members()
        if self._was_member and not member:
            if self._removed is None:
                reason = f"the membership change at index {view.applied} removed {view.id}"
                self._removed = reason
                self._halt_if_abandoned(time.monotonic())
        elif member:
            self._removed = None
        self._was_member = self._was_member or member
        now = time.monotonic()
        for entry in list(self._ops.values()):
            self._advance(entry, now)

    def _halt_if_abandoned(self, now: float) -> None:
        """Halts a node whose applied membership leaves it out once no leader replicates to
        it (or at once, as the leader). A leader replicates only to its members: while this
        node hears one, the cluster has it back (a snapshot taken between its removal and
        its re-addition, or a log applied in pieces, shows a membership without it first)."""
        view = self.view
        if self._removed is not None and (view.is_leader or not view.leader_recently_heard(now)):
            self.halt(self._removed)

    def on_stranger(self, frame: Incoming, frm: str) -> None:
        """As a leader that is fully applied in its own term, tells the
        non-member ``frm`` that it is not in the cluster (rate-limited)."""
        view = self.view
        if view.role != Role.LEADER or frm in view.conf_state.members() or not frm:
            return
        term = self.core.status().term
        if view.applied < view.commit or self.logstore.term(view.commit) != term:
            return
        now = time.monotonic()
        if now - self._noticed.get(frm, -1e9) < 1.0:
            return
        self._noticed[frm] = now
        notice = {"by": view.id, "term": term}
        self.net.reply(frame.sender, codec.encode_frame(REMOVED, notice))
        log.info("%s: told non-member %s that it is not in the cluster", view.id, frm)

    def on_removed_notice(self, frame: Incoming) -> None:
        """Halts this node when the leader says it is not a member, and only then: the
        notice must come on this node's own connection to a member it knows (``frame.peer``,
        its peer table), name that member as ``by``, carry a ``term`` at least this node's,
        and that member must be the leader this node follows, or no leader must be known.
        Anything else (a client's connection, an unknown or other sender, a stale term, a
        node that leads or was never a member) is counted and ignored."""
        notice = frame.payload
        by, term = notice.get("by"), notice.get("term")
        view = self.view
        sender = frame.peer
        if (
            not self._was_member
            or view.is_leader
            or sender is None
            or by != sender
            or sender == view.id
            or sender not in view.conf_state.members()
            or sender not in self.net.peers()
            or type(term) is not int
            or term < self.core.status().term
            or view.lead not in ("", sender)
        ):
            self._counters["ignored_removed_notices"] = (
                self._counters.get("ignored_removed_notices", 0) + 1
            )
            return
        self.halt(f"leader {by} says {view.id} is no longer a member")

    def halt(self, reason: str) -> None:
        """Records ``reason`` in DATA/removed.json and asks the loop
        to stop (the process exits saying why)."""
        if self.halted is not None:
            return
        self.halted = reason
        log.error("%s: removed from the cluster: %s; stopping", self.view.id, reason)
        p = Path(self.cfg.data) / REMOVED_FILE
        try:
            p.write_text(json.dumps({"reason": reason, "at_ms": int(time.time() * 1000)}) + "\n")
        except OSError as exc:
            log.error("cannot write %s: %s", p, exc)

    def close(self) -> None:
        """Fails every waiting operation (the node is stopping)."""
        for entry in list(self._ops.values()):
            self._answer(
                entry,
                NodeRemovedError("the node is stopping")
                if self.halted
                else self.view.not_leader_error(),
            )
