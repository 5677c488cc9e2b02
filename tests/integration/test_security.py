"""CurveZMQ, peer identity and client roles against real ``boltraft serve`` processes
(issue 20): every attack of the issue, from outside (no keys, an unknown key) and from
inside (a client key, another member's key), fails and changes nothing; roles and the
replicated allow-list work cluster-wide without a restart."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from boltraft.client import Client
from boltraft.errors import (
    BoltraftError,
    ConditionFailedError,
    PermissionDeniedError,
    RequestTimeoutError,
)
from boltraft.raft.types import MessageType
from boltraft.server.probe import status
from boltraft.storage import commands
from boltraft.transport.codec import PROTOCOL_VERSION
from boltraft.transport.curve import PartyKeys, add_party, new_keypair

from .cluster import SERVE, free_ports, running, wait_until
from .securecluster import (
    HANDSHAKE_REFUSED,
    SecureCluster,
    attacker,
    close_attacker,
    handshake_verdict,
    msg,
    raft,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def secure(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SecureCluster]:
    """A started 3-node cluster with keys and an agreed leader; logs printed on failure."""
    c = SecureCluster(tmp_path)
    with running(c, request):
        yield c


def _st(c: SecureCluster, node_id: str) -> dict[str, Any]:
    st = wait_until(lambda: c.status(node_id), 10, f"{node_id}'s status")
    assert isinstance(st, dict)
    return st


def _unknown_keys(c: SecureCluster) -> PartyKeys:
    """Keys the cluster never heard of, with the right server key."""
    pub, sec = new_keypair()
    return PartyKeys("mallory", "client", "admin", pub, sec, c.keys("app").server_public)


def _steady(c: SecureCluster, lead: str, term: int) -> None:
    """Asserts every node still runs, ``lead`` leads in ``term``, and a write commits."""
    for node_id in c.ids:
        assert c.running(node_id)
        st = _st(c, node_id)
        assert (st["term"], st["lead"]) == (term, lead), st
    with c.client("app") as cl:
        cl.create_bucket("sec", if_not_exists=True)
        cl.put("sec", "still", b"ok")


def _refused(c: SecureCluster, node_id: str) -> int:
    return int(_st(c, node_id)["node"].get("refused_frames", 0))


# --- from outside: no keys, an unknown key ----------------------------------------------------
OUTSIDER_BODIES = [
    {"op": "get", "bucket": "sec", "key": "k"},
    {"op": "put", "bucket": "sec", "key": "k", "value": b"evil"},
    {"op": "backup_begin"},
    {"op": "join", "id": "evil", "addr": "tcp://127.0.0.1:9"},
    {"op": "remove", "id": "n2"},
    {"op": "transfer_leader"},
]


@pytest.mark.parametrize("with_keys", [False, True], ids=["anonymous", "unknown-key"])
def test_an_outsider_gets_nothing(secure: SecureCluster, with_keys: bool) -> None:
    lead = secure.wait_for_leader()
    term = _st(secure, lead)["term"]
    keys = _unknown_keys(secure) if with_keys else None
    for body in OUTSIDER_BODIES:
        sock, monitor = attacker(secure.addrs[lead], keys)
        try:
            sock.send(msgpack.packb([PROTOCOL_VERSION, "req", 7, body]))  # queued: never sent
            assert handshake_verdict(monitor) in HANDSHAKE_REFUSED
            assert not sock.poll(0)
        finally:
            close_attacker(sock, monitor)
    outsider = Client(secure.endpoints, timeout=1.0, keys=keys)  # the library's way
    with outsider, pytest.raises(RequestTimeoutError):
        outsider.status()
    assert sorted(secure.client("ro").members()["voters"]) == secure.ids
    _steady(secure, lead, term)


@pytest.mark.parametrize("with_keys", [False, True], ids=["anonymous", "unknown-key"])
def test_forged_raft_and_fwdresp_from_outside_never_arrive(
    secure: SecureCluster, with_keys: bool
) -> None:
    lead = secure.wait_for_leader()
    follower = next(i for i in secure.ids if i != lead)
    term = _st(secure, lead)["term"]
    keys = _unknown_keys(secure) if with_keys else None
    for target, ident, frame in (
        (follower, lead, raft(msg(MessageType.HEARTBEAT, follower, lead, term + 1))),
        (follower, lead, raft(msg(MessageType.TIMEOUT_NOW, follower, lead, term))),
        (lead, follower, raft(msg(MessageType.APP_RESP, lead, follower, term, index=10**6))),
        (follower, lead, [PROTOCOL_VERSION, "fwdresp", [[1, {"ok": True, "result": None}]]]),
    ):
        sock, monitor = attacker(secure.addrs[target], keys, ident.encode())
        try:
            sock.send(msgpack.packb(frame))  # queued until connected: never
            assert handshake_verdict(monitor) in HANDSHAKE_REFUSED
        finally:
            close_attacker(sock, monitor)
    _steady(secure, lead, term)


# --- from inside: a client's key, another member's key ------------------------------------------
def _forge(c: SecureCluster, node_id: str, key: str, identity: str, *frames: Any) -> None:
    """Sends ``frames`` to ``node_id`` with the keys of party ``key`` under the routing
    ``identity`` (one not in use there: a routing id in use is not handed over, and the
    frames would wait unread), and returns once ``node_id`` refused every one of them
    (counted in ``refused_frames``)."""
    before = _refused(c, node_id)
    sock, monitor = attacker(c.addrs[node_id], c.keys(key), identity.encode())
    try:
        assert handshake_verdict(monitor) == zmq.EVENT_HANDSHAKE_SUCCEEDED
        for f in frames:
            sock.send(msgpack.packb(f))
        wait_until(
            lambda: _refused(c, node_id) >= before + len(frames),
            20,
            f"{node_id} to refuse {len(frames)} frames of {key} as {identity}",
        )
    finally:
        close_attacker(sock, monitor)


@pytest.mark.parametrize("who", ["client", "member"])
def test_forged_heartbeat_and_timeout_now_change_no_term(secure: SecureCluster, who: str) -> None:
    lead = secure.wait_for_leader()
    victim, other = (i for i in secure.ids if i != lead)
    term = _st(secure, lead)["term"]
    key = "app" if who == "client" else other
    # messages that claim the leader sent them, for a deposing term and a transfer
    frames = [raft(msg(MessageType.HEARTBEAT, victim, lead, term + 1 + k)) for k in range(10)]
    frames.append(raft(msg(MessageType.TIMEOUT_NOW, victim, lead, term)))
    for ident in (victim, f"x-{key}"):  # routing ids free at the victim
        _forge(secure, victim, key, ident, *frames)
    _steady(secure, lead, term)


def test_a_member_key_cannot_speak_for_another_member(secure: SecureCluster) -> None:
    lead = secure.wait_for_leader()
    a, b = (i for i in secure.ids if i != lead)
    term = _st(secure, lead)["term"]
    # b's key and b's own routing id (free at b itself), messages that claim to be a's
    forged = [
        raft(msg(MessageType.VOTE, b, a, term + 5, log_term=term, index=10**6)),
        raft(msg(MessageType.HEARTBEAT, b, a, term + 5)),
    ]
    _forge(secure, b, b, b, *forged)
    _steady(secure, lead, term)


def test_a_key_cannot_take_over_a_members_connection(secure: SecureCluster) -> None:
    lead = secure.wait_for_leader()
    victim = next(i for i in secure.ids if i != lead)
    term = _st(secure, lead)["term"]
    downs = _st(secure, lead)["transport"]["peer_disconnects"]
    # the leader's routing id at the victim: with a hand-over it would cut the leader's
    # connection to the victim off (the leader sees it close)
    sock, monitor = attacker(secure.addrs[victim], secure.keys("app"), lead.encode())
    try:
        assert handshake_verdict(monitor) == zmq.EVENT_HANDSHAKE_SUCCEEDED
        sock.send(msgpack.packb(raft(msg(MessageType.HEARTBEAT, victim, lead, term + 1))))
        with secure.client("app") as cl:
            cl.create_bucket("sec", if_not_exists=True)
            for i in range(20):  # replicated to the victim over the leader's connection
                cl.put("sec", f"k{i}", b"v")
        commit = _st(secure, lead)["commit"]
        wait_until(lambda: _st(secure, victim)["applied"] >= commit, 10, "the victim to apply")
        assert _st(secure, lead)["transport"]["peer_disconnects"] == downs
    finally:
        close_attacker(sock, monitor)
    _steady(secure, lead, term)


def test_a_forged_append_makes_no_follower_serve_a_value(secure: SecureCluster) -> None:
    lead = secure.wait_for_leader()
    follower = next(i for i in secure.ids if i != lead)
    with secure.client("app") as cl:
        cl.create_bucket("sec", if_not_exists=True)
    commit = _st(secure, lead)["commit"]
    wait_until(lambda: _st(secure, follower)["applied"] >= commit, 10, "the bucket everywhere")
    st = _st(secure, follower)
    term, last = st["term"], st["last_index"]
    data = commands.encode({"op": "put", "bucket": "sec", "key": "forged", "value": b"evil"})
    app = msg(
        MessageType.APP,
        follower,
        lead,
        term,
        log_term=term,
        index=last,
        entries=[[term, last + 1, 0, data]],
        commit=last + 1,
    )
    for key in ("app", next(i for i in secure.ids if i not in (lead, follower))):
        _forge(secure, follower, key, follower, raft(app))
    with secure.client("ro", follower) as cl:
        assert cl.get("sec", "forged", read="stale") is None
    with secure.client("ro") as cl:
        assert cl.get("sec", "forged") is None
    _steady(secure, lead, term)


def test_a_forged_append_response_acknowledges_no_write(secure: SecureCluster) -> None:
    lead = secure.wait_for_leader()
    followers = [i for i in secure.ids if i != lead]
    with secure.client("app") as cl:
        cl.create_bucket("sec", if_not_exists=True)
    secure.kill(*followers)
    term = _st(secure, lead)["term"]
    result: list[BaseException | None] = []

    def write() -> None:
        try:
            with secure.client("app", lead, timeout=3.0) as cl:
                cl.put("sec", "lost", b"x")
            result.append(None)
        except BoltraftError as err:
            result.append(err)

    t = threading.Thread(target=write)
    t.start()
    wait_until(lambda: _st(secure, lead)["last_index"] > _st(secure, lead)["commit"], 10, "put")
    last = _st(secure, lead)["last_index"]
    forged = [
        raft(msg(MessageType.APP_RESP, lead, f, term, index=last, commit=last)) for f in followers
    ]
    for f in followers:
        for key in ("app", next(x for x in followers if x != f)):
            _forge(secure, lead, key, f"x-{key}", *forged)  # f's id: dropped as a lost peer's
    t.join(10)
    assert len(result) == 1 and isinstance(result[0], RequestTimeoutError), result
    assert _st(secure, lead)["commit"] < last


def test_a_forged_fwdresp_reaches_no_client(secure: SecureCluster) -> None:
    lead = secure.wait_for_leader()
    follower = next(i for i in secure.ids if i != lead)
    other = next(i for i in secure.ids if i not in (lead, follower))
    with secure.client("app") as cl:
        cl.create_bucket("sec", if_not_exists=True)
        cl.put("sec", "cas", b"old")
    before = _st(secure, follower)["service"]["writes"]
    leader_proc = secure.procs[lead]
    os.kill(leader_proc.pid, 19)  # SIGSTOP: the forwarded write waits at the leader
    result: list[BaseException | None] = []

    def cas() -> None:
        try:
            with secure.client("app", follower, timeout=1.0) as cl:
                cl.put("sec", "cas", b"new", if_value=b"wrong")
            result.append(None)
        except BoltraftError as err:
            result.append(err)

    t = threading.Thread(target=cas)
    try:
        t.start()
        # the follower took the write: it forwarded it in the same turn of its loop
        wait_until(lambda: _st(secure, follower)["service"]["writes"] > before, 10, "the write")
        forged = [[fid, {"ok": True, "result": None}] for fid in range(1, 5000)]
        for key in ("app", other):
            _forge(secure, follower, key, follower, [PROTOCOL_VERSION, "fwdresp", forged])
        t.join(10)
    finally:
        os.kill(leader_proc.pid, 18)  # SIGCONT
    assert len(result) == 1 and result[0] is not None, "a forged success reached the client"
    assert isinstance(result[0], (RequestTimeoutError, ConditionFailedError)), result
    with secure.client("ro") as cl:
        assert cl.get("sec", "cas") == b"old"


# --- roles --------------------------------------------------------------------------------------
def test_a_read_key_cannot_write(secure: SecureCluster) -> None:
    with secure.client("app") as cl:
        cl.create_bucket("sec", if_not_exists=True)
        cl.put("sec", "k", b"v")
    with secure.client("ro") as ro:
        assert ro.get("sec", "k") == b"v"
        assert ro.status()["id"] in secure.ids
        for call in (
            lambda: ro.put("sec", "k", b"w"),
            lambda: ro.delete("sec", "k"),
            lambda: ro.batch([{"op": "put", "bucket": "sec", "key": "k", "value": b"w"}]),
            lambda: ro.create_bucket("other"),
        ):
            with pytest.raises(PermissionDeniedError) as exc:
                call()
            assert exc.value.details["needs"] == "write"
        assert ro.get("sec", "k") == b"v"


def test_a_read_key_watches_over_curve(secure: SecureCluster) -> None:
    """A watch speaks CURVE with its client's keys (the quick start's cluster has keys):
    a read key's watch on a follower gets the changes a write key makes, in order, and the
    follower's ``watching`` notice (a peer frame) reaches the leader."""
    lead = secure.wait_for_leader()
    follower = next(i for i in secure.ids if i != lead)
    with secure.client("app") as app:
        app.create_bucket("seen", if_not_exists=True)
        with secure.client("ro", follower) as ro:
            w = ro.watch("seen", reconnect_timeout=10.0)
            try:
                wait_until(
                    lambda: _st(secure, lead)["prompt_commit"] == [follower],
                    20,
                    "the leader to list the follower",
                )
                app.put("seen", "k", b"1")
                app.delete("seen", "k")
                got: list[Any] = []

                def two_events() -> bool:
                    w.poll(0.5)
                    got.extend(w.take())
                    return len(got) >= 2

                wait_until(two_events, 20, "the watch's two events")
                assert [(e.type, e.key, e.value) for e in got] == [
                    ("put", b"k", b"1"),
                    ("delete", b"k", None),
                ]
            finally:
                w.close()


