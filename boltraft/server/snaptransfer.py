"""Shipping a snapshot to a follower over ZeroMQ in checksummed chunks.

One frame kind, ``snap``, whose first field names the message (``sid`` = ``"<index>-<first
16 hex of sha256>"`` names one snapshot file):

- ``[1, "snap", "offer", sid, meta]`` holder -> follower, over the holder's DEALER: ``meta``
  = ``{"term", "index", "log_term", "voters", "learners", "addrs"`` (the Raft snapshot meta
  the leader's core asked to send; ``index`` may be below the data's index, see
  boltraft/server/snapshots.py)``, "data_index", "size", "sha256", "chunk", "addr"}``.
- ``[1, "snap", "get", sid, [offset, ...]]`` follower -> holder, over the follower's DEALER.
- ``[1, "snap", "chunk", sid, offset, data, crc32]`` holder -> follower, as a REPLY through
  the holder's ROUTER: chunks travel on the follower's own connection, never in the queue
  of the holder's DEALER that carries appends and heartbeats, so no other peer waits.
- ``[1, "snap", "done", sid, ok, reason]`` follower -> holder (and the sender of the latest
  offer, when another): installed, or already past that index (ok), or refused.
- ``[1, "snap", "gone", sid]`` holder -> follower: that snapshot is not served any more.

Flow control is the follower's: at most ``snapshot_window`` chunks requested and not yet
received. The holder serves each ``get`` at once (so its loop reads at most a window of
chunks per iteration). A chunk that does not arrive within a second is requested again (a
lost chunk only costs a retry); a chunk whose crc32 or offset is wrong is dropped and asked
again. A holder serves any snapshot it still stores, leader or not, so a download survives a
leader change: the follower keeps pulling from the holder and, once done, steps the new
leader's snapshot message (from the new leader) whenever the data it holds reaches that
message's index, and sends ``done`` to both. The
received file is written under ``DATA/snapshots/.recv-<sid>/`` by its own thread
(boltraft.storage.snapio.ChunkSink: sha256 of the contiguous prefix computed as chunks arrive,
flushed in steps, so the end costs one fdatasync and no re-read), then checked (size and
sha256) before the SNAP message is stepped into the core; the swap itself is
boltraft.server.snapshots' crash-safe install. That directory survives a restart with a
``progress.json`` (bytes received and flushed): when the same snapshot is offered again the
download resumes after them (the kept prefix is re-hashed; a bad one fails the final sha256
and the download starts over).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from boltraft.errors import ChecksumMismatchError, ConfigError, SnapshotError
from boltraft.raft.types import MAX_INDEX, MAX_TERM, Message, MessageType, SnapshotMeta
from boltraft.server.config import MAX_SNAPSHOT_CHUNK, ServerConfig, check_address, check_node_id
from boltraft.server.logevery import LogEvery
from boltraft.server.ports import Net, NodeView, SnapCore
from boltraft.server.snapshots import Snapshots
from boltraft.server.wire import SNAP, conf_from_json, conf_to_json, is_snapshot_id
from boltraft.storage.snapio import ChunkSink, resumable
from boltraft.storage.snapshot import DATA_FILE, SnapshotInfo
from boltraft.transport import codec
from boltraft.transport.zmq_transport import Incoming

log = logging.getLogger("boltraft.server")

RESEND_S = 1.0  # a requested chunk not received by then is asked again
OFFER_EVERY_S = 1.0  # an offer is repeated after this long without a get
IDLE_S = 15.0  # a transfer without progress for this long is abandoned
WARN_EVERY_S = 10.0  # a failing download is logged as a warning at most this often
STEP_WAIT_S = 3.0  # a verified download the core did not take by then is dropped
SINK_BACKLOG = 32 << 20  # bytes received and not yet written before chunks are not asked for


def snapshot_id(info: SnapshotInfo) -> str:
    """Returns the id that names ``info``'s data file on the wire."""
    return f"{info.index}-{info.sha256[:16]}"


@dataclass(slots=True)
class _Outgoing:
    """A leader's transfer to one follower. Invariant: ``info`` is pinned while it lives."""

    sid: str
    info: SnapshotInfo
    offer: bytes  # the encoded offer frame
    last_offer: float
    last_activity: float


