"""``lazy_apply``: a follower keeps the committed entries its Readys hand over and applies them
in one batch later (``boltraft.server.node``), on the in-memory world of ``memworld``."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from memsm import MemStateMachine
from memworld import TICK_MS, World

from boltraft.raft.types import (
    ConfChange,
    ConfChangeType,
    Entry,
    MessageType,
    ReadState,
    Ready,
    SnapshotMeta,
)
from boltraft.server import applying, commitnotice
from boltraft.server import node as node_mod
from boltraft.server.node import Node
from boltraft.server.ports import NullObserver
from boltraft.transport import codec


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.close()


def _put(key: str, value: str) -> dict[str, Any]:
    return {"op": "put", "bucket": "b", "key": key, "value": value}


def _value(node: Node, key: bytes) -> bytes | None:
    with node.sm.db.view() as tx:
        return tx.bucket("b").get(key)


def _check(world: World) -> None:
    """Asserts the invariants lazy_apply adds, on every node."""
    for n in world.nodes.values():
        assert n.sm.applied[0] == n.applied <= n.commit
        if n.is_leader:
            assert n.applied == n.commit  # a leader never keeps entries: it answers writes


def _ready(world: World) -> tuple[str, str]:
    """Returns (leader, a follower) once bucket b exists everywhere and nothing is kept."""
    lead = world.elect()
    world.request(lead, 1, {"op": "create_bucket", "bucket": "b"})
    world.settle()
    world.step()  # the followers learn that commit with the heartbeat ...
    world.settle()
    world.step()  # ... and apply it at their next tick
    follower = next(i for i in world.nodes if i != lead)
    assert world.nodes[follower].applied == world.nodes[lead].applied
    return lead, follower


def _write(world: World, lead: str, n: int, first: int = 0) -> None:
    """Writes k<first>..k<first+n-1>, each in its own loop iteration (its own append)."""
    for i in range(first, first + n):
        world.request(lead, 100 + i, _put(f"k{i}", f"v{i}"))
        world.settle()
        _check(world)
    resps = world.responses(lead)
    assert all(resps[100 + i].ok for i in range(first, first + n))


def test_a_follower_keeps_committed_entries_until_its_next_tick(world: World) -> None:
    lead, follower = _ready(world)
    f = world.nodes[follower]
    _write(world, lead, 5)
    # k0..k3 reached the follower as committed (with the appends of k1..k4): kept, not applied
    assert f.commit >= world.nodes[lead].commit - 1 > f.applied
    assert _value(f, b"k3") is None
    world.step()  # its tick applies them; that tick's heartbeat tells it k4's commit ...
    world.settle()
    _check(world)
    assert _value(f, b"k3") == b"v3"
    world.step()  # ... which the next tick applies
    _check(world)
    assert f.applied == f.commit == world.nodes[lead].commit
    assert _value(f, b"k4") == b"v4"


def test_without_lazy_apply_a_follower_applies_in_every_ready(tmp_path: Path) -> None:
    world = World(tmp_path, lazy_apply=False)
    try:
        lead, follower = _ready(world)
        _write(world, lead, 5)
        f = world.nodes[follower]
        assert f.applied == f.commit >= world.nodes[lead].commit - 1
        assert _value(f, b"k3") == b"v3"
    finally:
        world.close()


def test_a_request_to_a_follower_sees_every_entry_it_kept(world: World) -> None:
    lead, follower = _ready(world)
    _write(world, lead, 5)
    f = world.nodes[follower]
    assert f.applied < f.commit
    stale = {"op": "get", "bucket": "b", "key": "k3", "read": "stale", "max_lag": 0}
    world.request(follower, 1, stale)
    world.request(follower, 2, {"op": "status"})
    f.process(world.nets[follower].recv())
    r = world.responses(follower)
    assert r[1].ok and r[1].result == b"v3"  # max_lag 0: nothing it knows committed is kept
    assert r[2].result["applied"] == r[2].result["commit"] == f.commit


def test_a_follower_applies_once_the_kept_entries_reach_the_limit(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(applying, "LAZY_APPLY_ENTRIES", 3)
    lead, follower = _ready(world)
    f = world.nodes[follower]
    applies = []
    real_apply = f.sm.apply
    monkeypatch.setattr(f.sm, "apply", lambda ents: applies.append(len(ents)) or real_apply(ents))
    for i in range(10):
        _write(world, lead, 1, first=i)
        assert f.commit - f.applied < 3
    assert applies and all(n >= 3 for n in applies)  # in batches of at least the limit


def test_a_follower_applies_once_the_kept_bytes_reach_the_limit(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(applying, "LAZY_APPLY_BYTES", 1)
    lead, follower = _ready(world)
    _write(world, lead, 5)
    f = world.nodes[follower]
    assert f.applied == f.commit >= world.nodes[lead].commit - 1


def test_a_membership_change_is_applied_at_once(world: World) -> None:
    lead, follower = _ready(world)
    _write(world, lead, 3)
    f = world.nodes[follower]
    assert f.applied < f.commit
    _, index = world.nodes[lead].raw.propose_conf_change(
        ConfChange(ConfChangeType.ADD_LEARNER, "n4", "tcp://127.0.0.1:7010")
    )
    world.settle()  # no tick: the change's commit goes out at once, and applies at once
    _check(world)
    assert f.applied == f.commit >= index
    assert "n4" in f.conf_state.learners
    assert _value(f, b"k2") == b"v2"  # what it kept went first


def test_a_confirmed_read_on_a_follower_does_not_wait_for_the_tick(world: World) -> None:
    lead, follower = _ready(world)
    f = world.nodes[follower]
    world.request(lead, 50, _put("fresh", "yes"))
    world.settle()
    assert world.responses(lead)[50].ok
    assert f.commit < world.nodes[lead].commit  # lazy_commit: it does not know yet
    world.request(follower, 51, {"op": "get", "bucket": "b", "key": "fresh"})
    world.settle()  # no tick: the read's confirmation brings the commit, then the read index
    r = world.responses(follower)
    assert r[51].ok and r[51].result == b"yes"
    _check(world)


def test_the_loop_applies_kept_entries_once_idle(world: World) -> None:
    lead, follower = _ready(world)
    _write(world, lead, 5)
    f = world.nodes[follower]
    net = world.nets[follower]
    timeouts: list[float] = []
    real_recv = net.recv

    def recv(timeout: float = 0.0, max_frames: int = 4096) -> Any:
        timeouts.append(timeout)
        return real_recv(timeout, max_frames)

    net.recv = recv  # type: ignore[method-assign]
    stops = iter([False, False, True])
    kept = f.commit - f.applied
    assert kept > 0
    f.run(lambda: next(stops))
    # the first wait was cut to the idle delay (a tick is 100 ms away), then it applied
    assert timeouts[0] == node_mod.LAZY_APPLY_IDLE_S
    assert f.applied == f.commit
    assert timeouts[1] > node_mod.LAZY_APPLY_IDLE_S  # nothing kept: wait for the tick


def test_closing_a_follower_applies_what_it_kept(world: World, tmp_path: Path) -> None:
    lead, follower = _ready(world)
    _write(world, lead, 5)
    f = world.nodes[follower]
    commit = f.commit
    assert f.applied < commit
    f.close()
    assert f.sm.applied[0] == commit
    with f.sm.db.view() as tx:
        assert tx.bucket("b").get(b"k3") == b"v3"


def test_a_follower_restarted_without_closing_replays_what_it_kept(world: World) -> None:
    lead, follower = _ready(world)
    _write(world, lead, 5)
    old = world.nodes[follower]
    commit = old.commit
    assert old.applied < commit
    old.catch_up = lambda: None  # type: ignore[method-assign] # a crash: the batch is lost
    old.close()
    new = Node(
        old.cfg,
        net=world.nets[follower],
        logstore=old.logstore,
        sm=old.sm,
        rng=random.Random(7),
        clock=lambda: world.now,
    )
    world.nodes[follower] = new
    assert new.applied < commit
    world.step()
    world.settle()
    world.step()
    _check(world)
    assert new.applied >= commit
    assert _value(new, b"k3") == b"v3"


def _keeping(world: World) -> tuple[Node, int]:
    """Returns a follower that keeps committed entries after three writes, and the index of
    its last log entry."""
    lead, follower = _ready(world)
    _write(world, lead, 3)
    f = world.nodes[follower]
    assert f.commit > f.applied
    return f, f.logstore.last_index()


def _select(f: Node, rd: Ready) -> list[Entry]:
    """The committed entries the follower ``f`` applies in ``rd`` (as _handle_ready asks)."""
    return f.applier.select(rd, True, f.service.reads_waiting, now=f._clock())


def test_a_ready_without_committed_entries_leaves_the_kept_ones_kept(world: World) -> None:
    f, last = _keeping(world)
    kept = f.commit - f.applied
    assert _select(f, Ready()) == []
    assert _select(f, Ready(entries=f.logstore.entries(last, last + 1))) == []
    assert f.commit - f.applied == kept


@pytest.mark.parametrize("what", ["conf_state", "snapshot", "read_states"])
def test_a_ready_that_installs_changes_membership_or_confirms_reads_applies_at_once(
    world: World, what: str
) -> None:
    f, last = _keeping(world)
    ents = f.logstore.entries(last, last + 1)
    extra: dict[str, Any] = {
        "conf_state": {"conf_state": f.conf_state},
        "snapshot": {"snapshot": SnapshotMeta(0, 0, f.conf_state)},
        "read_states": {"read_states": [ReadState(last, b"ctx")]},
    }[what]
    out = _select(f, Ready(committed_entries=ents, **extra))
    assert [e.index for e in out] == list(range(f.applied + 1, last + 1))
    f._apply(out)  # as _handle_ready does
    assert f.applied == last
    f.catch_up()
    assert f.applied == last  # nothing was left kept


def test_a_read_confirmed_ahead_of_the_commit_is_served_with_the_next_append(
    world: World,
) -> None:
    """The read index reaches the follower before the commit does (the leader's heartbeats to
    it are lost, the other follower confirms the read): the read waits, and the entries that
    the next append commits are applied at once for it, not kept until the tick."""
    lead, follower = _ready(world)
    f = world.nodes[follower]
    real_deliver = world.deliver

    def deliver(frm: str, to: str, frame: bytes) -> bool:
        if (frm, to) == (lead, follower):
            decoded = codec.decode_frame(frame)
            if decoded.kind == "raft" and decoded.payload[0].type == MessageType.HEARTBEAT:
                return False
        return real_deliver(frm, to, frame)

    world.deliver = deliver  # type: ignore[method-assign]
    world.request(lead, 50, _put("fresh", "yes"))
    world.settle()
    world.request(follower, 51, {"op": "get", "bucket": "b", "key": "fresh"})
    world.settle()
    assert 51 not in world.responses(follower)  # confirmed, waiting for the commit
    assert f.service.reads_waiting
    world.request(lead, 52, _put("more", "yes"))
    world.settle()  # no tick: the append of "more" brings the commit of "fresh"
    r = world.responses(follower)
    assert r[51].ok and r[51].result == b"yes"
    _check(world)


def test_a_follower_serving_watches_learns_each_commit_at_once(world: World) -> None:
    lead, follower = _ready(world)
    f, leader = world.nodes[follower], world.nodes[lead]
    other = next(i for i in world.nodes if i not in (lead, follower))
    world.request(follower, 40, {"op": "watch", "bucket": "b"})
    world.settle()
    assert f.watches.live
    assert leader.status_dict()["prompt_commit"] == [follower]  # its notice came in
    world.request(lead, 50, _put("fresh", "yes"))
    world.settle()  # no tick: the commit went out to the follower at once
    assert world.responses(lead)[50].ok
    assert f.commit == f.applied == leader.commit
    assert _value(f, b"fresh") == b"yes"
    assert world.nodes[other].commit < leader.commit  # lazy_commit still for the other
    _check(world)


def test_the_leader_forgets_a_follower_that_stopped_watching(world: World) -> None:
    lead, follower = _ready(world)
    leader = world.nodes[lead]
    world.request(follower, 40, {"op": "watch", "bucket": "b"})
    world.settle()
    assert leader.status_dict()["prompt_commit"] == [follower]
    wid = world.responses(follower)[40].result["watch"]
    world.request(follower, 41, {"op": "watch_cancel", "watch": wid})
    world.settle()
    assert not world.nodes[follower].watches.live
    ticks = round(commitnotice.EXPIRE_S * 1000 / TICK_MS)
    for _ in range(ticks - 1):
        world.step()
    assert leader.status_dict()["prompt_commit"] == [follower]  # not expired yet
    world.step()
    world.step()
    assert leader.status_dict()["prompt_commit"] == []
    world.request(lead, 50, _put("fresh", "yes"))
    world.settle()
    assert world.nodes[follower].commit < leader.commit  # lazy again


def test_a_follower_applies_once_the_oldest_kept_entry_has_waited() -> None:
    """A batch is bounded by time as well as by size: under a light load the entries are
    applied once the oldest has waited ``LAZY_APPLY_WAIT_S``, a few at a time."""
    applier = applying.Applier(MemStateMachine(), NullObserver(), node_id="n2", lazy=True)
    wait = applying.LAZY_APPLY_WAIT_S

    def ready(index: int) -> Ready:
        return Ready(committed_entries=[Entry(1, index, 0, b"x")])

    assert applier.select(ready(1), True, False, now=100.0) == []
    assert applier.select(ready(2), True, False, now=100.0 + wait / 2) == []
    assert applier.select(Ready(), True, False, now=100.0 + wait * 0.9) == []
    applied = applier.select(ready(3), True, False, now=100.0 + wait)
    assert [e.index for e in applied] == [1, 2, 3] and not applier.has_kept
    # the next batch waits from its own first entry
    assert applier.select(ready(4), True, False, now=100.0 + wait * 1.5) == []
    assert [e.index for e in applier.select(Ready(), True, False, now=100.0 + wait * 2.5)] == [4]
