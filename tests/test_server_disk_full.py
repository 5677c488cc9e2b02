"""A full disk never stops a node (``boltraft.server.node``): a log that cannot take a Ready
restarts the consensus core from what the log holds, a state machine that cannot apply keeps
the entries and retries at every tick; on the in-memory world of ``memworld``, whose log
stores and state machines here refuse writes while a test says their disk is full. The same
on a real full filesystem: ``tests/integration/test_disk_full.py``."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from memworld import World

from boltraft.errors import NoSpaceError
from boltraft.raft.memstore import MemoryLogStore
from boltraft.raft.types import Entry, HardState
from boltraft.server.node import Node


class FullableStore(MemoryLogStore):
    """A MemoryLogStore whose appends fail, writing nothing, while ``full``."""

    def __init__(self) -> None:
        super().__init__()
        self.full = False

    def append(
        self, entries: Sequence[Entry], hard_state: HardState | None = None, sync: bool = True
    ) -> None:
        if self.full:
            raise NoSpaceError("test: the disk is full")
        super().append(entries, hard_state, sync)


def fill_state_machine(node: Node, ahead: bool = False) -> None:
    """Makes ``node``'s state machine refuse every apply as a full disk does, until
    ``free_state_machine``. Unless ``ahead``, it also declines to apply entries ahead (the
    Protocol lets it decline any), so that a leader's writes wait for their apply; with
    ``ahead`` it applies a leader's entry ahead as ever (the open transaction writes
    nothing to the disk until its commit, which then fails)."""
    sm = node.sm

    def refuse(entries: Sequence[Entry]) -> list[Any]:
        raise NoSpaceError("test: the disk is full", retry=False, disk_full=True)

    sm.apply = refuse  # type: ignore[method-assign]
    if not ahead:
        sm.prepare = lambda entries: None  # type: ignore[method-assign]


def free_state_machine(node: Node) -> None:
    del node.sm.apply  # type: ignore[method-assign]
    node.sm.__dict__.pop("prepare", None)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path, store=FullableStore)
    yield w
    w.close()


def _put(key: str, value: str = "v") -> dict[str, Any]:
    return {"op": "put", "bucket": "b", "key": key, "value": value}


def _store(node: Node) -> FullableStore:
    assert isinstance(node.logstore, FullableStore)
    return node.logstore


def _data(node: Node) -> dict[bytes, bytes]:
    with node.sm.db.view() as tx:
        return dict(tx.bucket("b").scan()[0])


def _ready(world: World) -> str:
    lead = world.elect()
    world.request(lead, 1, {"op": "create_bucket", "bucket": "b"})
    world.settle()
    assert world.responses(lead)[1].ok
    return lead


def _ready_follower(world: World) -> tuple[str, str]:
    """Returns (leader, a follower) once the follower applied the bucket's creation."""
    lead = _ready(world)
    follower = next(i for i in world.nodes if i != lead)
    f, leader = world.nodes[follower], world.nodes[lead]
    _run_until(world, lambda: f.applied == leader.applied, "the bucket applied")
    return lead, follower


def _run_until(world: World, done: Any, what: str, steps: int = 300) -> None:
    for _ in range(steps):
        if done():
            return
        world.step()
    raise AssertionError(f"not within {steps} ticks: {what}")


def _converged(world: World) -> bool:
    lead = world.leader()
    if lead is None:
        return False
    last = world.nodes[lead].logstore.last_index()
    return all(n.applied == last for n in world.nodes.values())


def _check(world: World) -> None:
    for n in world.nodes.values():
        assert n.sm.applied[0] == n.applied <= n.commit
        kept = [e.index for e in n.applier.kept]
        assert kept == list(range(n.applied + 1, n.applied + 1 + len(kept)))


