"""What clients and operators do to a simulated cluster: the chaos schedule (crashes,
partitions, proposals, ReadIndex requests, membership changes, transfers, compaction, the
deposed-write script) and the liveness phase that follows it."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from boltraft.errors import ClusterError, RaftError
from boltraft.raft.types import ConfChange, ConfChangeType, Role, SnapshotMeta

from .checks import Violation
from .model import write_command
from .network import LinkProfile

if TYPE_CHECKING:
    from .harness import Simulation
    from .state import SimNode

REFUSALS = (RaftError, ClusterError)  # a core may refuse a request; the client retries


def leader(sim: Simulation) -> SimNode | None:
    """Returns the running node that leads the highest term, or None."""
    best = None
    for nid, term in sim.leaders.items():
        if best is None or term > sim.leaders[best]:
            best = nid
    return sim.nodes[best] if best is not None else None


def running(sim: Simulation) -> list[SimNode]:
    """Returns the nodes that are up, in id order."""
    return [n for n in sim.nodes.values() if n.raw is not None]


def chaos_actions(sim: Simulation) -> None:
    """Rolls each chaos action once for this tick."""
    r = sim.rates
    rng = sim.rng
    if r.crash and rng.random() < r.crash:
        up = running(sim)
        ld = leader(sim)
        if ld is not None and rng.random() < 0.5:  # leader crashes make the hard cases
            sim._crash(ld, "leader struck between steps")
        elif up:
            sim._crash(rng.choice(up), "struck between steps")
    if r.partition and not sim.partition_until and rng.random() < r.partition:
        ids = [n.id for n in sim.nodes.values() if n.started]
        sim.net.random_partition(ids)
        sim.partition_until = sim.tick_no + rng.randint(1, 4 * sim.election_tick)
        sim.trace.add(sim.now, "partition", sim.net.describe())
        if rng.random() < 0.5:  # the cut drops the connections across it
            for n in running(sim):
                lead = n.raw.raft.lead if n.raw is not None else ""
                if lead and not sim.net.connected(lead, n.id):
                    sim.close_connection(n, lead)
    if r.disconnect and rng.random() < r.disconnect:
        disconnect(sim)
    if rng.random() < r.propose:
        propose(sim)
    if r.read and rng.random() < r.read:
        read(sim)
    if r.conf and rng.random() < r.conf:
        conf_change(sim)
    if r.transfer and rng.random() < r.transfer:
        transfer(sim)
    if r.transfer and rng.random() < r.transfer / 2:
        campaign(sim)
    if r.compact and rng.random() < r.compact:
        compact(sim)
    if r.deposed_write:
        deposed_write(sim)


def propose(sim: Simulation) -> None:
    """Proposes 1-5 writes, usually on the leader, sometimes on any node (which may refuse)."""
    rng = sim.rng
    n = leader(sim)
    if n is None or rng.random() < 0.15:
        up = running(sim)
        if not up:
            return
        n = rng.choice(up)
    assert n.raw is not None
    k = rng.choice((1, 1, 1, 2, 5))
    datas = [write_command(sim.next_write + i) for i in range(k)]
    sim.next_write += k
    try:
        term, last = n.raw.propose(datas)
    except REFUSALS as exc:
        sim.trace.add(sim.now, "propose", n.id, f"{k} writes refused: {exc.code}")
        return
    for i, d in enumerate(datas):
        n.pending[last - k + 1 + i] = (term, d)
    sim.trace.add(sim.now, "propose", n.id, f"{datas[0]!r}..x{k} -> {last - k + 1}..{last}@{term}")
    sim._after_step(n)


def read(sim: Simulation) -> None:
    """Issues a ReadIndex request on a random running node."""
    up = running(sim)
    if not up:
        return
    n = sim.rng.choice(up)
    assert n.raw is not None
    ctx = b"r%d" % sim.next_read
    sim.next_read += 1
    sim.checker.on_read_issued(n.id, n.inc, ctx)
    try:
        n.raw.read_index(ctx)
    except REFUSALS as exc:
        sim.trace.add(sim.now, "readidx", n.id, f"{ctx!r} refused: {exc.code}")
        return
    sim.trace.add(
        sim.now, "readidx", n.id, f"{ctx!r} (applied anywhere: {sim.checker.max_applied})"
    )
    sim._after_step(n)


def conf_change(sim: Simulation) -> None:
    """Proposes one single-server membership change on the leader: add a learner or voter,
    promote a learner, demote or remove a member (never below a majority of the initial
    size), or re-add a removed node (which keeps its old state)."""
    ld = leader(sim)
    if ld is None:
        return
    assert ld.raw is not None
    rng = sim.rng
    cs = ld.raw.status().conf_state
    others = [nid for nid in sim.nodes if nid not in cs.voters and nid not in cs.learners]
    options: list[tuple[int, str]] = []
    for nid in others:
        options += [(ConfChangeType.ADD_LEARNER, nid), (ConfChangeType.ADD_VOTER, nid)]
    for nid in cs.learners:
        options += [(ConfChangeType.ADD_VOTER, nid), (ConfChangeType.REMOVE_NODE, nid)]
    if len(cs.voters) > sim.params.nodes // 2 + 1:
        for nid in cs.voters:
            options += [(ConfChangeType.REMOVE_NODE, nid), (ConfChangeType.ADD_LEARNER, nid)]
    if not options:
        return
    typ, nid = rng.choice(options)
    target = sim.nodes[nid]
    if not target.started:
        sim._start(target)
    cc = ConfChange(typ, nid, f"sim://{nid}")
    try:
        term, index = ld.raw.propose_conf_change(cc)
    except REFUSALS as exc:
        sim.trace.add(sim.now, "confprop", ld.id, f"{typ.name} {nid} refused: {exc.code}")
        return
    sim.stats["conf_changes"] += 1
    sim.trace.add(sim.now, "confprop", ld.id, f"{typ.name} {nid} at {index}@{term}")
    sim._after_step(ld)


def transfer(sim: Simulation) -> None:
    """Asks the leader to hand leadership to another voter."""
    ld = leader(sim)
    if ld is None:
        return
    assert ld.raw is not None
    voters = [v for v in ld.raw.status().conf_state.voters if v != ld.id]
    if not voters:
        return
    target = sim.rng.choice(voters)
    try:
        ld.raw.transfer_leader(target)
    except REFUSALS as exc:
        sim.trace.add(sim.now, "transfer", ld.id, f"to {target} refused: {exc.code}")
        return
    sim.stats["transfers"] += 1
    sim.trace.add(sim.now, "transfer", ld.id, f"to {target}")
    sim._after_step(ld)


def disconnect(sim: Simulation) -> None:
    """Makes a random follower see its connection to its leader close while the leader
    lives on (a dropped connection, not a crash)."""
    followers = [n for n in running(sim) if n.raw is not None and n.raw.raft.lead not in ("", n.id)]
    if followers:
        n = sim.rng.choice(followers)
        assert n.raw is not None
        sim.close_connection(n, n.raw.raft.lead)


def campaign(sim: Simulation) -> None:
    """Makes a random running node start an election now (as an operator's "campaign")."""
    up = running(sim)
    if not up:
        return
    n = sim.rng.choice(up)
    assert n.raw is not None
    n.raw.campaign()
    sim.trace.add(sim.now, "campaign", n.id)
    sim._after_step(n)


def compact(sim: Simulation) -> None:
    """Compacts a running node's log in two phases, which leaves a trailing window: the
    snapshot saved by the previous call (at that call's applied index) becomes the log's
    snapshot now, and the current state is saved for the next call."""
    up = running(sim)
    if not up:
        return
    n = sim.rng.choice(up)
    store = n.store
    snap_index = store.first_index() - 1
    if n.saved is not None:
        meta, data = n.saved
        if snap_index < meta.index <= store.last_index():
            if store.term(meta.index) != meta.term:
                raise Violation("compaction", f"{n.id} log has another term at {meta.index}")
            store.compact(meta)
            n.snap = data
            snap_index = meta.index
            sim.trace.add(
                sim.now, "compact", n.id, f"log now starts after {meta.index}@{meta.term}"
            )
        n.saved = None
    sm = n.sm
    if sm.applied > snap_index:
        meta = SnapshotMeta(index=sm.applied, term=sm.applied_term, conf_state=sm.conf)
        n.saved = (meta, sm.copy())


class DeposedWrite(NamedTuple):
    """The deposed-write script under way: ``node``'s disk holds the write of the entry
    ``index``@``term`` (its incarnation ``inc``) until a newer leader replaced that entry in
    its log, or until tick ``until``."""

    node: SimNode
    inc: int
    index: int
    term: int
    until: int


def deposed_write(sim: Simulation) -> None:
    """Drives the deposed-write script, or starts it (rate ``deposed_write``, in the first
    half of the chaos phase).

    The leader's new entry reaches one follower only, whose disk then holds the write; the
    leader crashes before its own write lands, so the entry is gone everywhere else, and
    the others elect a leader whose entries take its index. Only then does the follower's
    write land: the entries it carries are out of date, and the ones that replaced them in
    the follower's log are not written yet."""
    run = sim.script
    if run is not None:
        _drive_deposed_write(sim, run)
        return
    if sim.tick_no > sim.params.chaos_ticks // 2 or sim.rng2.random() >= sim.rates.deposed_write:
        return
    ld = leader(sim)
    if ld is None or ld.raw is None:
        return
    voters = ld.raw.status().conf_state.voters
    followers = [sim.nodes[v] for v in voters if v != ld.id and sim.nodes[v].raw is not None]
    if not followers:
        return
    f = sim.rng2.choice(followers)
    for n in (ld, f):
        if n.flushing is not None:
            sim._flushed(n)  # their disks catch up first
    if ld.raw is None or ld.raw.raft.role != Role.LEADER or f.raw is None:
        return
    data = write_command(sim.next_write)
    sim.next_write += 1
    try:
        term, index = ld.raw.propose([data])
    except REFUSALS:
        return
    ld.stall = f.stall = (index, term)
    sim.trace.add(sim.now, "script", ld.id, f"deposed write {index}@{term}, to {f.id} only")
    sim._observe(ld)
    sim._ready(ld)  # its appends leave; its own write is held
    sim.net.discard(lambda m: m.frm == ld.id and m.to != f.id)
    if ld.raw is not None:
        sim._crash(ld, "deposed-write script: before its own write landed")
    sim.script = DeposedWrite(f, f.inc, index, term, sim.tick_no + 20 * sim.election_tick)


def _drive_deposed_write(sim: Simulation, run: DeposedWrite) -> None:
    f = run.node
    if f.raw is None or f.inc != run.inc:
        sim.script = None  # it crashed: the held write is lost
        return
    held = f.flushing is not None and f.flushing.held
    there = f.raw.raft.log.term_or_zero(run.index)
    replaced = held and there not in (0, run.term)
    if not replaced and sim.tick_no < run.until:
        return
    sim.script = None
    f.stall = None
    if held:
        sim.stats["deposed_writes"] += replaced
        sim.trace.add(sim.now, "script", f.id, f"write lands; {run.index} now has term {there}")
        sim._flushed(f)


def liveness(sim: Simulation) -> None:
    """Heals the network, restarts every down node (every node, when the seed ran without
    pre-vote or check-quorum) and requires, within the bound, a leader that is a voter of its
    own configuration and whose barrier entry every member applies. Raises Violation
    otherwise."""
    sim.chaos = False
    sim.script = None  # a write it holds lands at the next tick
    sim.net.heal()
    sim.partition_until = 0
    sim.net.profile = LinkProfile.healed()
    sim.trace.add(sim.now, "HEAL", "network healed, all nodes restart")
    for n in sim.nodes.values():
        if n.raw is not None and sim.flags:
            sim._crash(n, "restart with pre-vote and check-quorum on")
        if n.started and n.raw is None:
            sim._start(n)
    # a member added late replicates the whole log, which grows with the chaos phase (no
    # compaction, 2 entries a message at the smallest limits): longer chaos, longer bound
    bound = sim.params.liveness_ticks or max(40 * sim.election_tick, sim.params.chaos_ticks)
    barrier: tuple[str, int, int, int, bytes] | None = None  # node, inc, term, index, data
    for _ in range(bound):
        sim._tick_round()
        ld = leader(sim)
        if ld is None or ld.raw is None:
            continue
        if barrier is None or barrier[:3] != (ld.id, ld.inc, sim.leaders[ld.id]):
            data = b"barrier%d" % sim.tick_no
            try:
                term, index = ld.raw.propose([data])
            except REFUSALS:
                continue
            barrier = (ld.id, ld.inc, term, index, data)
            sim.trace.add(sim.now, "barrier", ld.id, f"at {index}@{term}")
            sim._after_step(ld)
        index, data = barrier[3], barrier[4]
        entry = sim.checker.committed.get(index)
        if entry is None:
            continue
        if entry.data != data:
            barrier = None
            continue
        cs = ld.raw.status().conf_state
        if ld.id not in cs.voters:
            continue  # a removed leader must step down; wait for a real one
        members = cs.members()
        applied = {m: sim.nodes[m].sm.applied for m in members}
        if all(sim.nodes[m].raw is not None and a >= index for m, a in applied.items()):
            sim.checker.check_acked_applied(applied)
            sim.trace.add(sim.now, "LIVE", f"barrier {index} applied by {','.join(members)}")
            return
    roles = ", ".join(f"{n.id}={n.role.name}@{n.term}" for n in running(sim))
    raise Violation(
        "liveness",
        f"no barrier applied by every member within {bound} ticks after healing ({roles}; "
        f"barrier {barrier}; leaders {sim.leaders})",
    )
