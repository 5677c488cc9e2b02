"""Histories of register operations: the JSON Lines format of docs/chaos.md, its reader and
its writer.

A history file holds one event a line::

    {"process": 3, "type": "invoke", "f": "cas", "key": "k1", "value": [1, 2], "time": 1200}
    {"process": 3, "type": "ok",     "f": "cas", "key": "k1", "value": [1, 2], "time": 1350}

``type`` is ``invoke``, then one of ``ok`` (it took effect), ``fail`` (it certainly did not:
a cas whose condition failed, a request refused), or ``info`` (the outcome is unknown: a
timeout; that process never issues again). ``f`` is ``read``, ``write`` or ``cas``; a value
is an integer or null (null: the key is absent); a cas carries ``[old, new]``; a read's
invoke carries null and its ok the value read. ``time`` is in nanoseconds on one monotonic
clock. Other fields are allowed and ignored.

``read_history(path)`` / ``parse_history(lines)`` validate a history and pair each invoke
with its process's next completion into an ``Operation``; an invoke still open when the file
ends counts as ``info``. Bad input raises ``BadRequestError`` naming the line
(``details["line"]``). ``HistoryWriter`` records a history as it happens (``chaos run``).
"""

from __future__ import annotations

import enum
import gc
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

from boltraft.errors import BadRequestError

FUNCTIONS = ("read", "write", "cas")
TYPES = ("invoke", "ok", "fail", "info")
FIELDS = ("process", "type", "f", "key", "value", "time")


