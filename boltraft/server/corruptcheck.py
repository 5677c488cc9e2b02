"""``CorruptCheck``: the periodic comparison of the replicas' content hashes (etcd's
``--experimental-corrupt-check-time``), and the node's corruption alarm.

Every ``corrupt_check_ms`` (0: never) the leader starts a round: it hashes its own state
(``StateMachine.content_hash`` on a worker thread) and asks every other member with
``[1, "hash", "ask", round]``; a member hashes its state the same way and answers
``[1, "hash", "is", round, applied, sha256]`` over its DEALER to the leader. When every
answer is in (or after ``ROUND_S``), the leader compares the hashes taken at the SAME applied
index: two that differ raise the alarm, naming the index and the members. Hashes at
different applied indexes cannot be compared (writes went on between them): a round that
got no two at the same index is counted ``inconclusive`` (an idle cluster always compares).

The alarm (``alarm``: "" or why) is shown as ``corrupt`` in ``status`` and stays until the
node restarts. It is also raised when this node's own hash finds a value that fails its
checksum. Invariants: only the loop's thread calls the methods; ``_answers`` holds answers
of round ``_round`` only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from boltraft.errors import BoltraftError, CorruptionError
from boltraft.server.ports import Net, NodeView
from boltraft.server.wire import HASH
from boltraft.transport import codec

log = logging.getLogger("boltraft.server")

ROUND_S = 10.0
"""A round ends when every member answered or after this long."""


class CorruptCheck:
    """Runs the rounds (leader) and answers them (every member); see the module docstring.

    ``hasher`` is the state machine's ``content_hash`` (safe from any thread); ``interval_s``
    0 turns the rounds off (answers are still given)."""

    def __init__(
        self,
        view: NodeView,
        net: Net,
        hasher: Callable[[], tuple[int, str]],
        interval_s: float,
    ) -> None:
        self._view = view
        self._net = net
        self._hasher = hasher
        self._interval = interval_s
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="boltraft-hash")
        self._next: float | None = None  # when the leader starts its next round
        self._round = 0
        self._started = 0.0
        self._mine: Future[tuple[int, str]] | None = None
        self._answers: dict[str, tuple[int, str]] = {}
        self._asked: frozenset[str] = frozenset()
        self._open = False  # a round is running
        self._answering: list[tuple[str, int, Future[tuple[int, str]]]] = []
        self.alarm = ""
        self.counters = {"rounds": 0, "compared": 0, "inconclusive": 0, "bad_hash_frames": 0}

    def status(self) -> dict[str, Any]:
        """The counters and the alarm, for ``status``."""
        return {**self.counters, "alarm": self.alarm}

    def raise_alarm(self, why: str) -> None:
        """Raises the alarm (the first reason stays) and logs it."""
        if not self.alarm:
            self.alarm = why
            log.error("%s: CORRUPTION ALARM: %s", self._view.id, why)

    def tick(self, now: float) -> None:
        """Starts a round when one is due on the leader, sends the answers whose hashes are
        ready, and ends a round that is complete or overdue."""
        if self._answering:
            self._send_answers()
        if self._open:
            if self._complete() or now - self._started >= ROUND_S:
                self._finish()
            return
        if not self._interval or not self._view.is_leader:
            self._next = None
            return
        if self._next is None:
            self._next = now + self._interval
        elif now >= self._next:
            self._next = now + self._interval
            self._start(now)

    def on_frame(self, sender: str, fields: list[Any]) -> None:
        """Handles a ``hash`` frame from ``sender`` (a routing id): an ask from a member is
        hashed and answered; an answer of the current round from a member it asked is kept.
        Anything else is counted and dropped."""
        if sender not in self._view.conf_state.members() or sender == self._view.id:
            self.counters["bad_hash_frames"] += 1
            return
        if fields[0] == "ask":
            fut = self._pool.submit(self._hasher)
            self._answering.append((sender, fields[1], fut))
        elif self._open and fields[1] == self._round and sender in self._asked:
            self._answers[sender] = (fields[2], fields[3])
        else:
            self.counters["bad_hash_frames"] += 1

    def _start(self, now: float) -> None:
        self._round += 1
        self._open = True
        self._started = now
        self._answers = {}
        self.counters["rounds"] += 1
        self._mine = self._pool.submit(self._hasher)
        peers = set(self._view.conf_state.members()) - {self._view.id}
        self._asked = frozenset(peers)
        frame = codec.encode_frame(HASH, "ask", self._round)
        for peer in sorted(peers):
            self._net.send_frame(peer, frame)

    def _complete(self) -> bool:
        return self._mine is not None and self._mine.done() and self._answers.keys() >= self._asked

    def _finish(self) -> None:
        self._open = False
        mine = self._result(self._mine)
        self._mine = None
        hashes = dict(self._answers)
        if mine is not None:
            hashes[self._view.id] = mine
        by_index: dict[int, dict[str, str]] = {}
        for node_id, (applied, sha) in hashes.items():
            by_index.setdefault(applied, {})[node_id] = sha
        compared = False
        for applied, shas in sorted(by_index.items()):
            if len(shas) < 2:
                continue
            compared = True
            if len(set(shas.values())) > 1:
                listed = ", ".join(f"{n} {sha[:16]}" for n, sha in sorted(shas.items()))
                self.raise_alarm(f"the replicas differ at applied index {applied}: {listed}")
        self.counters["compared" if compared else "inconclusive"] += 1

    def _result(self, fut: Future[tuple[int, str]] | None) -> tuple[int, str] | None:
        """The hash ``fut`` computed; None (with the alarm raised when the state failed a
        checksum) when it failed or is not done."""
        if fut is None or not fut.done():
            return None
        try:
            return fut.result()
        except CorruptionError as err:
            self.raise_alarm(f"node {self._view.id}: {err.message}")
        except BoltraftError as err:
            log.warning("%s: cannot hash the state: %s", self._view.id, err.message)
        return None

    def _send_answers(self) -> None:
        waiting = []
        for peer, rnd, fut in self._answering:
            if not fut.done():
                waiting.append((peer, rnd, fut))
                continue
            got = self._result(fut)
            if got is not None:
                self._net.send_frame(peer, codec.encode_frame(HASH, "is", rnd, got[0], got[1]))
        self._answering = waiting

    def close(self) -> None:
        """Stops the hashing thread (waits for a hash in progress)."""
        self._pool.shutdown(wait=True)
