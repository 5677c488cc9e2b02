"""``boltraft bench``: the disk, floor, cluster, sweep and report commands.

Thin click wrappers over ``boltraft.benchmark``; docs/benchmarks.md describes each
measurement, its flags and its result keys. They need the ``bench`` extra
(``pip install 'boltraft[bench]'``: HDR histograms, progress bars, charts) and say so in one
line when it is missing. A command that fails prints one line ``error: <code>: <message>``
to stderr and exits with the status of its kind (cli/output.py).

``bench cluster --endpoints`` runs in a bucket of its own (``boltraft-bench-<random>``),
made for the run and deleted after it (kept, and named, with ``--keep``), so the user's
cluster is left as it was.
"""

from __future__ import annotations

import json
import shlex
import sys
import tempfile
from collections.abc import Callable
from typing import Any, NoReturn

import click

from boltraft.errors import BoltraftError, MissingExtraError

from .common import client_keys, keys_option
from .output import emit, fail, one_line, output_options


def _fail(err: BaseException) -> NoReturn:
    if isinstance(err, BoltraftError):
        fail(err)
    fail(BoltraftError(one_line(str(err))))


INSTALL_BENCH = "pip install 'boltraft[bench]'"


def need_extra(*modules: str) -> None:
    """Raises MissingExtraError naming the install command when a module of the bench
    extra is not installed."""
    import importlib.util

    def absent(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is None
        except (ImportError, ValueError):
            return True

    missing = [m for m in modules if absent(m)]
    if missing:
        raise MissingExtraError(
            f"boltraft bench needs the bench extra ({', '.join(missing)} missing): {INSTALL_BENCH}"
        )


def _numbers(text: str, what: str, cast: Callable[[str], Any]) -> list[Any]:
    try:
        values = [cast(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}", param_hint=what)
    if not values:
        raise click.BadParameter("expected at least one number", param_hint=what)
    return values


def _print_result(run: Callable[[], dict[str, Any]], fmt: Callable[[dict[str, Any]], str]) -> None:
    """Prints ``run()``'s result as one JSON object (``-w json``), a table of its top-level
    values (``-w table``) or as ``fmt`` formats it; a BoltraftError becomes one error line."""
    try:
        res = run()
    except BoltraftError as err:
        _fail(err)
    emit(
        res,
        table=(
            ["KEY", "VALUE"],
            [[k, json.dumps(v) if isinstance(v, (dict, list)) else v] for k, v in res.items()],
        ),
        simple=lambda: click.echo(fmt(res)),
    )


@click.group("bench")
def bench_group() -> None:
    """Measure the disk, the write floor, a cluster, and what a slow disk does to commit latency."""


@bench_group.command("disk")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False))
@click.option("--count", default=500, show_default=True, help="Operations per test.")
@click.option("--size", default=512, show_default=True, help="Bytes per append / put.")
@output_options
def disk_cmd(directory: str, count: int, size: int) -> None:
    """fsync / fdatasync / durable LMDB commit latency in DIR, with a verdict."""
    need_extra("hdrh")
    from boltraft.benchmark.disk import format_disk_result, run_disk_bench

    _print_result(lambda: run_disk_bench(directory, count=count, size=size), format_disk_result)


@bench_group.command("floor")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False))
@click.option("--writes", default=2000, show_default=True, help="Timed writes per run.")
@click.option("--size", default=100, show_default=True, help="Bytes per value.")
@output_options
def floor_cmd(directory: str, writes: int, size: int) -> None:
    """The least a replicated write costs here: the bare ZeroMQ and fdatasync path in DIR."""
    need_extra("hdrh")
    from boltraft.benchmark.floor import format_floor_result, run_floor_bench

    _print_result(lambda: run_floor_bench(directory, writes=writes, size=size), format_floor_result)


