"""Where the nodes of ``chaos run`` live on the network, and how it is cut.

Two networks:

- ``Namespaces`` (root only, with ``ip`` and ``iptables``): each node runs in its own network
  namespace, joined by a veth pair to a bridge in the root namespace; the bridge and the
  nodes get addresses from a private /24 (``10.213.X.0/24``) that no interface or route of the
  machine uses. Clients in the runner reach the nodes through the bridge. A partition is
  iptables DROP rules inside a node's namespace, against the other nodes' addresses only
  (clients still reach it): both ways, or one way (``in``: it hears nobody; ``out``: nobody
  hears it). ``heal`` flushes them.
- ``Loopback``: every node on 127.0.0.1 at a free port; nothing can be partitioned.

Everything a ``Namespaces`` creates is named after the runner's process id: namespaces
``brchaos-<pid>-<node>``, links ``brc<pid>b`` (the bridge) and ``brc<pid>v<i>`` (a veth's
root end; the other end is ``eth0`` inside the node's namespace). The runner holds an
``flock`` on ``/run/boltraft-chaos/<pid>.lock`` while it lives, so ``clean_stale`` (called
before a new network is made) can tell the leftovers of a runner that died (no lock held)
from those of one still running, and remove them: it kills the processes still in their
namespaces, then deletes namespaces and links. Deleting a namespace deletes its rules and
its veth pair.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Protocol

from boltraft.errors import SetupFailedError

NS_PREFIX = "brchaos-"
LINK_PREFIX = "brc"
LOCK_DIR = Path("/run/boltraft-chaos")
SUBNETS = "10.213.0.0/16"  # one /24 of it per run
PORT = 7000  # every node listens on this port in its own namespace
DIRECTIONS = ("both", "in", "out")

_NS_RE = re.compile(r"^brchaos-(\d+)-")
_LINK_RE = re.compile(r"^brc(\d+)[bv]")


class Network(Protocol):
    """Where the nodes listen and how they are partitioned."""

    kind: str

    def address(self, node_id: str) -> str:
        """``tcp://HOST:PORT`` that ``node_id`` listens on (the same for its whole life)."""
        ...

    def command(self, node_id: str, argv: Sequence[str]) -> list[str]:
        """The command line that runs ``argv`` where ``node_id`` lives."""
        ...

    def isolate(self, node_id: str, others: Sequence[str], direction: str = "both") -> None:
        """Drops the traffic between ``node_id`` and ``others``: ``both`` ways, ``in`` (what
        they send it) or ``out`` (what it sends them)."""
        ...

    def heal(self) -> None:
        """Removes every partition rule."""
        ...

    def close(self) -> None:
        """Removes everything this network created."""
        ...


