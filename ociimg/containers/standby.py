"""A spare monitor interpreter for a long-lived caller with threads (``ociimg serve``):
``python -S -m ociimg.containers.standby FD``.

Such a caller cannot fork its monitors (monitorproc), and a new interpreter costs every
start ~40 ms, plus ~20 ms of runtime imports on the start path and ~70 ms of network,
snapshot and volume imports between the program's exit and its removal (profiled with
strace and ``-X importtime``: ``docker run --rm`` waits on all of them). The spare has
started and imported all that ahead of time; it waits on its end of a socketpair for one
job (the container's path, its monitor.log and the fds the monitor keeps) and becomes
that container's monitor launcher, exactly as a spawned one. The caller then starts the
next spare. A spare whose caller is gone reads EOF and exits.
"""

from __future__ import annotations

import os
import socket
import sys
import threading

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess

# What a monitor imports over its life (start, hold, finish), found with strace.
PRELOAD = ("ociimg.containers.monitor", "ociimg.containers.eventlog",
           "ociimg.runtime.container", "ociimg.runtime.init", "ociimg.runtime.mounts",
           "ociimg.runtime.namespaces", "ociimg.runtime.seccomp", "ociimg.runtime.cgroups",
           "ociimg.runtime.cgroups.v1", "ociimg.runtime.capabilities", "ociimg.runtime.lsm",
           "ociimg.network", "ociimg.oskit.mountpoints", "ociimg.containers.rootfs",
           "ociimg.containers.names", "ociimg.containers.volumes", "ociimg.layers.snapshots")


class Spare:
    """One spare interpreter, seen from the caller."""

    def __init__(self) -> None:
        import subprocess

        from ociimg.containers.runtimes import package_env
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.proc: subprocess.Popen[bytes] = subprocess.Popen(
                [sys.executable, "-S", "-m", "ociimg.containers.standby",
                 str(theirs.fileno())], pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, env=package_env())
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.sock = ours
        # Its imports run beside a container's start: they must not slow it. Only as
        # root, who can raise its priority back (hand_over) to the caller's own.
        self.niced = os.geteuid() == 0
        if self.niced:
            os.setpriority(os.PRIO_PROCESS, self.proc.pid, 19)

    def hand_over(self, path: str, log: int, passed: list[int]) -> bool:
        """The monitor of the container at ``path``; returns once it runs on its own
        (as a spawned launcher's exit says). False when this spare is gone: spawn."""
        try:
            if self.niced:
                os.setpriority(os.PRIO_PROCESS, self.proc.pid,
                               os.getpriority(os.PRIO_PROCESS, 0))
            socket.send_fds(self.sock, [os.fsencode(path)], [log, *passed])
        except OSError:
            self.close()
            return False
        self.sock.close()
        self.proc.wait()
        return True

    def close(self) -> None:
        self.sock.close()  # its EOF: the spare exits
        self.proc.wait()


class Standby:
    """Keeps one spare ready; thread-safe (the API starts containers on worker threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spare: Spare | None = None
        self._closed = False
        self._refill()

    def _refill(self) -> None:
        try:
            spare = Spare()
        except OSError:
            return  # no spare this time: the next start spawns as before
        with self._lock:
            if self._closed or self._spare is not None:
                spare.close()
            else:
                self._spare = spare

    def launch(self, path: str, log: int, passed: list[int]) -> bool:
        """The spare becomes the monitor of the container at ``path``; False when none
        was ready (the caller spawns one itself)."""
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is None:
            return False
        try:
            return spare.hand_over(path, log, passed)
        finally:
            if not self._closed:
                self._refill()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            spare, self._spare = self._spare, None
        if spare is not None:
            spare.close()


def main(argv: list[str]) -> int:
    import importlib
    sock = socket.socket(fileno=int(argv[0]))
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:  # a missing optional part: the monitor imports it itself
            pass
    try:
        msg, fds, _, _ = socket.recv_fds(sock, 1 << 16, 16)
    except OSError:
        return 1
    finally:
        sock.close()
    if not msg or not fds:
        for fd in fds:
            os.close(fd)
        return 0  # the caller went away
    log, *passed = fds
    os.dup2(log, 2)  # the container's monitor.log, as a spawned monitor's stderr
    os.close(log)
    for fd in passed:
        os.set_inheritable(fd, True)
    from ociimg.containers import monitor
    return monitor.main([os.fsdecode(msg), *map(str, passed)])


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    # The monitor ends here with every preloaded module: their teardown (~30 ms) would
    # only delay its exit, which `docker wait` and `run --rm` wait for.
    os._exit(code)
