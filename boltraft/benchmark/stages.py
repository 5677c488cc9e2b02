"""The benchmark's hooks inside a node: per-batch stage timings and the fsync delay.

``StageRecorder`` (a ``boltraft.server.ports.CommitObserver``) follows each proposed batch
of client writes through the leader's loop and keeps the finished ones in a bounded ring
that the ``stats`` op returns. The stages are consecutive, so their sum is the server's
share of a write's latency:

============== ==============================================================================
stage          from -> to (per batch; means are weighted by the batch's request count)
============== ==============================================================================
client_to_leader  the leader's loop received the requests -> it proposed their batch (the
               wait for the iteration's flush; ``hop_s`` adds a hop measured elsewhere)
leader_append  propose -> the leader's own log append and fsync are done
replication    own append done -> committed: the later of the quorum's follower acks
               (their append + fsync + network) beyond the leader's own; 0 when faster
commit_to_apply  committed -> its apply starts
apply          the state machine's apply of the Ready holding the batch
reply          apply done -> the responses were handed to the socket
============== ==============================================================================

Per follower, ``followers[id]`` is the round trip from propose to that follower's
acknowledgement (its append + fsync + both network hops): informational, it runs in parallel
with ``leader_append``. A batch is kept until it was answered and every follower seen so far
acknowledged it, or ``ACK_WAIT_S`` passed.

``FsyncDelay`` is the sleep the benchmark adds after every flush of the Raft log
(``--fsync-delay`` of ``boltraft.benchmark.node``, through
``boltraft.storage.proxy.SlowSyncLogStore``), to see what a slower disk would do to commit
latency.
Production nodes never run them (``boltraft serve`` has no such option).

All of this is used from the node loop's one thread; nothing here is thread-safe.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from boltraft.errors import ConfigError

STAGES: tuple[str, ...] = (
    "client_to_leader",
    "leader_append",
    "replication",
    "commit_to_apply",
    "apply",
    "reply",
)
RING_SIZE = 16384  # finished batches kept for ``stats``
ACK_WAIT_S = 1.0  # a finished batch waits this long at most for slow followers' acks
MAX_PENDING = 65536  # batches in flight; past it the oldest is dropped unrecorded


class _Batch:
    """One proposed batch. Times are ``time.monotonic()`` seconds; 0.0 means not yet."""

    __slots__ = (
        "acks",
        "applied",
        "apply_start",
        "count",
        "hop",
        "last",
        "persisted",
        "proposed",
        "received",
        "replied",
        "wall",
    )

    def __init__(self, last: int, count: int, received: float, hop: float, now: float) -> None:
        self.last = last  # index of the batch's last entry
        self.count = count  # client requests in the batch, >= 1
        self.hop = hop  # mean client -> node hop (s) measured elsewhere, 0 when unknown
        self.received = received  # <= proposed
        self.proposed = now
        self.persisted = 0.0
        self.apply_start = 0.0
        self.applied = 0.0
        self.replied = 0.0
        self.acks: dict[str, float] = {}
        self.wall = time.time()  # wall-clock time of the proposal (what ``since`` filters)


class StageRecorder:
    """Per-batch stage timings of the leader's commit path, kept in a bounded ring.

    The node loop calls, in its order of events: ``iteration(now)`` once per loop
    iteration, ``observe_messages`` with incoming Raft messages, ``proposed`` after each
    ``propose()`` of client writes, ``persisted`` after its own synced log append,
    ``applying`` / ``applied`` around the state machine's apply, ``replied`` once the
    answers are out. The commit time of a batch is derived: the moment both the leader's own
    append and the quorum's fastest followers' acknowledgements were in.

    Invariant: ``_pending`` holds batches in increasing ``last`` index order, and for each
    stage the batches that have it form a prefix of ``_pending`` (marks go to every batch up
    to an index). So every mark walks back from the newest batch it covers and stops at the
    first one already marked: O(new marks), however many batches wait (a dead follower keeps
    a second of them waiting for its acks).
    """

    def __init__(self, ring_size: int = RING_SIZE) -> None:
        self._pending: deque[_Batch] = deque()
        self._ring: deque[list[Any]] = deque(maxlen=ring_size)
        self._followers: set[str] = set()
        self._clock = time.monotonic
        self._received = 0.0

    def iteration(self, now: float) -> None:
        """The loop iteration that started at ``now`` (``time.monotonic``)
        received the requests it will propose: their receipt time."""
        self._received = now

    def proposed(self, last_index: int, count: int, hop_s: float = 0.0) -> None:
        """Starts following a batch of ``count`` writes proposed as entries
        up to ``last_index``, received at the current iteration's start. ``hop_s``: their
        mean client -> node hop when known, else 0. A ``last_index`` not above the previous
        batch's (a new term rewrote the log) drops the batches at or above it."""
        while self._pending and self._pending[-1].last >= last_index:
            self._pending.pop()
        if len(self._pending) >= MAX_PENDING:
            self._pending.popleft()
        now = self._clock()
        received = min(self._received, now) if self._received else now
        self._pending.append(_Batch(last_index, max(1, count), received, hop_s, now))

    def persisted(self, index: int) -> None:
        """The leader's own log is durable up to ``index``."""
        now = self._clock()
        for b in reversed(self._pending):
            if b.last > index:
                continue
            if b.persisted:
                break
            b.persisted = now

    def acked(self, follower: str, index: int) -> None:
        """``follower`` acknowledged (an accepted append response) ``index``."""
        self._followers.add(follower)
        now = self._clock()
        for b in reversed(self._pending):
            if b.last > index:
                continue
            if follower in b.acks:
                break
            b.acks[follower] = now

    def observe_messages(self, messages: Sequence[Any]) -> None:
        """Feeds every accepted APP_RESP in ``messages`` to ``acked``."""
        if not self._pending:
            return
        for m in messages:
            if m.type == 1 and not m.reject:  # MessageType.APP_RESP
                self.acked(m.frm, m.index)

    def applying(self, index: int) -> None:
        """The apply of entries up to ``index`` starts now."""
        now = self._clock()
        for b in reversed(self._pending):
            if b.last > index:
                continue
            if b.apply_start:
                break
            b.apply_start = now

    def applied(self, index: int) -> None:
        """The apply of entries up to ``index`` is done."""
        now = self._clock()
        for b in reversed(self._pending):
            if b.last > index:
                continue
            if b.applied:
                break
            if b.apply_start:
                b.applied = now

    def replied(self, index: int) -> None:
        """The answers of every applied batch up to ``index`` were sent.
        Moves the batches that are complete into the ring."""
        now = self._clock()
        for b in reversed(self._pending):
            if b.last > index:
                continue
            if b.replied:
                break
            if b.applied:
                b.replied = now
        self._retire(now)

    def _commit_time(self, b: _Batch) -> float:
        """Returns when ``b`` became committed: its own append and the acks of a quorum
        (of the followers known so far), never later than its apply start."""
        need = (len(self._followers) + 1) // 2  # acks besides the leader's own vote
        t = b.persisted or b.apply_start
        if need:
            acks = sorted(b.acks.values())
            t = max(t, acks[need - 1]) if len(acks) >= need else b.apply_start
        return min(t, b.apply_start)

    def _retire(self, now: float) -> None:
        pending = self._pending
        while pending:
            b = pending[0]
            if not b.replied:
                break
            if len(b.acks) < len(self._followers) and now - b.replied < ACK_WAIT_S:
                break
            pending.popleft()
            persisted = min(b.persisted or b.apply_start, b.apply_start)
            commit = max(self._commit_time(b), persisted)
            self._ring.append(
                [
                    b.wall,
                    b.count,
                    b.hop + (b.proposed - b.received),
                    persisted - b.proposed,
                    commit - persisted,
                    b.apply_start - commit,
                    b.applied - b.apply_start,
                    b.replied - b.applied,
                    {f: t - b.proposed for f, t in b.acks.items()},
                ]
            )

    def snapshot(self, since: float = 0.0) -> dict[str, Any]:
        """Returns ``{"stages": [...names], "records": [[wall_time, count, s1..s6 seconds,
        {follower: seconds}], ...]}`` for the finished batches proposed at or after the
        wall-clock time ``since`` (oldest first)."""
        self._retire(self._clock())
        return {"stages": list(STAGES), "records": [r for r in self._ring if r[0] >= since]}


