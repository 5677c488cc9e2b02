"""One ``BucketStateMachine.apply()`` is exactly ONE LMDB write transaction, on every path.

The applied record must be written in the transaction that writes the data it covers: a
crash between two transactions would leave data applied but not counted (replayed twice on
restart) or counted but not applied (lost). The SIGKILL test (``test_fsm_crash``) almost
never lands between two such transactions, so these tests pin the count instead: LMDB's
``last_txnid`` rises by one per committed write transaction, and an apply must raise it by
exactly one. Each case also checks that ``apply`` took the path it is meant to cover, so
that a change of the paths' conditions cannot quietly turn one case into another.

LMDB does not commit a write transaction that changed nothing (``last_txnid`` stays), so a
case whose commands write nothing (a retried exactly-once command, a failing batch on its
own) would also pass with the record in a second transaction; it has nothing to tear apart.
The runs that mix such commands with writes are the ones that guard them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from boltraft.errors import ConditionFailedError, MalformedCommandError
from boltraft.raft.types import Entry, EntryType
from boltraft.storage import commands
from boltraft.storage.fsm import BATCH_PATH_MIN, BucketStateMachine

# The methods of BucketStateMachine that open the transaction of one apply, by path.
PATHS = ("_apply_one", "_commit_plain_puts", "_commit_puts", "_commit")


def ent(index: int, cmd: dict[str, Any] | bytes | None) -> Entry:
    """Returns a NORMAL entry of term 1 carrying ``cmd`` (encoded), raw bytes, or a no-op."""
    if cmd is None:
        data = b""
    elif isinstance(cmd, bytes):
        data = cmd
    else:
        data = commands.encode(cmd)
    return Entry(1, index, EntryType.NORMAL, data)


def put(key: bytes, value: bytes = b"v", **extra: Any) -> dict[str, Any]:
    return {"op": "put", "bucket": "a", "key": key, "value": value, **extra}


def failing_batch() -> dict[str, Any]:
    """Returns a batch whose last op fails, after ops that write (its savepoint rolls back)."""
    return {
        "op": "batch",
        "ops": [
            put(b"in-batch"),
            {"op": "next_sequence", "bucket": "a"},
            put(b"k0", b"z", if_value=b"not the value"),
        ],
    }


def _get(sm: BucketStateMachine, key: bytes) -> bytes | None:
    with sm.db.view() as tx:
        return tx.bucket("a").get(key)


def last_txnid(sm: BucketStateMachine) -> int:
    return sm.db.env.info()["last_txnid"]


@pytest.fixture
def sm(tmp_path: Path) -> Iterator[BucketStateMachine]:
    machine = BucketStateMachine(tmp_path / "state")
    machine.apply(
        [
            ent(1, {"op": "create_bucket", "bucket": "a"}),
            ent(2, put(b"k0", cid=b"old", seq=1, ts=10)),  # recorded for dedup
        ]
    )
    yield machine
    machine.close()


def _spy(sm: BucketStateMachine, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Returns the list that records, in order, which of ``PATHS`` each apply goes through."""
    taken: list[str] = []
    for name in PATHS:
        method = getattr(sm, name)

        def spy(*args: Any, _name: str = name, _method: Any = method) -> Any:
            taken.append(_name)
            return _method(*args)

        monkeypatch.setattr(sm, name, spy)
    return taken


Case = Callable[[int], list[Entry]]  # the entries of one apply, given the first index

CASES: dict[str, tuple[Case, str]] = {
    # one command: what a lightly loaded node applies
    "one_plain_put": (lambda i: [ent(i, put(b"k1"))], "_apply_one"),
    "one_exactly_once_put": (lambda i: [ent(i, put(b"k1", cid=b"c", seq=1, ts=20))], "_apply_one"),
    "one_exactly_once_retry": (
        lambda i: [ent(i, put(b"k0", b"again", cid=b"old", seq=1, ts=20))],
        "_apply_one",
    ),
    "one_create_bucket": (
        lambda i: [ent(i, {"op": "create_bucket", "bucket": ["a", "n"]})],
        "_apply_one",
    ),
    "one_failing_batch": (lambda i: [ent(i, failing_batch())], "_apply_one"),
    # the batch path: a run of puts to one bucket, all plain or all exactly-once
    "batch_of_plain_puts": (
        lambda i: [ent(i + n, put(b"p%d" % n)) for n in range(BATCH_PATH_MIN)],
        "_commit_plain_puts",
    ),
    "batch_of_exactly_once_puts": (
        lambda i: [
            ent(i + n, put(b"e%d" % n, cid=b"c", seq=100 + n, ts=20 + n))
            for n in range(BATCH_PATH_MIN)
        ],
        "_commit_puts",
    ),
    "batch_of_exactly_once_puts_with_a_retry": (  # looked up one by one, same transaction
        lambda i: [
            ent(i + n, put(b"e%d" % n, cid=b"old" if n == 3 else b"c", seq=1 if n == 3 else n))
            for n in range(BATCH_PATH_MIN)
        ],
        "_commit_puts",
    ),
    # the general path
    "general_mixed_run": (
        lambda i: [
            ent(i, None),
            ent(i + 1, {"op": "create_bucket", "bucket": ["a", "m"]}),
            ent(i + 2, put(b"g1")),
            ent(i + 3, put(b"g2")),
            Entry(1, i + 4, EntryType.CONF_CHANGE, b"\x01"),
            ent(i + 5, {"op": "next_sequence", "bucket": "a", "cid": b"c", "seq": 7}),
            ent(i + 6, {"op": "delete", "bucket": "a", "key": b"k0"}),
            ent(i + 7, put(b"k0", b"again", cid=b"old", seq=1)),
        ],
        "_commit",
    ),
    "general_run_with_a_failing_batch": (
        lambda i: [ent(i, put(b"before")), ent(i + 1, failing_batch()), ent(i + 2, put(b"after"))],
        "_commit",
    ),
    "general_run_with_a_malformed_command": (
        lambda i: [ent(i, put(b"g1")), ent(i + 1, b"\xc1 not msgpack"), ent(i + 2, put(b"g2"))],
        "_commit",
    ),
    "general_run_of_no_ops": (lambda i: [ent(i, None), ent(i + 1, None)], "_commit"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_apply_is_one_lmdb_write_transaction(
    sm: BucketStateMachine, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    """Every path of ``apply`` commits the data and the applied record together, once."""
    make, path = CASES[case]
    entries = make(sm.applied[0] + 1)
    taken = _spy(sm, monkeypatch)
    before = last_txnid(sm)
    results = sm.apply(entries)
    assert last_txnid(sm) - before == 1, f"{case}: one apply, one write transaction"
    assert taken == [path]
    assert sm.applied == (entries[-1].index, 1)
    with sm.db.view() as tx:  # the applied record is in the committed state
        assert tx.state_record() is not None
    if "failing_batch" in case:  # the batch's savepoint rolled back inside the one txn
        assert any(isinstance(r, ConditionFailedError) for r in results)
        assert _get(sm, b"in-batch") is None
    if "malformed" in case:
        assert isinstance(results[1], MalformedCommandError)
    if "retry" in case:  # the retried put answered from its record, not applied again
        assert _get(sm, b"k0") == b"v" and _get(sm, b"e3") is None


def test_an_apply_of_applied_entries_writes_nothing(sm: BucketStateMachine) -> None:
    """Entries at or below the applied index are skipped: no transaction at all."""
    before = last_txnid(sm)
    assert sm.apply([ent(1, {"op": "create_bucket", "bucket": "a"}), ent(2, None)]) == [None, None]
    assert last_txnid(sm) == before
