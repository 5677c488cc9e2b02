"""The faults ``chaos run`` injects, one at a time: each is injected, held for a while, and
healed, and the run waits for the cluster to recover before the next one.

- ``kill``: SIGKILL the leader (half the time) or a random node; healed by starting it again.
- ``pause``: SIGSTOP the leader or a random node; healed by SIGCONT.
- ``partition``: drop the traffic between the leader or a follower and every other node,
  both ways or one way (it hears nobody, or nobody hears it); with 5 nodes or more, sometimes
  a minority from the majority; healed by removing the rules.
- ``slow-disk``: restart a node whose log fsyncs sleep 20-100 ms more; healed by restarting
  it as it was.
- ``transfer``: move the leadership to another voter (``transfer_leader``).
- ``membership``: remove a follower, wipe its data, start it with ``serve --join``; healed
  once it is a voter again.

Most faults are held 1-4 s; one kill or partition in ten is held 8-15 s, long enough for the
node to fall behind a snapshot. Each fault becomes a ``FaultRecord``; ``injected`` is False
when the fault could not be put in place (a transfer or removal the cluster refused), and
such a fault is not counted.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from boltraft.chaos.cluster import ChaosCluster
from boltraft.chaos.net import Network
from boltraft.client import Client
from boltraft.errors import BoltraftError, RequestTimeoutError, UnavailableError

FAULTS = ("kill", "pause", "partition", "slow-disk", "transfer", "membership")
NEEDS_NAMESPACES = ("partition",)
REMOVE_EXIT_S = 30.0
REJOIN_S = 120.0


@dataclass
class FaultRecord:
    """One fault: ``type``, its ``target`` node and ``variant``; the times (monotonic ns)
    it was injected and healed; ``injected`` False when it could not be put in place
    (``error`` says why); ``leader`` whether the target led when it was hit."""

    type: str
    target: str = ""
    variant: str = ""
    leader: bool = False
    start: int = 0
    healed: int = 0
    injected: bool = False
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Nemesis:
    """Injects the faults of ``kinds`` into ``cluster`` (see the module docstring).

    ``sleep(seconds)`` holds a fault (the runner's interruptible pacing)."""

    def __init__(
        self,
        cluster: ChaosCluster,
        net: Network,
        rng: random.Random,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.cluster = cluster
        self.net = net
        self.rng = rng
        self.sleep = sleep
        self.removed: set[str] = set()  # removed and not yet a voter again
        self.stuck: set[str] = set()  # started with --join, not a voter yet

    # --- choosing ----------------------------------------------------------------------------
    def _hold(self, long_ok: bool = False) -> float:
        if long_ok and self.rng.random() < 0.1:
            return self.rng.uniform(8.0, 15.0)
        return self.rng.uniform(1.0, 4.0)

    def _target(self, rec: FaultRecord, leader_share: float = 0.5) -> str:
        lead = self.cluster.leader()
        live = [i for i in self.cluster.ids if self.cluster.running(i) and i not in self.removed]
        if lead is not None and self.rng.random() < leader_share:
            rec.leader = True
            return lead
        choice = self.rng.choice(live)
        rec.leader = choice == lead
        return choice

    def _client(self) -> Client:
        return Client(self.cluster.endpoints, timeout=20.0)

    # --- the faults --------------------------------------------------------------------------
    def run(self, kind: str) -> FaultRecord:
        """Injects one fault of ``kind``, holds it and heals it; returns its record."""
        rec = FaultRecord(kind)
        try:
            getattr(self, "_" + kind.replace("-", "_"))(rec)
        except BoltraftError as err:
            rec.error = f"{err.code}: {err.message}"
        finally:
            if not rec.healed:
                rec.healed = time.monotonic_ns()
        return rec

    def _kill(self, rec: FaultRecord) -> None:
        node = rec.target = self._target(rec)
        rec.variant = "leader" if rec.leader else "node"
        rec.start = time.monotonic_ns()
        self.cluster.kill(node)
        rec.injected = True
        self.sleep(self._hold(long_ok=True))
        self.cluster.start(node)
        rec.healed = time.monotonic_ns()

    def _pause(self, rec: FaultRecord) -> None:
        node = rec.target = self._target(rec)
        rec.variant = "leader" if rec.leader else "node"
        rec.start = time.monotonic_ns()
        self.cluster.pause(node)
        rec.injected = True
        try:
            self.sleep(self._hold())
        finally:
            self.cluster.resume(node)
            rec.healed = time.monotonic_ns()

    def _partition(self, rec: FaultRecord) -> None:
        ids = [i for i in self.cluster.ids if i not in self.removed]
        if len(ids) >= 5 and self.rng.random() < 0.25:
            minority = self.rng.sample(ids, (len(ids) - 1) // 2)
            majority = [i for i in ids if i not in minority]
            rec.target = ",".join(sorted(minority))
            rec.variant = "minority"
            rec.start = time.monotonic_ns()
            try:
                for node in minority:
                    self.net.isolate(node, majority, "both")
                rec.injected = True
                self.sleep(self._hold(long_ok=True))
            finally:
                self.net.heal()
                rec.healed = time.monotonic_ns()
            return
        node = rec.target = self._target(rec)
        direction = self.rng.choice(("both", "both", "in", "out"))
        rec.variant = f"{'leader' if rec.leader else 'node'}-{direction}"
        others = [i for i in ids if i != node]
        rec.start = time.monotonic_ns()
        try:
            self.net.isolate(node, others, direction)
            rec.injected = True
            self.sleep(self._hold(long_ok=True))
        finally:
            self.net.heal()
            rec.healed = time.monotonic_ns()

    def _slow_disk(self, rec: FaultRecord) -> None:
        node = rec.target = self._target(rec, leader_share=0.3)
        delay = round(self.rng.uniform(20.0, 100.0), 1)
        rec.variant = "leader" if rec.leader else "node"
        rec.extra["fsync_delay_ms"] = delay
        rec.start = time.monotonic_ns()
        self.cluster.stop(node)
        self.cluster.start(node, slow_ms=delay)
        rec.injected = True
        self.sleep(self._hold() + 2.0)
        self.cluster.stop(node)
        self.cluster.start(node)
        rec.healed = time.monotonic_ns()

    def _transfer(self, rec: FaultRecord) -> None:
        lead = self.cluster.leader()
        voters = [i for i in self.cluster.ids if i != lead and i not in self.removed]
        node = rec.target = self.rng.choice(voters)
        rec.variant = "to-node"
        rec.start = time.monotonic_ns()
        with self._client() as client:
            result = client.transfer_leader(node, timeout=10.0)
        rec.injected = True
        rec.extra["leader"] = result.get("leader")
        rec.healed = time.monotonic_ns()

    def _membership(self, rec: FaultRecord) -> None:
        lead = self.cluster.leader()
        if lead is None:
            rec.error = "no leader to remove a follower through"
            return
        followers = [i for i in self.cluster.ids if i != lead and i not in self.removed]
        node = rec.target = self.rng.choice(followers)
        rec.variant = "remove-rejoin"
        rec.start = time.monotonic_ns()
        self.cluster.expect_exit(node)
        with self._client() as client:
            try:
                client.remove(node, timeout=20.0)
            except BoltraftError:
                self.cluster.nodes[node].expected_exit = False
                raise
            self.removed.add(node)
            rec.injected = True
            self.rejoin(node, client)
        rec.healed = time.monotonic_ns()

    def rejoin(self, node: str, client: Client) -> None:
        """Wipes removed ``node`` and starts it with ``--join``; returns once it is a voter
        again. Raises RequestTimeoutError when it does not become one in time."""
        c = self.cluster
        deadline = time.monotonic() + REMOVE_EXIT_S
        while c.running(node) and node not in self.stuck and time.monotonic() < deadline:
            time.sleep(0.05)
        if c.running(node):  # it has not heard of its removal, or its last join is stuck
            c.kill(node)
        c.wipe(node)
        lead = c.leader()
        join_at = c.addr(lead) if lead is not None else c.endpoints[0]
        c.start(node, join=join_at)
        self.stuck.add(node)
        deadline = time.monotonic() + REJOIN_S
        while True:
            try:
                members = client.members(timeout=5.0)
                if node in members.get("voters", []):
                    self.removed.discard(node)
                    self.stuck.discard(node)
                    return
            except BoltraftError:
                pass
            if not c.running(node):
                raise UnavailableError(
                    f"{node} exited while joining again: {c.log_tail(node, 600)}"
                )
            if time.monotonic() >= deadline:
                raise RequestTimeoutError(f"{node} is not a voter again after {REJOIN_S:.0f} s")
            time.sleep(0.1)
