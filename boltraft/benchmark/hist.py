"""HDR histograms and their summaries: one place fixes the unit, range and precision.

Every latency histogram of the harness records MICROSECONDS as integers from 1 us to 120 s
with 3 significant digits (HdrHistogram's relative error bound 0.1%). Values outside the
range are clamped into it, so a stall never raises in the middle of a run. Histograms cross
process boundaries as HdrHistogram's compressed base64 encoding (``encode`` / ``decode``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 120_000_000  # two minutes: anything slower is clamped to it
SIG_FIGS = 3
PERCENTILES: tuple[float, ...] = (50.0, 90.0, 99.0, 99.9)


def new_histogram() -> HdrHistogram:
    """Returns an empty histogram of microseconds (1 us .. 120 s, 3 significant digits)."""
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIG_FIGS)


def record_seconds(hist: HdrHistogram, seconds: float) -> None:
    """Records ``seconds`` as microseconds, clamped to the histogram's range."""
    us = int(seconds * 1e6 + 0.5)
    if us < LOWEST_US:
        us = LOWEST_US
    elif us > HIGHEST_US:
        us = HIGHEST_US
    hist.record_value(us)


def record_many_seconds(hist: HdrHistogram, values: Iterable[float]) -> None:
    """Records every value of ``values`` (seconds) like ``record_seconds``."""
    for v in values:
        record_seconds(hist, v)


def encode(hist: HdrHistogram) -> str:
    """Returns the histogram as HdrHistogram's compressed base64 text (ASCII)."""
    return hist.encode().decode("ascii")


def decode(text: str) -> HdrHistogram:
    """Returns the histogram ``text`` encodes; raises ``ValueError`` on text that is not one."""
    try:
        hist = HdrHistogram.decode(text.encode("ascii"))
    except Exception as exc:  # hdrh raises assorted zlib/struct/key errors on garbage
        raise ValueError(f"not an encoded HdrHistogram: {exc}") from exc
    if hist is None:
        raise ValueError("not an encoded HdrHistogram")
    return hist


def merge(encoded: Iterable[str]) -> HdrHistogram:
    """Returns one histogram holding the counts of every encoded histogram (empty if none)."""
    total = new_histogram()
    for text in encoded:
        total.add(decode(text))
    return total


def summary_ms(hist: HdrHistogram) -> dict[str, float | int]:
    """Returns ``count``, ``mean_ms``, ``p50_ms``, ``p90_ms``, ``p99_ms``, ``p999_ms``, ``max_ms``.

    An empty histogram gives count 0 and zeros everywhere (never NaN: the JSON stays valid).
    """
    count = hist.get_total_count()
    if count == 0:
        return {
            "count": 0,
            "mean_ms": 0.0,
            "p50_ms": 0.0,
            "p90_ms": 0.0,
            "p99_ms": 0.0,
            "p999_ms": 0.0,
            "max_ms": 0.0,
        }
    pct = hist.get_percentile_to_value_dict(list(PERCENTILES))
    return {
        "count": count,
        "mean_ms": round(hist.get_mean_value() / 1000.0, 4),
        "p50_ms": pct[50.0] / 1000.0,
        "p90_ms": pct[90.0] / 1000.0,
        "p99_ms": pct[99.0] / 1000.0,
        "p999_ms": pct[99.9] / 1000.0,
        "max_ms": hist.get_max_value() / 1000.0,
    }


def cdf_points(hist: HdrHistogram, max_points: int = 200) -> list[list[float]]:
    """Returns ``[[latency_ms, cumulative_fraction], ...]`` increasing in both, for CDF charts.

    Percentile ticks are spaced finely toward the tail (HdrHistogram's percentile iterator);
    at most ``max_points`` points are kept (evenly thinned, the last point always kept). An
    empty histogram gives an empty list.
    """
    count = hist.get_total_count()
    if count == 0:
        return []
    points: list[list[float]] = []
    for item in hist.get_percentile_iterator(5):
        ms = hist.get_highest_equivalent_value(item.value_iterated_to) / 1000.0
        frac = min(1.0, item.total_count_to_this_value / count)
        if points and ms <= points[-1][0]:
            points[-1][1] = max(points[-1][1], frac)
            continue
        points.append([ms, frac])
        if frac >= 1.0:
            break
    if len(points) > max_points:
        step = len(points) / (max_points - 1)
        thinned = [points[int(i * step)] for i in range(max_points - 1)]
        thinned.append(points[-1])
        points = thinned
    return points


def summary_with_hdr(hist: HdrHistogram) -> dict[str, Any]:
    """Returns ``summary_ms(hist)`` plus ``cdf`` (``cdf_points``) and ``hdr`` (``encode``)."""
    out: dict[str, Any] = dict(summary_ms(hist))
    out["cdf"] = cdf_points(hist)
    out["hdr"] = encode(hist)
    return out