class FsyncDelay:
    """The extra sleep after every synced Raft-log write (the benchmark's slow-disk knob).

    Specs: ``fixed:MS`` (always MS milliseconds) or ``uniform:LO-HI`` (uniformly random in
    [LO, HI] ms). Invariant: ``0 <= lo_ms <= hi_ms <= 10000``.
    """

    def __init__(self, lo_ms: float, hi_ms: float, rng: random.Random | None = None) -> None:
        self.lo_ms = lo_ms
        self.hi_ms = hi_ms
        self._rng = rng or random.Random()

    @classmethod
    def parse(cls, spec: str) -> FsyncDelay:
        """Returns the delay ``spec`` describes; raises ConfigError on anything else."""
        kind, sep, arg = str(spec).partition(":")
        try:
            if sep and kind == "fixed":
                lo = hi = float(arg)
            elif sep and kind == "uniform":
                a, dash, b = arg.partition("-")
                if not dash:
                    raise ValueError(arg)
                lo, hi = float(a), float(b)
            else:
                raise ValueError(spec)
        except ValueError:
            raise ConfigError(
                f"fsync delay {spec!r}: expected fixed:MS or uniform:LO-HI (milliseconds)",
                fsync_delay=str(spec),
            )
        if not 0 <= lo <= hi <= 10_000:
            raise ConfigError(f"fsync delay {spec!r}: need 0 <= LO <= HI <= 10000 ms")
        return cls(lo, hi)

    @property
    def mean_ms(self) -> float:
        """Returns the mean injected delay in milliseconds."""
        return (self.lo_ms + self.hi_ms) / 2

    def sleep(self) -> float:
        """Returns the seconds slept (drawn from the spec)."""
        ms = self.lo_ms if self.lo_ms == self.hi_ms else self._rng.uniform(self.lo_ms, self.hi_ms)
        if ms > 0:
            time.sleep(ms / 1000.0)
        return ms / 1000.0
