"""Automatic snapshots, log compaction and snapshot installation of one node.

Layout under ``DATA/snapshots/``::

  <index:020d>-<term>/     one snapshot: data.mdb + snapshot.json (boltraft.storage.snapshot)
  .new-*/                  a snapshot being written (removed at start-up)
  .recv-<sid>/             a snapshot being received from another node (snaptransfer; kept
                           across restarts when resumable)
  install.json             present only while a received snapshot is being swapped in

Policy (``ServerConfig``): after ``snapshot_entries`` applied entries, or ``snapshot_log_bytes``
bytes of applied command data, since the last snapshot began (checked as entries are
applied and again when a snapshot finishes), a worker thread copies the state
state machine (``StateMachine.snapshot``: for the bucket store, LMDB's compacting copy from
ONE read transaction by a child process, so writers go on, streamed, hashed and flushed in
steps at low priority, at most ``snapshot_write_mb_s``: boltraft.storage.snapio) into a new
snapshot directory, and then flushes the state DB (``StateMachine.sync``: what the log is
about to forget must be durable in the state; flushing the pages many applies dirtied takes
long enough to hold up the loop). The loop thread then compacts the Raft log up to ``index -
snapshot_keep_entries`` (a trailing window, so slightly lagging followers still get entries)
recording the membership in effect at that index, and removes all but the newest
``snapshot_retain`` snapshots (never one a transfer or backup is still reading). A failed
flush is raised on the loop thread, at the compaction.

Installing a received snapshot (``install``) is crash-safe: ``install.json`` (the log meta
and the staged file) is written durably first, then the staged file is renamed over
``state/data.mdb`` and the log is replaced by the meta; ``recover`` (run at start-up before
anything opens the state) finishes a half-done install, so a crash leaves the old state or
the new one. A node whose state is already at or past the log's snapshot index restarts
without reinstalling anything. ``install_step(name)`` is called at each step of an install
("verified", "marker", "swapped", "log"): a no-op in production, a fault-injection point in
tests.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from boltraft.errors import BoltraftError, MembershipError, NoSpaceError, SnapshotError
from boltraft.raft.confchange import apply_conf_change, decode_conf_change
from boltraft.raft.types import ConfState, Entry, EntryType, HardState, LogStore, SnapshotMeta
from boltraft.server.config import ServerConfig
from boltraft.server.ports import NodeView, StateMachine
from boltraft.server.wire import conf_from_json, conf_to_json
from boltraft.storage.applied import read_applied
from boltraft.storage.db import DB
from boltraft.storage.fsutil import DISK_FULL_ERRNOS, fsync_dir
from boltraft.storage.snapio import PROGRESS_FILE
from boltraft.storage.snapshot import (
    DATA_FILE,
    META_FILE,
    SnapshotInfo,
    load_snapshot_info,
    restore_snapshot,
)

log = logging.getLogger("boltraft.server")

INSTALL_MARKER = "install.json"


class SnapshotStore:
    """The ``DATA/snapshots`` directory. Thread-safe for ``pin``/``unpin``/``latest``.

    Invariant: every listed snapshot directory is complete (its ``snapshot.json`` exists)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._pins: dict[str, int] = {}  # snapshot dir name -> readers (transfers, backups)

    def clean_partial(self) -> None:
        """Removes snapshots left half-written by a crash."""
        for p in self.path.glob(".new-*"):
            shutil.rmtree(p, ignore_errors=True)

    def list(self) -> list[SnapshotInfo]:
        """Returns every complete snapshot, oldest first (unreadable ones are skipped)."""
        out = []
        for d in sorted(self.path.iterdir()):
            if d.is_dir() and not d.name.startswith(".") and (d / META_FILE).exists():
                try:
                    out.append(load_snapshot_info(d))
                except SnapshotError:
                    log.warning("ignoring unreadable snapshot %s", d)
        return out

    def latest(self) -> SnapshotInfo | None:
        """Returns the newest complete snapshot, or None."""
        snaps = self.list()
        return snaps[-1] if snaps else None

    def pin(self, info: SnapshotInfo) -> None:
        """Protects ``info``'s directory from ``prune``."""
        with self._lock:
            name = info.path.parent.name
            self._pins[name] = self._pins.get(name, 0) + 1

    def unpin(self, info: SnapshotInfo) -> None:
        """Drops one protection taken by ``pin``."""
        with self._lock:
            name = info.path.parent.name
            left = self._pins.get(name, 0) - 1
            if left > 0:
                self._pins[name] = left
            else:
                self._pins.pop(name, None)

    def prune(self, retain: int) -> builtins.list[str]:
        """Returns the names of the snapshots removed: all but the newest ``retain`` that are
        not pinned."""
        snaps = self.list()
        removed = []
        with self._lock:
            for info in snaps[: max(len(snaps) - retain, 0)]:
                d = info.path.parent
                if d.name not in self._pins:
                    shutil.rmtree(d, ignore_errors=True)
                    removed.append(d.name)
        return removed


