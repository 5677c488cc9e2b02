"""Returns nothing; membership operations of the running cluster, on the node loop's thread.

Ops (client ``req`` bodies; answered by the leader, others answer ``not_leader`` so the
client follows the hint):

- ``{"op": "join", "id": ID, "addr": ADDR}``: add ID as a learner at ADDR, wait until its
  match index reaches the leader's commit index of that moment, then promote it to voter.
  Idempotent (a voter already at ADDR is answered at once; concurrent joins of one id share
  one procedure). A member at ANOTHER address is re-added at ADDR (as a learner first, then
  promoted again): a node that comes back at a new address replaces its old entry.
- ``{"op": "remove", "id": ID}``: remove ID (success when it is not a member). Removing the
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
second per sender); the removed node, or one that applies its own removal, writes
``DATA/removed.json``, stops serving and says why; it refuses to start again until its data
directory is wiped (a fresh node may then join under the same id).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from boltraft.errors import (
    BadRequestError,
    BoltraftError,
    MalformedFrameError,
    MembershipError,
    NodeRemovedError,
    NotLeaderError,
    ProposalDroppedError,
    RequestTimeoutError,
)
from boltraft.raft.types import ConfChange, ConfChangeType, ConfState, Role
from boltraft.server.config import check_address
from boltraft.server.snapshots import conf_to_json
from boltraft.transport import codec
from boltraft.transport.zmq_transport import Incoming

if TYPE_CHECKING:
    from boltraft.server.node import Node
    from boltraft.server.service import Target

log = logging.getLogger("boltraft.server")

REMOVED = "removed"
REMOVED_FILE = "removed.json"
MEMBER_OPS = frozenset(("join", "remove", "members", "transfer_leader"))
DEFAULT_TIMEOUT_MS = 60_000
_RETRY_LATER = "not yet in effect"  # the core's MembershipError messages worth a retry
_NO_TERM_COMMIT = "not committed an entry"


def _decode_removed(fields: list[Any]) -> dict[str, Any]:
    """Returns the notice map of a ``removed`` frame; raises MalformedFrameError otherwise."""
    if len(fields) != 1 or type(fields[0]) is not dict:
        raise MalformedFrameError("a removed frame carries one map")
    return fields[0]


codec.register_kind(REMOVED, _decode_removed)


def check_removed(data_dir: str | Path) -> None:
    """Returns None unless ``data_dir`` belongs to a node removed from its cluster; raises
    NodeRemovedError saying so (start-up refuses to serve such a directory)."""
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

    def __init__(self, node: Node) -> None:
        self.node = node
        self._ops: dict[tuple[str, str], _Op] = {}
        self._noticed: dict[str, float] = {}  # stranger id -> last notice time
        self._seen_lead = node.lead
        self._was_member = node.id in node.conf_state.members()
        self.halted: str | None = None

    # --- requests -------------------------------------------------------------------------
    def on_request(self, target: Target, body: dict[str, Any], now: float) -> None:
        """Returns None after answering or queueing one membership request."""
        node = self.node
        op = body["op"]
        if op == "members":
            node.service.reply(target, _ok(self.members()))
            return
        try:
            timeout_ms = body.get("timeout_ms", DEFAULT_TIMEOUT_MS)
            if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or timeout_ms < 1:
                raise BadRequestError("timeout_ms must be an integer >= 1")
            node_id = body.get("id")
            if (op in ("join", "remove") or node_id is not None) and (
                not isinstance(node_id, str) or not node_id
            ):
                raise BadRequestError(f"{op} needs a non-empty string 'id'")
            addr = ""
            if op == "join":
                addr = body.get("addr")
                if not isinstance(addr, str):
                    raise BadRequestError("join needs 'addr': tcp://HOST:PORT")
                check_address(addr)
            if not node.is_leader:
                raise self._not_leader()
            if op == "transfer_leader":
                node_id = node_id or self._best_voter()
            key = (op, node_id)
            entry = self._ops.get(key)
            if entry is None or (op == "join" and entry.addr != addr):
                limit = timeout_ms / 1000
                if op == "transfer_leader":  # the core gives up after an election timeout
                    limit = min(limit, 3 * node.cfg.election_tick * node.cfg.tick_ms / 1000)
                entry = _Op(op, node_id, addr, now + limit)
                self._ops[key] = entry
                if op == "transfer_leader":
                    self._start_transfer(entry)
                elif op == "remove" and node_id == node.id:
                    self._ops.pop(key)
                    self._remove_self()
                    return
            entry.targets.append(target)
        except BoltraftError as err:
            node.service.reply(target, _fail(err))
            return
        self._advance(entry, now)

    def members(self) -> dict[str, Any]:
        """Returns the ``members`` result of this node."""
        node = self.node
        out: dict[str, Any] = {
            "id": node.id,
            **conf_to_json(node.conf_state),
            "leader": node.lead,
            "leader_addr": node.addr_of(node.lead),
        }
        meta = node.logstore.snapshot_meta()
        out["log_base"] = {"index": meta.index, **conf_to_json(meta.conf_state)}
        if node.is_leader:
            out["progress"] = {
                nid: {"match": p.match, "next": p.next, "state": int(p.state)}
                for nid, p in node.raw.status().progress.items()
            }
        return out

    def hand_over(self) -> str:
        """Returns the voter this leader starts handing leadership to (the one whose log
        matches furthest), or "" when there is none or the core refuses (not the leader, a
        transfer already running)."""
        node = self.node
        try:
            target = self._best_voter()
            node.raw.transfer_leader(target)
        except (MembershipError, ProposalDroppedError):
            return ""
        log.debug("%s: handing leadership to %s", node.id, target)
        return target

    def _best_voter(self) -> str:
        node = self.node
        progress = node.raw.status().progress
        others = [v for v in node.conf_state.voters if v != node.id]
        if not others:
            raise MembershipError("there is no other voter to hand leadership to")
        return max(others, key=lambda v: progress[v].match if v in progress else -1)

    def _start_transfer(self, op: _Op) -> None:
        node = self.node
        if op.node_id == node.id:
            return  # already leading: answered by _advance
        if op.node_id not in node.conf_state.voters:
            raise MembershipError(f"{op.node_id} is not a voter", node_id=op.node_id)
        node.raw.transfer_leader(op.node_id)

    def _remove_self(self) -> None:
        node = self.node
        target = self._best_voter()
        log.info("%s: removing this leader: handing leadership to %s first", node.id, target)
        node.raw.transfer_leader(target)
        raise NotLeaderError(
            f"{node.id} is handing leadership to {target}; repeat the removal there",
            leader_id=target,
            leader_addr=node.addr_of(target),
        )

    # --- progress -------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Returns None; advances every waiting operation (and notices a leader change)."""
        node = self.node
        if node.lead != self._seen_lead:
            self._seen_lead = node.lead
            self._on_leader_change()
        for entry in list(self._ops.values()):
            if now >= entry.deadline:
                self._answer(entry, RequestTimeoutError(f"{entry.kind} {entry.node_id} timed out"))
            else:
                self._advance(entry, now)

    def _on_leader_change(self) -> None:
        node = self.node
        for entry in list(self._ops.values()):
            if entry.kind == "transfer_leader":
                if node.lead == entry.node_id:
                    self._answer(entry, self._lead_result())
                elif node.lead:
                    self._answer(entry, self._not_leader())
            elif not node.is_leader:
                self._answer(entry, self._not_leader())

    def _advance(self, op: _Op, now: float) -> None:
        node = self.node
        if op.kind == "transfer_leader":
            if node.lead == op.node_id:
                self._answer(op, self._lead_result())
            return
        if not node.is_leader:
            self._answer(op, self._not_leader())
            return
        if op.proposed > node.applied:
            return  # our last change is not in effect yet
        cs = node.conf_state
        nid = op.node_id
        if op.kind == "remove":
            if nid not in cs.members():
                self._answer(op, {"removed": nid, **conf_to_json(cs)})
            else:
                self._propose(op, ConfChangeType.REMOVE_NODE)
            return
        same_addr = cs.addrs.get(nid) == op.addr
        if nid in cs.voters and same_addr:
            self._answer(op, {"joined": nid, **conf_to_json(cs)})
        elif nid in cs.learners and same_addr:
            if not op.catch_up:
                op.catch_up = max(node.commit, 1)
            pr = node.raw.status().progress.get(nid)
            if pr is not None and pr.match >= op.catch_up:
                self._propose(op, ConfChangeType.ADD_VOTER)
        elif nid == node.id:
            self._answer(op, MembershipError("the leader cannot change its own address"))
        else:
            op.catch_up = 0
            self._propose(op, ConfChangeType.ADD_LEARNER)

    def _propose(self, op: _Op, typ: ConfChangeType) -> None:
        try:
            _, index = self.node.raw.propose_conf_change(ConfChange(typ, op.node_id, op.addr))
        except ProposalDroppedError:
            self._answer(op, self._not_leader())
            return
        except MembershipError as err:
            if _RETRY_LATER in err.message or _NO_TERM_COMMIT in err.message:
                return  # another change is in flight, or our no-op is not committed: later
            self._answer(op, err)
            return
        op.proposed = index
        log.info("%s: proposed %s %s %s at %d", self.node.id, typ.name, op.node_id, op.addr, index)

    def _answer(self, op: _Op, result: Any) -> None:
        self._ops.pop((op.kind, op.node_id), None)
        resp = _fail(result) if isinstance(result, BoltraftError) else _ok(result)
        for target in op.targets:
            self.node.service.reply(target, resp)

    def _lead_result(self) -> dict[str, str]:
        node = self.node
        return {"leader": node.lead, "leader_addr": node.addr_of(node.lead)}

    def _not_leader(self) -> BoltraftError:
        return self.node.service._not_leader_error()

    # --- membership changes and removed nodes ---------------------------------------------
    def on_conf_state(self, cs: ConfState) -> None:
        """Returns None after reacting to a membership change that took effect: waiting
        operations move on; a node that applied its own removal halts."""
        node = self.node
        member = node.id in cs.members()
        if self._was_member and not member:
            self.halt(f"the membership change at index {node.applied} removed {node.id}")
        self._was_member = self._was_member or member
        now = time.monotonic()
        for entry in list(self._ops.values()):
            self._advance(entry, now)

    def on_stranger(self, frame: Incoming, frm: str) -> None:
        """Returns None; as a leader that is fully applied in its own term, tells the
        non-member ``frm`` that it is not in the cluster (rate-limited)."""
        node = self.node
        if node.role != Role.LEADER or frm in node.conf_state.members() or not frm:
            return
        if node.applied < node.commit or node.logstore.term(node.commit) != node.raw.status().term:
            return
        now = time.monotonic()
        if now - self._noticed.get(frm, -1e9) < 1.0:
            return
        self._noticed[frm] = now
        notice = {"by": node.id, "term": node.raw.status().term}
        node.net.reply(frame.sender, codec.encode_frame(REMOVED, notice))
        log.info("%s: told non-member %s that it is not in the cluster", node.id, frm)

    def on_removed_notice(self, frame: Incoming) -> None:
        """Returns None; halts this node when a leader says it is not a member."""
        node = self.node
        by = frame.payload.get("by")
        if not self._was_member or node.is_leader or not isinstance(by, str):
            node.count("ignored_removed_notices")
            return
        self.halt(f"leader {by} says {node.id} is no longer a member")

    def halt(self, reason: str) -> None:
        """Returns None after recording ``reason`` in DATA/removed.json and asking the loop
        to stop (the process exits saying why)."""
        if self.halted is not None:
            return
        self.halted = reason
        log.error("%s: removed from the cluster: %s; stopping", self.node.id, reason)
        p = Path(self.node.cfg.data) / REMOVED_FILE
        try:
            p.write_text(json.dumps({"reason": reason, "at_ms": int(time.time() * 1000)}) + "\n")
        except OSError as exc:
            log.error("cannot write %s: %s", p, exc)

    def close(self) -> None:
        """Returns None after failing every waiting operation (the node is stopping)."""
        for entry in list(self._ops.values()):
            self._answer(
                entry,
                NodeRemovedError("the node is stopping") if self.halted else (self._not_leader()),
            )


