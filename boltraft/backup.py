"""Hot backups of a running cluster and restores into a new single-node cluster.

Backup file format (one file)::

    b"BOLTRAFT-BACKUP\\n"            magic (16 bytes)
    u32 big-endian N                  length of the header
    N bytes of JSON header            {"format": 1, "index", "term", "size", "sha256",
                                       "created_ms", "node", "voters", "learners", "addrs"}
    size bytes                        the snapshot's data file (a compacted LMDB copy)

``backup()`` asks one node (any: the first endpoint that answers) to write a fresh snapshot,
streams it in checksummed chunks (crc32 per chunk, sha256 over the whole, compared with the
node's), writes ``FILE.partial`` and renames it to ``FILE`` only when complete and verified.

``restore()`` turns a backup into the data directory of a NEW single-node cluster: the data
file (verified again) becomes ``DATA/state``, the Raft log starts empty at the backup's
index with this node as the only voter, and ``node.json`` remembers the id and address, so
``boltraft serve --data DIR`` starts it; other nodes then join it with ``serve --join``.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from boltraft.client import Client
from boltraft.errors import BoltraftError, ChecksumMismatchError, ConfigError, SnapshotError
from boltraft.raft.types import ConfState, HardState, SnapshotMeta
from boltraft.server.config import check_address
from boltraft.server.datadir import DataDir, NewDirGuard, NodeInfo
from boltraft.storage.db import DB
from boltraft.storage.snapshot import DATA_FILE
from boltraft.transport.curve import PartyKeys

MAGIC = b"BOLTRAFT-BACKUP\n"
FORMAT = 1
CHUNK = 4 << 20
_LEN = struct.Struct(">I")

Progress = Callable[[int], None]  # called with the number of bytes just handled


def _pick_endpoint(client: Client, timeout: float) -> str:
    last: BoltraftError | None = None
    for ep in client.endpoints:
        try:
            client.status(ep, timeout=min(timeout, 2.0))
            return ep
        except BoltraftError as err:
            last = err
    assert last is not None
    raise last


def backup(
    endpoints: str | list[str],
    path: str | os.PathLike[str],
    *,
    timeout: float = 60.0,
    progress: Progress | None = None,
    on_header: Callable[[dict[str, Any]], None] | None = None,
    keys: PartyKeys | None = None,
) -> dict[str, Any]:
    """Returns the header written to the backup ``path`` after streaming a fresh snapshot
    from a node of ``endpoints`` (over CURVE with an admin's ``keys``). ``on_header(header)``
    is called once the size is known.

    Raises ChecksumMismatchError when the stream does not match the node's sha256 (``path``
    is not created then), RequestTimeoutError and the node's typed errors."""
    dest = Path(path)
    partial = dest.with_name(dest.name + ".partial")
    with Client(endpoints, timeout=timeout, keys=keys) as client:
        ep = _pick_endpoint(client, timeout)
        info = client.backup_begin(ep, timeout=timeout)
        token = info["backup"]
        header = {
            "format": FORMAT,
            **{k: info[k] for k in ("index", "term", "size", "sha256", "created_ms", "node")},
            **{k: info[k] for k in ("voters", "learners", "addrs")},
        }
        if on_header is not None:
            on_header(header)
        try:
            h = hashlib.sha256()
            with open(partial, "wb") as out:
                raw = json.dumps(header).encode()
                out.write(MAGIC + _LEN.pack(len(raw)) + raw)
                offset, size = 0, int(info["size"])
                while offset < size:
                    data = client.backup_read(ep, token, offset, min(CHUNK, size - offset))
                    if not data:
                        raise SnapshotError("the node returned an empty chunk", offset=offset)
                    h.update(data)
                    out.write(data)
                    offset += len(data)
                    if progress is not None:
                        progress(len(data))
                out.flush()
                os.fsync(out.fileno())
            if h.hexdigest() != info["sha256"]:
                raise ChecksumMismatchError(
                    "the streamed backup does not match the node's sha256",
                    expected_sha256=info["sha256"],
                    actual_sha256=h.hexdigest(),
                )
            os.replace(partial, dest)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        finally:
            try:
                client.backup_end(ep, token, timeout=min(timeout, 5.0))
            except BoltraftError:
                pass  # the node drops it after a minute anyway
    return header


