"""Container stdio: pipes the monitor (or exec's caller) copies, never a host fd.

A host fd handed to a container is a handle on a host inode: through /proc/self/fd the
container could chmod, chown or truncate a redirected file or the log (make it a
setuid-root binary), and a terminal takes TIOCSTI, which types commands into the caller's
shell. conmon and containerd's shim give containers pipes for the same reason.

Everything here works on fds it is given; nothing touches fds 0-2 or signal handlers, so
it may run in any thread of any process. The monitor imports it: no contextlib, typing.
"""

from __future__ import annotations

import fcntl
import os
import select
import termios
import threading

_CHUNK = 1 << 16


def copy_until_exit(pairs: list[tuple[int, int]], pidfd: int | None) -> None:
    """Copy each (src → dst) until the process behind ``pidfd`` exits or every src is at
    EOF; then only what is in the pipes at that moment. A process left behind holding a
    pipe open (or one that keeps writing) never keeps this going, nor grows ``dst`` past
    what was written before the exit. Closes the srcs, never the dsts."""
    poller = select.poll()
    live = dict(pairs)
    for src in live:
        poller.register(src, select.POLLIN)
    if pidfd is not None:
        poller.register(pidfd, select.POLLIN)
    try:
        while live:
            ready = {fd for fd, _ in poller.poll()}
            if pidfd is not None and pidfd in ready:
                break
            for src in ready & live.keys():
                if not copy_chunk(src, live[src]):
                    poller.unregister(src)
                    os.close(src)
                    del live[src]
        for src, dst in live.items():
            drain(src, dst)
    finally:
        for src in live:
            _close(src)


def drain(src: int, dst: int) -> None:
    """Copy what ``src`` holds now (FIONREAD), not what a writer adds meanwhile."""
    os.set_blocking(src, False)
    left = pending(src)
    while left > 0:
        try:
            chunk = os.read(src, min(left, _CHUNK))
        except (BlockingIOError, OSError):
            return
        if not chunk:
            return
        write_all(dst, chunk)
        left -= len(chunk)


def pending(fd: int) -> int:
    buf = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    return int.from_bytes(buf, "little")


def copy_chunk(src: int, dst: int) -> bool:
    """One read from ``src`` written whole to ``dst``; False at EOF (or EIO: a pty whose
    other side closed)."""
    try:
        chunk = os.read(src, _CHUNK)
    except BlockingIOError:
        return True
    except OSError:
        return False
    if chunk:
        write_all(dst, chunk)
    return bool(chunk)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            select.select([], [fd], [])
        except OSError:  # the reader is gone (EPIPE): what is left is dropped
            return


def feed(src: int, dst: int, *, close_dst: bool = True) -> threading.Thread:
    """A daemon thread copying ``src`` → ``dst`` until EOF (stdin into a container), then
    closing ``dst`` so the container sees EOF. It may stay blocked on ``src`` (a
    terminal) after the container has gone: it dies with the process."""
    def run() -> None:
        try:
            while copy_chunk(src, dst):
                pass
        except OSError:
            pass
        if close_dst:
            _close(dst)

    t = threading.Thread(target=run, daemon=True, name="ociimg-stdin")
    t.start()
    return t


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
