"""The deterministic Raft simulator: a cluster of RawNodes on a seeded hostile network.

One seed fixes everything: the fault profile, the network's choices, every node's election
timer and the chaos schedule. A run has two phases:

1. chaos: ``chaos_ticks`` ticks of message loss, duplication, reordering, partitions, crashes
   (also in the middle of handling a Ready), restarts, proposals, ReadIndex requests,
   membership changes, leadership transfers, log compaction, slow flushes (a Ready whose
   write stays in flight for some ticks while the node steps messages, ticks and takes
   proposals, as the node loop steps while it flushes) and the deposed-write script
   (``actions.deposed_write``: a write held in flight while a newer leader replaces it);
2. liveness: the network heals and every node restarts; within ``liveness_ticks`` a leader
   must commit a barrier entry that every member then applies (so every acknowledged write is
   applied everywhere).

The harness plays the Ready contract literally (early messages, persist, messages, apply,
advance) and a crash may strike between any two of those steps; a crashed node loses every
thing not yet written to its MemoryLogStore (a slow flush in flight included), and its state
machine (``KVState``) keeps its atomically persisted applied index. ``checks.SafetyChecker``
checks the history after every step, every raise of a leader's commit index and every append
acknowledgement against the durable logs; the harness checks that ``advance()`` never changes
the log. The first violation ends the run with a trace of the last events.
"""

from __future__ import annotations

import random
import traceback
from typing import Any

from boltraft.raft.config import Config
from boltraft.raft.rawnode import RawNode
from boltraft.raft.types import (
    ConfState,
    Message,
    MessageType,
    NodeId,
    Ready,
    Role,
)

from . import actions
from .checks import SafetyChecker, Violation
from .model import KVState
from .network import TICK, LinkProfile, SimNetwork
from .state import Flush, Rates, SeedResult, SimNode, SimParams, SnapFlight
from .trace import Trace, fmt_entries


