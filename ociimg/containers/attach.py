"""Attaching to a running container: the monitor's side (a hub that copies the container's
output to its log, to the caller of an attached start and to attach clients, and their
input to the container) and the client's side.

The monitor listens on ``DIR/attach``, a SOCK_SEQPACKET socket (each message one frame, in
order, without a length prefix). A frame's first byte says what it is: ``1``/``2`` stdout/
stderr data (monitor → client), ``0`` stdin data, ``w`` a terminal size "ROWS COLS" and
``e`` the end of the client's input (client → monitor). The monitor closes its end when
the container exits. Sockets are named
through ``/proc/self/fd/N/attach`` (N an O_PATH fd of the directory): sun_path has 108
bytes and a container's directory may be longer.

The monitor imports this module: contextlib, os, select, socket only.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket

from ociimg.containers import logfile, stdio

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

ATTACH_NAME = "attach"
DETACH_KEYS = b"\x10\x11"  # ctrl-p ctrl-q, docker's default
_FRAME = 1 << 16
# Client input the container has not read yet, held by the monitor; more is dropped: a
# program that never reads its stdin must not stop the monitor copying its output.
_INPUT_HELD = 1 << 20


def _socket_path(directory: str) -> tuple[int, str]:
    fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return fd, f"/proc/self/fd/{fd}/{ATTACH_NAME}"


def listen(directory: str) -> socket.socket:
    """The monitor's attach socket (a stale one from an earlier run replaced)."""
    fd, path = _socket_path(directory)
    try:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        sock.bind(path)
        os.chmod(path, 0o600)
        sock.listen(8)
    finally:
        os.close(fd)
    sock.setblocking(False)
    return sock


def connect(directory: str) -> socket.socket:
    fd, path = _socket_path(directory)
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        sock.connect(path)
    finally:
        os.close(fd)
    return sock


class Hub:
    """Where the container's output goes and where its input comes from, for one run of
    its program (a restart makes a new hub over the same listener and log)."""

    def __init__(self, log: int, caller: tuple[int, int, int] | None,
                 listener: socket.socket | None, stdin: int | None, master: int | None) -> None:
        self.log = log
        self.caller = caller
        self.listener = listener
        self.stdin = stdin              # where client input goes (a pipe, or the pty)
        self.master = master
        self.clients: dict[int, socket.socket] = {}
        self.held = bytearray()         # client input waiting for the container to read
        self.poller: select.poll | None = None
        self.input_ended = False
        self.set_input(stdin)

    def set_input(self, fd: int | None) -> None:
        """Where client input goes from now on; written without blocking (_write_held)."""
        if fd is not None:
            os.set_blocking(fd, False)
        self.stdin = fd

    def output(self, stream: str, data: bytes) -> None:
        stdio.write_all(self.log, logfile.encode(stream, data))
        if self.caller is not None:
            stdio.write_all(self.caller[logfile.STREAMS[stream]], data)
        frame = (b"1" if stream == "stdout" else b"2")
        for fd, client in list(self.clients.items()):
            for i in range(0, len(data), _FRAME):
                try:
                    client.sendall(frame + data[i:i + _FRAME])
                except OSError:  # gone, or too slow (its send timeout): dropped
                    self._drop(fd)
                    break

    def pump(self, sources: dict[int, str], pidfd: int | None) -> None:
        """Copy until the process behind ``pidfd`` exits (or every source is at EOF),
        then what the sources hold at that moment; the clients are closed after."""
        poller = self.poller = select.poll()
        for fd in sources:
            poller.register(fd, select.POLLIN)
        if pidfd is not None:
            poller.register(pidfd, select.POLLIN)
        if self.listener is not None:
            poller.register(self.listener.fileno(), select.POLLIN)
        live = dict(sources)
        try:
            while live:
                events = dict(poller.poll())
                if pidfd is not None and pidfd in events:
                    break
                if self.stdin in events and events[self.stdin] & select.POLLOUT:
                    self._write_held()
                for fd in events:
                    self._ready(fd, live, poller)
            for fd, stream in live.items():
                self._drain(fd, stream)
        finally:
            for fd in live:
                _close(fd)
            for fd in list(self.clients):
                self._drop(fd)

    def _ready(self, fd: int, live: dict[int, str], poller: select.poll) -> None:
        if fd in live:
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                return
            except OSError:  # EIO: the pty's other side is closed
                chunk = b""
            if chunk:
                self.output(live[fd], chunk)
            else:
                poller.unregister(fd)
                _close(fd)
                del live[fd]
        elif self.listener is not None and fd == self.listener.fileno():
            self._accept(poller)
        elif fd in self.clients:
            self._client_input(fd, poller)

    def _accept(self, poller: select.poll) -> None:
        try:
            client, _ = self.listener.accept()  # type: ignore[union-attr]
        except OSError:
            return
        client.settimeout(5.0)  # a client that stops reading is dropped, never waited on
        self.clients[client.fileno()] = client
        poller.register(client.fileno(), select.POLLIN)

    def _client_input(self, fd: int, poller: select.poll) -> None:
        try:
            frame = self.clients[fd].recv(_FRAME + 1)
        except OSError:
            frame = b""
        if not frame:
            poller.unregister(fd)
            self._drop(fd)
        elif frame[:1] == b"0" and self.stdin is not None:
            self.held += frame[1:_INPUT_HELD - len(self.held) + 1]
            self._write_held()
        elif frame[:1] == b"w" and self.master is not None:
            _resize(self.master, frame[1:])
        elif frame[:1] == b"e" and self.stdin is not None and self.stdin != self.master:
            self._end_input()

    def _end_input(self) -> None:
        """The client's input ended (its half-close; docker's StdinOnce): once what it
        sent has gone in, the container's stdin pipe reaches EOF."""
        self.input_ended = True
        self._write_held()

    def _close_input(self) -> None:
        """EOF for the container, the fd number kept valid (/dev/null over it): the
        monitor closes it when the run ends."""
        assert self.stdin is not None
        null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        os.dup2(null, self.stdin, inheritable=False)
        os.close(null)
        if self.poller is not None:
            with contextlib.suppress(OSError, KeyError):
                self.poller.unregister(self.stdin)
        self.stdin = None

    def _write_held(self) -> None:
        """As much held input as the container's stdin takes now, never blocking; POLLOUT
        on it is asked for only while some is left."""
        assert self.stdin is not None
        try:
            while self.held:
                del self.held[:os.write(self.stdin, self.held)]
        except BlockingIOError:
            pass
        except OSError:  # it closed its stdin (EPIPE): the input has nowhere to go
            self.held.clear()
        if self.input_ended and not self.held:
            self._close_input()
            return
        if self.poller is None:
            return
        source = self.stdin == self.master  # the pty is an output source: registered
        mask = (select.POLLIN if source else 0) | (select.POLLOUT if self.held else 0)
        with contextlib.suppress(OSError, KeyError):
            if source:
                self.poller.modify(self.stdin, mask)  # ENOENT once it hit EOF: left so
            elif mask:
                self.poller.register(self.stdin, mask)  # again: the mask is replaced
            else:
                self.poller.unregister(self.stdin)

    def _drain(self, fd: int, stream: str) -> None:
        os.set_blocking(fd, False)
        left = stdio.pending(fd)
        while left > 0:
            try:
                chunk = os.read(fd, min(left, 1 << 16))
            except OSError:
                return
            if not chunk:
                return
            self.output(stream, chunk)
            left -= len(chunk)

    def _drop(self, fd: int) -> None:
        client = self.clients.pop(fd, None)
        if client is not None:
            client.close()


