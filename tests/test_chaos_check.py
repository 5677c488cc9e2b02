"""The linearizability checker (boltraft.chaos.check), its history format
(boltraft.chaos.history) and ``boltraft chaos check``.

Hand-made histories, legal and not; histories recorded by threads sharing a lock-protected
dict; a brute-force checker (every order of every subset of the unknown operations) that the
checker must agree with on random small histories, and that every failure window must fail;
bad input; the CLI's exit statuses and JSON.
"""

from __future__ import annotations

import functools
import io
import json
import random
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from boltraft_cli.main import main
from click.testing import CliRunner, Result

from boltraft.chaos.check import Window, check
from boltraft.chaos.history import (
    Event,
    HistoryWriter,
    Operation,
    parse_history,
    read_history,
)
from boltraft.errors import BadRequestError

INF = float("inf")
Op = tuple[int, str, Any, str | None, Any, int, int | None]


def history(*ops: Op, key: str = "x") -> list[str]:
    """The lines of a history made of (process, f, value, type, result, invoke, complete):
    ``value`` is the invoke's (a cas's [old, new]), ``result`` a read's value when ok; type
    None (or complete None) leaves the invoke open. Lines in time order."""
    events: list[tuple[int, int, dict[str, Any]]] = []
    for n, (p, f, value, type_, result, t0, t1) in enumerate(ops):
        inv = None if f == "read" else value
        events.append(
            (
                t0,
                2 * n,
                {"process": p, "type": "invoke", "f": f, "key": key, "value": inv, "time": t0},
            )
        )
        if type_ is not None and t1 is not None:
            out = (result if type_ == "ok" else None) if f == "read" else value
            events.append(
                (
                    t1,
                    2 * n + 1,
                    {"process": p, "type": type_, "f": f, "key": key, "value": out, "time": t1},
                )
            )
    events.sort(key=lambda e: (e[0], e[1]))
    return [json.dumps(e[2]) for e in events]


def verdict(*ops: Op) -> bool | None:
    return check(parse_history(history(*ops))).linearizable


def failure(*ops: Op) -> Window:
    result = check(parse_history(history(*ops)))
    assert result.linearizable is False and result.failure is not None
    return result.failure


def window_lines(w: Window) -> list[int]:
    return [op.line for op, _ in w.ops]


# --- hand-made histories ----------------------------------------------------------------------
def test_a_stale_read_is_not_linearizable_and_its_window_is_the_last_write_and_the_read() -> None:
    ops: list[Op] = [
        (0, "write", 5, "ok", None, 0, 10),
        (0, "write", 3, "ok", None, 20, 30),
        (1, "read", None, "ok", 5, 40, 50),
    ]
    assert verdict(*ops) is False
    w = failure(*ops)
    assert window_lines(w) == [3, 5]  # write 3 (lines 3-4), the read (lines 5-6)
    assert w.start == 20 and w.end == 50 and w.start_states is None and w.minimal
    assert w.blocked is not None and w.blocked.f == "read" and w.blocked.value == 5
    fresh = [*ops[:2], (1, "read", None, "ok", 3, 40, 50)]
    assert verdict(*fresh) is True


def test_a_read_concurrent_with_a_write_may_see_either_value() -> None:
    for seen in (5, 3):
        assert (
            verdict(
                (0, "write", 5, "ok", None, 0, 10),
                (0, "write", 3, "ok", None, 20, 30),
                (1, "read", None, "ok", seen, 25, 50),
            )
            is True
        )
    assert (
        verdict(
            (0, "write", 5, "ok", None, 0, 10),
            (0, "write", 3, "ok", None, 20, 30),
            (1, "read", None, "ok", 7, 25, 50),
        )
        is False
    )


def test_two_successful_cas_from_the_same_old_value_are_not_linearizable() -> None:
    ops: list[Op] = [
        (0, "write", 1, "ok", None, 0, 10),
        (1, "cas", [1, 2], "ok", None, 20, 50),
        (2, "cas", [1, 3], "ok", None, 30, 60),
    ]
    w = failure(*ops)
    assert [op.f for op, _ in w.ops] == ["cas", "cas"]
    # one of them failing is fine, and so is a chain
    assert verdict(*ops[:2], (2, "cas", [1, 3], "fail", None, 30, 60)) is True
    assert verdict(*ops[:2], (2, "cas", [2, 3], "ok", None, 30, 60)) is True