class Simulation:
    """One seeded run; ``run()`` returns its SeedResult and never raises."""

    def __init__(self, seed: int, params: SimParams | None = None) -> None:
        self.seed = seed
        self.params = p = params or SimParams()
        self.rng = rng = random.Random(f"boltraft-sim:{p.nodes}:{seed}")
        self.election_tick = rng.choice((5, 10))
        self.limits = rng.choice(
            (
                {},
                {"max_size_per_msg": 8, "max_inflight_msgs": 2},
                {"max_committed_size_per_ready": 16, "max_inflight_msgs": 4},
            )
        )
        self.rates = Rates.random(rng)
        # Slow flushes and the deposed-write script draw from a second generator: with
        # ``params.async_flush`` off it is never used, and the run is that of ``rng`` alone.
        self.rng2 = random.Random(f"boltraft-sim-flush:{p.nodes}:{seed}")
        if p.async_flush:
            self.rates.slow_flush = self.rng2.choice((0.0, 0.3, 0.7))
            self.rates.deposed_write = self.rng2.choice((0.0, 0.1))
        self.script: actions.DeposedWrite | None = None
        # Safety must hold without pre-vote and check-quorum too, and with lazy commit
        # notices; liveness is only promised with both on, so the liveness phase restarts
        # every node with the defaults.
        self.flags: dict[str, bool] = rng.choice(
            (
                {},
                {},
                {},
                {"pre_vote": False},
                {"check_quorum": False},
                {"pre_vote": False, "check_quorum": False},
                {"lazy_commit": True},
                {"lazy_commit": True, "check_quorum": False},
                {"spare_appends": True},
                {"lazy_commit": True, "spare_appends": True},
            )
        )
        self.net = SimNetwork(random.Random(rng.getrandbits(64)), LinkProfile.random(rng))
        self.checker = SafetyChecker()
        self.trace = Trace(p.trace_size)
        self.voters = [f"n{i}" for i in range(1, p.nodes + 1)]
        spares = [f"n{i}" for i in range(p.nodes + 1, p.nodes + 2)]
        self.nodes: dict[NodeId, SimNode] = {n: SimNode(n) for n in self.voters + spares}
        self.leaders: dict[NodeId, int] = {}  # node -> term, for nodes now leading
        self.snap_flight: dict[int, SnapFlight] = {}  # id(SNAP message) -> its shipment
        # connections seen to close, reported at the next tick: (node, its inc, peer)
        self.closed: list[tuple[NodeId, int, NodeId]] = []
        self.now = 0
        self.tick_no = 0
        self.steps = 0
        self.chaos = True
        self.partition_until = 0
        self.next_write = 1
        self.next_read = 1
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "crashes",
                "acks",
                "reads",
                "conf_changes",
                "transfers",
                "snapshots_sent",
                "flushes",
                "replaced_in_flight",
                "deposed_writes",
                "closed",
            ),
            0,
        )

    # --- the run ------------------------------------------------------------------------
    def run(self) -> SeedResult:
        """Returns the outcome of the whole run (chaos, then liveness)."""
        p = self.params
        try:
            conf = ConfState(
                voters=tuple(self.voters), addrs={n: f"sim://{n}" for n in self.voters}
            )
            for node in self.nodes.values():  # spares know the initial membership too
                node.store.bootstrap(conf)
                node.sm = KVState(conf)
            for nid in self.voters:
                self._start(self.nodes[nid])
            for _ in range(p.chaos_ticks):
                self._tick_round()
                self._chaos_actions()
            self._liveness()
        except Violation as v:
            return self._result(False, v.kind, str(v))
        except Exception:
            return self._result(False, "exception", traceback.format_exc(limit=8))
        return self._result(True)

    def _result(self, ok: bool, kind: str = "", error: str = "") -> SeedResult:
        stats: dict[str, Any] = dict(self.stats)
        stats.update(
            ticks=self.tick_no,
            steps=self.steps,
            sent=self.net.sent,
            dropped=self.net.dropped,
            leaders=len(self.checker.leaders),
            applied=self.checker.max_applied,
            reads_checked=self.checker.reads_checked,
            leader_commits=self.checker.leader_commits,
        )
        head = (
            f"seed {self.seed}, {self.params.nodes} nodes, election_tick {self.election_tick}, "
            f"limits {self.limits} flags {self.flags}\n  {self.rates}\n  {self.net.profile}\n"
        )
        return SeedResult(
            seed=self.seed,
            nodes=self.params.nodes,
            ok=ok,
            kind=kind,
            error=error,
            trace="" if ok else head + self.trace.render() + "\n" + self.describe(),
            stats=stats,
        )

    def describe(self) -> str:
        """Returns one line per node: up/down, role, term, commit, applied, log range."""
        lines = [f"network: {self.net.describe()}"]
        for n in self.nodes.values():
            if not n.started:
                continue
            st = n.store
            hs, _ = st.initial_state()
            state = "down" if n.raw is None else n.role.name
            if n.flushing is not None:
                state += "(flushing)"
            lines.append(
                f"{n.id}: {state} inc={n.inc} term={hs.term} vote={hs.vote!r} commit={hs.commit}"
                f" applied={n.sm.applied} log={st.first_index()}..{st.last_index()}"
                f" conf={','.join(n.sm.conf.voters)}/{','.join(n.sm.conf.learners)}"
            )
        return "\n".join(lines)

    # --- time ---------------------------------------------------------------------------
    def _tick_round(self) -> None:
        """Delivers every message due before the next tick, then ticks every running node."""
        self.tick_no += 1
        boundary = self.tick_no * TICK
        self._deliver_until(boundary)
        self.now = boundary
        self.trace.add(boundary, "tick", self.tick_no)
        self._report_closed()
        for n in self.nodes.values():
            flushing = n.flushing
            if flushing is not None and (
                not self.chaos or (not flushing.held and self.rng2.random() < 0.5)
            ):
                self._flushed(n)
        for n in self.nodes.values():
            if n.dirty and n.raw is not None:
                self._ready(n)
            self._release_held(n)
        for n in self.nodes.values():
            if n.raw is None and n.started and n.down_until <= self.tick_no:
                self._start(n)
        if self.partition_until and self.partition_until <= self.tick_no:
            self.partition_until = 0
            self.net.heal()
            self.trace.add(self.now, "heal", self.net.describe())
        order = [n for n in self.nodes.values() if n.raw is not None]
        self.rng.shuffle(order)
        for n in order:
            if n.raw is not None:
                n.raw.tick()
                self._after_step(n)

    def _deliver_until(self, boundary: int) -> None:
        net = self.net
        trace = self.trace
        nodes = self.nodes
        while (due := net.next_due()) is not None and due < boundary:
            _, m = net.pop()
            self.now = due
            dst = nodes.get(m.to)
            snap = self.snap_flight.pop(id(m), None) if m.type == MessageType.SNAP else None
            if dst is None or dst.raw is None or not net.connected(m.frm, m.to):
                trace.add(due, "undeliv", m)
                if snap is not None:
                    self._report_snapshot(snap, m.to, False)
                elif self.rng.random() < 0.2:
                    self._report_unreachable(m)
                continue
            if snap is not None and not snap.ok:
                trace.add(due, "snapfail", m)
                self._report_snapshot(snap, m.to, False)
                continue
            trace.add(due, "deliver", m)
            if snap is not None and m.snapshot is not None:  # the data is local now
                dst.incoming[(m.snapshot.index, m.snapshot.term)] = snap.data
            dst.raw.step(m)
            self._after_step(dst)
            if snap is not None:
                self._report_snapshot(snap, m.to, True)

    def _after_step(self, n: SimNode) -> None:
        """Runs the per-step checks on ``n`` and maybe handles its Ready at once."""
        self.steps += 1
        if self.steps > self.params.max_steps:
            raise Violation("runaway", f"more than {self.params.max_steps} steps (message storm?)")
        self._observe(n)
        if self.rng.random() < self.rates.ready_now:
            self._ready(n)
        else:
            n.dirty = True

    def _observe(self, n: SimNode) -> None:
        raw = n.raw
        assert raw is not None
        raw.check_invariants()
        # status() builds the whole progress map; after every step only these three matter,
        # so read them off the core directly (the fields status() itself reports).
        r = raw.raft
        role, term = r.role, r.term
        commit = r.log.committed
        self.checker.on_commit(n.id, commit, term)
        if role != n.role or term != n.term:
            self.trace.add(self.now, "role", n.id, f"{role.name} t{term} lead={r.lead!r}")
            n.role = role
            n.term = term
            if role == Role.LEADER:
                self.leaders[n.id] = term
                self.checker.on_leader(n.id, term)
                store = n.store
                self.checker.on_leader_log(
                    n.id, term, store.term, store.first_index(), store.last_index()
                )
                n.lead_commit = commit
            else:
                self.leaders.pop(n.id, None)
        if role == Role.LEADER and commit > n.lead_commit:
            # A leader's commit index moves only by counting replicas (maybe_commit).
            entry_term = r.log.term(commit)
            holders = [v for v in r.voters if self._durable(v, commit, entry_term)]
            self.checker.on_leader_commit(n.id, term, commit, entry_term, r.voters, holders)
            n.lead_commit = commit

    def _durable(self, nid: NodeId, index: int, term: int) -> bool:
        """Tells whether ``nid``'s store holds entry ``index`` of ``term``, or a snapshot past
        ``index`` (compacted entries were applied, hence committed)."""
        store = self.nodes[nid].store
        if index < store.first_index() - 1:
            return True
        return index <= store.last_index() and store.term(index) == term

    # --- the Ready contract -------------------------------------------------------------
    def _ready(self, n: SimNode) -> None:
        """Plays one Ready of ``n``: early messages, persist, messages, apply, advance; a
        crash may strike between any two steps. A slow flush leaves the rest of the Ready
        (from persist on) to a later tick, and ``n`` takes no other Ready until then; a Ready
        carrying the entry ``n.stall`` names stays in flight until the script releases it."""
        n.dirty = False
        raw = n.raw
        if raw is None:
            return
        if n.flushing is not None:
            n.dirty = True
            return
        if not raw.has_ready():
            return
        rd = raw.ready()
        crash_at = -1
        if self.chaos and self.rates.ready_crash and self.rng.random() < self.rates.ready_crash:
            crash_at = self.rng.randint(0, 4)
        if crash_at == 0:
            return self._crash(n, "with a Ready in hand")
        if rd.spare_messages:  # they leave within two ticks, or before a later message
            if not n.held:
                n.held_until = self.tick_no + self.rng.randint(0, 2)
            n.held += rd.spare_messages
        for m in rd.early_messages:
            self._send(n, m)
        if crash_at == 1:
            return self._crash(n, "after sending early messages, before persisting")
        held = n.stall is not None and any((e.index, e.term) == n.stall for e in rd.entries)
        if held or (
            self.chaos and self.rates.slow_flush and self.rng2.random() < self.rates.slow_flush
        ):
            n.flushing = Flush(rd, crash_at, held)
            self.stats["flushes"] += 1
            what = "held" if held else "flushing"
            self.trace.add(self.now, what, n.id, f"{fmt_entries(rd.entries)} hs={rd.hard_state}")
            return
        self._write_and_advance(n, rd, crash_at)

    def _flushed(self, n: SimNode) -> None:
        """Completes the slow flush of ``n``: the rest of its Ready, from persist on."""
        assert n.flushing is not None
        rd, crash_at, held = n.flushing
        n.flushing = None
        if held:
            n.stall = None
        self.trace.add(self.now, "flushed", n.id, fmt_entries(rd.entries))
        self._write_and_advance(n, rd, crash_at)

    def _write_and_advance(self, n: SimNode, rd: Ready, crash_at: int) -> None:
        """Plays a Ready from persist on: persist, messages, apply, advance; the crash point
        ``crash_at`` (2 to 4; -1: none) strikes between two of them."""
        raw = n.raw
        assert raw is not None
        self._persist(n, rd)
        if crash_at == 2:
            return self._crash(n, "after persisting, before sending messages")
        for m in rd.messages:
            self._send(n, m)
        if crash_at == 3:
            return self._crash(n, "after sending messages, before applying")
        self._apply(n, rd)
        if crash_at == 4:
            return self._crash(n, "after applying, before advance")
        log = raw.raft.log
        if not rd.entries:
            raw.advance(rd)
        else:
            # advance() records what is durable; it never changes what the log holds. (The
            # entries written may be out of date: a newer leader replaced them meanwhile.)
            before = [log.term_or_zero(e.index) for e in rd.entries]
            last = rd.entries[-1]
            if before[-1] not in (0, last.term):
                self.stats["replaced_in_flight"] += 1
                self.trace.add(self.now, "replaced", n.id, f"{last.index}@{last.term}")
            raw.advance(rd)
            after = [log.term_or_zero(e.index) for e in rd.entries]
            if after != before:
                raise Violation(
                    "advance changed the log",
                    f"{n.id} wrote {fmt_entries(rd.entries)}; terms there were {before} before "
                    f"advance(), {after} after",
                )
        self._observe(n)

    def _persist(self, n: SimNode, rd: Ready) -> None:
        store = n.store
        hs = rd.hard_state
        if rd.snapshot is not None:
            meta = rd.snapshot
            data = n.incoming.pop((meta.index, meta.term), None)
            if data is None:
                raise Violation("snapshot", f"{n.id} must install {meta} it was never sent")
            if data.conf != meta.conf_state:
                raise Violation("snapshot", f"{n.id}: {meta} conf differs from the data's")
            store.apply_snapshot(meta, None if rd.entries else hs)
            self.checker.on_snapshot(n.id, meta.index, meta.term, data.digest)
            n.sm = data.copy()
            n.snap = data
            n.saved = None
            self.trace.add(self.now, "install", n.id, f"snapshot {meta.index}@{meta.term}")
        if rd.entries:
            p = rd.entries[0].index - 1
            try:
                prev_term = store.term(p) if p > 0 else 0
            except Exception as exc:
                raise Violation(
                    "ready entries", f"{n.id} got entries from {p + 1}, its log: {exc!r}"
                ) from None
            store.append(rd.entries, hs)
            self.checker.on_append(n.id, prev_term, rd.entries)
        elif hs is not None and rd.snapshot is None:
            store.append((), hs)
        if hs is not None:
            self.checker.on_hard_state(n.id, hs, store.last_index())

    def _apply(self, n: SimNode, rd: Ready) -> None:
        ents = rd.committed_entries
        checker = self.checker
        if ents:
            top = checker.max_applied
            n.sm.apply(ents, rd.conf_state)
            checker.on_apply(n.id, ents, n.sm.digest)
            if n.pending:
                for e in ents:
                    mine = n.pending.pop(e.index, None)
                    if mine is not None and mine == (e.term, e.data):
                        checker.on_ack(e)
                        self.stats["acks"] += 1
            if checker.max_applied > top:
                for lid, term in self.leaders.items():
                    store = self.nodes[lid].store
                    checker.on_leader_log(
                        lid, term, store.term, store.first_index(), store.last_index(), top + 1
                    )
        elif rd.conf_state is not None:
            n.sm.conf = rd.conf_state
        if rd.conf_state is not None:
            cs = rd.conf_state
            self.trace.add(self.now, "conf", n.id, f"voters={cs.voters} learners={cs.learners}")
        for rs in rd.read_states:
            if checker.on_read_state(n.id, n.inc, rs.index, rs.context):
                n.reads.append(rs)
            else:
                self.trace.add(self.now, "read", n.id, f"{rs.context!r} unknown here: dropped")
        if n.reads:
            applied = n.sm.applied
            keep = []
            for rs in n.reads:
                if rs.index <= applied:
                    self.trace.add(self.now, "read", n.id, f"{rs.context!r} at {applied}")
                    self.stats["reads"] += 1
                else:
                    keep.append(rs)
            n.reads = keep

    def _send(self, n: SimNode, m: Message) -> None:
        """Sends ``m`` from ``n``, after the spare appends ``n`` holds for the same node."""
        if n.held and any(h.to == m.to for h in n.held):
            for h in [h for h in n.held if h.to == m.to]:
                self._send_now(n, h)
            n.held = [h for h in n.held if h.to != m.to]
        self._send_now(n, m)

    def _release_held(self, n: SimNode) -> None:
        """Sends the spare appends ``n`` holds once their tick has come."""
        if n.held and n.held_until <= self.tick_no and n.raw is not None:
            held, n.held = n.held, []
            for h in held:
                self._send_now(n, h)

    def _send_now(self, n: SimNode, m: Message) -> None:
        if m.frm != n.id:
            raise Violation("message", f"{n.id} sent a message from {m.frm!r}")
        if m.type == MessageType.SNAP:
            return self._ship_snapshot(n, m)
        if m.type == MessageType.APP_RESP and not m.reject:
            self._check_ack(n, m)
        if self.net.send(self.now, m) == "drop":
            self.trace.add(self.now, "lost", m)

    def _check_ack(self, n: SimNode, m: Message) -> None:
        """Checks that the append acknowledgement ``m``, which ``n`` sends in its current term
        to the leader of that term, names an entry ``n``'s durable log holds. (An ack made
        in an older term may name entries a newer leader replaced since; it cannot count
        toward a commit, and is not checked.)"""
        assert n.raw is not None
        if n.raw.raft.term != m.term:
            return
        ld = self.nodes.get(m.to)
        lr = ld.raw.raft if ld is not None and ld.raw is not None else None
        if lr is None or lr.role != Role.LEADER or lr.term != m.term:
            return
        entry_term = lr.log.term_or_zero(m.index)
        if entry_term:
            held = self._durable(n.id, m.index, entry_term)
            self.checker.on_ack_sent(n.id, m.to, m.term, m.index, entry_term, held)

    # --- snapshots over the side channel ------------------------------------------------
    def _ship_snapshot(self, n: SimNode, m: Message) -> None:
        meta = m.snapshot
        data = n.snap
        if meta is not None and data is not None and data.applied > meta.index:
            # Compacted again between the core's SNAP and this Ready: that snapshot is gone.
            # The transfer fails and the core retries with the newer one.
            self.trace.add(self.now, "snapgone", n.id, f"to={m.to} {meta.index}<{data.applied}")
            n.raw.report_snapshot(m.to, False)
            return
        if (
            meta is None
            or data is None
            or (data.applied, data.applied_term)
            != (
                meta.index,
                meta.term,
            )
        ):
            raise Violation("snapshot", f"{n.id} sent {meta} but its store holds another")
        ok = m.to in self.nodes and (not self.chaos or self.rng.random() < 0.9)
        self.stats["snapshots_sent"] += 1
        self.snap_flight[id(m)] = SnapFlight(n, n.inc, ok, data)
        self.net.push_at(self.now + 1, m)

    def _report_snapshot(self, snap: SnapFlight, to: NodeId, ok: bool) -> None:
        sender, inc, _, _ = snap
        if sender.raw is None or sender.inc != inc:
            return
        self.trace.add(self.now, "snapreport", sender.id, f"to={to} ok={ok}")
        sender.raw.report_snapshot(to, ok)
        self._after_step(sender)

    def _report_unreachable(self, m: Message) -> None:
        """Tells the sender its transport could not reach ``m.to`` (as a failed connect)."""
        sender = self.nodes.get(m.frm)
        if sender is None or sender.raw is None:
            return
        self.trace.add(self.now, "unreach", sender.id, f"to={m.to}")
        sender.raw.report_unreachable(m.to)
        self._after_step(sender)

    # --- closed connections -------------------------------------------------------------
    def close_connection(self, n: SimNode, peer: NodeId) -> None:
        """Makes ``n``'s runtime see its connection to ``peer`` close, at the next tick."""
        self.closed.append((n.id, n.inc, peer))

    def _report_closed(self) -> None:
        """Tells each node (still the same incarnation) of the connections it saw close, as
        a runtime's socket monitor would."""
        closed, self.closed = self.closed, []
        for nid, inc, peer in closed:
            n = self.nodes[nid]
            if n.raw is None or n.inc != inc:
                continue
            self.trace.add(self.now, "closed", nid, f"connection to {peer}")
            self.stats["closed"] += 1
            n.raw.report_disconnected(peer)
            self._after_step(n)

    # --- crashes and restarts -----------------------------------------------------------
    def _crash(self, n: SimNode, why: str) -> None:
        self.trace.add(self.now, "CRASH", n.id, why)
        self.stats["crashes"] += 1
        if self.chaos:  # most peers see the connection close (some only time out)
            for other in self.nodes.values():
                if other is not n and other.raw is not None and self.rng.random() < 0.8:
                    self.close_connection(other, n.id)
        n.raw = None
        n.dirty = False
        n.flushing = None  # the write in flight is lost
        n.held = []  # and so are the spare appends it held
        n.stall = None
        n.pending.clear()
        n.reads.clear()
        n.incoming.clear()
        n.role = Role.FOLLOWER
        n.term = 0
        self.leaders.pop(n.id, None)
        n.down_until = self.tick_no + self.rng.randint(1, 3 * self.election_tick)

    def _start(self, n: SimNode) -> None:
        """Starts (or restarts) ``n`` from its durable store and state machine."""
        n.inc += 1
        n.started = True
        cfg = Config(
            id=n.id,
            election_tick=self.election_tick,
            heartbeat_tick=1,
            applied=n.sm.applied,
            rng=random.Random(self.rng.getrandbits(64)),
            **self.limits,
            **(self.flags if self.chaos else {}),
        )
        n.raw = RawNode(cfg, n.store)
        self.checker.on_restart(n.id, n.sm.applied)
        self.trace.add(self.now, "start", n.id, f"inc={n.inc} applied={n.sm.applied}")
        self._observe(n)

    def _chaos_actions(self) -> None:
        actions.chaos_actions(self)

    def _liveness(self) -> None:
        actions.liveness(self)
