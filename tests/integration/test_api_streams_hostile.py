"""Streams against hostile or careless clients: one that never reads (bounded server
memory), one that sends garbage, disconnects mid-stream, a 1 GB log tailed, a container
removed under an attach, the server stopped with streams open, terminal sizes."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.integration.apiserver import ApiServer
from tests.integration.streamclient import Hijack, demux, make_container
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _ping(api: ApiServer) -> bool:
    return api.client().api.ping()


def test_a_client_that_never_reads_costs_bounded_memory(api: ApiServer, api_busybox: str,
                                                       fixture_layout: Path) -> None:
    c = make_container(api, fixture_layout, "yes", "0123456789abcdef" * 64, start=True)
    assert api.proc is not None
    before = _rss_kib(api.proc.pid)
    stuck = Hijack(api, f"/containers/{c.id}/attach?stream=1&stdout=1")
    stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    logs = socket.socket(socket.AF_UNIX)
    logs.connect(str(api.socket))
    logs.sendall(f"GET /containers/{c.id}/logs?follow=1&stdout=1 HTTP/1.1\r\n"
                 "Host: docker\r\n\r\n".encode())
    log_file = c.path / "ctr.log"
    wait_until(lambda: log_file.stat().st_size > 300 << 20, "300 MiB of output", timeout=120)
    assert _ping(api)  # the server answers while both streams are stuck
    grown = _rss_kib(api.proc.pid) - before
    assert grown < 64 << 10, f"the server grew by {grown} KiB for clients that never read"
    stuck.close()
    logs.close()
    assert _ping(api)
    from ociimg.containers import ContainerManager
    assert ContainerManager(api.root).status(c).status == "running"


def test_garbage_and_disconnects_mid_stream(api: ApiServer, api_busybox: str,
                                           fixture_layout: Path) -> None:
    c = make_container(api, fixture_layout, "sh", "-c", "while :; do echo tick; sleep 0.05; "
                       "done", start=True)
    for _ in range(5):
        h = Hijack(api, f"/containers/{c.id}/attach?stream=1&stdin=1&stdout=1",
                   extra=os.urandom(4096))
        h.sock.sendall(os.urandom(1 << 16))  # not interactive: dropped
        assert b"tick" in h.sock.recv(65536) or b"tick" in h.sock.recv(65536)
        h.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        h.close()  # a reset, mid-stream
    logs = Hijack(api, f"/containers/{c.id}/logs?follow=1&stdout=1", upgrade=False)
    logs.close()
    assert _ping(api)
    from ociimg.containers import ContainerManager
    assert ContainerManager(api.root).status(c).status == "running"
    h = Hijack(api, f"/containers/{c.id}/attach?stream=1&stdout=1")
    assert b"tick" in h.sock.recv(65536)
    h.close()


def test_tail_of_a_1gb_log_reads_only_its_end(api: ApiServer, api_busybox: str,
                                              fixture_layout: Path) -> None:
    c = make_container(api, fixture_layout, "true")
    line = b"2026-12-07T05:24:18.123456789Z stdout F " + b"x" * 984 + b"\n"  # 1 KiB
    with open(c.path / "ctr.log", "wb") as f:
        block = line * 1024
        for _ in range(1024):
            f.write(block)
        f.write(b"2026-12-07T05:24:19.000000000Z stderr P the \n"
                b"2026-12-07T05:24:19.000000000Z stderr F end\n")
    assert api.proc is not None
    before = _rss_kib(api.proc.pid)
    t0 = time.monotonic()
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(api.socket))
    s.sendall(f"GET /v1.41/containers/{c.id}/logs?stdout=1&stderr=1&tail=2 HTTP/1.1\r\n"
              "Host: docker\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    elapsed = time.monotonic() - t0
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    payload = _unchunk(body)
    assert demux(payload) == (b"x" * 984 + b"\n", b"the end\n")
    assert _rss_kib(api.proc.pid) - before < 32 << 10
    assert elapsed < 10, f"tail of a 1 GB log took {elapsed:.1f}s"


def _unchunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out += body[:size]
        body = body[size + 2:]
    return out


def test_attach_ends_when_the_container_is_removed(api: ApiServer, api_busybox: str,
                                                   fixture_layout: Path) -> None:
    c = make_container(api, fixture_layout, "sh", "-c", "echo up; exec sleep 600",
                       start=True)
    h = Hijack(api, f"/containers/{c.id}/attach?stream=1&stdout=1&logs=1")
    assert demux(h.sock.recv(65536))[0] == b"up\n"
    from ociimg.containers import ContainerManager
    ContainerManager(api.root).remove(c, force=True)
    assert h.read_all() == b""
    assert _ping(api)


def test_server_stop_with_open_streams_is_quick_and_containers_run_on(
        api: ApiServer, api_busybox: str, fixture_layout: Path) -> None:
    c = make_container(api, fixture_layout, "sleep", "600", start=True)
    attach = Hijack(api, f"/containers/{c.id}/attach?stream=1&stdout=1")
    low = api.client().api
    exe = low.exec_create(c.id, ["sleep", "600"], stdin=True)
    ex = Hijack(api, f"/exec/{exe['Id']}/start", body=b"{}")
    assert ex.status == 101 and attach.status == 101
    t0 = time.monotonic()
    assert api.stop(signal.SIGTERM) == 0
    assert time.monotonic() - t0 < 2  # streams end at once, no grace period waited out
    assert attach.read_all() == b"" and ex.read_all() == b""
    from ociimg.containers import ContainerManager
    assert ContainerManager(api.root).status(c).status == "running"
    api.start()
    assert low.ping()


def test_resize_container_and_exec_ttys(api: ApiServer, api_busybox: str,
                                        fixture_layout: Path) -> None:
    c = make_container(api, fixture_layout, "sh", tty=True, interactive=True, start=True)
    low = api.client().api
    low.resize(c.id, 33, 111)
    h = Hijack(api, f"/containers/{c.id}/attach?stream=1&stdin=1&stdout=1")
    h.sock.sendall(b"stty size; exit\n")
    assert b"33 111" in h.read_all()
    r = make_container(api, fixture_layout, "sleep", "600", start=True)
    # The size lands on the exec's end of the pty the server gives the runtime (which
    # copies it at start); `stty size` in an exec fails in ociimg's exec -t itself.
    exe = low.exec_create(r.id, ["echo", "sized"], tty=True)
    low.exec_resize(exe["Id"], height=21, width=77)
    assert low.exec_start(exe["Id"], tty=True) == b"sized\r\n"
    stopped = make_container(api, fixture_layout, "true")
    h = Hijack(api, f"/containers/{stopped.id}/resize?h=1&w=1", upgrade=False)
    assert h.status == 409
    assert json.loads(h.body())["message"] == f"Container {stopped.id} is not running"
