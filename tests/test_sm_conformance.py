"""One conformance suite for every ``StateMachine`` (``boltraft.server.ports``): the real
``BucketStateMachine`` on LMDB files and the in-memory twin ``tests/memsm.py``.

Each test gets a ``Harness`` whose ``sm`` is a fresh state machine of one kind and whose
``restore(info)`` opens the state a snapshot holds, as a node does after installing one (the
real one through ``restore_snapshot`` into a new data directory). The expectations are
written out, so each test checks both kinds against the Protocol; the Hypothesis test at the
end applies random runs to both kinds side by side and compares every answer.
"""

from __future__ import annotations

import dataclasses
import itertools
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fsm_model import dump  # tests/ is on sys.path under pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from memsm import MemStateMachine
from test_fsm_stateful import any_ops

from boltraft.errors import (
    BadRequestError,
    BoltraftError,
    BucketExistsError,
    BucketNotFoundError,
    ChecksumMismatchError,
    ConditionFailedError,
    IncompatibleValueError,
    InvalidArgumentError,
    InvalidBucketNameError,
    KeyRequiredError,
    KeyTooLargeError,
    MalformedCommandError,
    SessionExpiredError,
    TxClosedError,
    UnknownCommandError,
    UnsupportedVersionError,
    ValueTooLargeError,
)
from boltraft.packing import pack
from boltraft.raft.types import Entry, EntryType
from boltraft.server.ports import StateMachine
from boltraft.storage import commands
from boltraft.storage.changes import Change
from boltraft.storage.fsm import BATCH_PATH_MIN, BucketStateMachine
from boltraft.storage.snapshot import META_FILE, SnapshotInfo, file_sha256, restore_snapshot

WINDOW = 1000  # dedup window (ms) of every state machine here
MAX_VALUE = 64  # max_value_size of every state machine here
OPTS: dict[str, Any] = {"dedup_window_ms": WINDOW, "max_value_size": MAX_VALUE}
KINDS = ["real", "twin"]


def _conforms(real: BucketStateMachine, twin: MemStateMachine) -> list[StateMachine]:
    """Never called: mypy checks here that both kinds satisfy the Protocol."""
    return [real, twin]


class Harness:
    """Opens one kind of state machine, and reopens snapshots of it."""

    def __init__(self, kind: str, root: Path) -> None:
        self.kind = kind
        self.root = root
        self.opened: list[Any] = []
        self.sm: Any = self._track(
            MemStateMachine(**OPTS)
            if kind == "twin"
            else BucketStateMachine(root / "state", sync=False, **OPTS)
        )

    def _track(self, sm: Any) -> Any:
        self.opened.append(sm)
        return sm

    def restore(self, info: SnapshotInfo) -> Any:
        """Returns a new state machine holding the snapshot ``info`` describes (checked
        against its size and sha256)."""
        if self.kind == "twin":
            return self._track(MemStateMachine.from_snapshot(info.path, info, **OPTS))
        target = self.root / f"restored-{len(self.opened)}"
        restore_snapshot(target, info.path, info)
        return self._track(BucketStateMachine(target, sync=False, **OPTS))

    def close(self) -> None:
        for sm in self.opened:
            sm.close()


