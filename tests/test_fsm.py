"""BucketStateMachine.apply on real LMDB files: results, replay, batches, errors, no space."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from smallfs import fill, small_filesystem  # tests/ is on sys.path under pytest

from boltraft.errors import (
    BucketExistsError,
    BucketNotFoundError,
    ConditionFailedError,
    IncompatibleValueError,
    InvalidArgumentError,
    KeyRequiredError,
    MalformedCommandError,
    NoSpaceError,
    UnknownCommandError,
    UnsupportedVersionError,
)
from boltraft.raft.types import Entry, EntryType
from boltraft.storage import commands
from boltraft.storage.fsm import BATCH_PATH_MIN, BucketStateMachine
from boltraft.storage.queries import execute_read


def ent(index: int, cmd: dict[str, Any] | bytes | None, term: int = 1) -> Entry:
    """Returns a NORMAL entry carrying ``cmd`` (encoded), raw bytes, or nothing (no-op)."""
    if cmd is None:
        data = b""
    elif isinstance(cmd, bytes):
        data = cmd
    else:
        data = commands.encode(cmd)
    return Entry(term, index, EntryType.NORMAL, data)


def put(bucket: Any, key: bytes, value: bytes, **extra: Any) -> dict[str, Any]:
    return {"op": "put", "bucket": bucket, "key": key, "value": value, **extra}


def mk(bucket: Any, **extra: Any) -> dict[str, Any]:
    return {"op": "create_bucket", "bucket": bucket, **extra}


def get(sm: BucketStateMachine, bucket: Any, key: bytes) -> bytes | None:
    return execute_read(sm.db, {"op": "get", "bucket": bucket, "key": key})


@pytest.fixture
def sm(tmp_path: Path) -> Any:
    machine = BucketStateMachine(tmp_path / "state")
    yield machine
    machine.close()


def test_new_store_has_nothing_applied(sm: BucketStateMachine) -> None:
    assert sm.applied == (0, 0)
    assert sm.clock_ms == 0
    assert sm.apply([]) == []


def test_results_align_with_entries(sm: BucketStateMachine) -> None:
    results = sm.apply(
        [
            ent(1, None),
            ent(2, mk("a")),
            ent(3, put("a", b"k", b"v")),
            Entry(2, 4, EntryType.CONF_CHANGE, b"\x01\x02"),
            ent(5, {"op": "next_sequence", "bucket": "a"}, term=2),
            ent(6, {"op": "delete", "bucket": "a", "key": b"k"}, term=2),
            ent(7, {"op": "delete", "bucket": "a", "key": b"k"}, term=2),
        ]
    )
    assert results == [None, None, None, None, 1, True, False]
    assert sm.applied == (7, 2)


def test_applied_index_survives_reopen(tmp_path: Path) -> None:
    with BucketStateMachine(tmp_path / "s") as sm:
        sm.apply([ent(1, mk("a")), ent(2, put("a", b"k", b"v", ts=42), term=3)])
    with BucketStateMachine(tmp_path / "s") as sm:
        assert sm.applied == (2, 3)
        assert sm.clock_ms == 42
        assert get(sm, "a", b"k") == b"v"


def test_replay_skips_applied_entries(sm: BucketStateMachine) -> None:
    seq = {"op": "next_sequence", "bucket": "a"}
    log = [ent(1, mk("a")), ent(2, seq), ent(3, seq), ent(4, seq), ent(5, seq)]
    assert sm.apply(log[:3]) == [None, 1, 2]
    assert sm.apply(log[1:]) == [None, None, 3, 4]
    assert sm.apply(log) == [None] * 5
    assert sm.applied == (5, 1)
    assert sm.apply([ent(6, seq)]) == [5]


@pytest.mark.parametrize(
    ("indexes", "bad"), [([2], (2, 1)), ([1, 3], (3, 2)), ([2, 1], (2, 1)), ([1, 2, 2], (2, 3))]
)
def test_gaps_and_disorder_are_refused(
    sm: BucketStateMachine, indexes: list[int], bad: tuple[int, int]
) -> None:
    with pytest.raises(InvalidArgumentError) as exc:
        sm.apply([ent(i, mk(f"b{i}")) for i in indexes])
    assert (exc.value.details["index"], exc.value.details["expected"]) == bad
    assert sm.applied == (0, 0)
    assert execute_read(sm.db, {"op": "buckets"}) == []


def test_bad_entries_yield_errors_and_the_rest_applies(sm: BucketStateMachine) -> None:
    import msgpack

    results = sm.apply(
        [
            ent(1, b"\xc1garbage"),
            ent(2, mk("a")),
            ent(3, msgpack.packb([9, None, None, None, [0]])),
            ent(4, msgpack.packb([1, None, None, None, [42, [b"a"]]])),
            ent(5, put("a", b"k", b"v")),
        ]
    )
    assert isinstance(results[0], MalformedCommandError)
    assert isinstance(results[2], UnsupportedVersionError)
    assert isinstance(results[3], UnknownCommandError)
    assert results[1] is None and results[4] is None
    assert get(sm, "a", b"k") == b"v"
    assert sm.applied == (5, 1)


def test_engine_errors_are_results(sm: BucketStateMachine) -> None:
    results = sm.apply(
        [
            ent(1, put("missing", b"k", b"v")),
            ent(2, mk("a")),
            ent(3, mk("a")),
            ent(4, mk("a", if_not_exists=True)),
            ent(5, put("a", b"", b"v")),
            ent(6, put("a", b"k", b"v", if_value=b"old")),
            ent(7, put("a", b"k", b"v", if_absent=True)),
            ent(8, put("a", b"k", b"w", if_absent=True)),
            ent(9, mk(["a", "n"])),
            ent(10, put("a", b"n", b"v")),
            ent(11, {"op": "delete", "bucket": "a", "key": b"k", "if_value": b"zz"}),
            ent(12, {"op": "delete", "bucket": "a", "key": b"k", "if_value": b"v"}),
            ent(13, {"op": "delete_bucket", "bucket": ["a", "n"]}),
            ent(14, {"op": "delete_bucket", "bucket": ["a", "n"]}),
        ]
    )
    kinds = [type(r) if r is not None else None for r in results]
    assert kinds == [
        BucketNotFoundError,
        None,
        BucketExistsError,
        None,
        KeyRequiredError,
        ConditionFailedError,
        None,
        ConditionFailedError,
        None,
        IncompatibleValueError,
        ConditionFailedError,
        bool,
        None,
        BucketNotFoundError,
    ]
    assert results[7].details["current"] == b"v"
    assert get(sm, "a", b"k") is None


def test_batch_success_returns_every_result(sm: BucketStateMachine) -> None:
    batch = {
        "op": "batch",
        "ops": [
            mk("a"),
            put("a", b"k", b"v"),
            {"op": "next_sequence", "bucket": "a"},
            {"op": "delete", "bucket": "a", "key": b"k"},
            put("a", b"k2", b"v2", if_absent=True),
        ],
    }
    assert sm.apply([ent(1, batch)]) == [[None, None, 1, True, None]]
    assert get(sm, "a", b"k2") == b"v2"


def _snapshot(sm: BucketStateMachine) -> dict[Any, Any]:
    """Returns every bucket path with its keys, read through the engine."""
    out: dict[Any, Any] = {}
    with sm.db.view() as tx:
        stack: list[tuple[bytes, ...]] = [(name,) for name in tx.buckets()]
        while stack:
            path = stack.pop()
            b = tx.bucket(path)
            items, _ = b.scan()
            out[path] = {k: v for k, v in items if v is not None}
            stack.extend((*path, name) for name in tx.buckets(path))
    return out


@pytest.mark.parametrize("irreversible", [False, True])
def test_failed_batch_changes_nothing_and_the_run_goes_on(
    sm: BucketStateMachine, irreversible: bool
) -> None:
    sm.apply([ent(1, mk("a")), ent(2, put("a", b"k", b"old"))])
    before = _snapshot(sm)
    ops = [
        put("a", b"k", b"new"),
        put("a", b"fresh", b"x"),
        {"op": "delete", "bucket": "a", "key": b"k"},
        mk(["a", "child"]),
        put(["a", "child"], b"c", b"1"),
    ]
    if irreversible:
        ops.append({"op": "next_sequence", "bucket": "a"})
        ops.append({"op": "delete_bucket", "bucket": ["a", "child"]})
    ops.append(put("a", b"k", b"z", if_value=b"nope"))  # fails
    results = sm.apply(
        [
            ent(3, put("a", b"before", b"1")),
            ent(4, {"op": "batch", "ops": ops}),
            ent(5, put("a", b"after", b"2")),
            ent(6, {"op": "next_sequence", "bucket": "a"}),
        ]
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], ConditionFailedError)
    assert results[1].details["index"] == len(ops) - 1
    assert results[3] == 1  # the batch's next_sequence was rolled back
    expected = {k: dict(v) for k, v in before.items()}
    expected[(b"a",)].update({b"before": b"1", b"after": b"2"})
    assert _snapshot(sm) == expected
    assert sm.db.check() == []


def test_a_failed_batch_that_deleted_a_nested_bucket_leaves_its_name_refused(
    sm: BucketStateMachine,
) -> None:
    """The batch deletes a/n (a then has no nested bucket), then a, then fails: a/n is back,
    and a later put of key n into a must fail as before."""
    sm.apply([ent(1, mk("a")), ent(2, mk(["a", "n"]))])
    batch = {
        "op": "batch",
        "ops": [
            {"op": "delete_bucket", "bucket": ["a", "n"]},
            put("a", b"k1", b"v1"),
            {"op": "delete_bucket", "bucket": "a"},
            put("a", b"k1", b"v1"),
        ],
    }
    results = sm.apply(
        [
            ent(3, put(["a", "n"], b"k1", b"v1")),
            ent(4, batch),
            ent(5, put("a", b"k1", b"v1")),
            ent(6, put("a", b"n", b"v1")),
        ]
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], BucketNotFoundError)
    assert isinstance(results[3], IncompatibleValueError)
    assert sm.db.check() == []


def test_batch_error_from_the_engine_names_the_op(sm: BucketStateMachine) -> None:
    sm.apply([ent(1, mk("a"))])
    batch = {"op": "batch", "ops": [put("a", b"k", b"v"), put("nope", b"k", b"v")]}
    [res] = sm.apply([ent(2, batch)])
    assert isinstance(res, BucketNotFoundError)
    assert res.details["index"] == 1
    assert get(sm, "a", b"k") is None


def test_empty_batch(sm: BucketStateMachine) -> None:
    assert sm.apply([ent(1, {"op": "batch", "ops": []})]) == [[]]


@pytest.mark.parametrize("run_of", ["mixed", "only_puts", "plain_puts"])
def test_no_space_yields_errors_and_advances(tmp_path: Path, run_of: str) -> None:
    """only_puts / plain_puts: the run is all exactly-once / all plain puts to one bucket
    (the batch path), which falls back to the general path's entry-by-entry application."""
    only_puts = run_of == "only_puts"
    quota = 1 << 20
    sm = BucketStateMachine(
        tmp_path / "s", quota=quota, initial_map_size=quota, max_value_size=quota
    )
    try:
        big = b"x" * (300 << 10)

        def once(i: int) -> dict[str, Any]:
            return {"cid": b"c", "seq": i} if only_puts else {}

        log = [ent(1, mk("a"))]
        log += [ent(i, put("a", b"k%d" % i, big, **once(i))) for i in range(2, 9)]
        log.append(ent(9, put("a", b"small", b"s", **once(9))))
        if run_of != "mixed":
            sm.apply(log[:1])
            assert len(log) - 1 >= BATCH_PATH_MIN
            assert commands.put_run([e.data for e in log[1:]]) is not None
            results = [None, *sm.apply(log[1:])]
        else:
            results = sm.apply(log)
        assert sm.applied == (9, 1)
        assert results[0] is None and results[-1] is None
        fits = [r is None for r in results[1:-1]]
        assert any(fits) and not all(fits)
        assert all(isinstance(r, NoSpaceError) for r in results[1:-1] if r is not None)
        for i, r in zip(range(2, 9), results[1:-1], strict=True):
            assert (get(sm, "a", b"k%d" % i) == big) == (r is None)
        assert get(sm, "a", b"small") == b"s"
    finally:
        sm.close()


