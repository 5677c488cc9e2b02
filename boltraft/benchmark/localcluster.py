"""A local cluster of ``boltraft serve`` child processes for the benchmarks, each started
through ``boltraft.benchmark.node`` (the benchmark's stage recorder installed).

Each node listens on a free 127.0.0.1 port, keeps its data under ``root/nN`` and writes its
log to ``root/nN.log``. ``LocalCluster`` is a context manager: leaving it SIGTERMs every
child, waits for it (SIGKILL after a deadline) and removes a temporary root.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from boltraft.errors import BadRequestError, NoLeaderError
from boltraft.server.probe import status as probe_status

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
_SERVE = "from boltraft.benchmark.node import main; main()"  # serve with the stage recorder


def free_ports(n: int) -> list[int]:
    """Returns ``n`` distinct TCP ports on 127.0.0.1 that were free a moment ago."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


class LocalCluster:
    """``nodes`` child processes of ``boltraft serve`` forming one new cluster.

    ``serve_args`` are added to every node's command line (e.g. ``["--fsync-delay",
    "fixed:5"]``). Invariant: ``endpoints[i]`` is node ``ids[i]``'s address.
    """

    def __init__(
        self,
        nodes: int = 3,
        root: str | os.PathLike[str] | None = None,
        serve_args: Sequence[str] = (),
    ) -> None:
        if not 1 <= nodes <= 9:
            raise BadRequestError(f"a local cluster has 1..9 nodes, got {nodes}")
        self._tmp = root is None
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="brbench-"))
        self.ids = [f"n{i + 1}" for i in range(nodes)]
        self.endpoints = [f"tcp://127.0.0.1:{p}" for p in free_ports(nodes)]
        self.serve_args = list(serve_args)
        self.procs: list[subprocess.Popen[bytes]] = []

    def command(self, i: int) -> list[str]:
        """Returns the command line of node ``i`` (0-based)."""
        cmd = [sys.executable, "-c", _SERVE, "serve", "--id", self.ids[i]]
        cmd += ["--data", str(self.root / self.ids[i]), "--listen", self.endpoints[i]]
        for j, other in enumerate(self.ids):
            if j != i:
                cmd += ["--peer", f"{other}={self.endpoints[j]}"]
        return [*cmd, "--log-level", "WARNING", *self.serve_args]

    def start(self, timeout: float = START_TIMEOUT_S) -> str:
        """Returns the leader's endpoint once the started nodes elected one.

        Raises NoLeaderError (with the nodes' log tails) when no leader is known by
        ``timeout`` or a node exited; the children are stopped then."""
        self.root.mkdir(parents=True, exist_ok=True)
        for i in range(len(self.ids)):
            log = open(self.root / f"{self.ids[i]}.log", "wb")  # noqa: SIM115 (child keeps it)
            try:
                self.procs.append(
                    subprocess.Popen(self.command(i), stdout=log, stderr=subprocess.STDOUT)
                )
            finally:
                log.close()
        try:
            return self.wait_leader(timeout)
        except BaseException:
            self.stop()
            raise

    def wait_leader(self, timeout: float = START_TIMEOUT_S) -> str:
        """Returns the endpoint of the node every answering node names as leader.

        Raises NoLeaderError when there is none within ``timeout`` or a child exited."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [i for i, p in enumerate(self.procs) if p.poll() is not None]
            if dead:
                raise NoLeaderError(f"node {self.ids[dead[0]]} exited:\n{self.log_tails()}")
            leads = set()
            for ep in self.endpoints:
                st = probe_status(ep, timeout=0.5)
                if st is not None and st.get("lead"):
                    leads.add(st["lead"])
            if len(leads) == 1:
                lead = leads.pop()
                if lead in self.ids:
                    return self.endpoints[self.ids.index(lead)]
            time.sleep(0.05)
        raise NoLeaderError(f"no leader within {timeout:.0f}s:\n{self.log_tails()}")

    def statuses(self) -> list[dict[str, Any] | None]:
        """Returns every node's ``status`` result (None for a node that did not answer)."""
        return [probe_status(ep, timeout=1.0) for ep in self.endpoints]

    def log_tails(self, lines: int = 15) -> str:
        """Returns the last ``lines`` lines of every node's log, headed by the node id."""
        out = []
        for node_id in self.ids:
            path = self.root / f"{node_id}.log"
            try:
                text = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                text = ["(no log)"]
            out.append(f"--- {node_id} ---\n" + "\n".join(text))
        return "\n".join(out)

    def stop(self) -> None:
        """Stops every child (SIGTERM, then SIGKILL past the deadline) and waits for it;
        removes the root folder when it was a temporary one."""
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []
        if self._tmp:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
