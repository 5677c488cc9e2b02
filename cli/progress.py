"""A byte progress bar for long transfers (backup, restore), drawn on stderr only when it
is a terminal (``rich``): a script's stderr gets nothing but the error line."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Bar:
    """``start(total)`` once the size is known, ``advance(n)`` per chunk; does nothing when
    disabled."""

    def __init__(self, progress: Any, label: str) -> None:
        self._progress = progress
        self._label = label
        self._task: Any = None

    def start(self, total: int) -> None:
        if self._progress is not None:
            self._task = self._progress.add_task(self._label, total=total)

    def advance(self, n: int) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=n)


def enabled(no_progress: bool) -> bool:
    """True when a bar should be drawn: not turned off, and stderr is a terminal."""
    return not no_progress and sys.stderr.isatty()


@contextmanager
def byte_bar(label: str, no_progress: bool) -> Iterator[Bar]:
    """A ``Bar`` for the ``with`` block (drawn only when ``enabled``), removed at its end."""
    if not enabled(no_progress):
        yield Bar(None, label)
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(file=sys.stderr),
        transient=True,
    ) as progress:
        yield Bar(progress, label)
