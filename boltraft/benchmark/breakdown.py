"""The stage breakdown of a cluster run, from the leader's ``stats`` records (see ``stages``).

Every batch is weighted by its number of writes, so a stage's mean is per write and the stage
means add up to the server's share of a write's latency.
"""

from __future__ import annotations

from typing import Any

from boltraft.benchmark import hist
from boltraft.benchmark.stages import STAGES


def summarize(
    records: list[list[Any]],
    e2e_mean_ms: float | None = None,
    client_rtt: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Returns the breakdown of ``records`` (``StageRecorder.snapshot()["records"]``), or None
    when there are none.

    ``client_rtt``: a latency summary (``hist.summary_ms``) of an idle ``status`` round trip
    from the benchmark's client library; when given it becomes the first stage,
    ``client_network`` (the client's own work and the network both ways, which the server
    cannot see).

    Keys: ``order`` (the stage names), ``stages`` (name -> ``count``, ``mean_ms``, ``p50_ms``,
    ``p90_ms``, ``p99_ms`` ...: every batch weighted by its request count, so the means are
    per write), ``followers`` (id -> the same for the propose -> ack round trip),
    ``batches``, ``requests``, ``mean_batch``, ``server_total_mean_ms`` (the sum of the
    stage means) and, when given, ``e2e_mean_ms`` and ``coverage`` (server total / e2e).
    A negative duration (clock jitter between processes for the hop) is recorded as 1 us.
    """
    if not records:
        return None
    hists = {name: hist.new_histogram() for name in STAGES}
    followers: dict[str, Any] = {}
    requests = 0
    for rec in records:
        count = int(rec[1])
        requests += count
        for name, secs in zip(STAGES, rec[2 : 2 + len(STAGES)], strict=True):
            us = min(hist.HIGHEST_US, max(hist.LOWEST_US, int(secs * 1e6 + 0.5)))
            hists[name].record_value(us, count)
        for f, secs in rec[2 + len(STAGES)].items():
            h = followers.get(f)
            if h is None:
                h = followers[f] = hist.new_histogram()
            h.record_value(min(hist.HIGHEST_US, max(hist.LOWEST_US, int(secs * 1e6 + 0.5))), count)
    stages = {name: hist.summary_ms(h) for name, h in hists.items()}
    order = list(STAGES)
    if client_rtt is not None:
        stages = {"client_network": dict(client_rtt), **stages}
        order.insert(0, "client_network")
    total = round(sum(s["mean_ms"] for s in stages.values()), 4)
    out: dict[str, Any] = {
        "order": order,
        "stages": stages,
        "followers": {f: hist.summary_ms(h) for f, h in sorted(followers.items())},
        "batches": len(records),
        "requests": requests,
        "mean_batch": round(requests / len(records), 2),
        "server_total_mean_ms": total,
    }
    if e2e_mean_ms is not None:
        out["e2e_mean_ms"] = e2e_mean_ms
        out["coverage"] = round(total / e2e_mean_ms, 3) if e2e_mean_ms > 0 else None
    return out


def format_table(bd: dict[str, Any]) -> str:
    """Returns the breakdown as a text table: p50 / p99 / mean per stage and per follower."""
    lines = [
        f"stage breakdown over {bd['batches']} batches ({bd['requests']} writes, "
        f"{bd['mean_batch']} per batch)",
        f"{'stage':<18} {'mean ms':>9} {'p50 ms':>9} {'p99 ms':>9}",
    ]
    for name in bd["order"]:
        s = bd["stages"][name]
        lines.append(f"{name:<18} {s['mean_ms']:>9.3f} {s['p50_ms']:>9.3f} {s['p99_ms']:>9.3f}")
    lines.append(f"{'sum of means':<18} {bd['server_total_mean_ms']:>9.3f}")
    if bd.get("e2e_mean_ms") is not None:
        lines.append(f"{'client mean':<18} {bd['e2e_mean_ms']:>9.3f}")
    for f, s in bd["followers"].items():
        name = f"follower {f} rtt"
        lines.append(f"{name:<18} {s['mean_ms']:>9.3f} {s['p50_ms']:>9.3f} {s['p99_ms']:>9.3f}")
    return "\n".join(lines)