@pytest.mark.parametrize("only_puts", [False, True])
def test_a_full_disk_applies_nothing_and_the_same_entries_apply_once_freed(
    tmp_path: Path, only_puts: bool
) -> None:
    """Unlike the quota (above), a full disk never skips an entry: the other replicas, with
    space, apply it. A run of puts to one bucket takes the batch path: exactly-once puts
    with only_puts, plain puts without."""
    big = b"x" * (300 << 10)

    def once(i: int) -> dict[str, Any]:
        return {"cid": b"c", "seq": i} if only_puts else {}

    with small_filesystem(tmp_path / "fs") as fs:
        sm = BucketStateMachine(fs / "s", sync=False)
        try:
            sm.apply([ent(1, mk("a")), ent(2, put("a", b"before", b"b"))])
            run = [ent(i, put("a", b"k%d" % i, big, **once(i))) for i in range(3, 12)]
            assert len(run) >= BATCH_PATH_MIN
            filler = fill(fs)
            with pytest.raises(NoSpaceError) as info:
                sm.apply(run)
            assert info.value.details["disk_full"] is True
            assert sm.applied == (2, 1)
            assert get(sm, "a", b"k3") is None and get(sm, "a", b"before") == b"b"
            filler.unlink()
            assert sm.apply(run) == [None] * len(run)
            assert sm.applied == (11, 1)
            assert all(get(sm, "a", b"k%d" % i) == big for i in range(3, 12))
        finally:
            sm.close()