def test_a_failed_cas_whose_new_value_is_read_later_is_not_linearizable() -> None:
    assert (
        verdict(
            (0, "write", 2, "ok", None, 0, 10),
            (1, "cas", [2, 5], "fail", None, 20, 30),
            (2, "read", None, "ok", 5, 40, 50),
        )
        is False
    )
    # the failed cas was dropped; an ok one explains the read
    assert (
        verdict(
            (0, "write", 2, "ok", None, 0, 10),
            (1, "cas", [2, 5], "ok", None, 20, 30),
            (2, "read", None, "ok", 5, 40, 50),
        )
        is True
    )


def test_a_read_of_a_value_written_only_later_is_not_linearizable() -> None:
    ops: list[Op] = [(0, "read", None, "ok", 7, 0, 10), (1, "write", 7, "ok", None, 20, 30)]
    w = failure(*ops)
    assert window_lines(w) == [1] and w.start is None and w.start_states == [None]
    # the same read overlapping the write is legal
    assert verdict((0, "read", None, "ok", 7, 0, 25), (1, "write", 7, "ok", None, 20, 30))


def test_an_unknown_write_may_take_effect_later_or_never() -> None:
    seen_later = verdict((0, "write", 7, "info", None, 0, 10), (1, "read", None, "ok", 7, 500, 510))
    never_seen = verdict(
        (0, "write", 7, "info", None, 0, 10), (1, "read", None, "ok", None, 20, 30)
    )
    # a write still open when the history ends is unknown too
    open_at_end = verdict((0, "write", 7, None, None, 0, None), (1, "read", None, "ok", 7, 20, 30))
    assert (seen_later, never_seen, open_at_end) == (True, True, True)


def test_an_unknown_write_takes_effect_after_its_invoke_and_at_most_once() -> None:
    before_invoke = verdict(
        (1, "read", None, "ok", 7, 0, 10), (0, "write", 7, "info", None, 20, 30)
    )
    twice = verdict(
        (0, "write", 1, "info", None, 0, 10),
        (1, "write", 2, "ok", None, 20, 30),
        (1, "read", None, "ok", 1, 40, 50),
        (1, "write", 2, "ok", None, 60, 70),
        (1, "read", None, "ok", 1, 80, 90),
    )
    once = verdict(
        (0, "write", 1, "info", None, 0, 10),
        (1, "write", 2, "ok", None, 20, 30),
        (1, "read", None, "ok", 1, 40, 50),
        (1, "write", 2, "ok", None, 60, 70),
        (1, "read", None, "ok", 2, 80, 90),
    )
    assert (before_invoke, twice, once) == (False, False, True)


def test_unknown_operations_can_be_needed_in_an_order_and_far_apart() -> None:
    # the unknown cas can only follow the unknown write; both long before the reads
    ops: list[Op] = [
        (0, "write", 1, "info", None, 0, 10),
        (1, "cas", [1, 2], "info", None, 5, 15),
        *[(2, "read", None, "ok", None, 100 + 20 * i, 110 + 20 * i) for i in range(50)],
        (3, "read", None, "ok", 2, 2000, 2010),
    ]
    assert verdict(*ops) is True
    assert verdict(*ops, (3, "read", None, "ok", 1, 2100, 2110)) is False


def test_concurrent_operations_that_are_legal_in_one_order_only() -> None:
    # three overlapping operations; the cas succeeded, so write 1 came just before it
    ops: list[Op] = [
        (0, "write", 1, "ok", None, 0, 100),
        (1, "cas", [1, 2], "ok", None, 0, 100),
        (2, "write", 0, "ok", None, 10, 90),
    ]
    assert verdict(*ops, (3, "read", None, "ok", 2, 110, 120)) is True  # 0, 1, cas
    assert verdict(*ops, (3, "read", None, "ok", 0, 110, 120)) is True  # 1, cas, 0
    assert verdict(*ops, (3, "read", None, "ok", 1, 110, 120)) is False  # 1 was replaced
    # a read during them saw 2, one after sees 0: only 1, cas, (read 2), 0
    assert verdict(*ops, (3, "read", None, "ok", 2, 5, 95), (3, "read", None, "ok", 0, 110, 120))
    # saw 0, then 1: the write of 1 came after 0, so the cas did too, and left 2
    assert not verdict(
        *ops, (3, "read", None, "ok", 0, 5, 95), (3, "read", None, "ok", 1, 110, 120)
    )


