"""Taking over an HTTP connection for attach and exec start (dockerd's hijack).

The client sends ``Connection: Upgrade`` + ``Upgrade: tcp``; we answer ``101 UPGRADED``
(``200 OK`` without them), no chunking, no Content-Length, and the socket then carries raw
bytes both ways. aiohttp's protocol closes the transport when the client half-closes
(its ``eof_received`` returns None), which would cut the output of ``echo hi | docker exec
-i c cat`` (traps 6, 7): so the transport's protocol is swapped for :class:`Hijacked`
until the stream ends, then handed back for aiohttp's bookkeeping. Bytes a client sends
before it has read our 101 are lost: aiohttp's C parser accepts only websocket upgrades
and drops what follows an ``Upgrade: tcp`` request (its Python parser keeps them as the
upgrade's tail, taken over here through ``set_parser``); docker's CLI and docker-py read
the 101 before they send. Input and output are bounded: reading pauses while :data:`INPUT_HELD`
bytes wait, writers wait while the transport's buffer is above its high-water mark.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from ociimg.api.http import ApiError, Routes, api_version, query_int, standard_headers

RAW = "application/vnd.docker.raw-stream"
MULTIPLEXED = "application/vnd.docker.multiplexed-stream"
STDOUT, STDERR = 1, 2
INPUT_HELD = 1 << 20
_WRITE_HIGH = 1 << 18
_FRAME_MAX = 1 << 16  # one frame's payload at most (docker's own frames are 32 KiB)


LIVE = web.AppKey("live_streams", set)


class StreamRoutes(Routes):
    """Routes of endpoints that stream for as long as a container runs: the server's
    shutdown ends them at once (aiohttp would wait out its grace period twice over them,
    trap 23); the containers run on."""

    def install(self, app: web.Application) -> None:
        super().install(app)
        if LIVE not in app:
            app[LIVE] = set()
            app.on_shutdown.append(_end_streams)


async def _end_streams(app: web.Application) -> None:
    for task in list(app[LIVE]):
        task.cancel()


@contextlib.contextmanager
def tracked(request: web.Request) -> Iterator[None]:
    """The handler's task is ended (cancelled) when the server shuts down."""
    task = asyncio.current_task()
    live = request.app[LIVE]
    live.add(task)
    try:
        yield
    finally:
        live.discard(task)


def content_type(request: web.Request, tty: bool) -> str:
    """The stream's type: multiplexed only without a tty, and only from API 1.42 (trap 9)."""
    return MULTIPLEXED if not tty and api_version(request) >= (1, 42) else RAW


def frame(stream: int, data: bytes) -> bytes:
    """stdcopy's framing: [stream, 0, 0, 0, len BE32] + payload, split in 64 KiB frames."""
    return b"".join(struct.pack(">BxxxI", stream, len(data[i:i + _FRAME_MAX]))
                    + data[i:i + _FRAME_MAX] for i in range(0, len(data), _FRAME_MAX))


class _Tail:
    """The parser aiohttp feeds an accepted upgrade's bytes to (its websocket's slot)."""

    def __init__(self, target: Hijacked) -> None:
        self.target = target

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.target.data_received(data)
        return False, b""

    def feed_eof(self) -> None:
        self.target.eof_received()


