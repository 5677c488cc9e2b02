"""``serve()`` runs one node in this process until SIGTERM/SIGINT.

Start-up order: lock the data directory, resolve the configuration against node.json (and
remember it), open the Raft log and the state machine, bind the network, bootstrap a new
cluster from the member list (a no-op on restart), then run the loop on the calling thread.
Shutdown (a signal sets a flag the loop sees within one tick) closes everything in reverse.

``ServeHooks`` are what a test or a benchmark installs around a node (an observer of the
commit stages, wrappers of the log store and the network, a fault-injection point in
snapshot installs); a production node runs with the defaults, which change nothing.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import zmq

from boltraft.errors import ConfigError, CorruptionError, DiskFailedError
from boltraft.raft.types import LogStore
from boltraft.server.access import Access
from boltraft.server.config import ServerConfig, check_secure, resolve_config
from boltraft.server.datadir import DataDir, NewDirGuard, current_boot_id
from boltraft.server.health import HealthServer
from boltraft.server.joining import bootstrap_for_join, request_join
from boltraft.server.membership import check_removed
from boltraft.server.metrics import NodeMetrics
from boltraft.server.node import Node
from boltraft.server.ports import CommitObserver, Net, StateMachine
from boltraft.server.replies import answer_refused
from boltraft.server.snapshots import recover
from boltraft.server.watchlog import WatchLog
from boltraft.storage.db import DEFAULT_QUOTA
from boltraft.storage.fsm import BucketStateMachine
from boltraft.storage.fsutil import check_free_space
from boltraft.storage.pagecheck import check_pages
from boltraft.transport.curve import PartyKeys, load_keys
from boltraft.transport.zmq_transport import PeerTransport

log = logging.getLogger("boltraft.server")


def _same(x: Any) -> Any:
    return x


def _no_step(step: str) -> None:
    pass


@dataclass(frozen=True, slots=True)
class ServeHooks:
    """What a test or benchmark installs around one node (see the module docstring)."""

    observer: CommitObserver | None = None
    wrap_log: Callable[[LogStore], LogStore] = _same
    wrap_net: Callable[[Net], Net] = _same
    install_step: Callable[[str], None] = _no_step


class _StopFlag:
    """A flag set by SIGTERM/SIGINT; the loop polls it at least once per tick."""

    def __init__(self) -> None:
        self.set = False
        self.signal = 0

    def __call__(self) -> bool:
        return self.set

    def handle(self, signum: int, _frame: FrameType | None) -> None:
        self.set = True
        self.signal = signum


def open_state_machine(cfg: ServerConfig, datadir: DataDir) -> BucketStateMachine:
    """Returns the node's state machine on ``DATA/state``.

    The synced Raft log is the durable source of truth and replay is exact (the applied index
    lives in the same LMDB transaction as the data), so the state DB need not be durable at
    every commit; it must only never be USED torn. Two modes, both crash-safe:

    - Unsynced (Linux, ``fsync`` on): LMDB commits without fsync. Before that,
      ``DATA/state.unsynced`` durably records this machine boot's id. A process crash loses
      nothing (the OS page cache holds every commit, and LMDB keeps it consistent). After a
      machine crash the next start sees a marker from another boot, deletes the state DB
      (its pages may have reached the disk in any order) and rebuilds it from the newest
      local snapshot and the log (``serve``). A clean shutdown flushes the DB and removes
      the marker (``close_state_machine``). Log compaction already flushes the state first.
    - Synced (no boot id, or ``fsync`` off): every apply commit fsyncs the data pages but
      not the meta page (LMDB ``sync=True, metasync=False``): a machine crash can undo the
      last commit, which the log replays, and never corrupts the store.

    The whole quota is mapped from the start (address space, not memory): a map that grew
    would be remapped, which drops every mapped page from the RSS and maps them again as
    they are read, so RSS would fall and climb back under a steady workload
    (``boltraft.storage.db``).
    """
    window = cfg.dedup_window_ms
    maps = {"quota": DEFAULT_QUOTA, "initial_map_size": DEFAULT_QUOTA}
    boot = current_boot_id() if cfg.fsync else None
    if boot is None:
        return BucketStateMachine(
            datadir.state_path, sync=True, metasync=False, dedup_window_ms=window, **maps
        )
    datadir.mark_state_unsynced(boot)
    return BucketStateMachine(datadir.state_path, sync=False, dedup_window_ms=window, **maps)


def _damaged(path: Path, problems: list[str]) -> CorruptionError:
    shown = "; ".join(problems[:3]) + (f" (and {len(problems) - 3} more)" * (len(problems) > 3))
    return CorruptionError(
        f"the state store {path} failed its check: {shown}; restore the node from a "
        "snapshot of another member (wipe its data directory and add it again)",
        path=str(path),
        problems=problems[:20],
    )


def check_state_pages(path: Path) -> None:
    """Checks the page structure of the state store at ``path`` from its file, before LMDB
    opens it (``pagecheck.check_pages``: LMDB aborts the process on some damaged pages,
    already while opening). Raises CorruptionError naming the first problems found; a
    directory without a store yet passes."""
    data = path / "data.mdb"
    if data.is_file():
        problems = check_pages(data)
        if problems:
            raise _damaged(path, problems)


def check_state_store(sm: BucketStateMachine, path: Path) -> None:
    """Checks the whole state store at ``path`` before the node serves it, after
    ``check_state_pages``: its buckets and keys (``layout.check_store``: what ``boltraft
    inspect DATA/state check`` reports with the pages) and the checksum of every value.
    Raises CorruptionError naming the first problems found; takes time in proportion to
    the data."""
    problems = sm.db.check(pages=False)
    if problems:
        raise _damaged(path, problems)


def close_state_machine(sms: list[StateMachine], datadir: DataDir) -> None:
    """Flushes and closes every state machine in ``sms`` (closed ones are skipped), then
    removes ``DATA/state.unsynced``; when a flush fails the marker stays (the next start
    after a machine crash rebuilds the state) and the error propagates."""
    for sm in sms:
        if not sm.closed:
            sm.sync()
            sm.close()
    datadir.clear_state_unsynced()


def serve(
    values: Mapping[str, Any],
    data: str | os.PathLike[str],
    join: str | None = None,
    hooks: ServeHooks | None = None,
) -> int:
    """The process exit status (0 after a clean shutdown by signal, 3 when the node
    was removed from its cluster). ``join``: the address of a member of the cluster a NEW
    node asks to be added to (boltraft.server.membership).

    ``values`` are the configuration values from flags and config file (None = unset).
    Raises DataDirLockedError when another process serves ``data``, OSError (ENOSPC) when
    its disk cannot take ``fsutil.START_FREE_BYTES`` more, ConfigError on a bad
    configuration (before anything in ``data`` changes besides creating the folders). A
    start that fails before the node serves leaves no new data directory behind.

    With ``metrics_addr`` configured, ``/metrics``, ``/healthz`` and ``/readyz`` are served
    there (boltraft.server.health), bound before anything is written.
    """
    with NewDirGuard(data) as guard:  # a start that fails leaves no new data dir behind
        return _serve(values, data, join, hooks or ServeHooks(), guard)


def _serve(
    values: Mapping[str, Any],
    data: str | os.PathLike[str],
    join: str | None,
    hooks: ServeHooks,
    guard: NewDirGuard,
) -> int:
    datadir = DataDir.open(data)
    status = 0
    health: HealthServer | None = None
    metrics: NodeMetrics | None = None
    try:
        check_removed(datadir.path)
        check_free_space(datadir.path)  # a full disk: refused before anything is written
        remembered = datadir.read_node_info()
        cfg = resolve_config(values, remembered, data)
        if remembered is not None and remembered.keys != cfg.keys:
            log.warning(
                "node %s: keys folder %s replaces %s (remembered in node.json from now on)",
                cfg.id,
                cfg.keys or "(none)",
                remembered.keys or "(none)",
            )
        if check_secure(cfg):
            log.warning(
                "node %s serves %s WITHOUT keys (--insecure): anyone who reaches it can read, "
                "write, join and take backups",
                cfg.id,
                cfg.listen,
            )
        keys = load_node_keys(cfg)
        access = None if keys is None else Access(keys)
        metrics = NodeMetrics(cfg.id, cfg.listen) if cfg.metrics_addr else None
        if metrics is not None:  # first: an address in use fails before anything is written
            health = HealthServer(metrics, cfg.metrics_addr)
        if remembered != cfg.node_info():
            datadir.write_node_info(cfg.node_info())
        opened = datadir.open_log_store(cfg.log_store, sync=cfg.fsync)  # may refuse the kind
        logstore = hooks.wrap_log(opened)
        observer = hooks.observer
        if metrics is not None:
            logstore = metrics.wrap_log(logstore)
            observer = metrics.observer(observer)
        stop = _StopFlag()
        previous = {s: signal.signal(s, stop.handle) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            if datadir.discard_state_if_crashed(current_boot_id()):
                log.warning(
                    "node %s: the machine went down with unflushed state: rebuilding "
                    "it from the newest snapshot and the log",
                    cfg.id,
                )
            recovered = recover(datadir.path, logstore)  # a half-done snapshot install
            if recovered:
                log.info("node %s: %s", cfg.id, recovered)
            if join and bootstrap_for_join(logstore, join, keys=keys):
                log.info("node %s: joining the cluster at %s", cfg.id, join)
            check_state_pages(datadir.state_path)
            opened_sm = open_state_machine(cfg, datadir)
            sm: StateMachine = opened_sm
            node: Node | None = None
            try:
                check_state_store(opened_sm, datadir.state_path)
                transport = open_transport(cfg, keys, access)
                watch_log = WatchLog(datadir.watch_path)
                try:
                    net = hooks.wrap_net(transport)
                    if metrics is not None:
                        net = metrics.wrap_net(net)
                    node = Node(
                        cfg,
                        net=net,
                        logstore=logstore,
                        sm=sm,
                        observer=observer,
                        reopen_sm=lambda: open_state_machine(cfg, datadir),
                        install_step=hooks.install_step,
                        access=access,
                        watch_log=watch_log,
                    )
                    log.info(
                        "node %s serving on %s (data %s, peers %s)",
                        cfg.id,
                        cfg.listen,
                        datadir.path,
                        cfg.peers,
                    )
                    if metrics is not None:
                        metrics.attach(node)
                    if join:
                        request_join(cfg.id, cfg.listen, join, stop, keys)
                    guard.keep()  # the node serves: its data is the cluster's now
                    try:
                        node.run(lambda: stop() or node.ops.halted is not None)
                    except OSError as exc:  # a full disk is NoSpaceError, handled in the loop
                        log.critical("node %s: a disk write or fsync failed: %s", cfg.id, exc)
                        raise DiskFailedError(
                            f"{exc}; the node stopped: restart it once the disk is fixed"
                        ) from exc
                    finally:
                        node.close()
                    if node.ops.halted is not None:
                        print(f"error: node_removed: {node.ops.halted}", file=sys.stderr)
                        status = 3
                    log.info("node %s stopping (signal %d)", cfg.id, stop.signal)
                finally:
                    watch_log.close()
                    transport.close()
            finally:  # a snapshot install may have replaced node.sm
                close_state_machine([sm] if node is None else [sm, node.sm], datadir)
        finally:
            opened.close()
            for s, handler in previous.items():
                signal.signal(s, handler)
    finally:
        if health is not None:
            health.close()
        if metrics is not None:
            metrics.close()
        datadir.close()
    return status


def load_node_keys(cfg: ServerConfig) -> PartyKeys | None:
    """Returns the node's CURVE keys from ``cfg.keys`` (None without). Raises ConfigError
    when the folder is unusable or belongs to another party than this node."""
    if not cfg.keys:
        return None
    keys = load_keys(cfg.keys)
    if keys.kind != "node" or keys.name != cfg.id:
        raise ConfigError(
            f"{cfg.keys} holds the keys of {keys.kind} {keys.name!r}, not of node {cfg.id!r}"
        )
    return keys


def open_transport(
    cfg: ServerConfig, keys: PartyKeys | None = None, access: Access | None = None
) -> PeerTransport:
    """The node's transport bound at ``cfg.listen`` (CURVE with ``keys``, admitting the
    keys ``access`` allows), answering the requests of frames its inbox refuses
    ``overloaded``; raises ConfigError when the address cannot be bound (in use, not this
    machine's)."""
    try:
        return PeerTransport(
            cfg.id,
            cfg.listen,
            keys=keys,
            allow=None if access is None else access.allow,
            answer_refused=answer_refused,
        )
    except zmq.ZMQError as exc:
        raise ConfigError(f"cannot listen on {cfg.listen}: {exc.strerror}") from None


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (RFC 3339, UTC), ``level``, ``logger``, ``msg``,
    and ``exc`` when an exception is attached."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _dt.datetime.fromtimestamp(record.created, _dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Sends the server's log lines to stderr: ``text`` lines with timestamps, or ``json``
    objects (``JsonLogFormatter``). Raises ConfigError for an unknown level or format."""
    if level.upper() not in LOG_LEVELS:
        raise ConfigError(f"log level must be one of {', '.join(LOG_LEVELS)}, not {level}")
    if fmt not in LOG_FORMATS:
        raise ConfigError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {fmt}")
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonLogFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])