def test_absent_keys_are_null() -> None:
    assert verdict((0, "read", None, "ok", None, 0, 10)) is True
    assert verdict((0, "read", None, "ok", 0, 0, 10)) is False  # 0 is not absent
    assert verdict((0, "cas", [None, 1], "ok", None, 0, 10), (0, "read", None, "ok", 1, 20, 30))
    assert verdict((0, "cas", [0, 1], "ok", None, 0, 10)) is False
    assert (
        verdict((0, "write", 5, "ok", None, 0, 10), (0, "read", None, "ok", None, 20, 30)) is False
    )
    deleted = verdict(
        (0, "write", 5, "ok", None, 0, 10),
        (0, "write", None, "ok", None, 20, 30),
        (0, "read", None, "ok", None, 40, 50),
        (0, "cas", [None, 6], "ok", None, 60, 70),
    )
    assert deleted is True


def test_keys_are_checked_independently() -> None:
    good = history((0, "write", 1, "ok", None, 0, 10), (0, "read", None, "ok", 1, 20, 30), key="a")
    bad = history((1, "write", 1, "ok", None, 5, 15), (1, "read", None, "ok", 2, 25, 35), key="b")
    result = check(parse_history(sorted(good + bad, key=lambda s: json.loads(s)["time"])))
    assert result.linearizable is False and result.ops == 4
    assert {k: r.linearizable for k, r in result.keys.items()} == {"a": True, "b": False}
    assert result.failure is not None and result.failure.key == "b"


def test_an_empty_history_is_linearizable() -> None:
    result = check([])
    assert result.linearizable is True and result.keys == {} and result.ops == 0


# --- a brute-force checker --------------------------------------------------------------------
def brute_force(items: list[tuple[str, Any, Any, float, float, bool]], starts: list[Any]) -> bool:
    """Whether some order of ``items`` (f, a, b, call, ret, required) is legal from one of
    ``starts``: the required ones all in it, the others (``ret`` INF: unknown; else pending
    at a window's start) in it or not; an item in it goes before any invoked after its
    return."""

    @functools.cache
    def go(rest: frozenset[int], state: Any) -> bool:
        if not any(items[i][5] for i in rest):
            return True
        for x in rest:
            f, a, b, call, _, _ = items[x]
            if any(items[y][4] < call for y in rest if y != x):
                continue
            if f == "write":
                new = a
            elif state != a:
                continue
            else:
                new = state if f == "read" else b
            if go(rest - {x}, new):
                return True
        # an optional item with a return (pending at a window's start) may have been before
        return any(go(rest - {x}, state) for x in rest if not items[x][5] and items[x][4] != INF)

    return any(go(frozenset(range(len(items))), s) for s in starts)


def brute_force_history(ops: list[Operation]) -> bool:
    items = []
    for op in ops:
        if op.type == "fail" or (op.type != "ok" and op.f == "read"):
            continue
        a, b = op.value if op.f == "cas" else (op.value, None)
        ret = op.complete if op.type == "ok" and op.complete is not None else INF
        items.append((op.f, a, b, float(op.invoke), float(ret), op.type == "ok"))
    return brute_force(items, [None])


def brute_force_window_fails(w: Window) -> bool:
    """Whether the window has no legal order, whatever the key held at its start."""
    items = []
    for op, optional in w.ops:
        if op.f == "read" and optional:
            continue
        a, b = op.value if op.f == "cas" else (op.value, None)
        late = op.type != "ok" or op.complete is None or op.complete > w.end
        ret = INF if late else float(op.complete or 0)
        items.append((op.f, a, b, float(op.invoke), ret, not optional))
    values = {None, "some other value"} | {i[1] for i in items} | {i[2] for i in items}
    starts = [None] if w.start is None else sorted(values, key=repr)
    return not brute_force(items, starts)


