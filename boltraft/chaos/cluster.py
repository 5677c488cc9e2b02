"""The cluster ``chaos run`` drives: one ``boltraft serve`` process per node, each started
through ``boltraft.chaos.node`` in its place on the network (``boltraft.chaos.net``), with
its data in ``root/<id>`` and its log in ``root/<id>.log``.

The runner starts every node from its main thread with ``BOLTRAFT_CHAOS_PARENT`` set, so a
runner that dies takes its nodes with it; each node has its own session (a Ctrl-C at the
terminal reaches the runner, which stops them). A node that exits without the runner having
stopped it is an unexpected exit: ``reap`` reports it (status, the end of its log).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from boltraft.chaos.net import Network
from boltraft.chaos.node import PARENT_ENV
from boltraft.errors import RequestTimeoutError
from boltraft.server.probe import status as probe_status

LAUNCH = "from boltraft.chaos.node import main; main()"
STOP_TIMEOUT_S = 10.0
LOG_TAIL_CHARS = 4000


@dataclass
class NodeProc:
    """One node: its address, files and current process."""

    id: str
    addr: str
    data: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False
    slow_ms: float | None = None  # the fsync delay it runs with
    expected_exit: bool = False  # the runner stopped it, or it was removed from the cluster
    starts: int = 0
    exits: list[int] = field(default_factory=list)


class ChaosCluster:
    """``node_ids`` as one new cluster on ``net``; ``config`` is every node's config file
    (server settings, docs in boltraft.server.config)."""

    def __init__(
        self, root: Path, node_ids: Sequence[str], net: Network, config: dict[str, Any]
    ) -> None:
        self.root = root
        self.net = net
        self.nodes = {
            nid: NodeProc(nid, net.address(nid), root / nid, root / f"{nid}.log")
            for nid in node_ids
        }
        self.config_path = root / "node-config.json"
        self.config_path.write_text(json.dumps(config))
        self._pool = ThreadPoolExecutor(max_workers=max(2, len(self.nodes)))
        self._unexpected: list[dict[str, Any]] = []

    @property
    def ids(self) -> list[str]:
        """The node ids, in order."""
        return list(self.nodes)

    @property
    def endpoints(self) -> list[str]:
        """Every node's address."""
        return [n.addr for n in self.nodes.values()]

    def addr(self, node_id: str) -> str:
        """``node_id``'s address."""
        return self.nodes[node_id].addr

    # --- processes ---------------------------------------------------------------------------
    def argv(self, node_id: str, join: str | None = None) -> list[str]:
        """The ``serve`` command line of ``node_id`` (a new node joining at ``join``). The
        nodes run without keys (``--insecure``): their addresses are loopback or live in the
        network namespaces the run creates, which only this machine reaches."""
        n = self.nodes[node_id]
        argv = ["serve", "--id", node_id, "--data", str(n.data), "--listen", n.addr]
        argv += ["--config", str(self.config_path), "--insecure"]
        if join is not None:
            argv += ["--join", join]
        else:
            for other in self.nodes.values():
                if other.id != node_id:
                    argv += ["--peer", f"{other.id}={other.addr}"]
        return argv

    def start(self, node_id: str, slow_ms: float | None = None, join: str | None = None) -> None:
        """Starts ``node_id`` (with fsyncs ``slow_ms`` slower; as a new node joining at
        ``join``) unless it runs."""
        n = self.nodes[node_id]
        if self.running(node_id):
            return
        self._collect(n)
        launch = [sys.executable, "-c", LAUNCH]
        if slow_ms is not None:
            launch += ["--fsync-delay", str(slow_ms)]
        cmd = self.net.command(node_id, [*launch, *self.argv(node_id, join)])
        env = {**os.environ, "PYTHONUNBUFFERED": "1", PARENT_ENV: str(os.getpid())}
        with open(n.log, "ab") as logf:
            stamp = f"----- chaos: start {node_id} (slow_ms={slow_ms}, join={join}) -----\n"
            logf.write(stamp.encode())
            logf.flush()
            n.proc = subprocess.Popen(
                cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        n.paused = False
        n.slow_ms = slow_ms
        n.expected_exit = False
        n.starts += 1

    def running(self, node_id: str) -> bool:
        """True while ``node_id``'s process is alive (paused or not)."""
        p = self.nodes[node_id].proc
        return p is not None and p.poll() is None

    def kill(self, node_id: str) -> None:
        """SIGKILLs ``node_id`` and waits for it."""
        n = self.nodes[node_id]
        if n.proc is None:
            return
        if n.proc.poll() is None:  # one that already exited on its own stays unexpected
            n.expected_exit = True
            n.proc.kill()
        n.proc.wait(30)
        n.paused = False

    def stop(self, node_id: str, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stops ``node_id`` with SIGTERM (SIGKILL after ``timeout`` seconds)."""
        n = self.nodes[node_id]
        if n.proc is None:
            return
        if n.proc.poll() is None:
            n.expected_exit = True
            if n.paused:
                n.proc.send_signal(signal.SIGCONT)
            n.proc.send_signal(signal.SIGTERM)
            try:
                n.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                n.proc.kill()
                n.proc.wait(30)
        n.paused = False

    def pause(self, node_id: str) -> None:
        """SIGSTOPs ``node_id``."""
        n = self.nodes[node_id]
        if self.running(node_id) and n.proc is not None:
            n.proc.send_signal(signal.SIGSTOP)
            n.paused = True

    def resume(self, node_id: str) -> None:
        """SIGCONTs ``node_id`` if paused."""
        n = self.nodes[node_id]
        if n.paused and n.proc is not None and n.proc.poll() is None:
            n.proc.send_signal(signal.SIGCONT)
        n.paused = False

    def wipe(self, node_id: str) -> None:
        """Deletes ``node_id``'s data directory (the node must not run)."""
        shutil.rmtree(self.nodes[node_id].data, ignore_errors=True)

    def expect_exit(self, node_id: str) -> None:
        """Marks ``node_id``'s coming exit as expected (it is being removed)."""
        self.nodes[node_id].expected_exit = True

    def _collect(self, n: NodeProc) -> None:
        """Forgets ``n``'s process if it exited, noting an unexpected exit."""
        if n.proc is None or n.proc.poll() is None:
            return
        code = n.proc.returncode
        n.exits.append(code)
        if not n.expected_exit:
            self._unexpected.append({"node": n.id, "status": code, "log_tail": self.log_tail(n.id)})
        n.proc = None
        n.paused = False

    def reap(self) -> list[dict[str, Any]]:
        """The nodes that exited since the last call without the runner stopping them:
        ``{"node", "status", "log_tail"}`` each (their processes are forgotten)."""
        for n in self.nodes.values():
            self._collect(n)
        out, self._unexpected = self._unexpected, []
        return out

    def log_tail(self, node_id: str, chars: int = LOG_TAIL_CHARS) -> str:
        """The end of ``node_id``'s log."""
        try:
            with open(self.nodes[node_id].log, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - chars))
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        """Stops every node (SIGKILL after a short grace) and the status threads."""
        for n in self.nodes.values():
            if n.proc is not None and n.proc.poll() is None:
                n.expected_exit = True
                if n.paused:
                    n.proc.send_signal(signal.SIGCONT)
                n.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for n in self.nodes.values():
            if n.proc is None:
                continue
            try:
                n.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                n.proc.kill()
                n.proc.wait(30)
        self._pool.shutdown(wait=True)

    # --- status ------------------------------------------------------------------------------
    def status(self, node_id: str, timeout: float = 0.5) -> dict[str, Any] | None:
        """``node_id``'s status, or None when it does not answer in time."""
        return probe_status(self.nodes[node_id].addr, timeout)

    def statuses(self, timeout: float = 0.5) -> dict[str, dict[str, Any] | None]:
        """Every running, unpaused node's status (None: no answer), asked in parallel."""
        ids = [i for i in self.ids if self.running(i) and not self.nodes[i].paused]
        futures = {i: self._pool.submit(self.status, i, timeout) for i in ids}
        return {i: f.result() for i, f in futures.items()}

    def leader(self, statuses: dict[str, dict[str, Any] | None] | None = None) -> str | None:
        """The node that says it leads at the highest term, if a majority of the members
        it lists name it (else None)."""
        sts = self.statuses() if statuses is None else statuses
        leaders = [(st["term"], i) for i, st in sts.items() if st and st["role"] == "leader"]
        if not leaders:
            return None
        _, lead = max(leaders)
        st = sts[lead]
        assert st is not None
        voters = st.get("members", {}).get("voters", [])
        agree = sum(1 for v in voters if (sts.get(v) or {}).get("lead") == lead)
        return lead if agree > len(voters) // 2 else None

    def wait_leader(self, timeout: float) -> str:
        """The leader (see ``leader``); raises RequestTimeoutError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            lead = self.leader()
            if lead is not None:
                return lead
            if time.monotonic() >= deadline:
                raise RequestTimeoutError(f"no leader elected within {timeout:.0f} s")
            time.sleep(0.05)
