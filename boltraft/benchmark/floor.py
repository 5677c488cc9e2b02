"""``boltraft bench floor``: the floor of a replicated write on this machine.

It measures what the smallest program doing a write's travels and flushes costs, with no
Raft, no encoding and no state machine, so that a cluster's figures can be read against it.

One closed-loop client (this process) and three role processes on 127.0.0.1, wired as a
3-node cluster's write path is: the client's DEALER sends a record (an 8-byte big-endian
sequence number and ``size`` bytes of value) to the leader's ROUTER; the leader sends it to
each follower's ROUTER over one DEALER per follower, then ``pwrite``s it into its own
preallocated file and ``fdatasync``s; each follower does the same and answers the sequence
number; at the first answer (its own flush being done: a majority of three) the leader
answers the client. That is four ZeroMQ hops and two flushes in series, the least a
replicated write needs; a boltraft write adds Raft, its log's encoding, the apply and the
client protocol on top.

``run_floor_bench`` measures it twice: ``write`` with every role flushing, and ``hops`` with
no flush at all (the ZeroMQ hops and Python alone; the difference is the disk's share).

Each role process (``python -m boltraft.benchmark.floor follower|leader ...``) prints the
endpoint it bound as its first line and, when the client's stop reaches it, one JSON line
with the records it wrote and the CPU seconds it used meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import zmq

from boltraft.benchmark import hist
from boltraft.benchmark.disk import MAX_COUNT, MAX_SIZE
from boltraft.benchmark.result import SCHEMA, host_info
from boltraft.errors import BadRequestError, RequestTimeoutError, UnavailableError
from boltraft.storage.wal import files

STOP = b"stop"  # the client's last message: shorter than any record (8 + size >= 9 bytes)
WARMUP = 50  # unrecorded writes first: connections, first pages, caches
START_TIMEOUT_S = 15.0
WRITE_TIMEOUT_S = 10.0  # one write unanswered this long: a role process is stuck or gone
SEQ_BYTES = 8


def _cpu_s() -> float:
    """Returns the CPU seconds (user + system, every thread) this process has used."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class _RecordFile:
    """A role's file, opened and preallocated as the WAL's segments are: records written
    one after another, each flushed when ``fsync``."""

    def __init__(self, path: Path, fsync: bool, records: int, record_bytes: int) -> None:
        self.fd = files.open_segment(path, create=True)
        self.fsync = fsync
        self.offset = 0
        self.written = 0  # records
        if files.preallocate(self.fd, 0, max(1 << 20, records * record_bytes)):
            os.fsync(self.fd)  # the reservation is durable before the first timed flush

    def write(self, record: bytes) -> None:
        """Writes ``record`` after the last one, and flushes it when ``fsync``."""
        os.pwrite(self.fd, record, self.offset)
        self.offset += len(record)
        self.written += 1
        if self.fsync:
            os.fdatasync(self.fd)


def _report(written: int, cpu0: float) -> None:
    """Prints a role's report line: the records written and the CPU seconds used since
    ``cpu0``."""
    print(json.dumps({"records": written, "cpu_s": _cpu_s() - cpu0}), flush=True)


