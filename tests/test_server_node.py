"""The node loop with in-memory parts (``memworld``): real RawNodes, MemoryLogStores and state
machines on LMDB in tmp_path, joined by an in-memory network and driven by a fake clock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from memsm import MemStateMachine
from memworld import TICK_MS, MemNet, World

from boltraft.raft.memstore import MemoryLogStore
from boltraft.raft.types import Entry, HardState, MessageType
from boltraft.server.node import Node
from boltraft.storage.queries import execute_read
from boltraft.transport import codec
from boltraft.transport.zmq_transport import Incoming


@pytest.fixture(params=["lmdb", "twin"])
def world(tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    """Three nodes over the bucket store on LMDB, and over its in-memory twin."""
    w = World(tmp_path, sm=request.param)
    yield w
    w.close()


def _get(node: Any, key: bytes) -> Any:
    """``key`` of bucket ``b`` as ``node``'s state machine has it (None when absent)."""
    (value,) = node.sm.read([{"op": "get", "bucket": "b", "key": key}])
    return value


def _put(key: str, value: str, **extra: Any) -> dict[str, Any]:
    return {"op": "put", "bucket": "b", "key": key, "value": value, **extra}


def test_writes_of_one_iteration_share_one_append_and_one_fsync(world: World) -> None:
    lead = world.elect()
    world.request(lead, 1, {"op": "create_bucket", "bucket": "b"})
    world.settle()
    node = world.nodes[lead]
    last, fsyncs = node.logstore.last_index(), node.counters["fsyncs"]
    for i in range(20):
        world.request(lead, 100 + i, _put(f"k{i}", f"v{i}"))
    node.process(world.nets[lead].recv())
    assert node.logstore.last_index() == last + 20
    assert node.counters["fsyncs"] == fsyncs + 1
    world.settle()
    resps = world.responses(lead)
    assert all(resps[100 + i].ok for i in range(20))
    world.step()  # lazy_commit: the followers learn the commit with the next heartbeat
    world.settle()
    world.step()  # lazy_apply: and apply what they kept at their next tick
    for n in world.nodes.values():
        assert _get(n, b"k19") == b"v19"


def test_follower_forwards_writes_and_answers_its_client(world: World) -> None:
    lead = world.elect()
    follower = next(i for i in world.nodes if i != lead)
    world.request(follower, 1, {"op": "create_bucket", "bucket": "b"})
    world.request(follower, 2, _put("k", "v", cid=b"me", seq=1))
    world.settle(8)
    resps = world.responses(follower)
    assert resps[1].ok and resps[2].ok
    assert world.nodes[lead].service.stats["forwarded"] == 2


@pytest.mark.parametrize("via_follower", [False, True])
def test_a_reqs_frame_is_answered_per_request_in_resps_frames(
    world: World, via_follower: bool
) -> None:
    lead = world.elect()
    node_id = next(i for i in world.nodes if i != lead) if via_follower else lead
    world.request(lead, 1, {"op": "create_bucket", "bucket": "b"})
    world.settle()
    fsyncs = world.nodes[lead].counters["fsyncs"]
    seq = {"op": "next_sequence", "bucket": "b", "cid": b"pipe", "seq": 1}
    items: list[list[Any]] = [[i, _put(f"k{i}", f"v{i}")] for i in range(10)]
    items += [
        [10, seq],
        [11, seq],  # the same (cid, seq): a retry, applied once
        [12, "not a map"],
        [13, {"op": "snapshot"}],  # cluster operations go in req frames
        [14, {"op": "nope"}],
        [15, {"op": "watch", "bucket": "b"}],  # so do watches (their stream follows)
    ]
    world.pipeline(node_id, items)
    world.settle(8)
    got = world.pipelined(node_id)
    assert sorted(got) == list(range(16))
    assert all(got[i] == {"ok": True, "result": None} for i in range(10))
    assert got[10] == got[11] == {"ok": True, "result": 1}
    assert {got[i]["error"]["code"] for i in (12, 13, 14, 15)} == {"bad_request"}
    # the frame's writes were ONE proposal: one append and one fsync on the leader
    assert world.nodes[lead].counters["fsyncs"] == fsyncs + 1
    get = {"op": "get", "bucket": "b", "key": "k9"}
    world.pipeline(node_id, [[20, {**seq, "seq": 2}], [21, get]])
    world.settle(8)
    got = world.pipelined(node_id)
    assert got[20] == {"ok": True, "result": 2}  # the retry did not advance the sequence
    assert got[21] == {"ok": True, "result": b"v9"}
    assert world.nets[node_id].replies.get(b"p") is None  # never a plain resp


