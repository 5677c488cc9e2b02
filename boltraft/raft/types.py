"""The vocabulary shared by the consensus core, its storage seams and the node runtime.

Values that travel (``Entry``, ``HardState``) are NamedTuples: cheap to build, immutable, and
msgpack-encodable as arrays without per-field Python work. ``Message`` is a slotted dataclass.
Node ids are short strings (``"n1"``).

The ``Ready`` contract (written here, enforced by every harness):

1. Send ``ready.early_messages`` at once: they are a leader's appends and heartbeats, which
   depend only on state already durable (the leader counts its own copy of new entries only
   after ``advance()``, Raft thesis 10.2.1).
   ``ready.spare_messages`` (only with ``Config.spare_appends``) are appends like them,
   to the followers a quorum does not need now: they may leave at once or later, in a
   batch with the next ones, but before any later message to the same follower.
2. Persist, in one synced write when possible: ``ready.snapshot`` (install it first), then
   ``ready.entries`` (truncating any conflicting suffix from ``entries[0].index``), then
   ``ready.hard_state``.
3. Only then send ``ready.messages``: votes, vote requests, append responses and everything
   else that depends on what step 2 persisted.
4. Apply ``ready.committed_entries`` in order; answer ``ready.read_states`` once the applied
   index reaches each ``ReadState.index``. Committed entries are durable on a quorum, so
   this step may run before or during step 2's flush (the node loop overlaps them), as long
   as the runtime never relies on its own unflushed log to recover what it applied.
5. Call ``advance(ready)``. At most one ``Ready`` is outstanding at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple, Protocol

NodeId = str

NONE: NodeId = ""  # "no node": no vote cast, no leader known
# Log indexes are stored as signed 64-bit integers (the WAL's records), so none may exceed
# MAX_INDEX. Terms stop well below it: a node adopts any higher term it hears and then adds
# one per election, so a term accepted from a peer must leave room for every election the
# cluster could ever run (2^62 of them).
MAX_INDEX = (1 << 63) - 1
MAX_TERM = 1 << 62


class EntryType(IntEnum):
    NORMAL = 0  # data is a state-machine command; empty data is the leader's no-op
    CONF_CHANGE = 1  # data is an encoded ConfChange


class Entry(NamedTuple):
    """One log entry. Invariant: ``index >= 1``, ``term >= 1``; a log's indexes are contiguous.

    The field ``index`` hides the method ``tuple.index`` (Raft's word wins; no code calls
    ``tuple.index`` on an Entry). Type checkers report that as an incompatible override
    (python/mypy#4507), hence the ignore of exactly that error on the field."""

    term: int
    index: int  # type: ignore[assignment]
    type: int = EntryType.NORMAL
    data: bytes = b""


class HardState(NamedTuple):
    """What must be durable before any message that depends on it leaves.

    Invariant: ``term`` never decreases; ``vote`` is cast at most once per term; ``commit``
    never decreases and never exceeds the last index of the persisted log.
    """

    term: int = 0
    vote: NodeId = NONE
    commit: int = 0


class Role(IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


class SoftState(NamedTuple):
    """Volatile state the runtime may want to observe; not persisted."""

    lead: NodeId = NONE
    role: Role = Role.FOLLOWER


class ConfChangeType(IntEnum):
    ADD_VOTER = 0  # add a voter, or promote a learner
    ADD_LEARNER = 1  # add a learner, or demote a voter
    REMOVE_NODE = 2


class ConfChange(NamedTuple):
    """A single-server membership change; ``addr`` is the node's address for the runtime."""

    type: int
    node_id: NodeId
    addr: str = ""


@dataclass(frozen=True, slots=True)
class ConfState:
    """The membership. Invariant: ``voters`` and ``learners`` are disjoint; ``addrs`` covers
    every member whose address is known."""

    voters: tuple[NodeId, ...] = ()
    learners: tuple[NodeId, ...] = ()
    addrs: dict[NodeId, str] = field(default_factory=dict)

    def members(self) -> tuple[NodeId, ...]:
        """Returns voters then learners."""
        return self.voters + self.learners


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """Describes a snapshot: it holds every entry up to and including ``index``."""

    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


class MessageType(IntEnum):
    APP = 0  # append entries (also probes); index/log_term name the entry before `entries`
    APP_RESP = 1  # index = last index matched, or reject with reject_hint/hint_term
    VOTE = 2
    VOTE_RESP = 3
    PRE_VOTE = 4
    PRE_VOTE_RESP = 5
    HEARTBEAT = 6  # commit = min(leader commit, follower match); context = read-index ctx
    HEARTBEAT_RESP = 7
    SNAP = 8  # the runtime delivers it only once the snapshot's data is local and verified
    TIMEOUT_NOW = 9  # leadership transfer: start an election now, skipping pre-vote
    READ_INDEX = 10  # follower -> leader: a read-index request carrying `context`
    READ_INDEX_RESP = 11  # leader -> follower: index = the read index for `context`


@dataclass(slots=True)
class Message:
    """One Raft message. Fields a type does not use keep their defaults."""

    type: MessageType
    to: NodeId
    frm: NodeId
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: Sequence[Entry] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0  # on a rejected APP_RESP: the follower's hint index
    hint_term: int = 0  # on a rejected APP_RESP: the term at reject_hint (fast back-off)
    context: bytes = b""
    snapshot: SnapshotMeta | None = None


class ReadState(NamedTuple):
    """A confirmed read index: reads for ``context`` may be served once applied >= index.

    ``index`` hides ``tuple.index``, as in Entry."""

    index: int  # type: ignore[assignment]
    context: bytes


@dataclass(slots=True)
class Ready:
    """Everything the runtime must do before ``advance()``; see the module docstring."""

    soft_state: SoftState | None = None  # set when lead or role changed
    hard_state: HardState | None = None  # set when it changed and must be persisted
    snapshot: SnapshotMeta | None = None  # install before entries
    entries: list[Entry] = field(default_factory=list)  # to append durably
    committed_entries: list[Entry] = field(default_factory=list)  # to apply, in order
    early_messages: list[Message] = field(default_factory=list)  # may leave before persisting
    spare_messages: list[Message] = field(default_factory=list)  # as early; may wait (batches)
    messages: list[Message] = field(default_factory=list)  # only after persisting
    read_states: list[ReadState] = field(default_factory=list)
    conf_state: ConfState | None = None  # set when a committed conf change took effect

    @property
    def must_sync(self) -> bool:
        """Returns True when something in this Ready must be fsynced before ``messages``."""
        return bool(self.entries) or self.snapshot is not None or (self.hard_state is not None)


class LogStore(Protocol):
    """The durable log seam (hashicorp/raft's LogStore + StableStore). The core only reads;
    the runtime writes. Indexes are inclusive unless a range says ``[lo, hi)``.

    Invariant: ``first_index() == snapshot_meta().index + 1`` and
    ``last_index() >= snapshot_meta().index``; entries in between are contiguous.
    """

    def initial_state(self) -> tuple[HardState, ConfState]:
        """Returns the persisted hard state and the membership as of the snapshot.

        (Conf changes in the log after the snapshot are replayed by the core.)"""
        ...

    def first_index(self) -> int:
        """Returns the index of the first entry still in the log (snapshot index + 1)."""
        ...

    def last_index(self) -> int:
        """Returns the index of the last entry, or the snapshot index if the log is empty."""
        ...

    def term(self, index: int) -> int:
        """Returns the term of entry ``index``; works for the snapshot index too.

        Raises LogCompactedError below the snapshot index, LogUnavailableError past the end."""
        ...

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Returns entries ``[lo, hi)``; with ``max_bytes``, stops once the data passed it but
        always returns at least one entry. Raises LogCompactedError / LogUnavailableError.

        Precisely: the longest prefix whose ``len(data)`` sum is <= ``max_bytes``, but at
        least one entry; ``[]`` when ``lo == hi``; LogCompactedError when ``lo`` <= the
        snapshot index, LogUnavailableError when ``hi > last_index() + 1``,
        InvalidArgumentError when ``lo > hi``."""
        ...

    def snapshot_meta(self) -> SnapshotMeta:
        """Returns the metadata of the latest snapshot (index 0 when there is none)."""
        ...

    def append(
        self, entries: Sequence[Entry], hard_state: HardState | None = None, sync: bool = True
    ) -> None:
        """Appends ``entries`` (dropping any existing suffix from ``entries[0].index``) and
        stores ``hard_state``, in one write, synced when ``sync``.

        Entries at or below the snapshot index are skipped. Raises InvalidArgumentError,
        writing nothing, when ``entries[0].index > last_index() + 1``, indexes are not
        contiguous or a term is below the previous entry's. With ``sync=False`` and no
        entries a store may keep the hard state in memory until its next write (a crash
        may lose it); entries may still be synced."""
        ...

    def sync(self) -> None:
        """Makes everything appended so far durable, a hard state appended with
        ``sync=False`` included (nothing to do for a store whose appends always sync).

        The one method another thread may run, while the owner makes no other call until it
        returns: the node loop flushes the log this way while it applies (see
        ``boltraft.server.syncer``). Raises NoSpaceError or an OSError when the flush fails."""
        ...

    def apply_snapshot(self, meta: SnapshotMeta, hard_state: HardState | None = None) -> None:
        """Replaces the whole log by ``meta`` (the log is then empty at ``meta.index``) and
        stores ``hard_state`` when given.

        Raises LogCompactedError, changing nothing, when ``meta.index`` is below the current
        snapshot index."""
        ...

    def compact(self, meta: SnapshotMeta) -> None:
        """Drops the entries up to and including ``meta.index`` (which must be <= last
        index) and records ``meta`` as the snapshot. Raises LogCompactedError if already
        compacted.

        Also raises LogUnavailableError past the last index and InvalidArgumentError when
        ``meta.term != term(meta.index)``; nothing changes then."""
        ...

    def bootstrap(self, conf_state: ConfState) -> bool:
        """Records ``conf_state`` as the initial membership of an empty store. Returns False
        (and changes nothing) when the store already holds state.

        Raises InvalidArgumentError for a membership without voters or listing a member
        twice."""
        ...

    def close(self) -> None:
        """Writes what the store held only in memory (such as a hard state appended with
        ``sync=False``) and releases its files and locks, if any."""
        ...


class ProgressState(IntEnum):
    """How a leader replicates to one follower (etcd's tracker states)."""

    PROBE = 0  # one APP at a time until the follower's match index is found
    REPLICATE = 1  # pipelined APPs, bounded by the in-flight window
    SNAPSHOT = 2  # a snapshot is on its way; nothing else is sent


class ProgressStatus(NamedTuple):
    """A leader's view of one member: ``match < next`` always."""

    match: int
    next: int
    state: ProgressState


class Status(NamedTuple):
    """A point-in-time view of a node; ``progress`` is empty unless ``role`` is LEADER."""

    id: NodeId
    term: int
    vote: NodeId
    commit: int
    applied: int
    lead: NodeId
    role: Role
    conf_state: ConfState
    progress: dict[NodeId, ProgressStatus]