def test_a_leader_whose_log_disk_fills_answers_and_the_cluster_goes_on(world: World) -> None:
    lead = _ready(world)
    old = world.nodes[lead]
    _store(old).full = True
    world.request(lead, 2, _put("lost?"))
    world.step(advance=False)  # proposes; its own append fails: nothing of the Ready written
    answer = world.responses(lead)[2]
    assert not answer.ok and answer.error is not None
    assert answer.error.code == "unavailable"  # the copies it sent may still commit
    assert "disk is full" in answer.error.message
    assert not old.is_leader and old.lead == ""
    assert old.counters["log_disk_full"] == 1
    assert old.disk_full
    _check(world)

    _run_until(world, lambda: world.leader() not in (None, lead), "a new leader")
    new = world.leader()
    assert new is not None
    world.request(new, 3, _put("after"))
    _run_until(world, lambda: 3 in world.responses(new), "the write through the new leader")
    assert world.responses(new)[3].ok
    for _ in range(20):  # the full node fails every append and vote, and goes on running
        world.step()
    assert not old.is_leader and old.counters["log_disk_full"] > 1
    _check(world)

    _store(old).full = False
    _run_until(world, lambda: _converged(world) and not old.disk_full, "the catch-up")
    datas = [_data(n) for n in world.nodes.values()]
    assert datas[0] == datas[1] == datas[2]
    assert datas[0][b"after"] == b"v"


def test_a_follower_whose_log_fills_applies_what_it_kept_once_from_the_new_core(
    world: World,
) -> None:
    lead, follower = _ready_follower(world)
    f = world.nodes[follower]
    for k in range(3):  # lazy_apply: the follower keeps these until its next tick
        world.request(lead, 10 + k, _put(f"k{k}"))
        world.settle()
    assert f.applier.kept
    _store(f).full = True
    world.request(lead, 20, _put("k3"))
    world.settle()  # the follower cannot append k3: a new core hands out again what it kept
    assert world.responses(lead)[20].ok and f.counters["log_disk_full"] >= 1
    _check(world)  # ... once: the kept entries still follow the applied index one by one
    _store(f).full = False
    _run_until(world, lambda: _converged(world), "the catch-up")
    _check(world)
    assert _data(f) == _data(world.nodes[lead]) and len(_data(f)) == 4


def test_a_sole_node_whose_log_disk_fills_answers_no_space_and_writes_once_freed(
    tmp_path: Path,
) -> None:
    world = World(tmp_path, n=1, store=FullableStore)
    try:
        lead = _ready(world)
        node = world.nodes[lead]
        world.request(lead, 2, _put("k", "before"))
        world.settle()
        _store(node).full = True
        world.request(lead, 3, _put("k", "after"))
        world.step(advance=False)
        answer = world.responses(lead)[3]
        assert answer.error is not None and answer.error.code == "no_space"
        assert "nothing was written" in answer.error.message
        for _ in range(30):  # elections fail to write their vote; the node runs on
            world.step()
        assert node.counters["log_disk_full"] > 1 and not node.is_leader
        world.request(lead, 4, _put("k", "while full"))
        world.step(advance=False)
        answer = world.responses(lead)[4]
        assert answer.error is not None and answer.error.code == "unavailable"
        assert "disk is full" in answer.error.message
        world.request(lead, 5, {"op": "get", "bucket": "b", "key": "k", "read": "stale"})
        world.step(advance=False)
        assert world.responses(lead)[5].result == b"before"

        _store(node).full = False
        _run_until(world, lambda: node.is_leader, "the node leads again")
        world.request(lead, 6, _put("k", "after"))
        world.settle()
        assert world.responses(lead)[6].ok and _data(node)[b"k"] == b"after"
        assert not node.disk_full
    finally:
        world.close()


def test_a_follower_that_cannot_apply_keeps_the_entries_and_applies_them_once_freed(
    world: World,
) -> None:
    lead, follower = _ready_follower(world)
    f = world.nodes[follower]
    fill_state_machine(f)
    for k in range(5):
        world.request(lead, 10 + k, _put(f"k{k}"))
        world.settle()
        assert world.responses(lead)[10 + k].ok  # the other two apply and answer
    for _ in range(5):
        world.step()
    assert f.counters["apply_disk_full"] >= 5  # once per tick
    assert b"k0" not in _data(f) and f.disk_full
    _check(world)
    # a linearizable read there cannot wait for an apply that will not come
    world.request(follower, 20, {"op": "get", "bucket": "b", "key": "k4"})
    world.settle()
    answer = world.responses(follower)[20]
    assert answer.error is not None and answer.error.code == "unavailable"

    free_state_machine(f)
    world.step()
    assert not f.disk_full
    assert _data(f) == _data(world.nodes[lead]) and len(_data(f)) == 5
    _check(world)


