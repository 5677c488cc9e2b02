"""``boltraft.benchmark.node``: the benchmark's way of starting ``boltraft serve`` (its stage
recorder installed, ``--fsync-delay`` taken out of the arguments as a log-store wrapper)."""

from __future__ import annotations

import pytest

from boltraft.benchmark.node import hooks_for, split_fsync_delay
from boltraft.benchmark.stages import StageRecorder
from boltraft.errors import ConfigError
from boltraft.raft.memstore import MemoryLogStore
from boltraft.storage.proxy import SlowSyncLogStore


def test_fsync_delay_is_taken_out_of_the_serve_arguments() -> None:
    args, delay = split_fsync_delay(["serve", "--id", "n1", "--fsync-delay", "fixed:3", "-x"])
    assert args == ["serve", "--id", "n1", "-x"]
    assert delay is not None and delay.mean_ms == 3.0
    args, delay = split_fsync_delay(["serve", "--fsync-delay=uniform:1-5"])
    assert args == ["serve"] and delay is not None and delay.mean_ms == 3.0
    assert split_fsync_delay(["serve", "--data", "d"]) == (["serve", "--data", "d"], None)


def test_a_bad_fsync_delay_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        split_fsync_delay(["serve", "--fsync-delay", "slow"])


def test_the_hooks_record_stages_and_wrap_the_log_only_with_a_delay() -> None:
    store = MemoryLogStore()
    plain = hooks_for(None)
    assert isinstance(plain.observer, StageRecorder)
    assert plain.wrap_log(store) is store
    _, delay = split_fsync_delay(["--fsync-delay", "fixed:0"])
    wrapped = hooks_for(delay).wrap_log(store)
    assert isinstance(wrapped, SlowSyncLogStore) and wrapped.inner is store
