"""Quorum arithmetic over a set of voters: pure functions, no state. A quorum is a
majority, ``n // 2 + 1`` of ``n`` voters; acks and votes of non-voters never count."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from enum import IntEnum

from boltraft.raft.types import NodeId


class VoteResult(IntEnum):
    PENDING = 0  # neither a majority of grants nor of rejections yet
    LOST = 1
    WON = 2


def majority(n: int) -> int:
    """Returns the size of a majority of ``n`` voters (``n // 2 + 1``; 1 when ``n == 0``)."""
    return n // 2 + 1


def committed_index(voters: Collection[NodeId], match: Mapping[NodeId, int]) -> int:
    """Returns the largest index that a majority of ``voters`` have in their logs.

    A voter missing from ``match`` counts as index 0. With no voters the result is 0 (an
    empty configuration commits nothing)."""
    n = len(voters)
    if n == 0:
        return 0
    if n == 1:
        (only,) = voters
        return match.get(only, 0)
    indexes = sorted((match.get(v, 0) for v in voters), reverse=True)
    return indexes[majority(n) - 1]


def vote_result(voters: Collection[NodeId], votes: Mapping[NodeId, bool]) -> VoteResult:
    """Returns WON once a majority of ``voters`` granted, LOST once a majority rejected (or
    can no longer grant), else PENDING. Votes from non-voters are ignored."""
    need = majority(len(voters))
    granted = rejected = 0
    for v in voters:
        got = votes.get(v)
        if got is True:
            granted += 1
        elif got is False:
            rejected += 1
    if granted >= need:
        return VoteResult.WON
    if len(voters) - rejected < need:
        return VoteResult.LOST
    return VoteResult.PENDING


def has_quorum(voters: Collection[NodeId], acks: Collection[NodeId]) -> bool:
    """Returns True when a majority of ``voters`` is in ``acks`` (non-voters are ignored)."""
    need = majority(len(voters))
    count = 0
    for v in voters:
        if v in acks:
            count += 1
            if count >= need:
                return True
    return False