def _run(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise SetupFailedError(
            f"{' '.join(argv)}: {(proc.stderr or proc.stdout).strip() or proc.returncode}",
            command=list(argv),
        )
    return proc


def namespaces_unsupported() -> str:
    """Why this machine cannot run nodes in network namespaces ("" when it can): root, the
    ``ip`` and ``iptables`` commands, and a namespace with a working filter table."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"the {tool!r} command is missing (apt-get install iproute2 iptables)"
    probe = f"{NS_PREFIX}{os.getpid()}-probe"
    try:
        made = _run(["ip", "netns", "add", probe], check=False)
        if made.returncode != 0:
            return f"ip netns add failed: {made.stderr.strip()}"
        rule = _run(["ip", "netns", "exec", probe, "iptables", "-S", "INPUT"], check=False)
        if rule.returncode != 0:
            return f"iptables does not work in a namespace: {rule.stderr.strip()}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"ip netns failed: {exc}"
    finally:
        _run(["ip", "netns", "del", probe], check=False)
    return ""


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports on 127.0.0.1 that were free a moment ago."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Loopback:
    """Every node on 127.0.0.1 at a port free when the network was made."""

    kind = "loopback"

    def __init__(self, node_ids: Sequence[str]) -> None:
        self._ports = dict(zip(node_ids, free_ports(len(node_ids)), strict=True))

    def address(self, node_id: str) -> str:
        return f"tcp://127.0.0.1:{self._ports[node_id]}"

    def command(self, node_id: str, argv: Sequence[str]) -> list[str]:
        return list(argv)

    def isolate(self, node_id: str, others: Sequence[str], direction: str = "both") -> None:
        raise SetupFailedError("the loopback network cannot be partitioned")

    def heal(self) -> None:
        pass

    def close(self) -> None:
        pass


# --- namespaces ------------------------------------------------------------------------------
def _lock_path(pid: int) -> Path:
    return LOCK_DIR / f"{pid}.lock"


def _runner_alive(pid: int) -> bool:
    """True while runner ``pid`` holds its lock (a runner that died holds none)."""
    path = _lock_path(pid)
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def _netns_names() -> list[str]:
    out = _run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _link_names() -> list[str]:
    out = _run(["ip", "-o", "link", "show"], check=False).stdout
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@")[0])
    return names


def _kill_namespace_processes(ns: str) -> None:
    pids = _run(["ip", "netns", "pids", ns], check=False).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (OSError, ValueError):
            pass


def clean_stale() -> list[str]:
    """Removes the namespaces and links of ``chaos run`` runners that no longer live (their
    processes killed first); returns what it removed."""
    removed: list[str] = []
    owners: dict[int, bool] = {}

    def dead(pid: int) -> bool:
        if pid not in owners:
            owners[pid] = not _runner_alive(pid)
        return owners[pid]

    for ns in _netns_names():
        m = _NS_RE.match(ns)
        if m and dead(int(m.group(1))):
            _kill_namespace_processes(ns)
            _run(["ip", "netns", "del", ns], check=False)
            removed.append(ns)
    for link in _link_names():
        m = _LINK_RE.match(link)
        if m and dead(int(m.group(1))):
            _run(["ip", "link", "del", link], check=False)
            removed.append(link)
    for lock in LOCK_DIR.glob("*.lock") if LOCK_DIR.is_dir() else ():
        if lock.stem.isdigit() and dead(int(lock.stem)):
            lock.unlink(missing_ok=True)
    return removed


def _used_networks() -> list[ipaddress.IPv4Network]:
    used = []
    for argv in (["ip", "-o", "-4", "addr", "show"], ["ip", "-o", "-4", "route", "show"]):
        for token in _run(argv, check=False).stdout.split():
            try:
                used.append(ipaddress.IPv4Network(token, strict=False))
            except ValueError:
                continue
    return used


def pick_subnet(pid: int, used: Sequence[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    """A /24 of SUBNETS that overlaps none of ``used`` (tried from ``pid``'s own onwards);
    raises SetupFailedError when there is none."""
    subnets = list(ipaddress.IPv4Network(SUBNETS).subnets(new_prefix=24))
    for i in range(len(subnets)):
        net = subnets[(pid + i) % len(subnets)]
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return net
    raise SetupFailedError(f"no free /24 in {SUBNETS} for the chaos network")


class Namespaces:
    """Each node in its own network namespace behind a bridge (see the module docstring).

    Made by ``Namespaces(node_ids)``; ``close()`` removes it all (also what a failed
    construction had made). Raises SetupFailedError when a command fails."""

    kind = "netns"

    def __init__(self, node_ids: Sequence[str]) -> None:
        self.pid = os.getpid()
        self.node_ids = list(node_ids)
        self._lock: IO[bytes] | None = None
        self._made_links: list[str] = []
        self._made_ns: list[str] = []
        self._rules: set[str] = set()  # namespaces holding partition rules
        try:
            self._take_lock()
            clean_stale()
            self._build()
        except BaseException:
            self.close()
            raise

    def _take_lock(self) -> None:
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        self._lock = open(_lock_path(self.pid), "wb")  # noqa: SIM115 (held until close)
        fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX)

    def _build(self) -> None:
        subnet = pick_subnet(self.pid, _used_networks())
        hosts = list(subnet.hosts())
        self.prefixlen = subnet.prefixlen
        self.bridge_ip = str(hosts[0])
        self.ips = {nid: str(hosts[9 + i]) for i, nid in enumerate(self.node_ids)}
        self.bridge = f"{LINK_PREFIX}{self.pid}b"
        _run(["ip", "link", "add", self.bridge, "type", "bridge"])
        self._made_links.append(self.bridge)
        _run(["ip", "addr", "add", f"{self.bridge_ip}/{self.prefixlen}", "dev", self.bridge])
        _run(["ip", "link", "set", self.bridge, "up"])
        for i, nid in enumerate(self.node_ids):
            ns = self.namespace(nid)
            _run(["ip", "netns", "add", ns])
            self._made_ns.append(ns)
            host_end = f"{LINK_PREFIX}{self.pid}v{i}"
            veth = ["type", "veth", "peer", "name", "eth0", "netns", ns]
            _run(["ip", "link", "add", host_end, *veth])
            self._made_links.append(host_end)
            _run(["ip", "link", "set", host_end, "master", self.bridge])
            _run(["ip", "link", "set", host_end, "up"])
            inside = ["ip", "netns", "exec", ns, "ip"]
            _run([*inside, "addr", "add", f"{self.ips[nid]}/{self.prefixlen}", "dev", "eth0"])
            _run([*inside, "link", "set", "eth0", "up"])
            _run([*inside, "link", "set", "lo", "up"])

    def namespace(self, node_id: str) -> str:
        """The name of ``node_id``'s network namespace."""
        return f"{NS_PREFIX}{self.pid}-{node_id}"

    def address(self, node_id: str) -> str:
        return f"tcp://{self.ips[node_id]}:{PORT}"

    def command(self, node_id: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespace(node_id), *argv]

    def isolate(self, node_id: str, others: Sequence[str], direction: str = "both") -> None:
        if direction not in DIRECTIONS:
            raise SetupFailedError(f"a partition is one of {DIRECTIONS}, not {direction!r}")
        ns = self.namespace(node_id)
        ipt = ["ip", "netns", "exec", ns, "iptables", "-w", "5"]
        self._rules.add(ns)
        for other in others:
            ip = self.ips[other]
            if direction in ("both", "in"):
                _run([*ipt, "-A", "INPUT", "-s", ip, "-j", "DROP"])
            if direction in ("both", "out"):
                _run([*ipt, "-A", "OUTPUT", "-d", ip, "-j", "DROP"])

    def heal(self) -> None:
        for ns in sorted(self._rules):
            _run(["ip", "netns", "exec", ns, "iptables", "-w", "5", "-F"])
        self._rules.clear()

    def close(self) -> None:
        for ns in reversed(self._made_ns):
            _kill_namespace_processes(ns)
            _run(["ip", "netns", "del", ns], check=False)
        self._made_ns.clear()
        for link in reversed(self._made_links):
            if link in _link_names():
                _run(["ip", "link", "del", link], check=False)
        self._made_links.clear()
        self._rules.clear()
        if self._lock is not None:
            _lock_path(self.pid).unlink(missing_ok=True)
            self._lock.close()
            self._lock = None


def make_network(node_ids: Sequence[str], want_namespaces: bool) -> tuple[Network, str]:
    """The network for ``node_ids``: namespaces when wanted and possible, else loopback;
    and why namespaces were not used ("" when they were, or were not wanted)."""
    if not want_namespaces:
        return Loopback(node_ids), ""
    why = namespaces_unsupported()
    if why:
        return Loopback(node_ids), why
    return Namespaces(node_ids), ""
