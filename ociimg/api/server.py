"""``ociimg serve``: the Engine API on unix sockets (and loopback or TLS TCP when asked).

The server holds no container state of its own: every request maps onto the container,
image, network and volume libraries, and the containers' monitors own the processes, so
containers outlive a stopped or killed server and a restarted one sees them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import ipaddress
import logging
import os
import signal
import socket
import ssl
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage

from ociimg.api import (
    archive,
    build,
    containers,
    execs,
    images,
    networks,
    streams,
    system,
    volumes,
)
from ociimg.api.http import ROOT, error_middleware, header_middleware
from ociimg.errors import InvalidArgument

DEFAULT_SOCKET = "/run/ociimg/docker.sock"
_MODULES = (system, images, containers, streams, archive, execs, build, networks, volumes)


@dataclass
class ServeOptions:
    hosts: list[str] = field(default_factory=lambda: [f"unix://{DEFAULT_SOCKET}"])
    group: str | None = None  # the group that may use the unix sockets (dockerd's -G)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None  # clients must present a certificate signed by it
    debug: bool = False


def make_app(root: Path) -> web.Application:
    # Bodies are read by the endpoints themselves (streamed or bounded), not by aiohttp.
    app = web.Application(middlewares=[header_middleware, error_middleware],
                          client_max_size=16 << 20)
    app[ROOT] = root
    for module in _MODULES:
        module.routes.install(app)
    return app


def serve(root: Path, options: ServeOptions) -> None:
    """Serve until SIGINT or SIGTERM; the containers keep running afterwards."""
    logging.basicConfig(level=logging.DEBUG if options.debug else logging.INFO,
                        format="ociimg serve: %(message)s", stream=sys.stderr)
    logging.getLogger("aiohttp.server").addFilter(_one_line_bad_requests)
    # A stop request that arrives once a socket listens but before the event loop's handlers
    # are in place must still end the server cleanly (socket removed, exit 0).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _remember_stop)
    sockets = list(_systemd_sockets())
    try:
        if not sockets:
            for host in options.hosts:
                sockets.append(_listen(host, options))
        asyncio.run(_serve(root, sockets, options))
    finally:
        for sock, url in sockets:
            sock.close()
            if url.startswith("unix://"):  # ours; a systemd socket (fd://) stays systemd's
                with contextlib.suppress(OSError):
                    os.unlink(urlsplit(url).path)


_STOP_REQUESTED: list[int] = []


def _remember_stop(signum: int, frame: object) -> None:
    _STOP_REQUESTED.append(signum)


def _one_line_bad_requests(record: logging.LogRecord) -> bool:
    """A malformed request is the client's error: one line in the log, not a traceback."""
    exc = record.exc_info[1] if record.exc_info else None
    if isinstance(exc, BadHttpMessage):
        record.msg, record.args, record.exc_info = "bad request: %s", (exc.message,), None
    return True


def _one_line_accept_errors(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Out of file descriptors (clients holding connections open), asyncio stops accepting
    for a second and tries again: one line each time, not a traceback."""
    exc = context.get("exception")
    if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS,
                                                  errno.ENOMEM):
        logging.getLogger("ociimg.api").warning("cannot accept connections: %s (%d open)",
                                                exc.strerror, _open_fds())
        return
    loop.default_exception_handler(context)


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # no descriptor left even for that
        return -1


async def _serve(root: Path, sockets: list[tuple[socket.socket, str]],
                 options: ServeOptions) -> None:
    runner = web.AppRunner(make_app(root), access_log=logging.getLogger("ociimg.api.access")
                           if options.debug else None, handle_signals=False,
                           shutdown_timeout=2.0)
    await runner.setup()
    from ociimg.containers.monitorproc import enable_standby
    enable_standby()  # a spare monitor interpreter for each container start
    context = _tls_context(options)
    for sock, url in sockets:
        tls = context if sock.family != socket.AF_UNIX else None
        await web.SockSite(runner, sock, ssl_context=tls).start()
        logging.getLogger("ociimg.api").info("listening on %s (root %s)", url, root)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_one_line_accept_errors)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if _STOP_REQUESTED:
        stop.set()
    await stop.wait()
    await runner.cleanup()


def _listen(host: str, options: ServeOptions) -> tuple[socket.socket, str]:
    url = urlsplit(host)
    if url.scheme == "unix":
        return _listen_unix(Path(url.path or DEFAULT_SOCKET), options.group), host
    if url.scheme == "tcp":
        return _listen_tcp(url.hostname or "", url.port or 2375, options), host
    raise InvalidArgument(f"cannot listen on {host!r}",
                          hint="use unix:///PATH or tcp://127.0.0.1:PORT")


def _listen_unix(path: Path, group: str | None) -> socket.socket:
    gid = 0
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise InvalidArgument(f"no group named {group!r}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Bound under a umask so the socket never exists with wider access than 0660.
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    try:
        _own_socket_file(path, gid)
    except BaseException:
        sock.close()
        raise
    sock.listen(128)
    return sock


def _own_socket_file(path: Path, gid: int) -> None:
    """Give the socket just bound at ``path`` its group and mode 0660 through an fd of
    the file itself: in a directory others may write to, the name can be a symlink by
    now, and chown/chmod of a name would follow it to a file of root's."""
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISSOCK(st.st_mode) or st.st_uid != 0:
            raise InvalidArgument(f"{path} was replaced while the server bound it",
                                  hint="put the socket in a directory only root can write to")
        os.chown(f"/proc/self/fd/{fd}", 0, gid)  # the file the fd holds, never a link's
        os.chmod(f"/proc/self/fd/{fd}", 0o660)
    finally:
        os.close(fd)


def _remove_stale_socket(path: Path) -> None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise InvalidArgument(f"{path} exists and is not a socket",
                              hint="choose another path with -H unix:///PATH")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()  # nobody answers: left by a server that was killed
        return
    finally:
        probe.close()
    raise InvalidArgument(f"another server is listening on {path}",
                          hint="stop it first, or choose another path with -H unix:///PATH")


def _listen_tcp(address: str, port: int, options: ServeOptions) -> socket.socket:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise InvalidArgument(f"tcp listen address must be an IP address, not {address!r}")\
            from None
    if not ip.is_loopback and not (options.tls_cert and options.tls_ca):
        raise InvalidArgument(
            f"refusing to serve the API unauthenticated on {address}: anyone who reaches it "
            "is root on this host",
            hint="listen on 127.0.0.1, or give --tls-cert, --tls-key and --tls-ca "
                 "(clients must present a certificate)")
    sock = socket.socket(socket.AF_INET6 if ip.version == 6 else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        raise InvalidArgument(f"cannot listen on {address}:{port}: {exc.strerror}") from None
    sock.listen(128)
    return sock


def _tls_context(options: ServeOptions) -> ssl.SSLContext | None:
    if not options.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(options.tls_cert, options.tls_key)
    if options.tls_ca:
        context.load_verify_locations(options.tls_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _systemd_sockets() -> Iterator[tuple[socket.socket, str]]:
    """Sockets passed by systemd socket activation (sd_listen_fds: fds 3.. for this pid)."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return
    count = int(os.environ.get("LISTEN_FDS", "0") or 0)
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(key, None)
    for fd in range(3, 3 + count):
        yield socket.socket(fileno=fd), f"fd://{fd}"
