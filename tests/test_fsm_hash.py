"""The replica hash (``BucketStateMachine.content_hash``): equal for replicas with the same
content at the same applied index, whatever their batching or dedup clean-up; different
when any key, value, bucket or sequence differs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from boltraft.raft.types import Entry
from boltraft.storage import commands
from boltraft.storage.fsm import BucketStateMachine


def ent(index: int, cmd: dict[str, Any], ts: int = 0) -> Entry:
    return Entry(1, index, 0, commands.encode({**cmd, "v": commands.VERSION, "ts": ts}))


LOG = [
    {"op": "create_bucket", "bucket": [b"a"]},
    {"op": "create_bucket", "bucket": [b"a", b"n"]},
    {"op": "put", "bucket": [b"a", b"n"], "key": b"k", "value": b"v"},
    {"op": "put", "bucket": [b"a"], "key": b"x", "value": b"y", "cid": b"c", "seq": 1},
    {"op": "next_sequence", "bucket": [b"a"], "cid": b"c", "seq": 2},
    {"op": "create_bucket", "bucket": [b"z"]},
]


def replay(path: Path, runs: list[int], log: list[dict[str, Any]] = LOG) -> BucketStateMachine:
    sm = BucketStateMachine(path, sync=False, dedup_window_ms=10)
    entries = [ent(i, cmd, ts=i * 100) for i, cmd in enumerate(log, 1)]
    pos = 0
    for size in runs:
        sm.apply(entries[pos : pos + size])
        pos += size
    return sm


def test_replicas_with_the_same_content_agree_whatever_their_batching(tmp_path: Path) -> None:
    one = replay(tmp_path / "one", [6])
    each = replay(tmp_path / "each", [1] * 6)  # clean-up ran at other times here
    assert one.content_hash() == each.content_hash()
    assert one.content_hash()[0] == 6
    one.close()
    each.close()


def test_any_difference_in_content_changes_the_hash(tmp_path: Path) -> None:
    base = replay(tmp_path / "base", [6])
    digest = base.content_hash()[1]
    base.close()
    changes = [
        {"op": "put", "bucket": [b"a", b"n"], "key": b"k", "value": b"w"},  # a value
        {"op": "put", "bucket": [b"z"], "key": b"k", "value": b"v"},  # a key elsewhere
        {"op": "create_bucket", "bucket": [b"z", b"k"]},  # a bucket where a key could be
        {"op": "next_sequence", "bucket": [b"z"]},  # a sequence
    ]
    digests = {digest}
    for n, change in enumerate(changes):
        other = replay(tmp_path / f"o{n}", [7], [*LOG, change])
        digests.add(other.content_hash()[1])
        other.close()
    assert len(digests) == 1 + len(changes)
