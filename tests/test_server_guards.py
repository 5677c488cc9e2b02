"""Guard rails for the node loop (``boltraft.server.node``): invariants a rewrite of the loop
can break without any other test noticing, checked through the Node's stable surface only
(``Node(cfg, net=, logstore=, sm=)``, ``process``, ``close``, ``applied``, ``commit``, ``role``,
``sm``, ``logstore``) on the in-memory world of ``memworld``: never through the loop's
private parts, so that they hold a redesign of the loop to the same rules.

- Persist before send: an append acknowledgement or a granted vote leaves a node only once
  what it vouches for is flushed to its log, with ``lazy_apply`` off (a follower then applies
  committed entries while its log flushes on another thread, and its acknowledgements wait
  for that flush) as well as on.
- A linearizable read is served at the APPLIED index: a follower whose commit index already
  covers a confirmed read index, but whose state machine does not yet, waits for the apply.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from queue import SimpleQueue
from types import FrameType
from typing import Any

import pytest
from memworld import World

from boltraft.raft.memstore import MemoryLogStore
from boltraft.raft.types import Entry, HardState, Message, MessageType, Role
from boltraft.server.node import Node
from boltraft.transport import codec

HOLD_S = 10.0  # how long a held flush waits for the loop to send or block, at most
DEADLINE_S = 30.0  # how long a test drives its world for an expected outcome, at most
_LOCK_TYPE = type(threading.Lock())


def _put(key: str, value: str) -> dict[str, Any]:
    return {"op": "put", "bucket": "b", "key": key, "value": value}


# --- persist before send -----------------------------------------------------------------------


def _would_block(fn: Any) -> bool:
    """Returns True when the builtin ``fn``, about to be called, would block the calling
    thread: acquiring a lock that is held, taking from an empty SimpleQueue, sleeping. Every
    way a Python thread waits for another ends in one of these (Event.wait, Condition.wait,
    Queue.get, Future.result and Thread.join all acquire a held lock)."""
    if fn is time.sleep:
        return True
    owner = getattr(fn, "__self__", None)
    name = getattr(fn, "__name__", "")
    if isinstance(owner, _LOCK_TYPE) and name in ("acquire", "acquire_lock"):
        return owner.locked()
    if isinstance(owner, SimpleQueue) and name == "get":
        return owner.empty()
    return False


class FlushGate:
    """Holds every log flush that runs off the loop's thread until the loop either sends a
    message that depends on it (then the message is seen leaving before the flush finished,
    whatever the timing) or blocks, as it does to wait for the flush. It sees the loop block
    through a profile hook on the loop's thread (``profile``)."""

    def __init__(self) -> None:
        self.cv = threading.Condition()
        self.blocked = False  # the loop's thread is in a call that blocks it
        self.sends: dict[str, int] = {}  # node id -> dependent messages it sent
        self.held = 0  # flushes held
        self.stuck = ""  # why holding stopped: the loop neither sent nor blocked in time

    def hold(self, node_id: str) -> None:
        """Returns once the loop sent a message of ``node_id`` that depends on a flush, or
        blocks (on the flush thread)."""
        with self.cv:
            if self.stuck:
                return
            self.held += 1
            sends = self.sends.get(node_id, 0)
            if not self.cv.wait_for(
                lambda: self.blocked or self.sends.get(node_id, 0) != sends, HOLD_S
            ):
                self.stuck = f"{node_id}'s loop neither sent nor blocked for {HOLD_S}s"

    def sent(self, node_id: str) -> None:
        """Returns None after noting that ``node_id`` sent a message that depends on a flush."""
        with self.cv:
            self.sends[node_id] = self.sends.get(node_id, 0) + 1
            self.cv.notify_all()

    def profile(self, frame: FrameType, event: str, arg: Any) -> None:
        if event == "c_call" and _would_block(arg):
            with self.cv:
                self.blocked = True
                self.cv.notify_all()
        elif event in ("c_return", "c_exception") and self.blocked:
            with self.cv:
                self.blocked = False


