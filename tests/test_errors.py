"""The error tree: stable codes, wire round trips, and robustness of from_wire."""

from __future__ import annotations

import pickle

import pytest

from boltraft import errors


def test_every_class_has_a_unique_code_and_round_trips() -> None:
    table = errors.error_codes()
    assert len(table) == len(set(table.values()))
    for code, cls in table.items():
        err = cls("boom", answer=42)
        assert err.code == code
        back = errors.BoltraftError.from_wire(err.to_wire())
        assert type(back) is cls
        assert (back.code, back.message, back.details) == (code, "boom", {"answer": 42})


def test_subclasses_share_one_root() -> None:
    for cls in errors.error_codes().values():
        assert issubclass(cls, errors.BoltraftError)
    assert issubclass(errors.NotLeaderError, errors.ClusterError)
    assert issubclass(errors.KeyTooLargeError, errors.StoreError)


def test_unknown_code_keeps_code_and_message() -> None:
    err = errors.BoltraftError.from_wire({"code": "from_the_future", "message": "m"})
    assert type(err) is errors.BoltraftError
    assert (err.code, err.message, err.details) == ("from_the_future", "m", {})


@pytest.mark.parametrize(
    "payload",
    [None, 3, "x", [], {"code": 5}, {"code": "not_leader", "details": "nope", "message": 7}],
)
def test_from_wire_never_raises_on_garbage(payload: object) -> None:
    err = errors.BoltraftError.from_wire(payload)
    assert isinstance(err, errors.BoltraftError)


def test_errors_pickle() -> None:
    err = errors.NotLeaderError("not the leader", leader_id="n2", leader_addr="tcp://x:1")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is errors.NotLeaderError
    assert back.details == {"leader_id": "n2", "leader_addr": "tcp://x:1"}


def test_duplicate_code_is_refused() -> None:
    with pytest.raises(RuntimeError):
        type("Dup", (errors.BoltraftError,), {"code": "not_leader"})