def test_one_command_past_the_quota_yields_no_space_and_advances(tmp_path: Path) -> None:
    quota = 1 << 20
    sm = BucketStateMachine(
        tmp_path / "s", quota=quota, initial_map_size=quota, max_value_size=quota
    )
    try:
        sm.apply([ent(1, mk("a"))])
        results = [
            sm.apply([ent(i, put("a", b"k%d" % i, b"x" * (300 << 10)))])[0] for i in (2, 3, 4, 5)
        ]
        assert results[0] is None and isinstance(results[-1], NoSpaceError)
        assert sm.applied == (5, 1)
        assert sm.apply([ent(6, put("a", b"small", b"s"))]) == [None]
        assert get(sm, "a", b"small") == b"s" and get(sm, "a", b"k5") is None
    finally:
        sm.close()


def test_one_command_at_a_time_answers_and_stores_what_one_run_does(tmp_path: Path) -> None:
    """A run of one takes its own path (``_apply_one``): the same log applied entry by entry
    and as one run gives the same results, data, dedup answers and applied record."""
    once = {"cid": b"c1", "seq": 1, "ts": 5}
    log = [
        ent(1, mk("a")),
        ent(2, put("a", b"k", b"v")),
        ent(3, put("a", b"x", b"1", **once)),
        ent(4, put("a", b"x", b"2", **once)),  # a retry: the original answer, nothing written
        ent(5, put("missing", b"k", b"v", cid=b"c1", seq=2, ts=3)),
        ent(6, {"op": "next_sequence", "bucket": "a", "cid": b"c1", "seq": 3, "ts": 9}),
        ent(7, {"op": "batch", "ops": [put("a", b"y", b"1"), put("nope", b"k", b"v")]}),
        ent(8, {"op": "delete", "bucket": "a", "key": b"k"}),
        ent(9, b"\xc1 not msgpack"),
        ent(10, None),
        ent(11, put("a", b"k" * 600, b"v")),
        ent(12, {"op": "next_sequence", "bucket": "a", "cid": b"c1", "seq": 3, "ts": 10}),
    ]
    one = BucketStateMachine(tmp_path / "one", sync=False)
    run = BucketStateMachine(tmp_path / "run", sync=False)
    try:
        singles = [r for e in log for r in one.apply([e])]
        together = run.apply(log)
        assert [_same(r) for r in singles] == [_same(r) for r in together]
        assert singles[3] is None and singles[5] == singles[11] == 1
        assert type(singles[4]).__name__ == "BucketNotFoundError"
        assert one.applied == run.applied == (12, 1) and one.clock_ms == run.clock_ms == 10
        assert _snapshot(one) == _snapshot(run)
        assert get(one, "a", b"x") == b"1" and get(one, "a", b"y") is None
    finally:
        one.close()
        run.close()


