"""Hostile HTTP against `ociimg serve`: smuggling attempts, oversized heads, JSON nested
too deep in query parameters and headers. Each gets a 400 and the server goes on (the
`api` fixture fails the test if the server logged a traceback)."""

from __future__ import annotations

import base64
import socket

import pytest

from tests.integration.apiserver import ApiServer
from tests.integration.test_api_containers_hostile import request

pytestmark = pytest.mark.integration

DEEP = "%5B" * 2500  # "[" nested past the recursion limit, in a line aiohttp accepts


def exchange(api: ApiServer, raw: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(60)
        sock.connect(str(api.socket))
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def head(method: str, path: str, *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: docker", "Connection: close", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize("raw", [
    head("POST", f"/build?buildargs={DEEP}", "Content-Length: 0"),
    head("POST", f"/v1.41/build?labels={DEEP}", "Content-Length: 0"),
    head("POST", "/build", "X-Registry-Config: "
         + base64.urlsafe_b64encode(b"[" * 5000).decode(), "Content-Length: 0"),
    head("POST", "/containers/create", "Content-Length: 5", "Transfer-Encoding: chunked"),
    head("GET", "/_ping", "X-Big: " + "a" * 100_000),
    head("GET", "/containers/json?filters=" + "%7B%22a%22%3A" * 1500),
], ids=["buildargs", "labels", "registry-config", "cl-and-te", "huge-header", "huge-query"])
def test_hostile_requests_are_400(api: ApiServer, raw: bytes) -> None:
    answer = exchange(api, raw)
    assert answer.split(b"\r\n")[0].split()[1] == b"400", answer[:300]
    assert request(api, "GET", "/_ping")[0] == 200


def test_smuggled_request_after_a_body_is_its_own_request(api: ApiServer) -> None:
    """A second request hidden in what a Content-Length leaves over is parsed as the
    next request on the connection, never as part of the first one's body."""
    body = b'{"Name": "n1"}'
    smuggled = head("DELETE", "/networks/n1")
    raw = (f"POST /networks/create HTTP/1.1\r\nHost: docker\r\nContent-Type: "
           f"application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body + smuggled
    answer = exchange(api, raw)
    assert answer.count(b"HTTP/1.1 ") == 2, answer
    assert b"HTTP/1.1 201" in answer and b"HTTP/1.1 204" in answer, answer
