"""Single-server membership changes: their log encoding and their effect on a ConfState.

Why single-server changes (Raft thesis 4.1) instead of joint consensus: when only one voter
is added or removed at a time, every majority of the old voter set overlaps every majority of
the new one, so the two configurations can never elect two leaders in one term nor commit
conflicting entries; no intermediate joint configuration is needed, and a change is one log
entry that takes effect when it is committed (handed out in ``Ready.committed_entries``).

Two rules keep that argument true:

* at most one change is uncommitted (or committed but not yet in effect) at a time, so no
  node ever operates under a configuration two steps away from another's;
* a leader proposes a change only after the no-op entry of its own term committed. Without
  it, a leader elected by the previous configuration could commit a change while an older,
  uncommitted change of an earlier leader is still being replicated, and two configurations
  that differ by two servers could both gather majorities (the bug described on raft-dev,
  "bug in single-server membership changes", Ongaro 2015).

Membership is the store's bootstrap ConfState (the membership at index 0, or the latest
snapshot's) with the conf changes of the log replayed on top. A node joining an existing
cluster therefore bootstraps its store with the cluster's founding membership (it is not a
voter there, so it never campaigns) or receives a snapshot; it then follows the log.
"""

from __future__ import annotations

import msgpack

from boltraft.errors import MembershipError
from boltraft.raft.types import ConfChange, ConfChangeType, ConfState


def encode_conf_change(cc: ConfChange) -> bytes:
    """Returns the log encoding of ``cc`` (a msgpack array ``[type, node_id, addr]``)."""
    return msgpack.packb([int(cc.type), cc.node_id, cc.addr], use_bin_type=True)


def decode_conf_change(data: bytes) -> ConfChange:
    """Returns the ConfChange encoded in ``data``.

    Raises MembershipError when ``data`` is not a valid encoding."""
    try:
        typ, node_id, addr = msgpack.unpackb(data, raw=False)
        cc = ConfChange(ConfChangeType(typ), node_id, addr)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise MembershipError(f"malformed conf change: {exc}") from None
    check_conf_change(cc)
    return cc


def check_conf_change(cc: ConfChange) -> None:
    """Checks that ``cc`` is well formed. Raises MembershipError otherwise."""
    if not isinstance(cc, ConfChange):
        raise MembershipError("not a ConfChange")
    if cc.type not in tuple(ConfChangeType):
        raise MembershipError(f"unknown conf change type {cc.type!r}")
    if not isinstance(cc.node_id, str) or not cc.node_id:
        raise MembershipError("conf change needs a non-empty node id")
    if not isinstance(cc.addr, str):
        raise MembershipError("conf change address must be a string")


def apply_conf_change(cs: ConfState, cc: ConfChange) -> ConfState:
    """Returns the membership after ``cc``: ADD_VOTER adds or promotes, ADD_LEARNER adds or
    demotes, REMOVE_NODE removes; a non-empty ``addr`` replaces the node's address.

    Raises MembershipError (and changes nothing) for a malformed change, for removing a
    node that is not a member, and for leaving the configuration without any voter."""
    check_conf_change(cc)
    nid = cc.node_id
    voters = [v for v in cs.voters if v != nid]
    learners = [v for v in cs.learners if v != nid]
    addrs = dict(cs.addrs)
    if cc.type == ConfChangeType.REMOVE_NODE:
        if nid not in cs.voters and nid not in cs.learners:
            raise MembershipError(f"{nid} is not a member", node_id=nid)
        addrs.pop(nid, None)
    elif cc.type == ConfChangeType.ADD_VOTER:
        voters = list(cs.voters) if nid in cs.voters else [*cs.voters, nid]
    else:
        learners = list(cs.learners) if nid in cs.learners else [*cs.learners, nid]
    if cc.type != ConfChangeType.REMOVE_NODE and cc.addr:
        addrs[nid] = cc.addr
    if not voters:
        raise MembershipError("the change would leave no voter", node_id=nid)
    return ConfState(tuple(voters), tuple(learners), addrs)
