"""Run a test step in a forked child, so what it changes (seccomp filter, capabilities,
mount namespace, cgroup membership) never touches the pytest process."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def run_in_child(fn: Callable[[], Any]) -> tuple[int, Any]:
    """fork; run ``fn`` in the child; return (wait status, {"ok": result} or {"error": …})."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 0
        try:
            out = json.dumps({"ok": fn()})
        except BaseException as exc:  # noqa: BLE001 - report everything to the parent
            out = json.dumps({"error": f"{type(exc).__name__}: {exc}"})
            code = 1
        try:
            with os.fdopen(w, "wb") as pipe:  # a buffered write: the whole result, however big
                pipe.write(out.encode())
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    return status, json.loads(data) if data else None


def in_mount_ns(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a forked child with a private mount namespace; return its result."""
    from ociimg.oskit import linux

    def body() -> Any:
        linux.unshare(linux.CLONE.NEWNS)
        linux.mount(None, "/", None, linux.MS.REC | linux.MS.PRIVATE)
        return fn()

    status, result = run_in_child(body)
    assert result is not None and "error" not in result, (status, result)
    return result["ok"]


def shared_tmpfs_in_own_mount_ns(path: Path) -> Path:
    """In a forked child: a mount namespace of its own, rslave first (nothing mounted in it
    reaches the host's), and a fresh shared tmpfs at ``path`` for a test's bundles."""
    from ociimg.oskit import linux
    from ociimg.oskit.linux import MS

    linux.unshare(linux.CLONE.NEWNS)
    linux.mount(None, "/", None, MS.SLAVE | MS.REC)
    path.mkdir()
    linux.mount("tmpfs", str(path), "tmpfs", 0, "mode=755")
    linux.mount(None, str(path), None, MS.SHARED)
    return path
