"""The stdio of container processes: pipes, never the caller's or the host's own fds.

A host fd handed to a container is a handle on a host inode: through /proc/self/fd the
container could chmod, chown or truncate a redirected file or the log (make it a
setuid-root binary), and a terminal takes TIOCSTI, which types commands into the caller's
shell. conmon and containerd's shim give containers pipes for the same reason; so do
attached ``run``/``exec`` (``relayed_stdio``) and the detached monitor (``copy_output``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from ociimg.runtime.hooks import exit_code


@contextlib.contextmanager
def relayed_stdio(relay: bool) -> Iterator[None]:
    """While the body runs, fds 0-2 are pipes that threads copy to and from the real ones.
    With a pty (``relay`` False) the container gets the pty and the runtime proxies it."""
    if not relay:
        yield
        return
    import threading
    saved = [os.dup(fd) for fd in (0, 1, 2)]
    ends = []
    for fd in (0, 1, 2):
        r, w = os.pipe2(os.O_CLOEXEC)
        os.dup2(r if fd == 0 else w, fd)
        ends.append(w if fd == 0 else r)
        os.close(r if fd == 0 else w)
    stdin = threading.Thread(target=_pump, args=(os.dup(saved[0]), ends[0]), daemon=True)
    outputs = [threading.Thread(target=_pump, args=(ends[i], os.dup(saved[i])), daemon=True)
               for i in (1, 2)]
    for t in (stdin, *outputs):
        t.start()
    try:
        yield
    finally:
        for fd in (0, 1, 2):  # our copies of the write ends go: EOF once the container's do
            os.dup2(saved[fd], fd)
            os.close(saved[fd])
        # A process left behind in the container may hold the pipes open (an exec'd
        # command's background child): its output after this point is not waited for.
        # stdin's pump may be blocked reading a terminal: it dies with the process.
        for t in outputs:
            t.join(timeout=2.0)


def _pump(src: int, dst: int) -> None:
    """Copy until EOF, then close both ends (the reader of ``dst`` sees EOF)."""
    with contextlib.suppress(OSError):
        while _copy_chunk(src, dst):
            pass
    with contextlib.suppress(OSError):
        os.close(src)
    with contextlib.suppress(OSError):
        os.close(dst)


def release_stdio() -> None:
    """Drop the monitor's own copies of the pipe's write end, so the copy sees EOF once
    every process of the container has closed its copies."""
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.close(null)


def copy_output(output: int, log: int, pid: int | None) -> int | None:
    """Copy the container's output pipe into the log until ``pid`` exits, then keep what
    is already in the pipe (a background process that holds the pipe open does not keep
    the monitor alive); without a pid, only what is in the pipe now. Returns the exit
    code of ``pid``."""
    import select
    try:
        if pid is not None:
            pidfd = os.pidfd_open(pid)
            poller = select.poll()
            poller.register(output, select.POLLIN)
            poller.register(pidfd, select.POLLIN)
            while pidfd not in {fd for fd, _ in poller.poll()}:
                if not _copy_chunk(output, log):  # EOF: every writer is gone
                    break
            os.close(pidfd)
        os.set_blocking(output, False)
        while _copy_chunk(output, log):
            pass
    finally:
        os.close(output)
        os.close(log)
    if pid is None:
        return None
    _, status = os.waitpid(pid, 0)
    return exit_code(status)


def _copy_chunk(src: int, dst: int) -> bool:
    """One read from ``src`` written whole to ``dst``; False at EOF or when nothing is
    left to read without blocking."""
    try:
        chunk = os.read(src, 1 << 16)
    except BlockingIOError:
        return False
    view = memoryview(chunk)
    while view:
        view = view[os.write(dst, view):]
    return bool(chunk)