def test_a_write_key_cannot_join_back_up_or_manage(secure: SecureCluster) -> None:
    lead = secure.wait_for_leader()
    term = _st(secure, lead)["term"]
    with secure.client("app") as app:
        for call in (
            lambda: app.join("evil", "tcp://127.0.0.1:9"),
            lambda: app.backup_begin(secure.addrs[lead]),
            lambda: app.remove(secure.ids[-1]),
            lambda: app.transfer_leader(),
            lambda: app.snapshot(secure.addrs[lead]),
            lambda: app.set_key("app", "client", "", "read"),
        ):
            with pytest.raises(PermissionDeniedError) as exc:
                call()
            assert exc.value.details == {"role": "write", "needs": "admin"}
    with secure.client("admin") as admin:
        token = admin.backup_begin(secure.addrs[lead])["backup"]
        admin.backup_end(secure.addrs[lead], token)
    _steady(secure, lead, term)


# --- the allow-list, changed through the log ----------------------------------------------------
def test_an_added_key_works_everywhere_and_a_revoked_key_stops(secure: SecureCluster) -> None:
    pub, sec = new_keypair()
    new = PartyKeys("late", "client", "write", pub, sec, secure.keys("app").server_public)
    with secure.client("admin") as admin:
        admin.set_key("late", "client", pub, "write")
    for node_id in secure.ids:  # each node applies the entry on its own

        def works(node: str = node_id) -> bool:
            try:
                with Client([secure.addrs[node]], timeout=1.0, keys=new) as one:
                    one.status(secure.addrs[node])
            except BoltraftError:
                return False
            return True

        wait_until(works, 20, f"the new key at {node_id}")
    late = Client(secure.endpoints, timeout=5.0, keys=new)
    try:
        late.create_bucket("late", if_not_exists=True)
        late.put("late", "k", b"v")
        with secure.client("admin") as admin:
            admin.set_key("late", "client", "", "write")
        # its connections are open: each request on them is refused from now on
        for node_id in secure.ids:

            def refused(node: str = node_id) -> bool:
                try:
                    late.get("late", "k", read="stale", timeout=1.0)
                    late.status(secure.addrs[node], timeout=1.0)
                except PermissionDeniedError:
                    return True
                except RequestTimeoutError:
                    return False
                return False

            wait_until(refused, 20, f"the revocation at {node_id}")
    finally:
        late.close()
    again = Client(secure.endpoints, timeout=1.0, keys=new)  # a new connection: refused
    with again, pytest.raises(RequestTimeoutError):
        again.status()