@bench_group.command("report")
@click.argument("results", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out-dir", default="bench-report", show_default=True, type=click.Path())
@output_options
def report_cmd(results: tuple[str, ...], out_dir: str) -> None:
    """Render PNG charts from result JSON files (bench cluster/sweep --out, disk --json)."""
    need_extra("hdrh", "matplotlib")
    from boltraft.benchmark.report import render

    try:
        paths = render(list(results), out_dir)
    except BoltraftError as err:
        _fail(err)
    emit(
        [str(p) for p in paths],
        table=(["CHART"], [[str(p)] for p in paths]),
        simple=lambda: click.echo("\n".join(str(p) for p in paths)),
    )


def _workload_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--workload", type=click.Choice(["write", "read", "mixed"]), default="write"),
        click.option("--read-ratio", default=0.5, show_default=True, help="Reads in mixed."),
        click.option("--value-size", default=100, show_default=True, help="Bytes per value."),
        click.option(
            "--key-space", default=1000, show_default=True, help="Distinct keys written/read."
        ),
        click.option("--processes", default=0, help="Client processes [min(clients, cpus)]."),
        click.option("--duration", type=float, help="Seconds per run [5 unless --ops]."),
        click.option("--ops", type=int, help="Total operations per run instead of a duration."),
        click.option("--rate", type=float, help="Total ops/s limit (default: closed loop)."),
        click.option(
            "--read-level", type=click.Choice(["linearizable", "stale"]), default="linearizable"
        ),
        click.option("--out", "out_file", type=click.Path(dir_okay=False), help="Result JSON."),
        click.option("--no-progress", is_flag=True, help="No progress bar."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _spec(kw: dict[str, Any]) -> Any:
    from boltraft.benchmark.workload import WorkloadSpec

    return WorkloadSpec(
        workload=kw["workload"],
        read_ratio=kw["read_ratio"],
        value_size=kw["value_size"],
        key_space=kw["key_space"],
        processes=kw["processes"],
        duration_s=kw["duration"],
        ops=kw["ops"],
        rate=kw["rate"],
        read_level=kw["read_level"],
    ).validate()


def _progress(enabled: bool) -> Any:
    """The progress bars of the runs: drawn on stderr only when it is a terminal."""
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    def make(spec: Any, label: str) -> Callable[[int, float], None]:
        by_ops = spec.ops is not None
        bar = tqdm(
            total=spec.ops if by_ops else spec.duration_s,
            desc=label,
            unit="op" if by_ops else "s",
            file=sys.stderr,
            leave=False,
            bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} [{elapsed}<{remaining}{postfix}]",
        )

        def update(done: int, elapsed: float) -> None:
            bar.n = min(done, spec.ops) if by_ops else min(elapsed, spec.duration_s)
            bar.set_postfix_str(f"{done} ops", refresh=False)
            bar.refresh()
            if (by_ops and done >= spec.ops) or (not by_ops and elapsed >= spec.duration_s):
                bar.close()

        return update

    return make


def _run_in_own_bucket(
    spec: Any, counts: list[int], eps: list[str], keep: bool, progress: Any, keys: Any
) -> list[dict[str, Any]]:
    """The runs against ``eps`` in a new bucket of their own, deleted after (unless
    ``keep``: then its name is printed), every client with the client keys ``keys``
    (None: no CURVE)."""
    import secrets

    from boltraft.benchmark import clusterbench
    from boltraft.client import Client

    bucket = f"boltraft-bench-{secrets.token_hex(4)}"
    with Client(eps, timeout=30.0, keys=keys) as c:
        c.create_bucket(bucket)  # refused if it exists: it is the benchmark's own
    try:
        return clusterbench.run_series(
            spec, counts, eps, nodes=None, progress=progress, bucket=bucket, keys=keys
        )
    finally:
        if keep:
            click.echo(f"the benchmark's keys are kept in bucket {bucket}", err=True)
        else:
            with Client(eps, timeout=30.0, keys=keys) as c:
                c.delete_bucket(bucket)


def _finish(
    kind: str, runs: list[dict[str, Any]], out_file: str | None, floor: dict[str, Any] | None = None
) -> None:
    from boltraft.benchmark import breakdown, result
    from boltraft.benchmark.clusterbench import format_runs

    if out_file:  # first: the measurements must survive a closed stdout
        cmd = "boltraft " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        doc = result.new_document(kind, runs, cmd)
        if floor is not None:
            doc["floor"] = floor
        result.write(out_file, doc)
    click.echo(format_runs(runs))
    for run in runs:
        if run.get("stages"):
            click.echo("")
            click.echo(f"[{run['label']}] " + breakdown.format_table(run["stages"]))
    if floor is not None:
        click.echo(
            f"\nwrite floor of this machine (boltraft bench floor, one client): p50 "
            f"{floor['floor_write_c1_p50_ms']:.3f} ms = hops {floor['floor_hops_c1_p50_ms']:.3f}"
            f" + disk {floor['floor_disk_share_p50_ms']:.3f} ms"
        )
    if out_file:
        click.echo(f"\nresult written to {out_file}")


@bench_group.command("cluster")
@click.option("--nodes", default=3, show_default=True, help="Local cluster size.")
@click.option("--endpoints", help="Use a running cluster instead (comma-separated).")
@click.option("--clients", default="1", show_default=True, help="Clients, or a list: 1,16,64.")
@click.option("--fsync-delay", help="TEST KNOB for the local cluster: fixed:MS | uniform:LO-HI.")
@click.option("--floor", is_flag=True, help="Measure this machine's write floor first.")
@click.option("--floor-writes", default=2000, show_default=True, help="Timed writes of the floor.")
@click.option(
    "--keep", is_flag=True, help="With --endpoints: keep the benchmark's bucket after the run."
)
@keys_option
@_workload_options
@click.pass_context
def cluster_cmd(
    ctx: click.Context,
    nodes: int,
    endpoints: str | None,
    clients: str,
    fsync_delay: str | None,
    floor: bool,
    floor_writes: int,
    keep: bool,
    **kw: Any,
) -> None:
    """Drive a workload against a local cluster (started here) or --endpoints (in a bucket
    of its own, deleted after the run unless --keep; --keys DIR for a cluster with CURVE)."""
    need_extra("hdrh", "tqdm")
    from boltraft.benchmark import clusterbench
    from boltraft.benchmark.floor import run_floor_bench

    source = ctx.get_parameter_source("nodes")
    nodes_given = source is not None and source != click.core.ParameterSource.DEFAULT

    counts = _numbers(clients, "--clients", int)
    if endpoints:
        if fsync_delay:
            raise click.UsageError("--fsync-delay applies to a local cluster only")
        if floor:
            raise click.UsageError("--floor measures this machine: a local cluster only")
        if nodes_given:
            raise click.UsageError("--nodes sizes a local cluster: not with --endpoints")
    elif keep:
        raise click.UsageError("--keep applies to --endpoints only")
    elif ctx.get_parameter_source("keys") == click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("--keys applies to --endpoints only")
    floor_res = None
    try:
        spec = _spec(kw)
        progress = _progress(not kw["no_progress"])
        if endpoints:
            eps = [e.strip() for e in endpoints.split(",") if e.strip()]
            runs = _run_in_own_bucket(spec, counts, eps, keep, progress, client_keys())
        else:
            if floor:  # where the local cluster keeps its data: the system's temporary folder
                floor_res = run_floor_bench(
                    tempfile.gettempdir(), writes=floor_writes, size=spec.value_size
                )
            runs = clusterbench.run_local(
                spec, counts, nodes=nodes, fsync_delay=fsync_delay, progress=progress
            )
    except (BoltraftError, RuntimeError) as err:
        _fail(err)
    _finish("cluster", runs, kw["out_file"], floor_res)


@bench_group.command("sweep")
@click.option("--nodes", default=3, show_default=True, help="Local cluster size.")
@click.option("--clients", default="1", show_default=True, help="Clients, or a list: 1,16.")
@click.option("--delays", default="0,1,2,5,10,20", show_default=True, help="Injected ms.")
@_workload_options
def sweep_cmd(nodes: int, clients: str, delays: str, **kw: Any) -> None:
    """Run the cluster benchmark at each injected fsync delay (a fresh cluster each)."""
    need_extra("hdrh", "tqdm")
    from boltraft.benchmark import clusterbench

    counts = _numbers(clients, "--clients", int)
    delay_list = _numbers(delays, "--delays", float)
    if kw["duration"] is None and kw["ops"] is None:
        kw["duration"] = 3.0
    try:
        spec = _spec(kw)
        runs = clusterbench.run_sweep(
            spec, counts, delay_list, nodes=nodes, progress=_progress(not kw["no_progress"])
        )
    except (BoltraftError, RuntimeError) as err:
        _fail(err)
    _finish("sweep", runs, kw["out_file"])


def register(group: click.Group) -> None:
    """Adds ``bench`` to ``group``."""
    group.add_command(bench_group)
