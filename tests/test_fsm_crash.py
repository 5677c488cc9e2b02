"""Crash test with a real process: SIGKILL in the middle of a stream of apply() calls, then the
reopened store must hold exactly the effect of the entries up to its stored applied index.

The child (this file run as a script) applies a seeded stream of commands in runs of random
length, printing its applied index after each run; the parent kills it once it has reported
enough runs, and recomputes the expected contents with the dict model.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fsm_model import Model, dump  # tests/ is on sys.path under pytest and as a script

from boltraft.raft.types import Entry
from boltraft.storage import commands
from boltraft.storage.fsm import BucketStateMachine

PATHS = [(b"a",), (b"b",), (b"a", b"n")]
SETUP = [{"op": "create_bucket", "bucket": p} for p in PATHS]
STREAM_LENGTH = 6_000  # more than the runs the test waits for can apply


def command(rng: random.Random) -> dict[str, Any]:
    """Returns one random command over a small key space (conditions fail often)."""
    path = rng.choice(PATHS)
    key = b"k%d" % rng.randrange(40)
    value = b"v%d" % rng.randrange(1000) * rng.randrange(1, 20)
    kind = rng.random()
    if kind < 0.5:
        return {"op": "put", "bucket": path, "key": key, "value": value}
    if kind < 0.6:
        return {"op": "delete", "bucket": path, "key": key}
    if kind < 0.7:
        cond: dict[str, Any] = (
            {"if_absent": True} if rng.random() < 0.5 else {"if_value": b"v%d" % rng.randrange(3)}
        )
        return {"op": "put", "bucket": path, "key": key, "value": value, **cond}
    if kind < 0.75:
        return {"op": "next_sequence", "bucket": path}
    ops = [command(rng) for _ in range(rng.randrange(1, 6))]
    return {"op": "batch", "ops": [op for op in ops if op["op"] != "batch"]}


def stream(seed: int) -> list[dict[str, Any]]:
    """Returns the seeded command stream: the bucket setup, then random commands."""
    rng = random.Random(seed)
    return SETUP + [command(rng) for _ in range(STREAM_LENGTH)]


def child(data_dir: str, seed: int, round_: int) -> None:
    """Applies the stream from the store's applied index on, reporting after each run
    (``round_`` varies the run lengths between restarts)."""
    rng = random.Random(seed * 1000 + round_)
    cmds = stream(seed)
    sm = BucketStateMachine(data_dir)  # sync=True: every run is durable when reported
    index = sm.applied[0]
    out = sys.stdout
    while index < len(cmds):
        n = rng.randrange(1, 40)
        run = [
            Entry(1, i + 1, 0, commands.encode(cmds[i]))
            for i in range(index, min(index + n, len(cmds)))
        ]
        sm.apply(run)
        index = run[-1].index
        out.write(f"{index}\n")
        out.flush()
    sm.close()


def _run_child(data_dir: Path, seed: int, round_: int) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, __file__, str(data_dir), str(seed), str(round_)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _kill_after(proc: subprocess.Popen[str], runs: int, deadline_s: float = 60.0) -> int:
    """Returns the last applied index the child reported before it got SIGKILL, which is
    sent once it has reported ``runs`` runs (or at the deadline)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + deadline_s
    last = 0
    seen = 0
    try:
        while seen < runs and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            last = int(line)
            seen += 1
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert seen == runs, f"child reported {seen} runs; stderr: {proc.stderr.read()}"  # type: ignore[union-attr]
    return last


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_mid_stream_leaves_exactly_the_applied_prefix(tmp_path: Path, seed: int) -> None:
    cmds = stream(seed)
    data = tmp_path / "state"
    reported = 0
    for round_, runs in enumerate((25, 60, 10)):  # kill, reopen and check; three times
        proc = _run_child(data, seed, round_)
        reported = max(reported, _kill_after(proc, runs))
        with BucketStateMachine(data) as sm:
            index, _ = sm.applied
            assert index >= reported  # every reported run was durable
            model = Model()
            for cmd in cmds[:index]:
                model.apply(commands.validate(cmd))
            assert dump(sm.db) == model.state()
            assert sm.db.check() == []


if __name__ == "__main__":
    child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