def read_header(f: BinaryIO) -> dict[str, Any]:
    """Returns the header of the backup open as ``f`` (positioned at the data afterwards).
    Raises SnapshotError when ``f`` is not a backup of a known format."""
    if f.read(len(MAGIC)) != MAGIC:
        raise SnapshotError("not a boltraft backup file")
    try:
        (n,) = _LEN.unpack(f.read(_LEN.size))
        header = json.loads(f.read(n))
        if header.get("format") != FORMAT:
            raise SnapshotError(f"unknown backup format {header.get('format')!r}")
        int(header["index"]), int(header["term"]), int(header["size"]), str(header["sha256"])
    except (struct.error, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SnapshotError(f"unreadable backup header: {exc}") from None
    return header


def restore(
    path: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    *,
    node_id: str = "n1",
    listen: str = "tcp://127.0.0.1:7301",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Returns the backup's header after seeding ``data_dir`` as a new single-node cluster
    (``node_id`` at ``listen``) holding the backup's data.

    Raises ConfigError when ``data_dir`` already holds a node or ``listen`` is invalid,
    SnapshotError for a file that is not a backup, ChecksumMismatchError when the data does
    not match its sha256. A failed restore leaves ``data_dir`` as it was (removed when it
    was new, emptied again when it was empty)."""
    check_address(listen)
    if not node_id:
        raise ConfigError("restore needs a node id")
    with NewDirGuard(data_dir):  # a failed restore leaves no new data directory behind
        return _restore(path, data_dir, node_id, listen, progress)


def _restore(
    path: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    node_id: str,
    listen: str,
    progress: Progress | None,
) -> dict[str, Any]:
    with open(path, "rb") as f, DataDir.open(data_dir) as dd:
        header = read_header(f)
        if dd.read_node_info() is not None or any(dd.state_path.iterdir()):
            raise ConfigError(f"{dd.path} already holds a node; restore needs a new directory")
        size, want = int(header["size"]), str(header["sha256"])
        staged = dd.state_path / (DATA_FILE + ".restoring")
        h = hashlib.sha256()
        got = 0
        try:
            with open(staged, "wb") as out:
                while got < size and (chunk := f.read(min(CHUNK, size - got))):
                    h.update(chunk)
                    out.write(chunk)
                    got += len(chunk)
                    if progress is not None:
                        progress(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            if got != size or h.hexdigest() != want:
                raise ChecksumMismatchError(
                    "the backup's data does not match its sha256",
                    expected_sha256=want,
                    actual_sha256=h.hexdigest(),
                    expected_size=size,
                    actual_size=got,
                )
            os.replace(staged, dd.state_path / DATA_FILE)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        index, term = int(header["index"]), int(header["term"])
        meta = SnapshotMeta(index, term, ConfState((node_id,), (), {node_id: listen}))
        logstore = dd.open_log_store()
        try:
            logstore.apply_snapshot(meta, HardState(term, "", index))
        finally:
            logstore.close()
        dd.write_node_info(NodeInfo(node_id, listen, {}))
    return header


def content_hash(db: DB) -> str:
    """Returns a sha256 over every bucket path, key and value of ``db`` in order (the user
    data only: the state machine's internal records are not included), so two stores with
    the same contents have the same hash whatever their file layout."""
    h = hashlib.sha256()
    paths = [tuple(b["path"]) for b in db.bucket_tree()]
    with db.view() as tx:
        for p in paths:
            h.update(b"\x00B" + b"/".join(p) + b"\x00")
            cur = tx.bucket(list(p)).cursor()
            item = cur.first()
            while item is not None:
                k, v = item
                h.update(_LEN.pack(len(k)) + k)
                h.update(b"\x01" if v is None else _LEN.pack(len(v)) + v)
                item = cur.next()
    return h.hexdigest()
