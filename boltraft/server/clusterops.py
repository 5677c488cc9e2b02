"""The cluster-operations side of a node (snapshots, snapshot transfer, membership,
backups), behind the few hooks the node loop calls.

Ops answered here (client ``req`` bodies), besides boltraft.server.membership's:

- ``{"op": "snapshot"}``: this node writes a snapshot now (joining one in progress) and
  compacts its log; result ``{"index", "term", "size", "sha256", "seconds", "log_first"}``.
- ``{"op": "backup_begin"}``: this node writes a fresh snapshot and keeps it for a backup;
  result ``{"backup": token, "index", "term", "size", "sha256", "chunk", "voters",
  "learners", "addrs", "created_ms"}``.
- ``{"op": "backup_read", "backup": token, "offset": int, "length": int}``: result
  ``{"data": bytes, "crc32": int}`` (``length`` at most 4 MiB; less at the end).
- ``{"op": "backup_end", "backup": token}``: releases the snapshot (also done after 60 s of
  silence).
- ``{"op": "hash"}``: this node's replica hash (etcd's HashKV), computed on a worker
  thread: result ``{"id", "applied", "sha256"}`` (``StateMachine.content_hash``).

Threads: one small worker pool (2 threads) writes snapshots (boltraft.storage.snapio adds
its copy threads), a received snapshot is written by its own thread (snapio.ChunkSink);
everything else runs on the loop thread.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from boltraft.errors import BadRequestError, BoltraftError, SnapshotError
from boltraft.raft.types import ConfState, Entry, HardState, LogStore, Message, SnapshotMeta
from boltraft.server.config import ServerConfig
from boltraft.server.membership import MEMBER_OPS, Membership
from boltraft.server.ports import MemberCore, Net, NodeView, SnapCore, StateMachine
from boltraft.server.replies import Replies, Target
from boltraft.server.snapshots import Snapshots
from boltraft.server.snaptransfer import Transfers
from boltraft.server.wire import REMOVED, SNAP, conf_to_json, fail, ok
from boltraft.storage.snapshot import SnapshotInfo
from boltraft.transport.zmq_transport import Incoming


class ClusterCore(MemberCore, SnapCore, Protocol):
    """The consensus core as the cluster operations use it."""


log = logging.getLogger("boltraft.server")

BACKUP_OPS = frozenset(("backup_begin", "backup_read", "backup_end"))
OPS = MEMBER_OPS | BACKUP_OPS | {"snapshot", "hash"}
FRAME_KINDS = frozenset((SNAP, REMOVED))
MAX_READ = 4 << 20
BACKUP_IDLE_S = 60.0


@dataclass(slots=True)
class _Backup:
    info: SnapshotInfo
    fd: int
    last_used: float


class ClusterOps:
    """Owned by one Node; every method runs on its loop thread (except the pool's jobs)."""

    def __init__(
        self,
        cfg: ServerConfig,
        view: NodeView,
        core: ClusterCore,
        logstore: LogStore,
        sm: StateMachine,
        net: Net,
        replies: Replies,
        counters: dict[str, int],
        *,
        reopen_sm: Callable[[], StateMachine] | None = None,
        install_step: Callable[[str], None] = lambda step: None,
        revoke: Callable[[str], None] = lambda node_id: None,
    ) -> None:
        """``sm``: the node's state machine (see ``install``); ``counters``: the node's
        counters the parts add to; ``revoke``: revokes a removed node's key
        (``Membership``); ``reopen_sm``: opens the state
        machine again after a snapshot install replaced its files (None: this node cannot
        install snapshots); ``install_step``: a fault-injection point at each install step
        (``boltraft.server.snapshots``)."""
        self.replies = replies
        self._view = view
        self._logstore = logstore
        self._reopen_sm = reopen_sm
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="boltraft-ops")
        self.snapshots = Snapshots(cfg, view, sm, logstore, self._pool, install_step)
        self.transfers = Transfers(cfg, view, core, net, self.snapshots)
        self.members = Membership(cfg, view, core, logstore, replies, net, counters, revoke)
        self._backups: dict[str, _Backup] = {}
        self._sm = sm
        self._hashing: list[tuple[Future[tuple[int, str]], Target]] = []

    @property
    def halted(self) -> str | None:
        """Why this node must stop serving (it was removed), or None."""
        return self.members.halted

    # --- hooks called by the node loop ----------------------------------------------------
    def on_request(self, target: Target, body: dict[str, Any], now: float) -> None:
        """Answers or queues one of ``OPS``."""
        op = body["op"]
        if op in MEMBER_OPS:
            self.members.on_request(target, body, now)
        elif op == "snapshot":
            self.snapshots.create(lambda info, err: self._snapshot_done(target, info, err))
        elif op == "backup_begin":
            self.snapshots.create(lambda info, err: self._backup_begun(target, info, err))
        elif op == "hash":
            self._hashing.append((self._pool.submit(self._sm.content_hash), target))
        else:
            try:
                result = self._backup_op(op, body, now)
            except BoltraftError as err:
                self.replies.reply(target, fail(err))
                return
            self.replies.reply(target, ok(result))

    def on_frame(self, frame: Incoming) -> None:
        """Handles a ``snap`` or ``removed`` frame."""
        if frame.kind == SNAP:
            self.transfers.on_frame(frame)
        else:
            self.members.on_removed_notice(frame)

    def on_stranger(self, frame: Incoming, frm: str) -> None:
        """See Membership.on_stranger (Raft traffic from a non-member)."""
        self.members.on_stranger(frame, frm)

    def on_snap_out(self, m: Message) -> None:
        """Starts the transfer the core's outgoing SNAP asks for."""
        self.transfers.on_snap_message(m)

    def install(
        self, meta: SnapshotMeta, hard_state: HardState, applied: int
    ) -> StateMachine | None:
        """Installs the snapshot the core accepted (``meta``). With a verified download that
        covers it: the reopened state machine (the old one is closed). When the state
        machine has already ``applied`` past ``meta.index`` (a node that installed newer
        data than the log index offered with it, offered an older index again): None, after
        moving only the log to ``meta``. Raises SnapshotError when neither holds or this
        node cannot reopen its state machine."""
        staged = self.transfers.staged_for(meta)
        if staged is not None and self._reopen_sm is not None:
            sm = self.snapshots.install(meta, staged, hard_state, self._reopen_sm)
            self.transfers.installed()
            self._sm = sm
            return sm
        if applied >= meta.index:
            self.snapshots.move_log(meta, hard_state)
            return None
        raise SnapshotError(f"no verified snapshot data covers index {meta.index}")

    def on_applied(self, entries: list[Entry], conf_state: ConfState | None) -> None:
        """Counts ``entries`` toward the snapshot policy (``conf_state``: the membership
        when a change took effect among them)."""
        self.snapshots.on_applied(entries, conf_state)
        if conf_state is not None:
            self.members.on_conf_state(conf_state)

    def tick(self, now: float) -> None:
        """Periodic work: finished snapshots, transfers, membership waits,
        idle backups."""
        self.snapshots.poll()
        if self._hashing:
            self._answer_hashes()
        self.transfers.tick(now)
        self.members.tick(now)
        for token, b in list(self._backups.items()):
            if now - b.last_used > BACKUP_IDLE_S:
                self._end_backup(token)

    def status(self) -> dict[str, Any]:
        """Returns the snapshot/transfer part of the ``status`` result."""
        s = self.snapshots
        last = s.last_info
        return {
            "snapshot": None if last is None else {"index": last.index, "size": last.size},
            "snapshots": dict(s.stats),
            "creating": s.creating,
            "log_first": self._logstore.first_index(),
            "transfers": self.transfers.status(),
        }

    def close(self) -> None:
        """Stops the workers, fails waiting ops, closes files and a
        state machine reopened after an install."""
        self.members.close()
        self.snapshots.wait()
        self._pool.shutdown(wait=True)
        self.transfers.close()
        for token in list(self._backups):
            self._end_backup(token)

    def _answer_hashes(self) -> None:
        pending = []
        for fut, target in self._hashing:
            if not fut.done():
                pending.append((fut, target))
                continue
            try:
                applied, digest = fut.result()
            except BoltraftError as err:
                self.replies.reply(target, fail(err))
                continue
            self.replies.reply(
                target, ok({"id": self._view.id, "applied": applied, "sha256": digest})
            )
        self._hashing = pending

    # --- snapshot and backup ops ------------------------------------------------------------
    def _snapshot_done(self, target: Target, info: SnapshotInfo | None, err: Any) -> None:
        if info is None:
            self.replies.reply(target, fail(err))
            return
        result = {
            "index": info.index,
            "term": info.term,
            "size": info.size,
            "sha256": info.sha256,
            "seconds": self.snapshots.last_create_s,
            "log_first": self._logstore.first_index(),
        }
        self.replies.reply(target, ok(result))

    def _backup_begun(self, target: Target, info: SnapshotInfo | None, err: Any) -> None:
        if info is None:
            self.replies.reply(target, fail(err))
            return
        try:
            fd = os.open(info.path, os.O_RDONLY)
        except OSError as exc:
            self.replies.reply(target, fail(SnapshotError(f"cannot open the snapshot: {exc}")))
            return
        self.snapshots.store.pin(info)
        token = secrets.token_hex(8)
        self._backups[token] = _Backup(info, fd, time.monotonic())
        result = {
            "backup": token,
            "index": info.index,
            "term": info.term,
            "size": info.size,
            "sha256": info.sha256,
            "chunk": MAX_READ,
            "created_ms": info.created_ms,
            "node": self._view.id,
            **conf_to_json(self.snapshots.conf_at(info.index)),
        }
        self.replies.reply(target, ok(result))

    def _backup_op(self, op: str, body: dict[str, Any], now: float) -> Any:
        token = body.get("backup")
        b = self._backups.get(token) if isinstance(token, str) else None
        if b is None or not isinstance(token, str):
            raise BadRequestError("unknown or expired backup token", backup=str(token))
        if op == "backup_end":
            self._end_backup(token)
            return True
        offset, length = body.get("offset"), body.get("length")
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise BadRequestError("offset must be an integer >= 0")
        if not isinstance(length, int) or isinstance(length, bool) or length < 0:
            raise BadRequestError("length must be an integer >= 0")
        if not 0 < length <= MAX_READ or offset > b.info.size:
            raise BadRequestError(f"need 0 < length <= {MAX_READ} and offset <= size")
        b.last_used = now
        data = os.pread(b.fd, min(length, b.info.size - offset), offset)
        return {"data": data, "crc32": zlib.crc32(data)}

    def _end_backup(self, token: str) -> None:
        b = self._backups.pop(token, None)
        if b is not None:
            os.close(b.fd)
            self.snapshots.store.unpin(b.info)
