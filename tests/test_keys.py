"""CurveZMQ keys (boltraft.transport.curve), the ``keys`` command, the allow-list and roles
(boltraft.server.access), the secure-by-default check, and two real transports with keys
on 127.0.0.1."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from boltraft.errors import ConfigError, MalformedCommandError
from boltraft.raft.types import Message, MessageType
from boltraft.server.access import PEER_FRAMES, Access, Principal, needs, permits
from boltraft.server.config import ServerConfig, check_secure, is_loopback
from boltraft.storage import commands
from boltraft.transport import codec, zmq_transport
from boltraft.transport.curve import (
    KNOWN_FILE,
    SELF_FILE,
    add_party,
    client_options,
    init_keys,
    load_keys,
    new_keypair,
    parse_clients,
)
from boltraft.transport.zmq_transport import Incoming, Part, PeerTransport, ZeroCopy

CLIENTS = {"admin": "admin", "app": "write", "ro": "read"}


def test_init_makes_one_folder_per_party_with_a_private_secret(tmp_path: Path) -> None:
    made = init_keys(tmp_path / "k", ["n1", "n2", "n3"], CLIENTS)
    assert sorted(p.name for p in made) == ["admin", "app", "n1", "n2", "n3", "ro"]
    for p in made:
        assert (p / SELF_FILE).stat().st_mode & 0o777 == 0o600
        assert (p / KNOWN_FILE).stat().st_mode & 0o777 == 0o644
    n1, app = load_keys(tmp_path / "k" / "n1"), load_keys(tmp_path / "k" / "app")
    assert (n1.kind, n1.role, app.kind, app.role) == ("node", "node", "client", "write")
    assert n1.server_public == app.server_public and n1.server_secret and not app.server_secret
    assert n1.nodes["n2"] == load_keys(tmp_path / "k" / "n2").public
    assert n1.clients["ro"] == (load_keys(tmp_path / "k" / "ro").public, "read")
    # a client learns the server key only: no secret of anyone else, no allow-list
    assert set(json.loads((tmp_path / "k" / "app" / KNOWN_FILE).read_text())) == {"server"}
    assert "server_secret" not in (tmp_path / "k" / "app" / SELF_FILE).read_text()


@pytest.mark.parametrize(
    ("nodes", "clients"),
    [
        ([], {}),
        (["n1", "n1"], {}),
        (["n1"], {"n1": "read"}),
        (["../x"], {}),
        (["n1"], {"a": "root"}),
    ],
)
def test_init_refuses_bad_names_and_roles_writing_nothing(
    tmp_path: Path, nodes: list[str], clients: dict[str, str]
) -> None:
    with pytest.raises(ConfigError):
        init_keys(tmp_path / "k", nodes, clients)
    assert not (tmp_path / "k").exists()


def test_init_refuses_existing_folders(tmp_path: Path) -> None:
    init_keys(tmp_path, ["n1"], {})
    with pytest.raises(ConfigError, match="already has folders for n1"):
        init_keys(tmp_path, ["n1", "n2"], {})
    assert not (tmp_path / "n2").exists()


def test_load_refuses_a_readable_secret_and_a_mismatched_pair(tmp_path: Path) -> None:
    (folder,) = init_keys(tmp_path, ["n1"], {})
    os.chmod(folder / SELF_FILE, 0o644)
    with pytest.raises(ConfigError, match="mode 0600"):
        load_keys(folder)
    os.chmod(folder / SELF_FILE, 0o600)
    me = json.loads((folder / SELF_FILE).read_text())
    me["public"] = new_keypair()[0]
    (folder / SELF_FILE).write_text(json.dumps(me))
    with pytest.raises(ConfigError, match="does not match"):
        load_keys(folder)
    with pytest.raises(ConfigError, match="no keys"):
        load_keys(tmp_path / "nowhere")


def test_add_party_takes_the_cluster_keys_from_a_node_folder(tmp_path: Path) -> None:
    init_keys(tmp_path, ["n1", "n2"], {"admin": "admin"})
    n3 = add_party(tmp_path, "n3", "node", "node")
    late = add_party(tmp_path, "late", "client", "read")
    n1 = load_keys(tmp_path / "n1")
    assert n3.server_secret == n1.server_secret and n3.nodes["n3"] == n3.public
    assert (late.role, late.server_public) == ("read", n1.server_public)
    with pytest.raises(ConfigError, match="already exists"):
        add_party(tmp_path, "late", "client", "write")
    with pytest.raises(ConfigError, match="no node"):
        add_party(tmp_path / "late", "x", "client", "read")


def test_parse_clients() -> None:
    assert parse_clients(["a:read", "b:admin"]) == {"a": "read", "b": "admin"}
    for bad in (["a"], ["a:read", "a:write"], ["a:owner"], [":read"]):
        with pytest.raises(ConfigError):
            parse_clients(bad)


# --- the keys command -------------------------------------------------------------------------
def test_the_keys_command_round_trips_and_stays_out_of_batches() -> None:
    key = new_keypair()[0]
    cmd = {"op": "keys", "name": "app", "kind": "client", "key": key, "role": "write"}
    data = commands.encode(cmd)
    assert commands.decode(data)["key"] == key.encode()
    revoke = {"op": "keys", "name": "n4", "kind": "client", "key": "", "role": "read"}
    assert commands.decode(commands.encode(revoke))["key"] == b""
    with pytest.raises(MalformedCommandError, match="batch"):
        commands.encode({"op": "batch", "ops": [cmd]})
    bad = [
        {**cmd, "role": "root"},
        {**cmd, "kind": "robot"},
        {**cmd, "key": "short"},
        {**cmd, "name": ""},
        {**cmd, "kind": "node"},  # a node's key has role node
    ]
    for c in bad:
        with pytest.raises(MalformedCommandError):
            commands.encode(c)


def test_the_state_machine_keeps_the_keys_in_its_meta_keyspace(tmp_path: Path) -> None:
    from boltraft.raft.types import Entry
    from boltraft.storage.fsm import BucketStateMachine

    key = new_keypair()[0]
    cmd = {"op": "keys", "name": "app", "kind": "client", "key": key, "role": "write"}
    with BucketStateMachine(tmp_path / "sm") as sm:
        (res,) = sm.apply([Entry(1, 1, data=commands.encode(cmd))])
        assert res == commands.KEYS_SET
        assert sm.key_records() == {"app": ("client", key, "write")}
        assert sm.content_hash()[1] == BucketStateMachine(tmp_path / "other").content_hash()[1]


# --- the allow-list and roles -----------------------------------------------------------------
def _access(tmp_path: Path) -> Access:
    init_keys(tmp_path, ["n1", "n2"], CLIENTS)
    return Access(load_keys(tmp_path / "n1"))


def test_roles() -> None:
    ro, app, admin = (Principal(n, "client", CLIENTS[n]) for n in ("ro", "app", "admin"))
    node = Principal("n4", "node", "node")
    put = {"op": "put", "bucket": "b", "key": "k", "value": "v"}
    for body, least in (
        ({"op": "get"}, "read"),
        ({"op": "status"}, "read"),
        ({"op": "members"}, "read"),
        (put, "write"),
        ({"op": "batch", "ops": []}, "write"),
        ({"op": "create_bucket"}, "write"),
        ({"op": "backup_begin"}, "admin"),
        ({"op": "join"}, "admin"),
        ({"op": "transfer_leader"}, "admin"),
        ({"op": "keys"}, "admin"),
        ({"op": "anything new"}, "admin"),
        ({"op": "watch"}, "read"),
        ({"op": "watch_ack"}, "read"),
        ({"op": "watch_cancel"}, "read"),
    ):
        assert needs(body["op"]) == least
    assert permits(ro, {"op": "get"}) and not permits(ro, put)
    assert permits(app, put) and not permits(app, {"op": "backup_begin"})
    assert permits(admin, {"op": "remove", "id": "n2"})
    assert permits(node, {"op": "join", "id": "n4"}) and permits(node, {"op": "members"})
    assert not permits(node, {"op": "join", "id": "n5"}) and not permits(node, put)
    assert not permits(ro, "not a map")


def test_the_replicated_entries_override_the_folder(tmp_path: Path) -> None:
    access = _access(tmp_path)
    app = load_keys(tmp_path / "app").public
    n2 = load_keys(tmp_path / "n2").public
    assert access.principal(app) == Principal("app", "client", "write")
    assert access.allow(n2) and not access.allow(new_keypair()[0])
    late = new_keypair()[0]
    access.load({"app": ("client", "", "write"), "late": ("client", late, "admin")})
    assert not access.allow(app) and access.principal(app) is None
    assert access.principal(late) == Principal("late", "client", "admin")


def _raft(frm: str, sender: bytes, user: str | None, peer: str | None = None) -> Incoming:
    m = Message(MessageType.HEARTBEAT, "n1", frm, 1)
    return Incoming("raft", [m], sender, peer, user)


def test_a_peer_frame_is_admitted_only_from_the_member_it_claims(tmp_path: Path) -> None:
    access = _access(tmp_path)
    n2 = load_keys(tmp_path / "n2").public
    app = load_keys(tmp_path / "app").public
    assert access.admits_peer_frame(_raft("n2", b"n2", n2))
    assert not access.admits_peer_frame(_raft("n2", b"n2", app))  # a client's key
    assert not access.admits_peer_frame(_raft("n1", b"n2", n2))  # claims another sender
    assert not access.admits_peer_frame(_raft("n2", b"n1", n2))  # another routing id
    assert not access.admits_peer_frame(_raft("n2", b"n2", None))
    assert access.admits_peer_frame(_raft("n2", b"n2", None, peer="n2"))  # our own DEALER's
    assert not access.admits_peer_frame(_raft("n3", b"n2", None, peer="n2"))
    fwdresp = Incoming("fwdresp", [], b"n2", None, app)
    assert not access.admits_peer_frame(fwdresp)
    assert "hash" in PEER_FRAMES  # the corrupt check's frames: bound to their member too
    assert access.admits_peer_frame(Incoming("hash", {}, b"n2", None, n2))
    assert not access.admits_peer_frame(Incoming("hash", {}, b"n2", None, app))
    access.load({"n2": ("node", "", "node")})  # removed: revoked
    assert not access.admits_peer_frame(_raft("n2", b"n2", n2))


# --- secure by default --------------------------------------------------------------------------
def test_loopback_and_the_insecure_flag(tmp_path: Path) -> None:
    for addr in ("tcp://127.0.0.1:1", "tcp://localhost:1", "tcp://[::1]:1", "tcp://127.1.2.3:1"):
        assert is_loopback(addr)
    for addr in ("tcp://0.0.0.0:1", "tcp://*:1", "tcp://10.0.0.1:1", "tcp://[::]:1"):
        assert not is_loopback(addr)
    local = ServerConfig("n1", tmp_path, "tcp://127.0.0.1:7301")
    assert check_secure(local) is False
    wide = ServerConfig("n1", tmp_path, "tcp://0.0.0.0:7301")
    with pytest.raises(ConfigError, match="without keys"):
        check_secure(wide)
    assert check_secure(ServerConfig("n1", tmp_path, "tcp://0.0.0.0:7301", insecure=True))
    assert not check_secure(ServerConfig("n1", tmp_path, "tcp://0.0.0.0:7301", keys="k/n1"))


# --- two transports with keys -------------------------------------------------------------------
def _recv_until(t: PeerTransport, kind: str, deadline_s: float = 10.0) -> Incoming:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        for f in t.recv(0.05):
            if f.kind == kind:
                return f
    raise AssertionError(f"no {kind} frame within {deadline_s}s")


def test_transports_with_keys_carry_the_senders_key(tmp_path: Path) -> None:
    init_keys(tmp_path, ["n1", "n2"], {})
    k1, k2 = load_keys(tmp_path / "n1"), load_keys(tmp_path / "n2")
    allowed = {k1.public, k2.public}
    t1 = PeerTransport("n1", "tcp://127.0.0.1:*", keys=k1, allow=allowed.__contains__)
    t2 = PeerTransport("n2", "tcp://127.0.0.1:*", keys=k2, allow=allowed.__contains__)
    try:
        t1.add_peer("n2", t2.endpoint)
        t2.add_peer("n1", t1.endpoint)
        end = time.monotonic() + 10
        got: Incoming | None = None
        while got is None and time.monotonic() < end:
            t1.send([Message(MessageType.HEARTBEAT, "n2", "n1", 1)])
            got = next((f for f in t2.recv(0.05) if f.kind == "raft"), None)
        assert got is not None and got.user == k1.public and got.sender == b"n1"
    finally:
        t1.close()
        t2.close()


def test_a_transport_with_keys_refuses_a_key_it_does_not_allow(tmp_path: Path) -> None:
    init_keys(tmp_path, ["n1", "n2"], {})
    k1, k2 = load_keys(tmp_path / "n1"), load_keys(tmp_path / "n2")
    t1 = PeerTransport("n1", "tcp://127.0.0.1:*", keys=k1, allow={k1.public}.__contains__)
    t2 = PeerTransport("n2", "tcp://127.0.0.1:*", keys=k2, allow={k1.public}.__contains__)
    try:
        t2.add_peer("n1", t1.endpoint)  # n2's key is not on n1's allow-list
        t1.add_peer("n2", t2.endpoint)  # n1's is on n2's
        end = time.monotonic() + 10
        while not t1.connected("n2"):
            assert time.monotonic() < end, "n1 never connected to n2"
            t1.recv(0.05)
            t2.recv(0.01)
        for _ in range(20):
            t2.send([Message(MessageType.HEARTBEAT, "n1", "n2", 1)])
            assert not [f for f in t1.recv(0.01) if f.kind == "raft"]
        assert not t2.connected("n1")
    finally:
        t1.close()
        t2.close()


def test_a_node_serves_only_with_its_own_keys_folder(tmp_path: Path) -> None:
    from boltraft.server.main import load_node_keys

    init_keys(tmp_path / "k", ["n1", "n2"], {"app": "write"})
    cfg = ServerConfig("n1", tmp_path, "tcp://127.0.0.1:7301", keys=str(tmp_path / "k" / "n1"))
    keys = load_node_keys(cfg)
    assert keys is not None and keys.name == "n1"
    for other in ("n2", "app"):
        wrong = ServerConfig(
            "n1", tmp_path, "tcp://127.0.0.1:7301", keys=str(tmp_path / "k" / other)
        )
        with pytest.raises(ConfigError, match="not of node 'n1'"):
            load_node_keys(wrong)
    assert load_node_keys(ServerConfig("n1", tmp_path, "tcp://127.0.0.1:7301")) is None


def test_one_recv_with_keys_takes_frames_up_to_its_byte_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The byte budget of one ``recv`` (RECV_BYTES) holds on a transport with keys too: of
    six 10 MiB frames waiting on the ROUTER, one call hands over two, keeps one in the
    inbox (a connection's budget is 8 MiB, or one frame) and refuses three. (ZeroMQ's queue
    of one connection holds fewer than six: the waiting frames are handed over by a
    stand-in for ``drain_users``, called once a real frame made the ROUTER readable.)"""
    init_keys(tmp_path, ["n1"], {"app": "write"})
    node_keys, app = load_keys(tmp_path / "n1"), load_keys(tmp_path / "app")
    t = PeerTransport(  # no drain thread: only recv() calls the stand-in
        "n1", "tcp://127.0.0.1:*", keys=node_keys, allow={app.public}.__contains__, drain_s=None
    )
    big = codec.encode_frame(codec.KIND_REQ, 1, {"op": "status", "pad": b"x" * (10 << 20)})
    handed: list[int] = []
    real_drain = zmq_transport.drain_users

    def six_waiting(
        sock: zmq.Socket, limit: int, zero_copy: ZeroCopy | None = None
    ) -> Iterator[tuple[list[Part], str | None]]:
        for parts, user in real_drain(sock, limit, zero_copy):
            handed.append(len(parts[-1]))
            yield parts, user
        for _ in range(5):
            handed.append(len(big))
            yield [b"app-conn", big], app.public

    client = zmq.Context.instance().socket(zmq.DEALER)
    try:
        client.setsockopt(zmq.LINGER, 0)
        for opt, value in client_options(app).items():
            client.setsockopt(opt, value)
        client.connect(t.endpoint)
        client.send(big)
        monkeypatch.setattr(zmq_transport, "drain_users", six_waiting)
        end = time.monotonic() + 10
        batch: list[Incoming] = []
        while not batch:
            assert time.monotonic() < end, "the client's frame never came"
            batch = t.recv(0.05)
        assert len(batch) == 2 and all(f.user == app.public for f in batch)
        assert len(handed) == 6
        c = t.counters()
        assert (c["inbox_frames"], c["inbox_refused"]) == (1, 3)
        kept = t.recv(0.0)
        assert len(kept) == 1 and kept[0].user == app.public
        assert t.counters()["inbox_frames"] == 0
    finally:
        client.close()
        t.close()