def _router() -> tuple[zmq.Context, zmq.Socket]:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind("tcp://127.0.0.1:*")
    print(sock.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
    return ctx, sock


def serve_follower(path: Path, fsync: bool, records: int, record_bytes: int) -> None:
    """Runs a follower until the stop: writes each record received, flushes it (when
    ``fsync``) and answers its sequence number to the sender."""
    log = _RecordFile(path, fsync, records, record_bytes)
    ctx, sock = _router()
    cpu0 = _cpu_s()
    try:
        while True:
            ident, record = sock.recv_multipart()
            if record == STOP:
                break
            log.write(record)
            sock.send_multipart([ident, record[:SEQ_BYTES]])
        _report(log.written, cpu0)
    finally:
        os.close(log.fd)
        ctx.destroy(linger=0)


def serve_leader(
    path: Path, fsync: bool, peers: list[str], records: int, record_bytes: int
) -> None:
    """Runs the leader until the stop, which it passes on to the followers: sends each
    client record to every follower, writes and flushes it itself, and answers the client
    at the first follower's acknowledgement."""
    log = _RecordFile(path, fsync, records, record_bytes)
    ctx, client_sock = _router()
    followers = []
    for addr in peers:
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(addr)
        followers.append(dealer)
    poller = zmq.Poller()
    for sock in (client_sock, *followers):
        poller.register(sock, zmq.POLLIN)
    waiting: dict[bytes, bytes] = {}  # sequence number -> the client's routing id
    cpu0 = _cpu_s()
    try:
        while True:
            for sock, _ in poller.poll():
                if sock is client_sock:
                    ident, record = client_sock.recv_multipart()
                    for dealer in followers:
                        dealer.send(record)  # before its own write, as a Raft leader does
                    if record == STOP:
                        _report(log.written, cpu0)
                        return
                    log.write(record)
                    waiting[record[:SEQ_BYTES]] = ident
                else:
                    seq = sock.recv()
                    ident = waiting.pop(seq, b"")  # the second acknowledgement finds none
                    if ident:
                        client_sock.send_multipart([ident, seq])
    finally:
        os.close(log.fd)
        ctx.destroy(linger=1000)  # the stop sent to the followers must leave first


class _Role:
    """One role process: started, its endpoint read, its report read after the stop."""

    def __init__(self, name: str, argv: list[str], work: Path) -> None:
        self.name = name
        self._err_path = work / f"{name}.err"
        with open(self._err_path, "wb") as err:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err)
        self._buf = b""

    def line(self, deadline: float) -> bytes:
        """Returns the next line the process printed (without its newline).

        Raises ``UnavailableError`` when it exits first, ``RequestTimeoutError`` past
        ``deadline`` (``time.monotonic``)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RequestTimeoutError(f"floor: the {self.name} process did not answer")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise UnavailableError(f"floor: the {self.name} process failed: {self.err()}")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def err(self) -> str:
        """Returns the last line the process wrote to its standard error ("" when none)."""
        try:
            lines = self._err_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1] if lines else ""

    def stop(self, kill: bool) -> None:
        """Waits until the process is gone: kills it at once (``kill``), or when it does not
        end by itself within 5 s."""
        if kill and self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def run_floor(work: Path, writes: int, size: int, fsync: bool) -> dict[str, Any]:
    """Returns one floor measurement in the empty directory ``work``: ``p50_ms`` /
    ``p90_ms`` / ``p99_ms`` of ``writes`` client writes (after ``WARMUP`` unrecorded ones),
    ``leader_cpu_us_per_op``, ``follower_cpu_us_per_op`` (the two followers' mean) and
    ``client_cpu_us_per_op``, and ``records``: what each role wrote (role -> count).

    Raises ``UnavailableError`` when a role process fails, ``RequestTimeoutError`` when one
    does not answer; the role processes are gone when it returns or raises."""
    total = WARMUP + writes
    common = ["--fsync", "1" if fsync else "0", "--records", str(total), "--size", str(size)]
    module = [sys.executable, "-m", "boltraft.benchmark.floor"]
    roles: list[_Role] = []
    ctx = zmq.Context()
    reports: dict[str, dict[str, Any]] = {}
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        for name in ("follower1", "follower2"):
            argv = [*module, "follower", "--file", str(work / name), *common]
            roles.append(_Role(name, argv, work))
        peers = [role.line(deadline).decode() for role in roles]
        argv = [*module, "leader", "--file", str(work / "leader"), *common]
        for addr in peers:
            argv += ["--peer", addr]
        leader = _Role("leader", argv, work)
        roles.insert(0, leader)
        addr = leader.line(deadline).decode()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(addr)
        value = os.urandom(size)
        clock = time.perf_counter
        lat: list[float] = []
        cpu0 = 0.0
        for i in range(total):
            if i == WARMUP:
                cpu0 = _cpu_s()
            seq = i.to_bytes(SEQ_BYTES, "big")
            t0 = clock()
            sock.send(seq + value)
            if not sock.poll(int(WRITE_TIMEOUT_S * 1000)):
                dead = [r.name for r in roles if r.proc.poll() is not None]
                raise RequestTimeoutError(
                    f"floor: write {i} unanswered ({', '.join(dead) or 'no process'} exited)"
                )
            answer = sock.recv()
            lat.append(clock() - t0)
            if answer != seq:
                raise UnavailableError(f"floor: write {i} answered with {answer!r}")
        client_cpu = _cpu_s() - cpu0
        sock.send(STOP)
        deadline = time.monotonic() + START_TIMEOUT_S
        reports = {r.name: json.loads(r.line(deadline)) for r in roles}
    finally:
        for role in roles:
            role.stop(kill=not reports)  # after a failure nothing would stop them
        ctx.destroy(linger=0)
    h = hist.new_histogram()
    hist.record_many_seconds(h, lat[WARMUP:])
    s = hist.summary_ms(h)
    followers = [reports[n]["cpu_s"] for n in ("follower1", "follower2")]
    return {
        "fsync": fsync,
        "writes": writes,
        "size": size,
        "p50_ms": round(s["p50_ms"], 3),
        "p90_ms": round(s["p90_ms"], 3),
        "p99_ms": round(s["p99_ms"], 3),
        # the roles' CPU covers the warm-up as well: a few percent of the writes
        "leader_cpu_us_per_op": round(reports["leader"]["cpu_s"] * 1e6 / total, 1),
        "follower_cpu_us_per_op": round(sum(followers) * 1e6 / len(followers) / total, 1),
        "client_cpu_us_per_op": round(client_cpu * 1e6 / writes, 1),
        "records": {name: rep["records"] for name, rep in reports.items()},
    }


def run_floor_bench(
    directory: str | os.PathLike[str], writes: int = 2000, size: int = 100
) -> dict[str, Any]:
    """Returns the floor result (``kind: floor``) after measuring in ``directory``:
    ``write`` and ``hops`` (``run_floor`` with and without flushes), and the headline keys
    ``floor_write_c1_p50_ms``, ``floor_hops_c1_p50_ms`` and ``floor_disk_share_p50_ms``
    (their difference). Nothing is left behind in ``directory``.

    Raises ``BadRequestError`` when ``directory`` is not a writable directory or
    ``writes``/``size`` are out of range, and what ``run_floor`` raises."""
    root = Path(directory)
    if not isinstance(writes, int) or not 1 <= writes <= MAX_COUNT:
        raise BadRequestError(f"writes must be 1..{MAX_COUNT}, got {writes!r}")
    if not isinstance(size, int) or not 1 <= size <= MAX_SIZE:
        raise BadRequestError(f"size must be 1..{MAX_SIZE} bytes, got {size!r}")
    if not root.is_dir() or not os.access(root, os.W_OK | os.X_OK):
        raise BadRequestError(f"not a writable directory: {root}")
    out: dict[str, Any] = {
        "schema": SCHEMA,
        "kind": "floor",
        "host": host_info(),
        "dir": str(root.resolve()),
    }
    for name, fsync in (("write", True), ("hops", False)):
        work = Path(tempfile.mkdtemp(prefix=".boltraft-bench-floor-", dir=root))
        try:
            out[name] = run_floor(work, writes, size, fsync)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    out["floor_write_c1_p50_ms"] = out["write"]["p50_ms"]
    out["floor_hops_c1_p50_ms"] = out["hops"]["p50_ms"]
    out["floor_disk_share_p50_ms"] = round(out["write"]["p50_ms"] - out["hops"]["p50_ms"], 3)
    return out


def format_floor_result(res: dict[str, Any]) -> str:
    """Returns the human-readable table of a ``run_floor_bench`` result."""
    w = res["write"]
    lines = [
        f"write floor in {res['dir']}: {w['writes']} writes of {w['size']} bytes, one at a "
        "time, client -> leader -> 2 followers -> leader -> client over ZeroMQ",
        "",
        f"{'run':<7} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
        f"{'leader CPU us/op':>17} {'follower':>9} {'client':>7}",
    ]
    for name, label in (("write", "write"), ("hops", "hops")):
        r = res[name]
        lines.append(
            f"{label:<7} {r['p50_ms']:>8.3f} {r['p90_ms']:>8.3f} {r['p99_ms']:>8.3f} "
            f"{r['leader_cpu_us_per_op']:>17.0f} {r['follower_cpu_us_per_op']:>9.0f} "
            f"{r['client_cpu_us_per_op']:>7.0f}"
        )
    lines += [
        "",
        "write: every role writes and fdatasyncs each record; hops: no flush (ZeroMQ and "
        "Python alone)",
        f"the least a replicated write over ZeroMQ costs from Python here: p50 "
        f"{res['floor_write_c1_p50_ms']:.2f} ms ({res['floor_disk_share_p50_ms']:.2f} ms of it "
        "the disk); a boltraft write adds Raft, its log's encoding, the apply and the client "
        "protocol",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Runs one role process (see the module's docstring)."""
    ap = argparse.ArgumentParser(prog="python -m boltraft.benchmark.floor")
    ap.add_argument("role", choices=("leader", "follower"))
    ap.add_argument("--file", required=True, type=Path)
    ap.add_argument("--fsync", type=int, choices=(0, 1), default=1)
    ap.add_argument("--records", type=int, required=True)
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--peer", action="append", default=[])
    args = ap.parse_args(argv)
    record_bytes = SEQ_BYTES + args.size
    if args.role == "follower":
        serve_follower(args.file, bool(args.fsync), args.records, record_bytes)
    else:
        serve_leader(args.file, bool(args.fsync), args.peer, args.records, record_bytes)


if __name__ == "__main__":
    main()
