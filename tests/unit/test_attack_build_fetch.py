"""ADD URL must not hand the builder's ~/.netrc credentials to the URL's host (requests
does by default, and again at each redirect): the Containerfile chooses the URL, so an
internal server those credentials open would be fetched into the image."""

from __future__ import annotations

from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from ociimg.build.fetch import download


def test_netrc_credentials_are_never_sent(httpserver: HTTPServer, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login root password s3cret\n"
                     "machine localhost login root password s3cret2\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    seen: list[str | None] = []

    def handler(request: Request) -> Response:
        seen.append(request.headers.get("Authorization"))
        if request.path == "/r":
            return Response("", 302, {"Location": f"http://localhost:{httpserver.port}/f"})
        return Response("ok", 200)

    httpserver.expect_request("/f").respond_with_handler(handler)
    httpserver.expect_request("/r").respond_with_handler(handler)
    download(httpserver.url_for("/f"), tmp_path / "f")
    download(httpserver.url_for("/r"), tmp_path / "g")
    assert (tmp_path / "g").read_text() == "ok"
    assert seen == [None, None, None]
