"""Waiting for a ready-signal instead of sleeping: a line the process prints, a path it
creates, or a kernel state it reaches; always with a deadline and a message that says
what never happened."""

from __future__ import annotations

import os
import select
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def wait_until(cond: Callable[[], object], what: str, timeout: float = 30.0,
               proc: subprocess.Popen | None = None) -> None:
    """Poll ``cond`` until it holds; fail naming ``what`` after ``timeout`` seconds, or at
    once when ``proc`` (the process expected to make it hold) exits first."""
    deadline = time.monotonic() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process exited with {proc.returncode} first")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.01)


def wait_for_line(proc: subprocess.Popen, needle: str, timeout: float = 30.0) -> str:
    """Read ``proc``'s stdout (a pipe) until a line containing ``needle``; returns what was
    read. Reads the pipe's fd directly, so don't mix with ``proc.stdout`` reads before."""
    assert proc.stdout is not None, "stdout must be a pipe"
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    seen = b""
    while True:
        *complete, _partial = seen.split(b"\n")
        if any(needle.encode() in line for line in complete):
            return seen.decode(errors="replace")
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no line with {needle!r} within {timeout}s; got {seen!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"output ended before a line with {needle!r}: {seen!r}"
                                     f" (exit {proc.wait(timeout=10)})")
            seen += chunk


def wait_for_path(path: Path, timeout: float = 30.0,
                  proc: subprocess.Popen | None = None) -> None:
    """Until ``path`` exists (a marker the process makes once it is ready)."""
    wait_until(path.exists, f"{path} never appeared", timeout, proc)


def blocked_opening_fifo(pid: int) -> bool:
    """Whether ``pid`` sleeps in open(2) of a FIFO that has no other end yet."""
    try:
        return Path(f"/proc/{pid}/wchan").read_text() in ("wait_for_partner", "fifo_open")
    except OSError:
        return False
