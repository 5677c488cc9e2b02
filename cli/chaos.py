"""``boltraft chaos``: histories of register operations and their linearizability
(docs/chaos.md).

``chaos check HISTORY`` reads a JSON Lines history (boltraft.chaos.history) and checks it
(boltraft.chaos.check). Its exit status: 0 linearizable, 1 not linearizable (the failure
window is printed), 2 bad input (one line ``error: <code>: <message>`` on stderr), 3
undecided within ``--timeout``.

``chaos run`` starts a cluster, drives a workload under faults and prints the report of
``boltraft.chaos.run`` (``-w/--write-out``, ``--json``). Its exit status: 0 when the run is
valid, 1 when it is not (not linearizable, replicas that differ, an acknowledged write lost,
a node that exited on its own), 3 when the history was undecided and nothing else failed;
a run that could not be set up fails with its error line (cli/output.py).

The group is ``chaos_group``; ``register`` adds it to ``boltraft``.
"""

from __future__ import annotations

import faulthandler
import json
import signal
from typing import TYPE_CHECKING, Any

import click

from boltraft.errors import BoltraftError

from .output import emit, output_options

if TYPE_CHECKING:
    from boltraft.chaos.check import CheckResult, Window

EXIT_LINEARIZABLE = 0
EXIT_NOT_LINEARIZABLE = 1
EXIT_BAD_INPUT = 2
EXIT_UNDECIDED = 3
MAX_ROWS = 200  # window rows printed in plain output (all of them with --json)


FAULT_NAMES = "kill,pause,partition,slow-disk,transfer,membership"


@click.group("chaos")
def chaos_group() -> None:
    """Test a cluster under faults, and check histories for linearizability."""


