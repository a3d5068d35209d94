"""Run a test step in a forked child, so what it changes (seccomp filter, capabilities,
mount namespace, cgroup membership) never touches the pytest process."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
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
            os.write(w, out.encode())
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    return status, json.loads(data) if data else None
