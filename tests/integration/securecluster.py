"""A Cluster of real ``boltraft serve`` processes with CurveZMQ keys (``boltraft keys init``
under ``<root>/keys``: nodes n1..nN and the clients admin, app (write) and ro (read)), and
the tools of an attacker: raw DEALERs with or without keys that wait for the server's
verdict on their handshake (a socket monitor event, never a bare sleep)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
import zmq
from zmq.utils.monitor import recv_monitor_message

from boltraft.client import Client
from boltraft.server.probe import status
from boltraft.transport.codec import PROTOCOL_VERSION, decode_frame
from boltraft.transport.curve import PartyKeys, init_keys, load_keys

from .cluster import Cluster, wait_until

CLIENTS = {"admin": "admin", "app": "write", "ro": "read"}
HANDSHAKE_REFUSED = (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_AUTH)


class SecureCluster(Cluster):
    """``n`` nodes started with ``--keys <root>/keys/<id>``; ``keys(name)`` loads a party's
    keys; ``client(name)`` is a Client with them."""

    def __init__(self, root: Path, n: int = 3, tick_ms: int = 50) -> None:
        super().__init__(root, n, tick_ms)
        self.keys_dir = root / "keys"
        init_keys(self.keys_dir, self.ids, CLIENTS)

    def argv(self, node_id: str) -> list[str]:
        return [*super().argv(node_id), "--keys", str(self.keys_dir / node_id)]

    def keys(self, name: str) -> PartyKeys:
        return load_keys(self.keys_dir / name)

    def status(self, node_id: str, timeout: float = 0.5) -> dict[str, Any] | None:
        return status(self.addrs[node_id], timeout, keys=self.keys("admin"))

    def client(self, name: str = "admin", *nodes: str, timeout: float = 10.0) -> Client:
        eps = [self.addrs[n] for n in nodes] if nodes else self.endpoints
        return Client(eps, timeout=timeout, keys=self.keys(name))


def attacker(addr: str, keys: PartyKeys | None = None, identity: bytes | None = None) -> Any:
    """Returns (DEALER, its monitor) connected to ``addr``, speaking CURVE with ``keys`` (any
    keys: the server decides) or plain ZeroMQ without, with routing ``identity``."""
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    if identity is not None:
        s.setsockopt(zmq.IDENTITY, identity)
    if keys is not None:
        s.curve_serverkey = keys.server_public.encode()
        s.curve_publickey = keys.public.encode()
        s.curve_secretkey = keys.secret.encode()
    monitor = s.get_monitor_socket()
    s.connect(addr)
    return s, monitor


def close_attacker(sock: Any, monitor: Any) -> None:
    """Closes an ``attacker`` socket and its monitor (freeing the monitor's address)."""
    sock.disable_monitor()
    monitor.close(0)
    sock.close(0)


def handshake_verdict(monitor: Any, timeout: float = 10.0) -> int:
    """Returns the first handshake event of ``monitor``'s socket: succeeded, or one of
    ``HANDSHAKE_REFUSED``; raises AssertionError after ``timeout`` seconds without one."""
    wanted = (zmq.EVENT_HANDSHAKE_SUCCEEDED, *HANDSHAKE_REFUSED)

    def event() -> int | None:
        while monitor.poll(50):
            ev = recv_monitor_message(monitor)["event"]
            if ev in wanted:
                return int(ev)
        return None

    return int(wait_until(event, timeout, "a handshake verdict"))


def send_then_probe(sock: Any, *frames: Any, timeout: float = 10.0) -> dict[str, Any]:
    """Sends the msgpack ``frames`` on ``sock``, then a ``status`` request behind them, and
    returns its answer map: the node handled the frames before it."""
    for f in frames:
        sock.send(f if isinstance(f, bytes) else msgpack.packb(f))
    sock.send(msgpack.packb([PROTOCOL_VERSION, "req", 424242, {"op": "status"}]))
    deadline_ms = int(timeout * 1000)
    while True:
        assert sock.poll(deadline_ms), "the node did not answer the probe"
        frame = decode_frame(sock.recv())
        if frame.kind == "resp" and frame.payload.request_id == 424242:
            assert frame.payload.ok, frame.payload.error
            result: dict[str, Any] = frame.payload.result
            return result


def msg(
    typ: int,
    to: str,
    frm: str,
    term: int,
    *,
    log_term: int = 0,
    index: int = 0,
    entries: list[Any] | None = None,
    commit: int = 0,
) -> list[Any]:
    """A Raft message as the codec packs it (boltraft.transport.codec)."""
    return [typ, to, frm, term, log_term, index, entries or [], commit, False, 0, 0, b"", None]


def raft(*msgs: list[Any]) -> list[Any]:
    """A ``raft`` frame carrying ``msgs``."""
    return [PROTOCOL_VERSION, "raft", list(msgs)]
