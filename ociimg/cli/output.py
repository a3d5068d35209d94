"""How the CLI talks to people and to scripts.

On a terminal, long work shows rich progress bars; otherwise it stays quiet
(one plain line per finished step at most) so CI logs are readable. ``--json``
output goes to stdout as one JSON document; everything else goes to stderr.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from typing import Any

# C0 and C1 controls and DEL (terminal escape sequences start with ESC or CSI), lone
# surrogates (cannot be encoded), and the bidirectional overrides and isolates that make
# a terminal show text in another order than it is ("Trojan Source", CVE-2021-42574).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u061c\u200e\u200f"
                          "\u202a-\u202e\u2066-\u2069]")


def printable(text: object) -> str:
    """``text`` safe to show on a terminal: every control character is written as an
    escape (``\\x1b``, ``\\n``, ``\\u202e``), so text from an image (labels, env, history,
    annotations, names echoed in errors) can neither drive the terminal nor forge lines.
    Used for all human output of such text; ``--json`` output stays exact JSON."""
    return _UNPRINTABLE.sub(_escape, str(text))


def _escape(m: re.Match[str]) -> str:
    c = m.group()
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(c) or (
        f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


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
            print(printable(message), file=sys.stderr)


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
        self._progress.console.print(printable(message), markup=False)


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