def random_history(rnd: random.Random) -> list[str]:
    """A small random history on one key: 1-5 processes, up to 10 operations, values from a
    small set, some failed, unknown or left open; from a simulated register (legal), then
    most of the time with one operation changed (which may keep it legal)."""
    procs = rnd.randint(1, 5)
    values = [None, 0, 1, 2][: rnd.randint(2, 4)]
    free_at = [0] * procs
    ids = list(range(procs))
    plan: list[dict[str, Any]] = []
    for _ in range(rnd.randint(1, 10)):
        slot = rnd.randrange(procs)
        call = free_at[slot] + rnd.randint(0, 3)
        ret = call + rnd.randint(0, 10)
        f = rnd.choice(["read", "write", "cas"])
        value: Any = None
        if f == "write":
            value = rnd.choice(values)
        elif f == "cas":
            value = [rnd.choice(values), rnd.choice(values)]
        type_ = "info" if rnd.random() < 0.15 else "ok"
        at = (
            rnd.uniform(call, ret)
            if type_ == "ok"
            else rnd.choice([None, call + 30 * rnd.random()])
        )
        plan.append(
            {
                "p": ids[slot],
                "f": f,
                "value": value,
                "call": call,
                "ret": ret,
                "type": type_,
                "at": at,
                "read": None,
            }
        )
        if type_ == "info":
            ids[slot] = max(ids) + 1
        free_at[slot] = ret + rnd.randint(0, 2)
    state = None
    for o in sorted((o for o in plan if o["at"] is not None), key=lambda o: o["at"]):
        if o["f"] == "read":
            o["read"] = state
        elif o["f"] == "write":
            state = o["value"]
        elif state == o["value"][0]:
            state = o["value"][1]
        elif o["type"] == "ok":
            o["type"] = "fail"
    if rnd.random() < 0.8:
        o = rnd.choice(plan)
        if o["f"] == "read":
            o["read"] = rnd.choice(values)
        elif o["f"] == "cas" and o["type"] != "info":
            o["type"] = "fail" if o["type"] == "ok" else "ok"
        else:
            o["ret"] = o["call"]
    lines = []
    for o in plan:  # per process in order; the file need not be in time order
        inv = None if o["f"] == "read" else o["value"]
        out = o["read"] if o["f"] == "read" and o["type"] == "ok" else inv
        lines.append(
            json.dumps(
                {
                    "process": o["p"],
                    "type": "invoke",
                    "f": o["f"],
                    "key": "x",
                    "value": inv,
                    "time": o["call"],
                }
            )
        )
        if rnd.random() < 0.9 or o["type"] != "info":  # an unknown one may stay open
            lines.append(
                json.dumps(
                    {
                        "process": o["p"],
                        "type": o["type"],
                        "f": o["f"],
                        "key": "x",
                        "value": out,
                        "time": o["ret"],
                    }
                )
            )
    return lines


@pytest.mark.parametrize("seed", range(4))
def test_the_checker_agrees_with_brute_force_and_its_windows_fail(seed: int) -> None:
    rnd = random.Random(seed)
    outcomes = {True: 0, False: 0}
    for _ in range(150):
        lines = random_history(rnd)
        ops = parse_history(lines)
        want = brute_force_history(ops)
        result = check(ops)
        assert result.linearizable is want, "\n".join(lines)
        outcomes[want] += 1
        if not want:
            assert result.failure is not None
            assert brute_force_window_fails(result.failure), "\n".join(lines)
    assert min(outcomes.values()) > 20  # both kinds were tried