def _same(result: Any) -> Any:
    """Returns ``result`` in a comparable form (errors by class and details)."""
    if isinstance(result, Exception):
        return type(result).__name__, getattr(result, "details", None)
    return result


def test_a_run_of_plain_puts_answers_each_entry_like_one_put(sm: BucketStateMachine) -> None:
    """Consecutive plain puts to one bucket are written with one put_many: each entry still
    gets its own result, in order, and the runs break where the bucket or the kind changes."""
    sm.apply([ent(1, mk("a")), ent(2, mk("b"))])
    long_key = b"k" * 600
    cmds = [
        put("a", b"k1", b"1"),
        put("a", long_key, b"x"),
        put("a", b"k2", b"2"),
        put("missing", b"k", b"x"),
        put("missing", b"k2", b"x"),
        put("b", b"k1", b"b1"),
        put("a", b"k1", b"again", cid=b"c", seq=1),  # with (cid, seq): applied on its own
        put("a", b"k3", b"3"),
    ]
    results = sm.apply([ent(i, c) for i, c in enumerate(cmds, 3)])
    kinds = [type(r).__name__ for r in results]
    assert kinds == [
        "NoneType",
        "KeyTooLargeError",
        "NoneType",
        "BucketNotFoundError",
        "BucketNotFoundError",
        "NoneType",
        "NoneType",
        "NoneType",
    ]
    assert sm.applied[0] == 10
    assert get(sm, "a", b"k1") == b"again" and get(sm, "a", b"k2") == b"2"
    assert get(sm, "a", b"k3") == b"3" and get(sm, "b", b"k1") == b"b1"


