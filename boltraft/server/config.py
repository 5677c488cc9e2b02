"""The configuration of one node and how it is assembled.

Sources, strongest first: command-line flags, a config file (``--config FILE``, JSON or TOML,
chosen by the ``.toml`` suffix), then ``DATA/node.json`` (written on the first start, so a
restarted node needs only ``--data``). Config file keys (all optional except where noted):

| key | type | default | meaning |
|---|---|---|---|
| ``id`` | str | node.json | this node's id (required on first start) |
| ``data`` | str | (flag) | the data directory |
| ``listen`` | str | node.json | ``tcp://HOST:PORT`` the ROUTER binds (required on first start) |
| ``peers`` | table id -> addr, or list of ``"ID=ADDR"`` | node.json | the OTHER initial members |
| ``tick_ms`` | int | 100 | length of one Raft tick |
| ``election_tick`` | int | 10 | election timeout, in ticks |
| ``heartbeat_tick`` | int | 1 | heartbeat interval, in ticks |
| ``pre_vote`` / ``check_quorum`` | bool | true | Raft options |
| ``lazy_commit`` | bool | true | followers learn a commit with the next append or heartbeat |
| ``lazy_apply`` | bool | true | followers apply committed entries in batches, when idle (node.py) |
| ``spare_append_ms`` | int | 10 | followers a quorum does not need: entries in batches (0: off) |
| ``fsync`` | bool | true | fsync the Raft log before acknowledging (off only for tests) |
| ``log_store`` | str | wal | the Raft log: ``wal`` or ``lmdb``; an existing log keeps its kind |
| ``max_batch`` | int | 4096 | most client writes grouped into one proposal |
| ``dedup_window_ms`` | int | 600000 | how long a (cid, seq) is remembered for retries |
| ``request_timeout_ms`` | int | 1000 | a forwarded write or pending read is failed after this |
| ``max_inflight_bytes`` | int | 4194304 | entry data sent to a follower and not yet acknowledged |
| ``max_apply_bytes`` | int | 1048576 | entry data handed to the state machine per Ready |
| ``max_client_pending_bytes`` | int | 8388608 | one connection's unanswered requests (frames) |
| ``max_pending_bytes`` | int | 67108864 | ... all connections' (``overloaded`` past either) |
| ``snapshot_entries`` | int | 100000 | snapshot after this many applied entries since the last |
| ``snapshot_log_bytes`` | int | 67108864 | ... or after this many bytes of applied command data |
| ``snapshot_keep_entries`` | int | 5000 | log entries kept below a snapshot when compacting |
| ``snapshot_retain`` | int | 2 | snapshots kept in DATA/snapshots |
| ``snapshot_chunk_bytes`` | int | 1048576 | snapshot transfer chunk size (at most 8 MiB) |
| ``snapshot_window`` | int | 8 | snapshot chunks requested and not yet received |
| ``snapshot_write_mb_s`` | int | 120 | rate limit of writing a snapshot copy, MB/s (0: none) |
| ``watch_history_events`` | int | 100000 | changes kept for watches to resume from (0: none) |
| ``watch_history_bytes`` | int | 67108864 | ... at most this many bytes of their keys and values |
| ``watch_max_lag`` | int | 10000 | a watch this far behind with a full window: ``watch_lagged`` |
| ``watch_max`` | int | 10000 | watches one node serves at once |
| ``metrics_addr`` | str | "" | ``HOST:PORT`` serving ``/metrics``, ``/healthz``, ``/readyz`` |
| ``corrupt_check_ms`` | int | 0 | the leader compares the replicas' hashes this often (0: never) |
| ``keys`` | str | node.json | this node's CURVE keys folder (docs/security.md) |
| ``insecure`` | bool | false | serve without keys on an address other than loopback |

A node without ``keys`` refuses to listen on an address other than loopback unless
``insecure`` is set (``check_secure``). The keys folder is remembered in node.json as an
absolute path, so a restart without ``--keys`` serves with the same keys; a ``keys`` given
on a restart replaces the remembered folder (and is remembered from then on), and ``""``
(``--keys ''``) forgets it: the node serves without keys.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from boltraft.errors import ConfigError
from boltraft.server import defaults, intake
from boltraft.server.datadir import NodeInfo

_INT_KEYS = {
    "tick_ms": 1,
    "election_tick": 2,
    "heartbeat_tick": 1,
    "max_batch": 1,
    "dedup_window_ms": 0,
    "request_timeout_ms": 1,
    "corrupt_check_ms": 0,
    "spare_append_ms": 0,
    "max_inflight_bytes": 1,
    "max_apply_bytes": 1,
    "max_client_pending_bytes": 1,
    "max_pending_bytes": 1,
    "snapshot_entries": 1,
    "snapshot_log_bytes": 1,
    "snapshot_keep_entries": 0,
    "snapshot_retain": 1,
    "snapshot_chunk_bytes": 4096,
    "snapshot_window": 1,
    "snapshot_write_mb_s": 0,
    "watch_history_events": 0,
    "watch_history_bytes": 1,
    "watch_max_lag": 1,
    "watch_max": 0,
}
MAX_SNAPSHOT_CHUNK = 8 << 20  # a chunk frame stays well under the transport's frame limit
_BOOL_KEYS = ("pre_vote", "check_quorum", "lazy_commit", "lazy_apply", "fsync", "insecure")
LOG_STORES = (defaults.LOG_STORE, "lmdb")  # log_store values; the first: a new node's default


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything one node needs to run.

    Invariants: ``id`` not in ``peers``; ``heartbeat_tick < election_tick``; every address is
    ``tcp://HOST:PORT``.
    """

    id: str
    data: Path
    listen: str
    peers: dict[str, str] = field(default_factory=dict)
    tick_ms: int = defaults.TICK_MS
    election_tick: int = defaults.ELECTION_TICK
    heartbeat_tick: int = defaults.HEARTBEAT_TICK
    pre_vote: bool = True
    check_quorum: bool = True
    lazy_commit: bool = True  # boltraft.raft.config.Config.lazy_commit
    lazy_apply: bool = True  # boltraft.server.node: a follower's applies wait for a batch
    spare_append_ms: int = 10  # boltraft.server.spare; 0: every append leaves at once
    fsync: bool = True
    log_store: str | None = None  # one of LOG_STORES; None: the data dir's kind, else "wal"
    max_batch: int = 4096
    dedup_window_ms: int = 600_000
    # no longer than the Python client's attempt timeout (1 s): a request a node holds is
    # answered before the client gives up on the attempt and tries another node
    request_timeout_ms: int = 1_000
    # Memory bounds. max_inflight_bytes: what a lagging follower is sent at once, and so
    # what the leader and the follower hold for it (frames, decoded entries, one log
    # append) while it catches up. max_apply_bytes: what one Ready hands to the state
    # machine (a follower with lazy_apply adds what it kept); LMDB keeps the pages of
    # its largest write transaction allocated for reuse.
    max_inflight_bytes: int = 4 << 20
    max_apply_bytes: int = 1 << 20
    # boltraft.server.intake: the bytes of client request frames a node holds unanswered,
    # per connection and in all; a frame past either is answered overloaded
    max_client_pending_bytes: int = intake.MAX_CLIENT_PENDING_BYTES
    max_pending_bytes: int = intake.MAX_PENDING_BYTES
    snapshot_entries: int = defaults.SNAPSHOT_ENTRIES
    snapshot_log_bytes: int = 64 << 20
    snapshot_keep_entries: int = 5_000
    snapshot_retain: int = 2
    snapshot_chunk_bytes: int = 1 << 20  # <= MAX_SNAPSHOT_CHUNK
    snapshot_window: int = 8
    snapshot_write_mb_s: int = 120  # 0: unlimited
    # the change feed (boltraft.server.watching): what a node keeps to resume watches from,
    # and the bounds on its watches
    watch_history_events: int = 100_000
    watch_history_bytes: int = 64 << 20
    watch_max_lag: int = 10_000
    watch_max: int = 10_000
    metrics_addr: str = ""  # HOST:PORT of the HTTP metrics and health endpoint; "": none
    corrupt_check_ms: int = 0  # boltraft.server.corruptcheck; 0: no periodic check
    keys: str = ""  # the node's CURVE keys folder; "": no CURVE
    insecure: bool = False  # without keys, listen on an address other than loopback anyway

    @property
    def members(self) -> dict[str, str]:
        """Returns every initial member's address, this node included."""
        return {**self.peers, self.id: self.listen}

    def node_info(self) -> NodeInfo:
        """Returns what node.json should hold for this configuration."""
        return NodeInfo(self.id, self.listen, dict(self.peers), self.keys)