Done = Callable[[SnapshotInfo | None, BoltraftError | None], None]


class Snapshots:
    """The snapshot side of one node; every method runs on the node loop's thread.

    Invariants: at most one snapshot is being created (``_creating``); ``_conf_history`` is
    sorted by index and its first entry is at or below every index the log may be compacted
    to; ``_since_entries``/``_since_bytes`` count what was applied since the last snapshot.
    """

    def __init__(
        self,
        cfg: ServerConfig,
        view: NodeView,
        sm: StateMachine,
        logstore: LogStore,
        pool: ThreadPoolExecutor,
        install_step: Callable[[str], None] = lambda step: None,
    ) -> None:
        """``sm``: the state machine (replaced by ``install``); ``pool``: where snapshots are
        written; ``install_step``: see the module docstring."""
        self.cfg = cfg
        self.view = view
        self.sm = sm
        self.logstore = logstore
        self.store = SnapshotStore(Path(cfg.data) / "snapshots")
        self.store.clean_partial()
        self._pool = pool
        self._install_step = install_step
        self._creating: Future[SnapshotInfo] | None = None
        self._waiters: list[Done] = []
        self._since_entries = 0
        self._since_bytes = 0
        # (index, membership in effect from that index on): lets compaction record the
        # membership at any index since start-up.
        self._conf_history: list[tuple[int, ConfState]] = [(view.applied, view.conf_state)]
        self.stats = {
            "created": 0,
            "compactions": 0,
            "installed": 0,
            "log_moves": 0,
            "create_errors": 0,
        }
        self.last_info: SnapshotInfo | None = self.store.latest()
        # an applied index the state machine's data is durable at (the snapshot worker's
        # flush sets it: the Future's completion hands it to this thread)
        self._durable = 0
        self._sync_error: BaseException | None = None  # that flush's error, for the loop
        self.last_create_s = 0.0

    # --- policy ----------------------------------------------------------------------------
    def on_applied(self, entries: list[Entry], conf_changed: ConfState | None) -> None:
        """Counts ``entries`` toward the policy (and recording the
        membership after each conf change among them); may start a snapshot."""
        self._since_entries += len(entries)
        self._since_bytes += sum(map(len, [e.data for e in entries]))
        if conf_changed is not None:
            self._record_conf(entries, conf_changed)
        if self._creating is None and self._due():
            self.create(None)

    def _due(self) -> bool:
        """Returns True when the policy asks for a snapshot (counted since the last began)."""
        cfg = self.cfg
        return (
            self._since_entries >= cfg.snapshot_entries
            or self._since_bytes >= cfg.snapshot_log_bytes
        )

    def _record_conf(self, entries: list[Entry], final: ConfState) -> None:
        cs = self._conf_history[-1][1]
        for e in entries:
            if e.type == EntryType.CONF_CHANGE:
                try:
                    cs = apply_conf_change(cs, decode_conf_change(e.data))
                except MembershipError:
                    continue  # the core skips an invalid change the same way
                self._conf_history.append((e.index, cs))
        if self._conf_history[-1][1] != final:  # should not happen; trust the core
            self._conf_history.append((entries[-1].index, final))

    def conf_at(self, index: int) -> ConfState:
        """Returns the membership in effect after applying entry ``index``."""
        best = self._conf_history[0][1]
        for i, cs in self._conf_history:
            if i > index:
                break
            best = cs
        return best

    def reset_conf(self, index: int, cs: ConfState) -> None:
        """Restarts the membership record at a snapshot ``index``."""
        self._conf_history = [(index, cs)]

    # --- creation --------------------------------------------------------------------------
    @property
    def creating(self) -> bool:
        """Returns True while a snapshot is being written."""
        return self._creating is not None

    def create(self, done: Done | None) -> None:
        """Starts a snapshot (or joins the one running); ``done(info,
        err)`` is called on the loop thread when it finished."""
        if done is not None:
            self._waiters.append(done)
        if self._creating is not None:
            return
        sm = self.sm
        self._since_entries = 0
        self._since_bytes = 0
        latest = self.last_info
        if latest is not None and latest.index == sm.applied[0]:
            fut: Future[SnapshotInfo] = Future()  # nothing applied since: still current
            fut.set_result(latest)
        else:
            started = time.monotonic()
            parent = self.store.path
            rate = self.cfg.snapshot_write_mb_s * 1e6

            def job() -> SnapshotInfo:
                info = sm.snapshot(parent, rate=rate)
                # what the compaction after it forgets must be durable in the state: flushed
                # here, where the flush of many dirty pages does not hold up the loop
                applied = sm.applied[0]
                try:
                    sm.sync()
                except BaseException as exc:  # raised on the loop's thread, at the compaction
                    self._sync_error = exc
                else:
                    self._durable = applied
                self.last_create_s = time.monotonic() - started
                return info

            fut = self._pool.submit(job)
        self._creating = fut

    def wait(self) -> None:
        """Waits until no snapshot is being written (finishing it on this thread)."""
        if self._creating is not None:
            try:
                self._creating.result()
            except BaseException:
                pass
            self.poll()

    def poll(self) -> None:
        """Finishes a snapshot whose copy is done: compacts the log, prunes old
        snapshots and answers the waiters."""
        fut = self._creating
        if fut is None or not fut.done():
            return
        self._creating = None
        waiters, self._waiters = self._waiters, []
        err: BoltraftError | None = None
        info: SnapshotInfo | None = None
        try:
            info = fut.result()
        except BoltraftError as exc:
            err = exc
        except OSError as exc:
            err = SnapshotError(f"snapshot failed: {exc}")
        if err is not None:
            self.stats["create_errors"] += 1
            log.error("%s: snapshot failed: %s", self.view.id, err.message)
        else:
            assert info is not None
            self.stats["created"] += 1
            self.last_info = info
            log.info(
                "%s: snapshot at index %d (%d bytes) in %.2fs",
                self.view.id,
                info.index,
                info.size,
                self.last_create_s,
            )
            self.compact(info.index)
            # deleting a large file can take a while (and stall fsyncs): not on this thread
            self._pool.submit(self.store.prune, self.cfg.snapshot_retain)
        for w in waiters:
            w(info, err)
        if err is None and self._creating is None and self._due():
            # what was applied while this one was written already calls for the next: start
            # it now, not at the next apply (which may not come before the node is idle)
            self.create(None)

    def compact(self, snap_index: int) -> None:
        """Compacts the log up to ``snap_index`` minus the trailing
        window (no-op when that is not past the log's current snapshot)."""
        err, self._sync_error = self._sync_error, None
        if err is not None:  # the snapshot worker's flush of the state failed: raised here
            raise err
        logstore = self.logstore
        upto = min(snap_index - self.cfg.snapshot_keep_entries, self.view.applied)
        upto = max(upto, self._conf_history[0][0])
        if upto <= logstore.snapshot_meta().index or upto > logstore.last_index():
            return
        if upto > self._durable:  # the state must be durable past what the log forgets
            self.sm.sync()
        meta = SnapshotMeta(upto, logstore.term(upto), self.conf_at(upto))
        logstore.compact(meta)
        self.stats["compactions"] += 1
        self._conf_history = [(i, cs) for i, cs in self._conf_history if i >= upto] or [
            (upto, meta.conf_state)
        ]
        if self._conf_history[0][0] > upto:
            self._conf_history.insert(0, (upto, meta.conf_state))

    # --- installing a received snapshot -------------------------------------------------------
    def install(
        self,
        meta: SnapshotMeta,
        staged: Path,
        hard_state: HardState,
        reopen: Callable[[], StateMachine],
    ) -> StateMachine:
        """The reopened state machine (``reopen()``) after swapping the verified staged data
        file ``staged`` in as the state and replacing the log by ``meta`` (crash-safe, see
        the module docstring); the old one is closed. Raises SnapshotError when a full disk
        stopped the install half-way (a restart finishes it), NoSpaceError when it stopped
        it before anything changed."""
        self.wait()
        data_dir = Path(self.cfg.data)
        marker = {
            "meta": {"index": meta.index, "term": meta.term, **conf_to_json(meta.conf_state)},
            "staged": str(staged),
            "hard_state": list(hard_state),
        }
        step = self._install_step
        step("verified")
        write_marker(data_dir, marker)  # NoSpaceError: nothing changed yet
        step("marker")
        self.sm.close()
        try:
            _finish_install(data_dir, self.logstore, marker, step)
        except NoSpaceError as err:  # half done: a restart finishes it (boltraft.server.main)
            raise SnapshotError(f"snapshot install stopped by a full disk: {err.message}") from err
        self.sm = reopen()
        self._durable = 0  # a new state machine: the next compaction flushes it first
        applied = self.sm.applied[0]
        self.reset_conf(meta.index, meta.conf_state)
        self._since_entries = self._since_bytes = 0
        self.stats["installed"] += 1
        log.info(
            "%s: installed a snapshot (log at %d, state at %d)", self.view.id, meta.index, applied
        )
        return self.sm

    def move_log(self, meta: SnapshotMeta, hard_state: HardState) -> None:
        """Replaces the log by the snapshot ``meta`` without touching the state, which has
        already applied past ``meta.index`` (it is flushed first: the log then forgets
        entries only the state holds)."""
        self.sm.sync()
        commit = max(hard_state.commit, meta.index)
        self.logstore.apply_snapshot(meta, HardState(hard_state.term, hard_state.vote, commit))
        self.reset_conf(meta.index, meta.conf_state)
        self.stats["log_moves"] += 1
        log.info(
            "%s: moved the log to snapshot index %d (state at %d)",
            self.view.id,
            meta.index,
            self.sm.applied[0],
        )


