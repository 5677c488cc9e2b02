"""The workload operators that drive a real cluster through ``boltraft.client.Client``.

``workload.run_workload`` calls the factory in each worker process: every benchmark client
(one thread) gets its own ``Client``, so its own ZeroMQ socket.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from boltraft.benchmark import hist
from boltraft.benchmark.workload import WorkloadSpec, key_name
from boltraft.transport.curve import PartyKeys

PREFILL_BATCH = 256  # puts per atomic batch when filling the key space before reads
RTT_PROBES = 100  # status round trips timed before each run


class ClientOperator:
    """One benchmark client: its own ``Client`` (one ZeroMQ socket), used by one thread."""

    def __init__(self, client: Any, bucket: str, read_level: str) -> None:
        self.client = client
        self.bucket = bucket
        self.read_level = read_level

    def write(self, key: bytes, value: bytes) -> None:
        """Puts ``value`` under ``key`` and waits until it was applied; raises the client's
        typed errors."""
        self.client.put(self.bucket, key, value)

    def read(self, key: bytes) -> None:
        """Gets ``key`` at the configured read level (the value is dropped)."""
        self.client.get(self.bucket, key, read=self.read_level)

    def close(self) -> None:
        """Closes the client's socket."""
        self.client.close()


@dataclasses.dataclass(frozen=True)
class ClientOperatorFactory:
    """Picklable: makes client ``i``'s operator in a worker process.

    ``spread``: rotate the endpoint list by the client index, so reads spread over every
    node; otherwise every client starts at ``endpoints[0]`` (put the leader first).
    ``keys``: the client keys of a cluster with CURVE (None: plain sockets).
    """

    endpoints: tuple[str, ...]
    bucket: str = "bench"
    read_level: str = "linearizable"
    timeout: float = 10.0
    spread: bool = False
    keys: PartyKeys | None = None

    def _client(self, index: int) -> Any:
        from boltraft.client import Client

        eps = list(self.endpoints)
        if self.spread and eps:
            k = index % len(eps)
            eps = eps[k:] + eps[:k]
        return Client(eps, timeout=self.timeout, keys=self.keys)

    def __call__(self, index: int) -> ClientOperator:
        return ClientOperator(self._client(index), self.bucket, self.read_level)

    def prepare(self, spec: WorkloadSpec) -> None:
        """Creates the bucket and, when the workload reads, fills every key of ``spec.key_space``
        with a value (atomic batches of ``PREFILL_BATCH`` puts)."""
        client = self._client(0)
        try:
            client.create_bucket(self.bucket, if_not_exists=True)
            if spec.workload == "write":
                return
            value = b"v" * spec.value_size
            for lo in range(0, spec.key_space, PREFILL_BATCH):
                hi = min(spec.key_space, lo + PREFILL_BATCH)
                client.batch(
                    [
                        {"op": "put", "bucket": [self.bucket], "key": key_name(i), "value": value}
                        for i in range(lo, hi)
                    ]
                )
        finally:
            client.close()

    def status_rtt(self, probes: int = RTT_PROBES) -> dict[str, Any]:
        """Returns the latency summary (``hist.summary_ms``) of ``probes`` idle ``status``
        round trips to ``endpoints[0]`` through the client library: the client's own work
        plus the network both ways, with no disk and no Raft in the path."""
        client = self._client(0)
        try:
            client.status(self.endpoints[0])  # connect first
            h = hist.new_histogram()
            clock = time.monotonic
            for _ in range(probes):
                t0 = clock()
                client.status(self.endpoints[0])
                hist.record_seconds(h, clock() - t0)
            return hist.summary_ms(h)
        finally:
            client.close()
