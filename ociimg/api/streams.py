"""Container streams: attach (hijacked), logs (multiplexed or raw), resize.

The monitor owns the container's stdio (containers/monitor.py): its output goes to
``ctr.log`` (k8s-file records, streams apart) before any attach client sees it, and input
reaches it through the monitor's attach socket. So both attach and logs read the LOG,
from an offset: attach from the log's end when it connects (or its start with logs=1),
which works for a container not started yet (``docker run`` attaches before start, trap
3) and loses nothing written between the start and our first read; the attach socket
carries the client's input, terminal sizes, and wakes the reader when output comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ociimg.api import hijack
from ociimg.api.http import (
    ApiError,
    api_version,
    blocking,
    find_container,
    manager,
    query_bool,
)
from ociimg.containers import attach, logfile
from ociimg.containers.logfile import Record

routes = hijack.StreamRoutes()

_READ = 1 << 20  # log bytes read per step: output is sent before more is read
# How often a container that has not started yet is looked at: often at first (docker run
# starts it right after attaching, and a quick one may be over before the next look),
# then rarely (an attach may wait for a start that never comes).
_POLL, _POLL_SLOW, _POLL_FAST_FOR = 0.01, 0.1, 2.0
_IDLE = 0.25  # a log reader's look without a wake-up from the monitor
_CTRL = {**{chr(c): c & 0x1F for c in range(ord("a"), ord("z") + 1)},
         "@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}


def parse_detach_keys(text: str | None) -> bytes:
    """docker's detachKeys: "ctrl-p,ctrl-q" (the default), single characters, "" none."""
    if text is None:
        return attach.DETACH_KEYS
    out = bytearray()
    for key in filter(None, (k.strip() for k in text.split(","))):
        if key.lower().startswith("ctrl-") and key[5:].lower() in _CTRL:
            out.append(_CTRL[key[5:].lower()])
        elif len(key) == 1:
            out.append(ord(key))
        else:
            raise ApiError(400, f"Invalid detach keys ({key}) provided")
    return bytes(out)


# Reading the log -----------------------------------------------------------------------
class LogReader:
    """Records of a log file from ``offset`` on, a bounded step at a time; whole lines
    only (a line being written is read again at the next step)."""

    def __init__(self, fd: int, offset: int, *, streams: set[str],
                 since: float | None = None, until: float | None = None) -> None:
        self.fd, self.offset, self.streams = fd, offset, streams
        self.since, self.until = since, until

    def step(self) -> list[Record]:
        data = os.pread(self.fd, _READ, self.offset)
        end = data.rfind(b"\n") + 1
        if end == 0 and len(data) == _READ:  # a line longer than a step: skipped
            end = len(data)
        self.offset += end
        out = []
        for line in data[:end].splitlines(keepends=True):
            rec = logfile.parse_line(line)
            if rec is None or rec.stream not in self.streams:
                continue
            if self.since is not None or self.until is not None:
                when = logfile.parse_time(rec.stamp)
                if (self.since is not None and when < self.since) or \
                        (self.until is not None and when > self.until):
                    continue
            out.append(rec)
        return out


def render(records: list[Record], *, tty: bool, timestamps: bool) -> bytes:
    """Records as the client reads them: raw with a tty, else stdcopy frames (one per
    run of records of the same stream)."""
    out: list[bytes] = []
    run: list[bytes] = []
    stream = None
    for rec in records:
        data = (rec.stamp.encode() + b" " + rec.data) if timestamps else rec.data
        if tty:
            out.append(data)
            continue
        kind = hijack.STDERR if rec.stream == "stderr" else hijack.STDOUT
        if kind != stream and run:
            out.append(hijack.frame(stream, b"".join(run)))  # type: ignore[arg-type]
            run = []
        stream = kind
        run.append(data)
    if run:
        out.append(hijack.frame(stream, b"".join(run)))  # type: ignore[arg-type]
    return b"".join(out)


def tail_offset(fd: int, end: int, tail: int, since: float | None = None) -> int:
    """Where the last ``tail`` lines start (as logfile.select counts them: a record
    ending a line, the very last one not counted), reading the file backwards a block at
    a time: a log of any size costs a block of memory."""
    if tail == 0:
        return end
    count, pos, buf, first = 0, end, b"", True
    while pos > 0:
        start = max(0, pos - (1 << 16))
        buf = os.pread(fd, pos - start, start) + buf
        pos = start
        lines = buf.split(b"\n")
        buf = lines[0] if pos > 0 else b""  # maybe cut: completed by the next block
        line_end = pos + len(b"\n".join(lines))
        for line in reversed(lines[1:] if pos > 0 else lines):
            line_start = line_end - len(line)
            line_end = line_start - 1
            if not line:
                continue
            rec = logfile.parse_line(line)
            if rec is None:
                continue
            if since is not None and logfile.parse_time(rec.stamp) < since:
                return line_start + len(line) + 1
            if rec.data.endswith(b"\n") and not first:
                count += 1
                if count == tail:
                    return line_start + len(line) + 1
            first = False
    return 0


