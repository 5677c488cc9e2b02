"""Fault-injection wrappers the tests install around a node's parts (production nodes run
without them): a network that drops one snapshot chunk, and the snapshot-install step that
kills the process.

``faultserve.py`` (in tests/integration) starts a real ``boltraft serve`` process with them,
driven by a JSON file of knobs.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

from boltraft.transport import codec

log = logging.getLogger("boltraft.server")


class DropNthChunk:
    """Wraps a node's network: the ``n``-th snapshot chunk it serves (0-based) is dropped,
    once; everything else goes through. ``dropped`` counts the chunks dropped."""

    def __init__(self, inner: Any, n: int) -> None:
        self.inner = inner
        self._left = n
        self.dropped = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def reply(self, sender: bytes, frame: bytes) -> Any:
        if self._left >= 0 and b"chunk" in frame[:16]:
            kind, payload = codec.decode_frame(frame)
            if kind == "snap" and payload[0] == "chunk":
                if self._left == 0:
                    self._left = -1
                    self.dropped += 1
                    log.warning("fault injection: dropped snapshot chunk at %d", payload[2])
                    return True
                self._left -= 1
        return self.inner.reply(sender, frame)


def crash_at(step: str | None) -> Any:
    """An ``install_step`` hook that SIGKILLs this process at ``step`` of a snapshot install
    (None: never)."""

    def hook(current: str) -> None:
        if current == step:
            log.warning("fault injection snapshot_crash_at=%s: killing this process", step)
            logging.shutdown()
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def clock_ahead(seconds: float) -> None:
    """Makes this process's wall clock (``time.time``, ``time.time_ns``) run ``seconds``
    ahead, as libfaketime would; call it before anything imports boltraft.server."""
    import time

    real, real_ns = time.time, time.time_ns
    time.time = lambda: real() + seconds
    time.time_ns = lambda: real_ns() + int(seconds * 1e9)


def serve_main() -> None:
    """``boltraft`` with the faults of the JSON file after ``--faults`` (read at start:
    ``{"snapshot_crash_at": STEP, "snapshot_drop_chunk": N, "clock_ahead_s": {ID: S}}``,
    all optional) installed as ServeHooks, or, for the clock, applied to the process.
    ``--faults PATH`` is taken out of the arguments; a missing file means no faults."""
    import json
    import sys
    from pathlib import Path

    args = sys.argv[1:]
    faults: dict[str, Any] = {}
    if "--faults" in args:
        i = args.index("--faults")
        path = Path(args[i + 1])
        del args[i : i + 2]
        if path.exists():
            faults = json.loads(path.read_text())
    node_id = args[args.index("--id") + 1] if "--id" in args else ""
    ahead = faults.get("clock_ahead_s", {}).get(node_id)
    if ahead:
        clock_ahead(float(ahead))

    from boltraft_cli.main import main as cli  # after the clock moved

    from boltraft.server.main import ServeHooks

    drop = int(faults.get("snapshot_drop_chunk", -1))
    hooks = ServeHooks(
        wrap_net=lambda net: DropNthChunk(net, drop) if drop >= 0 else net,
        install_step=crash_at(faults.get("snapshot_crash_at")),
    )
    cli.main(args=args, prog_name="boltraft", obj={"serve_hooks": hooks})
