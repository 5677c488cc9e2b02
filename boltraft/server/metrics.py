"""Prometheus metrics of one node (``serve --metrics-addr``; docs/operations.md lists them).

Three sources, each through a seam the node already has, so the loop itself is unchanged:

- a ``CommitObserver`` (``MetricsObserver``, composed with the one the node was given, whose
  ``stats`` answers it keeps): the apply duration, the commit latency of the leader's
  proposals, and at every loop iteration the loop's heartbeat; every ``SAMPLE_S`` it copies
  what the node already counts (its ``NodeState``, counters, the service's, the transport's,
  the snapshot parts', the answers' error codes) into one immutable sample;
- a log store wrapper (``TimedLogStore``): the duration of every log flush (fsync);
- a network wrapper (``CountingNet``): client requests by op, as they arrive.

The HTTP thread (boltraft.server.health) reads only the published sample and the
histograms (which prometheus-client locks), never the node: the loop's objects stay owned by
its one thread.
"""

from __future__ import annotations

import gc
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from boltraft import __version__
from boltraft.raft.types import (
    Entry,
    HardState,
    LogStore,
    Message,
    Role,
)
from boltraft.server.node import KNOWN_OPS
from boltraft.server.ports import CommitObserver, Net, NullObserver
from boltraft.storage.proxy import LogStoreProxy
from boltraft.transport.zmq_transport import Incoming

SAMPLE_S = 0.1  # how often the loop publishes its counters (a scrape sees them this fresh)
READY_MAX_APPLY_LAG = 1000  # /readyz: most committed entries a ready node has not applied
HEALTHY_WITHIN_S = 5.0  # /healthz: the loop ran an iteration this recently
_MAX_PENDING_BATCHES = 100_000

# 100 us .. 6.6 s, doubling: an fsync, an apply and a commit all fit
LATENCY_BUCKETS = tuple(0.0001 * 2**i for i in range(17))
# 10 us .. 0.66 s, doubling: a young collection takes tens of microseconds, a full one more
GC_BUCKETS = tuple(0.00001 * 2**i for i in range(17))


class TimedLogStore(LogStoreProxy):
    """A LogStore that times every flush of the wrapped store (``sync()``, or an
    ``append`` with ``sync=True``) into ``histogram``; everything else goes straight
    through."""

    def __init__(self, inner: LogStore, histogram: Histogram) -> None:
        super().__init__(inner)
        self._hist = histogram

    def append(
        self, entries: Sequence[Entry], hard_state: HardState | None = None, sync: bool = True
    ) -> None:
        if not sync:
            self.inner.append(entries, hard_state, sync)
            return
        t0 = time.perf_counter()
        self.inner.append(entries, hard_state, sync)
        self._hist.observe(time.perf_counter() - t0)

    def sync(self) -> None:
        t0 = time.perf_counter()
        self.inner.sync()
        self._hist.observe(time.perf_counter() - t0)


class CountingNet:
    """A Net that counts the client requests it receives by op (an op no node knows counts
    as ``unknown``: the label set stays bounded); everything else goes straight through.
    Owned by the loop's thread, as the Net it wraps."""

    def __init__(self, inner: Net) -> None:
        self.inner = inner
        self.requests: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _count(self, body: Any) -> None:
        op = body.get("op") if type(body) is dict else None
        name = op if type(op) is str and op in KNOWN_OPS else "unknown"
        self.requests[name] = self.requests.get(name, 0) + 1

    def recv(self, timeout: float = 0.0, max_frames: int = 4096) -> list[Incoming]:
        frames = self.inner.recv(timeout, max_frames)
        for f in frames:
            if f.kind == "req":
                self._count(f.payload[1])
            elif f.kind == "reqs":
                for item in f.payload:
                    self._count(item[1])
        return frames

    def pending(self) -> bool:
        return self.inner.pending()

    def queue(self, msgs: Iterable[Message]) -> None:
        self.inner.queue(msgs)

    def flush(self) -> int:
        return self.inner.flush()

    def send_frame(self, peer_id: str, frame: bytes) -> bool:
        return self.inner.send_frame(peer_id, frame)

    def reply(self, sender: bytes, frame: bytes) -> bool:
        return self.inner.reply(sender, frame)

    def peers(self) -> dict[str, str]:
        return self.inner.peers()

    def add_peer(self, peer_id: str, addr: str) -> None:
        self.inner.add_peer(peer_id, addr)

    def remove_peer(self, peer_id: str) -> bool:
        return self.inner.remove_peer(peer_id)

    def counters(self) -> dict[str, int]:
        return self.inner.counters()

    def close(self) -> None:
        self.inner.close()


