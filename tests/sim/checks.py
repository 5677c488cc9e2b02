"""Safety checks over a recorded Raft history, fed incrementally by the simulator.

Each ``on_*`` method records one observed fact and raises ``Violation`` at once if it breaks a
Raft safety property (Raft paper, figure 3):

- election safety: at most one leader per term;
- log matching: two logs holding an entry with the same index and term hold the same command
  there and identical entries before it (checked inductively: every stored ``(index, term)``
  must always carry the same command and the same predecessor term);
- leader completeness: an entry applied anywhere is in the durable log of every leader of a
  later term;
- current-term commit: a leader raises its commit index by counting replicas only onto an
  entry of its own term, which covers the earlier ones (paper 5.4.2, figure 8);
- commit durability: when a leader raises its commit index, a majority of its voters hold
  that entry in their durable logs (the leader's own copy counts only once written), and a
  follower acknowledges to the leader of its term only entries its durable log holds;
- state machine safety: no two nodes apply different entries at one index, and state shipped
  in snapshots is the state the log produces (a chained CRC over the applied commands);
- monotonicity: a node's applied index only moves forward, one entry at a time or by a
  snapshot jump; its durable term and commit never decrease; it votes at most once per term;
  a restarted node's commit never falls below what it had made durable;
- ReadIndex linearizability: a read index handed out for a request must cover every entry
  applied anywhere (hence every acknowledged write) before the request was issued.

The checker knows nothing about the core; it is unit-tested on fabricated histories.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Collection, Sequence

from boltraft.raft.types import Entry, HardState, NodeId


class Violation(AssertionError):
    """A safety or liveness property failed; ``kind`` names the property."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


def chain_digest(digest: int, entry: Entry) -> int:
    """Returns the state digest after applying ``entry`` to a state with digest ``digest``."""
    return zlib.crc32(entry.data, zlib.crc32(b"%d" % entry.type, digest))


