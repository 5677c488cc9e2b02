"""Snapshot transfer (boltraft.server.snaptransfer + snapio): chunking, checksums, lost and
corrupt chunks, a change of holder, resuming after a restart; and the stepped snapshot copy.

Real files and the real frame codec; the two nodes are small fakes around ``Transfers``
joined by an in-memory network whose ``hook`` may drop or alter any frame.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgpack
import pytest
from faults import DropNthChunk

from boltraft.errors import MalformedFrameError
from boltraft.raft.types import ConfState, Entry, Message, MessageType, SnapshotMeta
from boltraft.server import snaptransfer
from boltraft.server.config import ServerConfig
from boltraft.server.snapshots import SnapshotStore
from boltraft.server.snaptransfer import RESEND_S, Transfers, snapshot_id
from boltraft.server.wire import SNAP, conf_to_json, register_kinds
from boltraft.storage import commands
from boltraft.storage.fsm import BucketStateMachine
from boltraft.storage.snapio import PROGRESS_FILE, ChunkSink, StepFlusher, write_snapshot
from boltraft.storage.snapshot import SnapshotInfo
from boltraft.transport import codec
from boltraft.transport.zmq_transport import Incoming

register_kinds()

CHUNK = 5000  # not a divisor of the page size, so the last chunk is short
CONF = ConfState(("n1", "n3"), ("n2",), {"n1": "tcp://127.0.0.1:1", "n2": "tcp://127.0.0.1:2"})
# hook(src, dst, decoded payload) -> payload to deliver, or None to drop the frame
Hook = Callable[[str, str, list[Any]], list[Any] | None]


class FakeRaw:
    def __init__(self) -> None:
        self.reports: list[tuple[str, bool]] = []
        self.stepped: list[Message] = []

    def report_snapshot(self, to: str, ok: bool) -> None:
        self.reports.append((to, ok))

    def step(self, m: Message) -> None:
        self.stepped.append(m)


class Net:
    """Frames in flight, in order; ``deliver`` hands them to the nodes' Transfers."""

    def __init__(self) -> None:
        self.queue: deque[tuple[str, str, bytes]] = deque()
        self.nodes: dict[str, FakeNode] = {}
        self.hook: Hook = lambda src, dst, payload: payload
        self.kinds: Counter[str] = Counter()

    def deliver(self) -> None:
        while self.queue:
            src, dst, data = self.queue.popleft()
            frame = codec.decode_frame(data)
            assert frame.kind == SNAP
            self.kinds[frame.payload[0]] += 1
            payload = self.hook(src, dst, list(frame.payload))
            if payload is not None and dst in self.nodes:
                inc = Incoming(SNAP, payload, src.encode(), None)
                self.nodes[dst].transfers.on_frame(inc)


class End:
    def __init__(self, net: Net, me: str) -> None:
        self.net, self.me = net, me

    def send_frame(self, peer: str, data: bytes) -> None:
        self.net.queue.append((self.me, peer, data))

    def reply(self, sender: bytes, data: bytes) -> None:
        self.net.queue.append((self.me, sender.decode(), data))

    def peers(self) -> list[str]:
        return [n for n in self.net.nodes if n != self.me]

    def add_peer(self, peer: str, addr: str) -> None:
        assert peer in self.net.nodes


class FakeNode:
    """What Transfers is given: cfg, a view (``id``, ``is_leader``, ``commit``: this object),
    the core (``raw``), the network and the snapshots; ``drop_chunk``: the leader's network
    drops the chunk it serves at that position (``tests/faults.py``)."""

    def __init__(
        self, node_id: str, root: Path, net: Net, drop_chunk: int = -1, **cfg: Any
    ) -> None:
        self.id = node_id
        data = root / node_id
        data.mkdir(exist_ok=True)
        port = 10 + len(net.nodes)
        self.cfg = ServerConfig(
            id=node_id,
            data=data,
            listen=f"tcp://127.0.0.1:{port}",
            snapshot_chunk_bytes=CHUNK,
            snapshot_window=4,
            **cfg,
        )
        self.end = End(net, node_id)
        self.net = DropNthChunk(self.end, drop_chunk)
        self.raw = FakeRaw()
        self.is_leader = False
        self.commit = 0
        self.counters: Counter[str] = Counter()
        store = SnapshotStore(data / "snapshots")
        self.ops = SimpleNamespace(snapshots=SimpleNamespace(store=store, last_info=None))
        self.transfers = Transfers(
            self.cfg,
            self,  # type: ignore[arg-type]
            self.raw,
            self.net,
            self.ops.snapshots,  # type: ignore[arg-type]
        )
        net.nodes[node_id] = self

    def count(self, name: str) -> None:
        self.counters[name] += 1

    def take(self, info: SnapshotInfo) -> SnapshotInfo:
        """Returns ``info`` copied into this node's snapshot store as its latest."""
        store = self.ops.snapshots.store
        dest = store.path / info.path.parent.name
        shutil.copytree(info.path.parent, dest)
        mine = store.latest()
        self.ops.snapshots.last_info = mine
        return mine


