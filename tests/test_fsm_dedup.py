"""Exactly-once: the dedup table answers retries with the original result, expires
deterministically by the leader-stamped clock, and stays bounded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lmdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storeformats import create_store  # tests/ is on sys.path under pytest

from boltraft.errors import (
    BoltraftError,
    BucketNotFoundError,
    ConditionFailedError,
    InvalidArgumentError,
    SessionExpiredError,
)
from boltraft.packing import pack
from boltraft.raft.types import Entry
from boltraft.storage import commands, dedup
from boltraft.storage.fsm import BucketStateMachine
from boltraft.storage.queries import execute_read

WINDOW = 1000


def ent(index: int, cmd: dict[str, Any]) -> Entry:
    return Entry(1, index, 0, commands.encode(cmd))


def seq_cmd(cid: str, seq: int, ts: int, bucket: str = "a") -> dict[str, Any]:
    return {"op": "next_sequence", "bucket": bucket, "cid": cid, "seq": seq, "ts": ts}


def meta_keys(sm: BucketStateMachine, prefix: bytes) -> list[bytes]:
    with sm.db.view() as tx:
        return [k for k, _ in tx.meta_scan(prefix)]


@pytest.fixture
def sm(tmp_path: Path) -> Any:
    machine = BucketStateMachine(tmp_path / "state", dedup_window_ms=WINDOW)
    machine.apply([ent(1, {"op": "create_bucket", "bucket": "a"})])
    yield machine
    machine.close()


def test_a_retry_in_the_same_run_and_a_later_run_returns_the_original(
    sm: BucketStateMachine,
) -> None:
    assert sm.apply([ent(2, seq_cmd("c", 1, 10)), ent(3, seq_cmd("c", 1, 11))]) == [1, 1]
    assert sm.apply([ent(4, seq_cmd("c", 1, 12)), ent(5, seq_cmd("c", 2, 13))]) == [1, 2]
    assert sm.apply([ent(6, seq_cmd("other", 1, 14))]) == [3]


def test_the_original_result_survives_a_restart(tmp_path: Path) -> None:
    with BucketStateMachine(tmp_path / "s", dedup_window_ms=WINDOW) as sm:
        sm.apply([ent(1, {"op": "create_bucket", "bucket": "a"}), ent(2, seq_cmd("c", 1, 5))])
    with BucketStateMachine(tmp_path / "s", dedup_window_ms=WINDOW) as sm:
        assert sm.apply([ent(3, seq_cmd("c", 1, 6)), ent(4, seq_cmd("c", 2, 7))]) == [1, 2]


def test_failures_are_replayed_too(sm: BucketStateMachine) -> None:
    cas = {
        "op": "put",
        "bucket": "a",
        "key": b"k",
        "value": b"new",
        "if_value": b"old",
        "cid": "c",
        "seq": 1,
        "ts": 1,
    }
    [first] = sm.apply([ent(2, cas)])
    assert isinstance(first, ConditionFailedError)
    # The condition would hold now, but the retry answers the first outcome.
    sm.apply([ent(3, {"op": "put", "bucket": "a", "key": b"k", "value": b"old"})])
    [again] = sm.apply([ent(4, cas)])
    assert isinstance(again, ConditionFailedError)
    assert again.details["current"] is None
    assert execute_read(sm.db, {"op": "get", "bucket": "a", "key": b"k"}) == b"old"
    [missing] = sm.apply([ent(5, seq_cmd("d", 1, 2, bucket="nope"))])
    assert isinstance(missing, BucketNotFoundError)
    assert isinstance(sm.apply([ent(6, seq_cmd("d", 1, 3))])[0], BucketNotFoundError)


def test_batches_are_deduplicated_whole(sm: BucketStateMachine) -> None:
    batch = {
        "op": "batch",
        "ops": [
            {"op": "next_sequence", "bucket": "a"},
            {"op": "put", "bucket": "a", "key": b"k", "value": b"v"},
        ],
        "cid": "c",
        "seq": 9,
        "ts": 1,
    }
    assert sm.apply([ent(2, batch), ent(3, batch)]) == [[1, None], [1, None]]
    assert sm.apply([ent(4, seq_cmd("x", 1, 2))]) == [2]


def test_expiry_follows_the_log_clock(sm: BucketStateMachine) -> None:
    assert sm.apply([ent(2, seq_cmd("c", 1, 100))]) == [1]
    # Live while clock <= ts + window.
    assert sm.apply([ent(3, seq_cmd("c", 1, 100 + WINDOW))]) == [1]
    assert sm.clock_ms == 100 + WINDOW
    # A command without ts does not move the clock.
    assert sm.apply([ent(4, {"op": "next_sequence", "bucket": "a", "cid": "c", "seq": 1})]) == [1]
    # Once another command moves the clock past the window, the retry is refused, never
    # applied again.
    first, retry = sm.apply([ent(5, seq_cmd("z", 1, 101 + WINDOW)), ent(6, seq_cmd("c", 1, 0))])
    assert first == 2 and isinstance(retry, SessionExpiredError)
    assert retry.details == {"cid": b"c".hex(), "seq": 1}
    # ... and the client's next write is applied as usual.
    assert sm.apply([ent(7, seq_cmd("c", 2, 0))]) == [3]


def test_a_stale_ts_does_not_move_the_clock_back(sm: BucketStateMachine) -> None:
    sm.apply([ent(2, seq_cmd("c", 1, 5000)), ent(3, seq_cmd("c", 2, 10))])
    assert sm.clock_ms == 5000


def test_the_table_stays_bounded(sm: BucketStateMachine) -> None:
    index = 2
    for t in range(0, 20 * WINDOW, WINDOW // 4):
        run = [ent(index + i, seq_cmd(f"c{t}", i, t)) for i in range(10)]
        sm.apply(run)
        index += len(run)
    records = meta_keys(sm, dedup.RECORD_PREFIX)
    groups = meta_keys(sm, dedup.GROUP_PREFIX)
    # About one window of runs (4 runs per window, plus the one being expired).
    assert 10 * 4 <= len(records) <= 10 * 6
    assert 4 <= len(groups) <= 6


def test_a_retry_after_clean_up_is_refused_by_its_client_s_session(
    sm: BucketStateMachine,
) -> None:
    assert sm.apply([ent(2, seq_cmd("c", 1, 0)), ent(3, seq_cmd("c", 2, 0))]) == [1, 2]
    sm.apply([ent(4, seq_cmd("x", 1, 2 * WINDOW)), ent(5, seq_cmd("y", 1, 3 * WINDOW))])
    assert dedup.record_key(b"c", 1) not in meta_keys(sm, dedup.RECORD_PREFIX)  # cleaned up
    assert dedup.SESSION_PREFIX + b"c" in meta_keys(sm, dedup.SESSION_PREFIX)
    (retry,) = sm.apply([ent(6, seq_cmd("c", 1, 3 * WINDOW))])
    assert isinstance(retry, SessionExpiredError)
    assert sm.apply([ent(7, seq_cmd("c", 3, 3 * WINDOW))]) == [5]  # a new write: applied


def test_a_seq_below_the_client_s_highest_is_refused_even_in_the_same_run(
    sm: BucketStateMachine,
) -> None:
    results = sm.apply([ent(2, seq_cmd("c", 5, 0)), ent(3, seq_cmd("c", 4, 0))])
    assert results[0] == 1 and isinstance(results[1], SessionExpiredError)


def test_a_session_is_forgotten_a_day_after_its_newest_write_expired(
    sm: BucketStateMachine,
) -> None:
    sm.apply([ent(2, seq_cmd("c", 1, 0))])
    late = WINDOW + dedup.SESSION_MS + 10
    sm.apply([ent(3, seq_cmd("x", 1, late)), ent(4, seq_cmd("y", 1, late + 1))])
    assert dedup.SESSION_PREFIX + b"c" not in meta_keys(sm, dedup.SESSION_PREFIX)
    assert sm.apply([ent(5, seq_cmd("c", 1, late + 2))]) == [4]  # taken as a new command


def test_the_session_index_holds_one_key_per_session_however_many_runs(
    sm: BucketStateMachine,
) -> None:
    """Two hours of runs by three clients leave three session index keys (each in its
    session's bucket) and nothing per run: what clean-up needs stays as big as the set of
    sessions, not the number of runs applied in the day a session is kept."""
    index = 2
    step = 10_000
    for n, t in enumerate(range(0, 2 * 3600 * 1000, step), 1):
        run = [ent(index + i, seq_cmd(f"c{i}", n, t)) for i in range(3)]
        sm.apply(run)
        index += len(run)
    last = t
    assert meta_keys(sm, dedup.SGROUP_PREFIX) == []
    assert sorted(meta_keys(sm, dedup.SINDEX_PREFIX)) == sorted(
        dedup.session_index_key(f"c{i}".encode(), last) for i in range(3)
    )
    assert len(meta_keys(sm, dedup.SESSION_PREFIX)) == 3


def test_an_idle_session_and_its_index_key_are_deleted_a_day_later(
    sm: BucketStateMachine,
) -> None:
    sm.apply([ent(2, seq_cmd("idle", 1, 0)), ent(3, seq_cmd("busy", 1, 0))])
    late = WINDOW + dedup.SESSION_MS + 10
    index = 4
    for t in range(dedup.SESSION_BUCKET_MS, late, dedup.SESSION_MS // 4):
        sm.apply([ent(index, seq_cmd("busy", index, t))])  # the busy one moves on
        index += 1
    sm.apply([ent(index, seq_cmd("busy", index, late))])
    assert dedup.SESSION_PREFIX + b"idle" not in meta_keys(sm, dedup.SESSION_PREFIX)
    assert meta_keys(sm, dedup.SINDEX_PREFIX) == [dedup.session_index_key(b"busy", late)]


def test_session_groups_a_store_holds_are_cleaned_up_a_day_later(
    sm: BucketStateMachine,
) -> None:
    """SGROUP entries (one per run, listing its clients) in a store are deleted with the
    expired sessions they list, once a day old."""
    with sm.db.update() as tx:
        tx.meta_put(dedup.SESSION_PREFIX + b"old", (7).to_bytes(8, "big") + bytes(8))
        tx.meta_put(dedup.SGROUP_PREFIX + bytes(8) + (5).to_bytes(8, "big"), pack([b"old"]))
    late = WINDOW + dedup.SESSION_MS + 10
    sm.apply([ent(2, seq_cmd("x", 1, late)), ent(3, seq_cmd("y", 1, late + 1))])
    assert meta_keys(sm, dedup.SGROUP_PREFIX) == []
    assert dedup.SESSION_PREFIX + b"old" not in meta_keys(sm, dedup.SESSION_PREFIX)


def test_negative_window_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError):
        BucketStateMachine(tmp_path / "s", dedup_window_ms=-1)


LOG = st.lists(
    st.tuples(st.sampled_from(["c1", "c2", "c3"]), st.integers(0, 4), st.integers(0, 3000)),
    min_size=1,
    max_size=40,
)


def comparable(results: list[Any]) -> list[Any]:
    """``results`` with each error as (class, message, details): errors compare by value."""
    return [(type(r), r.message, r.details) if isinstance(r, BoltraftError) else r for r in results]


def apply_in_runs(sm: BucketStateMachine, entries: list[Entry], sizes: list[int]) -> list[Any]:
    """Returns the results of applying ``entries`` in runs of ``sizes[0]``, ``sizes[1]``...
    (cycling through ``sizes``)."""
    results: list[Any] = []
    pos = 0
    k = 0
    while pos < len(entries):
        size = sizes[k % len(sizes)]
        k += 1
        results += sm.apply(entries[pos : pos + size])
        pos += size
    return results


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(LOG, st.lists(st.integers(1, 8), min_size=1, max_size=40))
def test_any_batching_gives_the_same_results(
    tmp_path_factory: pytest.TempPathFactory, log: list[Any], cuts: list[int]
) -> None:
    entries = [ent(1, {"op": "create_bucket", "bucket": "a"})]
    entries += [ent(i + 2, seq_cmd(c, s, t)) for i, (c, s, t) in enumerate(log)]
    outcomes = []
    for split in ([len(entries)], cuts):
        with BucketStateMachine(tmp_path_factory.mktemp("s"), dedup_window_ms=WINDOW) as sm:
            results = apply_in_runs(sm, entries, split)
            outcomes.append((comparable(results), sm.applied, sm.clock_ms))
    assert outcomes[0] == outcomes[1]


PUT_LOG = st.lists(  # (client, retry of its last write? (one in 8), ts)
    st.tuples(
        st.sampled_from(["c1", "c2", "c3"]),
        st.integers(0, 7).map(lambda n: n == 7),
        st.integers(0, 3000),
    ),
    min_size=16,
    max_size=48,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(PUT_LOG, st.lists(st.sampled_from([1, 2, 8, 10, 12]), min_size=1, max_size=10))
def test_any_batching_of_puts_gives_the_same_results(
    tmp_path_factory: pytest.TempPathFactory, log: list[Any], cuts: list[int]
) -> None:
    """Runs of ``BATCH_PATH_MIN`` exactly-once puts or more take the batch path when none is
    a retry, shorter ones the general path; later runs look up the records of earlier ones.
    Every batching gives the results, data, applied index and clock of entry-by-entry.
    Each client counts its seq up, or retries its last write (a client's first write is
    never a retry)."""
    entries = [ent(1, {"op": "create_bucket", "bucket": "a"})]
    last: dict[str, int] = {}
    for i, (c, retry, t) in enumerate(log):
        seq = last[c] if retry and c in last else last.get(c, 0) + 1
        last[c] = seq
        entries.append(ent(i + 2, {**put_cmd(c, seq, i), "ts": t}))
    outcomes = []
    for split in ([1], cuts):
        with BucketStateMachine(tmp_path_factory.mktemp("s"), dedup_window_ms=WINDOW) as sm:
            results = apply_in_runs(sm, entries, split)
            data = execute_read(sm.db, {"op": "scan", "bucket": "a"})
            outcomes.append((comparable(results), sm.applied, sm.clock_ms, data))
    assert outcomes[0] == outcomes[1]


def put_cmd(cid: str, seq: int, value: int) -> dict[str, Any]:
    """An exactly-once put; its key is its (cid, seq), its value its place in the log (so
    the data shows whether a retry was applied again)."""
    key = b"%s-%d" % (cid.encode(), seq)
    return {"op": "put", "bucket": "a", "key": key, "value": b"%d" % value, "cid": cid, "seq": seq}


def test_results_round_trip_through_the_table() -> None:
    for value in (None, True, False, 7, b"bytes", [1, None, True], []):
        assert dedup.decode_result(dedup.encode_result(value)) == value
    err = ConditionFailedError("nope", current=b"x", index=2)
    back = dedup.decode_result(dedup.encode_result(err))
    assert type(back) is ConditionFailedError
    assert (back.message, back.details) == ("nope", {"current": b"x", "index": 2})
    odd = BucketNotFoundError("odd", where={1, 2}, ok="fine")
    back = dedup.decode_result(dedup.encode_result(odd))
    assert back.details == {"where": "{1, 2}", "ok": "fine"}


def test_a_format_3_store_keeps_its_cid_first_records(tmp_path: Path) -> None:
    path = tmp_path / "state"
    create_store(path, b"boltraft-3")
    with BucketStateMachine(path, dedup_window_ms=WINDOW) as machine:
        machine.apply([ent(1, {"op": "create_bucket", "bucket": "a"})])
    # a record the format-3 code wrote before the upgrade: (c, 1) answered 41
    env = lmdb.open(str(path), max_dbs=8)
    with env.begin(write=True) as txn:
        meta = env.open_db(b"meta", txn=txn)
        txn.put(
            dedup.record_key_cid_first(b"c", 1),
            (0).to_bytes(8, "big") + dedup.encode_result(41),
            db=meta,
        )
    env.close()
    with BucketStateMachine(path, dedup_window_ms=WINDOW) as machine:
        assert machine.db._dbs.format == b"boltraft-3"
        assert machine.apply([ent(2, seq_cmd("c", 1, 0))]) == [41]  # found: not applied again
        assert machine.apply([ent(3, seq_cmd("c", 2, 0)), ent(4, seq_cmd("c", 2, 0))]) == [1, 1]
        keys = meta_keys(machine, dedup.RECORD_PREFIX)
        assert keys == sorted([dedup.record_key_cid_first(b"c", s) for s in (1, 2)])
        # clean-up finds them in their layout too
        machine.apply([ent(5, seq_cmd("z", 1, 10 * WINDOW)), ent(6, seq_cmd("z", 2, 20 * WINDOW))])
        assert dedup.record_key_cid_first(b"c", 2) not in meta_keys(machine, dedup.RECORD_PREFIX)


def test_a_new_store_keys_its_records_seq_first(sm: BucketStateMachine) -> None:
    assert sm.db._dbs.format == b"boltraft-5"
    sm.apply([ent(2, seq_cmd("c", 7, 0))])
    assert meta_keys(sm, dedup.RECORD_PREFIX) == [dedup.record_key(b"c", 7)]


def test_a_format_4_store_keys_its_records_seq_first(tmp_path: Path) -> None:
    create_store(tmp_path / "state", b"boltraft-4")
    with BucketStateMachine(tmp_path / "state", dedup_window_ms=WINDOW) as machine:
        assert machine.db._dbs.format == b"boltraft-4"
        machine.apply([ent(1, {"op": "create_bucket", "bucket": "a"}), ent(2, seq_cmd("c", 7, 0))])
        assert meta_keys(machine, dedup.RECORD_PREFIX) == [dedup.record_key(b"c", 7)]


def test_record_keys_sort_by_seq_first_and_never_collide() -> None:
    # clients at similar seqs write neighbouring records (few pages per apply run)
    keys = [dedup.record_key(cid, seq) for seq in (1, 2, 256) for cid in (b"a", b"ab", b"zz")]
    assert sorted(keys) == keys
    pairs = [(cid, seq) for cid in (b"a", b"ab", b"a\x00", b"\x01") for seq in (0, 1, 2**64 - 1)]
    assert len({dedup.record_key(c, s) for c, s in pairs}) == len(pairs)


def test_a_reused_seq_after_its_session_expired_is_answered_alike_however_cleaned_up(
    tmp_path: Path,
) -> None:
    """A client that comes back after its session expired (a day past its newest record's
    window) and reuses a seq: its old record may still be stored where clean-up has not
    reached it (bounded per run, so it depends on how the replica batched its applies) or
    be gone. Every replica must answer alike: a new command."""
    groups = dedup.GC_GROUPS_PER_RUN + 10  # more than one run's clean-up reaches
    entries = [ent(1, {"op": "create_bucket", "bucket": "a"})]
    entries.append(ent(2, seq_cmd("back", 5, 0)))  # the oldest group holds its record
    entries += [ent(3 + i, seq_cmd(f"x{i}", 1, 1 + i)) for i in range(groups)]
    late = groups + WINDOW + dedup.SESSION_MS + 10
    tail = [ent(3 + groups, seq_cmd("z", 1, late)), ent(4 + groups, seq_cmd("back", 5, late))]
    outcomes = []
    # one run for the tail, or two: the first cleans up the oldest groups before "back" comes
    for n, runs in enumerate(([tail], [tail[:1], tail[1:]])):
        with BucketStateMachine(tmp_path / f"s{n}", dedup_window_ms=WINDOW) as sm:
            for e in entries:  # one run each: one group each
                sm.apply([e])
            results = [r for run in runs for r in sm.apply(run)]
            outcomes.append(comparable(results))
    assert outcomes[0] == outcomes[1]
    assert type(outcomes[0][1]) is int  # applied anew: the bucket's next sequence


def test_a_client_back_after_its_session_expired_starts_a_new_session_alike_everywhere(
    tmp_path: Path,
) -> None:
    """A client whose session expired comes back and counts its seqs from 1 again: its old
    records of the same seqs, stored or cleaned up depending on the replica's batching,
    must not refuse the new writes anywhere."""
    groups = dedup.GC_GROUPS_PER_RUN + 10
    entries = [ent(1, {"op": "create_bucket", "bucket": "a"})]
    entries += [ent(2 + s, seq_cmd("back", 1 + s, 0)) for s in range(3)]  # the oldest groups
    entries += [ent(5 + i, seq_cmd(f"x{i}", 1, 1 + i)) for i in range(groups)]
    late = groups + WINDOW + dedup.SESSION_MS + 10
    tail = [ent(5 + groups, seq_cmd("z", 1, late))]
    tail += [ent(6 + groups + s, seq_cmd("back", 1 + s, late)) for s in range(3)]
    outcomes = []
    for n, runs in enumerate(([tail], [tail[:1], tail[1:]])):
        with BucketStateMachine(tmp_path / f"s{n}", dedup_window_ms=WINDOW) as sm:
            for e in entries:
                sm.apply([e])
            outcomes.append(comparable([r for run in runs for r in sm.apply(run)]))
    assert outcomes[0] == outcomes[1]
    assert all(type(r) is int for r in outcomes[0])  # every write applied