def write_marker(data_dir: Path, marker: dict[str, Any]) -> None:
    """Durably writes the install marker. Raises NoSpaceError (no
    marker written) when the disk is full."""
    p = data_dir / "snapshots" / INSTALL_MARKER
    tmp = p.with_suffix(".tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(marker, f)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in DISK_FULL_ERRNOS:
            raise NoSpaceError(f"cannot write {tmp}: the disk is full") from None
        raise
    os.replace(tmp, p)
    fsync_dir(p.parent)


def _finish_install(
    data_dir: Path,
    logstore: LogStore,
    marker: dict[str, Any],
    step: Callable[[str], None] = lambda step: None,
) -> None:
    """Completes the install ``marker`` describes (idempotent): staged file renamed over
    the state, log replaced by the meta, marker removed. The state machine must be closed.
    ``step``: see the module docstring."""
    staged = Path(marker["staged"])
    state = data_dir / "state"
    if staged.exists():
        os.replace(staged, state / DATA_FILE)
        fsync_dir(state)
        step("swapped")
        shutil.rmtree(staged.parent, ignore_errors=True)
    m = marker["meta"]
    meta = SnapshotMeta(int(m["index"]), int(m["term"]), conf_from_json(m))
    if logstore.snapshot_meta().index < meta.index:
        term, vote, commit = marker["hard_state"]
        logstore.apply_snapshot(meta, HardState(int(term), str(vote), max(int(commit), meta.index)))
        step("log")
    (data_dir / "snapshots" / INSTALL_MARKER).unlink(missing_ok=True)
    fsync_dir(data_dir / "snapshots")


def recover(data_dir: str | os.PathLike[str], logstore: LogStore) -> str:
    """Returns what start-up recovery did ("" when nothing was needed), run before the state
    machine is opened: finishes an interrupted install; when the state is behind the log's
    snapshot index, restores the newest local snapshot that covers it.

    Raises SnapshotError when the state is behind the log and no local snapshot covers it."""
    root = Path(data_dir)
    marker_path = root / "snapshots" / INSTALL_MARKER
    did = []
    if marker_path.exists():
        try:
            marker = json.loads(marker_path.read_text())
        except ValueError:
            marker = None
        if marker is None:  # torn before the rename: nothing was swapped yet
            marker_path.unlink()
        else:
            _finish_install(root, logstore, marker)
            did.append("finished an interrupted snapshot install")
    for p in (root / "snapshots").glob(".recv-*"):
        if not (p / PROGRESS_FILE).exists():  # nothing resumable (snaptransfer)
            shutil.rmtree(p, ignore_errors=True)
    snap_index = logstore.snapshot_meta().index
    if snap_index > 0:
        state = root / "state"
        if (state / DATA_FILE).exists():
            db = DB.open(state, readonly=True)
            try:
                applied = read_applied(db)[0]
            finally:
                db.close()
        else:
            applied = 0
        if applied < snap_index:
            store = SnapshotStore(root / "snapshots")
            cover = [s for s in store.list() if s.index >= snap_index]
            if not cover:
                raise SnapshotError(
                    f"state is at {applied} but the log starts after {snap_index}, and no "
                    "local snapshot covers it",
                    applied=applied,
                    snapshot_index=snap_index,
                )
            restore_snapshot(state, cover[-1].path, cover[-1])
            did.append(f"restored the state from snapshot {cover[-1].index}")
    return "; ".join(did)
