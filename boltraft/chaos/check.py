"""The linearizability checker of ``boltraft chaos check`` (docs/chaos.md).

The model is one register per key, initially absent (None): a read returns the current
value, a write sets it (a write of None deletes), a cas ``(old, new)`` sets ``new`` iff the
current value is ``old``. Keys are independent (linearizability is local), so each key's
operations are checked on their own:

- failed operations are dropped (they certainly took no effect), and so are reads whose
  outcome is unknown (they change nothing);
- a write or cas whose outcome is unknown (``info``) may take effect at any point after its
  invoke, or never: its return is at +infinity and nothing requires it. It is dropped when
  no read or cas ever needs the value it would leave: applying it could only leave a value
  nothing observes before the next change, so no linearization needs it;
- the key's ok operations are split into segments at the quiescent points, the times when
  none of them is in flight. What crosses a quiescent point is a configuration: the
  register's value, and the unknown operations invoked so far that are still free to take
  effect (those whose value is needed later). The search goes depth first, segment by
  segment (``_KeyCheck._depth_first``), remembering the (segment, configuration) pairs that
  failed; one fails too when a failed one had the same value and more free operations;
- within a segment, the search is Wing & Gong's with Lowe's memoization, as porcupine does
  it (``_search``): the calls and returns in time order in a doubly linked list; linearize
  a call that is still open (unlink it and its return) when the model allows it and the
  memo has not seen the result (set of linearized operations as a bitset, register value);
  backtrack on reaching a return whose call was not linearized. Free unknown operations are
  kept out of the list and tried only where they can help (see ``_search``);
- a search that stops getting further spends an equal time looking for a short run of
  segments that fails whatever came before it (every value, every unknown operation
  invoked before it free): that settles "not linearizable" without going back through the
  whole history.

A key that is not linearizable gets a failure window (``Window``): the operations from a
start to the return the search could not get past, made as short as binary search finds,
that no order makes legal whatever the key held at the start. The check keeps to a time
budget: a key whose search did not end in time is undecided (``linearizable`` None).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from boltraft.chaos.history import Operation, paused_gc

INF = float("inf")
READ, WRITE, CAS = 0, 1, 2
_KINDS = {"read": READ, "write": WRITE, "cas": CAS}
_TICK_EVERY = 1024  # search steps between two looks at the clock
_APPLY, _FREE, _DROP = 0, 1, 2  # the search's moves
PROBE_TICKS = 16  # the first turn of the search and of the refutation (see _KeyCheck.run)
SLICE_S = 0.05  # time a key searches before the next key gets a turn


class _Tick:
    """What a search yields now and then, so its caller can look at the clock."""


TICK = _Tick()


class _Other:
    """A register value that no operation of a window names (a start state of a window)."""

    def __repr__(self) -> str:
        return "<other>"


OTHER = _Other()


# --- the search inside one segment ------------------------------------------------------------
@dataclass(slots=True)
class _Op:
    """An operation as the search sees it. ``need``: it must be linearized (ok and complete in
    the checked range); otherwise it is optional: with ``ret`` finite it may be dropped when
    its return is reached (it happened outside the window), with ``ret`` INF it may take
    effect any time after ``call`` or never."""

    kind: int
    a: Any  # the value read, written, or the cas's old
    b: Any  # the cas's new
    call: float
    ret: float
    need: bool
    src: Operation | None = None
    info_id: int = -1  # index among the key's unknown operations, -1 for the others
    prev: _Op | None = None  # the unknown operation with the same effect invoked just before
    seg: int = -1  # an unknown operation's segment: the first to end at or after its invoke


def _search(
    ops: Sequence[_Op], start: Any, use_free: bool = True
) -> Iterator[tuple[Any, int] | _Tick]:
    """Yields ``(state, bits)`` for the ways found to linearize all required ``ops`` from the
    register value ``start`` (bit i of ``bits``: ops[i] was linearized or dropped), TICK now
    and then, and ends when the search space is exhausted.

    The operations that return are in the linked list. Those that never do (``ret`` INF:
    unknown ones, or pending at the end of a window) are "free": not in the list, they are
    tried when the scan reaches a return it cannot pass, among those invoked by then, so the
    search first tries to do without them, and only when an operation that could come next
    needs the value one leaves (a read of it, a cas from it): a free operation followed by
    one that does not need its value could as well not be linearized, and one at the very
    end stays free for what follows. Free operations with the same effect are
    interchangeable, so they are linearized in the order of their invokes only
    (``_Op.prev`` first). The memo holds, for each (set of linearized operations that return,
    register value), the sets of free operations used to get there: a point is not explored
    again when it was reached before with a subset of them (what can follow it could follow
    the other, with more free operations left). So every end is yielded, or one with the same
    value, all the same operations that return, and a subset of the free ones used.
    ``use_free`` False: without the free operations."""
    timed = [i for i, op in enumerate(ops) if op.ret != INF]
    free = sorted((i for i, op in enumerate(ops) if op.ret == INF), key=lambda i: ops[i].call)
    free_call = [ops[i].call for i in free]
    nfree = len(free) if use_free else 0
    events = sorted([(ops[i].call, 0, i) for i in timed] + [(ops[i].ret, 1, i) for i in timed])
    # nodes: 0 = head, then the calls and returns by time (calls first at equal times, so
    # operations that touch are concurrent)
    size = 2 * len(timed) + 1
    nxt = [*range(1, size), -1]
    prv = [-1, *range(size - 1)]
    opi = [-1] * size
    isret = [False] * size
    when = [0.0] * size
    n = len(ops)
    callnode = [0] * n
    retnode = [0] * n
    for node, (t, r, i) in enumerate(events, 1):
        opi[node] = i
        when[node] = t
        if r:
            isret[node] = True
            retnode[i] = node
        else:
            callnode[i] = node
    kinds = [op.kind for op in ops]
    xs = [op.a for op in ops]
    ys = [op.b for op in ops]
    need = [1 if op.need else 0 for op in ops]
    required = sum(need)
    local = {id(op): i for i, op in enumerate(ops)}
    pre = [-1 if op.prev is None else local.get(id(op.prev), -1) for op in ops]

    state = start
    tb = 0  # the operations that return, linearized or dropped
    ub = 0  # the free operations linearized
    done = 0
    memo: dict[tuple[int, Any], list[int]] = {}
    # the moves made: (APPLY, call node, state before, 0) | (FREE, index into free, state
    # before, the return node where it was tried) | (DROP, call node, state before, 0)
    stack: list[tuple[int, int, Any, int]] = []
    entry = nxt[0]
    first_free = 0  # at a return: the first free operation still to try there
    steps = 0
    while True:
        steps += 1
        if steps >= _TICK_EVERY:
            steps = 0
            yield TICK
        if done == required:
            yield (state, tb | ub)
        elif entry >= 0:
            i = opi[entry]
            if not isret[entry]:
                k = kinds[i]
                if k == READ:
                    ok = state == xs[i]
                    new = state
                elif k == WRITE:
                    ok = True
                    new = xs[i]
                else:
                    ok = state == xs[i]
                    new = ys[i]
                if ok:
                    nb = tb | (1 << i)
                    seen = memo.get((nb, new))
                    fresh = seen is None or not any(u & ub == u for u in seen)
                    if fresh:
                        if seen is None:
                            memo[(nb, new)] = [ub]
                        else:
                            seen.append(ub)
                        stack.append((_APPLY, entry, state, 0))
                        state = new
                        tb = nb
                        done += need[i]
                        # unlink the call and its return
                        p, q = prv[entry], nxt[entry]
                        nxt[p] = q
                        prv[q] = p
                        r = retnode[i]
                        p, q = prv[r], nxt[r]
                        nxt[p] = q
                        if q >= 0:
                            prv[q] = p
                        entry = nxt[0]
                        continue
                entry = nxt[entry]
                continue
            # a return whose operation is not linearized: try the free operations invoked
            # by then, then (an optional operation) dropping it, then backtrack
            t = when[entry]
            f = first_free
            moved = False
            if f < nfree and free_call[f] <= t:
                # the values an operation that could come next needs: a free operation is
                # only worth applying if one of them follows it (else leave it free)
                wanted = set()
                node = nxt[0]
                while node != entry:  # the calls before the first return
                    if kinds[opi[node]] != WRITE:
                        wanted.add(xs[opi[node]])
                    node = nxt[node]
                for g in range(nfree):
                    if free_call[g] > t:
                        break
                    if kinds[free[g]] == CAS and not ub >> free[g] & 1:
                        wanted.add(xs[free[g]])
            while f < nfree and free_call[f] <= t:
                j = free[f]
                if (
                    not ub >> j & 1
                    and (pre[j] < 0 or ub >> pre[j] & 1)
                    and (ys[j] if kinds[j] == CAS else xs[j]) in wanted
                ):
                    if kinds[j] == WRITE:
                        ok = True
                        new = xs[j]
                    else:  # a cas (no read is ever free: it would change nothing)
                        ok = state == xs[j]
                        new = ys[j]
                    if ok:
                        nu = ub | (1 << j)
                        seen = memo.get((tb, new))
                        if seen is None:
                            memo[(tb, new)] = [nu]
                            moved = True
                        elif not any(u & nu == u for u in seen):
                            seen.append(nu)
                            moved = True
                        if moved:
                            stack.append((_FREE, f, state, entry))
                            state = new
                            ub = nu
                            break
                f += 1
            if moved:
                entry = nxt[0]
                first_free = 0
                continue
            if not need[i]:
                # an optional operation's return: it happened outside what is checked
                nb = tb | (1 << i)
                seen = memo.get((nb, state))
                if seen is None:
                    memo[(nb, state)] = [ub]
                    moved = True
                elif not any(u & ub == u for u in seen):
                    seen.append(ub)
                    moved = True
                if moved:
                    c = callnode[i]
                    stack.append((_DROP, c, state, 0))
                    tb = nb
                    p, q = prv[c], nxt[c]
                    nxt[p] = q
                    prv[q] = p
                    p, q = prv[entry], nxt[entry]
                    nxt[p] = q
                    if q >= 0:
                        prv[q] = p
                    entry = nxt[0]
                    first_free = 0
                    continue
        # backtrack: undo the last move, then try what comes after it
        if not stack:
            return
        move, x, state, where = stack.pop()
        if move == _FREE:
            ub ^= 1 << free[x]
            entry = where
            first_free = x + 1
            continue
        c = x
        i = opi[c]
        tb ^= 1 << i
        done -= need[i]
        r = retnode[i]
        p, q = prv[r], nxt[r]
        nxt[p] = r
        if q >= 0:
            prv[q] = r
        p, q = prv[c], nxt[c]
        nxt[p] = c
        prv[q] = c
        if move == _APPLY:
            entry = nxt[c]
            first_free = 0
        else:
            entry = r
            first_free = nfree


def _first(search: Iterator[Any], deadline: float) -> bool | None:
    """Runs ``search`` to its first solution (True), its end (False) or ``deadline`` (None)."""
    for item in search:
        if item is not TICK:
            return True
        if time.monotonic() >= deadline:
            return None
    return False


# --- results ----------------------------------------------------------------------------------
@dataclass
class Window:
    """A failing sub-history of one key: the operations invoked until ``end`` and not over
    before ``start``, that no order makes legal whatever the key held at ``start``
    (``start_states`` None), or, with ``start`` None, from the beginning of the history, the
    key absent (``start_states`` [None]). ``ops``: (operation, optional) in invoke order; an
    optional one is unknown (info), or was pending at an edge of the window, so it may or
    may not belong to it. ``blocked``: the operation whose return the search could not get
    past (its return is ``end``). ``minimal`` False: the search for the smallest window ran
    out of time, this one is longer."""

    key: str
    start: int | None
    end: int
    start_states: list[Any] | None
    ops: list[tuple[Operation, bool]]
    blocked: Operation | None
    minimal: bool = True

    def to_json(self) -> dict[str, Any]:
        def value(v: Any) -> Any:
            return list(v) if isinstance(v, tuple) else v

        return {
            "key": self.key,
            "start": self.start,
            "end": self.end,
            "start_states": (
                None if self.start_states is None else [value(s) for s in self.start_states]
            ),
            "minimal": self.minimal,
            "blocked": None if self.blocked is None else self.blocked.line,
            "ops": [
                {
                    "line": op.line,
                    "process": op.process,
                    "f": op.f,
                    "value": value(op.value),
                    "type": op.type,
                    "invoke": op.invoke,
                    "complete": op.complete,
                    "optional": optional,
                }
                for op, optional in self.ops
            ],
        }


@dataclass
class KeyResult:
    """One key: ``linearizable`` True, False, or None (undecided in time); ``ops``: its
    operations in the history; ``segments``: its quiescent segments."""

    key: str
    linearizable: bool | None
    ops: int
    segments: int

    def to_json(self) -> dict[str, Any]:
        return {"linearizable": self.linearizable, "ops": self.ops, "segments": self.segments}


@dataclass
class CheckResult:
    """The whole history: False if a key is not linearizable, else None if a key is
    undecided, else True. ``failure``: the window of the first failing key (by name)."""

    linearizable: bool | None
    keys: dict[str, KeyResult]
    ops: int
    seconds: float
    failure: Window | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "linearizable": self.linearizable,
            "keys": {k: r.to_json() for k, r in self.keys.items()},
            "ops": self.ops,
            "seconds": round(self.seconds, 6),
        }
        if self.failure is not None:
            out["failure"] = self.failure.to_json()
        return out


# --- one key ----------------------------------------------------------------------------------
Config = tuple[Any, tuple[int, ...]]  # (register value, unknown operations still free)


def _effect(op: _Op) -> Any:
    """The value an operation that changes the register leaves in it."""
    return op.b if op.kind == CAS else op.a


def _needed_optional(ops: list[_Op]) -> list[_Op]:
    """``ops`` without the optional writes and cas whose value no operation that stays would
    ever need (a read of it, a cas from it). Applying such an operation leaves a value nothing
    can observe before the next change, so dropping it loses no linearization."""
    observed = {op.a for op in ops if op.need and op.kind != WRITE}
    optional = [op for op in ops if not op.need]
    kept: set[int] = set()
    changed = True
    while changed:
        changed = False
        for j, op in enumerate(optional):
            if j not in kept and _effect(op) in observed:
                kept.add(j)
                changed = True
                if op.kind == CAS:
                    observed.add(op.a)
    keep_ids = {id(optional[j]) for j in kept}
    return [op for op in ops if op.need or id(op) in keep_ids]


class _KeyCheck:
    """The check of one key's operations; ``run()`` is a generator that yields now and then
    (to let the caller look at the clock) and returns the verdict."""

    def __init__(self, key: str, ops: list[Operation]) -> None:
        self.key = key
        self.count = len(ops)
        oks: list[_Op] = []
        infos: list[_Op] = []
        for src in ops:
            if src.type == "fail" or (src.type != "ok" and src.f == "read"):
                continue
            kind = _KINDS[src.f]
            a, b = src.value if kind == CAS else (src.value, None)
            if src.type == "ok":
                assert src.complete is not None
                oks.append(_Op(kind, a, b, src.invoke, src.complete, True, src))
            elif kind != CAS or a != b:  # an unknown cas from v to v changes nothing
                infos.append(_Op(kind, a, b, src.invoke, INF, False, src))
        oks.sort(key=lambda o: (o.call, o.ret))
        self.oks = oks
        self.calls = [op.call for op in oks]
        # quiescent segments of the ok operations
        self.segs: list[list[_Op]] = []
        self.ends: list[float] = []
        end = -INF
        for op in oks:
            if not self.segs or op.call > end:
                self.segs.append([])
                self.ends.append(-INF)
            self.segs[-1].append(op)
            end = max(end, op.ret)
            self.ends[-1] = end
        nseg = len(self.segs)
        # the last segment where each value is needed (a read of it, a cas from it)
        self.last_need: dict[Any, int] = {}
        for j, seg in enumerate(self.segs):
            for op in seg:
                if op.kind != WRITE:
                    self.last_need[op.a] = j
        kept = _needed_optional([*oks, *infos])
        self.infos = sorted((op for op in kept if not op.need), key=lambda o: o.call)
        last_of: dict[tuple[int, Any, Any], _Op] = {}
        for n, op in enumerate(self.infos):
            op.info_id = n
            op.prev = last_of.get((op.kind, op.a, op.b))
            last_of[(op.kind, op.a, op.b)] = op
            if op.kind == CAS:
                self.last_need[op.a] = nseg  # another unknown cas may need it at any time
        # each unknown operation joins the first segment that ends at or after its invoke
        self.seg_infos: list[list[_Op]] = [[] for _ in range(nseg)]
        for op in self.infos:
            op.seg = bisect.bisect_left(self.ends, op.call)
            if op.seg < nseg and self.last_need.get(_effect(op), -1) >= op.seg:
                self.seg_infos[op.seg].append(op)
        self.deepest = 0  # the furthest segment the search reached
        self.failed: tuple[int | None, int] = (None, 0)  # see _range

    def _free(self, j: int, ids: Iterable[int]) -> tuple[int, ...]:
        """The unknown operations among ``ids`` still worth carrying into segment ``j``."""
        infos, need = self.infos, self.last_need
        return tuple(sorted(i for i in ids if need.get(_effect(infos[i]), -1) >= j))

    def _ends(self, j: int, config: Config) -> Iterator[Config | _Tick]:
        """Yields the configurations segment ``j`` can end in from ``config`` as the search
        finds them (and TICK now and then); those with the most unknown operations still
        free tend to come first."""
        state, carried = config
        ops = [*self.segs[j], *self.seg_infos[j], *(self.infos[i] for i in carried)]
        if len(ops) == 1:  # most segments: one operation, nothing unknown in flight
            op = ops[0]
            if op.kind == WRITE:
                yield (op.a, ())
            elif state == op.a:
                yield (state if op.kind == READ else op.b, ())
            return
        seen: set[Config] = set()
        with_free = (False, True) if len(ops) > len(self.segs[j]) else (False,)
        for use_free in with_free:  # first the ends that leave every unknown operation free
            for item in _search(ops, state, use_free):
                if isinstance(item, _Tick):
                    yield item
                    continue
                end_state, bits = item
                left = (o.info_id for n, o in enumerate(ops) if not o.need and not bits >> n & 1)
                out = (end_state, self._free(j + 1, left))
                if out not in seen:
                    seen.add(out)
                    yield out

    def _depth_first(
        self, lo: int, hi: int, starts: list[Config], track: bool = False
    ) -> Generator[None, None, bool]:
        """Whether some configuration of ``starts`` at segment ``lo`` gets through segments
        ``lo`` to ``hi - 1``. Depth first: each end of a segment is followed into the next
        segment before the segment's other ends are looked for. A (segment, configuration)
        that failed is remembered, and then so fail those with the same value and fewer free
        unknown operations. ``track``: keep ``deepest`` (the furthest segment reached)."""
        # (segment, value) -> the sets of free unknown operations it failed with
        dead: dict[tuple[int, Any], list[frozenset[int]]] = {}

        def failed(j: int, config: Config) -> bool:
            sets = dead.get((j, config[0]))
            return sets is not None and any(d.issuperset(config[1]) for d in sets)

        for start in starts:
            if failed(lo, start):
                continue
            stack: list[tuple[int, Config, Iterator[Config | _Tick]]] = [
                (lo, start, self._ends(lo, start))
            ]
            steps = 0
            while stack:
                steps += 1
                if steps >= _TICK_EVERY // 8:  # most segments' searches are short
                    steps = 0
                    yield None
                j, config, search = stack[-1]
                item = next(search, None)
                if item is None:
                    dead.setdefault((j, config[0]), []).append(frozenset(config[1]))
                    stack.pop()
                    continue
                if isinstance(item, _Tick):
                    yield None
                    continue
                if j + 1 == hi:
                    return True
                if failed(j + 1, item):
                    continue
                if track and j + 1 > self.deepest:
                    self.deepest = j + 1
                stack.append((j + 1, item, self._ends(j + 1, item)))
        return False

    def _any_starts(self, lo: int, hi: int) -> list[Config]:
        """The configurations at segment ``lo`` that stand for "whatever happened before":
        every value that matters to segments ``lo`` to ``hi - 1`` (or none of them), with
        every unknown operation invoked before ``lo`` still free (when ``lo`` is 0, just the
        absent key)."""
        if lo == 0:
            return [(None, ())]
        free = self._free(lo, (op.info_id for op in self.infos if op.seg < lo))
        values: set[Any] = {None, OTHER}
        for j in range(lo, hi):
            for op in [*self.segs[j], *self.seg_infos[j]]:
                values.add(op.a)
                values.add(op.b)
        for i in free:
            values.add(_effect(self.infos[i]))
        order = sorted(values, key=lambda v: (v is None, v is OTHER, repr(v)))
        return [(v, free) for v in order]

    def _probe(self, lo: int, d: int, budget: float) -> Generator[None, None, bool | None]:
        """Whether segments ``lo`` to ``d`` fail whatever happened before ``lo``
        (``_any_starts``); None when that takes more than ``budget`` ticks."""
        probe = self._depth_first(lo, d + 1, self._any_starts(lo, d + 1))
        ticks = 0
        while True:
            try:
                next(probe)
            except StopIteration as stop:
                return not stop.value
            yield None
            ticks += 1
            if ticks > budget:
                probe.close()
                return None

    def _refute(self, d: int, budget: float) -> Generator[None, None, int | None]:
        """The latest segment ``lo`` (tried: d, d-1, d-3, d-7...) such that segments ``lo``
        to ``d`` fail whatever happened before ``lo``, or None when a try takes more than
        ``budget`` ticks, or segments 0 to ``d`` pass."""
        k = 1
        while True:
            lo = max(0, d - k + 1)
            fails = yield from self._probe(lo, d, budget)
            if fails is None:
                return None
            if fails:
                return lo
            if lo == 0:
                return None
            k *= 2

    def run(self) -> Generator[None, None, bool]:
        """Depth first from the start (``_depth_first``). When the search spends long without
        getting further, it looks for a short run of segments ending at the furthest one
        reached that fails whatever came before (``_refute``): then the key is not
        linearizable, without the search having to go back through everything before. The
        time given to each of the two doubles at each turn."""
        nseg = len(self.segs)
        if nseg == 0:
            return True
        main = self._depth_first(0, nseg, [(None, ())], track=True)
        budget = PROBE_TICKS
        best, idle = 0, 0
        while True:
            try:
                next(main)
            except StopIteration as stop:
                if stop.value:
                    return True
                self.failed = (None, self.deepest)
                return False
            yield None
            if self.deepest > best:
                best, idle = self.deepest, 0
                continue
            idle += 1
            if idle >= budget:
                lo = yield from self._refute(self.deepest, budget)
                if lo is not None:
                    main.close()
                    self.failed = (lo, self.deepest)
                    return False
                budget *= 2
                idle = 0

    # --- the failure window -------------------------------------------------------------------
    def _window_ops(self, q: float, t: float) -> list[_Op]:
        """The operations of the window from ``q`` to ``t`` (see Window), as the search sees
        them: required when invoked at or after ``q`` and ok by ``t``; optional when unknown,
        or pending at ``q`` or at ``t`` (a read pending there is dropped: it changes nothing)."""
        out: list[_Op] = []
        hi = bisect.bisect_right(self.calls, t)
        for op in self.oks[:hi]:
            if op.ret < q:
                continue
            if op.call >= q and op.ret <= t:
                out.append(op)
            elif op.kind != READ:
                ret = op.ret if op.ret <= t else INF
                out.append(_Op(op.kind, op.a, op.b, op.call, ret, False, op.src))
        out += [op for op in self.infos if op.call <= t]
        return _needed_optional(out)

    def _window_fails(self, q: float, t: float, deadline: float) -> bool | None:
        ops = self._window_ops(q, t)
        if q == -INF:
            starts: list[Any] = [None]
        else:
            values: set[Any] = {None, OTHER}
            for op in ops:
                values.add(op.a)
                if op.kind == CAS:
                    values.add(op.b)
            starts = sorted(values, key=lambda v: (v is None, v is OTHER, repr(v)))
        for s in starts:
            found = _first(_search(ops, s), deadline)
            if found is None:
                return None
            if found:
                return False
        return True

    def _range(self, deadline: float) -> tuple[int, int]:
        """The failing run of segments ``(lo, d)``: as ``run`` found it, or (when it failed
        by exhausting everything) the shortest found in time (else from the start)."""
        lo, d = self.failed
        if lo is not None:
            return lo, d
        k = 1
        while d - k + 1 > 0:
            probe = self._probe(d - k + 1, d, INF)
            try:
                while True:
                    next(probe)
                    if time.monotonic() >= deadline:
                        probe.close()
                        return 0, d
            except StopIteration as stop:
                if stop.value:
                    return d - k + 1, d
            k *= 2
        return 0, d

    def window(self, deadline: float) -> Window:
        """The failure window of a key whose ``run()`` returned False: from the failing run of
        segments, the earliest return that cannot be got past, then the latest start from
        which the window up to it fails whatever the key held then (both by binary search:
        a window that fails still fails with more before or after it)."""
        lo, d = self._range(deadline)
        q0 = -INF if lo == 0 else self.segs[lo][0].call
        seg = self.segs[d]
        rets = sorted({op.ret for op in seg})
        timed_out = False
        low, high = 0, len(rets) - 1  # rets[high] fails: it is the end of the run
        while low < high:
            mid = (low + high) // 2
            fails = self._window_fails(q0, rets[mid], deadline)
            if fails is None:
                timed_out = True
                break
            if fails:
                high = mid
            else:
                low = mid + 1
        t = rets[high]
        starts = sorted({op.call for op in self.oks if q0 < op.call <= t}, reverse=True)
        starts.append(q0)  # known to fail
        last = len(starts) - 1
        good = last  # the smallest index into starts known to fail
        passed = -1  # the largest index known to pass
        i, step = 0, 1
        while not timed_out and i < last:
            fails = self._window_fails(starts[i], t, deadline)
            if fails is None:
                timed_out = True
            elif fails:
                good = i
                break
            else:
                passed = i
                i = min(i + step, last)
                step *= 2
        while not timed_out and good - passed > 1:
            mid = (good + passed) // 2
            fails = self._window_fails(starts[mid], t, deadline)
            if fails is None:
                timed_out = True
            elif fails:
                good = mid
            else:
                passed = mid
        q = starts[good]
        return Window(
            self.key,
            None if q == -INF else int(q),
            int(t),
            [None] if q == -INF else None,
            _listing(self._window_ops(q, t)),
            next((op.src for op in seg if op.ret == t), None),
            minimal=not timed_out,
        )


def _listing(ops: list[_Op]) -> list[tuple[Operation, bool]]:
    """A window's operations as (operation, optional), in invoke order."""
    out = [(op.src, not op.need) for op in ops if op.src is not None]
    out.sort(key=lambda x: (x[0].invoke, x[0].line))
    return out


