"""The change feed of one node: every change the state machine applied, as events, kept in a
bounded ring and streamed to the watches of clients (docs/protocol.md, section 5.1; the wire
form is ``boltraft.transport.watchwire``).

Where the events come from. The state machine reports the changes it makes while it
applies (its ``report`` hook is ``on_changes``; the rules, and where the previous values
come from, are in ``boltraft.storage.changes``); the ring keeps them as plain ``Change``
tuples. After the apply, ``on_applied`` writes them to the history and schedules the
sending. Every replica applies the same log to the same state, so every node derives the
same events with the same ``(index, pos)``: a client resumes on any node.

Retention. The ring holds the events of the entries from ``oldest`` to the applied index,
at most ``history_events`` events and ``history_bytes`` bytes of keys and values; the
oldest entries' events go first, whole entries at a time. Each apply's events are also
written to the node's history on disk (``boltraft.server.watchlog``, when the node has
one): a node starts with the ring it had when it stopped, as far as that history reaches
its applied index, else with an empty ring (``oldest`` = its applied index + 1). It starts
over after a snapshot install or an apply a full disk cut short (the changes in between are
not known to it): a watch that would need what it does not hold gets ``compacted``
(``details["oldest_index"]``), and the client asks another node or reads the state with a
``scan`` and watches from its ``index + 1``.

Sending. The events of an apply wait up to ``COALESCE_S`` (2 ms) for those of the next
applies (``due``, ``flush``: the node loop wakes up for it), then go out in ONE
``events_batch`` frame per client connection, carrying an item for every watch of that
connection (watches that get the same events share one packed list); progress and the
end of a watch ride in the same frames. A new watch's backlog goes out at once, and so
does what returned credit allows a watch, unless a flush is due (then it goes with the
flush: an acknowledgement never sends the other watches their changes early, which would
cut short every watch's coalescing). A frame the transport refuses (the client's queue is
full, or it is gone) puts its watches back where they were before it (``refused``): they
get the same events again with the next round.

Flow. Each watch has a window (credit) of events sent and not yet acknowledged
(``watch_ack``); the node sends nothing past it, so what ZeroMQ queues per watch is bounded by
the window. A watch whose next event is ``max_lag`` events or more behind the ring's newest
is ended with ``watch_lagged`` (the client watches again from its last index); one that
acknowledged nothing for ``IDLE_S`` is dropped (its client is gone). A watch that was sent
nothing for ``PROGRESS_S`` gets an empty item carrying the applied index (so its client
knows the node lives and how far it has seen). A node that heard no leader for
``cut_off_s`` ends its watches with ``unavailable`` and refuses new ones: it may be cut off
from the cluster, its changes behind, while its progress frames say it lives.

Invariants: a watch's cursor is the sequence number of the next ring event it has not looked
at (at least the ring's first); events of one watch leave in strictly increasing
``(index, pos)`` order; each request is answered exactly once.

Owned by the node loop's thread.
"""

from __future__ import annotations

import bisect
import itertools
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from boltraft.errors import (
    BadRequestError,
    BoltraftError,
    CompactedError,
    ProposalDroppedError,
    RequestTimeoutError,
    UnavailableError,
    WatchLaggedError,
    WatchNotFoundError,
)
from boltraft.packing import pack
from boltraft.raft.types import Entry, EntryType, ReadState
from boltraft.server.ports import Net, NodeView, Proposer
from boltraft.server.replies import Replies, Target
from boltraft.server.watchlog import WatchLog
from boltraft.server.wire import fail, ok
from boltraft.storage import commands
from boltraft.storage.changes import Change, Report
from boltraft.transport.watchwire import encode_batch, encode_item

