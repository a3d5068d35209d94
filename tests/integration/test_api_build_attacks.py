"""POST /build on hostile input: context tars that try to write or read outside, contexts
past the size bound, and clients that go away mid-build. Each: nothing outside changes,
one clean error, the server lives, and nothing of the build is left."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import socket
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import apiserver
from tests.integration.apiserver import ApiServer
from tests.integration.cli_helpers import ociimg
from tests.integration.test_api_build import assert_no_build_leftovers, context, raw_build
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


def tar_of(entries: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info, data = entry if isinstance(entry, tuple) else (entry, b"")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    return info


def stream_of(body: bytes) -> list[dict]:
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# Refused, or (an absolute name, a symlink to "/tmp") kept inside the context as tar
# does: either way nothing outside is written or read.
@pytest.mark.parametrize("entries,dockerfile,refused", [
    ([(member("../../../../../../tmp/{mark}"), b"escaped")], "FROM busybox\n", True),
    ([(member("/tmp/{mark}"), b"escaped")], "FROM busybox\nRUN ! ls /tmp/{mark}\n", False),
    ([member("link", tarfile.SYMTYPE, "/tmp"), (member("link/{mark}"), b"escaped")],
     "FROM busybox\n", False),
    ([member("hard", tarfile.LNKTYPE, "/etc/passwd"), (member("hard"), b"overwritten")],
     "FROM busybox\nCOPY hard /x\n", True),
    ([member("up", tarfile.SYMTYPE, "../../../../../../etc")],
     "FROM busybox\nCOPY up/passwd /x\n", True),
    ([member("abs", tarfile.SYMTYPE, "/etc/passwd")], "FROM busybox\nCOPY abs /x\n", True),
], ids=["dotdot", "absolute", "through-symlink", "hardlink-to-host", "symlink-up",
        "symlink-absolute"])
def test_hostile_context_tar_changes_nothing_outside(api: ApiServer, api_busybox: str,
                                                     tmp_path: Path, entries: list,
                                                     dockerfile: str, refused: bool) -> None:
    mark = f"ociimg-api-escape-{os.getpid()}-{tmp_path.name}"
    for entry in entries:
        info = entry[0] if isinstance(entry, tuple) else entry
        info.name = info.name.format(mark=mark)
    body = tar_of([*entries, (member("Dockerfile"), dockerfile.format(mark=mark).encode())])
    passwd = digest("/etc/passwd")
    status, answer = raw_build(api, "t=hostile", body)
    assert status in (200, 400), answer
    errors = [d for d in stream_of(answer) if "error" in d] if status == 200 else \
        [json.loads(answer)]
    assert len(errors) == int(refused), answer
    assert not os.path.lexists(f"/tmp/{mark}")
    assert digest("/etc/passwd") == passwd
    assert ("hostile" in ociimg(api.root, "images").stdout) is not refused
    assert_no_build_leftovers(api.root)
    assert api.docker("version").returncode == 0


@pytest.fixture
def small_api(ociroot: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
              fixture_layout: Path) -> Iterator[ApiServer]:
    """A server whose build contexts may be at most 1 MiB."""
    monkeypatch.setenv("OCIIMG_API_MAX_CONTEXT", str(1 << 20))
    server = apiserver.start_server(tmp_path, ociroot)
    try:
        server.load_image(fixture_layout)
        yield server
    finally:
        apiserver.stop_server(server)


def test_context_past_the_bound_is_413_and_spool_removed(small_api: ApiServer,
                                                         tmp_path: Path) -> None:
    api = small_api
    big = os.urandom(2 << 20)
    # Declared up front: refused before a byte is read.
    status, answer = raw_build(api, "t=big", tar_of([(member("big"), big)]))
    assert status == 413 and "larger than 1048576 bytes" in json.loads(answer)["message"]
    # Chunked (what the docker CLI sends): refused once past the bound.
    ctx = context(tmp_path / "ctx", "FROM busybox\nCOPY big /big\n", {})
    (ctx / "big").write_bytes(big)
    proc = api.docker("build", "-t", "big", str(ctx), check=False)
    assert proc.returncode != 0
    assert "larger than 1048576 bytes" in proc.stderr, proc
    assert not list((api.root / "build-cache").glob(".api-*"))
    # Small when compressed, past the bound when unpacked: the same bound holds.
    bomb = gzip.compress(tar_of([(member("zeros"), bytes(3 << 20)),
                                 (member("Dockerfile"), b"FROM busybox\n")]))
    assert len(bomb) < 1 << 20
    status, answer = raw_build(api, "t=bomb", bomb)
    errors = [d for d in stream_of(answer) if "error" in d]
    assert status == 200 and len(errors) == 1, answer
    assert "bomb" not in ociimg(api.root, "images").stdout
    assert_no_build_leftovers(api.root)
    assert api.docker("version").returncode == 0


def test_client_gone_mid_build_cancels_it(api: ApiServer, api_busybox: str,
                                          tmp_path: Path) -> None:
    token = f"api-endless-{os.getpid()}-{tmp_path.name}"
    body = tar_of([(member("Dockerfile"),
                    f"FROM busybox\nRUN echo started; sleep 600 # {token}\n".encode())])
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(60)
        sock.connect(str(api.socket))
        sock.sendall(f"POST /v1.41/build?t=endless HTTP/1.1\r\nHost: docker\r\n"
                     f"Content-Type: application/x-tar\r\nContent-Length: {len(body)}\r\n"
                     "\r\n".encode() + body)
        seen = b""
        # The RUN's own output (the step line names it too): then it only sleeps, and
        # the server has nothing to write that would fail.
        while b'{"stream":"started\\n"}' not in seen:
            chunk = sock.recv(65536)
            assert chunk, seen
            seen += chunk
        assert b" 200 " in seen.split(b"\r\n", 1)[0]
    # The step's process is gone, then everything the build made.
    wait_until(lambda: token not in subprocess.run(
        ["ps", "-eo", "args"], capture_output=True, text=True).stdout,
        "the cancelled step's process to be gone", timeout=60)
    wait_until(lambda: not list((api.root / "build-cache").glob(".api-*")),
               "the build's work dir to be removed", timeout=60)
    assert_no_build_leftovers(api.root)
    assert "endless" not in ociimg(api.root, "images").stdout
    assert "cancelled" in api.server_log()
    assert api.docker("version").returncode == 0


def test_server_killed_mid_build_cancels_it(api: ApiServer, api_busybox: str,
                                            tmp_path: Path) -> None:
    import signal
    token = f"api-orphan-{os.getpid()}-{tmp_path.name}"
    body = tar_of([(member("Dockerfile"),
                    f"FROM busybox\nRUN echo started; sleep 600 # {token}\n".encode())])
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(60)
        sock.connect(str(api.socket))
        sock.sendall(f"POST /v1.41/build?t=orphan HTTP/1.1\r\nHost: docker\r\n"
                     f"Content-Type: application/x-tar\r\nContent-Length: {len(body)}\r\n"
                     "\r\n".encode() + body)
        seen = b""
        while b'{"stream":"started\\n"}' not in seen:
            chunk = sock.recv(65536)
            assert chunk, seen
            seen += chunk
        assert api.stop(signal.SIGKILL) == -signal.SIGKILL
    wait_until(lambda: token not in subprocess.run(
        ["ps", "-eo", "args"], capture_output=True, text=True).stdout,
        "the orphaned build's step to be gone", timeout=60)
    wait_until(lambda: not list((api.root / "build-cache").glob(".api-*")),
               "the orphaned build's work dir to be removed", timeout=60)
    assert_no_build_leftovers(api.root)
    assert "orphan" not in ociimg(api.root, "images").stdout


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_upload_cut_short_builds_nothing(api: ApiServer, api_busybox: str, tmp_path: Path,
                                         chunked: bool) -> None:
    # Whole entries only, so the tar itself would look complete: the request must not.
    body = tar_of([(member("Dockerfile"), b"FROM busybox\n"),
                   (member("pad"), os.urandom(256 << 10))])[:1024]
    head = (b"Transfer-Encoding: chunked\r\n" if chunked else
            f"Content-Length: {len(body) * 100}\r\n".encode())
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(60)
        sock.connect(str(api.socket))
        sock.sendall(b"POST /v1.41/build?t=cut HTTP/1.1\r\nHost: docker\r\n"
                     b"Content-Type: application/x-tar\r\n" + head + b"\r\n" +
                     (f"{len(body):x}\r\n".encode() + body + b"\r\n" if chunked else body))
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):
            pass
    wait_until(lambda: "the request body ended early" in api.server_log(),
               "the server to notice the cut", timeout=60)
    assert "cut" not in ociimg(api.root, "images").stdout
    assert_no_build_leftovers(api.root)
    assert api.docker("version").returncode == 0


@pytest.mark.parametrize("query", ["", "dockerfile=../../../../etc/passwd",
                                   "dockerfile=/etc/passwd", "dockerfile=link/passwd"])
def test_dockerfile_is_read_from_the_context_only(api: ApiServer, api_busybox: str,
                                                  query: str) -> None:
    # A Dockerfile that is a symlink to a host file, a dockerfile= path that climbs out or
    # is absolute, a dir symlink out of the context: never a host file's text.
    body = tar_of([member("Dockerfile", tarfile.SYMTYPE, "/etc/passwd"),
                   member("link", tarfile.SYMTYPE, "/etc")])
    status, answer = raw_build(api, f"t=hostfile&{query}", body)
    assert status == 200, answer
    errors = [d for d in stream_of(answer) if "error" in d]
    assert len(errors) == 1 and "root:" not in answer.decode(), answer
    assert "hostfile" not in ociimg(api.root, "images").stdout
    assert_no_build_leftovers(api.root)