def _outcome(result: Any) -> Any:
    return (type(result).__name__, str(result), result.details) if result else result


# A batch-path run's keys and values: fine ones, an empty key, one too long, a value over
# the machines' max_value_size of 100; in the bucket "a" or one that does not exist.
_RUN_BUCKETS = st.sampled_from(["a", "missing"])
_RUN_KEYS = st.sampled_from([b"k1", b"k2", b"", b"k" * 600])
_RUN_VALUES = st.sampled_from([b"v", b"w" * 101])


def _run_of(*fields: st.SearchStrategy[Any]) -> st.SearchStrategy[list[tuple[Any, ...]]]:
    """Returns lists long enough for the batch path of tuples (key, value, *fields)."""
    return st.lists(
        st.tuples(_RUN_KEYS, _RUN_VALUES, *fields),
        min_size=BATCH_PATH_MIN,
        max_size=BATCH_PATH_MIN + 4,
    )


@settings(max_examples=100, deadline=None)
@given(bucket=_RUN_BUCKETS, puts=_run_of(st.none() | st.integers(0, 400)))
def test_a_run_of_plain_puts_ends_like_the_general_path(
    bucket: str, puts: list[tuple[bytes, bytes, int | None]]
) -> None:
    """Plain puts (no (cid, seq)) to one bucket take the batch path: the general path's
    results (a bad key or value, or a missing bucket, fails only its own puts), data,
    applied index and clock."""
    run = [
        ent(i, put(bucket, k, v) if ts is None else put(bucket, k, v, ts=ts))
        for i, (k, v, ts) in enumerate(puts, 3)
    ]
    puts_run = commands.put_run([e.data for e in run])
    assert puts_run is not None and puts_run.rows[0][1] is None
    with tempfile.TemporaryDirectory() as d:
        sms = [
            BucketStateMachine(Path(d) / name, max_value_size=100) for name in ("fast", "general")
        ]
        fast, general = sms
        try:
            for sm in sms:
                sm.apply([ent(1, mk("a", ts=150))])
            fast.apply([ent(2, None)])
            got = fast.apply(run)
            want = general.apply([ent(2, None), *run])[1:]
            assert [_outcome(r) for r in got] == [_outcome(r) for r in want]
            assert fast.applied == general.applied == (run[-1].index, 1)
            assert fast.clock_ms == general.clock_ms
            assert _snapshot(fast) == _snapshot(general)
        finally:
            for sm in sms:
                sm.close()


