"""The workload of ``chaos run``: client threads doing linearizable reads, writes and
compare-and-sets on a few keys, every call recorded in one history (docs/chaos.md).

Each key is ``k<i>`` in the bucket ``chaos``; its value is a decimal integer. Every write and
every cas writes a value never written before (one counter for the run), so a value read
names the one write that wrote it. A cas expects the value most recently seen on its key by
any client (read, written or reported by a failed cas), so it often succeeds.

Each of the ``clients`` slots runs one process at a time: a ``boltraft.client.Client`` of its
own (its own ``cid``; the client retries as docs/protocol.md section 7 says, re-sending a
write with the same ``(cid, seq)``). A call that ends ``ok`` is recorded ``ok``; a cas whose
condition failed is ``fail``; anything else (the call timed out, ``session_expired``, any
other error) leaves the outcome unknown: ``info``, and the process stops; the slot carries on
with a new process (a new id, never used before, and a new client).
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from boltraft.chaos.history import HistoryWriter
from boltraft.client import Client
from boltraft.errors import BoltraftError, ConditionFailedError

BUCKET = "chaos"
GARBLED = -1  # recorded for a value that is not a decimal integer: no write wrote it


def key_name(i: int) -> str:
    """The name of key ``i``."""
    return f"k{i}"


def decode(raw: bytes | None) -> int | None:
    """The integer a stored value holds (GARBLED when it holds none), None when absent."""
    if raw is None:
        return None
    try:
        return int(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return GARBLED


@dataclass
class Tally:
    """What the workload saw, across threads (guarded by ``lock``)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    ok: int = 0
    fail: int = 0
    info: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # error code -> calls it ended


class Workload:
    """``clients`` threads running operations against ``endpoints`` until ``stop()``.

    ``timeout`` is each call's limit (the client's retries included)."""

    def __init__(
        self,
        endpoints: list[str],
        history: HistoryWriter,
        *,
        clients: int,
        keys: int,
        seed: int,
        timeout: float = 5.0,
    ) -> None:
        self.endpoints = endpoints
        self.history = history
        self.keys = [key_name(i) for i in range(keys)]
        self.timeout = timeout
        self.tally = Tally()
        self._rng = random.Random(seed)
        self._values = itertools.count(1)
        self._pids = itertools.count(0)
        self._seen: dict[str, int | None] = dict.fromkeys(self.keys)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(
                target=self._slot,
                args=(random.Random(self._rng.getrandbits(64)),),
                name=f"chaos-client-{i}",
                daemon=True,
            )
            for i in range(clients)
        ]

    def next_process(self) -> int:
        """A process id never used before."""
        return next(self._pids)

    def start(self) -> None:
        """Starts every client thread."""
        for t in self._threads:
            t.start()

    def stop(self, timeout: float | None = None) -> None:
        """Asks every thread to stop after its current call, and waits for them: at most
        ``timeout`` seconds in all (None: as long as they take). A thread still in a call
        then is a daemon: it ends with its call or with the process."""
        self._stop.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def _slot(self, rng: random.Random) -> None:
        while not self._stop.is_set():
            process = self.next_process()
            with Client(self.endpoints, timeout=self.timeout) as client:
                while not self._stop.is_set():
                    if not self.one(client, process, rng):
                        break  # an info: this process is done

    def one(self, client: Client, process: int, rng: random.Random) -> bool:
        """Runs one random operation as ``process``; False when its outcome is unknown."""
        key = rng.choice(self.keys)
        r = rng.random()
        if r < 0.5:
            return self.read(client, process, key)
        if r < 0.75:
            return self.write(client, process, key, next(self._values))
        return self.cas(client, process, key, self._seen[key], next(self._values))

    def read(self, client: Client, process: int, key: str) -> bool:
        """A linearizable read of ``key``; False when its outcome is unknown."""
        self.history.invoke(process, "read", key)
        try:
            value = decode(client.get(BUCKET, key))
        except BoltraftError as err:
            return self._unknown(process, err.code)
        except Exception as exc:  # a client bug must not stop the run: recorded, unknown
            return self._unknown(process, f"internal:{type(exc).__name__}")
        self.history.ok(process, value)
        self._saw(key, value)
        self._count("ok")
        return True

    def write(self, client: Client, process: int, key: str, value: int) -> bool:
        """Writes ``value`` to ``key``; False when its outcome is unknown."""
        self.history.invoke(process, "write", key, value)
        try:
            client.put(BUCKET, key, str(value))
        except BoltraftError as err:
            return self._unknown(process, err.code)
        except Exception as exc:
            return self._unknown(process, f"internal:{type(exc).__name__}")
        self._acked(process, key, value)
        return True

    def cas(self, client: Client, process: int, key: str, old: int | None, new: int) -> bool:
        """Sets ``key`` from ``old`` (None: absent) to ``new``; False when the outcome is
        unknown."""
        self.history.invoke(process, "cas", key, (old, new))
        try:
            client.cas(BUCKET, key, None if old is None else str(old), str(new))
        except ConditionFailedError as err:
            self.history.fail(process)
            current = err.details.get("current")
            self._saw(key, decode(current) if isinstance(current, bytes) else None)
            self._count("fail")
            return True
        except BoltraftError as err:
            return self._unknown(process, err.code)
        except Exception as exc:
            return self._unknown(process, f"internal:{type(exc).__name__}")
        self._acked(process, key, new)
        return True

    def _acked(self, process: int, key: str, value: int) -> None:
        self.history.ok(process)
        self._saw(key, value)
        self._count("ok")

    def _saw(self, key: str, value: Any) -> None:
        self._seen[key] = value

    def _count(self, what: str) -> None:
        with self.tally.lock:
            setattr(self.tally, what, getattr(self.tally, what) + 1)

    def _unknown(self, process: int, code: str) -> bool:
        self.history.info(process)
        with self.tally.lock:
            self.tally.info += 1
            self.tally.errors[code] += 1
        return False