class MetricsObserver:
    """The CommitObserver of a node with metrics: times applies and the leader's commits,
    beats the loop's heartbeat and publishes the node's sample (``NodeMetrics.sample``),
    and passes every call on to ``inner`` (whose ``snapshot`` answers ``stats``)."""

    def __init__(self, metrics: NodeMetrics, inner: CommitObserver) -> None:
        self.inner = inner
        self._m = metrics
        self._batches: deque[tuple[int, int, float]] = deque()  # (last index, count, t0)
        self.pending = 0  # client writes proposed here and not yet applied
        self.committed = 0  # ... applied
        self._apply_t0 = 0.0
        self._next_sample = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def iteration(self, now: float) -> None:
        m = self._m
        m.last_iteration = time.monotonic()
        if now >= self._next_sample:
            self._next_sample = now + SAMPLE_S
            m.sample(now)
        self.inner.iteration(now)

    def proposed(self, last_index: int, count: int) -> None:
        batches = self._batches
        if len(batches) >= _MAX_PENDING_BATCHES:
            self.pending -= batches.popleft()[1]
        batches.append((last_index, count, time.perf_counter()))
        self.pending += count
        self.inner.proposed(last_index, count)

    def persisted(self, index: int) -> None:
        self.inner.persisted(index)

    def observe_messages(self, messages: Sequence[Message]) -> None:
        self.inner.observe_messages(messages)

    def applying(self, index: int) -> None:
        self._apply_t0 = time.perf_counter()
        self.inner.applying(index)

    def applied(self, index: int) -> None:
        now = time.perf_counter()
        self._m.apply_seconds.observe(now - self._apply_t0)
        batches = self._batches
        while batches and batches[0][0] <= index:
            _, count, t0 = batches.popleft()
            self._m.commit_seconds.observe(now - t0)
            self.pending -= count
            self.committed += count
        self.inner.applied(index)

    def leader_changed(self) -> None:
        """Forgets the batches proposed under the last leader: they are answered (applied
        or dropped) through the new one."""
        self._batches.clear()
        self.pending = 0

    def replied(self, index: int) -> None:
        self.inner.replied(index)

    def snapshot(self, since: float = 0.0) -> dict[str, Any]:
        return self.inner.snapshot(since)


class PauseTimer:
    """Times every collection of Python's cyclic garbage collector in this process, from the
    moment it is made until ``close``: ``record(generation, seconds)`` is called after each
    one, on the thread that ran it (any thread: ``record`` must be thread-safe). It only
    measures: what the collector does is unchanged."""

    def __init__(self, record: Callable[[int, float], None]) -> None:
        self._record = record
        self._started = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._record(info["generation"], time.perf_counter() - self._started)

    def close(self) -> None:
        """Stops timing; calling it again does nothing."""
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)


