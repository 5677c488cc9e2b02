"""``chaos run``: a cluster of real ``boltraft serve`` processes, a workload recorded as a
history, faults injected one at a time, and at the end a verdict (docs/chaos.md).

``run(RunOptions(...))`` returns the report (a dict, the keys below). The steps:

1. make the network (``boltraft.chaos.net``: namespaces when ``partition`` is among the faults
   and the machine allows it, else loopback; the faults that cannot run are ``skipped``, with
   why) and start ``nodes`` nodes; wait for a leader; create the bucket;
2. start the workload (``boltraft.chaos.workload``) writing ``history.jsonl``;
3. until ``duration`` seconds have passed: wait 0.5-2 s, inject one fault, hold and heal it
   (``boltraft.chaos.faults``), restart any node that exited on its own (an unexpected exit,
   reported) or that a membership fault left out, and wait for the cluster to recover
   (every node running, a leader, every node applied up to what was committed; at most
   ``RECOVER_S``);
4. heal everything, wait for recovery, stop the workload, read every key once more (recorded
   too), and compare the replicas' hashes (``Client.cluster_hash``) until they agree at one
   applied index (at most ``CONVERGE_S``);
5. check the history (``boltraft.chaos.check``), count the acknowledged writes lost and the
   failover times.

Report keys: ``faults`` (by type, the faults injected), ``faults_total``, ``ops_ok``,
``ops_fail``, ``ops_info``, ``linearizable`` (true, false, or null: undecided),
``replica_hashes_equal``, ``acked_writes_lost``, ``failover_ms`` (``p50``, ``max``,
``samples``: leader SIGKILL to the acknowledgement of the first write invoked after it;
``failover_ms_samples``: each one), ``unexpected_exits`` (nodes that
exited on their own: node, status, the end of its log), ``recovery_timeouts``, ``skipped``
(fault -> why), ``network``, ``errors`` (error code -> calls that ended with it unknown),
``nodes``, ``clients``, ``keys``, ``seed``, ``duration_s``, ``elapsed_s``, ``out`` (where
the files are, or null once removed), ``valid``.

``valid`` is true when the history is linearizable, the hashes are equal, no acknowledged
write is lost and no node exited on its own.

Everything the run creates (processes, namespaces, links, rules) is removed when it ends,
also on an exception or Ctrl-C; SIGTERM and SIGHUP are turned into KeyboardInterrupt while
it runs (in the main thread).
"""

from __future__ import annotations

import bisect
import json
import random
import shutil
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from boltraft.chaos.check import check
from boltraft.chaos.cluster import ChaosCluster
from boltraft.chaos.faults import FAULTS, NEEDS_NAMESPACES, FaultRecord, Nemesis
from boltraft.chaos.history import HistoryWriter, Operation, read_history
from boltraft.chaos.net import Network, make_network, namespaces_unsupported
from boltraft.chaos.workload import BUCKET, Workload, decode
from boltraft.client import Client
from boltraft.errors import BadRequestError, BoltraftError, LocalFileError, RequestTimeoutError
from boltraft.server.probe import request as probe_request

START_S = 60.0  # the cluster's first leader
RECOVER_S = 60.0  # after each fault
CONVERGE_S = 120.0  # the end: a leader, caught-up nodes, equal hashes
CHECK_S = 300.0  # the checker's budget
OP_TIMEOUT_S = 5.0  # a workload call's limit (the client's default)
GAP_S = (0.5, 2.0)  # between faults
NODE_CONFIG = {  # snapshots often, so that nodes that fall behind install them
    "snapshot_entries": 1000,
    "snapshot_keep_entries": 200,
}


@dataclass
class RunOptions:
    """What ``run`` does: see ``boltraft chaos run --help``. ``faults`` None: all the
    machine supports."""

    nodes: int = 3
    faults: Sequence[str] | None = None
    duration: float = 60.0
    clients: int = 5
    keys: int = 5
    seed: int | None = None
    out: Path | None = None