@dataclass(frozen=True, slots=True)
class Event:
    """One line of a history. ``value`` is an int or None, or ``(old, new)`` for a cas."""

    process: int
    type: str
    f: str
    key: str
    value: Any
    time: int

    def to_json(self) -> dict[str, Any]:
        """The event as its JSON object (a cas's pair as a list)."""
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return {
            "process": self.process,
            "type": self.type,
            "f": self.f,
            "key": self.key,
            "value": value,
            "time": self.time,
        }

    def dumps(self) -> str:
        """The event as one line of JSON (no newline)."""
        return json.dumps(self.to_json(), separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Operation:
    """An invoke paired with its completion.

    ``type`` is ``ok``, ``fail`` or ``info``. ``value`` is what the operation is about: the
    value written, ``(old, new)`` for a cas, the value read for an ok read (None for a read
    that did not complete ok). ``complete`` is the completion's time, None when the file
    ended before it (an ``info``). ``line`` is the invoke's line number (from 1)."""

    process: int
    f: str
    key: str
    value: Any
    type: str
    invoke: int
    complete: int | None
    line: int

    def events(self) -> list[Event]:
        """The operation back as its invoke and (when there is one) completion events."""
        out = [
            Event(
                self.process,
                "invoke",
                self.f,
                self.key,
                None if self.f == "read" else self.value,
                self.invoke,
            )
        ]
        if self.complete is not None:
            out.append(Event(self.process, self.type, self.f, self.key, self.value, self.complete))
        return out


def _bad(line: int, message: str) -> BadRequestError:
    return BadRequestError(f"line {line}: {message}", line=line)


def _is_value(x: Any) -> bool:
    return x is None or type(x) is int  # not a bool (JSON gives no other int subclass)


def _value(raw: Any, f: str, type_: str, line: int) -> Any:
    if f == "cas":
        if not (type(raw) is list and len(raw) == 2 and all(_is_value(v) for v in raw)):
            raise _bad(line, f"a cas's value is [old, new] of integers or null, got {raw!r}")
        return (raw[0], raw[1])
    if f == "read" and type_ != "ok":
        if raw is not None:
            raise _bad(line, f"a read's {type_} carries null (only its ok carries the value)")
        return None
    if not (raw is None or type(raw) is int):
        raise _bad(line, f"a value is an integer or null, got {raw!r}")
    return raw


_TYPES = frozenset(TYPES)
_FUNCTIONS = frozenset(FUNCTIONS)


def parse_event(obj: Any, line: int) -> Event:
    """Returns the event a decoded JSON line describes; raises BadRequestError otherwise."""
    if type(obj) is not dict:
        raise _bad(line, "an event is a JSON object")
    try:
        process, type_, f = obj["process"], obj["type"], obj["f"]
        key, value, t = obj["key"], obj["value"], obj["time"]
    except KeyError:
        missing = [name for name in FIELDS if name not in obj]
        raise _bad(line, f"missing field(s): {', '.join(missing)}")
    if type(process) is not int:
        raise _bad(line, f"process is an integer, got {process!r}")
    if type(type_) is not str or type_ not in _TYPES:
        raise _bad(line, f"type is one of {', '.join(TYPES)}, got {type_!r}")
    if type(f) is not str or f not in _FUNCTIONS:
        raise _bad(line, f"f is one of {', '.join(FUNCTIONS)}, got {f!r}")
    if type(key) is not str:
        raise _bad(line, f"key is a string, got {key!r}")
    if type(t) is not int:
        raise _bad(line, f"time is an integer (nanoseconds), got {t!r}")
    return Event(process, type_, f, key, _value(value, f, type_, line), t)


class _Pairing:
    """Pairs invokes and completions process by process, checking their order."""

    def __init__(self) -> None:
        self.ops: list[Operation | None] = []
        self.open: dict[int, tuple[int, Event, int]] = {}  # process -> (slot, invoke, line)
        self.last: dict[int, int] = {}  # process -> time of its last completion
        self.retired: dict[int, int] = {}  # process -> line of its info

    def add(self, ev: Event, line: int) -> None:
        p = ev.process
        if ev.type == "invoke":
            if p in self.retired:
                raise _bad(
                    line,
                    f"process {p} issues again after its info on line {self.retired[p]} "
                    "(a process whose outcome is unknown never issues again)",
                )
            if p in self.open:
                raise _bad(
                    line,
                    f"process {p} invokes again before its invoke on line "
                    f"{self.open[p][2]} completed",
                )
            if ev.time < self.last.get(p, ev.time):
                raise _bad(line, f"process {p}'s invoke is earlier than its last completion")
            self.open[p] = (len(self.ops), ev, line)
            self.ops.append(None)
            return
        if p not in self.open:
            raise _bad(line, f"{ev.type} of process {p} without an invoke")
        slot, inv, inv_line = self.open.pop(p)
        if (ev.f, ev.key) != (inv.f, inv.key):
            raise _bad(
                line,
                f"the {ev.type} ({ev.f} {ev.key!r}) does not match process {p}'s invoke on "
                f"line {inv_line} ({inv.f} {inv.key!r})",
            )
        if ev.f != "read" and ev.value != inv.value:
            raise _bad(
                line,
                f"the {ev.type}'s value {ev.value!r} differs from the invoke's "
                f"{inv.value!r} on line {inv_line}",
            )
        if ev.time < inv.time:
            raise _bad(line, f"the {ev.type} is earlier than its invoke on line {inv_line}")
        self.last[p] = ev.time
        if ev.type == "info":
            self.retired[p] = line
        value = ev.value if ev.f != "read" or ev.type == "ok" else None
        self.ops[slot] = Operation(p, inv.f, inv.key, value, ev.type, inv.time, ev.time, inv_line)

    def finish(self) -> list[Operation]:
        for slot, inv, line in self.open.values():
            value = None if inv.f == "read" else inv.value
            self.ops[slot] = Operation(
                inv.process, inv.f, inv.key, value, "info", inv.time, None, line
            )
        self.open.clear()
        return [op for op in self.ops if op is not None]


_decode = json.JSONDecoder().decode


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pauses the cyclic garbage collector for the ``with`` block: reading or checking a
    history makes millions of small objects and no cycles, and the collections it would
    trigger cost more than the work itself."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def parse_history(lines: Iterable[str | bytes]) -> list[Operation]:
    """Returns the operations of a history given as its lines, in the order of their invokes;
    blank lines are skipped. Raises BadRequestError (with the line number) on bad input."""
    with paused_gc():
        return _parse(lines)


def _parse(lines: Iterable[str | bytes]) -> list[Operation]:
    pairing = _Pairing()
    for number, raw in enumerate(lines, 1):
        if isinstance(raw, bytes):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise _bad(number, "not UTF-8 text")
        else:
            text = raw
        if not text.strip():
            continue
        try:
            obj = _decode(text)
        except ValueError as err:
            raise _bad(number, f"not JSON ({getattr(err, 'msg', err)})")
        pairing.add(parse_event(obj, number), number)
    return pairing.finish()


def read_history(path: str | os.PathLike[str]) -> list[Operation]:
    """Returns the operations of the history file at ``path`` (see ``parse_history``)."""
    try:
        with open(path, "rb") as f:
            return parse_history(f)
    except OSError as err:
        raise BadRequestError(f"cannot read {os.fspath(path)}: {err.strerror or err}")


class _Same(enum.Enum):
    SAME = 0


SAME = _Same.SAME


class HistoryWriter:
    """Records a history as JSON Lines while it happens; safe to share between threads.

    ``invoke`` before sending a request, then one of ``ok``, ``fail`` or ``info`` once its
    outcome is known. Every event is stamped with ``clock()`` (default ``time.monotonic_ns``)
    under the writer's lock, so the file's lines are in time order. The writer checks what it
    is given as the reader would (BadRequestError). ``target`` is a path (created or
    truncated) or an open text file (left open by ``close``)."""

    def __init__(
        self,
        target: str | os.PathLike[str] | IO[str],
        *,
        clock: Callable[[], int] = time.monotonic_ns,
        flush: bool = True,
    ) -> None:
        if isinstance(target, (str, os.PathLike)):
            self._out: IO[str] = open(target, "w", encoding="utf-8")  # noqa: SIM115
            self._owned = True
        else:
            self._out = target
            self._owned = False
        self._clock = clock
        self._flush = flush
        self._lock = threading.Lock()
        self._pairing = _Pairing()
        self._lines = 0

    def _write(self, make: Callable[[int], Event]) -> int:
        with self._lock:
            ev = make(self._clock())
            line = self._lines + 1
            checked = parse_event(ev.to_json(), line)
            self._pairing.add(checked, line)
            self._out.write(checked.dumps() + "\n")
            if self._flush:
                self._out.flush()
            self._lines = line
            return checked.time

    def invoke(self, process: int, f: str, key: str, value: Any = None) -> int:
        """Records that ``process`` starts ``f`` on ``key`` (a write's value, a cas's
        ``(old, new)``, None for a read); returns the event's time."""
        if isinstance(value, list):
            value = tuple(value)
        return self._write(lambda t: Event(process, "invoke", f, key, value, t))

    def complete(self, process: int, type: str, value: Any = SAME) -> int:
        """Records the outcome (``ok``, ``fail`` or ``info``) of ``process``'s open invoke;
        ``value`` is the value read for a read's ok, and otherwise defaults to the invoke's
        (null for a read). Returns the event's time."""
        if type not in ("ok", "fail", "info"):
            raise BadRequestError(f"a completion is ok, fail or info, not {type!r}")

        def make(t: int) -> Event:
            if process not in self._pairing.open:
                raise BadRequestError(f"{type} of process {process} without an invoke")
            inv = self._pairing.open[process][1]
            v: Any = value
            if v is SAME:
                if inv.f == "read" and type == "ok":
                    raise BadRequestError("a read's ok carries the value read")
                v = inv.value
            elif isinstance(v, list):
                v = tuple(v)
            return Event(process, type, inv.f, inv.key, v, t)

        return self._write(make)

    def ok(self, process: int, value: Any = SAME) -> int:
        """``complete(process, "ok", value)``: it took effect (a read: ``value`` was read)."""
        return self.complete(process, "ok", value)

    def fail(self, process: int) -> int:
        """``complete(process, "fail")``: it certainly did not take effect."""
        return self.complete(process, "fail")

    def info(self, process: int) -> int:
        """``complete(process, "info")``: its outcome is unknown; the process is retired."""
        return self.complete(process, "info")

    def close(self) -> None:
        """Flushes, and closes the file if the writer opened it."""
        with self._lock:
            if self._owned:
                self._out.close()
            else:
                self._out.flush()

    def __enter__(self) -> HistoryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
