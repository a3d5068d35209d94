"""Lifecycle hooks (runtime-spec config.md "POSIX-platform Hooks").

Each hook is executed directly with fork/execve (no subprocess import: createContainer and
startContainer hooks run inside the container init, where nothing may be imported lazily
from the host or the container), gets the container state JSON on stdin, and is killed
after its ``timeout``.
"""

from __future__ import annotations

import _signal as signal
import os
import select

from ociimg.errors import ContainerError
from ociimg.runtime import jsonio
from ociimg.runtime.lazylog import get_logger

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

log = get_logger(__name__)

STAGES = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
          "poststop")
# runtime-spec 1.2 config.md: a failing poststart or poststop hook only makes the runtime
# "log a warning, but the remaining hooks and lifecycle continue as if the hook had
# succeeded"; a failure of any other kind is an error that stops the container.
WARN_ONLY = frozenset({"poststart", "poststop"})


def run_hooks(hooks: dict[str, list[dict[str, Any]]], stage: str, state: dict[str, Any],
              trampoline: int | None = None) -> None:
    """Run every hook of a stage in order. In a fatal stage the first failure raises
    ContainerError; in poststart/poststop each failure is logged as a warning and the
    remaining hooks still run. ``trampoline``: see run_hook."""
    payload = jsonio.dumps(state).encode()
    for i, hook in enumerate(hooks.get(stage) or ()):
        try:
            code = run_hook(hook, payload, trampoline)
        except (ContainerError, OSError) as exc:
            if stage not in WARN_ONLY:
                raise
            log.warning("%s hook #%d: %s", stage, i, getattr(exc, "message", None) or exc)
            continue
        if code == 0:
            continue
        message = f"{stage} hook #{i} {hook['path']} failed: {describe(code)}"
        if stage in WARN_ONLY:
            log.warning("%s", message)
            continue
        raise ContainerError(message, hint="check the hook program; it gets the state on stdin")


def run_hook(hook: dict[str, Any], payload: bytes, trampoline: int | None = None) -> int:
    """Run one hook; returns its wait status mapped like a shell (128+N for signal N).
    A hook whose program is the container's (startContainer) is exec'd through the init's
    ``trampoline`` (process.open_trampoline), as the container's program is: exec'd
    straight from the runtime, a "#!/proc/self/exe" script would run the host's python."""
    timeout = hook.get("timeout")
    if timeout is not None and timeout <= 0:
        # Checked before the fork: raising after it would leave the hook running, unwaited.
        raise ContainerError(f"hook {hook['path']}: timeout must be positive, got {timeout}")
    if trampoline is not None:
        # Only the init passes one, and it imported process long before (this is a
        # sys.modules lookup, no file is read after pivot_root). Not at the top: state,
        # start, kill and delete import hooks, and process brings ctypes.
        from ociimg.runtime.process import TRAMPOLINE_ARGV0
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    args = hook.get("args") or [hook["path"]]
    env = hook.get("env") or []
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.dup2(read_fd, 0)
            environ = dict(e.split("=", 1) for e in env if "=" in e)
            if trampoline is not None:
                os.execve(trampoline, [TRAMPOLINE_ARGV0, hook["path"], *args], environ)
            os.execve(hook["path"], args, environ)
        finally:
            os._exit(127)
    os.close(read_fd)
    try:
        _write_all(write_fd, payload)
    except BrokenPipeError:
        pass  # a hook need not read its stdin
    finally:
        os.close(write_fd)
    return wait_with_timeout(pid, timeout)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def wait_with_timeout(pid: int, timeout: int | None) -> int:
    pidfd = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout)
        if not ready:
            os.kill(pid, signal.SIGKILL)
    finally:
        os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    return exit_code(status)


def exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def describe(code: int) -> str:
    if code > 128:
        try:
            import signal as signals  # the names, only for this message
            return f"killed by {signals.Signals(code - 128).name}"
        except ValueError:
            return f"exit status {code}"
    return f"exit status {code}"
