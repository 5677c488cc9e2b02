"""The layout of one node's data directory and the lock that guards it.

```
DATA/
  LOCK        an exclusive flock(2) held by the one process that serves DATA
  node.json   {"id", "listen", "peers": {id: addr}, "keys": folder} written on first start
              ("keys" only for a node with CURVE keys: their folder's absolute path)
  wal/        the Raft log as a segmented write-ahead log (WalLogStore: LOCK, NNN.wal), or
  log/        the Raft log in LMDB (LmdbLogStore: LOCK, data.mdb, lock.mdb)
  state/      the bucket state machine (BucketStateMachine)
  state.unsynced  present while state/ may hold commits not yet on disk: the id of the
              machine boot it was written in (see ``boltraft.server.main.open_state_machine``)
  snapshots/  snapshot copies of state/
```

Exactly one of ``wal/`` and ``log/`` holds the log: the kind is chosen when the node first
opens it (``log_store``, WAL by default) and remembered by which folder holds it
(``open_log_store``).

The lock is advisory, held for the life of the process and released by the kernel when the
process dies (even by SIGKILL), so a crashed node restarts without manual cleanup.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from boltraft.errors import ConfigError, DataDirLockedError
from boltraft.raft.types import LogStore
from boltraft.storage.fsutil import fsync_dir
from boltraft.storage.logstore import LmdbLogStore
from boltraft.storage.wal import WalLogStore


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What node.json remembers so that ``--data DIR`` alone restarts a node.

    Invariant: ``id`` is not a key of ``peers`` (peers are the OTHER initial members);
    ``keys`` is "" (no CURVE) or the absolute path of the node's keys folder.
    """

    id: str
    listen: str
    peers: dict[str, str] = field(default_factory=dict)
    keys: str = ""

    def to_json(self) -> dict[str, Any]:
        """Returns the JSON-ready form (without ``keys`` when there are none)."""
        out: dict[str, Any] = {
            "id": self.id,
            "listen": self.listen,
            "peers": dict(sorted(self.peers.items())),
        }
        if self.keys:
            out["keys"] = self.keys
        return out

    @staticmethod
    def from_json(data: Any, source: str) -> NodeInfo:
        """Returns the NodeInfo in ``data``; raises ConfigError naming ``source`` if malformed."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object", path=source)
        node_id, listen, peers = data.get("id"), data.get("listen"), data.get("peers", {})
        keys = data.get("keys", "")
        if not isinstance(node_id, str) or not node_id:
            raise ConfigError(f"{source}: 'id' must be a non-empty string", path=source)
        if not isinstance(listen, str) or not listen:
            raise ConfigError(f"{source}: 'listen' must be a non-empty string", path=source)
        if not isinstance(peers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in peers.items()
        ):
            raise ConfigError(f"{source}: 'peers' must map ids to addresses", path=source)
        if not isinstance(keys, str):
            raise ConfigError(f"{source}: 'keys' must be a folder's path", path=source)
        return NodeInfo(node_id, listen, dict(peers), keys)


BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")


def current_boot_id(path: Path = BOOT_ID_PATH) -> str | None:
    """Returns the id of this machine boot (Linux gives every boot a new random one), or None
    where the kernel does not tell it."""
    try:
        return path.read_text(encoding="ascii").strip() or None
    except (OSError, ValueError):
        return None


class DataDir:
    """One node's data directory, locked while open. Use ``DataDir.open(path)``.

    Invariant: while the object is open this process holds the exclusive lock on ``LOCK``.
    """

    LOCK = "LOCK"
    NODE_JSON = "node.json"
    STATE_UNSYNCED = "state.unsynced"

    def __init__(self, path: Path, lock_fd: int) -> None:
        self.path = path
        self._lock_fd: int | None = lock_fd

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> DataDir:
        """Returns the locked data directory at ``path``, creating it and its subfolders.

        Raises DataDirLockedError when another process (or another open in this process)
        holds it, ConfigError when ``path`` exists and is not a directory.
        """
        root = Path(path).absolute()
        if root.exists() and not root.is_dir():
            raise ConfigError(f"data path {root} is not a directory", path=str(root))
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / cls.LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirLockedError(
                f"data directory {root} is in use by another process", path=str(root)
            )
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        for sub in ("state", "snapshots"):
            (root / sub).mkdir(exist_ok=True)
        return cls(root, fd)

    @property
    def log_path(self) -> Path:
        """Returns the folder of the Raft log when it is an LMDB log store."""
        return self.path / "log"

    @property
    def wal_path(self) -> Path:
        """Returns the folder of the Raft log when it is a WAL log store."""
        return self.path / "wal"

    def log_kind(self) -> str | None:
        """Returns the kind of the Raft log this directory holds, ``"wal"`` or ``"lmdb"``, or
        None when it holds none yet. Raises ConfigError when it holds both."""
        wal = self.wal_path.is_dir() and any(self.wal_path.glob("*.wal"))
        lmdb = (self.log_path / "data.mdb").exists()
        if wal and lmdb:
            raise ConfigError(
                f"data directory {self.path} holds both a WAL (wal/) and an LMDB log (log/)",
                path=str(self.path),
            )
        return "wal" if wal else "lmdb" if lmdb else None

    def open_log_store(self, kind: str | None = None, sync: bool = True) -> LogStore:
        """Returns the Raft log store of this directory, opened with ``sync``: of the kind
        it already holds, else of ``kind`` (``"wal"`` when None).

        Raises ConfigError when ``kind`` contradicts the log already there or is unknown,
        and what the store raises on open (CorruptionError, DataDirLockedError)."""
        held = self.log_kind()
        if kind is not None and held is not None and kind != held:
            raise ConfigError(
                f"data directory {self.path} holds a {held} log; it cannot be opened as {kind}",
                path=str(self.path),
                held=held,
                given=kind,
            )
        kind = held or kind or "wal"
        if kind == "wal":
            return WalLogStore(self.wal_path, sync=sync)
        if kind == "lmdb":
            return LmdbLogStore(self.log_path, sync=sync)
        raise ConfigError(f"unknown log store {kind!r}: expected wal or lmdb", given=kind)

    @property
    def state_path(self) -> Path:
        """Returns the folder of the bucket state machine."""
        return self.path / "state"

    @property
    def watch_path(self) -> Path:
        """Returns the folder of the change feed's history (``boltraft.server.watchlog``)."""
        return self.path / "watch"

    @property
    def snapshots_path(self) -> Path:
        """Returns the folder of the snapshots."""
        return self.path / "snapshots"

    def state_unsynced_boot(self) -> str | None:
        """Returns the boot id ``state.unsynced`` holds ("" when unreadable), or None when
        the state DB was last closed flushed (or never opened unsynced)."""
        try:
            return (self.path / self.STATE_UNSYNCED).read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return ""

    def mark_state_unsynced(self, boot_id: str) -> None:
        """Makes ``state.unsynced`` durably name ``boot_id`` (written only when it
        names another boot or is missing): call it BEFORE the first unsynced state commit."""
        if self.state_unsynced_boot() == boot_id:
            return
        p = self.path / self.STATE_UNSYNCED
        tmp = p.with_suffix(".tmp")
        with open(tmp, "w", encoding="ascii") as f:
            f.write(boot_id + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
        fsync_dir(self.path)

    def clear_state_unsynced(self) -> None:
        """Removes ``state.unsynced`` durably: call it only after the state
        DB was flushed (``db.sync()``) and closed."""
        p = self.path / self.STATE_UNSYNCED
        if p.exists():
            p.unlink()
            fsync_dir(self.path)

    def discard_state_if_crashed(self, boot_id: str | None) -> bool:
        """Returns True after deleting the state DB's files because ``state.unsynced`` names
        a boot other than ``boot_id``: the machine went down while the state DB had commits
        that were never flushed, so LMDB's pages may be torn. The caller rebuilds the state
        from the newest local snapshot and the Raft log (replay is exact). False (nothing
        done) when the marker is missing or names this boot (a process crash loses nothing:
        the OS page cache kept every commit)."""
        marker = self.state_unsynced_boot()
        if marker is None or (boot_id is not None and marker == boot_id):
            return False
        for name in ("data.mdb", "lock.mdb"):
            (self.state_path / name).unlink(missing_ok=True)
        fsync_dir(self.state_path)
        return True

    def read_node_info(self) -> NodeInfo | None:
        """Returns what node.json holds, or None when the node never started here.

        Raises ConfigError when node.json exists but is unreadable or malformed."""
        p = self.path / self.NODE_JSON
        try:
            raw = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise ConfigError(f"{p}: not valid JSON ({exc})", path=str(p))
        return NodeInfo.from_json(data, str(p))

    def write_node_info(self, info: NodeInfo) -> None:
        """Durably replaces node.json (temporary file, fsync, rename)."""
        p = self.path / self.NODE_JSON
        tmp = p.with_suffix(".json.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(info.to_json(), f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
        fsync_dir(self.path)

    def close(self) -> None:
        """Releases the lock; closing twice is harmless."""
        if self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> DataDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NewDirGuard:
    """Removes what a failed start made of a directory that was new: a ``with`` block that
    fails (any exception) before ``keep()`` removes the directory when it did not exist
    (with the parents it needed), or empties it when it existed empty. A directory that
    held anything is never touched."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        p = Path(path).absolute()
        top: Path | None = None
        q = p
        while not q.exists() and q != q.parent:
            top, q = q, q.parent
        self.path = p
        self._created_top = top  # the highest folder that did not exist
        self._was_empty = top is None and p.is_dir() and not any(p.iterdir())
        self._kept = False

    def keep(self) -> None:
        """From now on the directory stays, whatever happens."""
        self._kept = True

    def __enter__(self) -> NewDirGuard:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None or self._kept:
            return
        if self._created_top is not None:
            shutil.rmtree(self._created_top, ignore_errors=True)
        elif self._was_empty:
            for child in self.path.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