def test_linearizable_reads_of_one_iteration_share_one_read_index(world: World) -> None:
    lead = world.elect()
    follower = next(i for i in world.nodes if i != lead)
    world.request(lead, 1, {"op": "create_bucket", "bucket": "b"})
    world.request(lead, 2, _put("k", "v"))
    world.settle()
    for rid in range(10, 20):
        world.request(follower, rid, {"op": "get", "bucket": "b", "key": "k"})
    world.settle(8)
    resps = world.responses(follower)
    assert [resps[r].result for r in range(10, 20)] == [b"v"] * 10
    assert world.nodes[follower].counters["read_index_calls"] == 1


def test_entry_overwritten_in_a_new_term_answers_proposal_dropped(world: World) -> None:
    old = world.elect()
    world.request(old, 1, {"op": "create_bucket", "bucket": "b"})
    world.settle()
    world.isolate(old)
    before = world.nodes[old].counters["prepared"]
    world.request(old, 2, _put("lost", "x"))  # appended by the old leader, never committed
    world.step(advance=False)
    for _ in range(200):
        world.step()
        others = [n for i, n in world.nodes.items() if i != old and n.is_leader]
        if others:
            break
    new = next(i for i, n in world.nodes.items() if i != old and n.is_leader)
    world.request(new, 3, _put("won", "y"))
    world.settle()
    world.heal()
    for _ in range(50):
        world.step()
        if 2 in world.responses(old):
            break
    resp = world.responses(old)[2]
    assert not resp.ok and resp.error.code == "proposal_dropped"
    assert _get(world.nodes[old], b"lost") is None
    # the store on LMDB had applied "lost" ahead (the twin declines): it was rolled back
    lmdb = not isinstance(world.sms[0], MemStateMachine)
    assert world.nodes[old].counters["prepared"] - before == lmdb


def test_a_leader_applies_its_lone_entry_ahead_and_answers_as_ever(world: World) -> None:
    lead = world.elect()
    world.request(lead, 1, {"op": "create_bucket", "bucket": "b"})
    world.settle()
    node = world.nodes[lead]
    before = node.counters["prepared"]
    for i in range(3):
        world.request(lead, 10 + i, _put(f"k{i}", f"v{i}", cid="c", seq=i + 1))
        world.settle()
        world.request(lead, 20 + i, _put(f"k{i}", "again", cid="c", seq=i + 1))  # a retry
        world.settle()
    resps = world.responses(lead)
    assert all(resps[r].ok for r in (10, 11, 12, 20, 21, 22))
    # the store on LMDB applies each lone entry ahead, the retries too; the twin declines
    lmdb = not isinstance(world.sms[0], MemStateMachine)
    assert node.counters["prepared"] - before == (6 if lmdb else 0)
    world.step()
    world.settle()
    for n in world.nodes.values():
        n.catch_up()
        assert [_get(n, f"k{i}".encode()) for i in range(3)] == [b"v0", b"v1", b"v2"]


