"""What a process already inside a container (with CAP_SYS_PTRACE) turns on a process that
joins it. Stdlib only: the hook scripts of the attack tests import it too."""

from __future__ import annotations

import ctypes
import os


def pidfd_getfd(pid: int, fd: int) -> int:
    """What a process with CAP_SYS_PTRACE inside the container does to the joining
    process (pidfd_getfd(2); the test, as host root, plays that process)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        got = libc.syscall(438, pidfd, fd, 0)  # SYS_pidfd_getfd (every architecture)
        if got < 0:
            raise OSError(ctypes.get_errno(), "pidfd_getfd")
        return got
    finally:
        os.close(pidfd)


def proc_status(pid: int) -> dict[str, str]:
    """/proc/PID/status as a dict ({} once the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except (FileNotFoundError, ProcessLookupError):
        return {}
