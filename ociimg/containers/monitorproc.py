"""A container's monitor process seen from its caller: how it is started (a new
interpreter, or a fork of a single-threaded caller), read on (its report pipe: started,
exited, detached) and waited for (a pidfd: it is nobody's child). monitor.py is the
monitor's own side."""

from __future__ import annotations

import json
import os
import select
import signal
import time
from typing import Any

from ociimg.containers import store
from ociimg.containers.records import MONITOR_RECORD
from ociimg.containers.store import Container


def launch_monitor(c: Container, passed: list[int], *, fork: bool) -> None:
    """A monitor for ``c`` holding the fds ``passed``; returns once it runs on its own.
    Forked only when asked and this process has one thread (ContainerManager.start)."""
    import threading
    if fork and threading.active_count() == 1:
        _fork_monitor(c, passed)
    else:
        _spawn_monitor(c, passed)


# A long-lived caller's spare monitor interpreter (enable_standby); None: spawn each.
_STANDBY: Any = None


def enable_standby() -> None:
    """Keep a spare monitor interpreter ready (ociimg.containers.standby): for a server,
    whose threads rule out forking monitors."""
    global _STANDBY
    if _STANDBY is None:
        from ociimg.containers.standby import Standby
        _STANDBY = Standby()


def _spawn_monitor(c: Container, passed: list[int]) -> None:
    import subprocess
    import sys

    from ociimg.containers.runtimes import package_env
    argv = [sys.executable, "-S", "-m", "ociimg.containers.monitor", str(c.path),
            *map(str, passed)]
    with open(c.path / "monitor.log", "ab") as err:
        if _STANDBY is not None and _STANDBY.launch(str(c.path), err.fileno(), passed):
            return
        subprocess.run(argv, pass_fds=passed, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=err, env=package_env(),
                       check=False)  # it forks the monitor and exits at once


def _fork_monitor(c: Container, passed: list[int]) -> None:
    """The monitor as a fork of this (single-threaded) process: only ``passed`` and
    fresh 0-2 kept, default signal dispositions, then monitor.main as if spawned."""
    log = os.open(c.path / "monitor.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND
                  | os.O_CLOEXEC, 0o600)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            _become_monitor_process(log, passed)
            from ociimg.containers import monitor
            code = monitor.main([str(c.path), *map(str, passed)])
        except BaseException:
            import traceback
            traceback.print_exc()  # into monitor.log
        finally:
            os._exit(code)
    os.close(log)
    os.waitpid(pid, 0)  # main() forks the monitor and this child exits at once


def _become_monitor_process(log: int, passed: list[int]) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                signal.SIGUSR2, signal.SIGWINCH, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(log, 2)
    keep = sorted({0, 1, 2, *passed})
    for low, high in zip(keep, [*keep[1:], 1 << 20], strict=True):
        os.closerange(low + 1, high)
    for fd in passed:
        os.set_inheritable(fd, True)


def dup_above_stdio(fd: int) -> int:
    """A copy numbered 3 or more: the spawned monitor's own 0-2 are /dev/null."""
    import fcntl
    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)


def read_report(fd: int, deadline: float | None,
                 until: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """The monitor's next report line ({} at EOF); with ``until``, lines until one has
    one of those keys (or EOF). None when ``deadline`` passes first."""
    buf = b""
    while True:
        while b"\n" in buf:
            line, _, buf = buf.partition(b"\n")
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if not until or any(key in doc for key in until):
                return doc
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not select.select([fd], [], [], wait)[0]:
            return None
        chunk = os.read(fd, 4096)
        if not chunk:
            return {}
        buf += chunk


def wait_monitor(c: Container, deadline: float | None) -> bool:
    """Until the container's monitor has exited, through a pidfd (it is nobody's child
    we could waitpid for); False when ``deadline`` passes first."""
    doc = store.read_json(c.path / MONITOR_RECORD, "monitor.json")
    if not doc:
        return True
    try:
        pidfd = os.pidfd_open(int(doc["pid"]))
    except ProcessLookupError:
        return True
    except OSError:  # no pidfds (Linux < 5.3): look now and then
        while same_process(doc):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True
    try:
        if not same_process(doc):  # its pid was reused: that monitor is gone
            return True
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        return bool(select.select([pidfd], [], [], wait)[0])
    finally:
        os.close(pidfd)


def same_process(doc: dict[str, Any]) -> bool:
    try:
        with open(f"/proc/{int(doc['pid'])}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
    except (OSError, ValueError, KeyError):
        return False
    return fields[0] not in (b"Z", b"X") and int(fields[19]) == doc.get("starttime")

