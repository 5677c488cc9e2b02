"""Benchmark: how long ``boltraft chaos check`` takes on a large, realistic history.

Generates a linearizable history of a simulated register store: ``--processes`` clients
(default 16) each issue reads, writes and cas (50/25/25) on ``--keys`` keys (default 5) with
values from ``--values`` small integers (default 5, so values repeat as in Jepsen's register
tests), one after the other with a short think time; each operation takes effect at a random
instant between its invoke and its completion (latencies of 0.2-5 ms, a heavy tail); a cas
whose old value does not match fails; one operation in ``--info-every`` (default 500) times
out (``info``) and takes effect at a random instant up to a second later, or never, and its
process is replaced by a new one. The history is written to a JSON Lines file, read back and
checked.

Prints ONE JSON object:

- ``ops``: operations in the history; ``keys``: keys; ``processes``: process ids used
  (retired ones included); ``info``: operations whose outcome is unknown;
- ``seconds``: the check itself (``boltraft.chaos.check.check``), the figure of interest,
  wall clock; ``cpu_seconds``: the CPU time it used (the same on an idle machine);
- ``parse_seconds``: reading and validating the file (``read_history``), wall clock;
- ``segments``: quiescent segments over all keys; ``linearizable``: the verdict (true).

Run: ``python bench/chaos_check.py [--ops 100000] [--keys 5] [--processes 16] [--seed 1]``.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import tempfile
import time
from typing import Any

from boltraft.chaos.check import check
from boltraft.chaos.history import Event, read_history

MS = 1_000_000  # nanoseconds


def simulate(
    ops: int, keys: int, processes: int, values: int, info_every: int, seed: int
) -> list[Event]:
    """The events of a linearizable history as described in the module docstring."""
    rnd = random.Random(seed)
    names = [f"k{i}" for i in range(keys)]
    # first the timing of every operation, then the outcomes in the order they take effect
    plan: list[dict[str, Any]] = []
    clock = [(rnd.randrange(MS), p) for p in range(processes)]  # (free at, process)
    heapq.heapify(clock)
    next_process = processes
    for _ in range(ops):
        t, p = heapq.heappop(clock)
        invoke = t + 1 + rnd.randrange(MS // 5)  # think time
        latency = int(min(rnd.lognormvariate(0, 0.6) * MS, 5 * MS)) + MS // 5
        r = rnd.random()
        f = "read" if r < 0.5 else ("write" if r < 0.75 else "cas")
        value: Any = None
        if f == "write":
            value = rnd.randrange(values)
        elif f == "cas":
            value = (rnd.randrange(values), rnd.randrange(values))
        op = {"p": p, "f": f, "key": rnd.choice(names), "value": value, "invoke": invoke}
        if rnd.randrange(info_every) == 0:
            op["complete"] = invoke + 1000 * MS  # the client gave up after a second
            op["type"] = "info"
            op["at"] = invoke + rnd.randrange(1000 * MS) if rnd.random() < 0.5 else None
            heapq.heappush(clock, (op["complete"], next_process))
            next_process += 1
        else:
            op["complete"] = invoke + latency
            op["type"] = "ok"
            op["at"] = invoke + rnd.randrange(latency + 1)
            heapq.heappush(clock, (op["complete"], p))
        plan.append(op)
    state: dict[str, Any] = {}
    for op in sorted((o for o in plan if o["at"] is not None), key=lambda o: o["at"]):
        current = state.get(op["key"])
        if op["f"] == "read":
            op["value"] = current if op["type"] == "ok" else None
        elif op["f"] == "write":
            state[op["key"]] = op["value"]
        elif current == op["value"][0]:
            state[op["key"]] = op["value"][1]
        elif op["type"] == "ok":
            op["type"] = "fail"
    events = []
    for op in plan:
        inv_value = None if op["f"] == "read" else op["value"]
        events.append(Event(op["p"], "invoke", op["f"], op["key"], inv_value, op["invoke"]))
        done = op["value"] if op["f"] != "read" or op["type"] == "ok" else None
        events.append(Event(op["p"], op["type"], op["f"], op["key"], done, op["complete"]))
    events.sort(key=lambda e: (e.time, e.type == "invoke"))  # a process completes, then invokes
    return events


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ops", type=int, default=100_000)
    ap.add_argument("--keys", type=int, default=5)
    ap.add_argument("--processes", type=int, default=16)
    ap.add_argument("--values", type=int, default=5)
    ap.add_argument("--info-every", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=600.0)
    args = ap.parse_args()
    events = simulate(args.ops, args.keys, args.processes, args.values, args.info_every, args.seed)
    fd, path = tempfile.mkstemp(suffix=".jsonl")
    try:
        with os.fdopen(fd, "w") as f:
            f.writelines(e.dumps() + "\n" for e in events)
        t0 = time.monotonic()
        ops = read_history(path)
        parse_s = time.monotonic() - t0
    finally:
        os.unlink(path)
    cpu = time.process_time()
    result = check(ops, timeout=args.timeout)
    cpu = time.process_time() - cpu
    print(
        json.dumps(
            {
                "ops": len(ops),
                "keys": len(result.keys),
                "processes": len({op.process for op in ops}),
                "info": sum(op.type == "info" for op in ops),
                "seconds": round(result.seconds, 3),
                "cpu_seconds": round(cpu, 3),
                "parse_seconds": round(parse_s, 3),
                "segments": sum(k.segments for k in result.keys.values()),
                "linearizable": result.linearizable,
            }
        )
    )


if __name__ == "__main__":
    main()