def test_stale_reads_and_max_lag(world: World) -> None:
    lead = world.elect()
    follower = next(i for i in world.nodes if i != lead)
    world.request(lead, 1, {"op": "create_bucket", "bucket": "b"})
    world.request(lead, 2, _put("k", "v"))
    world.settle()
    world.step()  # lazy_commit: the follower learns the commit with the next heartbeat
    world.settle()
    world.request(follower, 3, {"op": "get", "bucket": "b", "key": "k", "read": "stale"})
    world.request(
        follower, 4, {"op": "get", "bucket": "b", "key": "k", "read": "stale", "max_lag": 0}
    )
    world.step(advance=False)
    world.isolate(follower)
    for _ in range(25):  # more than an election timeout without hearing from the leader
        world.step()
    world.request(
        follower, 5, {"op": "get", "bucket": "b", "key": "k", "read": "stale", "max_lag": 5}
    )
    world.request(follower, 6, {"op": "get", "bucket": "b", "key": "k", "read": "stale"})
    world.step(advance=False)
    r = world.responses(follower)
    assert (r[3].result, r[4].result, r[6].result) == (b"v", b"v", b"v")
    assert not r[5].ok and r[5].error.code == "lag_exceeded"


@pytest.mark.parametrize(
    "body",
    [
        {"op": "frobnicate"},
        {"op": "get", "bucket": "b", "key": "k", "read": "eventually"},
        {"op": "get", "bucket": "b", "key": "k", "read": "stale", "max_lag": -1},
        {"op": "put", "bucket": "b", "key": "k"},
    ],
)
def test_bad_requests_get_typed_errors_and_change_nothing(world: World, body: dict) -> None:
    lead = world.elect()
    last = world.nodes[lead].logstore.last_index()
    world.request(lead, 1, body)
    world.settle()
    resp = world.responses(lead)[1]
    assert not resp.ok
    assert resp.error.code in ("bad_request", "malformed_command")
    assert world.nodes[lead].logstore.last_index() == last


def test_status_names_role_leader_and_indexes(world: World) -> None:
    lead = world.elect()
    follower = next(i for i in world.nodes if i != lead)
    world.request(follower, 1, {"op": "status"})
    world.step(advance=False)
    st = world.responses(follower)[1].result
    assert (st["id"], st["role"], st["lead"]) == (follower, "follower", lead)
    assert st["leader_addr"] == world.nodes[lead].cfg.listen
    assert st["applied"] <= st["commit"]
    assert sorted(st["members"]["voters"]) == sorted(world.nodes)


def test_forwarded_write_times_out_when_the_leader_never_answers(world: World) -> None:
    lead = world.elect()
    follower = next(i for i in world.nodes if i != lead)
    world.lost.add(frozenset((follower, lead)))  # the follower still believes in the leader
    world.request(follower, 1, _put("k", "v"))
    world.step(advance=False)
    assert 1 not in world.responses(follower)
    timeout_ticks = world.nodes[follower].cfg.request_timeout_ms // TICK_MS
    for _ in range(timeout_ticks + 2):
        world.step()
    resp = world.responses(follower)[1]
    assert not resp.ok and resp.error.code in ("timeout", "no_leader", "not_leader")


def test_the_forwarding_timeout_is_no_longer_than_the_clients_attempt_timeout() -> None:
    from boltraft.client import Client
    from boltraft.server.config import ServerConfig

    with Client("tcp://127.0.0.1:1") as c:
        attempt = c._chan.attempt_timeout
    assert ServerConfig("n1", Path("."), "tcp://127.0.0.1:1").request_timeout_ms <= attempt * 1000


def test_a_write_the_leaders_connection_refuses_is_answered_at_once(world: World) -> None:
    lead = world.elect()
    follower = next(i for i in world.nodes if i != lead)
    world.cut.add(frozenset((follower, lead)))  # no connection: the fwd frame is refused
    world.request(follower, 1, _put("k", "v", cid=b"me", seq=1))
    world.step(advance=False)
    resp = world.responses(follower)[1]
    assert not resp.ok and resp.error.code == "unavailable"


def test_forwarded_writes_are_answered_when_their_leader_is_lost(world: World) -> None:
    lead = world.elect()
    follower = next(i for i in world.nodes if i != lead)
    world.lost.add(frozenset((follower, lead)))  # taken, never answered: the leader died
    world.request(follower, 1, _put("k", "v", cid=b"me", seq=1))
    world.step(advance=False)
    assert 1 not in world.responses(follower)
    world.close_connection(follower, lead)
    world.step(advance=False)
    resp = world.responses(follower)[1]
    assert not resp.ok and resp.error.code == "unavailable"  # retry elsewhere, same cid/seq


