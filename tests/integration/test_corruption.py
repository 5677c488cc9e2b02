"""Damaged files of a real ``boltraft serve`` node (issue 19): a node whose Raft log or state
store was damaged on disk refuses to start, in one line, instead of serving what it lost or
what was changed under it. Waits are polls with deadlines."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from boltraft.client import Client
from boltraft.storage.wal import format as fmt

from .cluster import Cluster

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
