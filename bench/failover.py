"""Failover: what a leader crash costs a writing client, and whether a loaded cluster keeps
its leader.

Starts a 3-node cluster of plain ``boltraft serve`` processes (default flags: fsync on, the
default tick and election timeout) in a temporary folder, then:

1. **Trials** (``--trials``, 20). One ``boltraft.client.Client`` with default settings writes
   100-byte values in a loop on its own thread. Each trial waits until the cluster is settled
   (every node up, one leader every node names, every node's peer connections up, the
   writer acknowledged by the current leader), lets the writer run a random 0.2-0.5 s more,
   then SIGKILLs the leader and measures, from the moment just before the kill:

   - ``election_ms``: until one of the two survivors reports itself leader (both are asked
     for their ``status`` every 2 ms);
   - ``failover_ms``: until the first write the client *started* after the kill is
     acknowledged. A write in flight at the kill may have been answered by the dying leader
     and is not counted, so a trial errs long by at most one write's latency.

   Then it starts the killed node again (same data) and the next trial kills whoever leads.
2. **Load** (``--load-duration``, 300 s). 64 closed-loop clients write to the leader over
   pipelined frames (``bench/cluster.py``'s workers); every node's ``status`` is read every
   0.5 s. ``spurious_elections`` is how far the highest term any node reported rose during
   the run (no node is killed: every election there is spurious; a pre-vote that fails
   changes no term).

Prints ONE JSON object:

| key | meaning |
|---|---|
| ``failover_p50_ms``, ``failover_max_ms`` | kill -> next acknowledged write: median, max |
| ``election_p50_ms``, ``election_max_ms`` | kill -> a new leader known, median and max |
| ``failover_ms``, ``election_ms`` | every trial's figure, in order |
| ``write_errors`` | writes that raised during the trials (the client's 5 s call timeout) |
| ``spurious_elections`` | term rises during the load run |
| ``load_duration_s``, ``load_clients``, ``load_write_ops_per_s``, ``load_errors`` | the load run |
| ``load_leader_changes`` | leaders seen one after another during the load run, minus one |
| ``leader_gap_max_ms`` | a follower's longest wait between two messages of one leader, all run |
| ``trials``, ``nodes`` | the settings |

    python bench/failover.py                          # 20 trials, then 5 minutes of load
    python bench/failover.py --trials 5 --load-duration 20
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import zmq
from boltraft_cli.up import node_plan, serve_argv, stop_children

from boltraft.client import Client
from boltraft.errors import BoltraftError
from boltraft.transport import codec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster import BUCKET as LOAD_BUCKET  # bench/cluster.py
from cluster import _free_base_port, run_phase

BUCKET = "failover"
VALUE = b"v" * 100
POLL_S = 0.002  # status poll interval while waiting for a new leader
SETTLE_TIMEOUT_S = 60.0


class Prober:
    """Asks nodes for their ``status`` over one DEALER per node (no connect per question)."""

    def __init__(self, endpoints: list[str]) -> None:
        self.ctx = zmq.Context()
        self.socks: dict[str, zmq.Socket] = {}
        self.endpoints = endpoints
        self.rid = 0

    def _sock(self, ep: str) -> zmq.Socket:
        s = self.socks.get(ep)
        if s is None:
            s = self.ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(ep)
            self.socks[ep] = s
        return s

    def forget(self, ep: str) -> None:
        """Drops the socket to ``ep`` (its node was killed: answers queued there are stale)."""
        s = self.socks.pop(ep, None)
        if s is not None:
            s.close(0)

    def statuses(self, eps: list[str], timeout: float = 0.5) -> dict[str, dict[str, Any]]:
        """Returns the status of every node of ``eps`` that answered within ``timeout``."""
        self.rid += 1
        rid = self.rid
        for ep in eps:
            self._sock(ep).send(codec.encode_request(rid, {"op": "status"}), zmq.NOBLOCK)
        out: dict[str, dict[str, Any]] = {}
        poller = zmq.Poller()
        for ep in eps:
            poller.register(self.socks[ep], zmq.POLLIN)
        deadline = time.monotonic() + timeout
        while len(out) < len(eps):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for sock, _ in poller.poll(max(1, int(left * 1000))):
                ep = next(e for e, s in self.socks.items() if s is sock)
                while sock.poll(0):
                    kind, resp = codec.decode_frame(sock.recv())
                    if kind == codec.KIND_RESP and resp.request_id == rid and resp.ok:
                        out[ep] = resp.result
        return out

    def close(self) -> None:
        for s in self.socks.values():
            s.close(0)
        self.ctx.term()


class Writer(threading.Thread):
    """One Client writing in a loop; keeps (start, end, ok) of every write."""

    def __init__(self, endpoints: list[str]) -> None:
        super().__init__(daemon=True)
        self.client = Client(endpoints)
        self.writes: list[tuple[float, float, bool]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            t0 = time.monotonic()
            try:
                self.client.put(BUCKET, b"k%d" % (i % 1000), VALUE)
                ok = True
            except BoltraftError:
                ok = False
            with self.lock:
                self.writes.append((t0, time.monotonic(), ok))

    def acked_after(self, t: float) -> float | None:
        """Returns the end of the first acknowledged write started after ``t``, else None."""
        found = None
        with self.lock:
            for start, end, ok in reversed(self.writes):
                if start <= t:
                    break
                if ok:
                    found = end
        return found

    def errors_since(self, t: float) -> int:
        with self.lock:
            return sum(1 for s, _, ok in self.writes if s > t and not ok)


class Nodes:
    """The three node processes, by id (started, killed and started again)."""

    def __init__(self, root: Path, n: int) -> None:
        self.root = root
        self.plan = node_plan(root, n, "127.0.0.1", _free_base_port(n))
        self.ids = [p[0] for p in self.plan]
        self.addr = {p[0]: p[1] for p in self.plan}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, node_id: str) -> None:
        i = self.ids.index(node_id)
        with open(self.root / f"{node_id}.log", "ab") as logf:
            self.procs[node_id] = subprocess.Popen(
                serve_argv(self.plan, i), stdout=logf, stderr=subprocess.STDOUT, cwd=self.root
            )

    def kill(self, node_id: str) -> None:
        p = self.procs[node_id]
        p.kill()
        p.wait()

    def stop(self) -> None:
        stop_children(list(self.procs.values()))


def settled(prober: Prober, nodes: Nodes) -> str | None:
    """Returns the leader's id when every node answers, names it, has applied what the
    leader has committed (as of the leader's answer) and reports its peers connected."""
    eps = [nodes.addr[i] for i in nodes.ids]
    sts = prober.statuses(eps)
    if len(sts) != len(eps):
        return None
    leads = {st["lead"] for st in sts.values()}
    if len(leads) != 1:
        return None
    lead = leads.pop()
    st_lead = sts.get(nodes.addr.get(lead, ""))
    if st_lead is None or st_lead["role"] != "leader":
        return None
    commit = st_lead["commit"]
    for st in sts.values():
        if st["applied"] < commit - 64:
            return None
        connected = st.get("transport", {}).get("peers_connected")
        if connected is not None and connected < len(eps) - 1:
            return None
    return lead


def wait_settled(prober: Prober, nodes: Nodes, writer: Writer) -> str:
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while time.monotonic() < deadline:
        lead = settled(prober, nodes)
        if lead is not None:
            t = time.monotonic()
            # the writer has found the leader again (an acknowledged write since now)
            while time.monotonic() < deadline:
                if writer.acked_after(t) is not None:
                    return lead
                time.sleep(0.01)
        time.sleep(0.05)
    raise SystemExit("error: the cluster did not settle within 60 s")


def trial(prober: Prober, nodes: Nodes, writer: Writer, rng: random.Random) -> dict[str, Any]:
    lead = wait_settled(prober, nodes, writer)
    time.sleep(rng.uniform(0.2, 0.5))  # the kill lands at a random point of a write
    survivors = [nodes.addr[i] for i in nodes.ids if i != lead]
    old_term = max(st["term"] for st in prober.statuses(survivors).values())
    t_kill = time.monotonic()
    nodes.kill(lead)
    prober.forget(nodes.addr[lead])
    election = None
    while time.monotonic() - t_kill < 30:
        sts = prober.statuses(survivors, timeout=0.2)
        now = time.monotonic()
        if any(st["role"] == "leader" and st["term"] > old_term for st in sts.values()):
            election = now - t_kill
            break
        time.sleep(POLL_S)
    acked = None
    while time.monotonic() - t_kill < 30:
        acked = writer.acked_after(t_kill)
        if acked is not None:
            break
        time.sleep(0.005)
    nodes.start(lead)
    return {
        "killed": lead,
        "election_ms": None if election is None else round(election * 1000, 1),
        "failover_ms": None if acked is None else round((acked - t_kill) * 1000, 1),
        "errors": writer.errors_since(t_kill),
    }


def load_run(prober: Prober, nodes: Nodes, seconds: float, clients: int) -> dict[str, Any]:
    """Runs ``clients`` pipelined writers against the leader for ``seconds`` while reading
    every node's term twice a second."""
    eps = [nodes.addr[i] for i in nodes.ids]
    lead = settled(prober, nodes)
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while lead is None and time.monotonic() < deadline:
        time.sleep(0.05)
        lead = settled(prober, nodes)
    if lead is None:
        raise SystemExit("error: no settled leader for the load run")
    first_term = max(st["term"] for st in prober.statuses(eps).values())
    result: dict[str, Any] = {}

    def drive() -> None:
        pids = {i: p.pid for i, p in nodes.procs.items()}
        result.update(
            run_phase(nodes.addr[lead], "write", clients, 2, 0.5, seconds, 100, False, pids, lead)
        )

    t = threading.Thread(target=drive)
    t.start()
    terms = [first_term]
    leaders = [lead]
    while t.is_alive():
        sts = prober.statuses(eps)
        if sts:
            terms.append(max(st["term"] for st in sts.values()))
            for st in sts.values():
                if st["role"] == "leader" and st["id"] != leaders[-1]:
                    leaders.append(st["id"])
        t.join(0.5)
    sts = prober.statuses(eps)
    if sts:
        terms.append(max(st["term"] for st in sts.values()))
    gaps = [st.get("leader_gap_max_ms") for st in sts.values()]
    return {
        "spurious_elections": max(terms) - first_term,
        "leader_gap_max_ms": max((g for g in gaps if g is not None), default=None),
        "load_duration_s": seconds,
        "load_clients": clients,
        "load_write_ops_per_s": result.get("ops_per_s"),
        "load_errors": result.get("errors"),
        "load_leader_changes": len(leaders) - 1,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=20, help="leader kills")
    ap.add_argument("--load-duration", type=float, default=300.0, help="seconds of 64-client load")
    ap.add_argument("--load-clients", type=int, default=64)
    ap.add_argument("--seed", type=int, default=None, help="seeds the kill times")
    args = ap.parse_args()
    rng = random.Random(args.seed)

    tmp = tempfile.TemporaryDirectory(prefix="boltraft-failover-")
    nodes = Nodes(Path(tmp.name), 3)
    prober = Prober([nodes.addr[i] for i in nodes.ids])
    writer: Writer | None = None
    try:
        for node_id in nodes.ids:
            nodes.start(node_id)
        with Client(list(nodes.addr.values()), timeout=30) as c:
            c.create_bucket(BUCKET, if_not_exists=True)
            c.create_bucket(LOAD_BUCKET, if_not_exists=True)
        writer = Writer(list(nodes.addr.values()))
        writer.start()
        trials = []
        for _ in range(args.trials):
            trials.append(trial(prober, nodes, writer, rng))
            print(json.dumps({"trial": len(trials), **trials[-1]}), file=sys.stderr)
        writer.stop.set()
        writer.join(10)
        failover = [t["failover_ms"] for t in trials]
        election = [t["election_ms"] for t in trials]
        done_f = [x for x in failover if x is not None]
        done_e = [x for x in election if x is not None]
        out: dict[str, Any] = {
            "failover_p50_ms": round(statistics.median(done_f), 1) if done_f else None,
            "failover_max_ms": max(done_f) if len(done_f) == len(failover) and done_f else None,
            "election_p50_ms": round(statistics.median(done_e), 1) if done_e else None,
            "election_max_ms": max(done_e) if len(done_e) == len(election) and done_e else None,
            "failover_ms": failover,
            "election_ms": election,
            "write_errors": sum(t["errors"] for t in trials),
            "trials": args.trials,
            "nodes": len(nodes.ids),
        }
        out["spurious_elections"] = None
        if args.load_duration > 0:
            out.update(load_run(prober, nodes, args.load_duration, args.load_clients))
        print(json.dumps(out))
    finally:
        if writer is not None:
            writer.stop.set()
        prober.close()
        nodes.stop()
        if writer is not None:
            writer.join(10)
            writer.client.close()
        tmp.cleanup()


if __name__ == "__main__":
    main()
