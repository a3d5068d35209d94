"""How the CLI talks to people and to scripts.

On a terminal, long work shows rich progress bars; otherwise it stays quiet
(one plain line per finished step at most) so CI logs are readable. ``--json``
output goes to stdout as one JSON document; everything else goes to stderr.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any


def is_tty() -> bool:
    return sys.stderr.isatty()


def print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=False) + "\n")


class PlainProgress:
    """Non-TTY progress: silent except for log lines (none at all with --quiet)."""

    def __init__(self, verbose: bool = False, quiet: bool = False) -> None:
        self.verbose = verbose
        self.quiet = quiet
        self._desc: dict[str, str] = {}

    def start(self, key: str, description: str, total: int | None) -> None:
        self._desc[key] = description

    def advance(self, key: str, amount: int) -> None:
        pass

    def done(self, key: str, message: str | None = None) -> None:
        if self.verbose:
            print(f"{self._desc.get(key, key)}: {message or 'done'}", file=sys.stderr)

    def log(self, message: str) -> None:
        if not self.quiet:
            print(message, file=sys.stderr)


class RichProgress:
    """TTY progress: one bar per blob/layer; thread-safe (pull downloads in parallel)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}", justify="left"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True, highlight=False),
            transient=False,
        )
        self._tasks: dict[str, Any] = {}  # rich TaskID
        self._lock = threading.Lock()

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def start(self, key: str, description: str, total: int | None) -> None:
        with self._lock:
            if key in self._tasks:
                self._progress.update(self._tasks[key], description=description, total=total)
            else:
                self._tasks[key] = self._progress.add_task(description, total=total)

    def advance(self, key: str, amount: int) -> None:
        with self._lock:
            task = self._tasks.get(key)
        if task is not None:
            self._progress.advance(task, amount)

    def done(self, key: str, message: str | None = None) -> None:
        with self._lock:
            task = self._tasks.get(key)
        if task is not None:
            t = self._progress.tasks[task]
            desc = t.description if not message else f"{t.description} [dim]{message}[/]"
            self._progress.update(task, completed=t.total or t.completed, description=desc)

    def log(self, message: str) -> None:
        self._progress.console.print(message, markup=False)


class _NullContext:
    def __init__(self, value: Any) -> None:
        self.value = value

    def __enter__(self) -> Any:
        return self.value

    def __exit__(self, *exc: object) -> None:
        pass


def progress_for(quiet: bool = False, json_mode: bool = False) -> Any:
    """A context manager yielding the right Progress for this output."""
    if is_tty() and not quiet and not json_mode:
        return RichProgress()
    return _NullContext(PlainProgress(quiet=quiet))
