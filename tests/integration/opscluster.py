"""A Cluster whose extra nodes start with ``serve --join`` (membership, snapshot tests)."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any

from boltraft.client import Client
from boltraft.errors import BoltraftError

from .cluster import Cluster, free_ports, wait_until

# knobs of tests/faults.py, not server settings
FAULT_KEYS = ("snapshot_crash_at", "snapshot_drop_chunk", "clock_ahead_s")
FAULTS_FILE = "faults.json"
SERVE_WITH_FAULTS = (
    f"import sys; sys.path.insert(0, {str(Path(__file__).parents[1])!r}); "
    "from faults import serve_main; serve_main()"
)


def write_config(root: Path, config: dict[str, Any]) -> None:
    """Writes ``config`` for the nodes' next start: server settings to the config file
    every node reads, fault knobs (``FAULT_KEYS``) to the faults file its launcher reads."""
    server = {k: v for k, v in config.items() if k not in FAULT_KEYS}
    faults = {k: v for k, v in config.items() if k in FAULT_KEYS}
    (root / "node-config.json").write_text(json.dumps(server))
    (root / FAULTS_FILE).write_text(json.dumps(faults))


class OpsCluster(Cluster):
    """``n`` founding nodes plus nodes added with ``add_joiner``; ``config`` is written to a
    JSON config file every node reads, its fault knobs to the faults file of the launcher
    (``tests/faults.py``) every node starts through."""

    def __init__(self, root: Path, n: int = 3, config: dict[str, Any] | None = None) -> None:
        write_config(root, config or {})
        cfg = root / "node-config.json"
        super().__init__(root, n, extra_args=("--config", str(cfg)))
        self.join_via: dict[str, str] = {}

    def serve_argv(self) -> list[str]:
        """The launcher: ``boltraft`` with the faults file's knobs installed."""
        return [sys.executable, "-c", SERVE_WITH_FAULTS]

    def argv(self, node_id: str) -> list[str]:
        """Returns the command line: founding nodes list peers, joiners give --join."""
        if node_id not in self.join_via:
            return [*super().argv(node_id), "--faults", str(self.root / FAULTS_FILE)]
        argv = [*self.serve_argv(), "serve", "--id", node_id]
        argv += ["--data", str(self.root / node_id), "--listen", self.addrs[node_id]]
        argv += ["--tick-ms", str(self.tick_ms), *self.extra_args]
        return [*argv, "--join", self.join_via[node_id], "--faults", str(self.root / FAULTS_FILE)]

    def add_joiner(self, node_id: str, via: str) -> None:
        """Returns None once ``node_id`` was launched with ``--join via``."""
        self.addrs[node_id] = f"tcp://127.0.0.1:{free_ports(1)[0]}"
        self.join_via[node_id] = via
        self.start(node_id)

    def members(self, timeout: float = 5.0) -> dict[str, Any]:
        """Returns the leader's view of the membership."""
        lead = self.wait_for_leader()
        with Client([self.addrs[lead]], timeout=timeout) as c:
            return c.members(self.addrs[lead])

    def wait_voter(self, node_id: str, timeout: float = 60.0) -> None:
        """Returns None once the leader lists ``node_id`` as a voter."""

        def ok() -> bool:
            try:
                return node_id in self.members()["voters"]
            except (BoltraftError, AssertionError):
                return False

        wait_until(ok, timeout, f"{node_id} to be a voter", interval=0.2)


class Writer(threading.Thread):
    """Writes ``w-<i>`` keys to bucket ``b`` until stopped; ``acked`` holds the keys whose
    write was acknowledged."""

    def __init__(self, endpoints: list[str], bucket: str = "b") -> None:
        super().__init__(daemon=True)
        self.endpoints = endpoints
        self.bucket = bucket
        self.acked: list[bytes] = []
        self.errors = 0
        self._stop_evt = threading.Event()

    def run(self) -> None:
        with Client(self.endpoints, timeout=10.0) as c:
            i = 0
            while not self._stop_evt.is_set():
                key = f"w-{i:07d}".encode()
                try:
                    c.put(self.bucket, key, key)
                    self.acked.append(key)
                except BoltraftError:
                    self.errors += 1
                i += 1

    def stop(self) -> None:
        """Returns None once the writer thread ended."""
        self._stop_evt.set()
        self.join(30)