class SafetyChecker:
    """The global view of one run. Invariants: ``committed`` and ``digests`` hold every index
    from 1 to ``max_applied`` (``digests[0] == 0``); ``applied[n]`` is node n's state-machine
    index (durable: it survives crashes)."""

    def __init__(self) -> None:
        self.leaders: dict[int, NodeId] = {}  # term -> the one leader of that term
        self.stored: dict[tuple[int, int], tuple[int, int, bytes]] = {}  # (idx, term) -> prev..
        self.committed: dict[int, Entry] = {}  # index -> the entry every node applies there
        self.commit_term: list[int] = [0]  # index -> upper bound of the term it committed in
        self.digests: dict[int, int] = {0: 0}
        self.max_applied = 0
        self.applied: dict[NodeId, int] = {}
        self.durable: dict[NodeId, HardState] = {}  # last persisted hard state per node
        self.commit_floor: dict[NodeId, int] = {}  # per incarnation: commit may not go below
        self.reads: dict[tuple[NodeId, int, bytes], int] = {}  # (node, inc, ctx) -> bound
        self.acked: dict[int, Entry] = {}  # index -> acknowledged entry
        self.reads_checked = 0
        self.leader_commits = 0  # commit raises checked by on_leader_commit

    # --- elections ------------------------------------------------------------------------
    def on_leader(self, node: NodeId, term: int) -> None:
        """Records that ``node`` led ``term``. Raises Violation if another node did too."""
        other = self.leaders.setdefault(term, node)
        if other != node:
            raise Violation("election safety", f"{other} and {node} both led term {term}")

    def on_leader_log(
        self,
        node: NodeId,
        term: int,
        term_at: Callable[[int], int],
        first: int,
        last: int,
        lo: int = 1,
    ) -> None:
        """Checks leader completeness for the committed indexes from ``lo`` on: the leader of
        ``term`` (whose log holds ``first..last``, with ``term_at(i)`` the term at i) must hold
        every entry committed in an earlier term (``commit_term`` bounds that term from
        above; an entry of term 1 committed in term 3 need not be in the log of a stale leader
        of term 2, and a leader's own entries may still be on their way to its disk).
        Compacted indexes (< first) pass: they are in the leader's snapshot, which the state
        digest covers."""
        bound = self.commit_term
        for i in range(max(lo, first), self.max_applied + 1):
            if bound[i] >= term:
                continue
            e = self.committed[i]
            if i > last or term_at(i) != e.term:
                have = term_at(i) if i <= last else None
                raise Violation(
                    "leader completeness",
                    f"{node}, leader of term {term}, lacks committed entry {i}@{e.term} "
                    f"(its log: {first}..{last}, term there {have})",
                )

    def on_ack_sent(
        self, node: NodeId, leader: NodeId, term: int, index: int, entry_term: int, held: bool
    ) -> None:
        """Checks an append acknowledgement ``node`` sends to ``leader`` of ``term``, naming
        index ``index`` (where the leader's log holds an entry of ``entry_term``): ``held``
        tells whether ``node``'s durable log holds that entry. Raises Violation unless it
        does (persist before send)."""
        if not held:
            raise Violation(
                "ack durability",
                f"{node} acknowledged {index}@{entry_term} to {leader}, leader of term {term}, "
                f"without that entry in its durable log",
            )

    def on_leader_commit(
        self,
        node: NodeId,
        term: int,
        commit: int,
        commit_term: int,
        voters: Collection[NodeId],
        holders: Collection[NodeId],
    ) -> None:
        """Checks a commit index that ``node``, leader of ``term``, just raised to ``commit``
        (an entry of ``commit_term``) by counting replicas among ``voters``; ``holders`` are
        the nodes whose durable log holds that entry (or a snapshot past it). Raises
        Violation unless the entry is of ``term`` and a majority of ``voters`` hold it."""
        if commit_term != term:
            raise Violation(
                "current-term commit",
                f"{node}, leader of term {term}, counted replicas to commit {commit}@"
                f"{commit_term}, an entry of an earlier term",
            )
        have = sorted(v for v in voters if v in holders)
        if len(have) < len(voters) // 2 + 1:
            raise Violation(
                "commit durability",
                f"{node}, leader of term {term}, committed {commit}@{term} but only {have} "
                f"of the voters {sorted(voters)} hold it durably",
            )
        self.leader_commits += 1

    # --- the durable log --------------------------------------------------------------------
    def on_append(self, node: NodeId, prev_term: int, entries: Sequence[Entry]) -> None:
        """Checks entries ``node`` just persisted after an entry of term ``prev_term`` (0 at
        the start of the log). Raises Violation on a gap, a falling term, or a ``(index, term)``
        that once held another command or followed another term."""
        if not entries:
            return
        stored = self.stored
        prev_index = entries[0].index - 1
        for e in entries:
            if e.index != prev_index + 1:
                raise Violation(
                    "log matching", f"{node} persisted a gap: {prev_index} -> {e.index}"
                )
            if e.term < prev_term:
                raise Violation(
                    "log matching", f"{node} persisted {e.index}@{e.term} after term {prev_term}"
                )
            key = (e.index, e.term)
            fact = (prev_term, e.type, e.data)
            seen = stored.setdefault(key, fact)
            if seen != fact:
                raise Violation(
                    "log matching",
                    f"{node} persisted {e.index}@{e.term} = {e.data[:24]!r} after term "
                    f"{prev_term}; another log has {seen[2][:24]!r} after term {seen[0]}",
                )
            prev_index = e.index
            prev_term = e.term

    def on_hard_state(self, node: NodeId, hs: HardState, last_index: int) -> None:
        """Checks a hard state ``node`` just persisted, its log ending at ``last_index``."""
        old = self.durable.get(node)
        if old is not None:
            if hs.term < old.term:
                raise Violation("durable term", f"{node} persisted term {hs.term} < {old.term}")
            if hs.term == old.term and old.vote and hs.vote != old.vote:
                raise Violation(
                    "double vote", f"{node} voted {old.vote} then {hs.vote!r} in term {hs.term}"
                )
            if hs.commit < old.commit:
                raise Violation("commit regressed", f"{node} persisted {hs.commit} < {old.commit}")
        if hs.commit > last_index:
            raise Violation(
                "commit past log", f"{node} persisted commit {hs.commit} > last index {last_index}"
            )
        self.durable[node] = hs
        # Not on_commit: a Ready's hard state may be written after the core moved its commit
        # index on (a slow flush); only the durable sequence itself must not go back.
        self._bound_commit_term(hs.commit, hs.term)

    def on_commit(self, node: NodeId, commit: int, term: int) -> None:
        """Checks the commit index ``node``'s current incarnation reports at ``term``, and
        notes ``term`` as the commit term bound of every index it is the first to cover (a
        node at ``term`` knows only of commits made in terms <= ``term``)."""
        floor = self.commit_floor.get(node, 0)
        if commit < floor:
            raise Violation("commit regressed", f"{node} commit {commit} < {floor}")
        self.commit_floor[node] = commit
        self._bound_commit_term(commit, term)

    def _bound_commit_term(self, commit: int, term: int) -> None:
        bound = self.commit_term
        if commit >= len(bound):
            bound.extend([term] * (commit + 1 - len(bound)))

    def on_restart(self, node: NodeId, applied: int) -> None:
        """Records a new incarnation of ``node`` with its durable state-machine index."""
        hs = self.durable.get(node, HardState())
        self.commit_floor[node] = hs.commit
        self.applied[node] = applied

    # --- the state machine ------------------------------------------------------------------
    def on_apply(self, node: NodeId, entries: Sequence[Entry], digest: int) -> None:
        """Checks a batch ``node`` applied and the digest of its state afterwards."""
        if not entries:
            return
        applied = self.applied.get(node, 0)
        committed = self.committed
        for e in entries:
            if e.index != applied + 1:
                raise Violation(
                    "applied order", f"{node} applied {e.index} after {applied} (gap or repeat)"
                )
            have = committed.get(e.index)
            if have is None:
                if e.index >= len(self.commit_term):
                    raise Violation("applied uncommitted", f"{node} applied {e.index} uncommitted")
                committed[e.index] = e
                self.digests[e.index] = chain_digest(self.digests[e.index - 1], e)
                self.max_applied = e.index
            elif have != e:
                raise Violation(
                    "state machine safety",
                    f"{node} applied {e.index}@{e.term} {e.data[:24]!r}; another node applied "
                    f"{have.index}@{have.term} {have.data[:24]!r}",
                )
            applied = e.index
        self.applied[node] = applied
        if self.digests[applied] != digest:
            raise Violation("state digest", f"{node} state at {applied} differs from the log's")

    def on_snapshot(self, node: NodeId, index: int, term: int, digest: int) -> None:
        """Checks a snapshot ``node`` installed: never behind what it applied, and carrying
        exactly the state the committed log produces at ``index``."""
        applied = self.applied.get(node, 0)
        if index < applied:
            raise Violation("applied regressed", f"{node} installed snapshot {index} < {applied}")
        if index > self.max_applied:
            raise Violation("snapshot ahead", f"{node} got snapshot {index} nobody applied")
        expected = self.committed[index].term if index else 0
        if term != expected:
            raise Violation("snapshot term", f"{node} snapshot {index}@{term} mismatches log")
        if self.digests[index] != digest:
            raise Violation("state digest", f"{node} snapshot state at {index} is wrong")
        self.applied[node] = index

    # --- clients ----------------------------------------------------------------------------
    def on_ack(self, entry: Entry) -> None:
        """Records a write acknowledged to its client (it had been applied at its index)."""
        if self.committed.get(entry.index) != entry:
            raise Violation("ack", f"acknowledged {entry.index}@{entry.term} was not applied")
        self.acked[entry.index] = entry

    def on_read_issued(self, node: NodeId, inc: int, ctx: bytes) -> None:
        """Records a ReadIndex request; its answer must cover everything applied so far."""
        self.reads[(node, inc, ctx)] = self.max_applied

    def on_read_state(self, node: NodeId, inc: int, index: int, ctx: bytes) -> bool:
        """Returns False for a context this incarnation never issued (a late answer to an
        earlier incarnation: the runtime drops it), True once the read index is checked.
        Raises Violation for an index below a write applied before the request."""
        bound = self.reads.get((node, inc, ctx))
        if bound is None:
            return False
        if index < bound:
            raise Violation(
                "linearizable read",
                f"{node} got read index {index} for {ctx!r}, but {bound} was applied before the "
                f"request was issued (stale read)",
            )
        self.reads_checked += 1
        return True

    def check_acked_applied(self, applied: dict[NodeId, int]) -> None:
        """Checks every acknowledged write is applied on every node in ``applied`` (the
        members after healing), i.e. no acknowledged write was lost."""
        if not self.acked:
            return
        top = max(self.acked)
        for node, idx in sorted(applied.items()):
            if idx < top:
                raise Violation("liveness", f"{node} applied {idx} < acknowledged write {top}")