class GatedStore(MemoryLogStore):
    """A MemoryLogStore that tells written from flushed, as a disk would, and whose flushes
    off the loop's thread are held by a FlushGate. It records each held flush as
    ``(durable index before, durable index after, whether the state machine applied while
    the log held entries not flushed yet)``."""

    def __init__(self, gate: FlushGate) -> None:
        super().__init__()
        self.gate = gate
        self.node_id = ""  # set once the world is built
        self.loop = threading.main_thread()
        self.durable_index = 0
        self.durable_hs = HardState()
        self.applied_unflushed = False  # set by the state machine's apply (_gated_world)
        self.held_flushes: list[tuple[int, int, bool]] = []

    def append(
        self, entries: Sequence[Entry], hard_state: HardState | None = None, sync: bool = True
    ) -> None:
        super().append(entries, hard_state, sync)
        if sync:
            self.sync()

    def sync(self) -> None:
        if threading.current_thread() is not self.loop:
            before = self.durable_index
            self.gate.hold(self.node_id)
            self.held_flushes.append((before, self.last_index(), self.applied_unflushed))
        self.applied_unflushed = False
        self.durable_index = self.last_index()
        self.durable_hs = self.initial_state()[0]


def _gated_world(tmp_path: Path, lazy_apply: bool) -> tuple[World, FlushGate]:
    gate = FlushGate()
    w = World(tmp_path, store=lambda: GatedStore(gate), lazy_apply=lazy_apply)
    for node_id, node in w.nodes.items():
        store: GatedStore = node.logstore  # type: ignore[assignment]
        store.node_id = node_id
        real_apply = node.sm.apply

        def apply(ents: Sequence[Entry], store: GatedStore = store, real: Any = real_apply) -> Any:
            if store.last_index() > store.durable_index:
                store.applied_unflushed = True
            return real(ents)

        node.sm.apply = apply  # type: ignore[method-assign]
    return w, gate


@pytest.mark.parametrize("lazy_apply", [False, True], ids=["lazy_apply_off", "lazy_apply_on"])
def test_acks_and_votes_leave_only_after_the_log_flush(tmp_path: Path, lazy_apply: bool) -> None:
    """Raft's persist-before-send rule: an append acknowledgement (or a granted vote) never
    leaves before the log flush of what it acknowledges finished, wherever the flush runs.
    A follower that gets new entries together with the commit of earlier ones applies those
    while its log flushes off the loop, and its acknowledgement must wait for the flush."""
    w, gate = _gated_world(tmp_path, lazy_apply)
    checked = {"app": 0, "vote": 0, "follower_acks_after_apply_during_flush": 0}
    violations: list[str] = []
    real_deliver = w.deliver

    def deliver(frm: str, to: str, frame: bytes) -> bool:
        decoded = codec.decode_frame(frame)
        if decoded.kind == "raft":
            node = w.nodes[frm]
            store: GatedStore = node.logstore  # type: ignore[assignment]
            dependent = False
            for m in decoded.payload:
                dependent |= _check_durable(m, store, node, checked, violations)
            if dependent:
                gate.sent(frm)
        return real_deliver(frm, to, frame)

    w.deliver = deliver  # type: ignore[method-assign]
    sys.setprofile(gate.profile)
    try:
        lead = w.elect()
        w.request(lead, 1, {"op": "create_bucket", "bucket": "b"})
        w.settle(3)
        followers = [i for i in w.nodes if i != lead]
        for rid in range(2, 31):  # one write per step: appends and commits travel together
            w.request(lead, rid, _put(f"k{rid}", "v"))
            if rid % 3 == 0:  # a linearizable read makes a lazy follower apply at once
                w.request(followers[rid % 2], 1000 + rid, {"op": "get", "bucket": "b", "key": "k"})
            w.step(advance=False)
        w.settle(3)
    finally:
        try:
            w.close()  # still watched: a flush held when the test failed is let go at once
        finally:
            sys.setprofile(None)
    assert not gate.stuck, gate.stuck
    assert len(w.responses(lead)) == 30 and all(r.ok for r in w.responses(lead).values())
    assert not violations, violations
    assert checked["app"] >= 30 and checked["vote"] > 0
    assert gate.held > 0  # flushes did run off the loop, and were held
    # the path this test is for: a follower applied committed entries while its log flushed
    # off the loop, then acknowledged the entries of that flush
    assert checked["follower_acks_after_apply_during_flush"] > 0, checked


def _check_durable(
    m: Message, store: GatedStore, node: Node, checked: dict[str, int], violations: list[str]
) -> bool:
    """Returns True when ``m`` vouches for something durable (an accepting APP_RESP, a
    granted VOTE_RESP), after noting in ``violations`` when it is not durable yet."""
    if m.type == MessageType.APP_RESP and not m.reject:
        checked["app"] += 1
        if m.index > store.durable_index:
            violations.append(f"{m.frm} acked {m.index} > flushed {store.durable_index}")
        if node.role == Role.FOLLOWER and any(
            applied and before < m.index <= after for before, after, applied in store.held_flushes
        ):
            checked["follower_acks_after_apply_during_flush"] += 1
        return True
    if m.type == MessageType.VOTE_RESP and not m.reject:
        checked["vote"] += 1
        hs = store.durable_hs
        if hs.vote != m.to or hs.term < m.term:
            violations.append(f"{m.frm} granted {m.to} at term {m.term} before flushing {hs}")
        return True
    return False


