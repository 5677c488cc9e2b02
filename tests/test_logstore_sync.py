"""``LogStore.sync()``: what the node loop's sync thread relies on (see boltraft.server.syncer).

Written with ``sync=False``, then ``sync()``: the data must be on disk, not only in the
process (checked by a process that exits without closing its store), and ``sync()`` flushes
exactly when something is unflushed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from boltraft.raft.types import Entry, HardState
from boltraft.storage.logstore import LmdbLogStore
from boltraft.storage.wal import WalLogStore

OPEN = {
    "lmdb": "from boltraft.storage.logstore import LmdbLogStore as S",
    "wal": "from boltraft.storage.wal import WalLogStore as S",
}


@pytest.mark.parametrize("kind", ["lmdb", "wal"])
def test_sync_makes_unsynced_writes_survive_an_exit_without_close(
    kind: str, tmp_path: Path
) -> None:
    script = (
        f"{OPEN[kind]}\n"
        "import os, sys\n"
        "from boltraft.raft.types import Entry, HardState\n"
        "s = S(sys.argv[1])\n"
        "s.append([Entry(1, 1, 0, b'a'), Entry(1, 2, 0, b'b')], HardState(1, 'n1', 0), False)\n"
        "s.append((), HardState(1, 'n1', 2), sync=False)\n"
        "s.sync()\n"
        "os._exit(0)\n"  # no close(): only what sync() wrote is there
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, timeout=60)
    store = LmdbLogStore(tmp_path) if kind == "lmdb" else WalLogStore(tmp_path)
    try:
        assert store.initial_state()[0] == HardState(1, "n1", 2)
        assert [e.data for e in store.entries(1, 3)] == [b"a", b"b"]
    finally:
        store.close()


def test_wal_sync_flushes_only_what_is_unflushed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = WalLogStore(tmp_path)
    try:
        flushes: list[int] = []
        real = os.fdatasync
        monkeypatch.setattr(os, "fdatasync", lambda fd: (flushes.append(fd), real(fd))[1])
        store.append([Entry(1, 1, 0, b"a")], HardState(1, "", 0), sync=False)
        assert flushes == []
        store.sync()
        assert len(flushes) == 1
        store.sync()  # nothing new
        assert len(flushes) == 1
        store.append([Entry(1, 2, 0, b"b")], sync=True)
        store.sync()
        assert len(flushes) == 2
    finally:
        store.close()
