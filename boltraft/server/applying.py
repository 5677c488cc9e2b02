"""The apply side of the node loop: committed entries go to the state machine in ONE
``apply()`` per batch; the ``Applier`` keeps the entries that must wait.

``lazy_apply`` (a server setting, on by default): a follower keeps the committed entries its
Readys hand over and applies what it kept in one batch later: when its loop found nothing to
do for ``LAZY_APPLY_IDLE_S``, at the next tick, before it handles anything but Raft messages,
in the next Ready once ``LAZY_APPLY_ENTRIES``/``LAZY_APPLY_BYTES`` wait or the oldest of
them has waited ``LAZY_APPLY_WAIT_S``, and at once in a Ready that
changes its role or membership, installs a snapshot or confirms reads, and always while the
node serves watches (``Applier.select``). The wait bounds a batch by time as well as by
size: under a light load the batches stay small enough to apply while the Ready's flush
runs (a big one would hold up the follower's answer, and both followers make it at once),
under a heavy one they grow toward ``LAZY_APPLY_ENTRIES``, where an apply costs least per
entry.

A full disk (the state machine's ``NoSpaceError``): the entries are kept, in order, and
applied again at every tick, never skipped (the other replicas apply them).

Invariant: ``kept`` holds committed entries past the applied index, in index order, and is
empty unless this node is a follower with ``lazy_apply`` (then none of them is a membership
change) or the state machine found the disk full (``full``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from boltraft.errors import NoSpaceError, UnavailableError
from boltraft.raft.types import Entry, Ready
from boltraft.server.ports import CommitObserver, StateMachine

log = logging.getLogger("boltraft.server")

# lazy_apply: a follower applies what it kept once this many entries or command bytes wait,
# or the oldest has waited LAZY_APPLY_WAIT_S, or after its loop found nothing to do for
# LAZY_APPLY_IDLE_S (and at every tick)
LAZY_APPLY_ENTRIES = 256
LAZY_APPLY_BYTES = 1 << 20
LAZY_APPLY_WAIT_S = 0.01
LAZY_APPLY_IDLE_S = 0.002


@dataclass(slots=True)
class Applied:
    """What one ``Applier.apply`` did: ``entries`` applied with their ``results`` (to
    answer); ``stalled`` when the disk was too full for the rest, which the applier kept."""

    entries: list[Entry]
    results: list[Any]
    stalled: bool = False
    error: NoSpaceError | None = None


class Applier:
    """Applies committed entries for one node; owned by the loop's thread."""

    def __init__(
        self, sm: StateMachine, observer: CommitObserver, *, node_id: str, lazy: bool
    ) -> None:
        """``sm``: the state machine (the node replaces it after a snapshot install)."""
        self.sm = sm
        self.full = ""  # why the state machine cannot apply ("" when it can)
        self._observer = observer
        self._id = node_id
        self._lazy = lazy
        self._kept: list[Entry] = []
        self._kept_bytes = 0
        self._kept_at = 0.0  # when the oldest kept entry was kept (the loop's clock)
        # the entry applied ahead (index, term) and its results, until the next apply
        self._ahead: tuple[int, int, list[Any]] | None = None

    @property
    def has_kept(self) -> bool:
        return bool(self._kept)

    @property
    def kept(self) -> tuple[Entry, ...]:
        """The committed entries kept for a later apply, in index order."""
        return tuple(self._kept)

    def select(
        self,
        rd: Ready,
        follower: bool,
        reads_waiting: bool,
        watched: bool = False,
        *,
        now: float,
    ) -> list[Entry]:
        """The committed entries to apply in ``rd``: those kept from earlier Readys, then
        ``rd.committed_entries``; none when a ``follower`` keeps them all for a later batch
        (``lazy_apply``), which it does unless the Ready changes membership, installs a
        snapshot or confirms reads, ``reads_waiting``, the node serves watches
        (``watched``: their changes should not wait for a batch), the kept entries reach
        ``LAZY_APPLY_ENTRIES`` or ``LAZY_APPLY_BYTES``, or at ``now`` (the loop's clock)
        the oldest of them has waited ``LAZY_APPLY_WAIT_S``. With a full disk every entry
        is kept for the retry at the next tick."""
        ents = rd.committed_entries
        if self.full:
            self.keep(ents)
            return []
        if (
            self._lazy
            and follower
            and rd.conf_state is None
            and rd.snapshot is None
            and not rd.read_states
            and not reads_waiting
            and not watched
        ):
            if ents and not self._kept:
                self._kept_at = now
            self.keep(ents)
            if (
                len(self._kept) < LAZY_APPLY_ENTRIES
                and self._kept_bytes < LAZY_APPLY_BYTES
                and now - self._kept_at < LAZY_APPLY_WAIT_S
            ):
                return []
            ents = []
        if self._kept:
            ents = [*self.take_kept(), *ents]
        return ents

    def keep(self, ents: list[Entry]) -> None:
        """Adds the committed ``ents`` (the next in index order) to the kept ones."""
        if ents:
            self._kept.extend(ents)
            self._kept_bytes += sum(map(len, [e.data for e in ents]))

    def take_kept(self) -> list[Entry]:
        """The kept entries, keeping none."""
        ents = self._kept
        self._kept = []
        self._kept_bytes = 0
        return ents

    def prepare(self, ents: list[Entry]) -> bool:
        """True when the state machine applied ``ents``, a leader's new entries, ahead of
        their commit (``StateMachine.prepare``: the apply at their commit then only commits
        them); never while entries wait here (they come first) or the disk is full."""
        self._ahead = None
        if self.full or self._kept:
            return False
        results = self.sm.prepare(ents)
        if results is None:
            return False
        self._ahead = (ents[0].index, ents[0].term, results)
        return True

    def ahead(self, ents: list[Entry]) -> list[Any] | None:
        """The results the apply of committed ``ents`` will return, when ``ents`` are the
        one entry applied ahead (same index and term), for its writes to be answered
        before the apply commits it; None otherwise. The answer stands even if that commit
        then finds the disk full: the entry is committed, and its apply, retried until it
        succeeds, gives the same result."""
        ahead = self._ahead
        if ahead is None or len(ents) != 1:
            return None
        e = ents[0]
        return ahead[2] if e.index == ahead[0] and e.term == ahead[1] else None

    def apply(self, ents: list[Entry]) -> Applied:
        """Applies committed ``ents`` in ONE state-machine ``apply()``. When the disk is too
        full, keeps what was not applied (before the entries kept meanwhile) and reports
        ``stalled``; a run that fell back to one entry at a time may have applied a prefix,
        whose results were lost: those entries come back with ``unavailable``."""
        last = ents[-1].index
        self._ahead = None
        self._observer.applying(last)
        try:
            results = self.sm.apply(ents)
        except NoSpaceError as err:
            return self._stalled(ents, err)
        if self.full:
            self.full = ""
            log.warning("%s: the state machine applies again (at %d)", self._id, last)
        self._observer.applied(last)
        return Applied(ents, results)

    def _stalled(self, ents: list[Entry], err: NoSpaceError) -> Applied:
        if err.details.get("disk_full"):
            self.full = f"node {self._id}'s disk is full: its state machine cannot apply"
        else:
            self.full = f"node {self._id}'s state machine reached its quota"
        done = self.sm.applied[0]
        applied = [e for e in ents if e.index <= done]
        gone = UnavailableError("applied, but the result was lost to a full disk; retry it")
        later = self.take_kept()  # kept while this apply ran: they follow ents
        self.keep([e for e in ents if e.index > done])
        self.keep(later)
        return Applied(applied, [gone] * len(applied), stalled=True, error=err)
