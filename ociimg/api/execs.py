"""Exec: create, start (hijacked), resize, inspect.

Exec instances live in this server's memory, as dockerd's do (they are gone after a
restart there too). A started exec runs ``containers.execs.run_exec`` on a thread of its
own — not the event loop's executor, which ``asyncio.run`` joins at shutdown: an exec may
run for ever — with pipes (a pty with a tty) between it and the hijacked connection. Its
exit code is recorded before the stream closes: ``docker exec`` reads it once, right
after (trap 22).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ociimg.api import hijack
from ociimg.api.http import (
    ApiError,
    blocking,
    find_container,
    json_response,
    manager,
    own_thread,
    read_json,
)
from ociimg.api.streams import parse_detach_keys
from ociimg.errors import OciimgError

routes = hijack.StreamRoutes()

_KEEP_DONE = 1000  # finished exec instances remembered (dockerd: until the container goes)
_KEEP_IDLE = 10000  # created and never started: the oldest are forgotten past this
_CHUNK = 1 << 16


@dataclass
class ExecInstance:
    id: str
    container_id: str
    argv: list[str]
    env: list[str]
    user: str
    workdir: str
    tty: bool
    stdin: bool
    stdout: bool
    stderr: bool
    privileged: bool
    detach_keys: str | None
    running: bool = False
    started: bool = False
    exit_code: int | None = None
    pid: int = 0
    finished_at: float = 0.0
    pid_file: str = ""
    master: int | None = None  # our end of its pty, while it runs (resize)
    size: tuple[int, int] | None = None
    done: Any = field(default=None, repr=False)

    def document(self) -> dict[str, Any]:
        return {"ID": self.id, "Running": self.running, "ExitCode": self.exit_code,
                "ProcessConfig": {"tty": self.tty, "entrypoint": self.argv[0],
                                  "arguments": self.argv[1:], "privileged": self.privileged,
                                  "user": self.user},
                "OpenStdin": self.stdin, "OpenStderr": self.stderr, "OpenStdout": self.stdout,
                "CanRemove": False, "ContainerID": self.container_id,
                "DetachKeys": self.detach_keys or "", "Pid": self.pid}


_EXECS: dict[str, ExecInstance] = {}


def _forget_old() -> None:
    done = sorted((e for e in _EXECS.values() if e.started and not e.running),
                  key=lambda e: e.finished_at)
    for e in done[:max(0, len(done) - _KEEP_DONE)]:
        del _EXECS[e.id]
    idle = [e for e in _EXECS.values() if not e.started]  # in creation order (dict order)
    for e in idle[:max(0, len(idle) - _KEEP_IDLE)]:
        del _EXECS[e.id]


def _strings(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(400, f"{key} must be a list of strings")
    return value


def _running(request: web.Request, name: str) -> Any:
    c = find_container(request, name)
    st = manager(request).status(c).status
    if st == "paused":
        raise ApiError(409, f"Container {c.id} is paused, unpause the container before exec")
    if st != "running":
        raise ApiError(409, f"Container {c.id} is not running")
    return c


@routes.post("/containers/{name}/exec")
async def create_exec(request: web.Request) -> web.Response:
    body = await read_json(request, 32 << 20)
    if not isinstance(body, dict):
        raise ApiError(400, "the exec configuration must be a JSON object")
    argv = _strings(body, "Cmd")
    if not argv:
        raise ApiError(400, "No exec command specified")
    keys = body.get("DetachKeys")
    parse_detach_keys(keys)
    c = await blocking(_running, request, request.match_info["name"])
    inst = ExecInstance(
        id=secrets.token_hex(32), container_id=c.id, argv=argv, env=_strings(body, "Env"),
        user=str(body.get("User") or ""), workdir=str(body.get("WorkingDir") or ""),
        tty=bool(body.get("Tty")), stdin=bool(body.get("AttachStdin")),
        stdout=bool(body.get("AttachStdout")), stderr=bool(body.get("AttachStderr")),
        privileged=bool(body.get("Privileged")), detach_keys=keys)
    _forget_old()
    _EXECS[inst.id] = inst
    return json_response({"Id": inst.id}, 201)


def _instance(request: web.Request) -> ExecInstance:
    inst = _EXECS.get(request.match_info["id"])
    if inst is None:
        raise ApiError(404, f"No such exec instance: {request.match_info['id']}")
    return inst


@routes.get("/exec/{id}/json")
async def inspect_exec(request: web.Request) -> web.Response:
    inst = _instance(request)
    if inst.running and not inst.pid and inst.pid_file:
        inst.pid = await blocking(_read_pid, inst.pid_file)
    return json_response(inst.document())


def _read_pid(path: str) -> int:
    try:
        with open(path, "rb") as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


@routes.post("/exec/{id}/resize")
async def resize_exec(request: web.Request) -> web.Response:
    inst = _instance(request)
    rows, cols = hijack.terminal_size(request)
    if not inst.tty:
        return web.Response(status=200)
    inst.size = (rows, cols)
    if inst.master is not None:  # the runtime copies this size to the exec's own pty
        from ociimg.runtime.console import set_winsize
        with contextlib.suppress(OSError):
            set_winsize(inst.master, rows, cols)
    return web.Response(status=200)


@routes.post("/exec/{id}/start")
async def start_exec(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    inst = _instance(request)
    if inst.running:
        raise ApiError(409, f"Error: Exec command {inst.id} is already running")
    if inst.started:
        raise ApiError(409, f"Error: Exec command {inst.id} has already run")
    c = await blocking(_running, request, inst.container_id)
    keys = parse_detach_keys(inst.detach_keys)
    process = _Process(request, c, inst)
    inst.started = inst.running = True
    try:
        process.start()
    except BaseException:
        inst.running = False
        process.close()
        raise
    if body.get("Detach"):
        process.detach()
        return web.Response(status=200)
    try:
        conn = await hijack.hijack(request, hijack.content_type(request, inst.tty))
    except BaseException:
        process.close()
        raise
    try:
        await process.attached(conn, keys)
    finally:
        conn.close()
    return hijack.HijackedResponse()


class _Process:
    """One exec's run: its stdio's other ends, and the thread waiting for it."""

    def __init__(self, request: web.Request, c: Any, inst: ExecInstance) -> None:
        self.loop = asyncio.get_running_loop()
        self.mgr, self.c, self.inst = manager(request), c, inst
        self.ours: list[int] = []    # stdin writer, output readers (closed by close())
        self.theirs: list[int] = []  # what run_exec gets (closed when it returns)
        self.message: str | None = None  # why it could not run

    def start(self) -> None:
        inst = self.inst
        if inst.tty:
            from ociimg.runtime.console import open_pty
            master, slave, _ = open_pty(inst.size or (24, 80))
            inst.master = master
            self.ours = [master]
            self.theirs = [slave]
            self.stdio = (slave, slave, slave)
            self.outputs = [(master, hijack.STDOUT)]
        else:
            in_r, in_w = os.pipe2(os.O_CLOEXEC)
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            self.ours = [in_w, out_r, err_r]
            self.theirs = [in_r, out_w, err_w]
            self.stdio = (in_r, out_w, err_w)
            self.outputs = [(out_r, hijack.STDOUT), (err_r, hijack.STDERR)]
            if not inst.stdin:
                os.close(in_w)
                self.ours.remove(in_w)
        inst.pid_file = str(self.c.path / f".exec-{inst.id[:16]}.pid")
        # A thread of its own, not the loop's executor (which asyncio.run joins at the
        # server's stop): an exec may run for ever.
        self.exited: asyncio.Future[int] = asyncio.ensure_future(own_thread(self._run))

    def _run(self) -> int:
        from ociimg.containers.execs import run_exec
        inst = self.inst
        try:
            code = run_exec(self.c, self.mgr.runtime(self.c), inst.argv, env=inst.env,
                            cwd=inst.workdir or None, user=inst.user or None, tty=inst.tty,
                            interactive=inst.stdin, stdio=self.stdio,
                            pid_file=inst.pid_file)
            message = None
        except OciimgError as exc:
            code = exc.exit_code if exc.exit_code in (126, 127) else 126
            message = exc.message
        except Exception as exc:  # noqa: BLE001 - recorded as the exec's failure
            code, message = 126, f"exec failed: {exc}"
        finally:
            for fd in self.theirs:
                os.close(fd)
            self.theirs = []
            with contextlib.suppress(OSError):
                os.unlink(inst.pid_file)
        # Recorded here, before the stream can close (trap 22).
        inst.exit_code, inst.running, inst.finished_at = code, False, time.time()
        inst.master = None
        self.message = message
        return code

    def detach(self) -> None:
        """Detached: its output read and dropped, in the background."""
        async def drain() -> None:
            try:
                await self._output(None)
            finally:
                self.close()
        self.task = asyncio.ensure_future(drain())

    async def attached(self, conn: hijack.Hijacked, keys: bytes) -> None:
        """Output to the client until the process has exited and its output is read;
        the client's input to it until its half-close (then its stdin's EOF)."""
        inputs = asyncio.ensure_future(self._input(conn, keys))
        output = asyncio.ensure_future(self._output(conn))
        try:
            done, _ = await asyncio.wait({inputs, output},
                                         return_when=asyncio.FIRST_COMPLETED)
            if inputs in done and not inputs.result():
                await output
        except ConnectionResetError:
            pass
        finally:
            for task in (inputs, output):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionResetError):
                    await task
            if not output.cancelled() and output.done() and self.message and not conn.lost:
                with contextlib.suppress(ConnectionResetError):
                    await conn.write(self._error_text())
            self.close()

    def _error_text(self) -> bytes:
        text = (self.message or "").encode() + b"\r\n"
        return text if self.inst.tty else hijack.frame(hijack.STDOUT, text)

    async def _input(self, conn: hijack.Hijacked, keys: bytes) -> bool:
        """True: the stream ends now (client gone or detached); False: its half-close."""
        from ociimg.containers.attach import DetachScanner
        writer = self.ours[0] if self.inst.stdin else None
        scanner = DetachScanner(keys)
        while True:
            data = await conn.read()
            if not data:
                if conn.lost:
                    return True
                if writer is not None and not self.inst.tty:
                    self._close_ours(writer)
                return False
            if writer is None:
                continue
            data, detached = scanner.feed(data)
            if data:
                await self._write(writer, data)
            if detached:
                return True

    async def _write(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        os.set_blocking(fd, False)
        while view:
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                await _ready(self.loop, fd, write=True)
            except OSError:  # it closed its stdin: the rest has nowhere to go
                return

    async def _output(self, conn: hijack.Hijacked | None) -> None:
        """Its output, framed, until it has exited and the pipes are read (a process it
        left behind cannot hold the stream open: what is in the pipes then is the end)."""
        live = dict(self.outputs)
        for fd in live:
            os.set_blocking(fd, False)
        while live:
            exited = self.exited.done()
            read_any = False
            for fd, stream in list(live.items()):
                try:
                    chunk = os.read(fd, _CHUNK)
                except BlockingIOError:
                    continue
                except OSError:  # EIO: the pty's other side is closed
                    chunk = b""
                if not chunk:
                    del live[fd]
                    continue
                read_any = True
                if conn is not None and self._wanted(stream):
                    await conn.write(chunk if self.inst.tty else hijack.frame(stream, chunk))
            if read_any:
                continue
            if exited:
                return
            await _any_ready(self.loop, list(live), self.exited)

    def _wanted(self, stream: int) -> bool:
        return self.inst.tty or (self.inst.stdout if stream == hijack.STDOUT
                                 else self.inst.stderr)

    def _close_ours(self, fd: int) -> None:
        if fd in self.ours:
            self.ours.remove(fd)
            os.close(fd)

    def close(self) -> None:
        """Our ends closed: with its output not read any more, a process still writing
        gets EPIPE instead of blocking the exec for ever."""
        for fd in list(self.ours):
            self._close_ours(fd)


async def _ready(loop: asyncio.AbstractEventLoop, fd: int, *, write: bool = False) -> None:
    ready = loop.create_future()
    add, remove = (loop.add_writer, loop.remove_writer) if write else \
        (loop.add_reader, loop.remove_reader)
    add(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        remove(fd)


async def _any_ready(loop: asyncio.AbstractEventLoop, fds: list[int],
                     exited: asyncio.Future[int]) -> None:
    """Until one of ``fds`` is readable or the process has exited."""
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)
    for fd in fds:
        loop.add_reader(fd, wake)
    exited.add_done_callback(lambda _: wake())
    try:
        await ready
    finally:
        for fd in fds:
            loop.remove_reader(fd)
