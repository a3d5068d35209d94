"""Terminals: the container's pty and runc's --console-socket protocol (docs/terminals.md).

The init opens the pty from the container's own /dev/ptmx (its devpts instance), makes the
slave its controlling terminal and stdio, and sends the master over the console socket with
SCM_RIGHTS. Without a console socket, ``run`` receives the master itself and proxies it.
"""

from __future__ import annotations

import array
import fcntl
import os
import select
import signal
import socket
import struct
import sys
import termios
import tty

from ociimg.errors import ContainerError
from ociimg.oskit import linux
from ociimg.oskit.linux import MS

_TIOCGPTN = 0x80045430
_TIOCSPTLCK = 0x40045431
_TIOCSCTTY = 0x540E
_TIOCGWINSZ = 0x5413
_TIOCSWINSZ = 0x5414


def connect_console_socket(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise ContainerError(f"console socket {path}: {exc.strerror}",
                             hint="start a listener on the socket first") from exc
    return sock


def open_pty(size: tuple[int, int] | None = None) -> tuple[int, int, str]:
    """(master, slave, slave path) from /dev/ptmx of the current mount ns."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, _TIOCSPTLCK, struct.pack("i", 0))
    buf = array.array("i", [0])
    fcntl.ioctl(master, _TIOCGPTN, buf, True)
    path = f"/dev/pts/{buf[0]}"
    slave = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    if size:
        set_winsize(slave, *size)
    return master, slave, path


def set_winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, _TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def setup_console(console_fd: int, size: tuple[int, int] | None) -> None:
    """In the init after pivot_root: the pty is its stdio and ctty, and /dev/console."""
    path = attach_pty(socket.socket(fileno=console_fd), size)
    if not os.path.lexists("/dev/console"):
        os.close(os.open("/dev/console", os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
    linux.mount(path, "/dev/console", None, MS.BIND)


def attach_pty(console: socket.socket, size: tuple[int, int] | None) -> str:
    """A pty from this mount ns's /dev/ptmx: its master sent over ``console`` (closed
    then), its slave this process's stdio and controlling terminal; returns its path."""
    master, slave, path = open_pty(size)
    try:
        socket.send_fds(console, [path.encode()], [master])
    finally:
        console.close()
        os.close(master)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    os.close(slave)
    fcntl.ioctl(0, _TIOCSCTTY, 0)
    return path


def receive_master(sock: socket.socket) -> int:
    _, fds, _, _ = socket.recv_fds(sock, 4096, 1)
    if not fds:
        raise ContainerError("console: the container sent no terminal")
    return fds[0]


def proxy_terminal(master: int, pid: int | None = None) -> None:
    """Copy stdin → master and master → stdout in raw mode until the pty closes or, given
    ``pid``, that process exits (then what it left in the pty is copied): another process
    of the container may hold the slave open for ever (runc returns then too). Window
    size changes are forwarded (SIGWINCH)."""
    stdin = sys.stdin.fileno()
    is_tty = os.isatty(stdin)
    saved = termios.tcgetattr(stdin) if is_tty else None
    if is_tty:
        _copy_winsize(stdin, master)
        signal.signal(signal.SIGWINCH, lambda *_: _copy_winsize(stdin, master))
        tty.setraw(stdin)
    pidfd = os.pidfd_open(pid) if pid is not None else None
    try:
        _pump(master, stdin if not sys.stdin.closed else None, pidfd)
    finally:
        if pidfd is not None:
            os.close(pidfd)
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)


def _copy_winsize(src: int, dst: int) -> None:
    try:
        fcntl.ioctl(dst, _TIOCSWINSZ, fcntl.ioctl(src, _TIOCGWINSZ, b"\0" * 8))
    except OSError:
        pass


def _pump(master: int, stdin: int | None, pidfd: int | None = None) -> None:
    fds = [master] + ([stdin] if stdin is not None else [])
    if pidfd is not None:
        fds.append(pidfd)
    while True:
        try:
            ready, _, _ = select.select(fds, [], [])
        except InterruptedError:
            continue
        if pidfd is not None and pidfd in ready:
            _drain(master)
            return
        if master in ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the slave side closed
                return
            if not data:
                return
            os.write(sys.stdout.fileno(), data)
        if stdin is not None and stdin in ready:
            data = os.read(stdin, 65536)
            if not data:
                fds.remove(stdin)
                stdin = None
                continue
            os.write(master, data)


def _drain(master: int) -> None:
    """Copy what is in the pty now, without waiting for more."""
    os.set_blocking(master, False)
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EAGAIN: nothing more now; EIO: the slave side closed
            return
        if not data:
            return
        os.write(sys.stdout.fileno(), data)
