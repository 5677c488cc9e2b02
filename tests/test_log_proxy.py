"""The log-store wrappers: a proxy hands every call through; the slow one pauses after each
flush and only then."""

from __future__ import annotations

from boltraft.raft.memstore import MemoryLogStore
from boltraft.raft.types import ConfState, Entry, HardState, SnapshotMeta
from boltraft.storage.proxy import LogStoreProxy, SlowSyncLogStore


def test_a_proxy_hands_every_call_to_the_store_it_wraps() -> None:
    inner = MemoryLogStore()
    store = LogStoreProxy(inner)
    assert store.bootstrap(ConfState(voters=("n1",))) is True
    store.append([Entry(term=1, index=1), Entry(term=1, index=2)], HardState(term=1, vote="n1"))
    store.sync()
    assert (store.first_index(), store.last_index(), store.term(2)) == (1, 2, 1)
    assert [e.index for e in store.entries(1, 3)] == [1, 2]
    assert store.initial_state() == inner.initial_state()
    store.compact(SnapshotMeta(index=1, term=1, conf_state=ConfState(voters=("n1",))))
    assert store.snapshot_meta().index == 1 and inner.first_index() == 2
    store.apply_snapshot(SnapshotMeta(index=5, term=2, conf_state=ConfState(voters=("n1",))))
    assert inner.last_index() == 5
    store.close()


def test_the_slow_store_pauses_after_each_flush_only() -> None:
    pauses: list[str] = []
    store = SlowSyncLogStore(MemoryLogStore(), lambda: pauses.append("flush"))
    store.append([Entry(term=1, index=1)], HardState(term=1), sync=False)
    assert pauses == []  # nothing flushed yet
    store.sync()
    assert pauses == ["flush"]  # the unsynced append reached the disk
    store.sync()
    assert pauses == ["flush"]  # nothing left to flush
    store.append([Entry(term=1, index=2)], sync=True)
    assert pauses == ["flush"] * 2
    store.apply_snapshot(SnapshotMeta(index=9, term=1, conf_state=ConfState(voters=("n1",))))
    assert pauses == ["flush"] * 3
    assert store.last_index() == 9
