"""A follower offered a snapshot its state already covers (it installed newer data than the
log index offered with it, then the leader compacted again and offered an index between
its core's commit and its applied index): it moves its log to the offered index and goes
on, keeping its state; and a snapshot the core accepts without data to install never stops
the node."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from memworld import MemNet, World

from boltraft.raft.memstore import MemoryLogStore
from boltraft.raft.types import Entry, EntryType, Message, MessageType, SnapshotMeta
from boltraft.server.config import ServerConfig
from boltraft.server.node import Node
from boltraft.storage import commands
from boltraft.storage.fsm import BucketStateMachine
from boltraft.transport.zmq_transport import Incoming

PEERS = {"n1": "tcp://127.0.0.1:7000", "n3": "tcp://127.0.0.1:7002"}


def _follower(tmp_path: Path, applied: int) -> tuple[Node, BucketStateMachine]:
    """A follower whose state machine applied ``applied`` entries while its log is empty
    (what installing a snapshot's data at ``applied`` with a lower log index leaves)."""
    sm = BucketStateMachine(tmp_path / "state", sync=False)
    ents = [
        Entry(1, 1, EntryType.NORMAL, commands.encode({"op": "create_bucket", "bucket": [b"b"]}))
    ]
    for i in range(2, applied + 1):
        put = {"op": "put", "bucket": [b"b"], "key": b"k%d" % i, "value": b"v"}
        ents.append(Entry(1, i, EntryType.NORMAL, commands.encode(put)))
    sm.apply(ents)
    cfg = ServerConfig(id="n2", data=tmp_path / "n2", listen="tcp://127.0.0.1:7001", peers=PEERS)
    world = World.__new__(World)  # only the network is used: deliveries go nowhere
    world.cut, world.nets = set(), {}
    net = MemNet(world, "n2")
    node = Node(cfg, net=net, logstore=MemoryLogStore(), sm=sm, reopen_sm=lambda: sm)
    return node, sm


def _offer(index: int, data_index: int) -> Incoming:
    meta: dict[str, Any] = {
        "term": 2,
        "index": index,
        "log_term": 1,
        "voters": ["n1", "n2", "n3"],
        "learners": [],
        "addrs": {**PEERS, "n2": "tcp://127.0.0.1:7001"},
        "data_index": data_index,
        "size": 1 << 16,
        "sha256": "0" * 64,
        "chunk": 4096,
        "addr": PEERS["n1"],
    }
    return Incoming("snap", ["offer", f"{data_index}-0000", meta], b"n1", None)


def test_an_offer_the_state_already_covers_moves_only_the_log(tmp_path: Path) -> None:
    node, sm = _follower(tmp_path, applied=20)
    assert node.raw.status().commit == 0 and node.commit == 20
    node.process([_offer(15, 30)])  # 15 <= commit (20), above the core's commit (0)
    assert node.logstore.snapshot_meta().index == 15
    assert node.applied == 20 and sm.applied[0] == 20  # the state was kept
    with sm.db.view() as tx:
        assert tx.bucket(b"b").get(b"k20") == b"v"
    node.close()
    sm.close()


def test_a_snapshot_without_data_to_install_restarts_the_core_instead_of_stopping(
    tmp_path: Path,
) -> None:
    node, sm = _follower(tmp_path, applied=5)
    node.process([_offer(15, 30)])  # not covered: the node starts a download
    meta = SnapshotMeta(15, 1, node.conf_state)
    node.raw.step(Message(MessageType.SNAP, "n2", "n1", term=2, snapshot=meta))
    node.process([])  # the core took it; no verified download covers it
    assert node.logstore.snapshot_meta().index == 0  # nothing was changed
    assert node.raw.status().commit == 0  # the core started again from the log
    assert node.applied == 5
    node.close()
    sm.close()