class NodeMetrics:
    """The metrics of one node: the histograms, the observer, the wrappers, and the sample
    the loop publishes for the HTTP thread (``current()``)."""

    def __init__(self, node_id: str, listen: str = "") -> None:
        self.node_id = node_id
        self.listen = listen
        self.registry = CollectorRegistry(auto_describe=True)
        self.fsync_seconds = Histogram(
            "boltraft_log_fsync_duration_seconds",
            "Time to flush the Raft log to disk (fdatasync), per flush.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.apply_seconds = Histogram(
            "boltraft_apply_duration_seconds",
            "Time to apply one batch of committed entries to the state machine.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.commit_seconds = Histogram(
            "boltraft_commit_latency_seconds",
            "Leader only: time from proposing a batch of client writes to applying it "
            "(replicated to a quorum, committed, applied).",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.gc_pause_seconds = Histogram(
            "boltraft_gc_pause_seconds",
            "Time the process stood still in one collection of Python's cyclic garbage "
            "collector, by generation (2: a full collection).",
            labelnames=["generation"],
            buckets=GC_BUCKETS,
            registry=self.registry,
        )
        self._gc_timer = PauseTimer(
            lambda gen, seconds: self.gc_pause_seconds.labels(str(gen)).observe(seconds)
        )
        self.last_iteration: float | None = None  # time.monotonic() of the loop's last turn
        self._sample: dict[str, Any] | None = None
        self._node: Any = None
        self._net: CountingNet | None = None
        self._observer: MetricsObserver | None = None
        self._lead = ""
        self._leader_changes = 0
        self._made_bytes = 0
        self._made_seen = 0
        self.registry.register(_SampleCollector(self))

    def close(self) -> None:
        """Stops timing the garbage collector (the histograms keep what they hold)."""
        self._gc_timer.close()

    # --- composing with the node's seams ------------------------------------------------------
    def observer(self, inner: CommitObserver | None) -> MetricsObserver:
        """The observer to give the node: this one, passing every call on to ``inner``."""
        self._observer = MetricsObserver(self, inner or NullObserver())
        return self._observer

    def wrap_log(self, store: LogStore) -> LogStore:
        """``store`` with its flushes timed."""
        return TimedLogStore(store, self.fsync_seconds)

    def wrap_net(self, net: Net) -> Net:
        """``net`` with the client requests it receives counted by op."""
        self._net = CountingNet(net)
        return self._net

    def attach(self, node: Any) -> None:
        """Starts sampling ``node`` (a ``boltraft.server.node.Node`` built with this
        observer; read on its loop's thread only)."""
        self._node = node
        self._lead = node.state.lead

    # --- on the loop's thread -----------------------------------------------------------------
    def sample(self, now: float) -> None:
        """Publishes what the node counts now (called by the observer on the loop thread)."""
        node = self._node
        if node is None:
            return
        state = node.state
        if state.lead != self._lead:
            self._lead = state.lead
            self._leader_changes += 1
            if self._observer is not None:
                self._observer.leader_changed()
        snaps = node.ops.snapshots
        created = snaps.stats.get("created", 0)
        if created != self._made_seen:
            if snaps.last_info is not None:
                self._made_bytes += snaps.last_info.size * (created - self._made_seen)
            self._made_seen = created
        obs = self._observer
        self._sample = {
            "at": time.monotonic(),
            "term": node.raw.status().term,
            "lead": state.lead,
            "role": state.role,
            "leader_ok": state.leader_recently_heard(now),
            "commit": state.commit,
            "applied": state.applied,
            "last_index": node.logstore.last_index(),
            "log_full": state.log_full,
            "apply_full": state.apply_full,
            "leader_changes": self._leader_changes,
            "node": dict(node.counters),
            "service": dict(node.service.stats),
            "transport": node.net.counters(),
            "snapshots": dict(snaps.stats),
            "made_bytes": self._made_bytes,
            "transfers": dict(node.ops.transfers.stats),
            "watch": node.watches.status(),
            "errors": dict(node.replies.errors),
            "requests": dict(self._net.requests) if self._net is not None else {},
            "pending": obs.pending if obs is not None else 0,
        }

    # --- on any thread ------------------------------------------------------------------------
    def current(self) -> dict[str, Any] | None:
        """The last published sample (None before the node's loop first ran)."""
        return self._sample

    def health(self) -> tuple[bool, dict[str, Any]]:
        """``/healthz``: (alive, body): the loop ran an iteration within HEALTHY_WITHIN_S."""
        last = self.last_iteration
        if last is None:
            return False, {"health": False, "id": self.node_id, "reason": "starting"}
        ago = time.monotonic() - last
        alive = ago <= HEALTHY_WITHIN_S
        body: dict[str, Any] = {"health": alive, "id": self.node_id, "loop_s": round(ago, 3)}
        if not alive:
            body["reason"] = f"the node loop has not run for {ago:.1f}s"
        return alive, body

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """``/readyz``: (ready, body): alive, a leader is known and heard from, applied is
        within READY_MAX_APPLY_LAG entries of commit, and the disk is not full."""
        alive, health = self.health()
        s = self._sample
        if not alive or s is None:
            reason = health.get("reason", "starting")
            return False, {"ready": False, "id": self.node_id, "reason": reason}
        lag = s["commit"] - s["applied"]
        disk = s["log_full"] or s["apply_full"]
        reasons = []
        if not s["leader_ok"]:
            reasons.append("no leader is known" if not s["lead"] else "the leader is not heard")
        if lag > READY_MAX_APPLY_LAG:
            reasons.append(f"applied is {lag} entries behind commit (most {READY_MAX_APPLY_LAG})")
        if disk:
            reasons.append(disk)
        body: dict[str, Any] = {
            "ready": not reasons,
            "id": self.node_id,
            "leader": s["lead"],
            "commit": s["commit"],
            "applied": s["applied"],
            "disk_full": bool(disk),
        }
        if reasons:
            body["reason"] = "; ".join(reasons)
        return not reasons, body


_TRANSPORT_COUNTERS = (
    ("boltraft_transport_sent_frames_total", "sent", "Frames handed to ZeroMQ."),
    ("boltraft_transport_received_frames_total", "received", "Good frames received."),
    ("boltraft_transport_sent_bytes_total", "bytes_sent", "Bytes of the frames sent."),
    ("boltraft_transport_received_bytes_total", "bytes_received", "Bytes of good frames received."),
    ("boltraft_transport_sent_messages_total", "sent_messages", "Raft messages sent to peers."),
    ("boltraft_transport_replies_total", "replies", "Frames sent back to clients."),
    (
        "boltraft_transport_dropped_frames_total",
        "dropped",
        "Frames to peers dropped (queue full or peer unreachable).",
    ),
    (
        "boltraft_transport_dropped_messages_total",
        "dropped_messages",
        "Raft messages dropped (in dropped frames, or for unknown peers).",
    ),
    (
        "boltraft_transport_dropped_replies_total",
        "reply_dropped",
        "Answers to clients dropped (client gone or its queue full).",
    ),
    (
        "boltraft_transport_inbox_refused_frames_total",
        "inbox_refused",
        "Frames refused unread: their sender's or all clients' inbox budget was full.",
    ),
)
_BAD_FRAMES = ("malformed", "oversized", "unsupported", "bad_request")


class _SampleCollector(Collector):
    """Turns the published sample into metric families at each scrape."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._m
        info = GaugeMetricFamily(
            "boltraft_node_info", "This node (value 1).", labels=["id", "listen", "version"]
        )
        info.add_metric([m.node_id, m.listen, __version__], 1)
        yield info
        s = m.current()
        if s is None:
            return

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, value=value)

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, value=value)

        is_leader = s["role"] == Role.LEADER
        yield gauge("boltraft_is_leader", "1 when this node is the leader.", int(is_leader))
        yield gauge(
            "boltraft_has_leader",
            "1 when this node leads or heard its leader within an election timeout.",
            int(s["leader_ok"]),
        )
        yield counter(
            "boltraft_leader_changes_seen_total",
            "Changes of the leader this node has seen since it started.",
            s["leader_changes"],
        )
        yield gauge("boltraft_term", "The Raft term.", s["term"])
        yield gauge("boltraft_commit_index", "The highest log index known committed.", s["commit"])
        yield gauge("boltraft_applied_index", "The highest log index applied.", s["applied"])
        yield gauge(
            "boltraft_last_log_index", "The last index in this node's log.", s["last_index"]
        )
        yield counter(
            "boltraft_proposals_committed_total",
            "Log entries committed (the commit index, as etcd counts it).",
            s["commit"],
        )
        yield counter(
            "boltraft_proposals_applied_total",
            "Log entries applied (the applied index).",
            s["applied"],
        )
        yield gauge(
            "boltraft_proposals_pending",
            "Client writes this leader proposed that are not applied yet.",
            max(0, s["pending"]),
        )
        yield counter(
            "boltraft_proposals_failed_total",
            "Client writes answered proposal_dropped (lost to a new leader or refused); "
            "the client library retries them.",
            sum(n for (_, code), n in s["errors"].items() if code == "proposal_dropped"),
        )
        full = GaugeMetricFamily(
            "boltraft_disk_full",
            "1 while this node's disk is full: its Raft log cannot grow (part=log) or its "
            "state cannot apply (part=state).",
            labels=["part"],
        )
        full.add_metric(["log"], int(bool(s["log_full"])))
        full.add_metric(["state"], int(bool(s["apply_full"])))
        yield full
        node = s["node"]
        yield counter(
            "boltraft_disk_full_events_total",
            "Times a log append or an apply found the disk full.",
            node.get("log_disk_full", 0) + node.get("apply_disk_full", 0),
        )
        snaps, transfers = s["snapshots"], s["transfers"]
        yield counter(
            "boltraft_snapshots_created_total",
            "Snapshots this node made.",
            snaps.get("created", 0),
        )
        yield counter(
            "boltraft_snapshot_created_bytes_total",
            "Bytes of the snapshots this node made.",
            s["made_bytes"],
        )
        yield counter(
            "boltraft_snapshots_sent_total",
            "Snapshots this node sent to a follower that installed them.",
            transfers.get("sent", 0),
        )
        yield counter(
            "boltraft_snapshot_sent_bytes_total",
            "Bytes of snapshot chunks this node sent.",
            transfers.get("bytes_served", 0),
        )
        yield counter(
            "boltraft_snapshots_installed_total",
            "Snapshots this node installed (received from its leader).",
            snaps.get("installed", 0),
        )
        yield counter(
            "boltraft_snapshot_installed_bytes_total",
            "Bytes of the snapshots this node received and installed.",
            transfers.get("installed_bytes", 0),
        )
        yield counter(
            "boltraft_snapshot_transfers_failed_total",
            "Snapshot transfers (either way) that failed.",
            transfers.get("failed", 0),
        )
        watch = s["watch"]
        yield gauge("boltraft_watches", "Watches this node streams to now.", watch["live"])
        yield counter(
            "boltraft_watch_events_total", "Changes this node added to its feed.", watch["events"]
        )
        yield counter(
            "boltraft_watch_frames_total",
            "events_batch frames sent to clients (one per connection per round).",
            watch["frames"],
        )
        yield counter(
            "boltraft_watch_refused_total",
            "events_batch frames the transport refused (queue full or client gone); their "
            "watches stay and get the same changes again.",
            watch["refused"],
        )
        yield counter(
            "boltraft_watch_lagged_total",
            "Watches ended because their client fell too far behind (watch_lagged).",
            watch["lagged"],
        )
        yield gauge(
            "boltraft_watch_oldest_index",
            "The oldest Raft index a watch can start at on this node (compacted below).",
            watch["oldest_index"],
        )
        transport = s["transport"]
        for name, key, doc in _TRANSPORT_COUNTERS:
            yield counter(name, doc, transport.get(key, 0))
        bad = CounterMetricFamily(
            "boltraft_transport_bad_frames_total",
            "Frames received and dropped, by reason.",
            labels=["reason"],
        )
        for reason in _BAD_FRAMES:
            bad.add_metric([reason], transport.get(reason, 0))
        yield bad
        reqs = CounterMetricFamily(
            "boltraft_client_requests_total", "Client requests received, by op.", labels=["op"]
        )
        for op, n in sorted(s["requests"].items()):
            reqs.add_metric([op], n)
        yield reqs
        errs = CounterMetricFamily(
            "boltraft_client_errors_total",
            "Client requests answered with an error, by op and error code.",
            labels=["op", "code"],
        )
        for (op, code), n in sorted(s["errors"].items()):
            errs.add_metric([op, code], n)
        yield errs