@pytest.fixture(params=KINDS)
def h(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(request.param, tmp_path)
    yield harness
    harness.close()


# --- entries and answers ----------------------------------------------------------------------
def ent(index: int, cmd: dict[str, Any] | bytes | None, term: int = 1) -> Entry:
    """Returns a NORMAL entry carrying ``cmd`` (encoded), raw bytes, or nothing (no-op)."""
    if cmd is None:
        data = b""
    elif isinstance(cmd, bytes):
        data = cmd
    else:
        data = commands.encode(cmd)
    return Entry(term, index, EntryType.NORMAL, data)


def conf(index: int, term: int = 1) -> Entry:
    """Returns a CONF_CHANGE entry whose data would be a valid command if it were applied."""
    return Entry(term, index, EntryType.CONF_CHANGE, commands.encode(mk("conf")))


def put(bucket: Any, key: bytes, value: bytes, **extra: Any) -> dict[str, Any]:
    return {"op": "put", "bucket": bucket, "key": key, "value": value, **extra}


def delete(bucket: Any, key: bytes, **extra: Any) -> dict[str, Any]:
    return {"op": "delete", "bucket": bucket, "key": key, **extra}


def mk(bucket: Any, **extra: Any) -> dict[str, Any]:
    return {"op": "create_bucket", "bucket": bucket, **extra}


def rm(bucket: Any) -> dict[str, Any]:
    return {"op": "delete_bucket", "bucket": bucket}


def nextseq(bucket: Any, **extra: Any) -> dict[str, Any]:
    return {"op": "next_sequence", "bucket": bucket, **extra}


def once(cmd: dict[str, Any], cid: str, seq: int, ts: int | None = None) -> dict[str, Any]:
    """Returns ``cmd`` made exactly-once by (cid, seq), stamped with ``ts`` when given."""
    out = {**cmd, "cid": cid, "seq": seq}
    if ts is not None:
        out["ts"] = ts
    return out


def get(sm: Any, bucket: Any, key: bytes) -> Any:
    [res] = sm.read([{"op": "get", "bucket": bucket, "key": key}])
    return res


def kinds(results: list[Any]) -> list[Any]:
    """Returns each result with every error replaced by its class."""
    return [type(r) if isinstance(r, BoltraftError) else r for r in results]


def norm(x: Any) -> Any:
    """Returns ``x`` with every error replaced by (class, details), for comparisons."""
    if isinstance(x, BoltraftError):
        return ("error", type(x), x.details)
    if isinstance(x, list):
        return [norm(i) for i in x]
    if isinstance(x, dict):  # a scan's applied index: "the same reads" means the same data
        return {k: norm(v) for k, v in x.items() if k != "index"}
    return x


PROBE_KEYS = [b"k", b"k1", b"k2", b"n", b"", b"K" * 509, b"K" * 510]
"""Keys every bucket is asked for by ``everything`` (the last two are at and past the key
limit of the first 255 buckets)."""


def _pages(sm: Any, path: list[bytes], reverse: bool) -> list[Any]:
    """Returns the pages of one item of a scan of ``path``, following its tokens."""
    pages = []
    req: dict[str, Any] = {"op": "scan", "bucket": path, "limit": 1, "reverse": reverse}
    while True:
        [page] = sm.read([req])
        pages.append(norm(page))
        if not isinstance(page, dict) or page["next"] is None or len(pages) > 50:
            return pages
        req = {**req, "after": page["next"]}


def everything(sm: Any) -> list[Any]:
    """Returns, read through ``sm.read``, the root's bucket names and for every bucket its
    complete scan, its scans one item a page both ways, its count, its nested names and its
    value of each of PROBE_KEYS; what "the same reads" means below."""
    reqs: list[dict[str, Any]] = [{"op": "buckets"}]
    pages = []
    todo = [[name] for name in sm.read(reqs)[0]]
    while todo:
        path = todo.pop()
        reqs += [
            {"op": "scan", "bucket": path},
            {"op": "count", "bucket": path},
            {"op": "buckets", "bucket": path},
            *[{"op": "get", "bucket": path, "key": k} for k in PROBE_KEYS],
        ]
        pages += [_pages(sm, path, False), _pages(sm, path, True)]
        todo += [[*path, name] for name in sm.read([{"op": "buckets", "bucket": path}])[0]]
    return [reqs, norm(sm.read(reqs)), pages]


# --- applying -----------------------------------------------------------------------------------
def test_a_new_state_has_nothing_applied(h: Harness) -> None:
    assert h.sm.applied == (0, 0)
    assert not h.sm.closed
    assert h.sm.read([{"op": "buckets"}]) == [[]]
    assert h.sm.read([]) == []


def test_each_command_kind_has_its_result(h: Harness) -> None:
    results = h.sm.apply(
        [
            ent(1, mk("a")),
            ent(2, put("a", b"k", b"v")),
            ent(3, put("a", b"k", b"w", if_value=b"v")),
            ent(4, put("a", b"j", b"x", if_absent=True)),
            ent(5, delete("a", b"j")),
            ent(6, delete("a", b"j")),
            ent(7, delete("a", b"k", if_value=b"w")),
            ent(8, nextseq("a")),
            ent(9, nextseq("a")),
            ent(10, mk(["a", "n"])),
            ent(11, mk(["a", "n", "m"], if_not_exists=True)),
            ent(12, mk(["a", "n", "m"], if_not_exists=True)),
            ent(13, put(["a", "n", "m"], b"deep", b"1")),
            ent(14, mk(["x", "y", "z"], if_not_exists=True)),
            ent(15, rm(["x", "y"])),
            ent(16, {"op": "batch", "ops": [put("a", b"b1", b"1"), nextseq("a"), mk("c")]}),
            ent(17, {"op": "batch", "ops": []}),
            ent(18, None),
        ]
    )
    assert results == [
        *[None] * 4,
        True,
        False,
        True,
        1,
        2,
        *[None] * 6,
        [None, 3, None],
        [],
        None,
    ]
    assert h.sm.applied == (18, 1)
    assert h.sm.read(
        [
            {"op": "buckets"},
            {"op": "buckets", "bucket": ["a", "n"]},
            {"op": "buckets", "bucket": "x"},
            {"op": "get", "bucket": ["a", "n", "m"], "key": b"deep"},
            {"op": "scan", "bucket": "a"},
        ]
    ) == [
        [b"a", b"c", b"x"],
        [b"m"],
        [],
        b"1",
        {"items": [[b"b1", b"1"], [b"n", None]], "next": None, "index": 18},
    ]


def test_engine_errors_are_results_with_their_details(h: Harness) -> None:
    results = h.sm.apply(
        [
            ent(1, put("missing", b"k", b"v")),
            ent(2, mk("a")),
            ent(3, mk("a")),
            ent(4, mk(["nope", "child"])),
            ent(5, put("a", b"", b"v")),
            ent(6, put("a", b"k" * 510, b"v")),
            ent(7, put("a", b"k", b"v" * (MAX_VALUE + 1))),
            ent(8, put("a", b"k", b"v")),
            ent(9, put("a", b"k", b"w", if_value=b"old")),
            ent(10, put("a", b"k", b"w", if_absent=True)),
            ent(11, delete("a", b"k", if_value=b"zz")),
            ent(12, mk(["a", "n"])),
            ent(13, put("a", b"n", b"v")),
            ent(14, delete("a", b"n")),
            ent(15, mk(["a", "k"])),
            ent(16, rm(["a", "k"])),
            ent(17, rm(["a", "gone"])),
            ent(18, mk("bad/name")),
            ent(19, put(["a", ""], b"k", b"v")),
            ent(20, nextseq(["a", "missing", "deeper"])),
            ent(21, mk("b" * 510)),
        ]
    )
    assert kinds(results) == [
        BucketNotFoundError,
        None,
        BucketExistsError,
        BucketNotFoundError,
        KeyRequiredError,
        KeyTooLargeError,
        ValueTooLargeError,
        None,
        ConditionFailedError,
        ConditionFailedError,
        ConditionFailedError,
        None,
        IncompatibleValueError,
        IncompatibleValueError,
        IncompatibleValueError,
        IncompatibleValueError,
        BucketNotFoundError,
        InvalidBucketNameError,
        InvalidBucketNameError,
        BucketNotFoundError,
        InvalidBucketNameError,
    ]
    details = [r.details if isinstance(r, BoltraftError) else None for r in results]
    assert details[0] == {"path": [b"missing"]}
    assert details[3] == {"path": [b"nope"]}
    assert details[5] == {"size": 510, "max": 509}
    assert details[6] == {"size": MAX_VALUE + 1, "max": MAX_VALUE}
    assert details[8] == details[9] == details[10] == {"current": b"v"}
    assert details[12] == details[13] == {"key": b"n"}
    assert details[14] == details[15] == {"path": [b"a", b"k"]}
    assert details[19] == {"path": [b"a", b"missing"]}
    assert details[20] == {"size": 510, "max": 509}
    assert get(h.sm, "a", b"k") == b"v"
    assert h.sm.applied == (21, 1)


def test_undecodable_entries_yield_command_errors_and_the_rest_applies(h: Harness) -> None:
    results = h.sm.apply(
        [
            ent(1, b"\xc1garbage"),
            ent(2, mk("a")),
            ent(3, pack([9, None, None, None, [0]])),
            ent(4, pack([1, None, None, None, [42, [b"a"]]])),
            ent(5, pack([1, b"c", None, None, [6, [b"a"]]])),  # cid without seq
            ent(6, put("a", b"k", b"v")),
        ]
    )
    assert kinds(results) == [
        MalformedCommandError,
        None,
        UnsupportedVersionError,
        UnknownCommandError,
        MalformedCommandError,
        None,
    ]
    assert get(h.sm, "a", b"k") == b"v"
    assert h.sm.applied == (6, 1)


def test_entries_at_or_below_the_applied_index_are_skipped(h: Harness) -> None:
    h.sm.apply([ent(1, mk("a")), ent(2, nextseq("a"))])
    # a replay of 1..2 carrying other commands, then 3: only 3 applies
    results = h.sm.apply([ent(1, mk("b")), ent(2, nextseq("a")), ent(3, nextseq("a"), term=2)])
    assert results == [None, None, 2]
    assert h.sm.apply([ent(2, nextseq("a")), ent(3, nextseq("a"))]) == [None, None]
    assert h.sm.apply([]) == []
    assert h.sm.applied == (3, 2)
    assert h.sm.read([{"op": "buckets"}]) == [[b"a"]]


@pytest.mark.parametrize(
    ("indexes", "bad"),
    [([2], (2, 1)), ([1, 3], (3, 2)), ([2, 1], (2, 1)), ([1, 2, 2], (2, 3)), ([1, 1], (1, 2))],
)
def test_a_gap_or_disorder_is_refused_and_nothing_applies(
    h: Harness, indexes: list[int], bad: tuple[int, int]
) -> None:
    with pytest.raises(InvalidArgumentError) as exc:
        h.sm.apply([ent(i, mk(f"b{k}")) for k, i in enumerate(indexes)])
    assert (exc.value.details["index"], exc.value.details["expected"]) == bad
    assert h.sm.applied == (0, 0)
    assert h.sm.read([{"op": "buckets"}]) == [[]]


def test_a_gap_after_the_skipped_entries_is_refused(h: Harness) -> None:
    h.sm.apply([ent(1, mk("a")), ent(2, mk("b"))])
    with pytest.raises(InvalidArgumentError) as exc:
        h.sm.apply([ent(1, None), ent(4, mk("c"))])
    assert (exc.value.details["index"], exc.value.details["expected"]) == (4, 3)
    assert h.sm.applied == (2, 1)
    assert h.sm.read([{"op": "buckets"}]) == [[b"a", b"b"]]


def test_a_conf_change_entry_only_advances_the_applied_index(h: Harness) -> None:
    h.sm.apply([ent(1, mk("a"))])
    before = everything(h.sm)
    assert h.sm.apply([conf(2, term=2)]) == [None]
    assert h.sm.applied == (2, 2)
    assert h.sm.apply([conf(3, term=3), ent(4, None, term=3), conf(5, term=4)]) == [None] * 3
    assert h.sm.applied == (5, 4)
    assert everything(h.sm) == before
    assert h.sm.apply([ent(6, mk("b"), term=4)]) == [None]  # and the next one follows on


# --- exactly-once -------------------------------------------------------------------------------
def test_a_retry_returns_the_first_result_and_applies_once(h: Harness) -> None:
    h.sm.apply([ent(1, mk("a"))])
    first = once(nextseq("a"), "c", 1, ts=10)
    assert h.sm.apply([ent(2, first), ent(3, once(nextseq("a"), "c", 1, ts=11))]) == [1, 1]
    assert h.sm.apply([ent(4, first)]) == [1]  # a later run
    assert h.sm.apply([ent(5, once(nextseq("a"), "c", 2, ts=12))]) == [2]
    assert h.sm.apply([ent(6, once(nextseq("a"), "other", 1, ts=13))]) == [3]
    # the same (cid, seq) for another command: answered with the first result, not applied
    assert h.sm.apply([ent(7, once(put("a", b"k", b"v"), "c", 1, ts=14))]) == [1]
    assert get(h.sm, "a", b"k") is None
    assert h.sm.apply([ent(8, nextseq("a"))]) == [4]


def test_a_retry_of_a_failed_command_gets_the_first_error(h: Harness) -> None:
    h.sm.apply([ent(1, mk("a"))])
    cas = once(put("a", b"k", b"new", if_value=b"old"), "c", 1, ts=1)
    [first] = h.sm.apply([ent(2, cas)])
    assert isinstance(first, ConditionFailedError)
    h.sm.apply([ent(3, put("a", b"k", b"old"))])  # the condition would hold now
    [again] = h.sm.apply([ent(4, cas)])
    assert type(again) is ConditionFailedError
    assert again.details == {"current": None}
    assert get(h.sm, "a", b"k") == b"old"


def test_a_batch_is_deduplicated_whole(h: Harness) -> None:
    h.sm.apply([ent(1, mk("a"))])
    batch = once({"op": "batch", "ops": [nextseq("a"), put("a", b"k", b"v")]}, "c", 9, ts=1)
    assert h.sm.apply([ent(2, batch), ent(3, batch)]) == [[1, None], [1, None]]
    assert h.sm.apply([ent(4, nextseq("a"))]) == [2]


def test_expiry_follows_the_leader_stamped_clock(h: Harness) -> None:
    h.sm.apply([ent(1, mk("a"))])
    assert h.sm.apply([ent(2, once(nextseq("a"), "c", 1, ts=100))]) == [1]
    # live while clock <= ts + window
    assert h.sm.apply([ent(3, once(nextseq("a"), "c", 1, ts=100 + WINDOW))]) == [1]
    # a command without ts does not move the clock
    assert h.sm.apply([ent(4, once(nextseq("a"), "c", 1))]) == [1]
    # once the clock passes the window the retry is refused, never applied again ...
    first, retry = h.sm.apply(
        [ent(5, once(nextseq("a"), "z", 1, ts=101 + WINDOW)), ent(6, once(nextseq("a"), "c", 1, 0))]
    )
    assert first == 2 and isinstance(retry, SessionExpiredError)
    # ... a new seq of that client is applied
    assert h.sm.apply([ent(7, once(nextseq("a"), "c", 2, ts=0))]) == [3]
    # a stale ts never moves the clock back
    assert h.sm.apply([ent(8, once(nextseq("a"), "y", 1, ts=5))]) == [4]
    assert h.sm.apply([ent(9, once(nextseq("a"), "c", 2, ts=5))]) == [3]


def test_a_seq_below_its_client_s_highest_is_refused(h: Harness) -> None:
    h.sm.apply([ent(1, mk("a"))])
    results = h.sm.apply(
        [ent(2, once(nextseq("a"), "c", 5, ts=10)), ent(3, once(nextseq("a"), "c", 4, ts=10))]
    )
    assert results[0] == 1 and isinstance(results[1], SessionExpiredError)
    assert h.sm.apply([ent(4, once(nextseq("a"), "c", 6, ts=10))]) == [2]


def test_a_run_of_puts_refuses_a_seq_below_one_applied_earlier_in_the_run(h: Harness) -> None:
    """A run long enough for the real one's batch path, with one client's seqs out of order:
    a seq below one the run already applied is refused, as it is one command at a time."""
    h.sm.apply([ent(1, mk("a"))])
    seqs = [0, 1, 4, 2, 3, 5, *range(6, 6 + BATCH_PATH_MIN)]
    run = [ent(2 + i, once(put("a", b"k%d" % s, b"v"), "c", s)) for i, s in enumerate(seqs)]
    results = h.sm.apply(run)
    assert kinds(results[:6]) == [None, None, None, SessionExpiredError, SessionExpiredError, None]
    assert get(h.sm, "a", b"k2") is None and get(h.sm, "a", b"k5") == b"v"


def test_equal_content_gives_equal_hashes_across_both_kinds(tmp_path: Path) -> None:
    real = BucketStateMachine(tmp_path / "real", sync=False)
    twin = MemStateMachine()
    log = [
        mk("a"),
        mk(["a", "n"]),
        {"op": "put", "bucket": [b"a", b"n"], "key": b"k", "value": b"v"},
        {"op": "put", "bucket": [b"a"], "key": b"x", "value": b"y"},
        {"op": "put", "bucket": [b"a"], "key": b"m", "value": b"z"},
        nextseq("a"),
        mk("b"),
    ]
    entries = [ent(i, cmd) for i, cmd in enumerate(log, 1)]
    real.apply(entries)
    twin.apply(entries)
    assert real.content_hash() == twin.content_hash()
    more = [ent(8, {"op": "put", "bucket": [b"b"], "key": b"k", "value": b"v"})]
    twin.apply(more)
    assert real.content_hash()[1] != twin.content_hash()[1]
    real.apply(more)
    assert real.content_hash() == twin.content_hash()
    real.close()


def test_a_run_of_puts_answers_like_one_put_at_a_time(h: Harness) -> None:
    """Runs of at least BATCH_PATH_MIN puts to one bucket (the real one's batch path), plain
    and exactly-once, with a retry among them and a key that names a nested bucket."""
    h.sm.apply([ent(1, mk("a")), ent(2, mk(["a", "n"]))])
    keys = [b"k%d" % i for i in range(BATCH_PATH_MIN)]
    plain = [ent(3 + i, put("a", k, b"p")) for i, k in enumerate([*keys[:-1], b"n"])]
    assert kinds(h.sm.apply(plain)) == [*[None] * (BATCH_PATH_MIN - 1), IncompatibleValueError]
    run = [once(put("a", k, b"o"), "c", i, ts=i) for i, k in enumerate(keys)]
    base = 3 + BATCH_PATH_MIN
    assert h.sm.apply([ent(base + i, c) for i, c in enumerate(run)]) == [None] * len(run)
    base += len(run)
    retry = [
        once(put("a", keys[0], b"changed"), "c", 0, ts=40),  # c/0 again: not applied
        *run[1 : BATCH_PATH_MIN - 1],
        once(put("a", b"late", b"o"), "c", 99, ts=50),
    ]
    assert h.sm.apply([ent(base + i, c) for i, c in enumerate(retry)]) == [None] * len(retry)
    assert get(h.sm, "a", keys[0]) == b"o"
    assert get(h.sm, "a", b"late") == b"o"
    [missing] = h.sm.apply([ent(base + len(retry), once(put("nope", b"k", b"v"), "d", 1, ts=51))])
    assert isinstance(missing, BucketNotFoundError)


def test_key_limits_follow_the_bucket_ids(h: Harness, tmp_path: Path) -> None:
    """Bucket ids 1..255 take a 2-byte key prefix, 256 and up 3 bytes (of LMDB's 511): the
    257th bucket's keys and nested names are a byte shorter, also after a snapshot (which
    keeps the next id). And a create_bucket with if_not_exists that fails on such a name
    keeps the ancestor it created."""
    h.sm.apply([ent(i + 1, mk(f"b{i}")) for i in range(255)])  # ids 1..255
    sm = h.restore(h.sm.snapshot(tmp_path / "snaps"))
    results = sm.apply(
        [
            ent(256, mk("b255")),  # id 256
            ent(257, put("b0", b"k" * 509, b"v")),
            ent(258, put("b255", b"k" * 508, b"v")),
            ent(259, put("b255", b"k" * 509, b"v")),
            ent(260, mk(["b255", "n" * 509])),
            ent(261, mk(["p", "q" * 509], if_not_exists=True)),
        ]
    )
    assert norm(results) == [
        None,
        None,
        None,
        ("error", KeyTooLargeError, {"size": 509, "max": 508}),
        ("error", InvalidBucketNameError, {"size": 509, "max": 508}),
        ("error", InvalidBucketNameError, {"size": 509, "max": 508}),
    ]
    assert sm.read([{"op": "count", "bucket": "p"}]) == [0]  # p stayed


# --- batches ------------------------------------------------------------------------------------
@pytest.mark.parametrize("irreversible", [False, True])
def test_a_failed_batch_changes_nothing_and_the_run_goes_on(h: Harness, irreversible: bool) -> None:
    h.sm.apply([ent(1, mk("a")), ent(2, put("a", b"k", b"old")), ent(3, mk(["a", "n"]))])
    before = everything(h.sm)
    ops = [
        put("a", b"k", b"new"),
        put("a", b"fresh", b"x"),
        delete("a", b"k"),
        mk(["a", "child"]),
        put(["a", "child"], b"c", b"1"),
    ]
    if irreversible:
        ops += [nextseq("a"), rm(["a", "n"]), rm(["a", "child"]), put("a", b"n", b"now a key")]
    ops.append(put("a", b"k", b"z", if_value=b"nope"))  # fails
    results = h.sm.apply(
        [
            ent(4, {"op": "batch", "ops": ops}),
            ent(5, nextseq("a")),
            ent(6, mk(["a", "later"])),
        ]
    )
    assert norm(results) == [
        # the condition sees what the batch did before it (k deleted) ...
        ("error", ConditionFailedError, {"current": None, "index": len(ops) - 1}),
        1,  # ... and all of it is undone: the batch's next_sequence too
        None,
    ]
    after = everything(h.sm)
    h.sm.apply([ent(7, nextseq("a")), ent(8, rm(["a", "later"]))])
    assert everything(h.sm) == before != after
    assert kinds(h.sm.apply([ent(9, put("a", b"n", b"v"))])) == [IncompatibleValueError]


def test_a_batch_error_names_the_failing_op(h: Harness) -> None:
    h.sm.apply([ent(1, mk("a"))])
    batch = {"op": "batch", "ops": [put("a", b"k", b"v"), put("nope", b"k", b"v")]}
    [res] = h.sm.apply([ent(2, batch)])
    assert norm(res) == ("error", BucketNotFoundError, {"path": [b"nope"], "index": 1})
    # a batch whose second op has an unknown opcode (clients cannot send one; a log can)
    bad = pack([1, None, None, None, [7, [[6, [b"a"]], [9, [b"a"]]]]])
    [res] = h.sm.apply([ent(3, bad)])
    assert type(res) is UnknownCommandError and res.details["index"] == 1
    assert get(h.sm, "a", b"k") is None


# --- reads --------------------------------------------------------------------------------------
def test_reads_see_the_writes(h: Harness) -> None:
    h.sm.apply(
        [
            ent(1, mk("a")),
            *[ent(2 + i, put("a", k, b"v" + k)) for i, k in enumerate([b"k1", b"k2", b"k3", b"z"])],
            ent(6, mk(["a", "k22"])),
            ent(7, put(["a", "k22"], b"x", b"1")),
        ]
    )
    page1, page2, rev, ranged, get_k1, get_none, get_bucket, count, names = h.sm.read(
        [
            {"op": "scan", "bucket": "a", "prefix": b"k", "limit": 2},
            {"op": "scan", "bucket": "a", "prefix": b"k", "limit": 2, "after": b"\x01k2"},
            {"op": "scan", "bucket": "a", "reverse": True, "limit": 3},
            {"op": "scan", "bucket": ["a"], "start": "k2", "end": b"k3"},
            {"op": "get", "bucket": "a", "key": "k1"},
            {"op": "get", "bucket": "a", "key": b"absent"},
            {"op": "get", "bucket": "a", "key": b"k22"},  # a nested bucket reads as None
            {"op": "count", "bucket": "a"},
            {"op": "buckets", "bucket": "a", "read": "lease", "max_lag": 3},
        ]
    )
    page1, page2, rev, ranged = (norm(p) for p in (page1, page2, rev, ranged))
    assert page1 == {"items": [[b"k1", b"vk1"], [b"k2", b"vk2"]], "next": b"\x01k2"}
    assert page2 == {"items": [[b"k22", None], [b"k3", b"vk3"]], "next": None}
    assert rev == {"items": [[b"z", b"vz"], [b"k3", b"vk3"], [b"k22", None]], "next": b"\x01k22"}
    assert ranged == {"items": [[b"k2", b"vk2"], [b"k22", None]], "next": None}
    assert (get_k1, get_none, get_bucket, count, names) == (b"vk1", None, None, 5, [b"k22"])
    [rest] = h.sm.read([{"op": "scan", "bucket": "a", "reverse": True, "after": rev["next"]}])
    assert rest == {"items": [[b"k2", b"vk2"], [b"k1", b"vk1"]], "next": None, "index": 7}


def test_read_errors_are_in_place(h: Harness) -> None:
    h.sm.apply([ent(1, mk("a")), ent(2, put("a", b"k", b"v"))])
    results = h.sm.read(
        [
            {"op": "get", "bucket": "nope", "key": b"k"},
            {"op": "frobnicate"},
            {"op": "get", "bucket": "a"},
            {"op": "scan", "bucket": "a", "limit": 0},
            {"op": "scan", "bucket": "a", "after": b"not a token"},
            {"op": "scan", "bucket": "a", "prefix": b"k", "start": b"a"},
            {"op": "get", "bucket": "a", "key": b""},
            {"op": "get", "bucket": "a", "key": b"k" * 510},
            {"op": "count", "bucket": ["a", "x/y"]},
            "not a map",
            {"op": "get", "bucket": "a", "key": b"k"},
        ]
    )
    assert kinds(results) == [
        BucketNotFoundError,
        BadRequestError,
        BadRequestError,
        InvalidArgumentError,
        InvalidArgumentError,
        BadRequestError,
        KeyRequiredError,
        KeyTooLargeError,
        InvalidBucketNameError,
        BadRequestError,
        b"v",
    ]


# --- snapshots ----------------------------------------------------------------------------------
def test_a_snapshot_reopens_with_the_same_reads_and_applied_index(
    h: Harness, tmp_path: Path
) -> None:
    h.sm.apply(
        [
            ent(1, mk(["a", "n"], if_not_exists=True)),
            ent(2, put(["a", "n"], b"k", b"v")),
            ent(3, once(nextseq("a"), "c", 1, ts=7)),
            ent(4, nextseq(["a", "n"])),
            ent(5, mk("b"), term=2),
            ent(6, rm("b"), term=2),
            ent(7, once(nextseq("a"), "d", 1, ts=8 + WINDOW), term=2),  # c/1 expires
        ]
    )
    h.sm.apply([conf(8, term=3)])
    parent = tmp_path / "snaps"
    info = h.sm.snapshot(parent)
    assert (info.index, info.term) == (8, 3)
    assert info.path.parent == parent / f"{8:020d}-3"
    assert (info.path.parent / META_FILE).is_file()
    assert file_sha256(info.path) == (info.size, info.sha256)
    assert h.sm.snapshot(parent) == info  # nothing applied since: the same snapshot
    h.sm.apply([ent(9, put(["a", "n"], b"after", b"snapshot"), term=3)])  # not in it
    again = h.restore(info)
    assert again.applied == (8, 3)
    assert everything(again) == everything(h.restore(info))
    assert get(again, ["a", "n"], b"after") is None
    assert get(again, ["a", "n"], b"k") == b"v"
    # what the snapshot holds goes on as the original does: sequences, the dedup table
    # (d/1 is live) and its clock (which expired c/1, though this entry's ts would not: the
    # retry is refused; e/1 is stamped with it, still live at 8 + 2 * WINDOW)
    follow = [
        ent(9, put(["a", "n"], b"after", b"snapshot"), term=3),
        ent(10, once(nextseq("a"), "d", 1, ts=9), term=3),
        ent(11, once(nextseq("a"), "c", 1, ts=8), term=3),
        ent(12, once(nextseq("a"), "e", 1), term=3),
        ent(13, once(nextseq("a"), "f", 1, ts=8 + 2 * WINDOW), term=3),
        ent(14, once(nextseq("a"), "e", 1), term=3),
        ent(15, nextseq(["a", "n"]), term=3),
        ent(16, mk("d"), term=3),
    ]
    want = [None, 2, SessionExpiredError, 3, 4, 3, 2, None]
    assert kinds(again.apply(follow)) == want
    assert kinds(h.sm.apply(follow)) == want  # 9 was applied: skipped
    assert everything(again) == everything(h.sm)
    assert again.applied == h.sm.applied == (16, 3)


def test_an_empty_state_snapshots_and_reopens(h: Harness, tmp_path: Path) -> None:
    info = h.sm.snapshot(tmp_path / "snaps", rate=1e9)
    assert (info.index, info.term) == (0, 0)
    again = h.restore(info)
    assert again.applied == (0, 0)
    assert everything(again) == everything(h.sm)


def test_a_snapshot_that_does_not_match_its_info_is_refused(h: Harness, tmp_path: Path) -> None:
    h.sm.apply([ent(1, mk("a"))])
    info = h.sm.snapshot(tmp_path / "snaps")
    with pytest.raises(ChecksumMismatchError):
        h.restore(dataclasses.replace(info, sha256="0" * 64))
    with pytest.raises(ChecksumMismatchError):
        h.restore(dataclasses.replace(info, size=info.size + 1))


# --- closing ------------------------------------------------------------------------------------
def test_closed_after_close(h: Harness) -> None:
    h.sm.apply([ent(1, mk("a"))])
    h.sm.sync()
    assert not h.sm.closed
    h.sm.close()
    assert h.sm.closed
    h.sm.close()  # idempotent
    assert h.sm.closed
    assert h.sm.applied == (1, 1)
    assert h.sm.apply([ent(1, mk("b"))]) == [None]  # nothing to apply: not refused
    assert h.sm.read([]) == []
    with pytest.raises(TxClosedError):
        h.sm.apply([ent(2, mk("b"))])
    with pytest.raises(TxClosedError):
        h.sm.read([{"op": "buckets"}])
    with pytest.raises(TxClosedError):
        h.sm.sync()


# --- both kinds side by side --------------------------------------------------------------------
PATHS = [(b"a",), (b"a",), (b"b",), (b"a", b"n"), (b"a", b"n", b"m"), (b"c", b"d")]
EDGE_PATHS = [(b"a", b"k1"), (b"x/y",), (b"",)]  # a key, a name with '/', an empty name
KEYS = [b"k1", b"k2", b"k1", b"k2", b"n", b"", b"K" * 509, b"K" * 510]
VALUES = [b"v1", b"v2", b"v1", b"v2", b"", b"V" * (MAX_VALUE + 1)]
paths = st.sampled_from(PATHS + EDGE_PATHS)
keys = st.sampled_from(KEYS)
values = st.sampled_from(VALUES)


@st.composite
def edge_ops(draw: Any) -> dict[str, Any]:
    """Commands over paths, keys and values that the engine refuses as well as accepts."""
    op = draw(st.sampled_from(["put", "delete", "create_bucket", "delete_bucket", "next_seq"]))
    path = draw(paths)
    if op == "put":
        cmd = put(path, draw(keys), draw(values))
        cond = draw(st.sampled_from(["none", "if_value", "if_absent"]))
        if cond == "if_value":
            cmd["if_value"] = draw(values)
        elif cond == "if_absent":
            cmd["if_absent"] = True
        return cmd
    if op == "delete":
        cmd = delete(path, draw(keys))
        if draw(st.booleans()):
            cmd["if_value"] = draw(values)
        return cmd
    if op == "create_bucket":
        return mk(path, if_not_exists=draw(st.booleans()))
    if op == "delete_bucket":
        return rm(path)
    return nextseq(path)


edge_cmds = st.one_of(
    edge_ops(), st.builds(lambda ops: {"op": "batch", "ops": ops}, st.lists(edge_ops(), max_size=4))
)


@st.composite
def stamped(draw: Any) -> dict[str, Any]:
    """A command with, or without, an exactly-once pair (from a small pool, so pairs repeat)
    and a leader's ts (so records expire)."""
    cmd = dict(draw(any_ops if draw(st.booleans()) else edge_cmds))  # one_of would flatten
    if draw(st.booleans()):
        cmd["cid"] = draw(st.sampled_from(["c1", "c2"]))
        cmd["seq"] = draw(st.integers(0, 7))
    if draw(st.booleans()):
        cmd["ts"] = draw(st.integers(0, 3 * WINDOW))
    return cmd


@st.composite
def put_runs(draw: Any) -> list[Any]:
    """Runs of BATCH_PATH_MIN or more puts to one one-name bucket, all plain or all
    exactly-once: what the real one's batch path takes."""
    bucket = draw(st.sampled_from([b"a", b"b"]))
    n = draw(st.integers(BATCH_PATH_MIN, BATCH_PATH_MIN + 4))
    exactly_once = draw(st.booleans())
    out = []
    for _ in range(n):
        cmd = put(bucket, draw(keys), draw(values))
        if exactly_once:
            cmd = once(cmd, draw(st.sampled_from(["c1", "c2"])), draw(st.integers(0, 5)))
        if draw(st.booleans()):
            cmd["ts"] = draw(st.integers(0, 3 * WINDOW))
        out.append(cmd)
    return out


entry_specs = st.one_of(
    stamped(),
    stamped(),
    stamped(),
    st.just("noop"),
    st.just("conf"),
    st.sampled_from([b"\xc1", pack([9, None, None, None, [0]])]),
)

read_requests = st.one_of(
    st.builds(lambda p, k: {"op": "get", "bucket": list(p), "key": k}, paths, keys),
    st.builds(lambda p: {"op": "count", "bucket": list(p)}, paths),
    st.builds(lambda p: {"op": "buckets", "bucket": list(p)}, paths),
    st.just({"op": "buckets"}),
    st.builds(
        lambda p, bounds, limit, reverse, after: {
            "op": "scan",
            "bucket": list(p),
            **bounds,
            "limit": limit,
            "reverse": reverse,
            "after": after,
        },
        paths,
        st.sampled_from([{}, {"prefix": b"k"}, {"start": b"k2"}, {"start": b"k", "end": b"n"}]),
        st.sampled_from([None, 0, 1, 2]),
        st.booleans(),
        st.sampled_from([None, b"\x01k1", b"\x01n", b"\x01", b"zz"]),
    ),
    st.just({"op": "get", "bucket": "a"}),
)


@st.composite
def steps(draw: Any) -> tuple[str, list[Any], int]:
    """One step of a program: ("apply", entry specs, how many applied entries to replay
    first), ("read", requests, 0) or ("term", [], 0) (the leader's term goes up)."""
    kind = draw(st.sampled_from(["apply"] * 6 + ["puts", "read", "read", "term"]))
    if kind == "apply":
        specs = draw(st.lists(entry_specs, min_size=1, max_size=8))
        return "apply", specs, draw(st.integers(0, 3))
    if kind == "puts":
        return "apply", draw(put_runs()), 0
    if kind == "read":
        return "read", draw(st.lists(read_requests, min_size=1, max_size=6)), 0
    return "term", [], 0


def _split(run: list[Entry], cuts: list[int]) -> list[list[Entry]]:
    """Returns ``run`` cut at the positions ``cuts`` (each apply call gets one piece)."""
    bounds = sorted({0, len(run), *[c % (len(run) + 1) for c in cuts]})
    return [run[a:b] for a, b in itertools.pairwise(bounds) if b > a]


@settings(max_examples=100, deadline=None)
@given(program=st.lists(steps(), max_size=12), cuts=st.lists(st.integers(0, 20), max_size=3))
def test_both_kinds_answer_random_runs_alike(
    program: list[tuple[str, list[Any], int]], cuts: list[int]
) -> None:
    """Random runs of commands (with conditions, batches, nested buckets, exactly-once pairs
    that repeat and expire, refused names, keys and values, undecodable entries, conf
    changes, replays of applied entries), applied to both kinds, give the same results, the
    same reads, the same reported changes and the same contents. The real one gets each run
    cut in pieces (its one command and batch paths), the twin gets it whole."""
    with tempfile.TemporaryDirectory(prefix="sm-conformance-") as d:
        real = BucketStateMachine(Path(d) / "s", sync=False, initial_map_size=1 << 20, **OPTS)
        twin = MemStateMachine(**OPTS)
        real_changes: list[Change] = []
        twin_changes: list[Change] = []
        real.report, twin.report = real_changes.extend, twin_changes.extend
        try:
            prelude = [
                ent(i + 1, cmd)
                for i, cmd in enumerate(
                    [
                        mk(["a", "n", "m"], if_not_exists=True),
                        mk("b"),
                        put("a", b"k1", b"v1"),
                        put("a", b"k2", b"v2"),
                        put(["a", "n"], b"k1", b"v1"),
                        put("b", b"k2", b"v1"),
                        nextseq("a"),
                    ]
                )
            ]
            assert real.apply(prelude) == twin.apply(prelude)
            index, term = len(prelude), 1
            history: list[Entry] = list(prelude)
            for kind, items, replay in program:
                if kind == "term":
                    term += 1
                    continue
                if kind == "read":
                    assert norm(real.read(items)) == norm(twin.read(items)), items
                    continue
                replayed = mk("replayed")  # would change the state if it were applied again
                run = [
                    e._replace(data=commands.encode(replayed))
                    for e in history[max(0, len(history) - replay) :]
                ]
                for spec in items:
                    index += 1
                    if spec == "noop":
                        e = Entry(term, index, EntryType.NORMAL, b"")
                    elif spec == "conf":
                        e = conf(index, term)
                    elif isinstance(spec, bytes):
                        e = Entry(term, index, EntryType.NORMAL, spec)
                    else:
                        e = Entry(term, index, EntryType.NORMAL, commands.encode(spec))
                    run.append(e)
                    history.append(e)
                got_real: list[Any] = []
                for piece in _split(run, cuts):
                    got_real += real.apply(piece)
                got_twin = twin.apply(run)
                assert norm(got_real) == norm(got_twin), [e.data for e in run]
                assert real_changes == twin_changes, [e.data for e in run]
                assert real.applied == twin.applied == (index, history[-1].term)
                assert real.clock_ms == twin.clock_ms
            assert dump(real.db) == twin.dump()
            assert everything(real) == everything(twin)
        finally:
            real.close()
            twin.close()


# --- what the change feed needs -------------------------------------------------------------
def test_a_scan_reports_the_applied_index_it_read_at(h: Harness) -> None:
    h.sm.apply([ent(1, mk("a")), ent(2, put("a", b"k", b"v")), ent(3, None)])
    [page] = h.sm.read([{"op": "scan", "bucket": "a"}])
    assert page == {"items": [[b"k", b"v"]], "next": None, "index": 3}


@pytest.mark.parametrize("run", [1, 2, 12])  # one entry, the general path, the batch path
def test_repeated_names_the_writes_a_retry_did_not_apply_again(h: Harness, run: int) -> None:
    h.sm.apply([ent(1, mk("a"))])
    first = [ent(2 + i, once(put("a", b"k%d" % i, b"v"), "c1", i + 1)) for i in range(run)]
    h.sm.apply(first)
    assert h.sm.repeated == []
    # the same writes again (a client's retries), then one new write of the same client
    again = [ent(2 + run + i, once(put("a", b"k%d" % i, b"w"), "c1", i + 1)) for i in range(run)]
    new = ent(2 + 2 * run, once(put("a", b"new", b"v"), "c1", run + 1))
    if run == 1:
        h.sm.apply(again)
        assert h.sm.repeated == [3]
        h.sm.apply([new])
        assert h.sm.repeated == []
    else:
        h.sm.apply([*again, new])
        assert h.sm.repeated == [e.index for e in again]
    assert get(h.sm, "a", b"k0") == b"v"
    assert get(h.sm, "a", b"new") == b"v"


@pytest.mark.parametrize("split", [False, True])  # one apply (the general path); one each
def test_the_changes_reported_follow_the_rules_of_the_feed(h: Harness, split: bool) -> None:
    got: list[Change] = []
    h.sm.report = got.extend
    a, n = (b"a",), (b"a", b"n")
    cmds = [
        mk("a"),  # 1: created
        put("a", b"k", b"v1"),  # 2: new key, no prev
        put("a", b"k", b"v2"),  # 3: prev v1
        delete("a", b"absent"),  # 4: found nothing: none
        delete("a", b"k"),  # 5: prev v2
        put("a", b"k", b"v3", if_absent=True),  # 6: held
        put("a", b"k", b"v4", if_value=b"v3"),  # 7: held, prev v3
        put("a", b"k", b"v5", if_value=b"nope"),  # 8: failed: none
        delete("a", b"k", if_value=b"v4"),  # 9: held, prev v4
        mk(["a", "n", "m"], if_not_exists=True),  # 10: one change, for the path named
        mk("a", if_not_exists=True),  # 11: existed: none
        mk("a"),  # 12: exists: failed, none
        nextseq("a"),  # 13: none
        {"op": "batch", "ops": [put("a", b"b", b"1"), put("a", b"b", b"2"), rm(["a", "n"])]},
        {"op": "batch", "ops": [put("a", b"c", b"1"), put("nope", b"k", b"v")]},  # 15: none
        once(put("a", b"e", b"1"), "c1", 1),  # 16
        once(put("a", b"e", b"2"), "c1", 1),  # 17: a retry: none
    ]
    ents = [ent(i + 1, cmd) for i, cmd in enumerate(cmds)]
    for part in [[e] for e in ents] if split else [ents]:
        h.sm.apply(part)
    assert got == [
        (1, 0, "create_bucket", a, None, None, None),
        (2, 0, "put", a, b"k", b"v1", None),
        (3, 0, "put", a, b"k", b"v2", b"v1"),
        (5, 0, "delete", a, b"k", None, b"v2"),
        (6, 0, "put", a, b"k", b"v3", None),
        (7, 0, "put", a, b"k", b"v4", b"v3"),
        (9, 0, "delete", a, b"k", None, b"v4"),
        (10, 0, "create_bucket", (b"a", b"n", b"m"), None, None, None),
        (14, 0, "put", a, b"b", b"1", None),
        (14, 1, "put", a, b"b", b"2", b"1"),
        (14, 2, "delete_bucket", n, None, None, None),
        (16, 0, "put", a, b"e", b"1", None),
    ]


@pytest.mark.parametrize("exactly_once", [False, True])
def test_a_run_of_puts_reports_each_with_its_previous_value(h: Harness, exactly_once: bool) -> None:
    got: list[Change] = []
    h.sm.report = got.extend
    h.sm.apply([ent(1, mk("a")), ent(2, put("a", b"k0", b"old"))])
    n = BATCH_PATH_MIN + 2  # the real one's batch path
    cmds = [put("a", b"k%d" % (i % 3), b"v%d" % i) for i in range(n)]
    if exactly_once:
        cmds = [once(c, "c1", i + 1) for i, c in enumerate(cmds)]
    h.sm.apply([ent(3 + i, c) for i, c in enumerate(cmds)])
    prev: dict[bytes, bytes | None] = {b"k0": b"old", b"k1": None, b"k2": None}
    want: list[Change] = [(1, 0, "create_bucket", (b"a",), None, None, None)]
    want.append((2, 0, "put", (b"a",), b"k0", b"old", None))
    for i in range(n):
        key = b"k%d" % (i % 3)
        want.append((3 + i, 0, "put", (b"a",), key, b"v%d" % i, prev[key]))
        prev[key] = b"v%d" % i
    assert got == want


# --- prepare: an entry applied ahead of its commit ------------------------------------------------
def _prepare(h: Harness, entries: list[Entry]) -> list[Any] | None:
    """``h.sm.prepare(entries)`` for one command entry that continues the applied index:
    the real one prepares it (its results), the twin declines (None; the Protocol allows
    either)."""
    results = h.sm.prepare(entries)
    assert (results is not None) is (h.kind == "real")
    return results


def test_a_prepared_entry_is_invisible_until_its_apply_commits_it(h: Harness) -> None:
    got: list[Change] = []
    h.sm.report = got.extend
    h.sm.apply([ent(1, mk("a")), ent(2, put("a", b"k", b"old"))])
    got.clear()
    e = ent(3, once(put("a", b"k", b"new"), "c", 1, ts=50))
    _prepare(h, [e])
    # nothing of it is observable yet: reads, the applied index, the clock, the feed
    assert get(h.sm, "a", b"k") == b"old"
    assert h.sm.applied == (2, 1) and h.sm.clock_ms == 0 and got == []
    assert h.sm.apply([e]) == [None]
    assert get(h.sm, "a", b"k") == b"new"
    assert h.sm.applied == (3, 1) and h.sm.clock_ms == 50 and h.sm.repeated == []
    assert got == [(3, 0, "put", (b"a",), b"k", b"new", b"old")]
    # and exactly once: its retry is answered, not applied again
    retry = ent(4, once(put("a", b"k", b"again"), "c", 1, ts=51))
    _prepare(h, [retry])
    assert h.sm.apply([retry]) == [None] and h.sm.repeated == [4]
    assert get(h.sm, "a", b"k") == b"new"


def test_a_prepared_entry_replaced_at_its_index_is_rolled_back(h: Harness) -> None:
    """A leader prepared its entry, lost its leadership, and the next leader's entry took
    the index: the apply of that entry (another term) rolls the prepared one back."""
    h.sm.apply([ent(1, mk("a"))])
    _prepare(h, [ent(2, put("a", b"lost", b"x"), term=1)])
    assert h.sm.apply([ent(2, None, term=2), ent(3, put("a", b"kept", b"y"), term=2)]) == [
        None,
        None,
    ]
    assert get(h.sm, "a", b"lost") is None and get(h.sm, "a", b"kept") == b"y"
    assert h.sm.applied == (3, 2)


def test_a_run_that_begins_with_the_prepared_entry_applies_it_and_the_rest(h: Harness) -> None:
    h.sm.apply([ent(1, mk("a")), ent(2, once(nextseq("a"), "c", 1, ts=5))])
    assert _prepare(h, [ent(3, once(nextseq("a"), "c", 2, ts=6))]) in ([2], None)
    run = [
        ent(3, once(nextseq("a"), "c", 2, ts=6)),
        ent(4, once(nextseq("a"), "c", 1, ts=7)),  # a retry
        ent(5, nextseq("a")),
        ent(6, once(nextseq("a"), "c", 2, ts=8)),  # a retry of the prepared one
    ]
    assert h.sm.apply(run) == [2, 1, 3, 2]
    assert h.sm.repeated == [4, 6]
    assert h.sm.applied == (6, 1) and h.sm.clock_ms == 8


def test_an_entry_already_applied_leaves_the_prepared_one_for_its_own_apply(h: Harness) -> None:
    h.sm.apply([ent(1, mk("a"))])
    e = ent(2, put("a", b"k", b"v"))
    _prepare(h, [e])
    assert h.sm.apply([ent(1, mk("a"))]) == [None]  # skipped: already applied
    assert h.sm.apply([e]) == [None]
    assert get(h.sm, "a", b"k") == b"v"


@pytest.mark.parametrize(
    "entries",
    [
        [ent(3, put("a", b"k", b"v"))],  # a gap
        [ent(1, mk("a"))],  # applied already
        [ent(2, put("a", b"k", b"v")), ent(3, put("a", b"j", b"v"))],  # more than one
        [ent(2, None)],  # a no-op
        [conf(2)],
        [ent(2, b"\xc1")],  # undecodable
        [],
    ],
)
def test_prepare_declines_what_is_not_one_command_entry_next_in_line(
    h: Harness, entries: list[Entry]
) -> None:
    h.sm.apply([ent(1, mk("a"))])
    assert h.sm.prepare(entries) is None
    assert h.sm.apply([ent(2, put("a", b"k", b"v"))]) == [None]
    assert get(h.sm, "a", b"k") == b"v"


def test_a_failed_command_prepares_with_its_error_as_its_result(h: Harness) -> None:
    h.sm.apply([ent(1, mk("a"))])
    e = ent(2, once(put("nope", b"k", b"v"), "c", 1))
    ahead = _prepare(h, [e])
    [res] = h.sm.apply([e])
    assert isinstance(res, BucketNotFoundError)
    assert ahead is None or ahead == [res]
    assert kinds(h.sm.apply([ent(3, once(put("a", b"k", b"v"), "c", 1))])) == [BucketNotFoundError]


def test_a_second_prepare_or_a_close_rolls_the_first_back(h: Harness) -> None:
    h.sm.apply([ent(1, mk("a"))])
    _prepare(h, [ent(2, put("a", b"first", b"v"), term=1)])
    _prepare(h, [ent(2, put("a", b"second", b"v"), term=2)])
    assert h.sm.apply([ent(2, put("a", b"second", b"v"), term=2)]) == [None]
    assert get(h.sm, "a", b"first") is None and get(h.sm, "a", b"second") == b"v"
    _prepare(h, [ent(3, put("a", b"third", b"v"))])
    h.sm.close()
    if h.kind == "real":
        again = h._track(BucketStateMachine(h.root / "state", sync=False, **OPTS))
        assert again.applied == (2, 2) and get(again, "a", b"third") is None
        assert again.apply([ent(3, put("a", b"third", b"w"))]) == [None]