@chaos_group.command("check")
@click.argument("history", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead.")
@click.option(
    "--timeout",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds the search may take; a key not decided by then is undecided (exit 3).",
)
def check_cmd(history: str, as_json: bool, timeout: float) -> None:
    """Check that the history in HISTORY (JSON Lines; - for stdin) is linearizable, one
    register per key. Exit status: 0 linearizable, 1 not (the failing operations are
    printed), 2 bad input, 3 undecided within --timeout."""
    from boltraft.chaos.check import check
    from boltraft.chaos.history import parse_history, read_history

    try:
        if history == "-":
            with click.open_file("-", "rb") as stdin:
                ops = parse_history(stdin)
        else:
            ops = read_history(history)
    except BoltraftError as err:
        message = " ".join(str(err.message).split())
        click.echo(f"error: {err.code}: {message}", err=True)
        raise click.exceptions.Exit(EXIT_BAD_INPUT)
    result = check(ops, timeout=timeout)
    if as_json:
        click.echo(json.dumps(result.to_json(), sort_keys=True))
    else:
        click.echo(format_result(result, timeout))
    if result.linearizable is None:
        raise click.exceptions.Exit(EXIT_UNDECIDED)
    raise click.exceptions.Exit(EXIT_LINEARIZABLE if result.linearizable else EXIT_NOT_LINEARIZABLE)


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def _value(v: Any) -> str:
    return json.dumps(list(v) if isinstance(v, tuple) else v)


def format_result(result: CheckResult, timeout: float) -> str:
    """The plain-text report of ``chaos check``."""
    keys = result.keys
    tally = (
        f"{_count(result.ops, 'operation')} on {_count(len(keys), 'key')} in {result.seconds:.2f} s"
    )
    if result.linearizable:
        segments = sum(k.segments for k in keys.values())
        return f"linearizable: {tally} ({_count(segments, 'quiescent segment')})"
    if result.linearizable is None:
        open_keys = [json.dumps(k) for k, r in keys.items() if r.linearizable is None]
        return (
            f"undecided: {_count(len(open_keys), 'key')} not decided within {timeout:g} s "
            f"({', '.join(open_keys)}); {tally}; try a larger --timeout"
        )
    bad = [json.dumps(k) for k, r in keys.items() if r.linearizable is False]
    lines = [f"not linearizable: {', '.join(bad)}; {tally}"]
    if result.failure is not None:
        lines += format_window(result.failure)
    return "\n".join(lines)


def format_window(w: Window) -> list[str]:
    """The failure window as lines of text: what it is, then one row per operation."""
    key = json.dumps(w.key)
    if w.start is None:
        since = "from the start of the history (the key absent)"
    else:
        since = f"whatever {key} held at time {w.start}"
    lines = [
        f"key {key}: these {_count(len(w.ops), 'operation')} up to time {w.end} have no "
        f"legal order, {since}"
        + ("" if w.minimal else " (not the smallest such window: out of time)"),
    ]
    rows = [("", "line", "process", "f", "value", "type", "invoke", "complete")]
    for op, optional in w.ops:
        complete = "-" if op.complete is None else str(op.complete)
        rows.append(
            (
                "?" if optional else ("*" if op is w.blocked else ""),
                str(op.line),
                str(op.process),
                op.f,
                _value(op.value),
                op.type,
                str(op.invoke),
                complete,
            )
        )
    shown = (
        rows if len(rows) <= MAX_ROWS + 1 else rows[: MAX_ROWS // 2 + 1] + rows[-MAX_ROWS // 2 :]
    )
    widths = [max(len(r[i]) for r in shown) for i in range(len(rows[0]))]
    for n, row in enumerate(shown):
        if len(shown) < len(rows) and n == MAX_ROWS // 2 + 1:
            lines.append(f"  ... {len(rows) - len(shown)} more ...")
        lines.append("  " + "  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip())
    lines.append(
        "  (* the operation whose return the search could not get past; ? unknown outcome, "
        "or pending at an edge of the window: it may or may not be part of it)"
    )
    return lines


@chaos_group.command("run")
@click.option(
    "--nodes", default=3, show_default=True, type=click.IntRange(1, 9), help="Nodes in the cluster."
)
@click.option(
    "--faults",
    default=None,
    help=f"Comma-separated faults from {FAULT_NAMES} [all the machine supports].",
)
@click.option(
    "--duration",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds of workload under faults.",
)
@click.option(
    "--clients",
    default=5,
    show_default=True,
    type=click.IntRange(min=1),
    help="Concurrent clients.",
)
@click.option(
    "--keys",
    default=5,
    show_default=True,
    type=click.IntRange(min=1),
    help="Keys (registers) the clients work on.",
)
@click.option(
    "--seed", default=None, type=int, help="Seed of the workload and the faults [random]."
)
@click.option(
    "--out",
    default=None,
    type=click.Path(file_okay=False),
    help="Directory for the history, fault log, node logs and report (data directories "
    "kept only when the run fails) [a temporary directory, removed unless the run fails].",
)
@output_options
def run_cmd(
    nodes: int,
    faults: str | None,
    duration: float,
    clients: int,
    keys: int,
    seed: int | None,
    out: str | None,
) -> None:
    """Start a cluster of NODES real 'boltraft serve' processes, run a workload of
    linearizable reads, writes and compare-and-sets from CLIENTS clients on KEYS keys for
    DURATION seconds while injecting faults one at a time, then heal, check the history
    and compare the replicas' hashes. Partitions need root (network namespaces and
    iptables); faults the machine cannot inject are skipped and named. Exit status: 0 valid,
    1 not valid, 3 history undecided."""
    from pathlib import Path

    from boltraft.chaos.run import RunOptions, parse_faults, run
    from boltraft.errors import UsageError

    try:
        fault_list = parse_faults(faults)
    except BoltraftError as err:
        raise UsageError(f"--faults: {err.message}") from None
    opts = RunOptions(
        nodes=nodes,
        faults=fault_list,
        duration=duration,
        clients=clients,
        keys=keys,
        seed=seed,
        out=None if out is None else Path(out),
    )
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1: every stack
    report = run(opts)
    shown = {k: v for k, v in report.items() if k != "errors"}
    rows = [(k, _cell(v)) for k, v in sorted(shown.items())]
    emit(report, table=(["KEY", "VALUE"], rows), simple=lambda: click.echo(format_report(report)))
    if report["valid"]:
        return
    others_ok = (
        report["replica_hashes_equal"]
        and report["acked_writes_lost"] == 0
        and not report["unexpected_exits"]
    )
    undecided = report["linearizable"] is None and others_ok
    raise click.exceptions.Exit(EXIT_UNDECIDED if undecided else EXIT_NOT_LINEARIZABLE)


def _cell(v: Any) -> str:
    if isinstance(v, dict):
        return " ".join(f"{k}={_cell(x)}" for k, x in v.items()) or "-"
    if isinstance(v, list):
        return "; ".join(_cell(x) for x in v) or "-"
    return json.dumps(v) if isinstance(v, (bool, type(None))) else str(v)


def format_report(r: dict[str, Any]) -> str:
    """The plain-text report of ``chaos run``."""
    faults = " ".join(f"{k}={v}" for k, v in r["faults"].items()) or "none"
    fo = r["failover_ms"]
    lines = [
        f"faults: {faults} ({r['faults_total']} in all)",
        f"ops: ok={r['ops_ok']} fail={r['ops_fail']} info={r['ops_info']}",
        f"linearizable: {_cell(r['linearizable'])}",
        f"replica_hashes_equal: {_cell(r['replica_hashes_equal'])}",
        f"acked_writes_lost: {r['acked_writes_lost']}",
        f"failover_ms: p50={_cell(fo['p50'])} max={_cell(fo['max'])} "
        f"({_count(fo['samples'], 'leader kill')})",
    ]
    for fault, why in r["skipped"].items():
        lines.append(f"skipped: {fault}: {why}")
    for ex in r["unexpected_exits"]:
        lines.append(f"unexpected exit: {ex['node']} with status {ex['status']}")
    if r["recovery_timeouts"]:
        lines.append(f"recovery_timeouts: {r['recovery_timeouts']}")
    for error in r.get("fault_errors", []):
        lines.append(f"fault error: {error}")
    where = f"; files in {r['out']}" if r["out"] else ""
    lines.append(f"{'valid' if r['valid'] else 'NOT VALID'} (seed {r['seed']}{where})")
    return "\n".join(lines)


def register(group: click.Group) -> None:
    """Adds ``chaos`` to ``group``."""
    group.add_command(chaos_group)