# --- linearizable reads at the applied index -----------------------------------------------------


@pytest.fixture(params=[False, True], ids=["lazy_apply_off", "lazy_apply_on"])
def world(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[World]:
    w = World(tmp_path, lazy_apply=request.param)
    yield w
    w.close()


def _drive(world: World, done: Callable[[], bool], what: str, ticks: bool = False) -> None:
    """Steps ``world`` (its clock a tick further each time with ``ticks``, else standing
    still) until ``done()``; fails after DEADLINE_S."""
    deadline = time.monotonic() + DEADLINE_S
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        world.step(advance=ticks)


def test_a_follower_serves_a_linearizable_read_at_its_applied_index(world: World) -> None:
    """A follower learns, in one batch of messages, entries it lacked, a commit index that
    covers the first of them and the read index the leader confirmed for its read: its commit
    then reaches the read index at once, its state machine only once the entries are flushed
    and applied. The read must wait for that apply, or it misses a write acknowledged before
    it was asked."""
    lead = world.elect()
    follower = next(i for i in world.nodes if i != lead)
    f = world.nodes[follower]
    world.request(lead, 1, {"op": "create_bucket", "bucket": "b"})
    world.request(lead, 2, _put("k", "old"))

    def everywhere() -> bool:
        commit = world.nodes[lead].commit
        return 2 in world.responses(lead) and all(n.applied == commit for n in world.nodes.values())

    _drive(world, everywhere, "every node to apply k=old", ticks=True)  # heartbeats: the commit
    assert world.responses(lead)[2].ok and world.leader() == lead

    held: list[tuple[str, bytes]] = []  # frames to the follower, delivered later in one batch
    real_deliver = world.deliver

    def deliver(frm: str, to: str, frame: bytes) -> bool:
        if to == follower:
            held.append((frm, frame))
            return True
        return real_deliver(frm, to, frame)

    world.deliver = deliver  # type: ignore[method-assign]
    world.request(lead, 3, _put("k", "new"))
    _drive(world, lambda: 3 in world.responses(lead), "the write of k=new")
    assert world.responses(lead)[3].ok  # acknowledged: every later linearizable read sees it
    written = world.nodes[lead].commit
    assert f.applied < written

    world.request(follower, 4, {"op": "get", "bucket": "b", "key": "k"})
    # the follower asks the leader, which confirms the read index with the other follower
    _drive(
        world,
        lambda: bool(_msgs(held, MessageType.READ_INDEX_RESP)),
        "the leader to confirm the read index",
    )
    world.request(lead, 5, _put("later", "x"))  # its append carries the commit of k=new
    _drive(world, lambda: 5 in world.responses(lead), "the write of later=x")

    # what the held batch tells the follower: the read index of its read, and a commit index
    # that covers it, for entries the follower does not have yet
    read_index = max(m.index for m in _msgs(held, MessageType.READ_INDEX_RESP))
    commit = max(min(m.commit, m.index + len(m.entries)) for m in _msgs(held, MessageType.APP))
    assert f.applied < written <= read_index <= commit, (f.applied, written, read_index, commit)
    answered_at: list[int] = []  # the follower's applied index when it answers the read
    fnet = world.nets[follower]
    real_reply = fnet.reply

    def reply(sender: bytes, frame: bytes) -> bool:
        answered_at.append(f.applied)
        return real_reply(sender, frame)

    fnet.reply = reply  # type: ignore[method-assign]
    world.deliver = real_deliver  # type: ignore[method-assign]
    for frm, frame in held:  # all in the follower's inbox at once: one loop iteration
        real_deliver(frm, follower, frame)
    _drive(world, lambda: 4 in world.responses(follower), "the follower's read")

    resp = world.responses(follower)[4]
    assert resp.ok and resp.result == b"new", f"a stale read: {resp}"
    assert answered_at and answered_at[0] >= read_index, (answered_at, read_index)


def _msgs(frames: list[tuple[str, bytes]], kind: MessageType) -> list[Message]:
    """Returns the Raft messages of type ``kind`` in ``(sender, frame)`` pairs."""
    out: list[Message] = []
    for _, frame in frames:
        decoded = codec.decode_frame(frame)
        if decoded.kind == "raft":
            out += [m for m in decoded.payload if m.type == kind]
    return out
