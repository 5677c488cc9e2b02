"""The seams of the node loop: what it needs from the state machine, the network and an
observer of its commit stages, each a small Protocol with a real implementation and a twin.

- ``StateMachine``: ``boltraft.storage.fsm.BucketStateMachine``; the in-memory twin
  ``tests/memsm.py`` runs the node in unit tests.
- ``Net``: ``boltraft.transport.zmq_transport.PeerTransport``; the twin ``tests/memworld.py``.
- ``CommitObserver``: ``NullObserver`` here (what a production node runs); the benchmark's
  ``boltraft.benchmark.stages.StageRecorder`` times every batch of writes through the leader.

Every method is called from the node loop's one thread, except ``StateMachine.snapshot``
and ``StateMachine.read``, which may run on a worker thread beside ``apply``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from boltraft.errors import BoltraftError
from boltraft.raft.types import ConfChange, ConfState, Entry, Message, Role, Status
from boltraft.storage.changes import Report
from boltraft.storage.snapshot import SnapshotInfo
from boltraft.transport.zmq_transport import Incoming


class StateMachine(Protocol):
    """The replicated state: committed entries go in, in index order, exactly once."""

    report: Report | None
    """Takes the changes of each committed apply (``boltraft.storage.changes``); None: the
    apply notes none."""

    @property
    def applied(self) -> tuple[int, int]:
        """``(index, term)`` of the last applied entry; ``(0, 0)`` for a new state."""
        ...

    @property
    def closed(self) -> bool: ...

    @property
    def clock_ms(self) -> int:
        """The largest command timestamp (``ts``) applied; 0 before any."""
        ...

    @property
    def repeated(self) -> list[int]:
        """The indexes of the entries of the last ``apply`` that changed nothing because
        their (cid, seq) was applied before (``BucketStateMachine``, "Repeats")."""
        ...

    def apply(self, entries: Sequence[Entry]) -> list[Any]:
        """One result per entry (a BoltraftError in place of a command that failed), after
        applying ``entries`` and the applied index in ONE durable step; entries at or below
        the applied index are skipped. Raises NoSpaceError when nothing could be applied for
        want of space (``details["disk_full"]`` for a full disk)."""
        ...

    def prepare(self, entries: Sequence[Entry]) -> list[Any] | None:
        """The results ``apply`` will return for ``entries`` (the next after the applied
        index, not yet committed), which were applied ahead, invisibly, for the next
        ``apply`` to commit if it begins with them (same index and term) and to roll back
        otherwise; None when this state machine declines them (it may decline any).
        Observable behaviour is never changed: reads, ``applied`` and the change feed see
        the entries only once ``apply`` took them."""
        ...

    def read(self, requests: Sequence[Any]) -> list[Any]:
        """One result (or BoltraftError) per read request, all from one consistent view."""
        ...

    def sync(self) -> None:
        """Makes every applied entry durable."""
        ...

    def key_records(self) -> dict[str, tuple[str, str, str]]:
        """The replicated CURVE allow-list entries, name -> (kind, key, role); an empty key
        is a revoked one (applied ``keys`` commands, ``boltraft.storage.commands``)."""
        ...

    def content_hash(self) -> tuple[int, str]:
        """``(applied index, sha256 hex)`` of the replicated content, from one consistent
        view: equal on replicas at the same applied index. Safe from a worker thread."""
        ...

    def snapshot(self, parent: Path, *, rate: float = 0.0) -> SnapshotInfo:
        """Writes a durable snapshot of the applied state under ``parent``; ``rate``: a limit
        in bytes/s (0: none)."""
        ...

    def close(self) -> None: ...


class Net(Protocol):
    """What the node loop needs from the network (PeerTransport's API); ONE thread only."""

    def recv(self, timeout: float = 0.0, max_frames: int = 4096) -> list[Incoming]:
        """The decoded frames ready now, waiting up to ``timeout`` for the first; malformed
        frames are counted and dropped, never returned. A closed connection to a peer comes
        as an ``Incoming`` of kind ``PEER_DOWN`` (payload: the peer's id)."""
        ...

    def pending(self) -> bool:
        """True when frames wait to be read, as far as a cheap look tells (no wait; it may
        miss frames that ``recv`` would return, never the other way round)."""
        ...

    def queue(self, msgs: Iterable[Message]) -> None:
        """Queues Raft messages for the next ``flush()`` (one frame per peer)."""
        ...

    def flush(self) -> int:
        """Sends everything queued; the number of messages handed over."""
        ...

    def send_frame(self, peer_id: str, frame: bytes) -> bool:
        """Sends an encoded frame to a peer over its DEALER (back through the ROUTER, on the
        connection the peer opened, when it has no DEALER here); False when dropped."""
        ...

    def reply(self, sender: bytes, frame: bytes) -> bool:
        """Sends an encoded frame back to ``sender`` through the ROUTER; False when dropped."""
        ...

    def peers(self) -> dict[str, str]:
        """The peer table, id -> address."""
        ...

    def add_peer(self, peer_id: str, addr: str) -> None: ...

    def remove_peer(self, peer_id: str) -> bool: ...

    def counters(self) -> dict[str, int]: ...

    def close(self) -> None: ...


class CommitObserver(Protocol):
    """Sees each batch of client writes pass the leader's commit stages (times are taken by
    the observer itself). ``snapshot`` answers the ``stats`` request."""

    def iteration(self, now: float) -> None:
        """A loop iteration started at ``now`` (``time.monotonic``)."""
        ...

    def proposed(self, last_index: int, count: int) -> None:
        """``count`` writes were proposed as the entries up to ``last_index``."""
        ...

    def persisted(self, index: int) -> None:
        """This node's log is durable up to ``index``."""
        ...

    def observe_messages(self, messages: Sequence[Message]) -> None:
        """Raft messages a leader received (append responses carry the followers' acks)."""
        ...

    def applying(self, index: int) -> None: ...

    def applied(self, index: int) -> None: ...

    def replied(self, index: int) -> None:
        """The answers of the writes up to ``index`` were handed to the network."""
        ...

    def snapshot(self, since: float = 0.0) -> dict[str, Any]:
        """``{"stages": [names], "records": [...]}`` for batches proposed at or after the
        wall-clock time ``since``."""
        ...


class NullObserver:
    """The observer a production node runs: it records nothing, and ``stats`` answers with
    no stages and no records."""

    def iteration(self, now: float) -> None:
        pass

    def proposed(self, last_index: int, count: int) -> None:
        pass

    def persisted(self, index: int) -> None:
        pass

    def observe_messages(self, messages: Sequence[Message]) -> None:
        pass

    def applying(self, index: int) -> None:
        pass

    def applied(self, index: int) -> None:
        pass

    def replied(self, index: int) -> None:
        pass

    def snapshot(self, since: float = 0.0) -> dict[str, Any]:
        return {"stages": [], "records": []}


class NodeView(Protocol):
    """What a part of the server may know of its node: read-only, always current (the node
    loop updates it between the parts' calls)."""

    @property
    def id(self) -> str: ...

    @property
    def listen(self) -> str: ...

    @property
    def lead(self) -> str:
        """The leader's id; "" when none is known."""
        ...

    @property
    def role(self) -> Role: ...

    @property
    def is_leader(self) -> bool: ...

    @property
    def commit(self) -> int: ...

    @property
    def applied(self) -> int: ...

    @property
    def conf_state(self) -> ConfState:
        """The membership in effect (as applied)."""
        ...

    @property
    def peer_addrs(self) -> dict[str, str]:
        """Every other member's address."""
        ...

    @property
    def disk_full(self) -> str:
        """Why this node's disk counts as full; "" when it does not."""
        ...

    def addr_of(self, node_id: str) -> str:
        """A member's address; "" when unknown or ``node_id`` is ""."""
        ...

    def leader_recently_heard(self, now: float) -> bool:
        """True when this node leads, or heard its leader within an election timeout."""
        ...

    def not_leader_error(self) -> BoltraftError:
        """The error a request that needs the leader gets here: not_leader with the leader's
        id and address, no_leader, or unavailable while the disk is full and no leader is
        known."""
        ...


class Proposer(Protocol):
    """The consensus core's intake, as the request service uses it (``RawNode``'s API)."""

    def propose(self, datas: Sequence[bytes]) -> tuple[int, int]:
        """``(term, last index)`` of the entries appended for ``datas``; raises
        ProposalDroppedError when this node cannot propose (not the leader)."""
        ...

    def read_index(self, context: bytes) -> None:
        """Asks for a read index confirmed under ``context`` (a ReadState in a later Ready)."""
        ...


class MemberCore(Protocol):
    """The consensus core as membership operations use it (``RawNode``'s API)."""

    def propose_conf_change(self, cc: ConfChange) -> tuple[int, int]: ...

    def transfer_leader(self, target: str) -> None: ...

    def status(self) -> Status: ...


class SnapCore(Protocol):
    """The consensus core as snapshot transfer uses it (``RawNode``'s API)."""

    def step(self, m: Message) -> None: ...

    def report_snapshot(self, to: str, ok: bool) -> None: ...
