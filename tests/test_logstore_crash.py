"""The durable log stores (LMDB and WAL) survive SIGKILL in the middle of appends.

A child process (this file run as a script) applies a seeded stream of operations (appends of
1-40 entries with the hard state, some truncating a few entries back with a new term, and now
and then a compaction) to a store (the WAL with small segments, so that the kill also lands in
rotations and segment deletions), printing the number of each operation once it has
returned. The parent kills it with SIGKILL after a seeded number of reports, reopens the
store and replays the same stream on a MemoryLogStore: the recovered store must equal the
state after some operation j >= the last reported one (nothing reported is lost, and no
operation is half applied: its entries and hard state landed together or not at all).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_logstore import state  # tests/ is on sys.path under pytest and as a script

from boltraft.raft.memstore import MemoryLogStore
from boltraft.raft.types import ConfState, Entry, HardState, SnapshotMeta
from boltraft.storage.logstore import LmdbLogStore
from boltraft.storage.wal import WalLogStore

CONF = ConfState(voters=("n1", "n2", "n3"))
MAX_OPS = 1_000_000


def operations(seed: int) -> Iterator[tuple[str, Any, Any]]:
    """Yields the child's operations: ("append", entries, hard_state) or ("compact", meta,
    None); the same seed yields the same stream."""
    rng = random.Random(seed)
    model = MemoryLogStore()  # tracks what the stream has built, to keep it valid
    term, commit = 1, 0
    for _ in range(MAX_OPS):
        last = model.last_index()
        if rng.random() < 0.05 and last - model.first_index() > 50:
            c = rng.randint(model.first_index(), min(commit, last - 10))
            op: tuple[str, Any, Any] = ("compact", SnapshotMeta(c, model.term(c), CONF), None)
            model.compact(op[1])
        else:
            start = last + 1
            if rng.random() < 0.15 and last - commit > 0:
                start = rng.randint(commit + 1, last)  # truncate an uncommitted suffix
                term += 1
            n = rng.randint(1, 40)
            size = rng.choice((0, 16, 200, 5000))
            ents = [
                Entry(term, i, 0, (b"%d:%d;" % (i, term)) * (size // 8))
                for i in range(start, start + n)
            ]
            commit = max(commit, start - 1 - rng.randint(0, 3), model.snapshot_meta().index)
            hs = HardState(term, "n1", commit)
            op = ("append", ents, hs)
            model.append(ents, hs)
        yield op


def apply(store: Any, op: tuple[str, Any, Any]) -> None:
    """Applies one operation of ``operations()`` to ``store``."""
    kind, arg, hs = op
    if kind == "append":
        store.append(arg, hs)
    else:
        store.compact(arg)


def open_store(kind: str, path: str | Path) -> Any:
    """Returns the store of ``kind`` ("lmdb" or "wal") on ``path``."""
    if kind == "wal":
        return WalLogStore(path, segment_bytes=64 << 10)
    return LmdbLogStore(path, map_size=1 << 20)


def child(kind: str, path: str, seed: int) -> None:
    store = open_store(kind, path)
    store.bootstrap(CONF)
    print("ready", flush=True)
    for k, op in enumerate(operations(seed)):
        apply(store, op)
        print(k, flush=True)


def matching_op(recovered: tuple[Any, ...], seed: int, reported: int) -> int:
    """Returns the number j >= ``reported`` of the operation after which the model equals
    ``recovered``; fails the test when there is none within a generous bound."""
    model = MemoryLogStore()
    model.bootstrap(CONF)
    for j, op in enumerate(operations(seed)):
        apply(model, op)
        if j >= reported and model.last_index() == recovered[3] and state(model) == recovered:
            return j
        if j > reported + 10_000:
            break
    pytest.fail(f"seed {seed}: recovered state matches no operation >= {reported}")


@pytest.mark.parametrize("kind", ["lmdb", "wal"])
@pytest.mark.parametrize("seed", range(4))
def test_sigkill_in_the_middle_of_appends(tmp_path: Path, seed: int, kind: str) -> None:
    path = tmp_path / "raftlog"
    target = random.Random(seed).randint(30, 250)
    proc = subprocess.Popen(
        [sys.executable, __file__, "child", kind, str(path), str(seed)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    reported = -1
    try:
        assert proc.stdout.readline().strip() == "ready"
        while reported < target:
            line = proc.stdout.readline()
            assert line, f"child exited early with {proc.wait(timeout=30)}"
            reported = int(line)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    store = open_store(kind, path)
    try:
        recovered = state(store)
        first, last = recovered[2], recovered[3]
        assert [e.index for e in recovered[4]] == list(range(first, last + 1))
        assert [store.term(i) for i in range(first, last + 1)] == [e.term for e in recovered[4]]
    finally:
        store.close()
    assert matching_op(recovered, seed, reported) >= reported


if __name__ == "__main__" and sys.argv[1:2] == ["child"]:
    child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
