"""Returns nothing; the apply side of the node loop (``boltraft.server.node``), a mixin of
:class:`boltraft.server.node.Node`: committed entries go to the state machine in ONE
``apply()`` per batch, and their writes and reads are answered.

``lazy_apply`` (a server setting, on by default): a follower keeps the committed entries its
Readys hand over and applies what it kept in one batch later: when its loop found nothing to
do for ``LAZY_APPLY_IDLE_S``, at the next tick, before it handles anything but Raft messages,
once ``LAZY_APPLY_ENTRIES``/``LAZY_APPLY_BYTES`` wait, and at once in a Ready that changes
its role or membership, installs a snapshot or confirms reads (``_lazy_apply``).

A full disk (the state machine's ``NoSpaceError``): the entries are kept, in order, and
applied again at every tick, never skipped (the other replicas apply them); see
``_apply_stalled``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from boltraft.errors import NoSpaceError, UnavailableError
from boltraft.raft.types import Entry, Ready, Role

if TYPE_CHECKING:
    from boltraft.server.node import Node

log = logging.getLogger("boltraft.server")

# lazy_apply: a follower applies what it kept once this many entries or command bytes wait,
# or after its loop found nothing to do for LAZY_APPLY_IDLE_S (and at every tick)
LAZY_APPLY_ENTRIES = 64
LAZY_APPLY_BYTES = 1 << 20
LAZY_APPLY_IDLE_S = 0.002


class ApplyMixin:
    """The apply side; every method here assumes ``self`` is a Node (see its invariants)."""

    def catch_up(self: Node) -> None:
        """Returns None once the committed entries a follower kept (``lazy_apply``) are
        applied, in ONE state-machine ``apply()``; a no-op when it kept none."""
        ents = self._take_kept()
        if ents and self._apply(ents):
            self.ops.on_applied(ents, None)

    def _lazy_apply(self: Node, rd: Ready) -> list[Entry]:
        """Returns the committed entries to apply in this Ready: ``rd.committed_entries``
        after those kept from earlier Readys; none when this follower keeps them all for a
        later batch (``lazy_apply``), which it does unless the Ready changes its role
        (``_handle_ready`` set it already) or membership, installs a snapshot or confirms
        reads, reads wait to be served, or the kept entries reach ``LAZY_APPLY_ENTRIES`` or
        ``LAZY_APPLY_BYTES``."""
        ents = rd.committed_entries
        if self._apply_full:  # kept in order until the retry at the next tick succeeds
            self._keep(ents)
            return []
        if (
            self.cfg.lazy_apply
            and self.role == Role.FOLLOWER
            and rd.conf_state is None
            and rd.snapshot is None
            and not rd.read_states
            and not self.service.reads_waiting
        ):
            self._keep(ents)
            if (
                len(self._unapplied) < LAZY_APPLY_ENTRIES
                and self._unapplied_bytes < LAZY_APPLY_BYTES
            ):
                return []
            ents = []
        if self._unapplied:
            ents = [*self._take_kept(), *ents]
        return ents

    def _keep(self: Node, ents: list[Entry]) -> None:
        """Returns None after adding the committed ``ents`` (the next in index order) to the
        ones kept for a later apply."""
        if ents:
            self._unapplied.extend(ents)
            self._unapplied_bytes += sum(map(len, [e.data for e in ents]))

    def _take_kept(self: Node) -> list[Entry]:
        """Returns the committed entries this follower kept (``lazy_apply``), keeping none."""
        ents = self._unapplied
        self._unapplied = []
        self._unapplied_bytes = 0
        return ents

    def _apply(self: Node, ents: list[Entry]) -> bool:
        """Returns True after applying committed ``ents`` in ONE state-machine ``apply()`` and
        answering the writes and the reads waiting for them; False when the disk was too
        full (``_apply_stalled`` kept them)."""
        last = ents[-1].index
        self.stages.applying(last)
        try:
            results = self.sm.apply(ents)
        except NoSpaceError as err:
            self._apply_stalled(ents, err)
            return False
        if self._apply_full:
            self._apply_full = ""
            log.warning("%s: the state machine applies again (at %d)", self.id, last)
        self.stages.applied(last)
        if last > self.applied:
            self.applied = last
        if last > self.commit:
            self.commit = last
        self.service.on_applied(ents, results)
        self.stages.replied(last)
        return True

    def _apply_stalled(self: Node, ents: list[Entry], err: NoSpaceError) -> None:
        """Returns None after keeping the committed ``ents`` the state machine could not apply
        for want of space (``err``) to apply them again at the next tick (never skipping one:
        the other replicas apply it). Meanwhile a leader answers new writes ``unavailable``
        and, at its ticks, hands leadership to a follower; confirmed reads that would wait
        for the apply are answered ``unavailable`` (``Service.on_apply_stalled``)."""
        self.counters["apply_disk_full"] += 1
        if err.details.get("disk_full"):
            self._apply_full = f"node {self.id}'s disk is full: its state machine cannot apply"
        else:
            self._apply_full = f"node {self.id}'s state machine reached its quota"
        self._warn_full(err)
        done = self.sm.applied[0]  # a run that fell back to one entry at a time got this far
        if done > self.applied:
            gone = UnavailableError("applied, but the result was lost to a full disk; retry it")
            applied = [e for e in ents if e.index <= done]
            self.service.on_applied(applied, [gone] * len(applied))
            self.applied = done
        later = self._take_kept()  # kept while this apply ran: they follow ents
        self._keep([e for e in ents if e.index > done])
        self._keep(later)
        self.service.on_apply_stalled()

    def _warn_full(self: Node, err: NoSpaceError) -> None:
        if self._full_log.due("", self._clock()):
            log.warning("%s: %s (%s); retrying", self.id, self.disk_full, err.message)
