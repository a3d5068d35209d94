"""Health checks (docker's HEALTHCHECK / --health-cmd), run by the container's monitor.

A thread of the monitor runs the check through the runtime's exec every ``interval``
seconds while the program runs and keeps docker's State.Health in ``DIR/health.json``:
Status (starting, healthy, unhealthy), FailingStreak, and the last five results' Log.
Failures inside ``startPeriod`` do not count toward ``retries`` (a success there makes it
healthy), as docker's. No check runs while the container is paused (docker skips them:
an exec into a frozen cgroup would hang), and a check past its ``timeout`` is killed.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time

from ociimg.containers.eventlog import append_event
from ociimg.containers.monitor import HEALTH_RECORD
from ociimg.runtime import jsonio

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ociimg.containers.protocol import OciRuntime

_LOG_KEEP = 5
_OUTPUT_MAX = 4096  # docker keeps 4 KiB of a check's output


def check_argv(test: list[str]) -> list[str]:
    """["CMD", args...] → args; ["CMD-SHELL", text] → /bin/sh -c text (docker)."""
    if test and test[0] == "CMD":
        return list(test[1:])
    if test and test[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", " ".join(test[1:])]
    return list(test)


def next_state(state: dict[str, Any], code: int, in_start_period: bool, retries: int
               ) -> dict[str, Any]:
    """The State.Health after a check that exited ``code`` (pure)."""
    out = dict(state)
    if code == 0:
        out.update(Status="healthy", FailingStreak=0)
    elif not (in_start_period and state.get("Status") == "starting"):
        streak = int(state.get("FailingStreak", 0)) + 1
        out["FailingStreak"] = streak
        if streak >= max(retries, 1):
            out["Status"] = "unhealthy"
    return out


class HealthChecker:
    def __init__(self, path: str, meta: dict[str, Any], runtime: OciRuntime) -> None:
        self.path, self.meta, self.runtime = path, meta, runtime
        self.config = meta["healthcheck"]
        self.stopped = threading.Event()
        self.state: dict[str, Any] = {"Status": "starting", "FailingStreak": 0, "Log": []}
        self.thread = threading.Thread(target=self._loop, daemon=True, name="ociimg-health")

    def start(self) -> None:
        self._save()
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()

    def _loop(self) -> None:
        started = time.monotonic()
        interval = max(float(self.config.get("interval") or 30.0), 0.01)
        while not self.stopped.wait(interval):
            if self._paused():
                continue
            begin = _stamp()
            code, output = self._run_check()
            if self.stopped.is_set():
                return
            in_start = time.monotonic() - started < float(self.config.get("startPeriod") or 0)
            before = self.state.get("Status")
            self.state = next_state(self.state, code, in_start,
                                    int(self.config.get("retries") or 3))
            log = [*self.state.get("Log", []), {"Start": begin, "End": _stamp(),
                                                "ExitCode": code, "Output": output}]
            self.state["Log"] = log[-_LOG_KEEP:]
            self._save()
            if self.state["Status"] != before:
                append_event(os.path.dirname(os.path.dirname(self.path)),
                             f"health_status: {self.state['Status']}", self.meta)

    def _paused(self) -> bool:
        from ociimg.errors import OciimgError
        try:
            st = self.runtime.state(self.meta["id"])
        except OciimgError:
            return False
        return bool(st) and st.get("status") == "paused"

    def _run_check(self) -> tuple[int, str]:
        """The check's exit code and output; -1 when it could not run or timed out."""
        from pathlib import Path

        from ociimg.containers.execs import run_exec
        from ociimg.containers.store import Container
        from ociimg.errors import OciimgError
        out_path = os.path.join(self.path, ".health-output")
        out = os.open(out_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                      | os.O_CLOEXEC, 0o600)
        pid_file = os.path.join(self.path, ".health-pid")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(pid_file)
        result: dict[str, Any] = {}

        def run() -> None:
            c = Container(self.meta["id"], Path(self.path), self.meta)
            try:
                result["code"] = run_exec(c, self.runtime, check_argv(self.config["test"]),
                                          env=[], cwd=None, user=None, tty=False,
                                          interactive=False, stdio=(out, out, out),
                                          pid_file=pid_file)
            except (OciimgError, OSError) as exc:
                result["error"] = str(exc)

        worker = threading.Thread(target=run, daemon=True, name="ociimg-health-check")
        worker.start()
        worker.join(float(self.config.get("timeout") or 30.0))
        timed_out = worker.is_alive()
        if timed_out:  # its pid file may come late: the runtime was still starting it
            deadline = time.monotonic() + 5.0
            while worker.is_alive() and time.monotonic() < deadline:
                if _kill_check(pid_file):
                    break
                worker.join(0.05)
            worker.join(max(0.0, deadline - time.monotonic()))
        try:
            if timed_out:
                return -1, "Health check exceeded timeout"
            if "error" in result:
                return -1, result["error"][:_OUTPUT_MAX]
            os.lseek(out, 0, os.SEEK_SET)
            return int(result["code"]), os.read(out, _OUTPUT_MAX).decode("utf-8", "replace")
        finally:
            if not worker.is_alive():
                os.close(out)

    def _save(self) -> None:
        tmp = os.path.join(self.path, f".{HEALTH_RECORD}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        with os.fdopen(fd, "w") as f:
            f.write(jsonio.dumps(self.state))
        os.replace(tmp, os.path.join(self.path, HEALTH_RECORD))


def _kill_check(pid_file: str) -> bool:
    """SIGKILL the check's process (docker kills a check past its timeout; left alone,
    each interval would add one more hung process to the container); False if its pid
    is not known yet."""
    import signal
    try:
        with open(pid_file, "rb") as f:
            pid = int(f.read(32))
    except (OSError, ValueError):
        return False
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return True  # already gone
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except OSError:
        pass
    finally:
        os.close(pidfd)
    return True


def _stamp() -> str:
    from ociimg.containers.logfile import timestamp
    return timestamp()
