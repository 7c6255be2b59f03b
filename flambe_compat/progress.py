"""Progress bars for long commands: bytes, rate and ETA on a terminal, nothing elsewhere.

The command line shows a bar (drawn by rich on stderr) while it upgrades, exports or
validates many archives, only when stderr is a terminal or `--progress` forces it, and
never with machine-readable output (`--json`, `--jsonl`, `--format`). rich follows
`NO_COLOR`: the bar is drawn without colours when it is set.

>>> with bar("export", enabled=False) as shown:
...     shown.update(10, 100, "write")
>>> shown.enabled
False
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

_FORCED_WIDTH = 240


class Bar:
    """One progress bar over bytes; every method does nothing when it is disabled."""

    def __init__(self, progress: Any, label: str) -> None:
        self._progress = progress
        self._label = label
        self._task = progress.add_task(label, total=None) if progress is not None else None

    @property
    def enabled(self) -> bool:
        return self._progress is not None

    def update(self, done: int, total: int | None = None, what: str = "") -> None:
        """Set the bytes done (of `total`, when known) and what is being worked on;
        redraws at once."""
        if self._progress is None:
            return
        description = f"{self._label} {what}".rstrip()
        self._progress.update(self._task, completed=done, total=total, description=description)
        self._progress.refresh()

    def advance(self, nbytes: int, what: str = "") -> None:
        """Add `nbytes` to the bytes done, and name what comes next; redraws at once."""
        if self._progress is None:
            return
        self._progress.update(self._task, advance=nbytes)
        if what:
            self._progress.update(self._task, description=f"{self._label} {what}")
        self._progress.refresh()


@contextlib.contextmanager
def bar(label: str, *, enabled: bool, force: bool = False) -> Iterator[Bar]:
    """A byte progress bar on stderr while the block runs, removed when it ends.

    `enabled=False` shows nothing; `force` draws it even when stderr is not a terminal.
    """
    if not enabled:
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

    # forced off a terminal there is no width to fit: keep long paths whole
    width = None if sys.stderr.isatty() else _FORCED_WIDTH
    console = Console(file=sys.stderr, force_terminal=force or None, width=width)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    with progress:
        yield Bar(progress, label)


def wanted(args: Any) -> tuple[bool, bool]:
    """Whether the command of `args` shows a bar, and whether `--progress` forces it:
    never with machine-readable output, else on a terminal or when forced."""
    machine = bool(
        getattr(args, "json", False)
        or getattr(args, "jsonl", False)
        or getattr(args, "format", "text") != "text"
    )
    force = bool(getattr(args, "progress", False))
    return not machine and (force or sys.stderr.isatty()), force
