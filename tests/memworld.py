"""An in-memory world for the node loop: real RawNodes, MemoryLogStores and state machines
(on LMDB under a folder, or the in-memory twin ``tests/memsm.py`` with ``sm="twin"``), joined
by an in-memory network and driven by a fake clock."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from memsm import MemStateMachine

from boltraft.raft.memstore import MemoryLogStore
from boltraft.raft.types import Message
from boltraft.server.config import ServerConfig
from boltraft.server.node import Node
from boltraft.server.ports import StateMachine
from boltraft.storage.fsm import BucketStateMachine
from boltraft.transport import codec
from boltraft.transport.zmq_transport import PEER_DOWN, Incoming

TICK_MS = 100


class MemNet:
    """One node's view of an in-memory network: the world's ``cut`` links refuse a frame
    (no connection), its ``lost`` links take it and lose it (a connected, hung peer)."""

    def __init__(self, world: World, node_id: str) -> None:
        self.world = world
        self.id = node_id
        self.inbox: list[Incoming] = []
        self.queued: list[Message] = []
        self.replies: dict[bytes, list[codec.Response]] = {}
        self.resps: dict[bytes, list[list[list[Any]]]] = {}  # sender -> resps frames' pairs
        self._peers: dict[str, str] = {}

    def recv(self, timeout: float = 0.0, max_frames: int = 4096) -> list[Incoming]:
        out, self.inbox = self.inbox, []
        return out

    def pending(self) -> bool:
        return bool(self.inbox)

    def queue(self, msgs: Iterable[Message]) -> None:
        self.queued.extend(msgs)

    def flush(self) -> int:
        msgs, self.queued = self.queued, []
        for m in msgs:
            self.world.deliver(self.id, m.to, codec.encode_raft([m]))
        return len(msgs)

    def send_frame(self, peer_id: str, frame: bytes) -> bool:
        return self.world.deliver(self.id, peer_id, frame)

    def reply(self, sender: bytes, frame: bytes) -> bool:
        f = codec.decode_frame(frame)
        if f.kind == "resps":
            self.resps.setdefault(sender, []).append(f.payload)
        else:
            self.replies.setdefault(sender, []).append(f.payload)
        return True

    def peers(self) -> dict[str, str]:
        return dict(self._peers)

    def add_peer(self, peer_id: str, addr: str) -> None:
        self._peers[peer_id] = addr

    def remove_peer(self, peer_id: str) -> bool:
        return self._peers.pop(peer_id, None) is not None

    def counters(self) -> dict[str, int]:
        return {"received": 0}

    def close(self) -> None:
        pass


class World:
    """Three nodes on a fake clock (``options``: ServerConfig fields for every node);
    ``step()`` moves the clock one tick and runs every node's loop once. A leader's spare
    appends (``spare_append_ms``) are off unless a test sets them: ``settle()`` does not
    move the clock, and a held batch leaves only when its time has come."""

    def __init__(
        self,
        root: Path,
        n: int = 3,
        store: Callable[[], MemoryLogStore] = MemoryLogStore,
        sm: str = "lmdb",
        **options: Any,
    ) -> None:
        options.setdefault("spare_append_ms", 0)
        self.now = 1000.0
        self.cut: set[frozenset[str]] = set()
        self.lost: set[frozenset[str]] = set()
        ids = [f"n{i}" for i in range(1, n + 1)]
        addrs = {i: f"tcp://127.0.0.1:{7000 + k}" for k, i in enumerate(ids)}
        self.nets: dict[str, MemNet] = {}
        self.nodes: dict[str, Node] = {}
        self.sms: list[StateMachine] = []
        for k, i in enumerate(ids):
            cfg = ServerConfig(
                id=i,
                data=root / i,
                listen=addrs[i],
                peers={j: a for j, a in addrs.items() if j != i},
                tick_ms=TICK_MS,
                **options,
            )
            net = MemNet(self, i)
            machine: StateMachine = (
                MemStateMachine() if sm == "twin" else BucketStateMachine(root / i, sync=False)
            )
            self.sms.append(machine)
            self.nets[i] = net
            self.nodes[i] = Node(
                cfg,
                net=net,
                logstore=store(),
                sm=machine,
                rng=random.Random(k),
                clock=lambda: self.now,
            )

    def deliver(self, frm: str, to: str, frame: bytes) -> bool:
        if frozenset((frm, to)) in self.cut or to not in self.nets:
            return False
        if frozenset((frm, to)) in self.lost:
            return True
        f = codec.decode_frame(frame)
        self.nets[to].inbox.append(Incoming(f.kind, f.payload, frm.encode(), None))
        return True

    def step(self, advance: bool = True) -> None:
        if advance:
            self.now += TICK_MS / 1000
        for node_id, node in self.nodes.items():
            node.process(self.nets[node_id].recv())

    def step_until(self, done: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
        """Steps until ``done()``, for work that worker threads finish (hashes, snapshots);
        fails after ``timeout`` seconds of real time."""
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            self.step()

    def settle(self, rounds: int = 5) -> None:
        """Delivers everything in flight without moving the clock."""
        for _ in range(rounds):
            self.step(advance=False)

    def leader(self) -> str | None:
        leads = [i for i, n in self.nodes.items() if n.is_leader]
        return leads[0] if len(leads) == 1 else None

    def elect(self) -> str:
        for _ in range(200):
            self.step()
            lead = self.leader()
            if lead and all(n.lead == lead for n in self.nodes.values()):
                self.settle()
                return lead
        raise AssertionError("no leader")

    def isolate(self, node_id: str) -> None:
        self.cut |= {frozenset((node_id, o)) for o in self.nodes if o != node_id}

    def heal(self) -> None:
        self.cut.clear()

    def close_connection(self, node_id: str, peer: str) -> None:
        """Makes ``node_id``'s transport report its connection to ``peer`` closed."""
        self.nets[node_id].inbox.append(Incoming(PEER_DOWN, peer, peer.encode(), peer))

    def request(self, node_id: str, rid: int, body: dict[str, Any], client: bytes = b"c") -> None:
        req = codec.Request(rid, body)
        self.nets[node_id].inbox.append(Incoming("req", req, client, None))

    def pipeline(self, node_id: str, items: list[list[Any]], client: bytes = b"p") -> None:
        """Delivers one ``reqs`` frame of ``[rid, body]`` items to ``node_id``."""
        self.nets[node_id].inbox.append(Incoming("reqs", items, client, None))

    def pipelined(self, node_id: str, client: bytes = b"p") -> dict[int, dict[str, Any]]:
        """Returns rid -> response of every ``resps`` answer (asserting one per rid)."""
        out: dict[int, dict[str, Any]] = {}
        for pairs in self.nets[node_id].resps.get(client, []):
            for rid, resp in pairs:
                assert rid not in out, f"request {rid} answered twice"
                out[rid] = resp
        return out

    def responses(self, node_id: str, client: bytes = b"c") -> dict[int, codec.Response]:
        return {r.request_id: r for r in self.nets[node_id].replies.get(client, [])}

    def close(self) -> None:
        for node in self.nodes.values():
            node.close()
        for sm in self.sms:
            sm.close()