def test_a_node_joins_with_a_registered_key_and_removal_revokes_it(
    secure: SecureCluster, tmp_path: Path
) -> None:
    lead = secure.wait_for_leader()
    addr = f"tcp://127.0.0.1:{free_ports(1)[0]}"
    n4 = add_party(secure.keys_dir, "n4", "node", "node")
    argv = [sys.executable, "-c", SERVE, "serve", "--id", "n4", "--data", str(tmp_path / "n4")]
    argv += ["--listen", addr, "--tick-ms", "50", "--join", secure.addrs[lead]]
    argv += ["--keys", str(n4.path)]
    with open(tmp_path / "n4.log", "ab") as logf:
        proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT)
    try:
        # not registered yet: it cannot even ask for the membership
        assert status(secure.addrs[lead], 1.0, keys=n4) is None
        with secure.client("admin") as admin:
            admin.set_key("n4", "node", n4.public, "node")
            wait_until(lambda: "n4" in admin.members()["voters"], 60, "n4 to be a voter")
            admin.create_bucket("sec", if_not_exists=True)
            admin.put("sec", "after-join", b"1")
            admin.remove("n4")
        wait_until(
            lambda: all(status(a, 1.0, keys=n4) is None for a in secure.endpoints),
            20,
            "n4's key to be revoked everywhere",
        )
        assert proc.wait(30) == 3  # removed: it stopped
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- secure by default --------------------------------------------------------------------------
def test_serve_refuses_a_non_loopback_address_without_keys(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", SERVE, "serve", "--id", "n1", "--data", str(tmp_path / "d")]
    argv += ["--listen", "tcp://0.0.0.0:7399"]
    done = subprocess.run(argv, capture_output=True, timeout=60)
    assert done.returncode != 0
    assert b"error: config_error: refusing to serve tcp://0.0.0.0:7399 without keys" in (
        done.stderr
    )
    assert not (tmp_path / "d").exists()


def _cli(c: SecureCluster, *args: str) -> subprocess.CompletedProcess[bytes]:
    cmd = [sys.executable, "-c", SERVE, *args, "--timeout", "10"]
    env = {k: v for k, v in os.environ.items() if k != "BOLTRAFT_KEYS"}
    env["BOLTRAFT_ENDPOINTS"] = ",".join(c.endpoints)
    return subprocess.run(cmd, env=env, cwd=c.root, capture_output=True, timeout=120)


def test_the_keys_commands_add_and_revoke_clients_cluster_wide(secure: SecureCluster) -> None:
    admin, app = str(secure.keys_dir / "admin"), str(secure.keys_dir / "app")
    refused = _cli(secure, "keys", "add-client", str(secure.keys_dir), "sly:admin", "--keys", app)
    assert b"error: permission_denied" in refused.stderr
    assert not (secure.keys_dir / "sly").exists()  # nothing written for a refused key
    made = _cli(secure, "keys", "add-client", str(secure.keys_dir), "late:write", "--keys", admin)
    assert made.returncode == 0, made.stderr
    late = str(secure.keys_dir / "late")
    assert (Path(late) / "self.json").stat().st_mode & 0o777 == 0o600
    assert _cli(secure, "bucket", "create", "sec", "--keys", late).returncode == 0
    assert _cli(secure, "put", "sec", "k", "v", "--keys", late).returncode == 0
    ro = _cli(secure, "put", "sec", "k", "w", "--keys", str(secure.keys_dir / "ro"))
    assert b"error: permission_denied" in ro.stderr
    assert _cli(secure, "keys", "revoke", "late", "--keys", admin).returncode == 0
    # a new connection with a revoked key: refused in the handshake on every node, once
    # each node applied the revocation
    wait_until(
        lambda: all(status(a, 1.0, keys=secure.keys("late")) is None for a in secure.endpoints),
        20,
        "the revocation on every node",
    )
    gone = _cli(secure, "get", "sec", "k", "--keys", late)
    assert gone.returncode != 0 and b"error: timeout" in gone.stderr
    with secure.client("ro") as cl:
        assert cl.get("sec", "k") == b"v"


def test_bench_cluster_drives_a_cluster_with_keys(secure: SecureCluster) -> None:
    """``bench cluster --endpoints`` takes a client keys folder as ``--keys``, as every client
    command does (the number of distinct keys is ``--key-space``)."""

    def bench(name: str) -> subprocess.CompletedProcess[bytes]:
        cmd = [sys.executable, "-c", SERVE, "bench", "cluster", "--endpoints"]
        cmd += [",".join(secure.endpoints), "--keys", str(secure.keys_dir / name)]
        cmd += ["--clients", "2", "--ops", "60", "--key-space", "7", "--no-progress"]
        env = {k: v for k, v in os.environ.items() if k != "BOLTRAFT_KEYS"}
        return subprocess.run(cmd, env=env, cwd=secure.root, capture_output=True, timeout=120)

    ro = bench("ro")  # may not make the benchmark's bucket
    assert ro.returncode != 0 and b"error: permission_denied" in ro.stderr, ro.stderr
    done = bench("app")
    assert done.returncode == 0, done.stderr
    assert b"write c2" in done.stdout and b"errors:" not in done.stdout
    with secure.client("ro") as cl:
        assert [b for b in cl.buckets() if b.startswith(b"boltraft-bench-")] == []


def test_a_restart_without_keys_serves_with_the_remembered_ones(secure: SecureCluster) -> None:
    """node.json remembers ``--keys``: a node restarted with ``--data`` alone speaks CURVE
    again; a restart with another folder uses it, says so, and remembers it."""

    def relaunch(node_id: str, keys: list[str]) -> None:
        argv = secure.argv(node_id)
        at = argv.index("--keys")
        argv = argv[:at] + keys + argv[at + 2 :]
        secure.stop(node_id)
        with open(secure.root / f"{node_id}.log", "ab") as logf:
            secure.procs[node_id] = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT)

    node_json = secure.root / "n3" / "node.json"
    assert json.loads(node_json.read_text())["keys"] == str(secure.keys_dir / "n3")
    relaunch("n3", [])
    with secure.client("app") as cl:
        cl.create_bucket("rk")
        cl.put("rk", "k", "v1")
    lead = secure.wait_for_leader()
    secure.wait_applied("n3", _st(secure, lead)["commit"])  # over CURVE with admin's keys
    with secure.client("ro", "n3") as cl:
        assert cl.get("rk", "k", read="stale") == b"v1"
    assert status(secure.addrs["n3"], 1.0) is None  # a plain client gets nothing

    moved = secure.root / "moved-keys" / "n3"
    shutil.copytree(secure.keys_dir / "n3", moved)
    relaunch("n3", ["--keys", str(moved)])
    wait_until(lambda: secure.status("n3"), 20, "n3 back with the moved keys")
    assert json.loads(node_json.read_text())["keys"] == str(moved)
    log = (secure.root / "n3.log").read_text(errors="replace")
    assert f"keys folder {moved} replaces {secure.keys_dir / 'n3'}" in log


