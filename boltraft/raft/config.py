"""The tunables of one Raft node (:class:`Config`) and their validation. ``Config.rng`` is
the core's only source of randomness, seeded by the node id unless given."""

from __future__ import annotations

import random
from dataclasses import dataclass

from boltraft.errors import ConfigError
from boltraft.raft.types import NONE, NodeId

# The default of Config.rng, never drawn from: __post_init__ puts random.Random(id) there.
_RNG_FROM_ID = random.Random()


@dataclass(slots=True)
class Config:
    """The tunables of one node; ``validate()`` is called by the core before use.

    Invariants (checked by ``validate``): ``id`` is not empty; ``heartbeat_tick >= 1``;
    ``election_tick > heartbeat_tick``; every size and count limit is ``>= 1``;
    ``applied >= 0``. ``rng`` is the ONLY source of randomness (election timeouts); when not
    given it is ``random.Random(id)``, so a run is reproducible from its ids alone.
    """

    id: NodeId
    election_tick: int = 10  # ticks without a leader before campaigning (randomized to [e, 2e))
    heartbeat_tick: int = 1  # ticks between a leader's heartbeats
    pre_vote: bool = True  # run a pre-vote round before bumping the term (thesis 9.6)
    check_quorum: bool = True  # leader steps down without a quorum; followers honour a lease
    max_size_per_msg: int = 1 << 20  # bytes of entry data per APP (at least one entry is sent)
    max_inflight_msgs: int = 256  # unacknowledged APPs per follower in replicate state
    max_committed_size_per_ready: int = 8 << 20  # bytes of committed entries per Ready
    applied: int = 0  # the state machine's applied index at start (entries up to it skipped)
    rng: random.Random = _RNG_FROM_ID
    max_inflight_bytes: int = 32 << 20  # bytes of unacknowledged entry data per follower
    max_uncommitted_size: int = 1 << 30  # bytes of uncommitted proposals a leader accepts
    # A leader tells its followers a raised commit index with the next APP or heartbeat
    # (within heartbeat_tick ticks), not with an APP of its own (hashicorp/raft's
    # CommitTimeout): when writes are sparse this saves every follower a message and a
    # Ready per commit. Membership changes and a new term's first commit go out at once.
    lazy_commit: bool = False
    # A leader marks its appends to the voters a quorum does not need now as spare
    # (``Ready.spare_messages``): the followers that acknowledged soonest carry each commit,
    # and the runtime may send the others their entries in batches (see ``spare_voters``).
    spare_appends: bool = False

    def __post_init__(self) -> None:
        if self.rng is _RNG_FROM_ID:
            self.rng = random.Random(self.id)

    def validate(self) -> None:
        """Checks that the configuration is usable (the invariants above).

        Raises ConfigError naming the first bad field; nothing is changed."""
        if not isinstance(self.id, str) or self.id == NONE:
            raise ConfigError("id must be a non-empty string", field="id")
        if self.heartbeat_tick < 1:
            raise ConfigError("heartbeat_tick must be >= 1", field="heartbeat_tick")
        if self.election_tick <= self.heartbeat_tick:
            raise ConfigError(
                "election_tick must be greater than heartbeat_tick", field="election_tick"
            )
        for name in (
            "max_size_per_msg",
            "max_inflight_msgs",
            "max_committed_size_per_ready",
            "max_inflight_bytes",
            "max_uncommitted_size",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1", field=name)
        if self.applied < 0:
            raise ConfigError("applied must be >= 0", field="applied")
        if not isinstance(self.rng, random.Random):
            raise ConfigError("rng must be a random.Random", field="rng")
