"""What the node loop knows of itself, in two small objects it owns and its parts share:

- ``NodeState``: id, leader, role, commit and applied indexes, membership, peer addresses,
  disk-full reasons. Only the node loop writes it; its parts read it as a
  ``boltraft.server.ports.NodeView``.
- ``CoreHandle``: the consensus core the parts may call (propose, read index, conf
  changes, transfers, snapshot reports). The loop replaces the core after a full disk
  (``Node._on_log_full``); the handle always reaches the current one.

Invariants: ``applied <= commit``; ``lead`` is "" or a member id; ``peer_addrs`` holds every
member but this node that has an address.
"""

from __future__ import annotations

from collections.abc import Sequence

from boltraft.errors import BoltraftError, NoLeaderError, NotLeaderError, UnavailableError
from boltraft.raft.rawnode import RawNode
from boltraft.raft.types import ConfChange, ConfState, Message, Role, Status


class NodeState:
    """The node's view of itself (see the module docstring); implements ports.NodeView."""

    def __init__(self, node_id: str, listen: str, election_s: float) -> None:
        self.id = node_id
        self.listen = listen
        self.lead = ""
        self.role = Role.FOLLOWER
        self.commit = 0
        self.applied = 0
        self.conf_state = ConfState()
        self.member_ids: frozenset[str] = frozenset()
        self.peer_addrs: dict[str, str] = {}
        self.log_full = ""  # the log could not take the last Ready ("" when it could)
        self.apply_full = ""  # the state machine could not apply ("" when it could)
        self.leader_heard = -1e18  # monotonic time a message from the leader last arrived
        self.heard_lead = ""  # the leader that message came from
        # the longest silence of one leader between two of its messages (seconds): what the
        # election timeout must outlast on this machine (status: leader_gap_max_ms)
        self.leader_gap = 0.0
        self._election_s = election_s

    @property
    def is_leader(self) -> bool:
        return self.role == Role.LEADER

    @property
    def disk_full(self) -> str:
        return self.log_full or self.apply_full

    def addr_of(self, node_id: str) -> str:
        if node_id == self.id:
            return self.listen
        return self.peer_addrs.get(node_id, "")

    def leader_recently_heard(self, now: float) -> bool:
        if self.role == Role.LEADER:
            return True
        return bool(self.lead) and now - self.leader_heard <= self._election_s

    def not_leader_error(self) -> BoltraftError:
        lead = self.lead
        if not lead and self.disk_full:
            return UnavailableError(self.disk_full + "; no leader is known")
        if not lead:
            return NoLeaderError("no leader is known right now; retry shortly")
        return NotLeaderError(
            f"{self.id} is not the leader; {lead} is",
            leader_id=lead,
            leader_addr=self.addr_of(lead),
        )


class CoreHandle:
    """The current consensus core, for the node's parts (ports.Proposer, MemberCore,
    SnapCore); ``raw`` is replaced by the loop only."""

    def __init__(self, raw: RawNode) -> None:
        self.raw = raw

    def propose(self, datas: Sequence[bytes]) -> tuple[int, int]:
        return self.raw.propose(datas)

    def read_index(self, context: bytes) -> None:
        self.raw.read_index(context)

    def propose_conf_change(self, cc: ConfChange) -> tuple[int, int]:
        return self.raw.propose_conf_change(cc)

    def transfer_leader(self, target: str) -> None:
        self.raw.transfer_leader(target)

    def step(self, m: Message) -> None:
        self.raw.step(m)

    def report_snapshot(self, to: str, ok: bool) -> None:
        self.raw.report_snapshot(to, ok)

    def status(self) -> Status:
        return self.raw.status()