def _ok(result: Any) -> dict[str, Any]:
    return {"ok": True, "result": result}


def _fail(err: BoltraftError) -> dict[str, Any]:
    return {"ok": False, "error": err.to_wire()}


def bootstrap_for_join(logstore: Any, join_addr: str, timeout: float = 30.0) -> bool:
    """Returns True after bootstrapping an EMPTY log store with the membership the cluster
    at ``join_addr`` keeps at the base of its log (asked of its leader), so that this node
    replays the cluster's log from the same start (or receives a snapshot); False, changing
    nothing, when the store already holds state (a restart). Raises RequestTimeoutError when
    no leader answers within ``timeout`` seconds."""
    if logstore.last_index() or logstore.snapshot_meta().index:
        return False
    if logstore.initial_state()[1].voters:
        return False
    from boltraft.server.probe import request
    from boltraft.server.snapshots import conf_from_json

    deadline = time.monotonic() + timeout
    addr = join_addr
    while True:
        try:
            info = request(addr, {"op": "members"}, timeout=2.0)
            if info.get("leader") == info.get("id"):
                return bool(logstore.bootstrap(conf_from_json(info["log_base"])))
            addr = info.get("leader_addr") or join_addr
        except BoltraftError as err:
            log.info("join: %s did not answer the membership (%s); retrying", addr, err.message)
            addr = join_addr
        if time.monotonic() >= deadline:
            raise RequestTimeoutError(f"no leader found through {join_addr} to join", addr=addr)
        time.sleep(0.2)


def request_join(
    node_id: str, addr: str, join_addr: str, should_stop: Callable[[], bool]
) -> threading.Thread:
    """Returns a started daemon thread that asks the cluster at ``join_addr`` to add this node
    (id ``node_id`` at ``addr``) until it is a voter or ``should_stop()``."""
    from boltraft.client import Client

    def run() -> None:
        with Client([join_addr], timeout=120.0) as client:
            while not should_stop():
                try:
                    client.join(node_id, addr, timeout=120.0)
                    log.info("%s: joined the cluster as a voter", node_id)
                    return
                except BoltraftError as err:
                    log.warning("%s: join not done yet: %s", node_id, err.message)
                    deadline = time.monotonic() + 1.0
                    while time.monotonic() < deadline and not should_stop():
                        time.sleep(0.05)

    t = threading.Thread(target=run, name="boltraft-join", daemon=True)
    t.start()
    return t