def test_the_refutation_of_a_run_of_segments_agrees_with_brute_force(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # make every search "slow", so that the refutation runs all the time
    import boltraft.chaos.check as checker

    monkeypatch.setattr(checker, "_TICK_EVERY", 2)
    monkeypatch.setattr(checker, "PROBE_TICKS", 1)
    rnd = random.Random(99)
    for _ in range(150):
        lines = random_history(rnd)
        ops = parse_history(lines)
        result = check(ops)
        assert result.linearizable is brute_force_history(ops), "\n".join(lines)
        if result.failure is not None:
            assert brute_force_window_fails(result.failure), "\n".join(lines)


# --- histories recorded by threads ------------------------------------------------------------
def record(threads: int, ops_each: int, seed: int) -> tuple[list[str], int]:
    """A history of ``threads`` threads doing reads, writes and cas on 3 keys of a dict under
    a lock, each operation recorded (HistoryWriter) before and after it runs; now and then
    one's outcome is recorded as unknown (it ran or not) and its thread takes a new process
    id. Returns the lines and the number of operations."""
    store: dict[str, int] = {}
    lock = threading.Lock()
    out = io.StringIO()
    writer = HistoryWriter(out, flush=False)
    start = threading.Barrier(threads)

    def worker(t: int) -> None:
        rnd = random.Random(seed * 1000 + t)
        process = t
        start.wait()
        for _ in range(ops_each):
            key = rnd.choice("abc")
            r = rnd.random()
            if r < 0.5:
                writer.invoke(process, "read", key)
                with lock:
                    value = store.get(key)
                writer.ok(process, value)
                continue
            if r < 0.75:
                new = rnd.randrange(4)
                writer.invoke(process, "write", key, new)
                with lock:
                    store[key] = new
                done = True
            else:
                old, new = rnd.choice([None, 0, 1, 2, 3]), rnd.randrange(4)
                writer.invoke(process, "cas", key, [old, new])
                with lock:
                    done = store.get(key) == old
                    if done:
                        store[key] = new
            if rnd.random() < 0.01:
                writer.info(process)  # it ran (or, a failed cas, did not): unknown
                process += threads
            elif done:
                writer.ok(process)
            else:
                writer.fail(process)

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # interleave the threads often
    try:
        pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
        for th in pool:
            th.start()
        for th in pool:
            th.join()
    finally:
        sys.setswitchinterval(switch)
    writer.close()
    return out.getvalue().splitlines(), threads * ops_each


def overlapping(ops: list[Operation]) -> int:
    """How many operations overlap the previous one invoked on their key."""
    last: dict[str, int] = {}
    count = 0
    for op in sorted(ops, key=lambda o: o.invoke):
        if op.invoke <= last.get(op.key, -1):
            count += 1
        last[op.key] = max(last.get(op.key, -1), op.complete or op.invoke)
    return count


def test_a_recorded_concurrent_history_is_linearizable_and_one_changed_read_is_not() -> None:
    lines, n = record(threads=8, ops_each=1300, seed=1)
    ops = parse_history(lines)
    assert len(ops) == n >= 10_000
    assert overlapping(ops) > 100  # the threads did run concurrently
    assert any(op.type == "info" for op in ops) and any(op.type == "fail" for op in ops)
    result = check(ops, timeout=120)
    assert result.linearizable is True, result.to_json()
    assert set(result.keys) == {"a", "b", "c"}

    rnd = random.Random(7)
    reads = [n for n, line in enumerate(lines) if '"f":"read"' in line and '"type":"ok"' in line]
    target = rnd.choice(reads)
    event = json.loads(lines[target])
    event["value"] = 99  # never written
    changed = [*lines[:target], json.dumps(event), *lines[target + 1 :]]
    result = check(parse_history(changed), timeout=120)
    assert result.linearizable is False
    assert {k for k, r in result.keys.items() if r.linearizable is False} == {event["key"]}
    w = result.failure
    assert w is not None and w.key == event["key"]
    assert any(op.f == "read" and op.value == 99 for op, _ in w.ops)
    assert len(w.ops) < 50


def test_a_search_out_of_time_is_undecided() -> None:
    # 40 concurrent writes, then two reads that need a different write last: the search
    # would try the orders of the writes (2**40 subsets) before it could say no
    ops: list[Op] = [(p, "write", p, "ok", None, 0, 100) for p in range(40)]
    ops += [(40, "read", None, "ok", 0, 200, 210), (40, "read", None, "ok", 1, 220, 230)]
    result = check(parse_history(history(*ops)), timeout=0.2)
    assert result.linearizable is None
    assert result.keys["x"].linearizable is None and result.failure is None


# --- the history format -----------------------------------------------------------------------
GOOD_INVOKE = {"process": 0, "type": "invoke", "f": "write", "key": "k", "value": 1, "time": 5}


def line(**changes: Any) -> str:
    event = {**GOOD_INVOKE, **changes}
    return json.dumps({k: v for k, v in event.items() if v is not ...})


@pytest.mark.parametrize(
    ("lines", "bad_line", "words"),
    [
        (["{not json"], 1, "not JSON"),
        (["[1, 2]"], 1, "JSON object"),
        ([line(time=...)], 1, "missing field(s): time"),
        ([line(process=..., key=...)], 1, "missing field(s): process, key"),
        ([line(process="0")], 1, "process"),
        ([line(process=True)], 1, "process"),
        ([line(time=1.5)], 1, "time"),
        ([line(key=3)], 1, "key"),
        ([line(type="done")], 1, "type"),
        ([line(f="delete")], 1, "f is one of"),
        ([line(value="x")], 1, "value"),
        ([line(value=True)], 1, "value"),
        ([line(f="cas", value=[1])], 1, "[old, new]"),
        ([line(f="read", value=1)], 1, "null"),
        ([line(type="ok")], 1, "without an invoke"),
        ([line(), "", line(time=6)], 3, "invokes again"),
        ([line(), line(type="info", time=6), line(time=7)], 3, "after its info"),
        ([line(), line(type="ok", key="other", time=6)], 2, "does not match"),
        ([line(), line(type="ok", f="cas", value=[1, 2], time=6)], 2, "does not match"),
        ([line(), line(type="ok", value=2, time=6)], 2, "differs"),
        ([line(), line(type="ok", time=4)], 2, "earlier than its invoke"),
        ([line(), line(type="ok", time=6), line(time=5)], 3, "earlier than its last"),
    ],
)
def test_bad_input_is_a_bad_request_naming_its_line(
    lines: list[str], bad_line: int, words: str
) -> None:
    with pytest.raises(BadRequestError) as err:
        parse_history(lines)
    assert err.value.details["line"] == bad_line
    assert err.value.message.startswith(f"line {bad_line}: ") and words in err.value.message


def test_bytes_that_are_not_utf8_are_bad_input() -> None:
    with pytest.raises(BadRequestError, match="line 2: not UTF-8"):
        parse_history([line().encode(), b"\xff\xfe"])


def test_operations_pair_invokes_with_completions_per_process() -> None:
    lines = [
        line(process=1, f="read", value=None, time=1),
        line(process=2, f="cas", value=[None, 4], time=2),
        line(process=2, type="fail", f="cas", value=[None, 4], time=3),
        line(process=1, type="ok", f="read", value=None, time=4),
        line(process=3, f="write", value=None, time=5, extra="ignored"),
    ]
    ops = parse_history(lines)
    assert ops == [
        Operation(1, "read", "k", None, "ok", 1, 4, 1),
        Operation(2, "cas", "k", (None, 4), "fail", 2, 3, 2),
        Operation(3, "write", "k", None, "info", 5, None, 5),
    ]
    assert [e.to_json() for e in ops[1].events()] == [json.loads(lines[1]), json.loads(lines[2])]


def test_the_writer_records_what_the_reader_reads(tmp_path: Path) -> None:
    ticks = iter(range(100, 200))
    path = tmp_path / "h.jsonl"
    with HistoryWriter(path, clock=lambda: next(ticks)) as w:
        assert w.invoke(0, "write", "k", 7) == 100
        w.invoke(1, "read", "k")
        w.ok(0)
        w.ok(1, 7)
        w.invoke(0, "cas", "k", [7, 8])
        w.fail(0)
        w.invoke(1, "write", "k", 9)
        w.info(1)
        w.invoke(2, "read", "k")
        with pytest.raises(BadRequestError, match="carries the value read"):
            w.ok(2)
        with pytest.raises(BadRequestError, match="after its info"):
            w.invoke(1, "read", "k")
        with pytest.raises(BadRequestError, match="without an invoke"):
            w.ok(5)
        with pytest.raises(BadRequestError, match="value"):
            w.invoke(5, "write", "k", "seven")
    first = json.loads(path.read_text().splitlines()[0])
    assert first == {
        "process": 0,
        "type": "invoke",
        "f": "write",
        "key": "k",
        "value": 7,
        "time": 100,
    }
    ops = read_history(path)
    assert [(o.process, o.f, o.value, o.type, o.invoke, o.complete) for o in ops] == [
        (0, "write", 7, "ok", 100, 102),
        (1, "read", 7, "ok", 101, 103),
        (0, "cas", (7, 8), "fail", 104, 105),
        (1, "write", 9, "info", 106, 107),
        (2, "read", None, "info", 108, None),
    ]
    assert check(ops).linearizable is True


def test_events_dump_as_one_json_line() -> None:
    e = Event(3, "ok", "cas", "k", (None, 1), 42)
    assert e.dumps() == '{"process":3,"type":"ok","f":"cas","key":"k","value":[null,1],"time":42}'


def test_a_missing_file_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadRequestError, match="cannot read"):
        read_history(tmp_path / "none.jsonl")


