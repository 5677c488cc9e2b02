"""Damaged files of a real ``boltraft serve`` node (issue 19): a node whose Raft log or state
store was damaged on disk refuses to start, in one line, instead of serving what it lost or
what was changed under it. Waits are polls with deadlines."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from boltraft.client import Client
from boltraft.errors import BucketNotFoundError, CorruptionError
from boltraft.storage.wal import format as fmt

from .cluster import Cluster, wait_until

pytestmark = pytest.mark.integration


def _records(file: Path) -> list[int]:
    """The offset of every record of the WAL segment ``file``."""
    data = memoryview(file.read_bytes())
    offs = [0]
    while (rec := fmt.read_record(data, offs[-1])) is not None:
        offs.append(rec[2])
    return offs[:-1]


def _refused(c: Cluster, node_id: str) -> str:
    """Returns the last line ``node_id`` printed when it refused to start."""
    run = subprocess.run(c.argv(node_id), capture_output=True, text=True, timeout=30)
    assert run.returncode == 1, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    return run.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("where", ["payload", "length"])
def test_a_bit_flipped_in_the_middle_of_a_nodes_wal_stops_it_with_a_corruption_error(
    cluster: Cluster, where: str
) -> None:
    """``payload``: a record that fails its CRC with records after it; ``length``: a record
    whose length now runs past the end of the file, as a torn final write's may, with the
    records after it inside what it claims."""
    with Client(cluster.endpoints, timeout=20) as cl:
        cl.create_bucket("b")
        for i in range(150):
            cl.put("b", b"k%d" % i, b"v" * 100)
        last = cl.status()["commit"]
    cluster.wait_applied("n1", last)
    cluster.stop("n1")
    (segment,) = sorted((cluster.root / "n1" / "wal").glob("*.wal"))
    offs = _records(segment)
    victim = offs[len(offs) // 2]
    raw = bytearray(segment.read_bytes())
    raw[victim + (fmt.HEADER_SIZE + 10 if where == "payload" else 2)] ^= 0x40
    segment.write_bytes(bytes(raw))
    line = _refused(cluster, "n1")
    assert line.startswith("error: corruption: "), line
    assert f"raft log segment {segment}: bad record at offset" in line
    assert segment.read_bytes() == bytes(raw)  # nothing was cut


def _flip_everywhere(file: Path, value: bytes) -> int:
    """Flips one bit of every copy of ``value`` in ``file`` (LMDB's copy-on-write leaves old
    copies in free pages; the live one is among them), writing through the page cache a
    running node's map reads; returns how many copies there were."""
    raw = bytearray(file.read_bytes())
    at, copies = raw.find(value), 0
    while at >= 0:
        raw[at + len(value) // 2] ^= 0x08
        copies += 1
        at = raw.find(value, at + 1)
    with open(file, "r+b") as f:
        f.write(bytes(raw))
    return copies


ROTTING = b"a precious value that will rot on one replica"


def _wait_holds(c: Cluster, node_id: str, key: bytes, value: bytes) -> None:
    """Returns once ``node_id`` serves ``value`` at ``key`` of bucket ``b`` (it applied it;
    a follower the leader's quorum did not need may not even have the bucket yet)."""

    def holds() -> bool:
        with Client([c.addrs[node_id]], timeout=5) as one:
            try:
                return one.get("b", key, read="stale") == value
            except BucketNotFoundError:
                return False

    wait_until(holds, 20, f"{node_id} to apply {key!r}")


def test_a_node_never_serves_a_value_that_rotted_and_refuses_to_restart(cluster: Cluster) -> None:
    with Client(cluster.endpoints, timeout=20) as cl:
        cl.create_bucket("b")
        cl.put("b", b"k", ROTTING)
        cl.put("b", b"other", b"fine")
    victim = next(n for n in cluster.ids if n != cluster.wait_for_leader())
    _wait_holds(cluster, victim, b"other", b"fine")
    assert _flip_everywhere(cluster.root / victim / "state" / "data.mdb", ROTTING) >= 1
    with Client([cluster.addrs[victim]], timeout=10) as one:
        with pytest.raises(CorruptionError) as err:
            one.get("b", b"k", read="stale")
        assert err.value.code == "corruption"
        with pytest.raises(CorruptionError):
            one.get("b", b"k")  # linearizable: confirmed by the leader, read here
        assert one.get("b", b"other", read="stale") == b"fine"
    st = cluster.status(victim)
    assert st is not None and "fails its checksum" in st["corrupt"]
    assert st["service"]["corrupt_reads"] == 2
    with Client(cluster.endpoints, timeout=20) as cl:  # the others serve it
        cl.put("b", b"after", b"x")
    cluster.stop(victim)
    line = _refused(cluster, victim)
    assert line.startswith("error: corruption: the state store "), line
    assert "failed its check" in line and "fails its checksum" in line


def test_the_periodic_check_raises_the_alarm_of_a_replica_that_rotted(make_cluster: Any) -> None:
    c = make_cluster({"corrupt_check_ms": 200})
    with Client(c.endpoints, timeout=20) as cl:
        cl.create_bucket("b")
        cl.put("b", b"k", ROTTING)
    lead = c.wait_for_leader()
    victim = next(n for n in c.ids if n != lead)
    _wait_holds(c, victim, b"k", ROTTING)

    def rounds(node_id: str) -> int:
        st = c.status(node_id)
        return st["corrupt_check"]["compared"] if st else 0

    wait_until(lambda: rounds(lead) >= 1, 20, "a compared round")
    assert c.status(lead)["corrupt"] == ""  # type: ignore[index]
    assert _flip_everywhere(c.root / victim / "state" / "data.mdb", ROTTING) >= 1

    def alarm() -> str:
        st = c.status(victim)
        return st["corrupt"] if st else ""

    assert "fails its checksum" in wait_until(alarm, 20, "the victim's alarm")
    assert c.running(victim)


def test_a_write_that_needs_a_rotted_value_stops_that_replica_only(cluster: Cluster) -> None:
    with Client(cluster.endpoints, timeout=20) as cl:
        cl.create_bucket("b")
        cl.put("b", b"k", ROTTING)
        victim = next(n for n in cluster.ids if n != cluster.wait_for_leader())
        _wait_holds(cluster, victim, b"k", ROTTING)
        assert _flip_everywhere(cluster.root / victim / "state" / "data.mdb", ROTTING) >= 1
        cl.put("b", b"k", b"replaced", if_value=ROTTING)  # the others apply it
        cluster.procs[victim].wait(timeout=20)
    assert cluster.procs[victim].returncode == 1
    text = (cluster.root / f"{victim}.log").read_text()
    last_line = text.strip().splitlines()[-1]
    assert last_line.startswith("error: corruption: the stored value of key"), text[-3000:]
    assert "Traceback" not in text


PAGE = 4096  # LMDB's page size here (the OS page size)
_TYPE_BITS = 0x03  # P_BRANCH | P_LEAF


def _flip_page_headers(file: Path, field: str) -> int:
    """Flips one bit of a header field of every branch and leaf page of the LMDB file
    ``file`` (the live ones are among them): ``flags``: the bit saying branch or leaf;
    ``lower``: bit 2 of ``mp_lower`` (where the page's free space starts). Returns how many
    pages it changed."""
    raw = bytearray(file.read_bytes())
    flipped = 0
    for pgno in range(2, len(raw) // PAGE):  # pages 0 and 1 are the meta pages
        at = pgno * PAGE
        kind = raw[at + 10] & _TYPE_BITS
        if int.from_bytes(raw[at : at + 8], "little") != pgno or kind not in (1, 2):
            continue  # never written, or not a branch or leaf page
        if field == "flags":
            raw[at + 10] ^= kind
        else:
            raw[at + 12] ^= 0x04
        flipped += 1
    file.write_bytes(bytes(raw))
    return flipped


@pytest.mark.parametrize("field", ["flags", "lower"])
def test_a_flipped_page_header_in_the_state_store_stops_the_node_with_a_corruption_error(
    cluster: Cluster, field: str
) -> None:
    """Finding 12: the page headers of a stopped node's state DB damaged; the node refuses
    to start with a ``corruption`` error (LMDB itself would abort the process on the first
    scan through such a page, or start and serve), and ``inspect check`` reports it."""
    with Client(cluster.endpoints, timeout=20) as cl:
        cl.create_bucket("b")
        for i in range(0, 400, 50):
            ops = [
                {"op": "put", "bucket": "b", "key": b"k%04d" % j, "value": b"v" * 200}
                for j in range(i, i + 50)
            ]
            cl.batch(ops)
        last = cl.status()["commit"]
    victim = next(n for n in cluster.ids if n != cluster.wait_for_leader())
    cluster.wait_applied(victim, last)
    cluster.stop(victim)
    state = cluster.root / victim / "state"
    assert _flip_page_headers(state / "data.mdb", field) >= 2
    line = _refused(cluster, victim)
    assert line.startswith("error: corruption: the state store "), line
    assert "failed its check" in line and "page" in line
    check = subprocess.run(
        [*cluster.serve_argv(), "inspect", str(cluster.root / victim), "check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 1 and "problem: " in check.stdout, check.stdout + check.stderr
