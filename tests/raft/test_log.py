"""Unit tests of RaftLog: the stable view plus the unstable suffix."""

from __future__ import annotations

import pytest

from boltraft.errors import LogCompactedError, LogUnavailableError
from boltraft.raft.log import RaftLog, data_size, limit_size
from boltraft.raft.memstore import MemoryLogStore
from boltraft.raft.types import ConfState, Entry, HardState, SnapshotMeta


def ents(*terms: int, start: int = 1, data: bytes = b"") -> list[Entry]:
    return [Entry(t, i, 0, data) for i, t in enumerate(terms, start)]


def make_log(stable: list[Entry] = (), unstable: list[Entry] = ()) -> RaftLog:  # type: ignore[assignment]
    store = MemoryLogStore()
    store.bootstrap(ConfState(("a",)))
    if stable:
        store.append(stable, HardState(stable[-1].term, "", 0))
    log = RaftLog(store, 1 << 20)
    if unstable:
        log.append(unstable)
    return log


def test_term_reads_stable_and_unstable_parts() -> None:
    log = make_log(ents(1, 1, 2), ents(3, 3, start=4))
    assert [log.term(i) for i in range(0, 6)] == [0, 1, 1, 2, 3, 3]
    assert log.last_index() == 5 and log.last_term() == 3
    with pytest.raises(LogUnavailableError):
        log.term(6)
    assert log.term_or_zero(6) == 0


def test_entries_spans_both_parts_and_honours_max_bytes() -> None:
    log = make_log(ents(1, 1, data=b"xx"), ents(2, 2, start=3, data=b"xx"))
    assert [e.index for e in log.entries(1, 5)] == [1, 2, 3, 4]
    assert [e.index for e in log.entries(2, 4)] == [2, 3]
    assert [e.index for e in log.entries(1, 5, max_bytes=5)] == [1, 2]
    assert [e.index for e in log.entries(3, 5, max_bytes=1)] == [3]  # at least one
    with pytest.raises(LogUnavailableError):
        log.entries(1, 6)


def test_limit_size_and_data_size() -> None:
    e = ents(1, 1, 1, data=b"abc")
    assert data_size(e) == 9
    assert limit_size(e, 6) == e[:2] and limit_size(e, 100) is e and limit_size(e, 0) == e[:1]


def test_append_truncates_a_conflicting_unstable_suffix() -> None:
    log = make_log(ents(1), ents(1, 1, 1, start=2))
    log.append(ents(2, 2, start=3))
    assert [(e.index, e.term) for e in log.entries(1, 5)] == [(1, 1), (2, 1), (3, 2), (4, 2)]


def test_append_below_offset_replaces_a_stable_suffix() -> None:
    log = make_log(ents(1, 1, 1))
    assert log.offset == 4
    log.append(ents(5, start=2))
    assert log.offset == 2 and log.last_index() == 2 and log.term(2) == 5


def test_append_refuses_to_overwrite_committed_entries() -> None:
    log = make_log(ents(1, 1))
    log.commit_to(2)
    with pytest.raises(AssertionError):
        log.append(ents(2, start=2))


def test_find_conflict_common_case_and_mismatch() -> None:
    log = make_log(ents(1, 2, 3))
    assert log.find_conflict(ents(1, 2, 3)) == 0
    assert log.find_conflict(ents(2, 3, 4, start=2)) == 4
    assert log.find_conflict(ents(4, 4, start=4)) == 4
    assert log.find_conflict(ents(1, 4, 4)) == 2
    assert log.find_conflict([]) == 0


def test_maybe_append_rejects_on_mismatch_and_commits_only_what_it_has() -> None:
    log = make_log(ents(1, 1))
    assert log.maybe_append(2, 2, 9, ents(2, start=3)) is None
    assert log.last_index() == 2
    assert log.maybe_append(2, 1, 9, ents(2, start=3)) == 3
    assert log.committed == 3  # min(leader commit, last new index)
    assert log.maybe_append(1, 1, 3, []) == 1 and log.last_index() == 3  # no truncation


def test_maybe_commit_only_for_entries_of_the_given_term() -> None:
    log = make_log(ents(1, 1, 2))
    assert not log.maybe_commit(2, 2)  # entry 2 is of term 1 (paper 5.4.2)
    assert log.maybe_commit(3, 2) and log.committed == 3
    assert not log.maybe_commit(2, 1)  # never lowers


def test_stable_to_ignores_replaced_entries() -> None:
    log = make_log(ents(1), ents(1, 1, start=2))
    log.stable_to(3, 2)  # the entry at 3 is of term 1: nothing happens
    assert log.offset == 2
    log.stable_to(2, 1)
    assert log.offset == 3 and [e.index for e in log.ents] == [3]


def test_durable_committed_entries_only() -> None:
    log = make_log(ents(1, 1), ents(1, start=3))
    log.commit_to(3)
    assert [e.index for e in log.next_committed_entries()] == [1, 2]  # 3 is not durable
    log.applying = 2
    assert not log.has_next_committed_entries()
    log.storage.append(log.ents)
    log.stable_to(3, 1)
    assert [e.index for e in log.next_committed_entries()] == [3]


def test_committed_entries_are_paged_by_bytes() -> None:
    log = make_log(ents(1, 1, 1, data=b"x" * 10))
    log.max_committed_size = 15
    log.commit_to(3)
    assert [e.index for e in log.next_committed_entries()] == [1]


def test_restore_replaces_the_log_with_a_snapshot() -> None:
    log = make_log(ents(1, 1), ents(2, start=3))
    meta = SnapshotMeta(10, 4, ConfState(("a",)))
    log.restore(meta)
    assert log.last_index() == 10 and log.term(10) == 4 and log.committed == 10
    assert log.first_index() == 11 and log.durable_index() == 0
    with pytest.raises(LogCompactedError):
        log.term(9)
    assert log.next_committed_entries() == []
    log.stable_snap_to(10)
    assert log.snapshot is None


def test_is_up_to_date() -> None:
    log = make_log(ents(1, 2))
    assert log.is_up_to_date(2, 2) and log.is_up_to_date(1, 3)
    assert not log.is_up_to_date(5, 1) and not log.is_up_to_date(1, 2)


def test_check_invariants_catches_a_broken_commit() -> None:
    log = make_log(ents(1))
    log.committed = 5
    with pytest.raises(AssertionError):
        log.check_invariants()