@pytest.fixture(scope="module")
def snap(tmp_path_factory: pytest.TempPathFactory) -> SnapshotInfo:
    """Returns a real snapshot of about 50 chunks (not a whole number of them)."""
    root = tmp_path_factory.mktemp("source")
    sm = BucketStateMachine(root / "state", sync=False)
    rnd = os.urandom(60_000)
    ops = [
        {"op": "put", "bucket": [b"b"], "key": b"k%04d" % i, "value": rnd[i * 997 :]}
        for i in range(4)
    ]
    sm.apply(
        [
            Entry(1, 1, 0, commands.encode({"op": "create_bucket", "bucket": [b"b"]})),
            Entry(2, 2, 0, commands.encode({"op": "batch", "ops": ops})),
        ]
    )
    info = write_snapshot(sm.db, root / "snaps", fsync=True, rate=0)
    sm.close()
    assert info.size % CHUNK != 0 and info.size > 40 * CHUNK
    return info


def snap_msg(to: str, frm: str, info: SnapshotInfo) -> Message:
    meta = SnapshotMeta(info.index, info.term, CONF)
    return Message(MessageType.SNAP, to, frm, term=5, snapshot=meta)


class Clock:
    """The transfer code's clock: moves only when a test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(snaptransfer, "time", c)
    CLOCK[0] = c
    return c


CLOCK: list[Clock] = []
CLOCK.append(Clock())


def run(net: Net, until: Callable[[], bool], timeout: float = 10.0) -> None:
    """Delivers frames and ticks every node until ``until()`` holds; when the network is
    idle while a download waits for chunks, the clock moves past the resend delay (a lost
    chunk). Fails after ``timeout`` real seconds."""
    clock = CLOCK[0]
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "transfer did not finish"
        net.deliver()
        for node in list(net.nodes.values()):
            node.transfers.tick(clock.now)
        net.deliver()
        waiting = any(n.transfers._dl and n.transfers._dl.outstanding for n in net.nodes.values())
        if waiting and not net.queue:
            clock.now += RESEND_S * 0.6
        time.sleep(0.001)


def start(tmp_path: Path, info: SnapshotInfo, **cfg: Any) -> tuple[Net, FakeNode, FakeNode]:
    net = Net()
    leader = FakeNode("n1", tmp_path, net, **cfg)
    follower = FakeNode("n2", tmp_path, net)
    leader.is_leader = True
    leader.take(info)
    return net, leader, follower


def finish(net: Net, leader: FakeNode, follower: FakeNode, info: SnapshotInfo) -> bytes:
    """Returns the received file's bytes once the follower stepped the snapshot and reported
    it installed (the staged file matched ``info``)."""
    run(net, lambda: bool(follower.raw.stepped))
    m = follower.raw.stepped[-1]
    assert (m.type, m.to, m.frm, m.term) == (MessageType.SNAP, "n2", "n1", 5)
    assert m.snapshot == SnapshotMeta(info.index, info.term, CONF)
    staged = follower.transfers.staged_for(m.snapshot)
    assert staged is not None
    data = staged.read_bytes()
    follower.transfers.installed()
    net.deliver()
    assert leader.raw.reports == [("n2", True)]
    return data


def test_transfer_in_checksummed_chunks(tmp_path: Path, snap: SnapshotInfo) -> None:
    net, leader, follower = start(tmp_path, snap)
    leader.transfers.on_snap_message(snap_msg("n2", "n1", snap))
    data = finish(net, leader, follower, snap)
    assert data == snap.path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == snap.sha256
    chunks = -(-snap.size // CHUNK)
    assert net.kinds["chunk"] == chunks == follower.transfers.stats["chunks_received"]
    assert net.kinds["offer"] == 1 and net.kinds["done"] == 1
    # flow control: never more than the window asked for in one get
    assert net.kinds["get"] >= chunks / 4
    assert leader.transfers.status()["sending_to"] == {}


def test_lost_chunk_is_requested_again(tmp_path: Path, snap: SnapshotInfo) -> None:
    net, leader, follower = start(tmp_path, snap, drop_chunk=3)
    leader.transfers.on_snap_message(snap_msg("n2", "n1", snap))
    net.deliver()
    assert leader.net.dropped == 1
    assert follower.transfers.status()["receiving"]["received"] < snap.size
    data = finish(net, leader, follower, snap)
    assert data == snap.path.read_bytes()
    assert follower.transfers.stats["chunks_resent"] == 1


def test_corrupt_chunk_is_refused(tmp_path: Path, snap: SnapshotInfo) -> None:
    net, leader, follower = start(tmp_path, snap)
    spoiled: list[int] = []

    def corrupt(src: str, dst: str, p: list[Any]) -> list[Any]:
        if p[0] == "chunk" and not spoiled and p[2] == 5 * CHUNK:
            spoiled.append(p[2])
            data = bytearray(p[3])
            data[100] ^= 0xFF
            return [*p[:3], bytes(data), p[4]]  # the crc32 is that of the good data
        return p

    net.hook = corrupt
    leader.transfers.on_snap_message(snap_msg("n2", "n1", snap))
    data = finish(net, leader, follower, snap)
    assert spoiled == [5 * CHUNK]
    assert follower.transfers.stats["bad_chunks"] == 1
    assert data == snap.path.read_bytes()


def test_bad_sha256_is_not_installed(tmp_path: Path, snap: SnapshotInfo) -> None:
    net, leader, follower = start(tmp_path, snap)

    def lie(src: str, dst: str, p: list[Any]) -> list[Any]:
        if p[0] == "offer":
            return [p[0], p[1], {**p[2], "sha256": "0" * 64}]
        return p

    net.hook = lie
    leader.transfers.on_snap_message(snap_msg("n2", "n1", snap))
    run(net, lambda: follower.transfers.stats["failed"] == 1)
    assert follower.raw.stepped == []
    assert not list((follower.cfg.data / "snapshots").glob(".recv-*"))
    net.deliver()
    assert leader.raw.reports == [("n2", False)]


def test_resume_from_another_holder_after_a_leader_change(
    tmp_path: Path, snap: SnapshotInfo
) -> None:
    net = Net()
    old = FakeNode("n1", tmp_path, net)
    follower = FakeNode("n2", tmp_path, net)
    new = FakeNode("n3", tmp_path, net)
    old.is_leader = True
    old.take(snap)
    new.take(snap)  # the same snapshot file (same id) is stored on the new leader
    dead: set[str] = set()
    got: list[int] = []

    def hook(src: str, dst: str, p: list[Any]) -> list[Any] | None:
        if src in dead or dst in dead:
            return None
        if p[0] == "chunk":
            got.append(p[2])
            if len(got) == 12:
                dead.add("n1")  # the old leader vanishes mid-transfer
        return p

    net.hook = hook
    old.transfers.on_snap_message(snap_msg("n2", "n1", snap))
    run(net, lambda: bool(dead))
    assert dead == {"n1"} and follower.transfers.status()["receiving"]["received"] < snap.size
    old.is_leader, new.is_leader = False, True
    new.transfers.on_snap_message(snap_msg("n2", "n3", snap))
    run(net, lambda: bool(follower.raw.stepped))
    staged = follower.transfers.staged_for(follower.raw.stepped[-1].snapshot)
    assert staged is not None and staged.read_bytes() == snap.path.read_bytes()
    # nothing received before the change was fetched again from the new holder
    assert len(got) == len(set(got)) == -(-snap.size // CHUNK)
    assert follower.raw.stepped[-1].frm == "n3"
    follower.transfers.installed()
    net.deliver()
    assert new.raw.reports == [("n2", True)]


def test_download_resumes_after_a_restart(tmp_path: Path, snap: SnapshotInfo) -> None:
    net, leader, follower = start(tmp_path, snap)
    seen: list[int] = []

    def stop_after(src: str, dst: str, p: list[Any]) -> list[Any] | None:
        if p[0] == "chunk":
            if len(seen) >= 30:
                return None
            seen.append(p[2])
        return p

    net.hook = stop_after
    leader.transfers.on_snap_message(snap_msg("n2", "n1", snap))
    run(net, lambda: len(seen) >= 30)
    sink = follower.transfers._dl.sink  # type: ignore[union-attr]
    deadline = time.monotonic() + 5
    while sink.pending and time.monotonic() < deadline:
        time.sleep(0.001)
    follower.transfers.close()  # the node stops; the partial download stays
    recv = follower.cfg.data / "snapshots" / f".recv-{snapshot_id(snap)}"
    assert (recv / PROGRESS_FILE).exists()
    del net.nodes["n2"]
    net.queue.clear()
    restarted = FakeNode("n2", tmp_path, net)
    net.hook = lambda src, dst, p: p
    leader.transfers.on_snap_message(snap_msg("n2", "n1", snap))
    run(net, lambda: bool(restarted.raw.stepped))
    kept = restarted.transfers.stats["resumed_bytes"]
    assert kept > 0 and kept % CHUNK == 0 and kept <= 30 * CHUNK
    staged = restarted.transfers.staged_for(restarted.raw.stepped[-1].snapshot)
    assert staged is not None and staged.read_bytes() == snap.path.read_bytes()
    assert restarted.transfers.stats["chunks_received"] == -(-(snap.size - kept) // CHUNK)


def test_chunk_sink_out_of_order_and_resume(tmp_path: Path) -> None:
    blob = os.urandom(37 * CHUNK + 123)
    offs = list(range(0, len(blob), CHUNK))
    sink = ChunkSink(tmp_path / "f", "sid", len(blob))
    for off in reversed(offs):  # the whole prefix waits for offset 0
        sink.put(off, blob[off : off + CHUNK])
    sink.finish()
    deadline = time.monotonic() + 5
    while not sink.done():
        assert time.monotonic() < deadline
        time.sleep(0.001)
    sink.close()
    assert sink.error is None and sink.hashed == len(blob)
    assert sink.digest == hashlib.sha256(blob).hexdigest()
    assert (tmp_path / "f").read_bytes() == blob
    # resume: keep the first 10 chunks on disk, write the rest
    again = ChunkSink(tmp_path / "f", "sid", len(blob), resume=10 * CHUNK)
    for off in offs[10:]:
        again.put(off, blob[off : off + CHUNK])
    again.finish()
    while not again.done():
        time.sleep(0.001)
    again.close()
    assert again.digest == hashlib.sha256(blob).hexdigest()


def test_step_flusher_and_rate_limit(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        f = StepFlusher(fd, step=64 << 10, rate=4 << 20)  # 4 MiB/s
        t = time.monotonic()
        for i in range(1, 17):
            os.write(fd, b"x" * (64 << 10))
            f.wrote(i * (64 << 10))
            assert 0 <= f.waited <= f.started <= i * (64 << 10)
        elapsed = time.monotonic() - t
        assert f.started == 16 * (64 << 10) and f.waited == 15 * (64 << 10)
        assert elapsed >= 0.2  # 1 MiB at 4 MiB/s
        f.finish()
        assert f.waited == f.started
    finally:
        os.close(fd)


def test_offer_below_the_commit_index_is_answered_by_the_core(
    tmp_path: Path, snap: SnapshotInfo
) -> None:
    net, leader, follower = start(tmp_path, snap)
    follower.commit = snap.index  # e.g. start-up recovery finished an install
    leader.transfers.on_snap_message(snap_msg("n2", "n1", snap))
    net.deliver()
    assert net.kinds["get"] == 0 and follower.transfers.status().get("receiving") is None
    (m,) = follower.raw.stepped  # the core answers it with its commit index
    assert (m.type, m.frm, m.snapshot.index) == (MessageType.SNAP, "n1", snap.index)
    assert leader.raw.reports == [("n2", True)]  # the leader appends after the snapshot


TRAVERSING_SIDS = ["A/../../state", "B/../../wal", "../x", "1-0123456789abcdef/..", "..", ""]


@pytest.mark.parametrize("sid", TRAVERSING_SIDS)
def test_snapshot_id_that_is_not_a_safe_name_is_refused(tmp_path: Path, sid: str) -> None:
    frame = msgpack.packb([1, SNAP, "offer", sid, {}])
    with pytest.raises(MalformedFrameError):
        codec.decode_frame(frame)
    for name, rest in (("get", [[0]]), ("chunk", [0, b"x", 0]), ("done", [True, ""])):
        with pytest.raises(MalformedFrameError):
            codec.decode_frame(msgpack.packb([1, SNAP, name, sid, *rest]))


@pytest.mark.parametrize("sid", TRAVERSING_SIDS)
def test_offer_with_a_traversing_id_creates_and_deletes_nothing(
    tmp_path: Path, snap: SnapshotInfo, sid: str
) -> None:
    _net, leader, follower = start(tmp_path, snap)
    data = follower.cfg.data
    for sub in ("state", "wal", "snapshots"):
        (data / sub).mkdir(exist_ok=True)
        (data / sub / "keep").write_text("keep")
    before = sorted(p for p in tmp_path.rglob("*"))
    meta = {
        "term": 5,
        "index": snap.index,
        "log_term": snap.term,
        **conf_to_json(CONF),
        "data_index": snap.index,
        "size": snap.size,
        "sha256": snap.sha256,
        "chunk": CHUNK,
        "addr": leader.cfg.listen,
    }
    follower.transfers.on_frame(Incoming(SNAP, ["offer", sid, meta], b"n1", None))
    assert sorted(p for p in tmp_path.rglob("*")) == before
    assert follower.transfers.stats["bad_offers"] == 1
    assert follower.transfers.status().get("receiving") is None