# --- the command ------------------------------------------------------------------------------
def run(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, ["chaos", "check", *args], input=stdin)


def write(tmp_path: Path, lines: list[str]) -> str:
    path = tmp_path / "history.jsonl"
    path.write_text("".join(x + "\n" for x in lines))
    return str(path)


LEGAL: list[Op] = [(0, "write", 1, "ok", None, 0, 10), (1, "read", None, "ok", 1, 20, 30)]
STALE: list[Op] = [
    (0, "write", 5, "ok", None, 0, 10),
    (0, "write", 3, "ok", None, 20, 30),
    (1, "read", None, "ok", 5, 40, 50),
]


def test_check_exits_0_when_linearizable(tmp_path: Path) -> None:
    result = run(write(tmp_path, history(*LEGAL)))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("linearizable: 2 operations on 1 key") and not result.stderr
    result = run("--json", write(tmp_path, history(*LEGAL)))
    out = json.loads(result.stdout)
    assert result.exit_code == 0 and out["linearizable"] is True and out["ops"] == 2
    assert out["keys"] == {"x": {"linearizable": True, "ops": 2, "segments": 2}}
    assert isinstance(out["seconds"], float) and "failure" not in out


def test_check_reads_stdin_for_a_dash() -> None:
    result = run("-", stdin="\n".join(history(*LEGAL)))
    assert result.exit_code == 0 and result.stdout.startswith("linearizable: 2 operations")


