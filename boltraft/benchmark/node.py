"""``boltraft serve`` as the benchmarks run it: the same command, with the benchmark's
observer of the commit stages installed (``stages.StageRecorder``, read back with the
``stats`` request) and, with ``--fsync-delay SPEC``, a log store whose fsyncs sleep
(``boltraft.storage.proxy.SlowSyncLogStore``: what a slower disk would do to commit latency).

Run as ``python -c "from boltraft.benchmark.node import main; main()" serve ARGS...
[--fsync-delay SPEC]``; ``LocalCluster`` starts its nodes this way.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from boltraft.benchmark.stages import FsyncDelay, StageRecorder
from boltraft.errors import ConfigError
from boltraft.raft.types import LogStore
from boltraft.server.main import ServeHooks
from boltraft.storage.proxy import SlowSyncLogStore


def split_fsync_delay(argv: Sequence[str]) -> tuple[list[str], FsyncDelay | None]:
    """``argv`` without its ``--fsync-delay SPEC`` (or ``--fsync-delay=SPEC``), and the
    parsed delay (None when absent). Raises ConfigError for a malformed spec."""
    rest: list[str] = []
    spec: str | None = None
    it = iter(argv)
    for arg in it:
        if arg == "--fsync-delay":
            spec = next(it, "")
        elif arg.startswith("--fsync-delay="):
            spec = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return rest, None if spec is None else FsyncDelay.parse(spec)


def hooks_for(delay: FsyncDelay | None) -> ServeHooks:
    """The hooks of a benchmark node: a stage recorder, and the fsync delay if any."""

    def wrap_log(store: LogStore) -> LogStore:
        return store if delay is None else SlowSyncLogStore(store, delay.sleep)

    return ServeHooks(observer=StageRecorder(), wrap_log=wrap_log)


def main(argv: Sequence[str] | None = None) -> None:
    """Runs the ``boltraft`` command line (normally ``serve``) with the benchmark's hooks."""
    from boltraft_cli.main import main as cli

    try:
        args, delay = split_fsync_delay(sys.argv[1:] if argv is None else argv)
    except ConfigError as err:
        print(f"error: {err.code}: {err.message}", file=sys.stderr)
        raise SystemExit(1) from None
    cli.main(args=args, prog_name="boltraft", obj={"serve_hooks": hooks_for(delay)})
