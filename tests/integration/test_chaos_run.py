"""``boltraft chaos run`` for real: short runs of each family of faults are valid (a
linearizable history, equal replica hashes, no acknowledged write lost, no node exiting on
its own); whatever a run creates is gone when it ends, is interrupted (Ctrl-C) or is killed;
a node exiting on its own is reported. Partitions need network namespaces (root, ``ip``,
``iptables``): those tests are skipped elsewhere, saying why."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from boltraft.chaos.cluster import ChaosCluster
from boltraft.chaos.net import Loopback, clean_stale, namespaces_unsupported

from .cluster import ctrl_c_reaches_it, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NO_NAMESPACES = namespaces_unsupported()
needs_namespaces = pytest.mark.skipif(
    bool(NO_NAMESPACES), reason=f"partitions need network namespaces: {NO_NAMESPACES}"
)
REPORT_KEYS = {
    "faults",
    "faults_total",
    "ops_ok",
    "ops_fail",
    "ops_info",
    "linearizable",
    "replica_hashes_equal",
    "acked_writes_lost",
    "failover_ms",
}


def chaos_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "boltraft", "chaos", "run", *args]


RUN_TIMEOUT_S = 200.0  # under pytest's 300 s, so that an overlong run leaves its evidence


def run_chaos(tmp_path: Path, *args: str, timeout: float = RUN_TIMEOUT_S) -> dict[str, Any]:
    """The JSON report of a ``chaos run`` with ``args`` (its files in tmp_path/out); the
    run must be valid (its node logs are printed when not). A run still going after
    ``timeout`` fails the test with its every thread's stack (``kill -USR1``), its faults,
    its diagnoses and its nodes' logs, after a Ctrl-C that makes it clean up."""
    out = tmp_path / "out"
    proc = subprocess.Popen(
        chaos_argv("--json", "--out", str(out), *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)
        proc.send_signal(signal.SIGINT)
        try:
            stdout, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        print_evidence(out)
        pytest.fail(f"the run took more than {timeout:.0f} s\n{stdout}\n{stderr}")
    if proc.returncode != 0:
        print_evidence(out)
    assert proc.returncode == 0, stdout + stderr
    report = json.loads(stdout)
    assert set(report) >= REPORT_KEYS
    assert report["valid"] is True
    assert report["linearizable"] is True
    assert report["replica_hashes_equal"] is True
    assert report["acked_writes_lost"] == 0
    assert report["unexpected_exits"] == []
    assert report["ops_ok"] > 100
    assert sum(report["faults"].values()) == report["faults_total"]
    # the files of a valid run stay, its data directories do not
    assert (out / "history.jsonl").exists() and (out / "nodes" / "n1.log").exists()
    assert not (out / "nodes" / "n1").exists()
    assert no_process_uses(out)
    assert leftovers(proc.pid) == []
    return report


def print_evidence(out: Path) -> None:
    """Prints what a run left in ``out``: its faults, its diagnoses, its nodes' logs."""
    for name in ("faults.jsonl", *sorted(p.name for p in out.glob("diag-*.json"))):
        if (out / name).exists():
            print(f"===== {name}\n{(out / name).read_text()[-8000:]}")
    for log in sorted((out / "nodes").glob("*.log")):
        print(f"===== {log.name}\n{log.read_text()[-8000:]}")


def no_process_uses(path: Path) -> bool:
    """True when no process's command line names ``path``."""
    needle = str(path).encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline and b"pytest" not in cmdline:
            return False
    return True


def leftovers(pid: int) -> list[str]:
    """The namespaces and links named after runner ``pid`` that still exist."""
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    found = [n.split()[0] for n in names.splitlines() if n.startswith(f"brchaos-{pid}-")]
    found += [
        w for w in links.replace(":", " ").replace("@", " ").split() if w.startswith(f"brc{pid}")
    ]
    return found


def test_a_short_run_of_kills_and_pauses_is_valid(tmp_path: Path) -> None:
    report = run_chaos(tmp_path, "--faults", "kill,pause", "--duration", "30", "--seed", "1")
    assert set(report["faults"]) == {"kill", "pause"}
    assert report["faults_total"] >= 2
    assert report["network"] == "loopback"  # no partition asked for: no namespaces needed
    check = subprocess.run(
        [
            sys.executable,
            "-m",
            "boltraft",
            "chaos",
            "check",
            str(tmp_path / "out" / "history.jsonl"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0 and check.stdout.startswith("linearizable:"), check.stdout


def test_a_short_run_of_slow_disks_transfers_and_membership_changes_is_valid(
    tmp_path: Path,
) -> None:
    report = run_chaos(
        tmp_path, "--faults", "slow-disk,transfer,membership", "--duration", "35", "--seed", "2"
    )
    assert set(report["faults"]) == {"slow-disk", "transfer", "membership"}
    assert report["faults_total"] >= 3


@needs_namespaces
def test_partitions_in_network_namespaces_are_valid_and_leave_nothing(tmp_path: Path) -> None:
    report = run_chaos(tmp_path, "--faults", "partition", "--duration", "25", "--seed", "3")
    assert report["network"] == "netns"
    assert report["faults"]["partition"] >= 2
    assert report["skipped"] == {}
    faults = [json.loads(line) for line in (tmp_path / "out" / "faults.jsonl").open()]
    assert all(f["type"] == "partition" and f["injected"] for f in faults)


def start_runner(tmp_path: Path, faults: str) -> tuple[subprocess.Popen[str], Path]:
    """A long ``chaos run`` in the background, returned once its workload is recording."""
    out = tmp_path / "out"
    proc = subprocess.Popen(
        chaos_argv("--faults", faults, "--duration", "300", "--out", str(out)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=ctrl_c_reaches_it,
    )

    def recording() -> bool:
        assert proc.poll() is None, proc.communicate()
        h = out / "history.jsonl"
        return h.exists() and h.stat().st_size > 2000

    wait_until(recording, 90, "the workload to record operations")
    return proc, out


def finish(proc: subprocess.Popen[str], timeout: float) -> str:
    """The stderr of ``proc`` once it exited; when it does not within ``timeout`` seconds,
    fails with its threads' stacks (``chaos run`` writes them on SIGUSR1)."""
    try:
        return proc.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)
        try:
            proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
        err = proc.communicate()[1]
        pytest.fail(f"chaos run still running {timeout} s after the signal; its stacks:\n{err}")


def test_ctrl_c_stops_the_run_and_removes_everything_it_created(tmp_path: Path) -> None:
    faults = "partition,pause" if not NO_NAMESPACES else "pause"
    proc, out = start_runner(tmp_path, faults)
    if not NO_NAMESPACES:
        assert leftovers(proc.pid)  # its namespaces and links exist while it runs
    proc.send_signal(signal.SIGINT)
    err = finish(proc, 90)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "error: interrupted: interrupted"
    assert no_process_uses(out)
    assert leftovers(proc.pid) == []


def test_a_killed_runner_takes_its_nodes_and_the_next_run_removes_its_network(
    tmp_path: Path,
) -> None:
    faults = "partition,pause" if not NO_NAMESPACES else "pause"
    proc, out = start_runner(tmp_path, faults)
    proc.kill()
    proc.communicate(timeout=30)
    wait_until(lambda: no_process_uses(out), 30, "the nodes to die with their runner")
    if NO_NAMESPACES:
        return
    stale = leftovers(proc.pid)
    assert stale  # nothing removed them yet
    removed = clean_stale()
    assert f"brchaos-{proc.pid}-n1" in removed  # (a veth goes with its namespace)
    assert leftovers(proc.pid) == []


def test_a_node_that_exits_on_its_own_is_reported_and_one_the_runner_stops_is_not(
    tmp_path: Path,
) -> None:
    ids = ["n1", "n2", "n3"]
    c = ChaosCluster(tmp_path, ids, Loopback(ids), {})
    try:
        for nid in ids:
            c.start(nid)
        c.wait_leader(60)
        victim = c.nodes["n2"].proc
        assert victim is not None
        os.kill(victim.pid, signal.SIGKILL)  # not through the cluster: "on its own"
        wait_until(lambda: not c.running("n2"), 30, "n2 to die")
        c.kill("n2")  # a fault the runner injects afterwards does not hide the exit
        c.start("n2")
        c.kill("n1")
        exits = c.reap()
        assert [(e["node"], e["status"]) for e in exits] == [("n2", -signal.SIGKILL)]
        assert "serving on" in exits[0]["log_tail"]
        assert c.reap() == []
        c.start("n1")
        c.wait_leader(60)
    finally:
        c.close()
    assert not any(c.running(nid) for nid in ids)
