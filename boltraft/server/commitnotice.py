"""Prompt commit notices for the followers that serve watches.

With ``lazy_commit`` (the default) a follower learns a raised commit index with the
leader's next append or heartbeat: with sparse writes, up to a heartbeat interval late. A
follower serving watches would deliver their changes that late. So while it serves at least
one watch, a follower tells its leader ``[1, "watching"]`` (``boltraft.server.wire``): at
once when it starts to, when its leader changes, and every ``NOTICE_S``. The leader tells
every follower it heard that from within ``EXPIRE_S`` of each raised commit at once
(``RawNode.set_prompt_commit``): a follower that stops serving watches, or stops being
heard, drops out by itself. Notices carry nothing else, and a lost one costs at most
``NOTICE_S`` of lazy commits.

Owned by the node loop's thread; times are the node clock's seconds.
"""

from __future__ import annotations

NOTICE_S = 1.0  # a follower serving watches repeats its notice this often
EXPIRE_S = 3.5  # a leader stops telling a follower this long after its last notice


class CommitNotices:
    """Both sides of the notices for one node: what it tells its leader as a follower
    (``due``), and whom it tells of each commit at once as a leader (``heard``,
    ``expire``, ``members``)."""

    def __init__(self) -> None:
        self._told = ""  # the leader our last notice went to ("": none since we stopped)
        self._told_at = 0.0
        self._heard: dict[str, float] = {}  # follower -> when its notice expires

    # --- follower ----------------------------------------------------------------------------
    def due(self, now: float, lead: str, watching: bool) -> bool:
        """Tells whether to send ``lead`` a notice now (and notes it sent): when
        ``watching`` and ``lead`` is not the leader told last, or was told ``NOTICE_S``
        ago. Not ``watching``, or no ``lead``: False, and the next notice goes at once."""
        if not watching or not lead:
            self._told = ""
            return False
        if lead == self._told and now - self._told_at < NOTICE_S:
            return False
        self._told, self._told_at = lead, now
        return True

    # --- leader ------------------------------------------------------------------------------
    def heard(self, follower: str, now: float) -> bool:
        """Notes ``follower``'s notice; tells whether ``members`` changed."""
        new = follower not in self._heard
        self._heard[follower] = now + EXPIRE_S
        return new

    def expire(self, now: float) -> bool:
        """Forgets the followers not heard from for ``EXPIRE_S``; tells whether ``members``
        changed."""
        gone = [f for f, until in self._heard.items() if until <= now]
        for f in gone:
            del self._heard[f]
        return bool(gone)

    @property
    def members(self) -> list[str]:
        """The followers to tell of each commit at once, sorted."""
        return sorted(self._heard)