@pytest.fixture
def netns() -> Iterator[tuple[str, str]]:
    """A network namespace of this test whose own loopback interface is up and also holds
    10.214.7.1/32 (an address outside 127.0.0.0/8 that nothing else on the machine uses):
    (name, address). Removed at the end."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("a network namespace needs root and the ip command")
    name = f"brsec-{os.getpid()}"

    def ip(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)

    made = ip("netns", "add", name)
    if made.returncode != 0:
        pytest.skip(f"ip netns add failed: {made.stderr.strip()}")
    try:
        for cmd in (
            ("link", "set", "lo", "up"),
            ("addr", "add", "10.214.7.1/32", "dev", "lo"),
        ):
            done = ip("-n", name, *cmd)
            assert done.returncode == 0, f"ip -n {name} {' '.join(cmd)}: {done.stderr}"
        yield name, "10.214.7.1"
    finally:
        ip("netns", "del", name)


def test_serve_on_a_non_loopback_address_needs_keys_or_insecure(
    netns: tuple[str, str], tmp_path: Path
) -> None:
    """In a namespace of its own, ``serve`` on a real non-loopback interface without keys
    refuses to start; with ``--insecure`` it serves there and logs the warning."""
    name, host = netns
    listen = f"tcp://{host}:7000"
    inside = ["ip", "netns", "exec", name, sys.executable, "-c"]
    serve = [*inside, SERVE, "serve", "--id", "n1", "--data", str(tmp_path / "d")]
    serve += ["--listen", listen]
    refused = subprocess.run(serve, capture_output=True, timeout=60)
    assert refused.returncode != 0
    assert f"error: config_error: refusing to serve {listen} without keys".encode() in (
        refused.stderr
    )
    assert not (tmp_path / "d").exists()

    probe = "import sys\nfrom boltraft.server.probe import status\n"
    probe += f"sys.exit(0 if (status({listen!r}, 2.0) or {{}}).get('id') == 'n1' else 1)"
    log_path = tmp_path / "n1.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([*serve, "--insecure"], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(
            lambda: (
                proc.poll() is None and subprocess.run([*inside, probe], timeout=60).returncode == 0
            ),
            60,
            f"n1 answering at {listen}",
        )
        text = log_path.read_text(errors="replace")
        assert f"node n1 serves {listen} WITHOUT keys (--insecure)" in text
    finally:
        proc.terminate()
        proc.wait(30)
