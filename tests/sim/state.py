"""What a simulation runs on: its size and fault rates, one simulated server's durable and
volatile parts, a snapshot on the side channel, and the outcome of a seed."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from boltraft.raft.memstore import MemoryLogStore
from boltraft.raft.rawnode import RawNode
from boltraft.raft.types import Message, NodeId, ReadState, Ready, Role

from .model import KVState


@dataclass(slots=True)
class SimParams:
    """The size of one run. ``liveness_ticks == 0`` means 40 election timeouts, or
    ``chaos_ticks`` when that is more."""

    nodes: int = 3
    chaos_ticks: int = 120
    liveness_ticks: int = 0
    trace_size: int = 300
    max_steps: int = 300_000  # a run needs a few thousand; far more means a message storm
    # slow flushes and the deposed-write script (the second generator); off, a seed plays
    # the run of the first generator alone
    async_flush: bool = True


@dataclass(slots=True)
class Rates:
    """Per-tick chances of each chaos action, drawn per seed. Invariant: all in [0, 1]."""

    crash: float
    partition: float
    propose: float
    read: float
    conf: float
    transfer: float
    compact: float
    ready_crash: float  # per Ready: crash between two of its steps
    ready_now: float  # per step: handle the Ready at once (else by the next tick: slow disk)
    # per Ready: its write stays in flight (landing at each tick with chance 1/2) while the
    # node goes on stepping messages, ticking and taking proposals, as the node loop steps
    # while it flushes
    slow_flush: float = 0.0
    deposed_write: float = 0.0  # per tick in the first half of chaos: start the script
    disconnect: float = 0.0  # a follower's connection to its live leader closes

    @staticmethod
    def random(rng: random.Random) -> Rates:
        """Returns rates drawn from ``rng``; some seeds are calm, some brutal."""
        c = rng.choice
        return Rates(
            crash=c((0.0, 0.01, 0.03, 0.06)),
            partition=c((0.0, 0.02, 0.05, 0.1)),
            propose=c((0.2, 0.5, 1.0)),
            read=c((0.0, 0.2, 0.5)),
            conf=c((0.0, 0.0, 0.03, 0.08)),
            transfer=c((0.0, 0.01, 0.04)),
            compact=c((0.0, 0.05, 0.2)),
            ready_crash=c((0.0, 0.0, 0.003, 0.01)),
            ready_now=c((1.0, 0.7, 0.3)),
            disconnect=c((0.0, 0.02, 0.1)),
        )


class Flush(NamedTuple):
    """A Ready whose write is in flight: its early messages left, the rest waits."""

    rd: Ready
    crash_at: int  # where a crash strikes once the write lands (see Simulation._ready)
    held: bool  # it carries the entry ``SimNode.stall`` names: only the script releases it


class SnapFlight(NamedTuple):
    """A snapshot on the side channel: who sent it, whether it will arrive, and its data."""

    sender: SimNode
    inc: int  # the sender's incarnation (a report goes only to that one)
    ok: bool
    data: KVState


@dataclass(slots=True)
class SeedResult:
    """The outcome of one seed; ``kind`` and ``error`` are empty when ``ok``."""

    seed: int
    nodes: int
    ok: bool
    kind: str = ""
    error: str = ""
    trace: str = ""
    stats: dict[str, Any] = field(default_factory=dict)

    def replay(self) -> str:
        """Returns the shell command that replays this seed under pytest."""
        name = {3: "three_nodes", 5: "five_nodes"}.get(self.nodes, f"{self.nodes}")
        return f"BOLTRAFT_SIM_SEED={self.seed} pytest -m sim tests/sim -k {name}"


class SimNode:
    """One simulated server: a durable store and state machine, and a RawNode while up.

    Invariants: ``raw is None`` exactly while the node is down; ``inc`` counts incarnations;
    ``snap`` holds the data of ``store.snapshot_meta()`` whenever its index is > 0; while
    ``flushing`` holds a Ready, the node takes no other Ready (``dirty`` marks it for later)."""

    __slots__ = (
        "dirty",
        "down_until",
        "flushing",
        "held",
        "held_until",
        "id",
        "inc",
        "incoming",
        "lead_commit",
        "pending",
        "raw",
        "reads",
        "role",
        "saved",
        "sm",
        "snap",
        "stall",
        "started",
        "store",
        "term",
    )

    def __init__(self, nid: NodeId) -> None:
        self.id = nid
        self.store = MemoryLogStore()
        self.sm = KVState()
        self.raw: RawNode | None = None
        self.inc = 0
        self.started = False
        self.dirty = False
        self.down_until = 0
        self.role = Role.FOLLOWER
        self.term = 0
        self.pending: dict[int, tuple[int, bytes]] = {}  # index -> (term, data) proposed here
        self.reads: list[ReadState] = []  # confirmed reads waiting for the applied index
        self.incoming: dict[tuple[int, int], KVState] = {}  # snapshot data shipped here
        self.snap: KVState | None = None  # data of the store's snapshot
        self.saved: tuple[Any, KVState] | None = None  # (meta, data) awaiting compaction
        self.flushing: Flush | None = None  # the Ready whose write is in flight
        self.stall: tuple[int, int] | None = None  # (index, term): hold a write carrying it
        self.lead_commit = 0  # while leading: the commit index last observed
        self.held: list[Message] = []  # spare appends not sent yet (Ready.spare_messages)
        self.held_until = 0  # the tick at which the held ones leave
