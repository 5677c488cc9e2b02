"""A plain-dict model of the state machine's commands, and a dump of a real store to compare.

The model mirrors the documented semantics: results (None, bools, sequence numbers, lists for
batches) and error CLASSES (as the engine raises them), batch atomicity, nested buckets that
share their parent's namespace with its keys.
"""

from __future__ import annotations

import copy
from typing import Any

from boltraft.errors import (
    BoltraftError,
    BucketExistsError,
    BucketNotFoundError,
    ConditionFailedError,
    IncompatibleValueError,
)
from boltraft.storage.db import DB

Path = tuple[bytes, ...]


class Model:
    """Buckets as ``path -> {"keys": {key: value}, "seq": int}``; results like ``apply``."""

    def __init__(self) -> None:
        self.buckets: dict[Path, dict[str, Any]] = {}

    def _bucket(self, path: Path) -> dict[str, Any]:
        b = self.buckets.get(path)
        if b is None:
            raise BucketNotFoundError(str(path))
        return b

    def _key_of(self, path: Path, key: bytes) -> dict[str, Any]:
        b = self._bucket(path)
        if (*path, key) in self.buckets:
            raise IncompatibleValueError(str(key))
        return b

    def _create(self, path: Path, exist_ok: bool) -> None:
        if len(path) > 1:
            parent = self._bucket(path[:-1])
            if path[-1] in parent["keys"]:
                raise IncompatibleValueError(str(path))
        if path in self.buckets:
            if exist_ok:
                return
            raise BucketExistsError(str(path))
        self.buckets[path] = {"keys": {}, "seq": 0}

    def apply(self, cmd: dict[str, Any]) -> Any:
        """Returns the result of the normalized command ``cmd``, or the error class instance."""
        try:
            if cmd["op"] == "batch":
                saved = copy.deepcopy(self.buckets)
                out = []
                for i, sub in enumerate(cmd["ops"]):
                    try:
                        out.append(self._op(sub))
                    except BoltraftError as err:
                        self.buckets = saved
                        err.details["index"] = i
                        raise
                return out
            return self._op(cmd)
        except BoltraftError as err:
            return err

    def _op(self, c: dict[str, Any]) -> Any:
        op, path = c["op"], c["bucket"]
        if op == "create_bucket":
            if c.get("if_not_exists"):  # like mkdir -p: missing ancestors are created too
                for i in range(1, len(path) + 1):
                    self._create(path[:i], exist_ok=True)
            else:
                self._create(path, exist_ok=False)
            return None
        if op == "delete_bucket":
            if path not in self.buckets:
                parent = self._bucket(path[:-1]) if len(path) > 1 else {"keys": {}}
                if path[-1] in parent["keys"]:
                    raise IncompatibleValueError(str(path))
                raise BucketNotFoundError(str(path))
            for p in [p for p in self.buckets if p[: len(path)] == path]:
                del self.buckets[p]
            return None
        if op == "next_sequence":
            b = self._bucket(path)
            b["seq"] += 1
            return b["seq"]
        key = c["key"]
        b = self._key_of(path, key)
        keys = b["keys"]
        current = keys.get(key)
        if op == "put":
            conditional = "if_value" in c or c.get("if_absent")
            if conditional and current != c.get("if_value"):
                raise ConditionFailedError(str(key), current=current)
            keys[key] = c["value"]
            return None
        if "if_value" in c:
            if current != c["if_value"]:
                raise ConditionFailedError(str(key), current=current)
            del keys[key]
            return True
        return keys.pop(key, None) is not None

    def state(self) -> dict[Path, tuple[dict[bytes, bytes], int]]:
        """Returns ``path -> (keys, sequence)`` for comparison with ``dump``."""
        return {p: (dict(b["keys"]), b["seq"]) for p, b in self.buckets.items()}


def same_result(real: Any, model: Any) -> bool:
    """Returns True when a real result matches the model's (errors by class and index)."""
    if isinstance(model, BoltraftError):
        return type(real) is type(model) and real.details.get("index") == model.details.get("index")
    return real == model


def dump(db: DB) -> dict[Path, tuple[dict[bytes, bytes], int]]:
    """Returns every bucket of ``db`` as ``path -> (keys, sequence)``.

    The sequence is read without changing the store: a write transaction that calls
    ``next_sequence`` and then rolls back.
    """
    out: dict[Path, tuple[dict[bytes, bytes], int]] = {}
    paths: list[Path] = []
    with db.view() as tx:
        stack: list[Path] = [(name,) for name in tx.buckets()]
        while stack:
            path = stack.pop()
            paths.append(path)
            items, _ = tx.bucket(path).scan()
            out[path] = ({k: v for k, v in items if v is not None}, 0)
            stack.extend((*path, name) for name in tx.buckets(path))

    class _Rollback(Exception):
        pass

    seqs: dict[Path, int] = {}
    try:
        with db.update() as tx:
            for path in paths:
                seqs[path] = tx.bucket(path).next_sequence() - 1
            raise _Rollback
    except _Rollback:
        pass
    return {p: (keys, seqs[p]) for p, (keys, _) in out.items()}