@settings(max_examples=100, deadline=None)
@given(
    bucket=_RUN_BUCKETS,
    puts=_run_of(st.sampled_from([b"c", b"d"]), st.integers(0, 3), st.integers(0, 400)),
    retries=st.sampled_from(["none", "recorded", "repeated"]),
    recorded=st.lists(st.integers(0, BATCH_PATH_MIN - 1), min_size=1, max_size=3),
)
def test_a_run_of_exactly_once_puts_ends_like_the_general_path(
    bucket: str,
    puts: list[tuple[bytes, bytes, bytes, int, int]],
    retries: str,
    recorded: list[int],
) -> None:
    """Exactly-once puts to one bucket take the batch path: their records are written in
    one call when none exists yet, and retries go through the general path's lookups in
    the same transaction. Either way: the general path's results, data, records, applied
    index and clock. ``retries``: "none", every put has a (cid, seq) of its own; "recorded",
    so do they, but the puts at positions ``recorded`` were applied before (at ts 150:
    live up to ts 250, expired after); "repeated": (cid, seq) drawn from 8 pairs."""
    ids = [
        (cid, seq if retries == "repeated" else 100 + pos)
        for pos, (_, _, cid, seq, _) in enumerate(puts)
    ]
    before = [ids[pos] for pos in recorded] if retries == "recorded" else []
    run = [
        ent(i, put(bucket, k, v, cid=cid, seq=seq, ts=ts))
        for i, ((k, v, _, _, ts), (cid, seq)) in enumerate(
            zip(puts, ids, strict=True), 3 + len(before)
        )
    ]
    assert commands.put_run([e.data for e in run]) is not None
    with tempfile.TemporaryDirectory() as d:
        sms = [
            BucketStateMachine(Path(d) / name, max_value_size=100, dedup_window_ms=100)
            for name in ("fast", "general")
        ]
        fast, general = sms
        try:
            for sm in sms:  # records made earlier, at ts 150: expired from ts 251 on
                sm.apply([ent(1, mk("a", ts=150))])
                sm.apply(
                    [
                        ent(i, put("a", b"old", b"o", cid=cid, seq=seq, ts=150))
                        for i, (cid, seq) in enumerate(before, 2)
                    ]
                )
            fast.apply([ent(2 + len(before), None)])
            got = fast.apply(run)
            want = general.apply([ent(2 + len(before), None), *run])[1:]
            assert [_outcome(r) for r in got] == [_outcome(r) for r in want]
            assert fast.applied == general.applied
            assert fast.clock_ms == general.clock_ms
            assert _snapshot(fast) == _snapshot(general)
            for sm in sms:
                sm.apply([ent(sm.applied[0] + 1, None)])  # the clean-up hint must agree too
            dumps = []
            for sm in sms:
                with (
                    sm.db.view() as tx
                ):  # a group's (or session group's) key ends with its run's first index
                    dumps.append(
                        [
                            (k[:12] if k[:4] in (b"sm.g", b"sm.t") else k, v)
                            for k, v in tx.meta_scan(b"")
                        ]
                    )
            assert dumps[0] == dumps[1]
        finally:
            for sm in sms:
                sm.close()