def test_a_closed_connection_to_the_leader_starts_an_election_before_the_timeout(
    world: World,
) -> None:
    lead = world.elect()
    term = world.nodes[lead].raw.status().term
    world.isolate(lead)  # it died: nothing goes in or out
    others = [i for i in world.nodes if i != lead]
    for i in others:
        world.close_connection(i, lead)
    world.settle()  # no tick: the election timeout never ran out
    new = [i for i in others if world.nodes[i].is_leader]
    assert len(new) == 1
    assert all(world.nodes[i].lead == new[0] for i in others)
    assert world.nodes[new[0]].raw.status().term == term + 1
    world.request(new[0], 1, {"op": "create_bucket", "bucket": "b"})
    world.settle()
    assert world.responses(new[0])[1].ok


def test_a_closed_connection_to_a_follower_changes_nothing(world: World) -> None:
    lead = world.elect()
    follower = next(i for i in world.nodes if i != lead)
    other = next(i for i in world.nodes if i not in (lead, follower))
    world.close_connection(lead, follower)
    world.close_connection(other, follower)
    world.settle()
    assert world.leader() == lead
    assert all(n.lead == lead for n in world.nodes.values())


def test_writes_without_a_leader_are_refused_with_no_leader(tmp_path: Path) -> None:
    w = World(tmp_path)
    try:
        w.request("n1", 1, _put("k", "v"))
        w.step(advance=False)
        resp = w.responses("n1")[1]
        assert not resp.ok and resp.error.code == "no_leader"
    finally:
        w.close()


def test_a_stalled_loop_ticks_once_instead_of_a_burst(world: World) -> None:
    lead = world.elect()
    term = world.nodes[lead].raw.status().term
    before = {i: n.counters["ticks"] for i, n in world.nodes.items()}
    world.now += 30 * TICK_MS / 1000  # every loop was stuck for 30 ticks (a huge apply)
    world.step(advance=False)
    world.settle()
    # one tick each: a burst of 30 would time out every election timer at once and
    # depose a leader that is fine
    assert {i: n.counters["ticks"] - before[i] for i, n in world.nodes.items()} == dict.fromkeys(
        world.nodes, 1
    )
    assert world.leader() == lead
    assert world.nodes[lead].raw.status().term == term
    for _ in range(3):  # and the clock goes on from now
        world.step()
    assert all(n.counters["ticks"] - before[i] == 4 for i, n in world.nodes.items())