class Hijacked(asyncio.Protocol):
    """The taken-over connection: ``read()`` the client's bytes (b"" once it half-closed
    or went away), ``write()`` ours with backpressure, ``close()`` at the end."""

    def __init__(self, request: web.Request) -> None:
        self.transport: Any = request.transport
        self.http_protocol: Any = request.protocol
        self._input = bytearray()
        self._input_eof = False
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self.lost = False
        self._lost_exc: BaseException | None = None
        self.closed = asyncio.Event()
        # Ended by the server's shutdown from now on (trap 23), until close().
        self._task = asyncio.current_task()
        self._live = request.app[LIVE]
        self._live.add(self._task)

    # asyncio.Protocol -------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._input_eof:
            return
        self._input += data
        self._readable.set()
        if len(self._input) >= INPUT_HELD and self.transport is not None:
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self._input_eof = True
        self._readable.set()
        return True  # half-closed: our side stays open for the output (trap 7)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = True
        self._lost_exc = exc
        self._input_eof = True
        self._readable.set()
        self._writable.set()
        self.closed.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # The handler's side ----------------------------------------------------------
    async def read(self) -> bytes:
        """The next bytes from the client; b"" at its EOF (half-close) or when gone."""
        while not self._input and not self._input_eof:
            self._readable.clear()
            await self._readable.wait()
        data = bytes(self._input)
        self._input.clear()
        if not self.lost and not self._input_eof:
            self.transport.resume_reading()
        return data

    async def write(self, data: bytes) -> None:
        """Send ``data``; waits while the client is not reading. Raises ConnectionResetError
        once the client is gone."""
        if self.lost or self.transport.is_closing():
            raise ConnectionResetError("the client went away")
        self.transport.write(data)
        if self.transport.get_write_buffer_size() > _WRITE_HIGH:
            self._writable.clear()
        if not self._writable.is_set():
            await self._writable.wait()
            if self.lost:
                raise ConnectionResetError("the client went away")

    def close(self) -> None:
        """The stream is over: what is buffered is sent, then the socket closed; aiohttp's
        protocol gets the transport back (and its connection_lost), so the server forgets
        the connection."""
        self._live.discard(self._task)
        if self.transport is None:
            return
        transport, self.transport = self.transport, None
        transport.set_protocol(self.http_protocol)
        if self.lost:
            self.http_protocol.connection_lost(self._lost_exc)
        else:
            transport.close()


class HijackedResponse(web.StreamResponse):
    """What a hijacking handler returns: aiohttp must write nothing more on the socket."""

    def __init__(self) -> None:
        super().__init__()
        self.force_close()

    async def prepare(self, request: web.BaseRequest) -> None:  # type: ignore[override]
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


def wants_upgrade(request: web.Request) -> bool:
    tokens = {t.strip().lower() for t in request.headers.get("Connection", "").split(",")}
    return "upgrade" in tokens and request.headers.get("Upgrade", "").lower() == "tcp"


async def hijack(request: web.Request, media_type: str) -> Hijacked:
    """Answer 101 (or 200) with ``media_type`` and take the connection over. Call it only
    once everything is validated: after it, errors can only go into the stream (trap 10)."""
    conn = _take_over(request, media_type)
    try:
        await _until_head_read(conn)
    except BaseException:  # the server's shutdown: the connection is ours to close
        conn.close()
        raise
    return conn


async def _until_head_read(conn: Hijacked, limit: float = 1.0) -> None:
    """Until the client has read our answer's head (a unix socket's SIOCOUTQ is what its
    peer has not read yet), for at most ``limit`` seconds. docker-py reads the head
    through a buffered file, then the stream from the raw socket: output that arrived
    with the head would sit in that buffer, lost (attach with logs=1 replays at once)."""
    import fcntl
    import socket
    import termios
    sock = conn.transport.get_extra_info("socket")
    if sock is None or sock.family != socket.AF_UNIX:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while loop.time() < deadline and not conn.lost:
        try:
            queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        except OSError:
            return
        if int.from_bytes(queued, "little") == 0:
            return
        await asyncio.sleep(0.002)


def _take_over(request: web.Request, media_type: str) -> Hijacked:
    if wants_upgrade(request):
        head = ["HTTP/1.1 101 UPGRADED", f"Content-Type: {media_type}",
                "Connection: Upgrade", "Upgrade: tcp"]
    else:
        head = ["HTTP/1.1 200 OK", f"Content-Type: {media_type}"]
    head += [f"{k}: {v}" for k, v in standard_headers().items()]
    conn = Hijacked(request)
    protocol = request.protocol
    if getattr(protocol, "_payload_parser", None) is None and protocol._upgraded:
        protocol.set_parser(_Tail(conn))  # type: ignore[arg-type]  # the bytes behind it
    conn.transport.set_protocol(conn)
    if not conn.transport.is_reading():  # aiohttp paused it for a full upgrade tail
        conn.transport.resume_reading()
    conn.transport.write(("\r\n".join(head) + "\r\n\r\n").encode())
    return conn


def terminal_size(request: web.Request) -> tuple[int, int]:
    """A resize's h and w: what a winsize holds (0..65535), else a 400 (dockerd's uint
    parse); a pty given more would fail on the server's side."""
    size = query_int(request, "h", 0) or 0, query_int(request, "w", 0) or 0
    for name, value in zip("hw", size, strict=True):
        if not 0 <= value <= 0xFFFF:
            raise ApiError(400, f"invalid value for {name}: {value}")
    return size