def open_log(c: Any) -> int:
    """The container's log, created if its first run has not made it yet: the fd keeps
    the records readable after an auto-removed container's directory is gone."""
    try:
        return os.open(c.path / logfile.LOG_NAME, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW
                       | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:  # removed since it was looked up
        raise ApiError(404, f"No such container: {c.id}") from None


# Watching the container's run ----------------------------------------------------------
class RunWatch:
    """The end of the container's current run or, if it is not running, of the next one
    (docker run attaches before start): its monitor's exit, seen through a pidfd; or its
    exit record changing, or its directory going (auto-removed), when the run was too
    quick to see. While the monitor lives, its attach socket is ``sock``."""

    def __init__(self, mgr: Any, c: Any) -> None:
        self.mgr, self.c = mgr, c
        self.sock: socket.socket | None = None
        self.wake = asyncio.Event()
        self.ended = asyncio.Event()
        self.connected = asyncio.Event()
        self.dropped = asyncio.Event()  # the monitor closed our connection
        self._baseline: tuple[Any, Any] | None = None

    def _look(self) -> tuple[Any, Any]:
        """("gone", None) once the directory is gone, else (its monitor's (pid, start
        time, live pid or None) or None, the exit record's time or None)."""
        from ociimg.containers import store
        from ociimg.containers.records import MONITOR_RECORD
        if not self.c.path.exists():
            return "gone", None
        doc = store.read_json(self.c.path / MONITOR_RECORD, "monitor.json")
        monitor = (doc.get("pid"), doc.get("starttime"), self.mgr.monitor_pid(self.c)) \
            if doc else None
        return monitor, (store.exit_record(self.c) or {}).get("finished")

    async def start(self) -> None:
        self._baseline = await blocking(self._look)

    async def run(self) -> None:
        """Until the run is over (``ended`` set); cancel to stop watching."""
        try:
            await self._watch()
        finally:
            self.ended.set()
            self.wake.set()
            self.close()

    async def _watch(self) -> None:
        assert self._baseline is not None
        base_monitor, base_exit = self._baseline
        loop = asyncio.get_running_loop()
        slow_from = loop.time() + _POLL_FAST_FOR
        while True:
            monitor, finished = await blocking(self._look)
            if monitor == "gone":
                return
            live = monitor is not None and monitor[2] is not None
            if live and (base_monitor is None or base_monitor[2] is not None
                         or monitor[:2] != base_monitor[:2]):
                await self._until_exit(monitor[2])
                return
            if finished != base_exit and finished is not None:
                return
            if monitor is not None and not live and (
                    base_monitor is None or monitor[:2] != base_monitor[:2]):
                return  # a run that began and ended between two looks
            await asyncio.sleep(_POLL if loop.time() < slow_from else _POLL_SLOW)

    async def _until_exit(self, pid: int) -> None:
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        loop = asyncio.get_running_loop()
        gone = asyncio.Event()
        loop.add_reader(pidfd, gone.set)
        try:
            # Connected again whenever the monitor is not (yet) listening or let us go:
            # it writes monitor.json before it listens, and drops its clients at the end
            # of each run of a restarted program.
            while not gone.is_set():
                if self.sock is None:
                    await self._connect()
                self.dropped.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(
                        _first(gone, self.dropped), None if self.sock is not None else _POLL)
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)

    async def _connect(self) -> None:
        try:
            sock = await blocking(attach.connect, str(self.c.path))
        except OSError:  # the monitor is not listening yet, or is finishing
            return
        sock.setblocking(False)
        self.sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._output_came)
        self.connected.set()

    def _output_came(self) -> None:
        """The monitor sent output (the log has it already): wake the reader; the frames
        themselves are dropped."""
        assert self.sock is not None
        try:
            while self.sock.recv(1 << 17):
                pass
            self._closed_by_monitor()
        except BlockingIOError:
            pass
        except OSError:
            self._closed_by_monitor()
        self.wake.set()

    def _closed_by_monitor(self) -> None:
        self.close()
        self.connected.clear()
        self.dropped.set()

    async def send(self, frame: bytes) -> bool:
        """A frame to the monitor (input, a size); False without a monitor to take it."""
        if self.sock is None:
            return False
        try:
            await asyncio.get_running_loop().sock_sendall(self.sock, frame)
        except OSError:
            self._closed_by_monitor()
            return False
        return True

    def close(self) -> None:
        if self.sock is not None:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None


