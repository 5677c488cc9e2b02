"""The server-side stage recorder and the fsync-delay test knob, on a scripted clock."""

from __future__ import annotations

import time

import pytest

from boltraft.benchmark import stages as st
from boltraft.benchmark.stages import FsyncDelay, StageRecorder
from boltraft.errors import ConfigError
from boltraft.raft.types import Message, MessageType


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _recorder() -> tuple[StageRecorder, Clock]:
    rec = StageRecorder(ring_size=8)
    clock = Clock()
    rec._clock = clock
    return rec, clock


def test_one_batch_goes_through_every_stage() -> None:
    rec, clock = _recorder()
    rec.acked("n2", 0)  # followers known from earlier traffic
    rec.acked("n3", 0)
    rec.iteration(99.999)
    rec.proposed(5, count=3, hop_s=0.0005)  # propose at 100.000
    clock.t = 100.001
    rec.persisted(5)
    clock.t = 100.0025
    rec.observe_messages([Message(MessageType.APP_RESP, to="n1", frm="n2", index=5)])
    clock.t = 100.003
    rec.acked("n3", 5)
    clock.t = 100.0035
    rec.applying(5)
    clock.t = 100.004
    rec.applied(5)
    clock.t = 100.0045
    rec.replied(5)
    records = rec.snapshot()["records"]
    assert len(records) == 1
    wall, count, *secs, acks = records[0]
    assert count == 3 and wall <= time.time()
    # hop + wait, own append, wait for n2 (the quorum's ack), to apply, apply, reply
    expected = [0.0015, 0.001, 0.0015, 0.001, 0.0005, 0.0005]
    assert secs == pytest.approx(expected, abs=1e-9)
    assert sum(secs) == pytest.approx(0.0005 + 100.0045 - 99.999)
    assert acks == pytest.approx({"n2": 0.0025, "n3": 0.003})
    assert rec.snapshot(since=time.time() + 10)["records"] == []


def test_follower_faster_than_leader_gives_zero_replication_wait() -> None:
    rec, clock = _recorder()
    rec.proposed(1, 1)
    clock.t += 0.001
    rec.acked("n2", 1)
    clock.t += 0.002
    rec.persisted(1)
    rec.applying(1)
    rec.applied(1)
    rec.replied(1)
    (rec_,) = rec.snapshot()["records"]
    assert rec_[3] == pytest.approx(0.003) and rec_[4] == 0.0


def test_batch_waits_for_known_followers_then_gives_up() -> None:
    rec, clock = _recorder()
    rec.acked("n2", 0)  # n2 and n3 are known followers
    rec.acked("n3", 0)
    rec.proposed(1, 1)
    rec.acked("n2", 1)
    rec.persisted(1)
    rec.applying(1)
    rec.applied(1)
    rec.replied(1)
    assert rec.snapshot()["records"] == []  # n3 has not acknowledged yet
    clock.t += st.ACK_WAIT_S + 0.1
    records = rec.snapshot()["records"]
    assert len(records) == 1 and set(records[0][-1]) == {"n2"}


def test_batches_finish_in_order_and_a_rewritten_log_drops_them() -> None:
    rec, _clock = _recorder()
    rec.proposed(3, 1)
    rec.proposed(6, 2)
    rec.proposed(6, 4)  # a new leader re-proposed from index 6: the old one is gone
    rec.observe_messages([Message(MessageType.APP_RESP, to="n1", frm="n2", index=2, reject=True)])
    rec.persisted(6)
    rec.applying(3)
    rec.applied(3)
    rec.replied(6)  # only batch 3 was applied
    assert [r[1] for r in rec.snapshot()["records"]] == [1]
    rec.applying(6)
    rec.applied(6)
    rec.replied(6)
    assert [r[1] for r in rec.snapshot()["records"]] == [1, 4]


def test_ring_is_bounded() -> None:
    rec, _clock = _recorder()
    for i in range(1, 21):
        rec.proposed(i, 1)
        rec.persisted(i)
        rec.applying(i)
        rec.applied(i)
        rec.replied(i)
    assert len(rec.snapshot()["records"]) == 8


@pytest.mark.parametrize(
    ("spec", "lo", "hi"), [("fixed:5", 5, 5), ("uniform:1-3", 1, 3), ("fixed:0", 0, 0)]
)
def test_delay_specs(spec: str, lo: float, hi: float) -> None:
    d = FsyncDelay.parse(spec)
    assert (d.lo_ms, d.hi_ms) == (lo, hi)
    assert d.mean_ms == (lo + hi) / 2


@pytest.mark.parametrize(
    "spec", ["5", "fixed", "fixed:x", "uniform:3", "uniform:3-1", "fixed:-1", "gauss:1", ""]
)
def test_bad_delay_specs(spec: str) -> None:
    with pytest.raises(ConfigError):
        FsyncDelay.parse(spec)


def test_delay_really_sleeps() -> None:
    t0 = time.perf_counter()
    slept = FsyncDelay.parse("fixed:20").sleep()
    assert slept == 0.020
    assert time.perf_counter() - t0 >= 0.020
    drawn = [FsyncDelay.parse("uniform:0-0.5").sleep() for _ in range(20)]
    assert all(0 <= d <= 0.0005 for d in drawn) and len(set(drawn)) > 1