@dataclass(slots=True)
class _Download:
    """A follower's download. Invariant: ``0 <= next_offset <= size``; every offset in
    ``outstanding`` is below ``next_offset`` and not yet received; ``received`` counts the
    bytes below ``next_offset`` not outstanding (a resumed download starts with the kept
    prefix)."""

    sid: str
    holder: str
    meta: dict[str, Any]
    path: Path
    sink: ChunkSink
    size: int
    chunk: int
    started: float
    last_progress: float
    next_offset: int = 0
    received: int = 0
    outstanding: dict[int, float] = field(default_factory=dict)
    finishing: bool = False  # every chunk is in; the sink is flushing and hashing the end
    verified: bool = False
    stepped_at: float = 0.0
    offered: tuple[str, str] = ("", "")  # (sender, sid) of the latest offer; the SNAP
    # stepped comes from that sender (the current leader), told of the outcome too


class Transfers:
    """Both ends of snapshot transfer for one node; every method runs on the loop thread."""

    def __init__(
        self, cfg: ServerConfig, view: NodeView, core: SnapCore, net: Net, snapshots: Snapshots
    ) -> None:
        """``snapshots``: where the snapshots this node serves live and are made."""
        self.cfg = cfg
        self.view = view
        self.core = core
        self.net = net
        self.snapshots = snapshots
        self._out: dict[str, _Outgoing] = {}  # follower id -> transfer
        self._waiting: dict[str, Message] = {}  # follower id -> SNAP waiting for a snapshot
        self._fds: dict[str, tuple[int, SnapshotInfo]] = {}  # sid -> open data file
        self._dl: _Download | None = None
        self.stats = {
            "offers": 0,
            "chunks_served": 0,
            "chunks_received": 0,
            "chunks_resent": 0,
            "bad_chunks": 0,
            "bad_offers": 0,
            "resumed_bytes": 0,
            "completed": 0,
            "failed": 0,
            "sent": 0,  # transfers to a follower that installed them
            "bytes_served": 0,
            "installed_bytes": 0,
        }
        self.last_transfer: dict[str, float] = {}
        self._quiet_in = LogEvery(WARN_EVERY_S)  # failed downloads ("" key)
        self._quiet_out = LogEvery(WARN_EVERY_S)  # failed transfers, per follower id

    # --- leader side ----------------------------------------------------------------------
    def on_snap_message(self, m: Message) -> None:
        """Starts to ship a snapshot for the core's SNAP ``m`` (making a
        snapshot first when none covers ``m.snapshot.index``)."""
        snaps = self.snapshots
        info = snaps.last_info
        need = m.snapshot.index if m.snapshot is not None else 0
        if info is not None and info.index >= need and info.path.exists():
            self._start(m, info)
            return
        first = m.to not in self._waiting
        self._waiting[m.to] = m
        if first:
            snaps.create(self._on_created)

    def _on_created(self, info: SnapshotInfo | None, err: Any) -> None:
        waiting, self._waiting = self._waiting, {}
        for to, m in waiting.items():
            need = m.snapshot.index if m.snapshot is not None else 0
            if info is None or info.index < need or not self.view.is_leader:
                self.core.report_snapshot(to, False)
            else:
                self._start(m, info)

    def _start(self, m: Message, info: SnapshotInfo) -> None:
        old = self._out.pop(m.to, None)
        if old is not None:
            self.snapshots.store.unpin(old.info)
        meta = m.snapshot or SnapshotMeta()
        sid = snapshot_id(info)
        body = {
            "term": m.term,
            "index": meta.index,
            "log_term": meta.term,
            **conf_to_json(meta.conf_state),
            "data_index": info.index,
            "size": info.size,
            "sha256": info.sha256,
            "chunk": self.cfg.snapshot_chunk_bytes,
            "addr": self.cfg.listen,
        }
        self.snapshots.store.pin(info)
        now = time.monotonic()
        t = _Outgoing(sid, info, codec.encode_frame(SNAP, "offer", sid, body), now, now)
        self._out[m.to] = t
        self.stats["offers"] += 1
        self.net.send_frame(m.to, t.offer)
        level = logging.DEBUG if self._quiet_out.recent(m.to, now) else logging.INFO
        log.log(
            level, "%s: sending snapshot %s (%d bytes) to %s", self.view.id, sid, info.size, m.to
        )

    def _serve(self, frame: Incoming, sid: str, offsets: list[Any]) -> None:
        opened = self._open(sid)
        peer = frame.sender.decode(errors="replace")
        if opened is None:
            self.net.reply(frame.sender, codec.encode_frame(SNAP, "gone", sid))
            return
        fd, info = opened
        t = self._out.get(peer)
        if t is not None and t.sid == sid:
            t.last_activity = time.monotonic()
        chunk = self.cfg.snapshot_chunk_bytes
        for off in offsets[: self.cfg.snapshot_window]:
            if type(off) is not int or off < 0 or off >= info.size:
                continue
            data = os.pread(fd, min(chunk, info.size - off), off)
            self.stats["chunks_served"] += 1
            self.stats["bytes_served"] += len(data)
            self.net.reply(
                frame.sender, codec.encode_frame(SNAP, "chunk", sid, off, data, zlib.crc32(data))
            )

    def _open(self, sid: str) -> tuple[int, SnapshotInfo] | None:
        opened = self._fds.get(sid)
        if opened is not None:
            return opened
        for info in self.snapshots.store.list():
            if snapshot_id(info) == sid:
                try:
                    fd = os.open(info.path, os.O_RDONLY)
                except OSError:
                    return None
                self._fds[sid] = (fd, info)
                return fd, info
        return None

    def _finish_out(self, peer: str, sid: str, ok: bool, reason: str) -> None:
        t = self._out.get(peer)
        if t is None or t.sid != sid:
            return
        del self._out[peer]
        self.snapshots.store.unpin(t.info)
        if self.view.is_leader:
            self.core.report_snapshot(peer, ok)
        key = "completed" if ok else "failed"
        self.stats[key] += 1
        self.stats["sent"] += ok
        level = logging.INFO
        if ok:
            self._quiet_out.forget(peer)
        elif not self._quiet_out.due(peer, time.monotonic()):
            level = logging.DEBUG  # the same peer failing again and again (a full disk)
        log.log(level, "%s: snapshot %s to %s %s %s", self.view.id, sid, peer, key, reason)

    # --- follower side --------------------------------------------------------------------
    def _on_offer(self, frame: Incoming, sid: str, meta: dict[str, Any]) -> None:
        view = self.view
        holder = frame.sender.decode(errors="replace")
        if not _valid_offer(holder, meta):
            self.stats["bad_offers"] += 1
            return
        size, chunk, index = meta["size"], meta["chunk"], meta["index"]
        if index <= view.commit:
            # e.g. an install finished by start-up recovery after a crash: the core answers
            # with its commit index, and the leader resumes appending after the snapshot
            snap = SnapshotMeta(index, int(meta["log_term"]), conf_from_json(meta))
            term = int(meta["term"])
            self.core.step(Message(MessageType.SNAP, view.id, holder, term=term, snapshot=snap))
            self._send(holder, "done", sid, True, "already past that index")
            return
        dl = self._dl
        now = time.monotonic()
        if dl is not None:
            if dl.sid == sid:
                dl.meta, dl.holder = meta, holder  # the same file: resume where we are
                dl.offered = (holder, sid)
                self._ensure_peer(holder, meta["addr"])
                self._pump(now)
                return
            alive = now - dl.last_progress < 2 * RESEND_S
            if int(dl.meta["data_index"]) >= index and (dl.verified or alive):
                dl.meta = {**dl.meta, **_raft_part(meta)}  # finish it, step the new meta
                dl.offered = (holder, sid)
                if dl.verified:
                    self._step(dl)
                return
            self._abort("replaced by a newer offer")
        d = self._recv_dir(sid)
        if d is None:
            self.stats["bad_offers"] += 1
            return
        self._ensure_peer(holder, meta["addr"])
        for other in d.parent.glob(".recv-*"):
            if other != d:
                shutil.rmtree(other, ignore_errors=True)
        keep = min(resumable(d, sid, chunk), (size - 1) // chunk * chunk)  # >= 1 chunk to go
        try:
            if not keep:
                shutil.rmtree(d, ignore_errors=True)
                d.mkdir(parents=True)
            sink = ChunkSink(d / DATA_FILE, sid, size, resume=keep)
        except OSError as exc:  # a full disk: say so to the holder, whose leader offers again
            shutil.rmtree(d, ignore_errors=True)
            self.stats["failed"] += 1
            self._warn(f"cannot receive snapshot {sid}: {exc}", now)
            self._send(holder, "done", sid, False, f"cannot write it: {exc}")
            return
        dl = _Download(sid, holder, meta, d / DATA_FILE, sink, size, chunk, now, now, keep, keep)
        dl.offered = (holder, sid)
        self._dl = dl
        self.stats["resumed_bytes"] += keep
        log.info(
            "%s: receiving snapshot %s (%d bytes, %d kept) from %s",
            view.id,
            sid,
            size,
            keep,
            holder,
        )
        self._pump(now)

    def _recv_dir(self, sid: str) -> Path | None:
        """Returns ``DATA/snapshots/.recv-<sid>``, or None when ``sid`` is not a safe name
        (``wire.SID_PATTERN``) or the path would resolve outside ``DATA/snapshots``."""
        if not is_snapshot_id(sid):
            return None
        parent = (Path(self.cfg.data) / "snapshots").resolve()
        d = parent / f".recv-{sid}"
        if d.resolve().parent != parent:
            return None
        return d

    def _ensure_peer(self, holder: str, addr: str) -> None:
        if holder not in self.net.peers() and holder != self.view.id:
            self.net.add_peer(holder, addr)

    def _pump(self, now: float) -> None:
        """Requests chunks up to the window, re-requesting overdue ones first."""
        dl = self._dl
        if dl is None or dl.finishing or dl.verified:
            return
        want = [off for off, sent in dl.outstanding.items() if now - sent > RESEND_S]
        self.stats["chunks_resent"] += len(want)
        window = self.cfg.snapshot_window
        fresh = len(dl.outstanding)
        if dl.sink.pending >= max(window, SINK_BACKLOG // dl.chunk):
            fresh = window  # the disk is far behind: no new chunks until it caught up
        while fresh < window and dl.next_offset < dl.size:
            want.append(dl.next_offset)
            dl.next_offset += dl.chunk
            fresh += 1
        if want:
            for off in want:
                dl.outstanding[off] = now
            self._send(dl.holder, "get", dl.sid, want)

    def _on_chunk(self, sid: str, off: int, data: bytes, crc: int) -> None:
        dl = self._dl
        if dl is None or dl.sid != sid or off not in dl.outstanding:
            return
        expect = min(dl.chunk, dl.size - off)
        if len(data) != expect or zlib.crc32(data) != crc:
            self.stats["bad_chunks"] += 1
            return  # asked again once overdue
        dl.sink.put(off, data)
        del dl.outstanding[off]
        dl.received += len(data)
        now = time.monotonic()
        dl.last_progress = now
        self.stats["chunks_received"] += 1
        if dl.received >= dl.size and not dl.outstanding:
            dl.sink.finish()
            dl.finishing = True
        else:
            self._pump(now)

    def _step(self, dl: _Download) -> None:
        """Steps the SNAP message of the latest offer into the core (the data is local)."""
        m = dl.meta
        meta = SnapshotMeta(int(m["index"]), int(m["log_term"]), conf_from_json(m))
        leader = dl.offered[0]
        msg = Message(MessageType.SNAP, self.view.id, leader, term=int(m["term"]), snapshot=meta)
        dl.stepped_at = time.monotonic()
        self.core.step(msg)

    def staged_for(self, meta: SnapshotMeta) -> Path | None:
        """Returns the verified data file that covers ``meta`` (None when there is none)."""
        dl = self._dl
        if dl is not None and dl.verified and int(dl.meta["data_index"]) >= meta.index:
            return dl.path
        return None

    def installed(self) -> None:
        """Tells the holder that the download was installed."""
        dl, self._dl = self._dl, None
        if dl is not None:
            self.stats["completed"] += 1
            self.stats["installed_bytes"] += dl.size
            secs = time.monotonic() - dl.started
            self.last_transfer = {"bytes": dl.size, "seconds": secs}
            log.info("%s: snapshot %s installed after %.2fs", self.view.id, dl.sid, secs)
            self._done(dl, True, "installed")

    def _abort(self, reason: str) -> None:
        dl, self._dl = self._dl, None
        if dl is None:
            return
        dl.sink.close()
        shutil.rmtree(dl.path.parent, ignore_errors=True)
        self.stats["failed"] += 1
        self._warn(f"snapshot {dl.sid} abandoned: {reason}", time.monotonic())
        self._done(dl, False, reason)

    def _warn(self, what: str, now: float) -> None:
        """Logs ``what`` as a warning, at most every ``WARN_EVERY_S`` (a full disk makes
        every offer fail), else at debug level."""
        level = logging.WARNING if self._quiet_in.due("", now) else logging.DEBUG
        log.log(level, "%s: %s", self.view.id, what)

    def _done(self, dl: _Download, ok: bool, reason: str) -> None:
        """Tells the holder, and the leader whose offer came last when that is another
        offer, how the download ended."""
        self._send(dl.holder, "done", dl.sid, ok, reason)
        if dl.offered != (dl.holder, dl.sid):
            self._send(dl.offered[0], "done", dl.offered[1], ok, reason)

    def _send(self, peer: str, *fields: Any) -> None:
        self.net.send_frame(peer, codec.encode_frame(SNAP, *fields))

    # --- both -----------------------------------------------------------------------------
    def on_frame(self, frame: Incoming) -> None:
        """Handles one ``snap`` frame."""
        name, *rest = frame.payload
        if name == "get":
            self._serve(frame, rest[0], rest[1])
        elif name == "chunk":
            self._on_chunk(*rest)
        elif name == "offer":
            self._on_offer(frame, rest[0], rest[1])
        elif name == "done":
            self._finish_out(frame.sender.decode(errors="replace"), rest[0], rest[1], rest[2])
        elif name == "gone" and self._dl is not None and self._dl.sid == rest[0]:
            self._abort("the holder no longer has it")

    def tick(self, now: float) -> None:
        """Repeats offers, re-requests overdue chunks, finishes verification,
        and abandons transfers that stopped making progress."""
        for peer, t in list(self._out.items()):
            if not self.view.is_leader or now - t.last_activity > IDLE_S:
                self._finish_out(peer, t.sid, False, "stalled or no longer leader")
            elif now - max(t.last_offer, t.last_activity) >= OFFER_EVERY_S:
                # unanswered, or the follower went quiet (e.g. it restarted): offer again
                t.last_offer = now
                self.net.send_frame(peer, t.offer)
        dl = self._dl
        if dl is not None:
            if dl.sink.error is not None:
                dl.finishing = True  # its thread stopped at a failed write: ask for no more
            if dl.finishing and dl.sink.done():
                dl.finishing = False
                dl.sink.close()
                if dl.sink.error is not None:
                    self._abort(f"cannot write it: {dl.sink.error}")
                    return
                if dl.sink.hashed != dl.size or dl.sink.digest != dl.meta["sha256"]:
                    err = ChecksumMismatchError("received snapshot does not match its sha256")
                    self._abort(err.message)
                    return
                dl.verified = True
                dl.last_progress = now
                self._step(dl)
            elif dl.verified and dl.stepped_at and now - dl.stepped_at > STEP_WAIT_S:
                self._abort("the core did not take the snapshot")
            elif not dl.verified and not dl.finishing:
                if now - dl.last_progress > IDLE_S:
                    self._abort("no chunk arrived for too long")
                else:
                    self._pump(now)
        if self._fds and not self._out and (dl is None):
            for fd, _ in self._fds.values():
                os.close(fd)
            self._fds.clear()

    def status(self) -> dict[str, Any]:
        """Returns counters and the transfers in progress (for ``status``)."""
        dl = self._dl
        out: dict[str, Any] = dict(self.stats)
        out["sending_to"] = {p: t.sid for p, t in self._out.items()}
        if dl is not None:
            out["receiving"] = {"sid": dl.sid, "received": dl.received, "size": dl.size}
        if self.last_transfer:
            out["last_received"] = self.last_transfer
        return out

    def close(self) -> None:
        """Closes open files."""
        for fd, _ in self._fds.values():
            os.close(fd)
        self._fds.clear()
        if self._dl is not None:
            self._dl.sink.close()


_SHA256_HEX = frozenset("0123456789abcdef")


def _valid_offer(holder: str, meta: dict[str, Any]) -> bool:
    """True when an offer from ``holder`` is well formed: a usable node id, integers in
    range (indexes up to MAX_INDEX, terms up to MAX_TERM, a size >= 1, a chunk of
    1..MAX_SNAPSHOT_CHUNK bytes, ``data_index >= index``), a sha256 of 64 hex digits, a
    usable ``addr``, and a membership whose ids and
    addresses are usable (it becomes this node's peer table once installed)."""

    def uint(key: str, limit: int) -> bool:
        v = meta.get(key)
        return type(v) is int and 0 <= v <= limit

    try:
        check_node_id(holder)
        check_address(meta["addr"])
        conf = conf_from_json(meta)
        for v in meta["voters"] + meta["learners"]:
            check_node_id(v)
        for k, a in meta["addrs"].items():
            check_node_id(k)
            check_address(a)
    except (ConfigError, SnapshotError, KeyError, TypeError, AttributeError):
        return False
    sha = meta.get("sha256")
    return (
        bool(conf.voters)
        and all(uint(k, MAX_INDEX) for k in ("index", "data_index", "size"))
        and all(uint(k, MAX_TERM) for k in ("term", "log_term"))
        and meta["size"] >= 1
        and type(meta.get("chunk")) is int
        and 1 <= meta["chunk"] <= MAX_SNAPSHOT_CHUNK
        and meta["data_index"] >= meta["index"]
        and type(sha) is str
        and len(sha) == 64
        and set(sha) <= _SHA256_HEX
    )


def _raft_part(meta: dict[str, Any]) -> dict[str, Any]:
    keys = ("term", "index", "log_term", "voters", "learners", "addrs")
    return {k: meta[k] for k in keys}
