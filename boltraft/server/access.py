"""Who may do what on a node with CURVE keys: the allow-list of public keys, each bound to a
member id or to a client name with a role, and the checks the node loop makes on every
frame (docs/security.md).

The allow-list starts from the node's keys folder (``known.json``: the nodes and clients
``boltraft keys init`` made) and is overridden, name by name, by the entries the replicated
``keys`` command wrote into the state machine's meta keyspace (``StateMachine.key_records``;
an empty key there revokes the name). Every replica applies the same commands, and the
entries travel in snapshots, so the allow-list is the same cluster-wide at each applied
index.

Roles (``permits``): ``read`` may get, scan, list buckets, count, watch, and ask status,
stats and members; ``write`` adds puts, deletes, batches and bucket changes; ``admin`` adds
everything else (membership, snapshots, backups, leadership transfer, ``hash``, ``keys``).
An op missing from these sets needs ``admin``. A node's own key (role ``node``) may read
and may ``join`` under its own id only.

Peer frames (``raft``, ``fwd``, ``fwdresp``, ``snap``, ``removed``, ``hash``, ``watching``)
are accepted (``admits_peer_frame``) only from a connection whose key is a member's, whose
routing id is that member's id, and, for ``raft``, whose every message names that member as
its sender;
frames that came back on this node's own connection to a peer (whose server proved the
cluster key) must name that peer.

Threads: ``allow`` runs on the ZAP handler's thread; it only reads ``by_key``, which the loop
replaces whole (never changes in place).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, NamedTuple

from boltraft.errors import PermissionDeniedError
from boltraft.server.watching import WATCH_OPS
from boltraft.server.wire import FWD, FWD_RESP, HASH, REMOVED, SNAP, WATCHING
from boltraft.transport.curve import NODE_ROLE, PartyKeys
from boltraft.transport.zmq_transport import Incoming

log = logging.getLogger("boltraft.server")

READ = frozenset(("get", "scan", "buckets", "count", "status", "stats", "members")) | WATCH_OPS
WRITE = READ | {"put", "delete", "create_bucket", "delete_bucket", "next_sequence", "batch"}
PEER_FRAMES = frozenset(("raft", FWD, FWD_RESP, SNAP, REMOVED, HASH, WATCHING))
_RANK = {"read": 0, "write": 1, "admin": 2}


class Principal(NamedTuple):
    """The owner of a key: a member (``kind`` "node", ``role`` "node") or a client."""

    name: str
    kind: str
    role: str


def needs(op: Any) -> str:
    """Returns the least client role allowed to run ``op``."""
    if op in READ:
        return "read"
    if op in WRITE:
        return "write"
    return "admin"


def permits(who: Principal, body: Any) -> bool:
    """True when ``who`` may send the request ``body`` (see the module docstring)."""
    op = body.get("op") if isinstance(body, dict) else None
    if who.kind == "node":
        return op in READ or (op == "join" and body.get("id") == who.name)
    return _RANK.get(who.role, -1) >= _RANK[needs(op)]


def denied(who: Principal | None, body: Any) -> PermissionDeniedError:
    """Returns the error answering ``body`` from ``who`` (None: a key no longer allowed)."""
    op = body.get("op") if isinstance(body, dict) else None
    if who is None:
        return PermissionDeniedError("this key was revoked", needs=needs(op))
    return PermissionDeniedError(
        f"{who.kind} {who.name!r} (role {who.role}) may not run {op!r}",
        role=who.role,
        needs=needs(op),
    )


class Access:
    """The allow-list of one node; owned by the loop's thread (``allow``: any thread)."""

    def __init__(self, keys: PartyKeys) -> None:
        self._base: dict[str, tuple[str, str, str]] = {
            n: ("node", k, NODE_ROLE) for n, k in keys.nodes.items()
        }
        self._base[keys.name] = ("node", keys.public, NODE_ROLE)
        for name, (key, role) in keys.clients.items():
            self._base[name] = ("client", key, role)
        self.by_key: dict[str, Principal] = {}
        self.load({})

    def load(self, records: Mapping[str, tuple[str, str, str]]) -> None:
        """Makes the allow-list the folder's entries overridden by the replicated
        ``records`` (name -> (kind, key, role); an empty key removes the name)."""
        table = {**self._base, **records}
        by_key: dict[str, Principal] = {}
        for name, (kind, key, role) in sorted(table.items()):
            if key:
                by_key[key] = Principal(name, kind, role)
        if by_key != self.by_key:
            log.info("allow-list: %d keys", len(by_key))
        self.by_key = by_key

    def allow(self, key: str) -> bool:
        """True when ``key`` (Z85) may connect (the ZAP handler's question)."""
        return key in self.by_key

    def principal(self, user: str | None) -> Principal | None:
        """Returns the owner of the connection key ``user``, None when it is not allowed
        (never was, or revoked since the connection was made)."""
        return None if user is None else self.by_key.get(user)

    def admits_peer_frame(self, frame: Incoming) -> bool:
        """True when the peer frame ``frame`` comes from the member it claims to (see the
        module docstring)."""
        if frame.peer is not None:
            member = frame.peer
        else:
            who = self.by_key.get(frame.user) if frame.user is not None else None
            if who is None or who.kind != "node" or frame.sender != who.name.encode():
                return False
            member = who.name
        if frame.kind == "raft":
            return all(m.frm == member for m in frame.payload)
        return True
