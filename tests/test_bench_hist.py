"""HDR histogram helpers of the benchmark harness."""

from __future__ import annotations

import pytest

from boltraft.benchmark import hist


def test_summary_of_known_values() -> None:
    h = hist.new_histogram()
    for ms in range(1, 101):  # 1..100 ms, one each
        hist.record_seconds(h, ms / 1000)
    s = hist.summary_ms(h)
    assert s["count"] == 100
    assert s["p50_ms"] == pytest.approx(50, rel=0.002)
    assert s["p90_ms"] == pytest.approx(90, rel=0.002)
    assert s["p99_ms"] == pytest.approx(99, rel=0.002)
    assert s["max_ms"] == pytest.approx(100, rel=0.002)
    assert s["mean_ms"] == pytest.approx(50.5, rel=0.002)


def test_empty_summary_is_zero_and_cdf_empty() -> None:
    h = hist.new_histogram()
    assert hist.summary_ms(h)["count"] == 0
    assert hist.summary_ms(h)["p99_ms"] == 0.0
    assert hist.cdf_points(h) == []


def test_out_of_range_values_are_clamped() -> None:
    h = hist.new_histogram()
    hist.record_seconds(h, -1.0)
    hist.record_seconds(h, 0.0)
    hist.record_seconds(h, 10_000.0)
    assert h.get_total_count() == 3
    assert h.get_min_value() == hist.LOWEST_US
    assert h.get_max_value() >= hist.HIGHEST_US * 0.999


def test_encode_decode_merge_keeps_counts() -> None:
    a, b = hist.new_histogram(), hist.new_histogram()
    hist.record_many_seconds(a, [0.001] * 10)
    hist.record_many_seconds(b, [0.002] * 30)
    merged = hist.merge([hist.encode(a), hist.encode(b)])
    assert merged.get_total_count() == 40
    assert merged.get_value_at_percentile(20) == pytest.approx(1000, rel=0.002)
    assert merged.get_value_at_percentile(90) == pytest.approx(2000, rel=0.002)
    assert hist.merge([]).get_total_count() == 0


def test_decode_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        hist.decode("not a histogram")


def test_cdf_is_increasing_and_ends_at_one() -> None:
    h = hist.new_histogram()
    hist.record_many_seconds(h, [i / 10000 for i in range(1, 5000)])
    pts = hist.cdf_points(h, max_points=50)
    assert 2 <= len(pts) <= 50
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    assert xs == sorted(xs) and len(set(xs)) == len(xs)
    assert ys == sorted(ys)
    assert ys[-1] == 1.0
    assert xs[-1] == pytest.approx(h.get_max_value() / 1000, rel=0.002)
