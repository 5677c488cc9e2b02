"""What the state machine tells a change feed while it applies: one ``Change`` per change of
the data, handed to a ``Report`` hook (``BucketStateMachine.report``) once the transaction
that made them committed.

The rules (docs/protocol.md, section 5.1): a put (or a conditional put that held) is a
``put``; a delete that found its key (or a conditional delete that held) a ``delete``; a
``create_bucket`` that created the bucket it names (not the ancestors ``if_not_exists``
created with it) a ``create_bucket``; a ``delete_bucket`` a ``delete_bucket`` (what was
inside it gets no changes of its own); a batch gives its ops' changes at their positions,
and none when it failed (its writes were undone). A failed command, a repeated
exactly-once write and ``next_sequence`` give none. ``prev`` is the key's value before the
change (None when it had none), which the write itself returns (LMDB's replace and pop):
no separate read.

Invariants: a report's changes are in ``(index, pos)`` order, those of committed entries
only, each entry's all together; successive reports continue each other.
"""

from __future__ import annotations

from collections.abc import Callable

PUT = "put"
DELETE = "delete"
CREATE_BUCKET = "create_bucket"
DELETE_BUCKET = "delete_bucket"

Change = tuple[int, int, str, tuple[bytes, ...], bytes | None, bytes | None, bytes | None]
"""``(index, pos, type, bucket, key, value, prev)``: the Raft index of the entry, the op's
position in a batch (0 otherwise), the type, the bucket path (for a bucket change: the
bucket created or deleted), the key and new value (None for what has none), the value
before (None: none). The same fields, in the same order, as an event on the wire."""

Report = Callable[[list[Change]], None]
"""Takes the changes of one committed transaction (see the module docstring)."""