async def _first(*events: asyncio.Event) -> None:
    """Until one of ``events`` is set."""
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


async def pump_log(reader: LogReader, watch: RunWatch | None,
                   write: Callable[[bytes], Any], *, tty: bool, timestamps: bool,
                   limit: int | None = None) -> None:
    """Send the log's records from the reader's offset; with ``watch``, until the run is
    over (then what the log holds), else until the log's end."""
    while True:
        ended = watch is None or watch.ended.is_set()
        if watch is not None:
            watch.wake.clear()
        records = await blocking(reader.step)
        if records:
            if limit is not None:
                records = records[:limit]
                limit -= len(records)
            await write(render(records, tty=tty, timestamps=timestamps))
            if limit == 0:
                return
            continue
        if ended:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(watch.wake.wait(), _IDLE)  # type: ignore[union-attr]


# Endpoints -------------------------------------------------------------------------------
def _streams(request: web.Request) -> set[str]:
    return {s for s in ("stdout", "stderr") if query_bool(request, s)}


def _time(request: web.Request, name: str) -> float | None:
    value = request.query.get(name, "")
    if value in ("", "0"):
        return None
    try:
        return float(value)
    except ValueError:
        raise ApiError(400, f"invalid value for {name}: {value!r}") from None


@routes.get("/containers/{name}/logs")
async def logs(request: web.Request) -> web.StreamResponse:
    streams = _streams(request)
    if not streams:
        raise ApiError(400, "Bad parameters: you must choose at least one stream")
    since, until = _time(request, "since"), _time(request, "until")
    tail_text = request.query.get("tail", "all")
    try:
        tail = None if tail_text in ("", "all") else int(tail_text)
    except ValueError:
        tail = None  # dockerd: anything but a number is "all"
    if tail is not None and tail < 0:
        tail = None
    timestamps = query_bool(request, "timestamps")
    mgr = manager(request)
    c = await blocking(find_container, request, request.match_info["name"])
    tty = bool(c.meta.get("tty"))
    fd = await blocking(open_log, c)
    try:
        watch = None
        if query_bool(request, "follow") and await blocking(mgr.monitor_pid, c):
            watch = RunWatch(mgr, c)
            await watch.start()
        end = os.fstat(fd).st_size
        offset = 0 if tail is None else await blocking(tail_offset, fd, end, tail, since)
        reader = LogReader(fd, offset, streams=streams, since=since, until=until)
        response = web.StreamResponse(headers={"Content-Type": hijack.content_type(
            request, tty)})
        response.enable_chunked_encoding()
        await response.prepare(request)
        task = asyncio.ensure_future(watch.run()) if watch is not None else None
        try:
            with hijack.tracked(request):
                await pump_log(reader, watch, response.write, tty=tty,
                               timestamps=timestamps)
            await response.write_eof()
        except ConnectionError:  # the client went away: nothing to tell it
            response.force_close()
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return response
    finally:
        os.close(fd)


@routes.post("/containers/{name}/attach")
async def attach_container(request: web.Request) -> web.StreamResponse:
    keys = parse_detach_keys(request.query.get("detachKeys"))
    mgr = manager(request)
    c = await blocking(find_container, request, request.match_info["name"])
    if not query_bool(request, "stream") and not query_bool(request, "logs"):
        raise ApiError(400, "Bad parameters: you must choose at least one of stream or logs")
    tty = bool(c.meta.get("tty"))
    streams = _streams(request)
    with_stdin = query_bool(request, "stdin") and bool(c.meta.get("interactive"))
    fd = await blocking(open_log, c)
    try:
        offset = 0 if query_bool(request, "logs") else os.fstat(fd).st_size
        watch = RunWatch(mgr, c)
        await watch.start()
        conn = await hijack.hijack(request, hijack.content_type(request, tty))
        try:
            await _attached(conn, watch, LogReader(fd, offset, streams=streams),
                            tty=tty, live=query_bool(request, "stream"), stdin=with_stdin,
                            keys=keys, close_stdin=bool(c.meta.get("stdinOnce", True)))
        finally:
            conn.close()
    finally:
        os.close(fd)
    return hijack.HijackedResponse()