# --- the whole history ------------------------------------------------------------------------
def check(
    ops: list[Operation], timeout: float = 60.0, window_timeout: float | None = None
) -> CheckResult:
    """Checks that ``ops`` (a history, see boltraft.chaos.history) is linearizable, key by
    key, the keys taking turns for ``timeout`` seconds in all; a key still searching then is
    undecided. The failure window of the first failing key may take ``window_timeout``
    seconds more (default: ``timeout`` within 1 to 10 s); out of time, it is a longer window
    (``Window.minimal`` False)."""
    with paused_gc():
        return _check(ops, timeout, window_timeout)


def _check(ops: list[Operation], timeout: float, window_timeout: float | None) -> CheckResult:
    t0 = time.monotonic()
    deadline = t0 + timeout
    by_key: dict[str, list[Operation]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    checks = {k: _KeyCheck(k, by_key[k]) for k in sorted(by_key)}
    runs = {k: c.run() for k, c in checks.items()}
    verdict: dict[str, bool | None] = dict.fromkeys(checks)
    pending = list(checks)
    while pending and time.monotonic() < deadline:
        for k in list(pending):
            slice_end = min(deadline, time.monotonic() + SLICE_S)
            run = runs[k]
            while True:
                try:
                    next(run)
                except StopIteration as stop:
                    verdict[k] = bool(stop.value)
                    pending.remove(k)
                    break
                if time.monotonic() >= slice_end:
                    break
    for run in runs.values():
        run.close()
    results = {k: KeyResult(k, verdict[k], c.count, len(c.segs)) for k, c in checks.items()}
    failing = [k for k in checks if verdict[k] is False]
    failure = None
    if failing:
        extra = max(1.0, min(timeout, 10.0)) if window_timeout is None else window_timeout
        failure = checks[failing[0]].window(max(deadline, time.monotonic() + extra))
    values = list(verdict.values())
    overall = False if False in values else (None if None in values else True)
    return CheckResult(overall, results, len(ops), time.monotonic() - t0, failure)
