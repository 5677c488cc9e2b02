"""When a node takes itself for removed (boltraft.server.membership): a membership without it
that takes effect while a leader still replicates to it is not a removal (a node joining
again under its old id installs a snapshot taken between its removal and its re-addition,
then the entries that add it back); one that stays in effect once no leader replicates to it
is, and so is a leader's notice. (Real processes: tests/integration/test_membership.py.)"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from boltraft.raft.types import ConfState, Role
from boltraft.server.config import ServerConfig
from boltraft.server.membership import REMOVED_FILE, Membership
from boltraft.server.state import NodeState

ELECTION_S = 1.0
WITH = ConfState(voters=("n1", "n2", "n3"))
WITHOUT = ConfState(voters=("n1", "n3"))
BACK = ConfState(voters=("n1", "n3"), learners=("n2",))


def member(tmp_path: Path, lead: str = "n1") -> tuple[Membership, NodeState]:
    view = NodeState("n2", "tcp://127.0.0.1:7002", ELECTION_S)
    view.conf_state = WITH
    view.lead = lead
    cfg = ServerConfig(id="n2", data=tmp_path, listen="tcp://127.0.0.1:7002")
    unused: Any = None
    return Membership(cfg, view, unused, unused, unused, unused, {}), view


def test_a_membership_without_it_while_the_leader_replicates_to_it_is_not_a_removal(
    tmp_path: Path,
) -> None:
    m, view = member(tmp_path)
    view.leader_heard = time.monotonic()
    view.applied = 2715
    m.on_conf_state(WITHOUT)  # a snapshot taken between its removal and its re-addition
    m.tick(time.monotonic())
    assert m.halted is None
    view.applied = 2716
    m.on_conf_state(BACK)  # then the entry that adds it back
    m.tick(time.monotonic() + 10 * ELECTION_S)  # the leader may go quiet now: it is back
    assert m.halted is None
    assert not (tmp_path / REMOVED_FILE).exists()


def test_a_membership_without_it_halts_it_once_no_leader_replicates_to_it(
    tmp_path: Path,
) -> None:
    m, view = member(tmp_path)
    now = time.monotonic()
    view.leader_heard = now
    view.applied = 40
    m.on_conf_state(WITHOUT)
    assert m.halted is None
    m.tick(now + 2 * ELECTION_S)
    assert m.halted == "the membership change at index 40 removed n2"
    assert json.loads((tmp_path / REMOVED_FILE).read_text())["reason"] == m.halted


def test_a_removal_applied_without_a_leader_or_as_the_leader_halts_at_once(
    tmp_path: Path,
) -> None:
    m, view = member(tmp_path, lead="")
    m.on_conf_state(WITHOUT)
    assert m.halted is not None
    m, view = member(tmp_path / "leader", lead="n2")
    (tmp_path / "leader").mkdir()
    view.role = Role.LEADER
    m.on_conf_state(WITHOUT)
    assert m.halted is not None


def test_a_node_never_a_member_is_not_removed(tmp_path: Path) -> None:
    m, view = member(tmp_path, lead="")
    view.conf_state = WITHOUT
    m = Membership(m.cfg, view, None, None, None, None, {})  # type: ignore[arg-type]
    m.on_conf_state(WITHOUT)
    m.tick(time.monotonic() + 10)
    assert m.halted is None
