"""``boltraft bench report``: PNG charts drawn from result documents.

Charts (each written only when some input has the data it needs):

- ``latency_cdf.png``: the cumulative distribution of operation latency, one line per run
  (writes and reads apart when a run has both);
- ``disk_latency_cdf.png``: fsync / fdatasync / WAL append / LMDB commit distributions of
  disk results;
- ``throughput_vs_clients.png``: ops/s and write p50/p99 against the number of clients, one
  line per series of runs that differ only in their client count;
- ``latency_vs_fsync_delay.png``: write p50/p99 latency and ops/s against the injected fsync
  delay (``bench sweep``);
- ``stage_breakdown.png``: stacked bars of the mean time per commit stage, one bar per run.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from boltraft.benchmark import result
from boltraft.benchmark.disk import DISK_TESTS
from boltraft.errors import BadRequestError

DPI = 110
_PLAIN = matplotlib.ticker.FuncFormatter(lambda v, _pos: f"{v:g}")


def _color(i: int) -> Any:
    return plt.get_cmap("tab10")(i % 10)


def _runs(docs: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """Returns (display label, run) for every run; labels carry the file name when needed.

    Each run is a shallow copy with ``_source`` (its file) added, so series never mix files.
    """
    many = len([d for _, d in docs if d["kind"] != "disk"]) > 1
    out = []
    for name, doc in docs:
        if doc["kind"] == "disk":
            continue
        for run in doc["runs"]:
            label = str(run["label"])
            out.append((f"{Path(name).stem}: {label}" if many else label, run | {"_source": name}))
    return out


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _cdf_axes(ax: Any, title: str) -> None:
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("fraction of operations at or below")
    ax.set_ylim(0, 1.01)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize="small", loc="lower right")


def latency_cdf(runs: list[tuple[str, dict[str, Any]]], out: Path) -> Path | None:
    """Draws ``latency_cdf.png`` in ``out``; None (nothing drawn) when no run recorded a
    latency."""
    fig, ax = plt.subplots(figsize=(8, 5))
    drawn = 0
    for label, run in runs:
        lat = run["latency"]
        kinds = [k for k in ("write", "read") if lat.get(k, {}).get("cdf")]
        for kind in kinds:
            pts = lat[kind]["cdf"]
            name = f"{label} ({kind})" if len(kinds) > 1 else label
            ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", label=name)
            drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    _cdf_axes(ax, "Operation latency, cumulative distribution")
    return _save(fig, out / "latency_cdf.png")


def disk_cdf(docs: list[tuple[str, dict[str, Any]]], out: Path) -> Path | None:
    """Draws ``disk_latency_cdf.png`` in ``out``; None when there is no disk result."""
    disks = [(n, d) for n, d in docs if d["kind"] == "disk"]
    if not disks:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, doc in disks:
        for test in DISK_TESTS:
            pts = doc.get(test, {}).get("cdf") or []  # older results have no wal_append
            if pts:
                label = f"{Path(name).stem}: {test}" if len(disks) > 1 else test
                ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", label=label)
    ax.axvline(10.0, color="red", linestyle="--", linewidth=1, label="etcd guidance: p99 < 10 ms")
    _cdf_axes(ax, "Disk sync latency, cumulative distribution")
    return _save(fig, out / "disk_latency_cdf.png")


def _series_key(run: dict[str, Any], skip: str) -> tuple[Any, ...]:
    cfg = run["config"]
    keys = ("workload", "read_ratio", "value_size", "nodes", "fsync_delay", "clients")
    return ("source", run.get("_source")), *((k, str(cfg.get(k))) for k in keys if k != skip)


def throughput_vs_clients(runs: list[tuple[str, dict[str, Any]]], out: Path) -> Path | None:
    """Draws ``throughput_vs_clients.png`` in ``out``; None when no series has two client
    counts or more."""
    series: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for _, run in runs:
        series[_series_key(run, "clients")].append(run)
    series = {k: v for k, v in series.items() if len({r["config"]["clients"] for r in v}) > 1}
    if not series:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 5))
    many_sources = len({dict(k)["source"] for k in series}) > 1
    for i, (key, items) in enumerate(series.items()):
        items.sort(key=lambda r: r["config"]["clients"])
        xs = [r["config"]["clients"] for r in items]
        cfg = dict(key)
        delay = "" if cfg["fsync_delay"] == "None" else f" delay {cfg['fsync_delay']}"
        src = f"{Path(cfg['source']).stem}: " if many_sources else ""
        name = f"{src}{cfg['workload']} {cfg['value_size']}B{delay}"
        color = _color(i)
        ax1.plot(xs, [r["ops_per_s"] for r in items], marker="o", color=color, label=name)
        lat = "write" if items[0]["latency"]["write"]["count"] else "read"
        p50 = [r["latency"][lat]["p50_ms"] for r in items]
        ax2.plot(xs, p50, marker="o", color=color, label=name)
        p99 = [r["latency"][lat]["p99_ms"] for r in items]
        ax2.plot(xs, p99, marker="^", ls="--", color=color)
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(_PLAIN)
        ax.set_xlabel("concurrent clients")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="x-small")
    ax1.set_ylabel("operations / s")
    ax1.set_title("Throughput versus clients")
    ax2.set_yscale("log")
    ax2.yaxis.set_major_formatter(_PLAIN)
    ax2.set_ylabel("latency (ms, log scale)")
    ax2.set_title("Latency versus clients (solid p50, dashed p99)")
    return _save(fig, out / "throughput_vs_clients.png")


def latency_vs_delay(runs: list[tuple[str, dict[str, Any]]], out: Path) -> Path | None:
    """Draws ``latency_vs_fsync_delay.png`` in ``out``; None when no series (write runs that
    differ only in their injected delay) has two runs or more."""
    series: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for _, run in runs:
        if run["config"].get("fsync_delay_ms") is not None and run["latency"]["write"]["count"]:
            series[_series_key(run, "fsync_delay")].append(run)
    series = {k: v for k, v in series.items() if len(v) > 1}
    if not series:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 5))
    many_sources = len({dict(k)["source"] for k in series}) > 1
    for i, (key, items) in enumerate(series.items()):
        items.sort(key=lambda r: r["config"]["fsync_delay_ms"])
        xs = [r["config"]["fsync_delay_ms"] for r in items]
        cfg = dict(key)
        src = f"{Path(cfg['source']).stem}: " if many_sources else ""
        name = f"{src}{cfg['workload']} c{cfg['clients']}"
        color = _color(i)
        w = [r["latency"]["write"] for r in items]
        ax1.plot(xs, [s["p50_ms"] for s in w], marker="o", color=color, label=f"{name} p50")
        ax1.plot(xs, [s["p99_ms"] for s in w], marker="^", ls="--", color=color, label="p99")
        ax2.plot(xs, [r["ops_per_s"] for r in items], marker="o", color=color, label=name)
    top = max(max(r["config"]["fsync_delay_ms"] for r in v) for v in series.values())
    ax1.plot([0, top], [0, top], color="grey", lw=1, ls=":", label="y = injected delay")
    ax1.set_ylabel("write commit latency (ms)")
    ax1.set_title("Commit latency versus injected fsync delay")
    ax2.set_ylabel("operations / s")
    ax2.set_title("Throughput versus injected fsync delay")
    for ax in (ax1, ax2):
        ax.set_xlabel("injected delay per log fsync (ms)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    return _save(fig, out / "latency_vs_fsync_delay.png")


def stage_breakdown(runs: list[tuple[str, dict[str, Any]]], out: Path) -> Path | None:
    """Draws ``stage_breakdown.png`` in ``out``; None when no run carries a stage
    breakdown."""
    with_stages = [(label, run) for label, run in runs if run.get("stages")]
    if not with_stages:
        return None
    order: list[str] = []
    for _, run in with_stages:
        for name in run["stages"]["order"]:
            if name not in order:
                order.append(name)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(with_stages) + 4), 5))
    xs = list(range(len(with_stages)))
    bottoms = [0.0] * len(with_stages)
    colors = plt.get_cmap("tab10")
    for i, name in enumerate(order):
        vals = [run["stages"]["stages"].get(name, {}).get("mean_ms", 0.0) for _, run in with_stages]
        ax.bar(xs, vals, bottom=bottoms, label=name, color=colors(i % 10), width=0.6)
        bottoms = [b + v for b, v in zip(bottoms, vals, strict=True)]
    e2e = [run["latency"]["write"]["mean_ms"] for _, run in with_stages]
    lo, hi = [x - 0.38 for x in xs], [x + 0.38 for x in xs]
    ax.hlines(e2e, lo, hi, colors="black", linewidth=2, zorder=3, label="client mean latency")
    ax.set_xticks(xs, [label for label, _ in with_stages], rotation=20, ha="right")
    ax.set_ylabel("mean time per write (ms)")
    ax.set_title("Where a commit's time goes (stage means, stacked)")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, out / "stage_breakdown.png")


def render(paths: list[str | os.PathLike[str]], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Draws every chart the result files ``paths`` have data for into ``out_dir`` (created
    if missing) and returns the PNG files written.

    Raises BadRequestError when a file is not a result (see ``result.load``) or when none of
    the inputs has data for any chart; nothing is written then.
    """
    if not paths:
        raise BadRequestError("no result files given")
    docs = [(str(p), result.load(p)) for p in paths]
    runs = _runs(docs)
    if not runs and not any(d["kind"] == "disk" for _, d in docs):
        raise BadRequestError("the result files hold no runs to chart")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [
        latency_cdf(runs, out),
        disk_cdf(docs, out),
        throughput_vs_clients(runs, out),
        latency_vs_delay(runs, out),
        stage_breakdown(runs, out),
    ]
    return [p for p in written if p is not None]
