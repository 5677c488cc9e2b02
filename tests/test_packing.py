"""``boltraft.packing.pack``: the shared Packer encodes exactly as ``msgpack.packb``, recovers
from an unencodable value, and gives whole, correct results to threads packing at once."""

from __future__ import annotations

import threading
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from boltraft.packing import pack
from boltraft.raft.types import MessageType

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
