"""Real processes: watches (``Client.watch``, ``boltraft watch``) deliver every change once,
in Raft order, through a leader SIGKILL and a node restart; filters, a slow consumer, a
start index a node no longer retains, many watchers at once, bad requests."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from boltraft.client import Client, Watch, wait_watches
from boltraft.errors import BadRequestError, CompactedError, WatchNotFoundError
from boltraft.transport.watchwire import Event

from .cluster import Cluster, cli_argv, ctrl_c_reaches_it, running, wait_connected, wait_until
from .opscluster import OpsCluster
from .test_operations import MetricsCluster, metric

pytestmark = pytest.mark.integration


def take(w: Watch, n: int, timeout: float = 30.0) -> list[Event]:
    """The next ``n`` events of ``w``; AssertionError when they do not come in time."""
    out: list[Event] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        assert time.monotonic() < deadline, f"got {len(out)} of {n} events: {out[-3:]}"
        if w.poll(0.2):
            out.append(next(w))
    return out


def ordered(events: list[Event]) -> bool:
    keys = [(e.index, e.pos) for e in events]
    return all(a < b for a, b in itertools.pairwise(keys))


def leader_first(c: Cluster) -> list[str]:
    """The endpoints with the leader's first (a watch starts on the first)."""
    lead = c.wait_for_leader()
    eps = c.endpoints
    first = eps[c.ids.index(lead)]
    return [first, *[e for e in eps if e != first]]


class Writer(threading.Thread):
    """Puts ``w-00000``, ``w-00001``, ... to bucket ``b`` until stopped; ``acked`` are the
    keys whose put was acknowledged, ``unknown`` those that failed (they may or may not
    have been applied)."""

    def __init__(self, endpoints: list[str]) -> None:
        super().__init__(daemon=True)
        self.endpoints = endpoints
        self.acked: list[bytes] = []
        self.unknown: list[bytes] = []
        self.stop_flag = threading.Event()

    def run(self) -> None:
        with Client(self.endpoints, timeout=20) as c:
            i = 0
            while not self.stop_flag.is_set():
                key = b"w-%05d" % i
                try:
                    c.put("b", key, b"v%d" % i)
                    self.acked.append(key)
                except Exception:
                    self.unknown.append(key)
                i += 1


