"""One conformance suite for every ``LogStore``: the in-memory store, the LMDB store and the
WAL store (also with tiny segments, so that every record opens a new segment).

Each test gets a ``Harness`` whose ``store`` is fresh and whose ``reopen()`` returns the store
as it comes back after a restart (a new store on the same directory; for the in-memory store,
its ``clone()``), so every edge is also checked after recovery.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from boltraft.errors import InvalidArgumentError, LogCompactedError, LogUnavailableError
from boltraft.raft.memstore import MemoryLogStore
from boltraft.raft.types import ConfState, Entry, EntryType, HardState, SnapshotMeta
from boltraft.storage.logstore import LmdbLogStore
from boltraft.storage.wal import WalLogStore

CONF = ConfState(voters=("n1", "n2", "n3"), learners=("n4",), addrs={"n1": "tcp://a:1"})


def ents(lo: int, hi: int, term: int = 1, size: int = 3) -> list[Entry]:
    """Returns entries [lo, hi) of ``term`` whose data names their index."""
    return [Entry(term, i, EntryType.NORMAL, (b"%d" % i).ljust(size, b".")) for i in range(lo, hi)]


class Harness:
    """Opens one kind of store on a directory and reopens it as after a restart."""

    def __init__(self, kind: str, path: Path) -> None:
        self.kind = kind
        self.path = path
        self.store: Any = self._open()

    def _open(self) -> Any:
        if self.kind == "memory":
            return MemoryLogStore()
        if self.kind == "wal":
            return WalLogStore(self.path)
        if self.kind == "wal-tiny":  # every record past the first rotates to a new segment
            return WalLogStore(self.path, segment_bytes=1, cache_bytes=64)
        return LmdbLogStore(self.path)

    def reopen(self) -> Any:
        """Returns the store as it is after a restart (the old handle is closed)."""
        if self.kind == "memory":
            self.store = self.store.clone()
        else:
            self.store.close()
            self.store = self._open()
        return self.store


KINDS = ["memory", "lmdb", "wal", "wal-tiny"]


@pytest.fixture(params=KINDS)
def h(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(request.param, tmp_path / "raftlog")
    yield harness
    harness.store.close()


def both(h: Harness, check: Callable[[Any], None]) -> None:
    """Runs ``check`` on the live store and again after a restart."""
    check(h.store)
    check(h.reopen())


def state(s: Any) -> tuple[Any, ...]:
    """Returns everything observable about a store, for "changes nothing" checks."""
    first, last = s.first_index(), s.last_index()
    return (
        s.initial_state(),
        s.snapshot_meta(),
        first,
        last,
        s.entries(first, last + 1),
    )


@contextmanager
def changes_nothing(h: Harness) -> Iterator[None]:
    """Returns (as a context) a check that the block leaves ``state`` of the store as it
    found it, live and after a restart."""
    before = state(h.store)
    yield
    assert state(h.store) == before
    assert state(h.reopen()) == before


# --- empty store -----------------------------------------------------------------------------
def test_empty_store(h: Harness) -> None:
    def check(s: Any) -> None:
        assert s.initial_state() == (HardState(), ConfState())
        assert s.snapshot_meta() == SnapshotMeta()
        assert (s.first_index(), s.last_index()) == (1, 0)
        assert s.term(0) == 0
        assert s.entries(1, 1) == []
        with pytest.raises(LogUnavailableError):
            s.term(1)
        with pytest.raises(LogUnavailableError):
            s.entries(1, 2)
        with pytest.raises(LogCompactedError):
            s.entries(0, 1)
        with pytest.raises(LogCompactedError):
            s.term(-1)

    both(h, check)


# --- bootstrap -------------------------------------------------------------------------------
def test_bootstrap_records_membership(h: Harness) -> None:
    assert h.store.bootstrap(CONF) is True

    def check(s: Any) -> None:
        assert s.initial_state() == (HardState(), CONF)
        assert s.snapshot_meta() == SnapshotMeta(0, 0, CONF)
        assert (s.first_index(), s.last_index(), s.term(0)) == (1, 0, 0)
        assert s.bootstrap(ConfState(voters=("x",))) is False
        assert s.initial_state()[1] == CONF

    both(h, check)


def test_bootstrap_refused_when_store_holds_state(h: Harness) -> None:
    s = h.store
    s.append([], HardState(1, "n1", 0))
    assert s.bootstrap(CONF) is False
    assert s.initial_state() == (HardState(1, "n1", 0), ConfState())


def test_bootstrap_refused_after_entries(h: Harness) -> None:
    h.store.append(ents(1, 2))
    assert h.store.bootstrap(CONF) is False
    assert h.reopen().initial_state()[1] == ConfState()


@pytest.mark.parametrize(
    "bad",
    [ConfState(), ConfState(voters=("a", "a")), ConfState(voters=("a",), learners=("a",))],
)
def test_bootstrap_rejects_bad_membership(h: Harness, bad: ConfState) -> None:
    with pytest.raises(InvalidArgumentError):
        h.store.bootstrap(bad)
    assert h.store.initial_state() == (HardState(), ConfState())
    assert h.store.bootstrap(CONF) is True


def test_bootstrap_then_append(h: Harness) -> None:
    s = h.store
    s.bootstrap(CONF)
    s.append(ents(1, 4, term=2), HardState(2, "n1", 1))

    def check(s: Any) -> None:
        assert s.initial_state() == (HardState(2, "n1", 1), CONF)
        assert (s.first_index(), s.last_index()) == (1, 3)
        assert s.entries(1, 4) == ents(1, 4, term=2)

    both(h, check)


# --- append and read -------------------------------------------------------------------------
def test_append_and_read(h: Harness) -> None:
    h.store.append(ents(1, 6), HardState(1, "n2", 3))

    def check(s: Any) -> None:
        assert (s.first_index(), s.last_index()) == (1, 5)
        assert s.entries(1, 6) == ents(1, 6)
        assert s.entries(2, 4) == ents(2, 4)
        assert s.entries(3, 3) == []
        assert [s.term(i) for i in range(0, 6)] == [0, 1, 1, 1, 1, 1]
        assert s.initial_state()[0] == HardState(1, "n2", 3)
        with pytest.raises(LogUnavailableError):
            s.term(6)
        with pytest.raises(LogUnavailableError):
            s.entries(4, 7)
        with pytest.raises(InvalidArgumentError):
            s.entries(4, 3)

    both(h, check)


def test_entry_types_and_binary_data_round_trip(h: Harness) -> None:
    batch = [
        Entry(1, 1, EntryType.NORMAL, b""),
        Entry(1, 2, EntryType.CONF_CHANGE, b"\x00\xff" * 100),
        Entry(7, 3, EntryType.NORMAL, bytes(range(256)) * 300),
    ]
    h.store.append(batch)
    both(h, lambda s: _check_eq(s.entries(1, 4), batch))
    got = h.store.entries(1, 4)
    assert [type(e.data) for e in got] == [bytes] * 3
    assert [int(e.type) for e in got] == [0, 1, 0]


def _check_eq(a: object, b: object) -> None:
    assert a == b


def test_hard_state_only_append(h: Harness) -> None:
    h.store.append(ents(1, 3))
    h.store.append([], HardState(5, "", 2))
    h.store.append((), None)

    def check(s: Any) -> None:
        assert s.initial_state()[0] == HardState(5, "", 2)
        assert s.last_index() == 2

    both(h, check)


def test_incremental_appends(h: Harness) -> None:
    for lo in range(1, 200, 7):
        h.store.append(ents(lo, lo + 7, term=1 + lo // 50))
    want = [e for lo in range(1, 200, 7) for e in ents(lo, lo + 7, term=1 + lo // 50)]
    both(h, lambda s: _check_eq(s.entries(1, s.last_index() + 1), want))


def test_append_truncates_conflicting_suffix_in_the_middle(h: Harness) -> None:
    h.store.append(ents(1, 11, term=1))
    h.store.append(ents(4, 6, term=2), HardState(2, "", 3))

    def check(s: Any) -> None:
        assert s.last_index() == 5
        assert s.entries(1, 6) == ents(1, 4) + ents(4, 6, term=2)
        assert [s.term(i) for i in range(1, 6)] == [1, 1, 1, 2, 2]
        with pytest.raises(LogUnavailableError):
            s.term(6)
        with pytest.raises(LogUnavailableError):
            s.entries(5, 8)

    both(h, check)
    # the dropped indexes are really gone: growing the log again shows only new entries
    h.store.append(ents(6, 9, term=3))
    both(h, lambda s: _check_eq(s.entries(4, 9), ents(4, 6, term=2) + ents(6, 9, term=3)))


def test_append_replaces_from_first_index(h: Harness) -> None:
    h.store.append(ents(1, 5, term=1))
    h.store.append(ents(1, 3, term=2))
    both(h, lambda s: _check_eq(s.entries(1, s.last_index() + 1), ents(1, 3, term=2)))


def test_append_overlapping_same_entries_keeps_them(h: Harness) -> None:
    h.store.append(ents(1, 6))
    h.store.append(ents(3, 8))
    both(h, lambda s: _check_eq(s.entries(1, 8), ents(1, 8)))


@pytest.mark.parametrize(
    "bad",
    [
        ents(5, 7),  # gap after last index 3
        [Entry(1, 4), Entry(1, 6)],  # not contiguous
        [Entry(1, 4), Entry(1, 4)],  # repeated index
        [Entry(2, 4), Entry(1, 5)],  # term goes down
        [Entry(0, 4)],  # term 0
    ],
)
def test_append_rejects_bad_batches_and_changes_nothing(h: Harness, bad: list[Entry]) -> None:
    h.store.append(ents(1, 4), HardState(1, "", 1))
    with changes_nothing(h), pytest.raises(InvalidArgumentError):
        h.store.append(bad, HardState(9, "x", 3))


def test_append_rejects_term_below_previous_entry(h: Harness) -> None:
    h.store.append(ents(1, 4, term=3))
    with pytest.raises(InvalidArgumentError):
        h.store.append(ents(4, 5, term=2))
    assert h.store.last_index() == 3


# --- max_bytes -------------------------------------------------------------------------------
def test_entries_max_bytes(h: Harness) -> None:
    h.store.append(ents(1, 11, size=10))  # 10 bytes each

    def check(s: Any) -> None:
        assert s.entries(1, 11, max_bytes=0) == ents(1, 2, size=10)
        assert s.entries(1, 11, max_bytes=9) == ents(1, 2, size=10)
        assert s.entries(1, 11, max_bytes=10) == ents(1, 2, size=10)
        assert s.entries(1, 11, max_bytes=29) == ents(1, 3, size=10)
        assert s.entries(1, 11, max_bytes=30) == ents(1, 4, size=10)
        assert s.entries(3, 11, max_bytes=1 << 20) == ents(3, 11, size=10)
        assert s.entries(5, 5, max_bytes=0) == []

    both(h, check)


def test_entries_max_bytes_first_entry_larger_than_limit(h: Harness) -> None:
    h.store.append([Entry(1, 1, 0, b"x" * 1000), *ents(2, 4)])
    assert h.store.entries(1, 4, max_bytes=10) == [Entry(1, 1, 0, b"x" * 1000)]


# --- compact ---------------------------------------------------------------------------------
def test_compact(h: Harness) -> None:
    h.store.bootstrap(CONF)
    h.store.append(ents(1, 11, term=1) + ents(11, 21, term=2), HardState(2, "n1", 15))
    meta = SnapshotMeta(12, 2, ConfState(voters=("n1", "n2")))
    h.store.compact(meta)

    def check(s: Any) -> None:
        assert s.snapshot_meta() == meta
        assert s.initial_state() == (HardState(2, "n1", 15), meta.conf_state)
        assert (s.first_index(), s.last_index()) == (13, 20)
        assert s.term(12) == 2  # the snapshot index
        assert s.term(13) == 2
        assert s.entries(13, 21) == ents(13, 21, term=2)
        with pytest.raises(LogCompactedError):
            s.term(11)
        with pytest.raises(LogCompactedError):
            s.entries(12, 14)
        with pytest.raises(LogCompactedError):
            s.entries(1, 14)

    both(h, check)


def test_compact_whole_log_then_append(h: Harness) -> None:
    h.store.append(ents(1, 6))
    h.store.compact(SnapshotMeta(5, 1, CONF))

    def check(s: Any) -> None:
        assert (s.first_index(), s.last_index(), s.term(5)) == (6, 5, 1)
        assert s.entries(6, 6) == []
        with pytest.raises(LogUnavailableError):
            s.term(6)

    both(h, check)
    h.store.append(ents(6, 8, term=2))
    both(h, lambda s: _check_eq(s.entries(6, 8), ents(6, 8, term=2)))


def test_compact_errors_change_nothing(h: Harness) -> None:
    h.store.append(ents(1, 11))
    h.store.compact(SnapshotMeta(4, 1, CONF))
    with changes_nothing(h):
        with pytest.raises(LogCompactedError):
            h.store.compact(SnapshotMeta(4, 1, CONF))
        with pytest.raises(LogCompactedError):
            h.store.compact(SnapshotMeta(2, 1, CONF))
        with pytest.raises(LogUnavailableError):
            h.store.compact(SnapshotMeta(11, 1, CONF))
        with pytest.raises(InvalidArgumentError):
            h.store.compact(SnapshotMeta(6, 3, CONF))  # wrong term


def test_append_below_snapshot_skips_compacted_part(h: Harness) -> None:
    h.store.append(ents(1, 11))
    h.store.compact(SnapshotMeta(6, 1, CONF))
    h.store.append(ents(3, 9, term=1) + ents(9, 10, term=2))

    def check(s: Any) -> None:
        assert (s.first_index(), s.last_index()) == (7, 9)
        assert s.entries(7, 10) == ents(7, 9) + ents(9, 10, term=2)

    both(h, check)
    h.store.append(ents(2, 5))  # entirely compacted: nothing changes
    assert h.store.last_index() == 9


def test_truncate_right_after_snapshot(h: Harness) -> None:
    h.store.append(ents(1, 11))
    h.store.compact(SnapshotMeta(5, 1, CONF))
    h.store.append(ents(6, 7, term=4))
    both(h, lambda s: _check_eq((s.last_index(), s.entries(6, 7)), (6, ents(6, 7, term=4))))


# --- apply_snapshot --------------------------------------------------------------------------
def test_apply_snapshot_replaces_everything(h: Harness) -> None:
    h.store.bootstrap(CONF)
    h.store.append(ents(1, 31), HardState(1, "n1", 20))
    meta = SnapshotMeta(100, 7, ConfState(voters=("n1", "n5"), addrs={"n5": "tcp://e:5"}))
    h.store.apply_snapshot(meta, HardState(7, "", 100))

    def check(s: Any) -> None:
        assert s.snapshot_meta() == meta
        assert s.initial_state() == (HardState(7, "", 100), meta.conf_state)
        assert (s.first_index(), s.last_index()) == (101, 100)
        assert s.term(100) == 7
        assert s.entries(101, 101) == []
        with pytest.raises(LogCompactedError):
            s.term(30)
        with pytest.raises(LogUnavailableError):
            s.term(101)
        assert s.bootstrap(CONF) is False

    both(h, check)
    h.store.append(ents(101, 104, term=7))
    both(h, lambda s: _check_eq(s.entries(101, 104), ents(101, 104, term=7)))


def test_apply_snapshot_behind_log_end_drops_the_suffix(h: Harness) -> None:
    h.store.append(ents(1, 21))
    h.store.apply_snapshot(SnapshotMeta(10, 3, CONF))

    def check(s: Any) -> None:
        assert (s.first_index(), s.last_index(), s.term(10)) == (11, 10, 3)
        with pytest.raises(LogUnavailableError):
            s.entries(11, 12)

    both(h, check)


def test_apply_snapshot_keeps_hard_state_when_none(h: Harness) -> None:
    h.store.append(ents(1, 3), HardState(3, "n2", 2))
    h.store.apply_snapshot(SnapshotMeta(50, 3, CONF))
    both(h, lambda s: _check_eq(s.initial_state()[0], HardState(3, "n2", 2)))


def test_apply_stale_snapshot_is_refused(h: Harness) -> None:
    h.store.apply_snapshot(SnapshotMeta(50, 3, CONF))
    h.store.append(ents(51, 53, term=3))
    with changes_nothing(h), pytest.raises(LogCompactedError):
        h.store.apply_snapshot(SnapshotMeta(40, 3, CONF), HardState(9, "", 0))


# --- lifecycle -------------------------------------------------------------------------------
def test_many_restarts_keep_everything(h: Harness) -> None:
    h.store.bootstrap(CONF)
    want: list[Entry] = []
    for r in range(5):
        batch = ents(len(want) + 1, len(want) + 11, term=r + 1)
        h.store.append(batch, HardState(r + 1, "n1", len(want)))
        want += batch
        s = h.reopen()
        assert s.entries(1, s.last_index() + 1) == want
        assert s.term(s.last_index()) == r + 1
        assert s.initial_state() == (HardState(r + 1, "n1", len(want) - 10), CONF)


def test_entries_max_bytes_counts_empty_entries_after_an_oversized_first(h: Harness) -> None:
    batch = [Entry(1, 1, 0, b"x" * 50), Entry(1, 2), Entry(1, 3), Entry(1, 4, 0, b"y")]
    h.store.append(batch)
    assert h.store.entries(1, 5, max_bytes=10) == batch[:1]
    assert h.store.entries(2, 5, max_bytes=0) == batch[1:3]


# --- randomized: range deletion and truncation against a naive model -------------------------
class NaiveLog:
    """The obvious model: a dict of entries, the snapshot and the hard state."""

    def __init__(self) -> None:
        self.ents: dict[int, Entry] = {}
        self.snap = SnapshotMeta()
        self.hs = HardState()

    def last(self) -> int:
        return max(self.ents, default=self.snap.index)


def test_random_operations_match_a_naive_model(h: Harness) -> None:
    rng = random.Random(7)
    m = NaiveLog()
    term = 1
    for step in range(400):
        op = rng.random()
        last = m.last()
        if op < 0.65:  # append, often truncating somewhere in the middle
            start = rng.randint(m.snap.index + 1, last + 1)
            term += rng.random() < 0.3
            batch = [
                Entry(term, i, 0, rng.randbytes(rng.randint(0, 40)))
                for i in range(start, start + rng.randint(1, 30))
            ]
            hs = HardState(term, "n1", min(m.hs.commit + 1, batch[-1].index))
            h.store.append(batch, hs)
            for i in range(start, last + 1):
                del m.ents[i]
            m.ents.update((e.index, e) for e in batch)
            m.hs = hs
        elif op < 0.8 and last > m.snap.index:  # compact a prefix
            c = rng.randint(m.snap.index + 1, last)
            meta = SnapshotMeta(c, m.ents[c].term, CONF)
            h.store.compact(meta)
            for i in range(m.snap.index + 1, c + 1):
                del m.ents[i]
            m.snap = meta
        elif op < 0.85:  # install a snapshot somewhere ahead or inside the log
            meta = SnapshotMeta(rng.randint(m.snap.index, last + 20), term, CONF)
            h.store.apply_snapshot(meta)
            m.ents.clear()
            m.snap = meta
        else:
            h.reopen()
        s = h.store
        first, last = m.snap.index + 1, m.last()
        assert (s.first_index(), s.last_index()) == (first, last), step
        assert s.snapshot_meta() == m.snap
        assert s.initial_state()[0] == m.hs
        assert s.entries(first, last + 1) == [m.ents[i] for i in range(first, last + 1)]
        assert [s.term(i) for i in range(first, last + 1)] == [
            m.ents[i].term for i in range(first, last + 1)
        ]
        assert s.term(m.snap.index) == m.snap.term
        if last >= first:
            lo = rng.randint(first, last)
            hi = rng.randint(lo, last + 1)
            assert s.entries(lo, hi) == [m.ents[i] for i in range(lo, hi)]
