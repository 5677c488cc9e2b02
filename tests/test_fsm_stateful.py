"""A Hypothesis stateful test: runs of random commands, batches and conditions applied to a
real store and to a plain-dict model must give the same results and the same contents."""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

from fsm_model import Model, dump, same_result
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from boltraft.raft.types import Entry
from boltraft.storage import commands
from boltraft.storage.fsm import BATCH_PATH_MIN, BucketStateMachine

PATHS = [(b"a",), (b"b",), (b"a", b"n"), (b"a", b"n", b"m")]
KEYS = [b"k1", b"k2", b"n"]
VALUES = [b"v1", b"v2", b""]

paths = st.sampled_from(PATHS)
keys = st.sampled_from(KEYS)
values = st.sampled_from(VALUES)
maybe_values = st.one_of(st.none(), values)


@st.composite
def put_ops(draw: Any) -> dict[str, Any]:
    cmd = {"op": "put", "bucket": draw(paths), "key": draw(keys), "value": draw(values)}
    cond = draw(st.sampled_from(["none", "if_value", "if_absent"]))
    if cond == "if_value":
        cmd["if_value"] = draw(values)
    elif cond == "if_absent":
        cmd["if_absent"] = True
    return cmd


@st.composite
def delete_ops(draw: Any) -> dict[str, Any]:
    cmd = {"op": "delete", "bucket": draw(paths), "key": draw(keys)}
    if draw(st.booleans()):
        cmd["if_value"] = draw(values)
    return cmd


simple_ops = st.one_of(
    put_ops(),
    put_ops(),
    delete_ops(),
    st.builds(
        lambda p, f: {"op": "create_bucket", "bucket": p, "if_not_exists": f}, paths, st.booleans()
    ),
    st.builds(lambda p: {"op": "delete_bucket", "bucket": p}, paths),
    st.builds(lambda p: {"op": "next_sequence", "bucket": p}, paths),
)
any_ops = st.one_of(
    simple_ops,
    st.builds(lambda ops: {"op": "batch", "ops": ops}, st.lists(simple_ops, max_size=6)),
)


class StoreVersusModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="fsm-stateful-")
        self.sm = BucketStateMachine(self.dir, sync=False)
        self.model = Model()
        self.index = 0

    def teardown(self) -> None:
        self.sm.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(run=st.lists(any_ops, min_size=1, max_size=8))
    def apply_run(self, run: list[dict[str, Any]]) -> None:
        entries = []
        for cmd in run:
            self.index += 1
            entries.append(Entry(1, self.index, 0, commands.encode(cmd)))
        results = self.sm.apply(entries)
        for cmd, real in zip(run, results, strict=True):
            expected = self.model.apply(commands.validate(cmd))
            assert same_result(real, expected), (cmd, real, expected)

    @rule(
        bucket=st.sampled_from([(b"a",), (b"b",)]),
        pairs=st.lists(st.tuples(keys, values), min_size=BATCH_PATH_MIN, max_size=12),
    )
    def apply_a_run_of_puts(
        self, bucket: tuple[bytes, ...], pairs: list[tuple[bytes, bytes]]
    ) -> None:
        """A run of plain puts to one bucket: the batch path (its keys may name a nested
        bucket, and the bucket may not exist)."""
        run = [{"op": "put", "bucket": bucket, "key": k, "value": v} for k, v in pairs]
        datas = [commands.encode(cmd) for cmd in run]
        assert commands.put_run(datas) is not None
        self.apply_run(run)

    @precondition(lambda self: self.index > 0)
    @rule()
    def replay_is_a_no_op(self) -> None:
        start = max(1, self.index - 3)
        entries = [Entry(1, i, 0, b"") for i in range(start, self.index + 1)]
        assert self.sm.apply(entries) == [None] * len(entries)

    @rule()
    def reopen(self) -> None:
        self.sm.close()
        self.sm = BucketStateMachine(self.dir, sync=False)
        assert self.sm.applied == (self.index, 1 if self.index else 0)

    @invariant()
    def same_contents(self) -> None:
        assert dump(self.sm.db) == self.model.state()


StoreVersusModel.TestCase.settings = settings(
    max_examples=60, stateful_step_count=25, deadline=None
)
TestStoreVersusModel = StoreVersusModel.TestCase
