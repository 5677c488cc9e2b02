"""Benchmark: proposals committed per second through a simulated 3-node cluster, no I/O.

Every node runs on an in-memory log store; the harness plays the Ready contract (early
messages, persist, messages, apply, advance) and delivers every message in the same loop
iteration. The leader keeps up to ``--window`` proposal batches uncommitted (pipelining).
A commit is counted when the leader hands the entry out in ``Ready.committed_entries``.

    python bench/raft_core.py [--entries N] [--size BYTES] [--window W]

Prints one JSON object: ``commits_per_s_b1``, ``commits_per_s_b64`` and the settings.
"""

from __future__ import annotations

import argparse
import json
import random
import time

from boltraft.raft.config import Config
from boltraft.raft.memstore import MemoryLogStore
from boltraft.raft.rawnode import RawNode
from boltraft.raft.types import ConfState, Message, Role

IDS = ("n1", "n2", "n3")


def _cluster() -> tuple[dict[str, RawNode], dict[str, MemoryLogStore]]:
    stores: dict[str, MemoryLogStore] = {}
    nodes: dict[str, RawNode] = {}
    for nid in IDS:
        store = MemoryLogStore()
        store.bootstrap(ConfState(IDS))
        stores[nid] = store
        nodes[nid] = RawNode(Config(nid, rng=random.Random(nid)), store)
    return nodes, stores


def _cycle(nodes: dict[str, RawNode], stores: dict[str, MemoryLogStore]) -> int:
    """Returns the number of entries the leader handed out as committed in one round."""
    committed = 0
    outbox: list[Message] = []
    for nid, node in nodes.items():
        if not node.has_ready():
            continue
        rd = node.ready()
        outbox += rd.early_messages
        if rd.entries or rd.hard_state is not None:
            stores[nid].append(rd.entries, rd.hard_state)
        outbox += rd.messages
        if nid == "n1":
            committed += len(rd.committed_entries)
        node.advance(rd)
    for m in outbox:
        nodes[m.to].step(m)
    return committed


def run(batch: int, total: int, size: int, window: int) -> float:
    """Returns committed proposals per second for ``total`` entries in batches of ``batch``."""
    nodes, stores = _cluster()
    leader = nodes["n1"]
    leader.campaign()
    while leader.status().role != Role.LEADER or leader.status().commit < 1:
        _cycle(nodes, stores)
    _cycle(nodes, stores)
    payload = [b"x" * size] * batch
    proposed = done = 0
    inflight = 0
    start = time.perf_counter()
    while done < total:
        while inflight < window and proposed < total:
            leader.propose(payload)
            proposed += batch
            inflight += 1
        got = _cycle(nodes, stores)
        done += got
        inflight = (proposed - done + batch - 1) // batch
    return done / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=200_000, help="entries at batch 64")
    ap.add_argument("--size", type=int, default=128, help="bytes per proposal")
    ap.add_argument("--window", type=int, default=4, help="uncommitted batches in flight")
    args = ap.parse_args()
    b64 = run(64, args.entries, args.size, args.window)
    b1 = run(1, max(args.entries // 10, 1), args.size, args.window)
    print(
        json.dumps(
            {
                "commits_per_s_b64": round(b64),
                "commits_per_s_b1": round(b1),
                "entries_b64": args.entries,
                "entries_b1": max(args.entries // 10, 1),
                "entry_size": args.size,
                "window": args.window,
                "nodes": len(IDS),
            }
        )
    )


if __name__ == "__main__":
    main()
