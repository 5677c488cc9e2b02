"""CurveZMQ keys of a cluster: the key folders on disk, the socket options that turn CURVE on,
and the ZAP authenticator that admits only known client keys (docs/security.md).

A cluster's keys live in one folder per party (``boltraft keys init DIR``):

    DIR/<name>/self.json    mode 0600: {"name", "kind": "node" | "client", "role",
                            "public", "secret"}, and for a node also "server_public",
                            "server_secret" (the key pair every node's ROUTER serves with)
    DIR/<name>/known.json   the public keys the party must know: {"server": key} for a
                            client; a node also has {"nodes": {id: key}, "clients":
                            {name: {"key": key, "role": role}}}, the allow-list it starts from

Keys are Z85 text (40 characters). Every node's ROUTER is a CURVE server with the cluster's
server key pair, so a client needs one public key whatever node it talks to; every party
(client or node) connects with its own key pair, which the server's ZAP handler looks up in
its allow-list (a node: ``boltraft.server.access``) before any frame of the connection is
read. The key a connection authenticated with is the ZeroMQ "User-Id" of every frame it
sends (``zmq.Frame.get("User-Id")``).

Invariants: a loaded ``PartyKeys`` has well-formed keys whose public half matches the secret
one; a secret file readable by group or others is refused.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
import zmq.auth.thread

from boltraft.errors import ConfigError

ROLES = ("read", "write", "admin")
NODE_ROLE = "node"  # the role of a node's own key in the allow-list
SELF_FILE = "self.json"
KNOWN_FILE = "known.json"
ZAP_DOMAIN = "boltraft"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_Z85 = re.compile(r"[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}")


def check_name(name: Any, what: str = "name") -> str:
    """Returns ``name`` when it can name a party (a node id or client name that is also a
    safe folder name: 1..64 of letters, digits, ``_ . -``, not starting with a sign);
    raises ConfigError otherwise."""
    if type(name) is not str or not _NAME.fullmatch(name):
        raise ConfigError(f"invalid {what} {name!r} (1..64 of A-Z a-z 0-9 _ . -)")
    return name


def check_key(key: Any, what: str = "key") -> str:
    """Returns ``key`` when it is a Z85 CURVE key (40 characters); raises ConfigError."""
    if type(key) is not str or not _Z85.fullmatch(key):
        raise ConfigError(f"{what} is not a Z85 CURVE key (40 characters)")
    return key


def check_role(role: Any) -> str:
    """Returns ``role`` when it is one of ``ROLES``; raises ConfigError."""
    if role not in ROLES:
        raise ConfigError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    return str(role)


@dataclass(frozen=True, slots=True)
class PartyKeys:
    """What one party holds (see the module docstring). ``server_secret`` is "" for a
    client; ``nodes`` and ``clients`` are empty for a client."""

    name: str
    kind: str
    role: str
    public: str
    secret: str
    server_public: str
    server_secret: str = ""
    nodes: dict[str, str] = field(default_factory=dict)
    clients: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (key, role)
    path: Path | None = None


def new_keypair() -> tuple[str, str]:
    """Returns a fresh (public, secret) CURVE key pair as Z85 text."""
    pub, sec = zmq.curve_keypair()
    return pub.decode("ascii"), sec.decode("ascii")


def public_of(secret: str) -> str:
    """Returns the public key of the Z85 ``secret`` key."""
    return zmq.curve_public(secret.encode("ascii")).decode("ascii")


def _read_json(p: Path) -> dict[str, Any]:
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{p} is missing (not a boltraft keys folder?)", path=str(p)) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {p}: {exc}", path=str(p)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p} does not hold a JSON object", path=str(p))
    return data


def load_keys(folder: str | os.PathLike[str]) -> PartyKeys:
    """Returns the keys of the party folder ``folder``. Raises ConfigError when a file is
    missing or malformed, a key pair does not match, or ``self.json`` can be read by group
    or others."""
    root = Path(folder)
    own = root / SELF_FILE
    try:
        mode = own.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"no keys at {root}: {exc.strerror}", path=str(root)) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{own} holds a secret key: make it mode 0600", path=str(own))
    me, known = _read_json(own), _read_json(root / KNOWN_FILE)
    try:
        name = check_name(me.get("name"))
        kind = me.get("kind")
        if kind not in ("node", "client"):
            raise ConfigError(f"{own}: kind must be node or client")
        role = NODE_ROLE if kind == "node" else check_role(me.get("role"))
        public, secret = check_key(me.get("public")), check_key(me.get("secret"))
        server_public = check_key(known.get("server"), "the server key")
        server_secret = ""
        if kind == "node":
            server_secret = check_key(me.get("server_secret"), "the server secret key")
            if public_of(server_secret) != server_public:
                raise ConfigError(f"{root}: the server key pair does not match")
        if public_of(secret) != public:
            raise ConfigError(f"{own}: the key pair does not match")
        nodes = {check_name(k, "node id"): check_key(v) for k, v in known.get("nodes", {}).items()}
        clients = {
            check_name(k, "client name"): (check_key(v.get("key")), check_role(v.get("role")))
            for k, v in known.get("clients", {}).items()
        }
    except (AttributeError, TypeError):
        raise ConfigError(f"{root}: malformed keys files", path=str(root)) from None
    return PartyKeys(
        name, kind, role, public, secret, server_public, server_secret, nodes, clients, root
    )


def _write(p: Path, data: Mapping[str, Any], mode: int) -> None:
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")


def write_party(parent: Path, keys: PartyKeys) -> Path:
    """Returns the new folder ``parent/<name>`` holding ``keys`` (``self.json`` mode 0600).
    Raises ConfigError when that folder already exists."""
    folder = parent / keys.name
    try:
        folder.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        raise ConfigError(f"{folder} already exists", path=str(folder)) from None
    me: dict[str, Any] = {
        "name": keys.name,
        "kind": keys.kind,
        "role": keys.role,
        "public": keys.public,
        "secret": keys.secret,
    }
    known: dict[str, Any] = {"server": keys.server_public}
    if keys.kind == "node":
        me["server_public"] = keys.server_public
        me["server_secret"] = keys.server_secret
        known["nodes"] = dict(keys.nodes)
        known["clients"] = {n: {"key": k, "role": r} for n, (k, r) in keys.clients.items()}
    _write(folder / SELF_FILE, me, 0o600)
    _write(folder / KNOWN_FILE, known, 0o644)
    return folder


def parse_clients(specs: Iterable[str]) -> dict[str, str]:
    """Returns name -> role of ``NAME:ROLE`` specs; raises ConfigError for a bad one or a
    name given twice."""
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, role = spec.partition(":")
        if not sep:
            raise ConfigError(f"client {spec!r}: write NAME:ROLE (role: {', '.join(ROLES)})")
        if name in out:
            raise ConfigError(f"client {name!r} given twice")
        out[check_name(name, "client name")] = check_role(role)
    return out


def init_keys(
    parent: str | os.PathLike[str], nodes: Iterable[str], clients: Mapping[str, str]
) -> list[Path]:
    """Returns the party folders created under ``parent``: one per node id in ``nodes`` and
    per client name -> role in ``clients``, with a fresh server key pair shared by the
    nodes. Raises ConfigError for a bad or repeated name (nothing is written then) or a
    folder that already exists."""
    node_ids = [check_name(n, "node id") for n in nodes]
    if not node_ids:
        raise ConfigError("at least one node is needed")
    names = node_ids + [check_name(c, "client name") for c in clients]
    if len(set(names)) != len(names):
        raise ConfigError("every node id and client name must differ")
    for c in clients.values():
        check_role(c)
    root = Path(parent)
    taken = [n for n in names if (root / n).exists()]
    if taken:
        raise ConfigError(f"{root} already has folders for {', '.join(taken)}", path=str(root))
    server_public, server_secret = new_keypair()
    pairs = {n: new_keypair() for n in names}
    node_keys = {n: pairs[n][0] for n in node_ids}
    client_keys = {c: (pairs[c][0], r) for c, r in clients.items()}
    out = []
    for n in node_ids:
        pub, sec = pairs[n]
        keys = PartyKeys(
            n, "node", NODE_ROLE, pub, sec, server_public, server_secret, node_keys, client_keys
        )
        out.append(write_party(root, keys))
    for c, r in clients.items():
        pub, sec = pairs[c]
        out.append(write_party(root, PartyKeys(c, "client", r, pub, sec, server_public)))
    return out


def find_node_folder(parent: str | os.PathLike[str]) -> PartyKeys:
    """Returns the keys of a node folder under ``parent`` (the first in name order): where
    a new party's folder gets the server key and the members' keys from. Raises
    ConfigError when ``parent`` holds none."""
    root = Path(parent)
    try:
        entries = sorted(p for p in root.iterdir() if (p / SELF_FILE).is_file())
    except OSError as exc:
        raise ConfigError(f"cannot list {root}: {exc.strerror}", path=str(root)) from None
    for p in entries:
        keys = load_keys(p)
        if keys.kind == "node":
            return keys
    raise ConfigError(f"{root} holds no node's keys folder", path=str(root))


def add_party(
    parent: str | os.PathLike[str],
    name: str,
    kind: str,
    role: str,
    pair: tuple[str, str] | None = None,
) -> PartyKeys:
    """Returns the keys of a new party folder ``parent/<name>`` (``kind`` "node" or
    "client" with ``role``), with the key ``pair`` (public, secret; default: a fresh one)
    and the cluster's public keys taken from a node folder under ``parent``. Raises
    ConfigError as ``find_node_folder`` and ``write_party`` do, or for a bad name or
    role."""
    check_name(name)
    node = find_node_folder(parent)
    pub, sec = pair or new_keypair()
    if kind == "node":
        keys = PartyKeys(
            name,
            "node",
            NODE_ROLE,
            pub,
            sec,
            node.server_public,
            node.server_secret,
            {**node.nodes, name: pub},
            dict(node.clients),
        )
    else:
        keys = PartyKeys(name, "client", check_role(role), pub, sec, node.server_public)
    folder = write_party(Path(parent), keys)
    return load_keys(folder)


def client_options(keys: PartyKeys) -> dict[int, Any]:
    """Returns the socket options of a CURVE client with ``keys`` (set before connect)."""
    return {
        zmq.CURVE_SERVERKEY: keys.server_public.encode("ascii"),
        zmq.CURVE_PUBLICKEY: keys.public.encode("ascii"),
        zmq.CURVE_SECRETKEY: keys.secret.encode("ascii"),
    }


def server_options(keys: PartyKeys) -> dict[int, Any]:
    """Returns the socket options of a node's ROUTER as a CURVE server (set before bind)."""
    return {
        zmq.CURVE_SERVER: 1,
        zmq.CURVE_PUBLICKEY: keys.server_public.encode("ascii"),
        zmq.CURVE_SECRETKEY: keys.server_secret.encode("ascii"),
        zmq.ZAP_DOMAIN: ZAP_DOMAIN.encode("ascii"),
    }


class _Provider:
    """pyzmq's credentials provider: asks ``allow`` about each connecting key."""

    def __init__(self, allow: Callable[[str], bool]) -> None:
        self._allow = allow

    def callback(self, domain: str, key: bytes) -> bool:
        return domain == ZAP_DOMAIN and self._allow(key.decode("ascii"))


class Authenticator:
    """A ZAP handler thread on ``ctx`` that admits a CURVE client when ``allow(key)`` (Z85
    text) is true; the connection's frames then carry that key as their "User-Id".
    ``allow`` runs on the handler's thread: it must only read shared state."""

    def __init__(self, ctx: zmq.Context, allow: Callable[[str], bool]) -> None:
        self._auth = zmq.auth.thread.ThreadAuthenticator(ctx, log=None)
        self._auth.start()
        self._auth.configure_curve_callback(ZAP_DOMAIN, _Provider(allow))

    def stop(self) -> None:
        """Stops the handler thread (call once, before the context terminates)."""
        self._auth.stop()