class _WebSocket:
    """A websocket attach seen as a hijacked connection (read, write, lost): output in
    binary messages from API 1.42 (text before, as dockerd), input from any message;
    closing it is leaving (a websocket has no half-close)."""

    def __init__(self, ws: web.WebSocketResponse, binary: bool) -> None:
        self.ws, self.binary, self.lost = ws, binary, False

    async def read(self) -> bytes:
        from aiohttp import WSMsgType
        msg = await self.ws.receive()
        if msg.type == WSMsgType.BINARY:
            return bytes(msg.data)
        if msg.type == WSMsgType.TEXT:
            return str(msg.data).encode()
        self.lost = True
        return b""

    async def write(self, data: bytes) -> None:
        if self.ws.closed:
            raise ConnectionResetError("the client went away")
        if self.binary:
            await self.ws.send_bytes(data)
        else:
            await self.ws.send_str(data.decode(errors="replace"))


@routes.get("/containers/{name}/attach/ws")
async def attach_websocket(request: web.Request) -> web.StreamResponse:
    keys = parse_detach_keys(request.query.get("detachKeys"))
    mgr = manager(request)
    c = await blocking(find_container, request, request.match_info["name"])
    with_stdin = query_bool(request, "stdin") and bool(c.meta.get("interactive"))
    fd = await blocking(open_log, c)
    try:
        offset = 0 if query_bool(request, "logs") else os.fstat(fd).st_size
        watch = RunWatch(mgr, c)
        await watch.start()
        ws = web.WebSocketResponse(max_msg_size=1 << 20)
        await ws.prepare(request)
        with hijack.tracked(request):
            await _attached(_WebSocket(ws, api_version(request) >= (1, 42)), watch,
                            LogReader(fd, offset, streams=_streams(request)), tty=True,
                            live=query_bool(request, "stream"), stdin=with_stdin, keys=keys,
                            close_stdin=False)
        await ws.close()
        return ws
    finally:
        os.close(fd)


async def _attached(conn: Any, watch: RunWatch, reader: LogReader, *,
                    tty: bool, live: bool, stdin: bool, keys: bytes,
                    close_stdin: bool) -> None:
    """Output until the run ends, the client goes, or it typed the detach keys."""
    watcher = asyncio.ensure_future(watch.run()) if live else None
    output = asyncio.ensure_future(pump_log(reader, watch if live else None, conn.write,
                                            tty=tty, timestamps=False))
    inputs = asyncio.ensure_future(_input(conn, watch, stdin=stdin, keys=keys,
                                          close_stdin=close_stdin))
    try:
        done, _ = await asyncio.wait({output, inputs}, return_when=asyncio.FIRST_COMPLETED)
        if inputs in done and not inputs.result():  # still reading: output flows on
            await output
        for task in done:
            with contextlib.suppress(ConnectionResetError):
                task.result()
    except ConnectionResetError:
        pass
    finally:
        for task in (watcher, output, inputs):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionResetError):
                    await task


async def _input(conn: Any, watch: RunWatch, *, stdin: bool, keys: bytes,
                 close_stdin: bool) -> bool:
    """The client's bytes to the container (or dropped, without stdin). True when the
    stream must end now (the client went away, or detached); False at its half-close."""
    scanner = attach.DetachScanner(keys)
    while True:
        data = await conn.read()
        if not data:
            if conn.lost:
                return True
            if stdin and close_stdin:
                await _to_monitor(watch, b"e")
            return False
        if not stdin:
            continue
        data, detached = scanner.feed(data)
        for i in range(0, len(data), 1 << 16):
            await _to_monitor(watch, b"0" + data[i:i + (1 << 16)])
        if detached:
            return True


async def _to_monitor(watch: RunWatch, frame: bytes) -> None:
    """Input once the monitor listens (the container may not be started yet)."""
    while not watch.ended.is_set():
        if watch.connected.is_set() and await watch.send(frame):
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(watch.connected.wait(), _IDLE)


@routes.post("/containers/{name}/resize")
async def resize(request: web.Request) -> web.Response:
    rows, cols = hijack.terminal_size(request)
    c = await blocking(find_container, request, request.match_info["name"])
    if await blocking(manager(request).monitor_pid, c) is None:
        raise ApiError(409, f"Container {c.id} is not running")
    if c.meta.get("tty"):
        await blocking(send_size, c, rows or 0, cols or 0)
    return web.Response(status=200)


def send_size(c: Any, rows: int, cols: int) -> None:
    """A terminal size to the container's pty, through its monitor's attach socket."""
    try:
        sock = attach.connect(str(c.path))
    except OSError:
        raise ApiError(409, f"Container {c.id} is not running") from None
    with sock:
        sock.send(b"w%d %d" % (rows, cols))