WATCH_OPS = frozenset(("watch", "watch_ack", "watch_cancel"))
IDLE_S = 10.0  # a watch whose client acknowledged nothing for this long is dropped
PROGRESS_S = 1.0  # a watch sent nothing for this long gets an empty item with the index
DEFAULT_WINDOW = 1024  # events in flight per watch unless the request says
MAX_WINDOW = 65536
MAX_FRAME_EVENTS = 512  # events of one watch in one frame's item
FRAME_BYTES = 1 << 20  # a connection's frame goes out once its event lists pass this size
# new events wait at most this long for more before they go out: one frame per connection then
# carries the changes of several applies (at 1,000 writes/s, two), which halves what sending
# costs the node and reading costs the watcher, for at most this much latency
COALESCE_S = 0.002
_NORMAL = int(EntryType.NORMAL)
_WATCH_FIELDS = frozenset(
    ("op", "bucket", "prefix", "recursive", "start_index", "prev_value", "window")
)
_CTX_PREFIX = b"watch:"  # read index contexts of watches starting "from now"

Path = tuple[bytes, ...]


@dataclass(slots=True)
class _Watch:
    """One client's watch: its filter, where it is in the ring, its credit and liveness."""

    wid: int
    ident: bytes
    path: Path
    prefix: bytes | None
    recursive: bool
    prev: bool
    window: int
    start: int  # events below this index are skipped
    cursor: int  # ring sequence number of the next event to look at
    acked_at: float
    sent_at: float
    unacked: int = 0
    covered: int = 0  # every matching event up to this index was sent
    # what decides which events it gets and how they are encoded (set with ``start``)
    key: tuple[Any, ...] = ()


@dataclass(slots=True)
class _Out:
    """What one round of sending has for one connection: the packed event lists and the
    watches' items of its frame, and each watch's ``(cursor, covered, unacked)`` before its
    item (put back when the transport refuses the frame)."""

    lists: list[bytes] = field(default_factory=list)
    slots: dict[tuple[Any, ...], int] = field(default_factory=dict)  # list key -> position
    items: list[bytes] = field(default_factory=list)
    undo: list[tuple[_Watch, int, int, int]] = field(default_factory=list)
    size: int = 0


