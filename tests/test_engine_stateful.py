"""A Hypothesis state machine: random bucket and key operations, conditions, rollbacks and
reopens against a plain-dict model of the store."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from boltraft import errors
from boltraft.storage.db import DB, Tx

NAMES = st.sampled_from([b"a", b"b", b"c"])
PATHS = st.lists(NAMES, min_size=1, max_size=3).map(tuple)
KEYS = st.sampled_from([b"a", b"b", b"k1", b"k2", b"\xff"])
VALUES = st.binary(max_size=8)

Path_ = tuple[bytes, ...]


class Rollback(Exception):
    """Raised on purpose to roll a transaction back."""


class BucketModel:
    def __init__(self) -> None:
        self.keys: dict[bytes, bytes] = {}
        self.seq = 0


class EngineMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="engine-sm-"))
        self.db = DB.open(self.dir / "db", initial_map_size=1 << 20)
        self.model: dict[Path_, BucketModel] = {}

    def teardown(self) -> None:
        self.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- model helpers -------------------------------------------------------------------
    def is_key(self, path: Path_) -> bool:
        parent = self.model.get(path[:-1])
        return len(path) > 1 and parent is not None and path[-1] in parent.keys

    def create_error(self, path: Path_) -> type[errors.BoltraftError] | None:
        if len(path) > 1 and path[:-1] not in self.model:
            return errors.BucketNotFoundError
        if path in self.model:
            return errors.BucketExistsError
        if self.is_key(path):
            return errors.IncompatibleValueError
        return None

    def run(self, fn: object, expected: type[errors.BoltraftError] | None) -> object:
        """Runs ``fn`` in a write txn; checks it raises ``expected`` (None = succeeds)."""
        try:
            result = self.db.update_fn(fn)  # type: ignore[arg-type]
        except errors.BoltraftError as exc:
            assert expected is not None and isinstance(exc, expected), (exc, expected)
            return exc
        assert expected is None, f"expected {expected}"
        return result

    # --- buckets -------------------------------------------------------------------------
    @rule(path=PATHS)
    def create_bucket(self, path: Path_) -> None:
        expected = self.create_error(path)
        self.run(lambda tx: tx.create_bucket(list(path)), expected)
        if expected is None:
            self.model[path] = BucketModel()

    @rule(path=PATHS)
    def create_if_not_exists(self, path: Path_) -> None:
        expected = None
        for i in range(1, len(path) + 1):
            if path[:i] not in self.model and self.is_key(path[:i]):
                expected = errors.IncompatibleValueError
                break
        self.run(lambda tx: tx.create_bucket_if_not_exists(path), expected)
        if expected is None:
            for i in range(1, len(path) + 1):
                self.model.setdefault(path[:i], BucketModel())

    @rule(path=PATHS)
    def delete_bucket(self, path: Path_) -> None:
        if len(path) > 1 and path[:-1] not in self.model:
            expected: type[errors.BoltraftError] | None = errors.BucketNotFoundError
        elif path in self.model:
            expected = None
        elif self.is_key(path):
            expected = errors.IncompatibleValueError
        else:
            expected = errors.BucketNotFoundError
        self.run(lambda tx: tx.delete_bucket(path), expected)
        if expected is None:
            for p in [p for p in self.model if p[: len(path)] == path]:
                del self.model[p]

    # --- keys ----------------------------------------------------------------------------
    def key_error(self, path: Path_, key: bytes) -> type[errors.BoltraftError] | None:
        if path not in self.model:
            return errors.BucketNotFoundError
        if (*path, key) in self.model:
            return errors.IncompatibleValueError
        return None

    @rule(path=PATHS, key=KEYS, value=VALUES)
    def put(self, path: Path_, key: bytes, value: bytes) -> None:
        expected = self.key_error(path, key)
        self.run(lambda tx: tx.bucket(path).put(key, value), expected)
        if expected is None:
            self.model[path].keys[key] = value

    @rule(path=PATHS, key=KEYS)
    def delete(self, path: Path_, key: bytes) -> None:
        expected = self.key_error(path, key)
        existed = self.run(lambda tx: tx.bucket(path).delete(key), expected)
        if expected is None:
            assert existed is (key in self.model[path].keys)
            self.model[path].keys.pop(key, None)

    @rule(path=PATHS, key=KEYS, value=VALUES, expect=st.none() | VALUES, use_current=st.booleans())
    def put_if(
        self, path: Path_, key: bytes, value: bytes, expect: bytes | None, use_current: bool
    ) -> None:
        expected = self.key_error(path, key)
        current = None if expected else self.model[path].keys.get(key)
        if use_current:
            expect = current
        if expected is None and current != expect:
            expected = errors.ConditionFailedError
        res = self.run(lambda tx: tx.bucket(path).put_if(key, value, expect), expected)
        if expected is None:
            self.model[path].keys[key] = value
        elif expected is errors.ConditionFailedError:
            assert res.details["current"] == current  # type: ignore[attr-defined]

    @rule(path=PATHS, key=KEYS, expect=VALUES, use_current=st.booleans())
    def delete_if(self, path: Path_, key: bytes, expect: bytes, use_current: bool) -> None:
        expected = self.key_error(path, key)
        current = None if expected else self.model[path].keys.get(key)
        if use_current and current is not None:
            expect = current
        if expected is None and current != expect:
            expected = errors.ConditionFailedError
        self.run(lambda tx: tx.bucket(path).delete_if(key, expect), expected)
        if expected is None:
            del self.model[path].keys[key]

    @rule(path=PATHS)
    def next_sequence(self, path: Path_) -> None:
        expected = None if path in self.model else errors.BucketNotFoundError
        got = self.run(lambda tx: tx.bucket(path).next_sequence(), expected)
        if expected is None:
            self.model[path].seq += 1
            assert got == self.model[path].seq

    # --- transactions --------------------------------------------------------------------
    @rule(path=PATHS, key=KEYS, value=VALUES)
    def rolled_back_update(self, path: Path_, key: bytes, value: bytes) -> None:
        try:
            with self.db.update() as tx:
                b = tx.create_bucket_if_not_exists(path)
                if (*path, key) not in self.model:
                    b.put(key, value)
                b.next_sequence()
                raise Rollback
        except Rollback:
            pass
        except errors.IncompatibleValueError:
            pass  # the path ran through a key; nothing was written either way

    @rule(path=PATHS, key=KEYS, value=VALUES)
    def failed_savepoint(self, path: Path_, key: bytes, value: bytes) -> None:
        def fn(tx: Tx) -> None:
            try:
                with tx.savepoint():
                    tx.create_bucket_if_not_exists([b"sp"]).put(key, value)
                    tx.bucket(path).put(key, value)
                    raise Rollback
            except (Rollback, errors.BoltraftError):
                pass

        self.db.update_fn(fn)

    @rule()
    def reopen(self) -> None:
        self.db.close()
        self.db = DB.open(self.dir / "db", initial_map_size=1 << 20)

    # --- the store equals the model ------------------------------------------------------
    @invariant()
    def store_matches_model(self) -> None:
        with self.db.view() as tx:
            seen: dict[Path_, BucketModel] = {}
            todo: list[Path_] = [(n,) for n in tx.buckets()]
            while todo:
                path = todo.pop()
                b = tx.bucket(path)
                m = BucketModel()
                items, token = b.scan()
                assert token is None
                for k, v in items:
                    if v is None:
                        todo.append((*path, k))
                    else:
                        m.keys[k] = v
                m.seq = b.sequence()
                assert b.count() == len(items)
                seen[path] = m
        assert {p: (m.keys, m.seq) for p, m in seen.items()} == {
            p: (m.keys, m.seq) for p, m in self.model.items()
        }

    @invariant()
    def store_is_consistent(self) -> None:
        assert self.db.check() == []


EngineMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
test_engine_state_machine = EngineMachine.TestCase
