"""docker cp through the API: a container that plants symlinks to host paths (what is read
or written stays inside it; the host canary is never read or changed), and clients that
abandon a download (the server goes on serving everybody)."""

from __future__ import annotations

import gc
import io
import os
import socket
import tarfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.apiserver import ApiServer
from tests.integration.test_api_containers_hostile import request
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def canary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    d = tmp_path_factory.mktemp("canary")
    (d / "secret").write_text("host secret\n")
    yield d
    assert (d / "secret").read_text() == "host secret\n"
    assert sorted(p.name for p in d.iterdir()) == ["secret"]


def test_cp_through_planted_symlinks_stays_inside(api: ApiServer, api_busybox: str,
                                                  canary: Path, tmp_path: Path) -> None:
    up = "../" * 12
    script = (f"ln -s {canary} /abs && ln -s {up}{str(canary).lstrip('/')} /rel && "
              f"ln -s {canary}/secret /file && mkdir -p /d && ln -s {canary} /d/in && "
              "touch /ready && sleep 3017")
    api.docker("run", "-d", "--name", "planter", "busybox", "sh", "-c", script)
    wait_until(lambda: _exists(api, "planter", "/ready"),
               "the container planted its symlinks")
    out = tmp_path / "out"
    out.mkdir()
    for path in ("/abs/secret", "/rel/secret", "/d/in/secret", "/abs/.", "/file"):
        got = api.docker("cp", f"planter:{path}", str(out / "x"), check=False)
        # A link copied as a link (docker cp without -L) is no leak: only data is.
        leaked = [p for p in out.rglob("*") if not p.is_symlink() and p.is_file()
                  and p.read_bytes() == b"host secret\n"]
        assert not leaked, (path, got)
    src = tmp_path / "payload"
    src.write_text("from the client\n")
    for dest in ("/abs/", "/rel/", "/d/in/", "/abs/secret", "/file"):
        api.docker("cp", str(src), f"planter:{dest}", check=False)
    api.docker("rm", "-f", "planter")


def test_archive_tar_stream_of_a_symlink_is_the_link(api: ApiServer, api_busybox: str,
                                                     canary: Path) -> None:
    api.docker("run", "-d", "--name", "l", "busybox", "sh", "-c",
               f"ln -s {canary}/secret /file && touch /ready && sleep 3017")
    client = api.client()
    wait_until(lambda: _exists(api, "l", "/ready"), "the container made its link")
    stream, stat = client.api.get_archive("l", "/file")
    data = b"".join(stream)
    assert b"host secret" not in data
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.getmembers()[0]
    assert member.issym() and member.linkname == f"{canary}/secret", member
    api.docker("rm", "-f", "l")


def _exists(api: ApiServer, name: str, path: str) -> bool:
    return request(api, "HEAD", f"/containers/{name}/archive?path={path}")[0] == 200


def _abandon(api: ApiServer, path: str) -> None:
    """Ask for ``path``, read the first bytes of the answer, hang up."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(30)
        sock.connect(str(api.socket))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: docker\r\n\r\n".encode())
        assert sock.recv(100).startswith(b"HTTP/1.1 200")


def test_abandoned_downloads_never_wedge_the_server(api: ApiServer, api_busybox: str) -> None:
    """The tar writer's buffer, left full by a client that hung up, was flushed by its
    finalizer on the event loop's thread, which then waited for itself: every client hung,
    and the server could no longer even be stopped."""
    api.docker("run", "-d", "--name", "big", "busybox", "sh", "-c",
               "dd if=/dev/zero of=/big bs=1M count=16 && touch /ready && sleep 3017")
    wait_until(lambda: _exists(api, "big", "/ready"), "the container wrote its file")
    for _ in range(10):
        for path in ("/containers/big/archive?path=/big", "/containers/big/export"):
            _abandon(api, path)
            gc.collect()  # what the next allocations would do at any time
            assert request(api, "GET", "/_ping")[0] == 200  # times out when wedged
    api.docker("rm", "-f", "big")


def _first_body_bytes(sock: socket.socket) -> None:
    """Read until the answer's head and some of its body came (a socket timeout when the
    server never gets to it)."""
    data = b""
    while b"\r\n\r\n" not in data or data.endswith(b"\r\n\r\n"):
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data[:200]


def test_clients_that_stop_reading_leave_the_server_serving(api: ApiServer,
                                                            api_busybox: str) -> None:
    """Each download's tar is written by a thread that waits while its client does not
    read: on the shared pool, a few such clients held every worker, and every request
    that needs one (ps, inspect, the next cp) waited with them."""
    api.docker("run", "-d", "--name", "big", "busybox", "sh", "-c",
               "dd if=/dev/zero of=/big bs=1M count=64 && touch /ready && sleep 3017")
    wait_until(lambda: _exists(api, "big", "/ready"), "the container wrote its file")
    stalled = []
    try:
        for _ in range(min(32, (os.cpu_count() or 1) + 4) + 2):  # the pool's size, and more
            sock = socket.socket(socket.AF_UNIX)
            stalled.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(60)
            sock.connect(str(api.socket))
            sock.sendall(b"GET /containers/big/archive?path=/big HTTP/1.1\r\n"
                         b"Host: docker\r\n\r\n")
            _first_body_bytes(sock)  # then it reads no more
        assert "big" in api.docker("ps", "--format", "{{.Names}}", timeout=60).stdout
        assert request(api, "GET", "/containers/big/json")[0] == 200
    finally:
        for sock in stalled:
            sock.close()
    api.docker("rm", "-f", "big")


def test_concurrent_cp_from_a_stopped_container(api: ApiServer, api_busybox: str) -> None:
    """A stopped container's files come from its snapshot mounted for each request: at
    once, the mounts of one writable layer must not undo each other's work dir."""
    api.docker("run", "--name", "stopped", "busybox", "sh", "-c", "echo kept > /f")

    def one(_: int) -> tuple[int, dict]:
        return request(api, "GET", "/containers/stopped/archive?path=/f")

    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(one, range(96)))
    assert [status for status, _ in answers] == [200] * 96, \
        [a for a in answers if a[0] != 200][:3]
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(api.root) not in mounts  # every view unmounted again
    api.docker("rm", "stopped")