class WatchHub:
    """The change feed and the watches of one node (see the module docstring)."""

    def __init__(
        self,
        view: NodeView,
        core: Proposer,
        replies: Replies,
        net: Net,
        *,
        history_events: int,
        history_bytes: int,
        max_lag: int,
        max_watches: int,
        request_timeout_s: float,
        cut_off_s: float,
        clock: Callable[[], float],
        history: WatchLog | None = None,
    ) -> None:
        """``history_events`` 0 turns the feed off (every watch gets ``compacted``);
        ``cut_off_s``: a node that heard no leader for this long ends its watches and takes
        no new ones (it may be cut off from the cluster, its changes behind); ``history``:
        the history on disk, loaded here (its caller opens and closes it; None: the ring
        lives in memory only)."""
        self.view = view
        self.core = core
        self.replies = replies
        self._net = net
        self._cap_events = history_events
        self._cap_bytes = history_bytes
        self._max_lag = max_lag
        self._max_watches = max_watches
        self._timeout_s = request_timeout_s
        self._cut_off_s = cut_off_s
        self._leaderless_since: float | None = None
        self._clock = clock
        self._ring: deque[Change] = deque()
        self._ring_index: deque[int] = deque()  # the index of each ring event (for bisect)
        self._sizes: deque[int] = deque()
        self._bytes = 0
        self._base = 0  # sequence number of _ring[0]
        self.oldest = view.applied + 1  # the oldest index whose events the ring holds
        self._history = history if history_events > 0 else None
        self._logged = view.applied  # the last index the history on disk covers
        self._watches: dict[int, _Watch] = {}
        self._ids = itertools.count(1)
        self._ctx_ids = itertools.count(1)
        # read index context -> (deadline, [(target, watch), ...]) for watches "from now"
        self._starting: dict[bytes, tuple[float, list[tuple[Target, _Watch]]]] = {}
        self._parked: list[tuple[int, Target, _Watch]] = []  # waiting for applied >= index
        self.due: float | None = None  # when the events not yet sent go out (None: none)
        self.stats = {
            "watches": 0,
            "events": 0,
            "frames": 0,
            "lagged": 0,
            "dropped": 0,
            "refused": 0,
        }
        self._out: dict[bytes, _Out] = {}  # what this round sends each connection
        if self._history is not None:
            self.oldest, events = self._history.load(view.applied)
            for ev in events:
                self._add(ev)
            self._trim()
        elif history is not None:
            history.clear()  # the feed is off: a history on disk would go stale

    @property
    def live(self) -> bool:
        """True while this node streams to at least one watch."""
        return bool(self._watches)

    @property
    def _end(self) -> int:
        return self._base + len(self._ring)

    # --- requests ----------------------------------------------------------------------------
    def on_request(self, target: Target, body: dict[str, Any], now: float) -> None:
        """Handles ``watch``, ``watch_ack`` and ``watch_cancel`` (one request kind per op)."""
        op = body.get("op")
        try:
            if op == "watch":
                self._on_watch(target, body, now)
            elif op == "watch_ack":
                self._on_ack(target, body, now)
            else:
                self._on_cancel(target, body)
        except BoltraftError as err:
            self.replies.reply(target, fail(err))
        self._send_out()

    def _on_watch(self, target: Target, body: dict[str, Any], now: float) -> None:
        unknown = body.keys() - _WATCH_FIELDS
        if unknown:
            raise BadRequestError(f"unknown field(s) {sorted(unknown)} for 'watch'")
        path = _path(body.get("bucket"))
        prefix = body.get("prefix")
        if prefix is not None:
            prefix = _bytes(prefix, "prefix")
        recursive = _bool(body.get("recursive", False), "recursive")
        prev = _bool(body.get("prev_value", False), "prev_value")
        window = _uint(body.get("window", DEFAULT_WINDOW), "window")
        if not 1 <= window <= MAX_WINDOW:
            raise BadRequestError(f"window must be 1..{MAX_WINDOW}", field="window")
        start = body.get("start_index")
        if start is not None:
            start = _uint(start, "start_index")
        if self._cut_off(now):
            raise UnavailableError(
                f"this node has heard no leader for {self._cut_off_s:.1f} s: watch elsewhere"
            )
        if len(self._watches) + len(self._parked) >= self._max_watches:
            raise UnavailableError(f"this node serves at most {self._max_watches} watches")
        w = _Watch(
            next(self._ids), target.ident, path, prefix, recursive, prev, window, 0, 0, now, now
        )
        if start is None:  # from now: after a read index confirmed by a quorum
            ctx = _CTX_PREFIX + next(self._ctx_ids).to_bytes(8, "big")
            try:
                self.core.read_index(ctx)
            except ProposalDroppedError:
                raise self.view.not_leader_error() from None
            self._starting[ctx] = (now + self._timeout_s, [(target, w)])
            return
        self._begin(target, w, max(start, 1))

    def _begin(self, target: Target, w: _Watch, start: int) -> None:
        """Starts ``w`` at index ``start``, or answers ``compacted``."""
        if self._cap_events == 0 or start < self.oldest:
            raise CompactedError(
                f"index {start} is older than the oldest change this node retains",
                oldest_index=self.oldest,
                start_index=start,
            )
        w.start = start
        w.key = (w.path, w.prefix, w.recursive, w.prev, start)
        w.covered = start - 1
        w.cursor = self._base + bisect.bisect_left(self._ring_index, start)
        self._watches[w.wid] = w
        self.stats["watches"] += 1
        self.replies.reply(
            target, ok({"watch": w.wid, "start_index": start, "oldest_index": self.oldest})
        )
        self._deliver_to(w, self._clock())  # what the ring holds for it already

    def _mine(self, target: Target, body: dict[str, Any]) -> _Watch:
        wid = body.get("watch")
        w = self._watches.get(wid) if type(wid) is int else None
        if w is None or w.ident != target.ident:
            raise WatchNotFoundError(f"no watch {wid!r} on this connection", watch=wid)
        return w

    def _on_ack(self, target: Target, body: dict[str, Any], now: float) -> None:
        """``{watch, count}``: one watch's credit (answered nil, or ``watch_not_found``);
        ``{acks: [[watch, count], ...]}``: several watches' of this connection at once
        (answered with the ids among them it does not know here)."""
        acks = body.get("acks")
        if acks is None:
            w = self._mine(target, body)
            self._credit(w, _uint(body.get("count", 0), "count"), now)
            self.replies.reply(target, ok(None))
            if self.due is None:  # else what it may take now goes out at ``due``, with the rest
                self._deliver_to(w, now)
            return
        if "watch" in body or "count" in body or type(acks) is not list:
            raise BadRequestError("acks must be a list of [watch, count] without watch or count")
        pairs = []
        for pair in acks:
            if type(pair) is not list or len(pair) != 2 or type(pair[0]) is not int:
                raise BadRequestError("acks must be a list of [watch, count]", field="acks")
            pairs.append((pair[0], _uint(pair[1], "count")))
        unknown = []
        mine = []
        for wid, count in pairs:
            got = self._watches.get(wid)
            if got is None or got.ident != target.ident:
                unknown.append(wid)
                continue
            self._credit(got, count, now)
            mine.append(got)
        self.replies.reply(target, ok(unknown))
        if self.due is None:
            shared: dict[tuple[Any, ...], tuple[int, int, bytes, int]] = {}
            for got in mine:
                self._deliver_to(got, now, shared)

    @staticmethod
    def _credit(w: _Watch, count: int, now: float) -> None:
        w.unacked = max(0, w.unacked - count)
        w.acked_at = now

    def _on_cancel(self, target: Target, body: dict[str, Any]) -> None:
        w = self._mine(target, body)
        del self._watches[w.wid]
        self.replies.reply(target, ok(True))

    # --- confirmation of "from now" ----------------------------------------------------------
    def on_read_states(self, states: Sequence[ReadState]) -> None:
        """Starts the watches whose read index a state confirms (at once when applied, else
        once the node applied up to it)."""
        for rs in states:
            entry = self._starting.pop(rs.context, None)
            if entry is None:
                continue
            for target, w in entry[1]:
                self._parked.append((rs.index, target, w))
        self._start_parked()
        self._send_out()

    def _start_parked(self) -> None:
        applied = self.view.applied
        keep = []
        for index, target, w in self._parked:
            if index <= applied:
                try:
                    self._begin(target, w, index + 1)
                except BoltraftError as err:
                    self.replies.reply(target, fail(err))
            else:
                keep.append((index, target, w))
        self._parked = keep

    def on_leader_change(self) -> None:
        """Fails the watches still waiting for a read index (it can no longer be
        confirmed): their clients retry."""
        if self._starting:
            starting, self._starting = self._starting, {}
            err = fail(UnavailableError("leadership changed before the read was confirmed"))
            for _, waiting in starting.values():
                for target, _ in waiting:
                    self.replies.reply(target, err)

    # --- the feed ----------------------------------------------------------------------------
    @property
    def report(self) -> Report | None:
        """The hook the state machine reports its changes to (``on_changes``; None when
        the feed is off: the state machine then notes none)."""
        return self.on_changes if self._cap_events else None

    def on_changes(self, changes: list[Change]) -> None:
        """Adds the changes of one committed apply transaction to the ring (the state
        machine's ``report`` hook: ``boltraft.storage.changes``)."""
        add = self._add
        for ch in changes:
            add(ch)

    def on_applied(self, entries: Sequence[Entry]) -> None:
        """After the apply of ``entries`` (their changes reported to ``on_changes``):
        writes their changes to the history, drops what retention no longer keeps, starts
        the parked watches it allows, and schedules the sending."""
        if self._history is not None and entries and entries[-1].index > self._logged:
            first = max(entries[0].index, self._logged + 1)
            self._logged = entries[-1].index
            ring = self._ring
            new = []  # from the right: O(new)
            i = len(ring) - 1
            while i >= 0 and ring[i][0] >= first:
                new.append(ring[i])
                i -= 1
            new.reverse()
            self._history.append(first, self._logged, new)
        self._trim()
        if self._parked:
            self._start_parked()
            self._send_out()
        if self._watches and self.due is None:
            self.due = self._clock() + COALESCE_S

    def flush(self, now: float) -> None:
        """Sends the events that waited ``COALESCE_S`` (the node calls it every iteration,
        and wakes up for ``due``)."""
        if self.due is not None and now >= self.due:
            self.deliver(now)
        elif self._out:
            self._send_out()

    def _add(self, ev: Change) -> None:
        size = 64 + len(ev[4] or b"") + len(ev[5] or b"") + len(ev[6] or b"")
        size += sum(map(len, ev[3]))
        self._ring.append(ev)
        self._ring_index.append(ev[0])
        self._sizes.append(size)
        self._bytes += size
        self.stats["events"] += 1

    def _trim(self) -> None:
        """Drops the oldest entries' events (whole entries) past the retention limits."""
        ring, index, sizes = self._ring, self._ring_index, self._sizes
        while ring and (len(ring) > self._cap_events or self._bytes > self._cap_bytes):
            first = index[0]
            while index and index[0] == first:
                ring.popleft()
                index.popleft()
                self._bytes -= sizes.popleft()
                self._base += 1
            self.oldest = first + 1
        if self._history is not None:
            self._history.drop_before(self.oldest)

    def reset(self, applied: int, why: str) -> None:
        """Starts the ring over after ``applied`` (a snapshot install, or an apply cut short:
        the changes up to it are not known here); ends every watch with ``unavailable``
        (its client resumes on a node that has them)."""
        self._ring.clear()
        self._ring_index.clear()
        self._sizes.clear()
        self._bytes = 0
        self.oldest = applied + 1
        if self._history is not None:
            self._history.clear()
            self._logged = applied
        err = UnavailableError(f"this node's change feed started over: {why}")
        for w in list(self._watches.values()):
            self._end_watch(w, err)
        for _, target, _ in self._parked:
            self.replies.reply(target, fail(err))
        self._parked = []
        self._send_out()

    # --- sending -----------------------------------------------------------------------------
    def deliver(self, now: float) -> None:
        """Sends each watch the events it may take now (its window): one frame per
        connection for all its watches; watches with the same filter at the same place share
        one encoding."""
        self._deliver_all(now)
        self._send_out()

    def _deliver_all(self, now: float) -> None:
        self.due = None
        if self._watches:
            shared: dict[tuple[Any, ...], tuple[int, int, bytes, int]] = {}
            for w in list(self._watches.values()):
                self._deliver_to(w, now, shared)

    def _deliver_to(
        self,
        w: _Watch,
        now: float,
        shared: dict[tuple[Any, ...], tuple[int, int, bytes, int]] | None = None,
    ) -> None:
        """Queues for ``w`` the events it may take now (``_send_out`` sends them);
        ``shared``: the encodings already made in this round (by filter and place, and
        room when that is less than a frame's), which it adds to. Ends it with
        ``watch_lagged`` when its window stays full ``max_lag`` events behind."""
        end = self._end
        if shared is None:
            shared = {}
        while w.cursor < end and w.wid in self._watches:
            if w.unacked >= w.window:  # the client is the bottleneck
                if end - w.cursor >= self._max_lag:
                    self.stats["lagged"] += 1
                    self._end_watch(
                        w,
                        WatchLaggedError(
                            f"the watch fell {end - w.cursor} events behind the newest "
                            f"(the limit is {self._max_lag})",
                            index=w.covered,
                        ),
                    )
                break
            room = min(w.window - w.unacked, MAX_FRAME_EVENTS)
            # the watches with this filter at this place share the events of a full frame;
            # one whose window has less room than that gets its own
            key: tuple[Any, ...] = (*w.key, w.cursor)
            got = shared.get(key)
            if got is None:
                got = shared[key] = self._collect(w, MAX_FRAME_EVENTS, end, self.view.applied)
            if got[0] > room:
                key = (*key, room)
                got = shared.get(key)
                if got is None:
                    got = shared[key] = self._collect(w, room, end, self.view.applied)
            count, cursor, packed, covered = got
            if count == 0:  # its progress goes out with the next item or at PROGRESS_S
                w.cursor = cursor
                break
            self._queue(w, now, key, packed, covered, count, cursor)

    def _collect(self, w: _Watch, room: int, end: int, applied: int) -> tuple[int, int, bytes, int]:
        """``(count, new cursor, packed events, covered index)`` of the next ``room``
        events for ``w`` from its cursor."""
        ring = self._ring
        base = self._base
        cursor = w.cursor
        out: list[Change] = []
        path, prefix, recursive, prev, start = w.key
        depth = len(path)
        while cursor < end and len(out) < room:
            ev = ring[cursor - base]
            if ev[0] >= start and _matches(ev, path, depth, prefix, recursive):
                out.append(ev if prev or ev[6] is None else (*ev[:6], None))
            cursor += 1
        covered = applied if cursor >= end else ring[cursor - base][0] - 1
        return len(out), cursor, pack(out), covered

    def _queue(
        self,
        w: _Watch,
        now: float,
        key: tuple[Any, ...] | None = None,
        packed: bytes = b"",
        covered: int = -1,
        count: int = 0,
        cursor: int = -1,
    ) -> None:
        """Adds ``w``'s item to its connection's frame: ``count`` events (``packed``, the
        list of ``key``, shared with the other watches of the frame that get it) up to ring
        sequence ``cursor`` and progress ``covered`` (none: an empty item, its progress);
        notes ``w``'s state before it, which a refused frame puts back."""
        out = self._out.get(w.ident)
        if out is None:
            out = self._out[w.ident] = _Out()
        out.undo.append((w, w.cursor, w.covered, w.unacked))
        slot = None
        if count:
            assert key is not None
            slot = out.slots.get(key)
            if slot is None:
                slot = out.slots[key] = len(out.lists)
                out.lists.append(packed)
                out.size += len(packed)
            w.cursor = cursor
            w.covered = covered
            w.unacked += count
        w.sent_at = now
        out.items.append(encode_item(w.wid, w.covered, slot, None))
        if out.size >= FRAME_BYTES:
            self._send_one(w.ident, self._out.pop(w.ident))

    def _send_out(self) -> None:
        """Sends each connection the frame of what was queued for its watches."""
        if self._out:
            out, self._out = self._out, {}
            for ident, o in out.items():
                self._send_one(ident, o)

    def _send_one(self, ident: bytes, out: _Out) -> None:
        """Sends ``out`` to ``ident``; when the transport refuses it (the client is gone or
        its queue is full), puts its watches back where they were before it: what it held
        goes out again later (a client that is gone stops acknowledging, and its watches are
        dropped after ``IDLE_S``)."""
        self.stats["frames"] += 1
        if not self._net.reply(ident, encode_batch(out.lists, out.items)):
            self.stats["refused"] += 1
            for w, cursor, covered, unacked in reversed(out.undo):
                w.cursor, w.covered, w.unacked = cursor, covered, unacked

    def _end_watch(self, w: _Watch, err: BoltraftError) -> None:
        """Ends ``w`` with ``err`` (its last item, after what was queued for it)."""
        self._watches.pop(w.wid, None)
        out = self._out.get(w.ident)
        if out is None:
            out = self._out[w.ident] = _Out()
        out.items.append(encode_item(w.wid, w.covered, None, err))

    def _cut_off(self, now: float) -> bool:
        """True once this node has heard no leader for ``cut_off_s`` (it notes when that
        began)."""
        if self.view.leader_recently_heard(now):
            self._leaderless_since = None
            return False
        if self._leaderless_since is None:
            self._leaderless_since = now
        return now - self._leaderless_since >= self._cut_off_s

    def tick(self, now: float) -> None:
        """Drops the watches whose client went quiet, sends progress to those sent nothing
        for ``PROGRESS_S``, ends every watch when the node seems cut off from the cluster
        (``cut_off_s``), and times out the starts whose read index was not confirmed."""
        if self._starting:
            late = [c for c, (deadline, _) in self._starting.items() if deadline <= now]
            for ctx in late:
                err = fail(RequestTimeoutError("read index not confirmed"))
                for target, _ in self._starting.pop(ctx)[1]:
                    self.replies.reply(target, err)
        if self._cut_off(now) and self._watches:
            cut = UnavailableError(
                f"this node has heard no leader for {self._cut_off_s:.1f} s: its changes may "
                "be behind; watch elsewhere"
            )
            for w in list(self._watches.values()):
                self._end_watch(w, cut)
        if self._watches:
            self._deliver_all(now)
            applied = self.view.applied
            for w in list(self._watches.values()):
                if now - w.acked_at > IDLE_S:
                    self.stats["dropped"] += 1
                    del self._watches[w.wid]
                elif now - w.sent_at >= PROGRESS_S:
                    if w.cursor >= self._end:
                        w.covered = max(w.covered, applied)
                    self._queue(w, now)
        self._send_out()

    def status(self) -> dict[str, int]:
        """Counters for the ``status`` op: watches live now, the ring, totals."""
        return {
            **self.stats,
            "live": len(self._watches),
            "ring_events": len(self._ring),
            "ring_bytes": self._bytes,
            "oldest_index": self.oldest,
        }


