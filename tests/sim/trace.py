"""The simulator's event trace: a bounded ring of raw tuples, formatted only when a seed fails.

Recording an event costs one tuple append; nothing is turned into text on the hot path.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from boltraft.raft.types import Entry, Message, MessageType

from .network import TICK


def fmt_entries(entries: Any) -> str:
    """Returns ``[first@term..last@term]`` (or ``[]``) for a run of entries."""
    if not entries:
        return "[]"
    first: Entry = entries[0]
    last: Entry = entries[-1]
    if len(entries) == 1:
        return f"[{first.index}@{first.term}]"
    return f"[{first.index}@{first.term}..{last.index}@{last.term}]"


def fmt_msg(m: Message) -> str:
    """Returns a one-line human summary of a Raft message, showing the fields its type uses."""
    try:
        kind = MessageType(m.type).name
    except ValueError:
        kind = str(m.type)
    s = f"{m.frm}->{m.to} {kind} t{m.term}"
    t = m.type
    if t == MessageType.APP:
        s += f" prev={m.index}@{m.log_term} ents={fmt_entries(m.entries)} c={m.commit}"
    elif t == MessageType.APP_RESP:
        s += f" idx={m.index}"
        if m.reject:
            s += f" REJECT hint={m.reject_hint}@{m.hint_term}"
    elif t in (MessageType.VOTE, MessageType.PRE_VOTE):
        s += f" last={m.index}@{m.log_term}"
    elif t in (MessageType.VOTE_RESP, MessageType.PRE_VOTE_RESP):
        s += " REJECT" if m.reject else " GRANT"
    elif t in (MessageType.HEARTBEAT, MessageType.HEARTBEAT_RESP):
        s += f" c={m.commit}"
        if m.context:
            s += f" ctx={m.context!r}"
    elif t == MessageType.SNAP and m.snapshot is not None:
        snap = m.snapshot
        s += f" snap={snap.index}@{snap.term} voters={','.join(snap.conf_state.voters)}"
        if snap.conf_state.learners:
            s += f" learners={','.join(snap.conf_state.learners)}"
    elif t in (MessageType.READ_INDEX, MessageType.READ_INDEX_RESP):
        s += f" idx={m.index} ctx={m.context!r}"
    return s


class Trace:
    """The last ``size`` events of one run. Each event is ``(time, kind, *args)``; a message
    argument is kept by reference (the core must not mutate messages it handed out)."""

    def __init__(self, size: int = 400) -> None:
        self._events: deque[tuple[Any, ...]] = deque(maxlen=size)
        self.count = 0

    def add(self, *event: Any) -> None:
        """Records one event; the first element is the time in units."""
        self._events.append(event)
        self.count += 1

    def render(self, last: int | None = None) -> str:
        """Returns the recorded events as text, one per line, oldest first."""
        events = list(self._events)
        if last is not None:
            events = events[-last:]
        skipped = self.count - len(events)
        lines = [f"... {skipped} earlier events not kept"] if skipped > 0 else []
        for ev in events:
            time, kind, *args = ev
            stamp = f"{time // TICK:>5}.{time % TICK:<2}"
            parts = [fmt_msg(a) if isinstance(a, Message) else str(a) for a in args]
            lines.append(f"{stamp} {kind:<9} {' '.join(parts)}")
        return "\n".join(lines)
