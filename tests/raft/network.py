"""A small deterministic in-test network of RawNodes: deliver-all, cut, isolate, recover.

Each node has an in-memory log store; ``process(nid)`` carries out one Ready following the
contract on ``boltraft.raft.types.Ready`` and checks the core's invariants afterwards.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence

from boltraft.raft.config import Config
from boltraft.raft.memstore import MemoryLogStore
from boltraft.raft.rawnode import RawNode
from boltraft.raft.types import (
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    NodeId,
    ReadState,
    Role,
    SnapshotMeta,
)

MT = MessageType


def make_config(nid: NodeId, **kw: object) -> Config:
    """Returns a Config for tests: seeded rng, pre-vote and check-quorum unless overridden."""
    kw.setdefault("rng", random.Random(f"seed-{nid}"))
    return Config(nid, **kw)  # type: ignore[arg-type]


class Network:
    """Nodes by id plus the messages in flight. Messages between cut pairs (or matching
    ``drop_filter``) are dropped. A delivered SNAP counts as shipped: the sender is told
    ``report_snapshot(to, True)``; a dropped one ``report_snapshot(to, False)``."""

    def __init__(
        self,
        ids: Sequence[NodeId],
        *,
        learners: Sequence[NodeId] = (),
        stores: dict[NodeId, MemoryLogStore] | None = None,
        **config: object,
    ) -> None:
        self.config = config
        self.stores: dict[NodeId, MemoryLogStore] = {}
        self.nodes: dict[NodeId, RawNode] = {}
        self.applied: dict[NodeId, list[Entry]] = {}
        self.read_states: dict[NodeId, list[ReadState]] = {}
        self.conf_states: dict[NodeId, ConfState] = {}
        self.snapshots_installed: dict[NodeId, list[SnapshotMeta]] = {}
        self.cut_pairs: set[frozenset[NodeId]] = set()
        self.drop_filter: Callable[[Message], bool] | None = None
        self.inflight: list[Message] = []
        self.delivered: list[Message] = []  # every message delivered, in order (for tests)
        self.founding = ConfState(tuple(ids), tuple(learners))
        for nid in (*ids, *learners):
            store = stores[nid] if stores and nid in stores else MemoryLogStore()
            store.bootstrap(self.founding)
            self.add_node(nid, store)

    def add_spare(self, nid: NodeId) -> RawNode:
        """Returns a new node that knows the founding membership (as every joiner must: the
        conf changes in the log are replayed on top of it) but is not a member yet."""
        store = MemoryLogStore()
        store.bootstrap(self.founding)
        return self.add_node(nid, store)

    def add_node(self, nid: NodeId, store: MemoryLogStore, applied: int = 0) -> RawNode:
        """Returns a (re)started node on ``store``, replacing any node with that id."""
        self.stores[nid] = store
        node = RawNode(make_config(nid, applied=applied, **self.config), store)
        self.nodes[nid] = node
        self.applied.setdefault(nid, [])
        self.read_states.setdefault(nid, [])
        self.snapshots_installed.setdefault(nid, [])
        return node

    # --- faults ------------------------------------------------------------------------------
    def cut(self, a: NodeId, b: NodeId) -> None:
        self.cut_pairs.add(frozenset((a, b)))

    def isolate(self, nid: NodeId) -> None:
        for other in self.nodes:
            if other != nid:
                self.cut(nid, other)

    def recover(self) -> None:
        self.cut_pairs.clear()
        self.drop_filter = None

    def _dropped(self, m: Message) -> bool:
        if frozenset((m.frm, m.to)) in self.cut_pairs:
            return True
        return self.drop_filter is not None and self.drop_filter(m)

    # --- driving -----------------------------------------------------------------------------
    def process(self, nid: NodeId) -> list[Message]:
        """Returns the messages one Ready of ``nid`` sends, after persisting and applying."""
        node = self.nodes[nid]
        store = self.stores[nid]
        rd = node.ready()
        out = [*rd.early_messages, *rd.spare_messages]  # spare ones at once: the contract allows
        if rd.snapshot is not None:
            store.apply_snapshot(rd.snapshot, rd.hard_state)
            self.snapshots_installed[nid].append(rd.snapshot)
            self.applied[nid] = [e for e in self.applied[nid] if e.index <= rd.snapshot.index]
        if rd.entries or rd.hard_state is not None:
            store.append(rd.entries, rd.hard_state)
        out.extend(rd.messages)
        self.applied[nid].extend(rd.committed_entries)
        self.read_states[nid].extend(rd.read_states)
        if rd.conf_state is not None:
            self.conf_states[nid] = rd.conf_state
        node.advance(rd)
        node.check_invariants()
        return out

    def send(self, msgs: Iterable[Message]) -> None:
        for m in msgs:
            if not self._dropped(m):
                self.inflight.append(m)
            elif m.type == MT.SNAP:
                self.nodes[m.frm].report_snapshot(m.to, False)

    def settle(self, max_rounds: int = 10_000) -> None:
        """Returns once no node has a Ready and no message is in flight."""
        for _ in range(max_rounds):
            busy = False
            for nid in list(self.nodes):
                if self.nodes[nid].has_ready():
                    busy = True
                    self.send(self.process(nid))
            if self.inflight:
                busy = True
                batch, self.inflight = self.inflight, []
                for m in batch:
                    node = self.nodes.get(m.to)
                    if node is not None and not self._dropped(m):
                        self.delivered.append(m)
                        node.step(m)
                        node.check_invariants()
                        if m.type == MT.SNAP:
                            # the runtime shipped the data: tell the sender it arrived
                            self.nodes[m.frm].report_snapshot(m.to, True)
            if not busy:
                return
        raise AssertionError("network did not settle")

    def tick(self, nid: NodeId, n: int = 1) -> None:
        for _ in range(n):
            self.nodes[nid].tick()
            self.settle()

    def tick_all(self, n: int = 1) -> None:
        for _ in range(n):
            for node in self.nodes.values():
                node.tick()
            self.settle()

    def elect(self, nid: NodeId) -> None:
        """Returns once ``nid`` is leader (campaigning at once); raises AssertionError if not."""
        self.nodes[nid].campaign()
        self.settle()
        assert self.nodes[nid].status().role == Role.LEADER, self.nodes[nid].status()

    def propose(self, nid: NodeId, *datas: bytes) -> tuple[int, int]:
        out = self.nodes[nid].propose(list(datas))
        self.settle()
        return out

    # --- views -------------------------------------------------------------------------------
    def leaders(self) -> list[NodeId]:
        return [nid for nid, n in self.nodes.items() if n.status().role == Role.LEADER]

    def log_of(self, nid: NodeId) -> list[tuple[int, int]]:
        """Returns the (index, term) pairs of ``nid``'s whole log (durable and unstable)."""
        log = self.nodes[nid].raft.log
        lo = log.first_index()
        return [(e.index, e.term) for e in log.entries(lo, log.last_index() + 1)]

    def data_applied(self, nid: NodeId) -> list[bytes]:
        return [e.data for e in self.applied[nid] if e.type == EntryType.NORMAL and e.data]


def seeded_store(
    founding: Sequence[NodeId], terms: Sequence[int] = (), hard: HardState | None = None
) -> MemoryLogStore:
    """Returns a store bootstrapped with the voters ``founding`` that holds entries with
    ``terms`` (index 1..n) and the hard state ``hard`` (None: none written)."""
    store = MemoryLogStore()
    store.bootstrap(ConfState(tuple(founding)))
    store.append([Entry(t, i, 0, f"{i}@{t}".encode()) for i, t in enumerate(terms, 1)], hard)
    return store