def parse_peer(spec: str) -> tuple[str, str]:
    """Returns (id, addr) from ``"ID=tcp://HOST:PORT"``; raises ConfigError otherwise."""
    node_id, sep, addr = spec.partition("=")
    if not sep or not node_id.strip() or not addr.strip():
        raise ConfigError(f"peer {spec!r}: expected ID=tcp://HOST:PORT", peer=spec)
    addr = addr.strip()
    check_address(addr)
    return node_id.strip(), addr


MAX_NODE_ID_BYTES = 255  # a node id is its ZeroMQ routing id


def check_node_id(node_id: Any) -> str:
    """Returns ``node_id`` if it is a usable node id: a string of 1..255 bytes of UTF-8
    without control characters (a ZeroMQ routing id may not start with a zero byte); raises
    ConfigError otherwise."""
    if (
        not isinstance(node_id, str)
        or not node_id
        or not node_id.isprintable()
        or len(node_id.encode()) > MAX_NODE_ID_BYTES
    ):
        raise ConfigError(
            f"node id {node_id!r}: expected 1..{MAX_NODE_ID_BYTES} bytes of printable UTF-8",
            node_id=repr(node_id),
        )
    return node_id


def check_address(addr: str) -> str:
    """Returns ``addr`` if it is ``tcp://HOST:PORT`` with a valid port; raises ConfigError."""
    if not isinstance(addr, str) or not addr.startswith("tcp://"):
        raise ConfigError(f"address {addr!r}: expected tcp://HOST:PORT", address=str(addr))
    host, sep, port = addr[len("tcp://") :].rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"address {addr!r}: expected tcp://HOST:PORT", address=addr)
    return addr


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Returns the key/value table of a JSON or TOML config file (TOML if it ends in .toml).

    Raises ConfigError when the file is missing, unparsable, not a table, or has unknown keys.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"config file {p}: {exc.strerror}", path=str(p))
    try:
        data = tomllib.loads(raw.decode()) if p.suffix == ".toml" else json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {p}: {exc}", path=str(p))
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p}: expected a table of keys", path=str(p))
    known = {f.name for f in fields(ServerConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"config file {p}: unknown keys {unknown}", path=str(p))
    return data


def _peers_from(value: Any) -> dict[str, str]:
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise ConfigError("peers: expected a table of id = address")
            out[k] = check_address(v)
        return out
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        out = {}
        for spec in value:
            if not isinstance(spec, str):
                raise ConfigError("peers: expected strings ID=ADDR")
            k, v = parse_peer(spec)
            if k in out:
                raise ConfigError(f"peer {k!r} given twice", peer=k)
            out[k] = v
        return out
    raise ConfigError("peers: expected a table or a list of ID=ADDR")


def resolve_config(
    values: Mapping[str, Any], node_info: NodeInfo | None, data: str | os.PathLike[str]
) -> ServerConfig:
    """Returns the ServerConfig from ``values`` (flags over file, None meaning unset) and the
    ``node_info`` remembered in the data directory.

    A remembered id cannot change (ConfigError); a missing id or listen address on a first
    start is a ConfigError; every value is type-checked. ``keys`` falls back to the
    remembered folder and is made absolute ("" stays "": no keys).
    """
    vals = {k: v for k, v in values.items() if v is not None}
    node_id = vals.get("id")
    if node_info is not None:
        if node_id is not None and node_id != node_info.id:
            raise ConfigError(
                f"data directory belongs to node {node_info.id!r}, not {node_id!r}",
                remembered=node_info.id,
                given=node_id,
            )
        node_id = node_info.id
    if not isinstance(node_id, str) or not node_id:
        raise ConfigError("a new node needs --id")
    listen = vals.get("listen", node_info.listen if node_info else None)
    if listen is None:
        raise ConfigError("a new node needs --listen tcp://HOST:PORT")
    check_address(listen)
    if "peers" in vals and vals["peers"] != [] and vals["peers"] != {}:
        peers = _peers_from(vals["peers"])
    else:
        peers = dict(node_info.peers) if node_info else {}
    if node_id in peers:
        if peers[node_id] != listen:
            raise ConfigError(f"peer {node_id!r} is this node but has another address")
        del peers[node_id]
    cfg = ServerConfig(id=node_id, data=Path(data).absolute(), listen=listen, peers=peers)
    changes: dict[str, Any] = {}
    for key, minimum in _INT_KEYS.items():
        if key in vals:
            v = vals[key]
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise ConfigError(f"{key} must be an integer >= {minimum}", key=key)
            changes[key] = v
    for key in _BOOL_KEYS:
        if key in vals:
            if not isinstance(vals[key], bool):
                raise ConfigError(f"{key} must be true or false", key=key)
            changes[key] = vals[key]
    if "log_store" in vals:
        if vals["log_store"] not in LOG_STORES:
            raise ConfigError(f"log_store must be one of {LOG_STORES}", key="log_store")
        changes["log_store"] = vals["log_store"]
    if "metrics_addr" in vals:
        addr = vals["metrics_addr"]
        host, sep, port = addr.rpartition(":") if isinstance(addr, str) else ("", "", "")
        if addr != "" and (not sep or not host or not port.isdigit() or int(port) > 65535):
            raise ConfigError("metrics_addr must be HOST:PORT", key="metrics_addr")
        changes["metrics_addr"] = addr
    if "keys" in vals:
        if not isinstance(vals["keys"], str):
            raise ConfigError("keys must be the path of a keys folder", key="keys")
        changes["keys"] = str(Path(vals["keys"]).absolute()) if vals["keys"] else ""
    elif node_info is not None:
        changes["keys"] = node_info.keys
    cfg = replace(cfg, **changes)
    if cfg.snapshot_chunk_bytes > MAX_SNAPSHOT_CHUNK:
        raise ConfigError(f"snapshot_chunk_bytes must be at most {MAX_SNAPSHOT_CHUNK}")
    if cfg.heartbeat_tick >= cfg.election_tick:
        raise ConfigError("heartbeat_tick must be smaller than election_tick")
    return cfg


def is_loopback(addr: str) -> bool:
    """True when the ``tcp://HOST:PORT`` address ``addr`` binds a loopback interface only
    (127.0.0.0/8, ::1, localhost)."""
    host = addr.partition("://")[2].rpartition(":")[0].strip("[]")
    return host == "localhost" or host == "::1" or host.startswith("127.")


def check_secure(cfg: ServerConfig) -> bool:
    """True when ``cfg`` serves without keys on an address other than loopback, which
    ``insecure`` allows (the caller warns); False when it has keys or listens on loopback.
    Raises ConfigError when neither keys nor ``insecure`` are given for such an address."""
    if cfg.keys or is_loopback(cfg.listen):
        return False
    if not cfg.insecure:
        raise ConfigError(
            f"refusing to serve {cfg.listen} without keys: anyone who reaches it could read, "
            "write and join; give --keys DIR/ID (boltraft keys init) or --insecure",
            listen=cfg.listen,
        )
    return True