def _resize(master: int, text: bytes) -> None:
    import fcntl
    import struct
    import termios
    try:
        rows, cols = (int(x) for x in text.split())
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    except (ValueError, OSError, struct.error):
        pass


class DetachScanner:
    """Finds the detach sequence in input typed a chunk at a time: what precedes it is
    passed on; a chunk that ends inside the sequence is held until the next one."""

    def __init__(self, keys: bytes = DETACH_KEYS) -> None:
        self.keys = keys
        self.held = b""

    def feed(self, chunk: bytes) -> tuple[bytes, bool]:
        data = self.held + chunk
        self.held = b""
        if not self.keys:
            return data, False
        at = data.find(self.keys)
        if at >= 0:
            return data[:at], True
        for n in range(len(self.keys) - 1, 0, -1):
            if data.endswith(self.keys[:n]):
                self.held = data[-n:]
                return data[:-n], False
        return data, False


def attach_client(directory: str, stdio_fds: tuple[int, int, int], *, stdin: bool,
                  detach_keys: bytes = DETACH_KEYS, size: tuple[int, int] | None = None,
                  on_connect: Callable[[socket.socket], None] | None = None) -> bool:
    """Copy the container's output to ``stdio_fds`` (and with ``stdin`` our input to it)
    until it exits (True) or the detach keys are typed (False)."""
    sock = connect(directory)
    try:
        if size is not None:
            sock.send(b"w%d %d" % size)
        if on_connect is not None:
            on_connect(sock)
        scanner = DetachScanner(detach_keys)
        watched = [sock.fileno()] + ([stdio_fds[0]] if stdin else [])
        while True:
            ready = select.select(watched, [], [])[0]
            if stdin and stdio_fds[0] in ready:
                chunk = os.read(stdio_fds[0], 1 << 16)
                if not chunk:  # our input ended: keep showing output
                    watched.remove(stdio_fds[0])
                else:
                    data, detached = scanner.feed(chunk)
                    if data:
                        sock.sendall(b"0" + data)
                    if detached:
                        return False
            if sock.fileno() in ready:
                frame = sock.recv(_FRAME + 1)
                if not frame:
                    return True
                stdio.write_all(stdio_fds[2] if frame[:1] == b"2" else stdio_fds[1], frame[1:])
    finally:
        sock.close()


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