def test_a_leader_that_cannot_apply_hands_leadership_over(world: World) -> None:
    lead = _ready(world)
    old = world.nodes[lead]
    fill_state_machine(old)
    world.request(lead, 2, _put("pending"))
    for _ in range(5):
        world.step(advance=False)
        if old.disk_full:  # committed, not applied: the write waits for the apply
            break
    assert old.disk_full and old.is_leader and 2 not in world.responses(lead)
    world.request(lead, 3, _put("refused"))
    world.step(advance=False)
    answer = world.responses(lead)[3]
    assert answer.error is not None and answer.error.code == "unavailable"
    _run_until(world, lambda: world.leader() not in (None, lead), "the hand-over")
    new = world.leader()
    assert new is not None
    world.request(lead, 4, _put("forwarded"))  # the old leader forwards it to the new one
    _run_until(world, lambda: 4 in world.responses(lead), "the forwarded write")
    assert world.responses(lead)[4].ok

    free_state_machine(old)
    _run_until(world, lambda: 2 in world.responses(lead), "the pending write's answer")
    assert world.responses(lead)[2].ok
    _run_until(world, lambda: _converged(world), "the catch-up")
    assert _data(old) == _data(world.nodes[new])
    assert set(_data(old)) == {b"pending", b"forwarded"}
    _check(world)


def test_a_write_applied_ahead_is_answered_while_a_full_disk_holds_its_apply(
    world: World,
) -> None:
    """The leader applied the write ahead; at its commit the answer (the entry is committed,
    its result known) leaves before the apply, which the full disk then refuses: the entry
    waits in the applier and is applied once the disk has room, on every replica alike."""
    lead = _ready(world)
    old = world.nodes[lead]
    fill_state_machine(old, ahead=True)
    before = old.counters["prepared"]
    world.request(lead, 2, _put("ahead"))
    _run_until(world, lambda: bool(old.disk_full), "the refused apply")
    assert old.counters["prepared"] == before + 1
    assert world.responses(lead)[2].ok
    assert b"ahead" not in _data(old) and [e.index for e in old.applier.kept] == [old.commit]
    free_state_machine(old)
    _run_until(world, lambda: _converged(world), "the catch-up")
    assert all(_data(n) == {b"ahead": b"v"} for n in world.nodes.values())
    _check(world)


def test_a_node_closes_cleanly_on_a_full_disk(world: World) -> None:
    lead = _ready(world)
    follower = next(i for i in world.nodes if i != lead)
    f = world.nodes[follower]
    world.request(lead, 2, _put("k"))
    world.settle()  # the follower learns the new commit index with the next heartbeat,
    _run_until(world, lambda: f._unwritten_hs is not None, "a commit index left unwritten")
    _store(f).full = True
    fill_state_machine(f)
    f.close()  # neither the kept entries nor the commit index fit: nothing raises
    assert f._unwritten_hs is None and f.disk_full
    _store(f).full = False
    free_state_machine(f)


def test_a_follower_whose_log_stays_full_does_not_log_each_core_restart_as_a_leader_change(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    lead, follower = _ready_follower(world)
    f = world.nodes[follower]
    _store(f).full = True
    caplog.set_level(logging.INFO, logger="boltraft.server")
    for k in range(10):  # every append fails: ten core restarts, the leader heard again
        world.request(lead, 10 + k, _put(f"k{k}"))
        world.settle()
        world.step()
    assert f.counters["log_disk_full"] >= 10
    changes = [r for r in caplog.records if f"{follower}: leader is now" in r.getMessage()]
    assert changes == []
    _store(f).full = False
    _run_until(world, lambda: _converged(world), "the catch-up")