@pytest.fixture
def three(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    with running(c, request):
        wait_connected(c)
        yield c


def test_a_watch_gets_every_acknowledged_change_once_in_order_across_a_leader_sigkill_and_a_restart(
    three: Cluster,
) -> None:
    c = three
    eps = leader_first(c)
    lead = c.ids[c.endpoints.index(eps[0])]
    with Client(eps, timeout=20) as client:
        client.create_bucket("b")
        w = client.watch("b", reconnect_timeout=60)  # on the leader
        writer = Writer(c.endpoints)
        writer.start()
        seen: list[Event] = []

        def collect(until_acked: int) -> None:
            deadline = time.monotonic() + 60
            while len(writer.acked) < until_acked:
                assert time.monotonic() < deadline, "the writer made no progress"
                if w.poll(0.05):
                    seen.append(next(w))

        collect(50)
        c.kill(lead)  # SIGKILL the leader the watch streams from
        collect(len(writer.acked) + 100)
        assert w.resumes >= 1
        c.start(lead)  # the killed node comes back (an empty change feed)
        c.wait_applied(lead, (c.status(c.wait_for_leader()) or {"applied": 0})["applied"])
        other = next(i for i in c.ids if i != lead)
        c.stop(other)  # wherever the watch is now, a node restarts under the writes
        c.start(other)
        collect(len(writer.acked) + 100)
        writer.stop_flag.set()
        writer.join(30)
        client.put("b", "end", "1")
        while not seen or seen[-1].key != b"end":
            seen += take(w, 1)
        w.close()
    keys = [e.key for e in seen]
    assert ordered(seen)
    assert len(keys) == len(set(keys)), "a change came twice"
    assert set(writer.acked) <= set(keys), "an acknowledged change is missing"
    assert set(keys) <= {*writer.acked, *writer.unknown, b"end"}
    assert all(e.type == "put" and e.bucket == (b"b",) for e in seen)


def test_a_restarted_node_serves_watches_from_before_its_restart(three: Cluster) -> None:
    c = three
    lead = c.wait_for_leader()
    node = next(i for i in c.ids if i != lead)
    with Client(c.endpoints, timeout=20) as client:
        client.create_bucket("r")
        for round_ in range(2):  # a SIGKILL, then a clean stop
            for i in range(50):
                client.put("r", b"k%03d" % (50 * round_ + i), b"v")
            applied = (c.status(c.wait_for_leader()) or {"applied": 0})["applied"]
            c.wait_applied(node, applied)
            if round_ == 0:
                c.kill(node)
            else:
                c.stop(node)
            c.start(node)
            c.wait_applied(node, applied)
        with Client([c.endpoints[c.ids.index(node)]], timeout=20) as one:
            w = one.watch("r", start_index=1, reconnect_timeout=5)
            got = take(w, 101)
            client.put("r", "end", "1")
            [end] = take(w, 1)
            w.close()
    assert [(e.type, e.key) for e in got] == [
        ("create_bucket", None),
        *(("put", b"k%03d" % i) for i in range(100)),
    ]
    assert ordered([*got, end]) and end.key == b"end"


def test_filters_prefix_recursive_and_bucket_events(three: Cluster) -> None:
    with Client(three.endpoints) as client:
        client.create_bucket("f")
        plain = client.watch("f", prev_value=True)
        pref = client.watch("f", prefix="a")
        rec = client.watch("f", recursive=True)
        client.put("f", "a1", "1")
        client.put("f", "b1", "1")
        client.put("f", "a1", "2")
        client.create_bucket(["f", "ax"])
        client.put(["f", "ax"], "k", "deep")
        client.create_bucket(["f", "bx"])
        client.put(["f", "bx"], "k", "deep")
        client.delete("f", "nothing")  # deletes nothing: no event
        client.batch(
            [
                {"op": "delete", "bucket": "f", "key": "a1"},
                {"op": "put", "bucket": "f", "key": "b2", "value": "x"},
            ]
        )
        client.delete_bucket("f")
        got_plain = take(plain, 8)
        got_pref = take(pref, 5)
        got_rec = take(rec, 10)
    brief = [(e.type, e.bucket, e.key, e.value, e.prev) for e in got_plain]
    assert brief == [
        ("put", (b"f",), b"a1", b"1", None),
        ("put", (b"f",), b"b1", b"1", None),
        ("put", (b"f",), b"a1", b"2", b"1"),
        ("create_bucket", (b"f", b"ax"), None, None, None),
        ("create_bucket", (b"f", b"bx"), None, None, None),
        ("delete", (b"f",), b"a1", None, b"2"),
        ("put", (b"f",), b"b2", b"x", None),
        ("delete_bucket", (b"f",), None, None, None),
    ]
    batch = [e for e in got_plain if e.index == got_plain[5].index]
    assert [e.pos for e in batch] == [0, 1]
    assert [(e.type, e.key) for e in got_pref] == [
        ("put", b"a1"),
        ("put", b"a1"),
        ("create_bucket", None),
        ("delete", b"a1"),
        ("delete_bucket", None),
    ]
    assert [(e.bucket, e.key) for e in got_rec if e.type == "put"] == [
        ((b"f",), b"a1"),
        ((b"f",), b"b1"),
        ((b"f",), b"a1"),
        ((b"f", b"ax"), b"k"),
        ((b"f", b"bx"), b"k"),
        ((b"f",), b"b2"),
    ]
    assert all(ordered(x) for x in (got_plain, got_pref, got_rec))


def test_a_slow_watcher_is_cut_off_past_the_limit_and_resumes_where_it_was(
    make_cluster: Any,
) -> None:
    c: OpsCluster = make_cluster({"watch_max_lag": 50})
    eps = leader_first(c)
    with Client(eps) as client:
        client.create_bucket("s")
        w = client.watch("s", window=4)  # reads nothing while 300 changes are made
        for i in range(300):
            client.put("s", b"k%03d" % i, b"v")

        def lagged() -> bool:
            st = c.status(c.ids[c.endpoints.index(eps[0])])
            return st is not None and st["watch"]["lagged"] > 0

        wait_until(lagged, 20, "the node to end the slow watch")
        got = take(w, 300)
        w.close()
    assert [e.key for e in got] == [b"k%03d" % i for i in range(300)]
    assert w.resumes >= 1


def test_a_start_index_no_node_retains_is_compacted_and_a_scan_gives_where_to_start(
    make_cluster: Any,
) -> None:
    c: OpsCluster = make_cluster({"watch_history_events": 20})
    with Client(c.endpoints) as client:
        client.create_bucket("c")
        for i in range(60):
            client.put("c", b"k%02d" % i, b"v")
        applied = (c.status(c.wait_for_leader()) or {"applied": 0})["applied"]
        wait_until(
            lambda: all((c.status(i) or {}).get("applied", 0) >= applied for i in c.ids),
            20,
            "every node applied the puts",
        )
        with pytest.raises(CompactedError) as info:
            client.watch("c", start_index=2)
        assert info.value.details["oldest_index"] > 2
        page = client.scan("c")  # the state, then every change after it
        assert len(page.items) == 60
        w = client.watch("c", start_index=page.applied_index + 1)
        client.put("c", "after", "1")
        [ev] = take(w, 1)
        w.close()
    assert (ev.type, ev.key) == ("put", b"after")
    assert ev.index > page.applied_index


def test_many_watchers_at_once_each_get_every_change(three: Cluster) -> None:
    with Client(three.endpoints) as client:
        client.create_bucket("m")
        watches = []
        for i in range(60):  # spread over the nodes
            eps = three.endpoints[i % 3 :] + three.endpoints[: i % 3]
            with Client(eps) as one:
                watches.append(one.watch("m", window=64))
        for i in range(100):
            client.put("m", b"k%03d" % i, b"v")
        got: list[list[bytes]] = [[] for _ in watches]
        deadline = time.monotonic() + 60
        while any(len(g) < 100 for g in got):  # each read in turn, as threads would
            assert time.monotonic() < deadline, [len(g) for g in got]
            for w, g in zip(watches, got, strict=True):
                while w.poll(0.001) and len(g) < 100:
                    g.append(next(w).key or b"")
        for w in watches:
            w.close()
    assert all(g == [b"k%03d" % i for i in range(100)] for g in got)


def test_the_leader_tells_a_follower_serving_watches_each_commit_while_it_serves_them(
    three: Cluster,
) -> None:
    """A follower with a watch sends its leader ``watching`` notices: the leader lists it in
    ``prompt_commit`` of its status (and tells it of every commit at once) until the
    notices stop, after the watch ended."""
    lead = three.wait_for_leader()
    follower = next(i for i in three.ids if i != lead)

    def listed() -> list[str]:
        st = three.status(lead)
        return st["prompt_commit"] if st else ["no answer"]

    assert listed() == []
    with Client([three.addrs[follower]]) as client:
        client.create_bucket("p")
        w = client.watch("p")
        try:
            wait_until(lambda: listed() == [follower], 20, "the leader to list the follower")
            client.put("p", b"k", b"v")
            assert [(e.type, e.key) for e in take(w, 1)] == [("put", b"k")]
        finally:
            w.close()
    wait_until(lambda: listed() == [], 30, "the leader to forget the follower")


def test_the_watches_of_a_thread_get_one_frame_per_node_per_round(three: Cluster) -> None:
    ep = leader_first(three)[0]
    with Client([ep]) as client:
        client.create_bucket("f")
        watches = [client.watch("f") for _ in range(10)]  # all on one node, one thread

        def frames() -> int:
            return int(client.status(ep)["watch"]["frames"])

        before = frames()
        client.put("f", b"k", b"v")
        got: list[list[Event]] = [[] for _ in watches]
        deadline = time.monotonic() + 30
        while any(not g for g in got):
            assert time.monotonic() < deadline, [len(g) for g in got]
            for w in wait_watches(watches, 0.2):
                got[watches.index(w)] += w.take()
        sent = frames() - before
        for w in watches:
            w.close()
    assert all([e.key for e in g] == [b"k"] for g in got)
    # one events_batch frame carried the change to all ten (a progress round may add one)
    assert 1 <= sent <= 2, sent


def test_bad_watch_requests_get_typed_errors_and_change_nothing(three: Cluster) -> None:
    with Client(three.endpoints) as client:
        client.create_bucket("x")
        for body in (
            {"op": "watch", "bucket": []},
            {"op": "watch", "bucket": [b"x"], "window": 0},
            {"op": "watch", "bucket": [b"x"], "start_index": -1},
            {"op": "watch", "bucket": [b"x"], "recursive": "yes"},
            {"op": "watch", "bucket": [b"x"], "bogus": 1},
            {"op": "watch", "bucket": [{"a": 1}]},
        ):
            with pytest.raises(BadRequestError):
                client._call(dict(body))
        with pytest.raises(WatchNotFoundError):
            client._call({"op": "watch_ack", "watch": 12345, "count": 1})
        with pytest.raises(WatchNotFoundError):
            client._call({"op": "watch_cancel", "watch": "nope"})
        client.put("x", "k", "v")  # the nodes still serve
        assert client.get("x", "k") == b"v"


def test_the_watch_command_prints_one_json_line_per_change_until_ctrl_c(
    three: Cluster,
) -> None:
    eps = ",".join(three.endpoints)
    with Client(three.endpoints) as client:
        client.create_bucket("cli")
        client.put("cli", "k1", "one")
        start = client.scan("cli").applied_index
        client.put("cli", "k2", "two")
    proc = subprocess.Popen(
        cli_argv("watch", "cli", "--from-index", str(start), "-w", "json", "--endpoints", eps),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=ctrl_c_reaches_it,
    )
    try:
        assert proc.stdout is not None
        lines = [json.loads(proc.stdout.readline()) for _ in range(2)]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
    finally:
        proc.kill()
        proc.wait()
    assert [(x["type"], x["key"], x["value"], x["bucket"]) for x in lines] == [
        ("put", "k1", "one", ["cli"]),
        ("put", "k2", "two", ["cli"]),
    ]
    assert lines[0]["index"] == start


def test_scan_json_prints_the_applied_index_it_read_at_and_a_watch_after_it_misses_nothing(
    three: Cluster,
) -> None:
    with Client(three.endpoints) as client:
        client.create_bucket("sc")
        client.put("sc", "k1", "one")
        client.put("sc", "k2", "two")
        proc = subprocess.run(
            cli_argv("scan", "sc", "-w", "json", "--endpoints", ",".join(three.endpoints)),
            capture_output=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout)
        client.put("sc", "k3", "three")
        w = client.watch("sc", start_index=out["applied_index"] + 1)
        after = take(w, 1)
        w.close()
        w = client.watch("sc", start_index=1)
        everything = take(w, 4)  # the bucket's creation, then the three puts
        w.close()
    assert out["items"] == [{"key": "k1", "value": "one"}, {"key": "k2", "value": "two"}]
    assert [e.key for e in after] == [b"k3"]
    assert [(e.type, e.key) for e in everything] == [
        ("create_bucket", None),
        ("put", b"k1"),
        ("put", b"k2"),
        ("put", b"k3"),
    ]
    assert everything[2].index <= out["applied_index"] < everything[3].index


def test_the_metrics_show_the_watches(tmp_path: Path) -> None:
    c = MetricsCluster(tmp_path)
    try:
        c.start()
        lead = c.wait_for_leader()
        with Client([c.addrs[lead]]) as client:
            client.create_bucket("x")
            w = client.watch("x")
            client.put("x", "k", "v")
            take(w, 1)

            def scraped() -> str | None:  # a sample the loop published after the put
                status, text = c.get(lead, "/metrics")
                if status != 200 or metric(text, "boltraft_watches") != 1:
                    return None
                events = metric(text, "boltraft_watch_events_total") or 0
                frames = metric(text, "boltraft_watch_frames_total") or 0
                # the bucket, the put; and the frame the client took them from (a sample
                # taken between the apply and the flush 2 ms later has the events only)
                return text if events >= 2 and frames >= 1 else None

            text = wait_until(scraped, 20, "the leader's metrics to show the watch and its events")
            w.close()
        assert (metric(text, "boltraft_watch_frames_total") or 0) >= 1
        assert metric(text, "boltraft_watch_lagged_total") == 0
        assert metric(text, "boltraft_watch_refused_total") == 0
        assert metric(text, "boltraft_watch_oldest_index") == 1
        assert metric(text, "boltraft_client_requests_total", 'op="watch"') == 1
    finally:
        c.close()


def test_a_node_cut_off_from_the_leader_ends_its_watches_and_the_watch_goes_on_elsewhere(
    three: Cluster,
) -> None:
    c = three
    lead = c.wait_for_leader()
    cut = next(i for i in c.ids if i != lead)
    eps = [c.addrs[cut], *[c.addrs[i] for i in c.ids if i != cut]]
    with Client(c.endpoints, timeout=20) as client:
        client.create_bucket("p")
        client.put("p", "before", "1")
        with Client(eps) as other:
            w = other.watch("p", reconnect_timeout=60)  # on ``cut``
        client.put("p", "k0", "v")
        assert [e.key for e in take(w, 1)] == [b"k0"]
        others = [c.procs[i].pid for i in c.ids if i != cut]
        for pid in others:  # ``cut`` runs, but hears no leader
            os.kill(pid, signal.SIGSTOP)
        try:

            def ended() -> bool:
                st = c.status(cut)
                return st is not None and st["watch"]["live"] == 0

            wait_until(ended, 20, f"{cut} to end its watch")
        finally:
            for pid in others:
                os.kill(pid, signal.SIGCONT)
        for i in range(1, 20):
            client.put("p", b"k%d" % i, b"v")
        got = take(w, 19, timeout=60)
        w.close()
    assert [e.key for e in got] == [b"k%d" % i for i in range(1, 20)]
    assert w.resumes >= 1
