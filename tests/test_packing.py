"""``boltraft.packing.pack``: the shared Packer encodes exactly as ``msgpack.packb``, recovers
from an unencodable value, and gives whole, correct results to threads packing at once;
``pack_bulk`` encodes the same and keeps no buffer of a large output's size."""

from __future__ import annotations

import threading
import tracemalloc
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from boltraft.packing import BULK_KEEP_BYTES, pack, pack_bulk
from boltraft.raft.types import Entry, Message, MessageType
from boltraft.storage.wal import format as walfmt
from boltraft.transport import codec

plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=300),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=5)
    ),
    max_leaves=30,
)


@given(plain)
def test_pack_is_packb(value: Any) -> None:
    assert pack(value) == msgpack.packb(value, use_bin_type=True)
    assert pack_bulk(value) == msgpack.packb(value, use_bin_type=True)


def test_int_enums_and_tuples_pack_as_packb_does() -> None:
    value = (MessageType.APP, (b"a", "b"), [1, 2])
    assert pack(value) == msgpack.packb(value, use_bin_type=True)


def test_an_unencodable_value_raises_and_leaves_nothing_behind() -> None:
    with pytest.raises(TypeError):
        pack([b"x" * 1000, object()])
    assert pack([1]) == b"\x91\x01"


def test_threads_packing_at_once_each_get_their_own_bytes() -> None:
    values = [[i, b"v" * (i % 97), {"k": str(i)}] for i in range(200)]
    want = [msgpack.packb(v, use_bin_type=True) for v in values]
    bad: list[int] = []

    def worker() -> None:
        for _ in range(50):
            for i, v in enumerate(values):
                if pack(v) != want[i]:
                    bad.append(i)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bad == []


def test_large_log_batches_and_raft_frames_leave_no_buffer_of_their_size() -> None:
    """A follower catching up appends, and its leader sends, megabytes at a time; packing
    them must not leave a Packer holding a buffer that large for the life of the process."""
    ents = [Entry(1, i, 0, bytes(2000)) for i in range(1, 2049)]  # 4 MiB of data
    msg = Message(MessageType.APP, "b", "a", 1, 1, 0, ents, 0)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for encode in (walfmt.encode_entries, lambda e: codec.encode_raft([msg])):
            out = encode(ents)
            assert len(out) > 3 << 20
            del out
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < BULK_KEEP_BYTES