def _matches(ev: Change, path: Path, depth: int, prefix: bytes | None, recursive: bool) -> bool:
    """True when ``ev`` concerns a watch of ``path`` (``depth`` names) with ``prefix`` and
    ``recursive``: a key event in the bucket (or below it when recursive) whose key (or
    whose nested bucket's name, below it) starts with the prefix; a bucket event of a
    bucket directly in it (or below it when recursive), by the same rule; the creation of
    the bucket itself; and the deletion of the bucket itself or of one of its ancestors."""
    b = ev[3]
    key = ev[4]
    if key is None and len(b) <= depth and path[: len(b)] == b:
        return ev[2] == "delete_bucket" or len(b) == depth
    if key is None:  # a bucket event: the bucket's name is its "key" in its parent
        if len(b) <= depth or b[:depth] != path:
            return False
        if len(b) > depth + 1 and not recursive:
            return False
        name = b[depth]
    elif b == path:
        name = key
    elif recursive and len(b) > depth and b[:depth] == path:
        name = b[depth]
    else:
        return False
    return prefix is None or name.startswith(prefix)


def _path(value: Any) -> Path:
    if type(value) is bytes or type(value) is str:
        value = [value]
    if type(value) is not list or not value:
        raise BadRequestError("bucket must be a bucket name or a non-empty list of names")
    return tuple(_bytes(v, "bucket") for v in value)


def _bytes(value: Any, what: str) -> bytes:
    if type(value) is bytes:
        return value
    if type(value) is str:
        return value.encode()
    raise BadRequestError(f"{what} must be bytes or str", field=what)


def _bool(value: Any, what: str) -> bool:
    if type(value) is not bool:
        raise BadRequestError(f"{what} must be a boolean", field=what)
    return value


def _uint(value: Any, what: str) -> int:
    if type(value) is not int or value < 0 or value > commands.MAX_UINT:
        raise BadRequestError(f"{what} must be an integer >= 0", field=what)
    return value