def test_check_exits_1_and_prints_the_window_when_not_linearizable(tmp_path: Path) -> None:
    result = run(write(tmp_path, history(*STALE)))
    assert result.exit_code == 1 and not result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith('not linearizable: "x"; 3 operations on 1 key')
    assert lines[1].startswith('key "x": these 2 operations up to time 50 have no legal order')
    assert lines[2].split() == ["line", "process", "f", "value", "type", "invoke", "complete"]
    assert lines[3].split() == ["3", "0", "write", "3", "ok", "20", "30"]
    assert lines[4].split() == ["*", "5", "1", "read", "5", "ok", "40", "50"]


def test_check_json_has_the_failure_window(tmp_path: Path) -> None:
    result = run("--json", write(tmp_path, history(*STALE)))
    assert result.exit_code == 1
    out = json.loads(result.stdout)
    assert out["linearizable"] is False and out["keys"]["x"]["linearizable"] is False
    failure = out["failure"]
    assert (failure["key"], failure["start"], failure["end"], failure["blocked"]) == (
        "x",
        20,
        50,
        5,
    )
    assert failure["start_states"] is None and failure["minimal"] is True
    assert [(o["line"], o["f"], o["value"], o["optional"]) for o in failure["ops"]] == [
        (3, "write", 3, False),
        (5, "read", 5, False),
    ]


def test_check_exits_3_when_undecided(tmp_path: Path) -> None:
    ops: list[Op] = [(p, "write", p, "ok", None, 0, 100) for p in range(40)]
    ops += [(40, "read", None, "ok", 0, 200, 210), (40, "read", None, "ok", 1, 220, 230)]
    path = write(tmp_path, history(*ops))
    result = run("--timeout", "0.2", path)
    assert result.exit_code == 3 and result.stdout.startswith("undecided: 1 key not decided")
    result = run("--timeout", "0.2", "--json", path)
    out = json.loads(result.stdout)
    assert result.exit_code == 3 and out["linearizable"] is None
    assert out["keys"]["x"]["linearizable"] is None


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("not json\n", "line 1: not JSON"),
        (line(time=...) + "\n", "line 1: missing field(s): time"),
        (line(value="one") + "\n", "line 1: a value is an integer or null"),
        (line(type="ok") + "\n", "line 1: ok of process 0 without an invoke"),
    ],
)
def test_check_exits_2_on_bad_input(tmp_path: Path, content: str, words: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    for args in ([str(path)], ["--json", str(path)]):
        result = run(*args)
        assert result.exit_code == 2 and not result.stdout
        errors = result.stderr.splitlines()
        assert len(errors) == 1 and errors[0].startswith(f"error: bad_request: {words}")


def test_check_exits_2_on_a_missing_file(tmp_path: Path) -> None:
    result = run(str(tmp_path / "none.jsonl"))
    assert result.exit_code == 2 and result.stderr.startswith("error: bad_request: cannot read")
