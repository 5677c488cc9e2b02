"""A reusable local cluster of real ``boltraft serve`` processes for integration tests.

Every node listens on a free 127.0.0.1 port and writes its log to ``<root>/<id>.log``;
``dump_logs()`` returns them all (the conftest prints them when a test fails). Waits are
condition polls with a deadline, never bare sleeps.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from boltraft.chaos.net import free_ports
from boltraft.client import Client
from boltraft.server.probe import status

SERVE = "from boltraft_cli.main import main; main()"


def cli_argv(*args: str) -> list[str]:
    """The command line of ``boltraft ARGS...`` run with this interpreter."""
    return [sys.executable, "-c", SERVE, *args]


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    """Returns the first truthy value of ``predicate()``; raises AssertionError naming
    ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def ctrl_c_reaches_it() -> None:
    """A ``preexec_fn`` that gives the child the default SIGINT disposition, as a command
    started from a terminal has: one started from a shell's background job inherits SIGINT
    ignored, and Python then never turns Ctrl-C into KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Cluster:
    """``n`` nodes n1..nN; ``start()`` launches the ones not running."""

    def __init__(
        self, root: Path, n: int = 3, tick_ms: int = 50, extra_args: tuple[str, ...] = ()
    ) -> None:
        self.root = root
        self.tick_ms = tick_ms
        self.extra_args = extra_args
        ports = free_ports(n)
        self.addrs = {f"n{i + 1}": f"tcp://127.0.0.1:{p}" for i, p in enumerate(ports)}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def ids(self) -> list[str]:
        """Returns the node ids in order."""
        return list(self.addrs)

    @property
    def endpoints(self) -> list[str]:
        """Returns every node's address."""
        return list(self.addrs.values())

    def serve_argv(self) -> list[str]:
        """The command that runs ``boltraft`` (``serve ...`` follows)."""
        return [sys.executable, "-c", SERVE]

    def argv(self, node_id: str) -> list[str]:
        """Returns the ``boltraft serve`` command line of ``node_id`` (the same every time)."""
        argv = [*self.serve_argv(), "serve", "--id", node_id]
        argv += ["--data", str(self.root / node_id), "--listen", self.addrs[node_id]]
        argv += ["--tick-ms", str(self.tick_ms), *self.extra_args]
        for other, addr in self.addrs.items():
            if other != node_id:
                argv += ["--peer", f"{other}={addr}"]
        return argv

    def start(self, *node_ids: str) -> None:
        """Returns None once the given nodes (default: all not running) were launched."""
        for node_id in node_ids or self.ids:
            if self.running(node_id):
                continue
            with open(self.root / f"{node_id}.log", "ab") as logf:
                self.procs[node_id] = subprocess.Popen(
                    self.argv(node_id),
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )

    def running(self, node_id: str) -> bool:
        """Returns True while ``node_id``'s process is alive."""
        p = self.procs.get(node_id)
        return p is not None and p.poll() is None

    def kill(self, *node_ids: str) -> None:
        """Returns None once the given nodes (default all) died by SIGKILL."""
        for node_id in node_ids or self.ids:
            p = self.procs.get(node_id)
            if p is not None and p.poll() is None:
                p.kill()
        for node_id in node_ids or self.ids:
            p = self.procs.get(node_id)
            if p is not None:
                p.wait(30)

    def stop(self, *node_ids: str, timeout: float = 20.0) -> dict[str, int]:
        """Returns each stopped node's exit status after SIGTERM (SIGKILL past ``timeout``)."""
        codes = {}
        for node_id in node_ids or self.ids:
            p = self.procs.get(node_id)
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for node_id in node_ids or self.ids:
            p = self.procs.get(node_id)
            if p is None:
                continue
            try:
                codes[node_id] = p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                codes[node_id] = p.wait()
        return codes

    def restart(self, node_id: str) -> None:
        """Returns None once ``node_id`` was SIGKILLed and launched again."""
        self.kill(node_id)
        self.start(node_id)

    def status(self, node_id: str, timeout: float = 0.5) -> dict[str, Any] | None:
        """Returns ``node_id``'s status, or None if it does not answer."""
        return status(self.addrs[node_id], timeout)

    def leader(self) -> str | None:
        """Returns the id of a running node that reports itself leader and that every other
        answering node names as leader, else None."""
        sts = {i: self.status(i) for i in self.ids if self.running(i)}
        leaders = {i for i, st in sts.items() if st and st["role"] == "leader"}
        if len(leaders) != 1:
            return None
        (lead,) = leaders
        if all(st is None or st["lead"] == lead for st in sts.values()):
            return lead
        return None

    def wait_for_leader(self, timeout: float = 20.0) -> str:
        """Returns the agreed leader's id; raises AssertionError after ``timeout``, or at once
        when every started node has exited (a node that cannot start fails fast)."""

        def agreed() -> str | None:
            if self.procs and not any(self.running(i) for i in self.procs):
                raise AssertionError("every node process exited")
            return self.leader()

        return wait_until(agreed, timeout, "an agreed leader")

    def wait_applied(self, node_id: str, index: int, timeout: float = 20.0) -> None:
        """Returns None once ``node_id`` has applied at least ``index``."""

        def done() -> bool:
            st = self.status(node_id)
            return bool(st and st["applied"] >= index)

        wait_until(done, timeout, f"{node_id} to apply index {index}")

    def dump_logs(self) -> str:
        """Returns every node log, each under a header."""
        out = []
        for node_id in self.ids:
            p = self.root / f"{node_id}.log"
            text = p.read_text(errors="replace") if p.exists() else "(no log)"
            out.append(f"===== {node_id} ({self.addrs[node_id]}) =====\n{text[-20000:]}")
        return "\n".join(out)

    def close(self) -> None:
        """Returns None once every node process is gone."""
        self.stop(timeout=10)


C = TypeVar("C", bound=Cluster)


@contextmanager
def running(c: C, request: pytest.FixtureRequest) -> Iterator[C]:
    """Starts ``c``, waits for a leader and yields ``c``; stops it afterwards, printing every
    node's log when the test failed (or never ran)."""
    try:
        c.start()
        c.wait_for_leader()
        yield c
    finally:
        c.close()
        rep = getattr(request.node, "rep_call", None)
        if rep is None or rep.failed:
            print(c.dump_logs())


def wait_connected(c: Cluster) -> None:
    """Waits until every node reports a connection to each other node (only a connection
    that exists can be seen to close)."""

    def connected() -> bool:
        sts = [c.status(i) for i in c.ids]
        return all(st and st["transport"]["peers_connected"] == len(c.ids) - 1 for st in sts)

    wait_until(connected, 20, "every node connected to every other")


@contextmanager
def sequence_writer(
    endpoints: list[str], bucket: str
) -> Iterator[tuple[list[int], list[BaseException]]]:
    """Runs a thread that takes ``next_sequence(bucket)`` through one Python client on
    ``endpoints`` until the block ends, and yields (the numbers it got, in order; what
    stopped it, if anything). The thread is stopped and joined when the block exits."""
    got: list[int] = []
    failure: list[BaseException] = []
    stop = threading.Event()

    def write() -> None:
        try:
            with Client(endpoints, timeout=30) as client:
                while not stop.is_set():
                    got.append(client.next_sequence(bucket))
        except BaseException as exc:  # handed to the test
            failure.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        yield got, failure
    finally:
        stop.set()
        writer.join(60)