def parse_faults(spec: str | None) -> list[str] | None:
    """The fault list of a ``--faults`` value (comma-separated; None: all); raises
    BadRequestError naming an unknown fault."""
    if spec is None:
        return None
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in FAULTS]
    if unknown or not names:
        raise BadRequestError(
            f"unknown fault {', '.join(unknown) or '(none given)'}: choose from {','.join(FAULTS)}"
        )
    return list(dict.fromkeys(names))


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-quantile (0..1) of ``values`` (nearest rank), None when empty."""
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def failover_ms(leader_kills: Sequence[int], ops: Sequence[Operation]) -> list[float]:
    """For each leader SIGKILL time (ns), the milliseconds to the acknowledgement of the first
    write (ok write or cas of any key) invoked after it; kills with none are left out. (A
    write invoked before the kill may have been committed by the old leader, its answer on
    its way: it would say nothing about the new one.)"""
    acked = sorted(
        (op.invoke, op.complete)
        for op in ops
        if op.f in ("write", "cas") and op.type == "ok" and op.complete is not None
    )
    invokes = [a[0] for a in acked]
    first_ack = [0] * len(acked)  # first_ack[i]: the earliest completion among acked[i:]
    soonest = None
    for i in range(len(acked) - 1, -1, -1):
        c = acked[i][1]
        soonest = c if soonest is None or c < soonest else soonest
        first_ack[i] = soonest
    out = []
    for t in sorted(leader_kills):
        i = bisect.bisect_right(invokes, t)
        if i < len(acked):
            out.append(round((first_ack[i] - t) / 1e6, 1))
    return out


def acked_writes_lost(ops: Sequence[Operation], final: dict[str, int | None]) -> int:
    """The acknowledged writes (ok write or cas) neither visible at the end (``final``: each
    key's last value) nor possibly overwritten: a write counts when every other write or
    cas of its key that may have taken effect (ok, or unknown) completed before it was
    invoked, and the key's final value is not the value it wrote."""
    inf = float("inf")
    by_key: dict[str, list[Operation]] = {}
    for op in ops:
        if op.f in ("write", "cas") and op.type in ("ok", "info") and op.key in final:
            by_key.setdefault(op.key, []).append(op)
    lost = 0
    for key, writes in by_key.items():
        ends = [inf if (w.type != "ok" or w.complete is None) else w.complete for w in writes]
        order = sorted(range(len(writes)), key=lambda i: ends[i], reverse=True)
        top = order[0]
        second = ends[order[1]] if len(order) > 1 else -inf
        for i, w in enumerate(writes):
            if w.type != "ok":
                continue
            others_end = second if i == top else ends[top]
            if w.invoke > others_end:  # nothing could come after it
                value = w.value[1] if w.f == "cas" else w.value
                if final[key] != value:
                    lost += 1
    return lost


class _Interrupt:
    """Turns SIGTERM and SIGHUP into KeyboardInterrupt while active (main thread only)."""

    SIGNALS = (signal.SIGTERM, signal.SIGHUP)

    @staticmethod
    def _raise(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    @classmethod
    @contextmanager
    def active(cls) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, cls._raise) for s in cls.SIGNALS}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    @classmethod
    @contextmanager
    def shielded(cls) -> Iterator[None]:
        """Ignores Ctrl-C, SIGTERM and SIGHUP for the block (the cleanup runs to its end)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        signals = (signal.SIGINT, *cls.SIGNALS)
        previous = {s: signal.signal(s, signal.SIG_IGN) for s in signals}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


class Runner:
    """One run (``run`` below); its parts are public for the tests."""

    def __init__(self, opts: RunOptions) -> None:
        if not 1 <= opts.nodes <= 9:
            raise BadRequestError(f"--nodes must be 1..9, not {opts.nodes}")
        if opts.clients < 1 or opts.keys < 1:
            raise BadRequestError("--clients and --keys must be at least 1")
        if not opts.duration > 0:
            raise BadRequestError("--duration must be > 0")
        self.opts = opts
        self.seed = opts.seed if opts.seed is not None else random.randrange(1 << 31)
        self.rng = random.Random(self.seed)
        self.ids = [f"n{i + 1}" for i in range(opts.nodes)]
        wanted = list(FAULTS if opts.faults is None else opts.faults)
        self.skipped: dict[str, str] = {}
        if any(f in NEEDS_NAMESPACES for f in wanted):
            why = namespaces_unsupported()
            if why:
                for f in NEEDS_NAMESPACES:
                    if f in wanted:
                        self.skipped[f] = why
        if opts.nodes < 3:
            for f in ("kill", "pause", "partition", "slow-disk", "membership"):
                if f in wanted and f not in self.skipped:
                    self.skipped[f] = "needs at least 3 nodes (a majority must survive)"
            if opts.nodes < 2 and "transfer" in wanted:
                self.skipped["transfer"] = "needs at least 2 nodes"
        self.kinds = [f for f in wanted if f not in self.skipped]
        self.records: list[FaultRecord] = []
        self.exits: list[dict[str, Any]] = []
        self.recovery_timeouts = 0
        self.diagnostics = 0
        self._owned_dir = opts.out is None
        self.dir = Path(opts.out or "")  # made by run()
        self.net: Network | None = None
        self.cluster: ChaosCluster | None = None
        self.workload: Workload | None = None
        self.history: HistoryWriter | None = None

    # --- the run -----------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        t0 = time.monotonic()
        if self.opts.out is None:
            self.dir = Path(tempfile.mkdtemp(prefix="boltraft-chaos-"))
        else:
            if self.dir.exists() and (not self.dir.is_dir() or any(self.dir.iterdir())):
                raise LocalFileError(
                    f"--out {self.dir}: not an empty directory (a run needs a fresh one)",
                    path=str(self.dir),
                )
            self.dir.mkdir(parents=True, exist_ok=True)
        report: dict[str, Any] | None = None
        interrupted = False
        try:
            with _Interrupt.active():
                report = self._run(t0)
            return report
        except KeyboardInterrupt:
            interrupted = True
            raise
        except BoltraftError as err:
            err.message = f"{err.message} (the run's files: {self.dir})"
            err.details["out"] = str(self.dir)
            raise
        finally:
            failed = (report is None and not interrupted) or (
                report is not None and not report["valid"]
            )
            with _Interrupt.shielded():
                self.close(keep_data=failed)
            if report is not None:
                report["out"] = str(self.dir) if self.dir.exists() else None

    def _run(self, t0: float) -> dict[str, Any]:
        want_ns = any(f in NEEDS_NAMESPACES for f in self.kinds)
        self.net, _ = make_network(self.ids, want_ns)
        nodes_dir = self.dir / "nodes"
        nodes_dir.mkdir(exist_ok=True)
        self.cluster = cluster = ChaosCluster(nodes_dir, self.ids, self.net, NODE_CONFIG)
        for nid in self.ids:
            cluster.start(nid)
        cluster.wait_leader(START_S)
        self._create_bucket()
        self.history = HistoryWriter(self.dir / "history.jsonl")
        self.workload = Workload(
            cluster.endpoints,
            self.history,
            clients=self.opts.clients,
            keys=self.opts.keys,
            seed=self.rng.getrandbits(64),
            timeout=OP_TIMEOUT_S,
        )
        self.workload.start()
        nemesis = Nemesis(cluster, self.net, self.rng)
        end = time.monotonic() + self.opts.duration
        with open(self.dir / "faults.jsonl", "w") as flog:
            while time.monotonic() < end:
                time.sleep(min(self.rng.uniform(*GAP_S), max(0.0, end - time.monotonic())))
                if not self.kinds or time.monotonic() >= end:
                    continue
                rec = nemesis.run(self.rng.choice(self.kinds))
                self.records.append(rec)
                flog.write(json.dumps(rec.to_json()) + "\n")
                flog.flush()
                if rec.error:
                    self.diagnose(f"{rec.type} {rec.target}: {rec.error}")
                self.recover(nemesis)
            self.heal(nemesis)
        self.workload.stop(OP_TIMEOUT_S * 3)
        final = self.final_reads()
        hashes = self.hashes()
        self._reap()
        self.history.close()
        ops = read_history(self.dir / "history.jsonl")
        result = check(ops, timeout=CHECK_S)
        (self.dir / "check.json").write_text(json.dumps(result.to_json(), sort_keys=True))
        return self.report(t0, ops, result.linearizable, hashes, final)

    def _create_bucket(self) -> None:
        assert self.cluster is not None
        with Client(self.cluster.endpoints, timeout=START_S) as client:
            client.create_bucket(BUCKET, if_not_exists=True)

    def _reap(self) -> None:
        assert self.cluster is not None
        for ex in self.cluster.reap():
            self.exits.append(ex)
            (self.dir / f"exit-{ex['node']}-{len(self.exits)}.log").write_text(ex["log_tail"])

    def recover(self, nemesis: Nemesis, timeout: float = RECOVER_S) -> bool:
        """Returns True once every node runs, one leader leads every member and each node
        applied what was committed when this began; False after ``timeout`` (counted).
        Nodes that exited on their own are recorded and started again."""
        c = self.cluster
        assert c is not None
        deadline = time.monotonic() + timeout
        self._rejoin_removed(nemesis)
        target: int | None = None
        while True:
            self._reap()
            for nid in c.ids:
                if not c.running(nid) and nid not in nemesis.removed:
                    c.start(nid)
            sts = c.statuses()
            lead = c.leader(sts)
            if lead is not None:
                lst = sts[lead]
                assert lst is not None
                if target is None:
                    target = int(lst["commit"])
                voters = set(lst["members"]["voters"])
                members = voters | set(lst["members"].get("learners", []))
                want = set(c.ids) - nemesis.removed
                if (
                    members == want
                    and voters == want
                    and all(
                        sts.get(i) and sts[i]["lead"] == lead and sts[i]["applied"] >= target  # type: ignore[index]
                        for i in want
                    )
                ):
                    return True
            if time.monotonic() >= deadline:
                self.recovery_timeouts += 1
                self.diagnose(f"no recovery within {timeout:.0f} s")
                return False
            time.sleep(0.05)

    def diagnose(self, why: str) -> None:
        """Writes ``diag-<n>.json``: ``why``, and every running node's status and membership
        (a leader's with each member's progress), for a fault that failed or a recovery
        that did not come."""
        c = self.cluster
        assert c is not None
        nodes: dict[str, Any] = {}
        for nid in c.ids:
            if not c.running(nid) or c.nodes[nid].paused:
                nodes[nid] = "paused" if c.running(nid) else "not running"
                continue
            entry: dict[str, Any] = {}
            for op in ("status", "members"):
                try:
                    entry[op] = probe_request(c.addr(nid), {"op": op}, timeout=2.0)
                except BoltraftError as err:
                    entry[op] = err.to_wire()
            nodes[nid] = entry
        self.diagnostics += 1
        path = self.dir / f"diag-{self.diagnostics}.json"
        path.write_text(json.dumps({"why": why, "nodes": nodes}, default=repr, sort_keys=True))

    def _rejoin_removed(self, nemesis: Nemesis) -> None:
        """Starts again, with --join and wiped data, each node a membership fault removed
        and did not get back (its error is the fault's)."""
        c = self.cluster
        assert c is not None
        for nid in sorted(nemesis.removed):
            try:
                with Client(c.endpoints, timeout=20.0) as client:
                    nemesis.rejoin(nid, client)
            except BoltraftError as err:
                self.diagnose(f"rejoining {nid} again: {err.code}: {err.message}")

    def heal(self, nemesis: Nemesis) -> None:
        """Heals whatever a fault left: partitions, paused nodes, slow disks, a node removed
        and not back; then waits for recovery."""
        c = self.cluster
        assert c is not None and self.net is not None
        self.net.heal()
        for nid in c.ids:
            c.resume(nid)
            if c.nodes[nid].slow_ms is not None and c.running(nid):
                c.stop(nid)
                c.start(nid)
        self.recover(nemesis, CONVERGE_S)

    def final_reads(self) -> dict[str, int | None]:
        """Each key's value, read (linearizable) and recorded once the faults are over."""
        assert self.cluster is not None and self.workload is not None
        assert self.history is not None
        final: dict[str, int | None] = {}
        deadline = time.monotonic() + CONVERGE_S
        for key in self.workload.keys:
            while True:
                process = self.workload.next_process()
                self.history.invoke(process, "read", key)
                try:
                    with Client(self.cluster.endpoints, timeout=OP_TIMEOUT_S) as client:
                        value = decode(client.get(BUCKET, key))
                except BoltraftError as err:
                    self.history.info(process)
                    if time.monotonic() >= deadline:
                        raise RequestTimeoutError(
                            f"the final read of {key} did not succeed: {err.message}"
                        )
                    continue
                self.history.ok(process, value)
                final[key] = value
                break
        return final

    def hashes(self) -> dict[str, Any]:
        """The replicas' hashes once they agree at one applied index, or the last answer
        after ``CONVERGE_S``."""
        assert self.cluster is not None
        deadline = time.monotonic() + CONVERGE_S
        result: dict[str, Any] = {}
        with Client(self.cluster.endpoints, timeout=10.0) as client:
            while True:
                try:
                    result = client.cluster_hash(settle=10.0)
                except BoltraftError as err:
                    result = {"agree": False, "error": err.to_wire()}
                members = set(result.get("members", {}))
                if result.get("agree") and members == set(self.cluster.ids):
                    return result
                if result.get("same_applied") or time.monotonic() >= deadline:
                    return result
                time.sleep(0.2)

    def report(
        self,
        t0: float,
        ops: list[Operation],
        linearizable: bool | None,
        hashes: dict[str, Any],
        final: dict[str, int | None],
    ) -> dict[str, Any]:
        assert self.workload is not None and self.net is not None
        tally = self.workload.tally
        injected = [r for r in self.records if r.injected]
        faults = Counter(r.type for r in injected)
        kills = [r.start for r in injected if r.type == "kill" and r.leader]
        fo = failover_ms(kills, ops)
        members = set(hashes.get("members", {}))
        equal = bool(hashes.get("agree")) and members == set(self.ids)
        lost = acked_writes_lost(ops, final)
        types = Counter(op.type for op in ops)
        report: dict[str, Any] = {
            "faults": {f: faults.get(f, 0) for f in self.kinds},
            "faults_total": len(injected),
            "faults_not_injected": len(self.records) - len(injected),
            "ops_ok": types.get("ok", 0),
            "ops_fail": types.get("fail", 0),
            "ops_info": types.get("info", 0),
            "linearizable": linearizable,
            "replica_hashes_equal": equal,
            "acked_writes_lost": lost,
            "failover_ms": {
                "p50": percentile(fo, 0.5),
                "max": max(fo) if fo else None,
                "samples": len(fo),
            },
            "failover_ms_samples": fo,
            "unexpected_exits": [
                {k: v for k, v in ex.items() if k != "log_tail"} for ex in self.exits
            ],
            "recovery_timeouts": self.recovery_timeouts,
            "fault_errors": [f"{r.type} {r.target}: {r.error}" for r in self.records if r.error],
            "skipped": dict(self.skipped),
            "network": self.net.kind,
            "errors": dict(sorted(tally.errors.items())),
            "nodes": self.opts.nodes,
            "clients": self.opts.clients,
            "keys": self.opts.keys,
            "seed": self.seed,
            "duration_s": self.opts.duration,
            "elapsed_s": round(time.monotonic() - t0, 1),
            "out": str(self.dir),
        }
        report["valid"] = bool(linearizable is True and equal and lost == 0 and not self.exits)
        (self.dir / "report.json").write_text(json.dumps(report, sort_keys=True))
        if not equal:
            (self.dir / "hashes.json").write_text(json.dumps(hashes, sort_keys=True, default=str))
        return report

    # --- the end -----------------------------------------------------------------------------
    def close(self, keep_data: bool) -> None:
        """Stops the workload and the nodes, removes the network; keeps the files when
        ``keep_data`` (else the data directories, or the whole temporary directory)."""
        try:
            if self.workload is not None:
                self.workload.stop(OP_TIMEOUT_S * 3)
            if self.cluster is not None:
                self.cluster.close()
        finally:
            try:
                if self.net is not None:
                    self.net.close()
            finally:
                if self.history is not None:
                    self.history.close()
                if not keep_data:
                    if self._owned_dir:
                        shutil.rmtree(self.dir, ignore_errors=True)
                    else:
                        for nid in self.ids:
                            shutil.rmtree(self.dir / "nodes" / nid, ignore_errors=True)


def run(opts: RunOptions) -> dict[str, Any]:
    """Runs ``chaos run`` with ``opts``; returns the report (module docstring). Raises
    BadRequestError for bad options, SetupFailedError when the network or the nodes cannot
    be set up, RequestTimeoutError when the cluster never elects a leader."""
    return Runner(opts).run()