class FlushTracking(MemoryLogStore):
    """A MemoryLogStore that tells written from flushed, as a disk would."""

    def __init__(self) -> None:
        super().__init__()
        self.durable_index = 0
        self.durable_hs = HardState()
        self.syncs_off_loop = 0
        # set when the loop waits for the flush: an off-loop flush finishes only then, so a
        # message sent before that wait would find the data unflushed, whatever the timing
        self.loop_waiting = threading.Event()

    def append(
        self, entries: Sequence[Entry], hard_state: HardState | None = None, sync: bool = True
    ) -> None:
        super().append(entries, hard_state, sync)
        if sync:
            self.sync()

    def sync(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            self.syncs_off_loop += 1
            assert self.loop_waiting.wait(30), "the loop never waited for the flush"
            self.loop_waiting.clear()
        self.durable_index = self.last_index()
        self.durable_hs = self.initial_state()[0]


def test_messages_leave_only_after_the_log_flush(tmp_path: Path) -> None:
    """Raft's persist-before-send rule with the flush on the sync thread: every append
    acknowledgement and every granted vote leaves after what it vouches for was flushed."""
    w = World(tmp_path, store=FlushTracking)
    checked: list[str] = []
    violations: list[str] = []

    def checking_flush(net: MemNet, flush: Callable[[], int]) -> Callable[[], int]:
        def run() -> int:
            store = w.nodes[net.id].logstore
            for m in net.queued:
                if m.type == MessageType.APP_RESP and not m.reject:
                    checked.append("app")
                    if m.index > store.durable_index:
                        violations.append(f"{net.id} acked {m.index} > {store.durable_index}")
                elif m.type == MessageType.VOTE_RESP and not m.reject:
                    checked.append("vote")
                    if store.durable_hs.vote != m.to or store.durable_hs.term < m.term:
                        violations.append(f"{net.id} granted {m.to} before flushing its vote")
            return flush()

        return run

    def announcing_wait(node: Node) -> Callable[[], None]:
        real = node._syncer.wait

        def wait() -> None:
            if node._syncer.busy:
                node.logstore.loop_waiting.set()  # type: ignore[attr-defined]
            real()

        return wait

    for net in w.nets.values():
        net.flush = checking_flush(net, net.flush)  # type: ignore[method-assign]
    for node in w.nodes.values():
        node._syncer.wait = announcing_wait(node)  # type: ignore[method-assign]
    try:
        lead = w.elect()
        w.request(lead, 1, {"op": "create_bucket", "bucket": "b"})
        w.settle(3)
        for rid in range(2, 31):  # one write per step: appends and commits travel together
            w.request(lead, rid, {"op": "put", "bucket": "b", "key": b"k%d" % rid, "value": b"v"})
            w.step(advance=False)
        w.settle(3)
        assert all(r.ok for r in w.responses(lead).values()) and len(w.responses(lead)) == 30
        assert not violations, violations
        assert checked.count("app") >= 30 and "vote" in checked
        # followers get new entries and a commit index in one message: flushed off the loop
        assert sum(n.logstore.syncs_off_loop for n in w.nodes.values()) > 0
    finally:
        w.close()


class InjectingStore(MemoryLogStore):
    """Calls ``hook()`` when entries are appended: frames that arrive while the log is
    being written, as a busy leader sees them."""

    hook: Callable[[], None] | None = None

    def append(
        self, entries: Sequence[Entry], hard_state: HardState | None = None, sync: bool = True
    ) -> None:
        super().append(entries, hard_state, sync)
        if entries and self.hook is not None:
            hook, self.hook = self.hook, None
            hook()


def test_frames_that_arrive_during_a_flush_are_stepped_meanwhile(tmp_path: Path) -> None:
    w = World(tmp_path, store=InjectingStore)
    try:
        lead = w.elect()
        node = w.nodes[lead]
        w.request(lead, 1, {"op": "create_bucket", "bucket": "b"})
        w.settle(3)
        put = {"op": "put", "bucket": "b", "value": b"v"}

        def arrive() -> None:  # a write and a cluster operation land in the inbox
            w.request(lead, 3, {**put, "key": b"during"})
            w.request(lead, 4, {"op": "snapshot"})

        node.logstore.hook = arrive  # type: ignore[attr-defined]
        w.request(lead, 2, {**put, "key": b"first"})
        node.process(w.nets[lead].recv())
        assert node.counters["stepped_during_flush"] == 1  # the write, not the cluster op
        assert [f.payload[0] for f in node._deferred] == [4]
        w.settle(5)
        assert node._deferred == []  # handled at the next turn
        deadline = time.monotonic() + 30  # the snapshot is written by a worker: wait for it
        while 4 not in w.responses(lead):
            assert time.monotonic() < deadline, "the deferred snapshot request was not answered"
            w.step()
        answers = w.responses(lead)
        assert answers[2].ok and answers[3].ok and answers[4].ok
        st = execute_read(node.sm.db, {"op": "get", "bucket": "b", "key": b"during"})
        assert st == b"v"
    finally:
        w.close()


def test_frames_left_by_a_flush_are_handled_without_waiting_for_a_tick(world: World) -> None:
    lead = world.elect()
    node, net = world.nodes[lead], world.nets[lead]
    timeouts: list[float] = []
    real = net.recv

    def recv(timeout: float = 0.0, max_frames: int = 4096) -> list[Incoming]:
        timeouts.append(timeout)
        return real()

    net.recv = recv  # type: ignore[method-assign]
    node._deferred.append(Incoming("req", codec.Request(7, {"op": "status"}), b"c", None))
    stops = iter([False, True])
    node.run(lambda: next(stops))
    assert timeouts == [0.0]
    assert world.responses(lead)[7].ok and node._deferred == []


class SlowSyncStore(MemoryLogStore):
    """A MemoryLogStore whose next flush, once ``slow`` is set, lasts until ``release`` is
    set (at most 2 s): what arrives meanwhile is up to the loop."""

    slow = False
    release = threading.Event()

    def sync(self) -> None:
        super().sync()
        if self.slow:
            self.slow = False
            self.release.wait(2.0)


def test_frames_that_arrive_while_a_leader_applies_and_flushes_are_stepped(
    tmp_path: Path,
) -> None:
    w = World(tmp_path, store=SlowSyncStore)
    try:
        lead = w.elect()
        node, net = w.nodes[lead], w.nets[lead]
        store: SlowSyncStore = node.logstore  # type: ignore[assignment]
        store.release = threading.Event()
        w.request(lead, 1, {"op": "create_bucket", "bucket": "b"})
        w.settle(3)
        w.request(lead, 2, _put("a", "1"))
        node.process(net.recv())  # proposed
        for f in w.nodes:  # the followers append it and acknowledge
            if f != lead:
                w.nodes[f].process(w.nets[f].recv())
        w.request(lead, 3, _put("b", "2"))  # comes with the acknowledgements
        real = net.recv

        def recv(timeout: float = 0.0, max_frames: int = 4096) -> list[Incoming]:
            frames = real(timeout, max_frames)
            taken = {f.payload[0] for f in frames if f.kind == "req"}
            if 4 in taken:  # write 5 comes while the loop steps write 4
                w.request(lead, 5, _put("d", "4"))
            if 5 in taken:
                store.release.set()  # the loop took both writes: the flush may end
            return frames

        net.recv = recv  # type: ignore[method-assign]
        # the Ready holding entry 3 and committing entry 2 is flushed on the sync thread; write
        # 4 comes while the loop applies entry 2
        store.slow = True
        apply = node.applier.apply

        def applying(ents: list[Entry]) -> Any:
            w.request(lead, 4, _put("c", "3"))
            node.applier.apply = apply  # type: ignore[method-assign]
            return apply(ents)

        node.applier.apply = applying  # type: ignore[method-assign]
        last = node.logstore.last_index()
        node.process(real())
        assert 2 in w.responses(lead)  # entry 2 was applied while the flush ran
        assert node.counters["stepped_during_flush"] == 2  # writes 4 and 5
        assert node.logstore.last_index() == last + 1  # they wait for the next turn
        timeouts: list[float] = []

        def timed(timeout: float = 0.0, max_frames: int = 4096) -> list[Incoming]:
            timeouts.append(timeout)
            return real(timeout, max_frames)

        net.recv = timed  # type: ignore[method-assign]
        stops = iter([False, True])
        node.run(lambda: next(stops))
        assert timeouts[0] == 0.0  # writes queued during the flush do not wait for a tick
        assert node.logstore.last_index() == last + 3
        w.settle(5)
        answers = w.responses(lead)
        assert answers[3].ok and answers[4].ok and answers[5].ok
    finally:
        w.close()


class AppendLog(MemoryLogStore):
    """A MemoryLogStore that records every append as (entry count, hard state)."""

    def __init__(self) -> None:
        super().__init__()
        self.appends: list[tuple[int, HardState | None]] = []

    def append(
        self, entries: Sequence[Entry], hard_state: HardState | None = None, sync: bool = True
    ) -> None:
        self.appends.append((len(entries), hard_state))
        super().append(entries, hard_state, sync)


def test_a_raised_commit_alone_is_written_with_the_next_append_or_at_close(
    tmp_path: Path,
) -> None:
    w = World(tmp_path, store=AppendLog)
    try:
        lead = w.elect()
        w.request(lead, 1, {"op": "create_bucket", "bucket": "b"})
        w.settle()
        node = w.nodes[lead]
        log: AppendLog = node.logstore  # type: ignore[assignment]
        for i in range(3):
            log.appends.clear()
            w.request(lead, 10 + i, _put(f"k{i}", "v"))
            w.settle()
            assert w.responses(lead)[10 + i].ok
            commit = node.commit
            # one append: the entry, with the commit before it; the commit of the entry,
            # raised by a follower's ack, waits for the next append instead of a write
            assert [(n, hs.commit if hs else None) for n, hs in log.appends] == [(1, commit - 1)]
            assert log.initial_state()[0].commit == commit - 1
        log.appends.clear()
        node.close()
        assert [(n, hs.commit if hs else None) for n, hs in log.appends] == [(0, node.commit)]
        assert log.initial_state()[0].commit == node.commit
    finally:
        w.close()


def test_stats_answers_the_observer_s_records_and_none_without_one(world: World) -> None:
    lead = world.elect()
    world.request(lead, 1, {"op": "stats", "since": 0})
    world.request(lead, 2, {"op": "stats", "since": "yesterday"})
    world.step(advance=False)
    answers = world.responses(lead)
    assert answers[1].result == {"stages": [], "records": []}  # a production node: no-op
    assert answers[2].error.code == "bad_request"


def test_status_reports_the_longest_silence_of_the_leader(world: World) -> None:
    lead = world.elect()
    follower = next(i for i in world.nodes if i != lead)
    for _ in range(3):
        world.step()
    st = world.nodes[follower].status_dict()
    assert 0 < st["leader_gap_max_ms"] <= 2 * TICK_MS  # a heartbeat every tick
    world.lost.add(frozenset((follower, lead)))
    for _ in range(5):  # half an election timeout without a word from the leader
        world.step()
    world.lost.clear()
    world.step()
    world.settle()
    assert world.nodes[follower].lead == lead
    assert world.nodes[follower].status_dict()["leader_gap_max_ms"] >= 5 * TICK_MS


def test_an_answer_to_a_forwarded_write_counts_only_from_the_leader_it_went_to(
    world: World,
) -> None:
    lead = world.elect()
    follower, other = (i for i in world.nodes if i != lead)
    world.lost.add(frozenset((follower, lead)))  # the fwd frame is taken and not answered
    world.request(follower, 1, _put("k", "v", if_value="nothing like this"))
    world.step(advance=False)
    assert 1 not in world.responses(follower)
    forged = [[fid, {"ok": True, "result": None}] for fid in range(1, 100)]
    world.nets[follower].inbox.append(Incoming("fwdresp", forged, other.encode(), None))
    world.step(advance=False)
    assert 1 not in world.responses(follower)  # not the leader's answer: dropped
    assert world.nodes[follower].counters["fwdresp_wrong_peer"] >= 1
    world.close_connection(follower, lead)
    world.step(advance=False)
    resp = world.responses(follower)[1]
    assert not resp.ok and resp.error.code == "unavailable"


def test_a_put_over_the_value_limit_is_answered_before_it_reaches_the_log(world: World) -> None:
    """Issue 19: the leader refuses a value the apply would refuse when it encodes the
    command; nothing is proposed, and the next write goes on."""
    lead = world.elect()
    world.request(lead, 1, {"op": "create_bucket", "bucket": "b"})
    world.settle()
    node = world.nodes[lead]
    last = node.logstore.last_index()
    world.request(lead, 2, _put("big", "v" * ((1 << 20) + 1)))
    node.process(world.nets[lead].recv())
    resp = world.responses(lead)[2]
    assert not resp.ok and resp.error.code == "value_too_large"
    assert node.logstore.last_index() == last
    world.request(lead, 3, _put("small", "v"))
    world.settle()
    assert world.responses(lead)[3].ok
