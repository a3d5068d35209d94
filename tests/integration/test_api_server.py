"""`ociimg serve` itself: listening, version negotiation, errors as dockerd answers them,
the socket's permissions, and stopping."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.apiserver import ApiServer
from tests.integration.runtime_helpers import REPO

pytestmark = pytest.mark.integration


def raw_request(server: ApiServer, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.0-style exchange on the unix socket, read to EOF."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(30)
        sock.connect(str(server.socket))
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
    return int(status_line.split()[1]), headers, body


def get(server: ApiServer, path: str) -> tuple[int, dict[str, str], bytes]:
    return raw_request(server, f"GET {path} HTTP/1.1\r\nHost: docker\r\n"
                               "Connection: close\r\n\r\n".encode())


def test_cli_reads_version_through_the_socket(api: ApiServer) -> None:
    out = api.docker("version", "--format", "{{.Server.APIVersion}} {{.Server.Os}}").stdout
    assert out.split() == ["1.43", "linux"]


def test_ping_versioned_unversioned_and_negotiation(api: ApiServer) -> None:
    status, headers, body = get(api, "/_ping")
    assert (status, body) == (200, b"OK")
    assert headers["api-version"] == "1.43"
    status, _, body = get(api, "/v1.41/version")
    assert status == 200 and json.loads(body)["ApiVersion"] == "1.43"
    status, _, body = get(api, "/v1.99/version")
    assert status == 400
    assert json.loads(body)["message"].startswith("client version 1.99 is too new")
    status, _, body = get(api, "/v1.12/version")
    assert status == 400 and "too old" in json.loads(body)["message"]


def test_unknown_endpoints_answer_json_not_found(api: ApiServer) -> None:
    for path in ("/nope", "/v1.41/containers/x/nonsense", "/../../etc/passwd"):
        status, headers, body = get(api, path)
        assert status == 404, path
        assert headers["content-type"].startswith("application/json")
        assert json.loads(body) == {"message": "page not found"}


def test_garbage_requests_get_an_answer_and_the_server_lives(api: ApiServer) -> None:
    for junk in (b"\x00\xff" * 100 + b"\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                 b"GET /_ping HTTP/1.1\r\n" + b"X: " + b"a" * 100_000 + b"\r\n\r\n"):
        status, _, _ = raw_request(api, junk)
        assert 400 <= status < 500
    assert get(api, "/_ping")[0] == 200


def test_socket_is_root_only_and_removed_on_stop(api: ApiServer) -> None:
    st = api.socket.lstat()
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660 and (st.st_uid, st.st_gid) == (0, 0)
    assert api.stop() == 0
    assert not api.socket.exists()


def test_second_server_on_the_same_socket_is_refused(api: ApiServer) -> None:
    proc = subprocess.run([sys.executable, "-m", "ociimg", "--root", str(api.root), "serve",
                           "-H", api.url], env={**os.environ, "PYTHONPATH": REPO},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "another server is listening" in proc.stderr
    assert get(api, "/_ping")[0] == 200


def test_stale_socket_of_a_killed_server_is_replaced(api: ApiServer) -> None:
    api.stop(9)
    assert api.socket.exists()
    api.start()
    assert get(api, "/_ping")[0] == 200


def test_tcp_only_on_loopback_without_tls(ociroot: Path, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "ociimg", "--root", str(ociroot), "serve",
                           "-H", f"unix://{tmp_path}/s", "--tcp", "0.0.0.0:23750"],
                          env={**os.environ, "PYTHONPATH": REPO}, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "refusing to serve the API unauthenticated" in proc.stderr
    assert not (tmp_path / "s").exists()
