"""transport: retries, Retry-After, redirects without Authorization, ~/.netrc, caps."""

from __future__ import annotations

import socket
from datetime import UTC, datetime

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Response

from ociimg.errors import InvalidDocument, RegistryError, RegistryUnreachable
from ociimg.registry.transport import (
    Transport,
    TransportOptions,
    backoff_delays,
    read_capped,
    retry_after_delay,
)
from ociimg.registry.urls import is_loopback, origin, proxies_for, scheme_for
from tests.tlsserver import self_signed, tls_server


class Sleeps(list):
    """Records the delays the transport asks for instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make(sleeps: Sleeps | None = None, **kw) -> Transport:
    sleep = Sleeps() if sleeps is None else sleeps
    return Transport(TransportOptions(backoff_base=0.01, **kw), sleep=sleep)


@pytest.fixture
def other_server():
    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


def received_auth(server: HTTPServer) -> list[str | None]:
    return [req.headers.get("Authorization") for req, _resp in server.log]


# Pure helpers ----------------------------------------------------------------
def test_backoff_delays_double_and_cap():
    gen = backoff_delays(0.5, cap=3.0)
    assert [next(gen) for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


@pytest.mark.parametrize("value, expected", [
    ("7", 7.0), ("0", 0.0), (None, None), ("", None), ("soon", None),
    ("Fri, 27 Nov 2026 10:00:30 GMT", 30.0),
    ("Fri, 27 Nov 2026 09:59:00 GMT", 0.0),  # in the past: retry now
])
def test_retry_after_seconds_and_http_date(value, expected):
    now = datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)
    assert retry_after_delay(value, now) == expected


@pytest.mark.parametrize("host, loop", [
    ("localhost", True), ("127.0.0.1:5000", True), ("[::1]:5000", True), ("127.1.2.3", True),
    ("registry.example.com", False), ("10.0.0.1:5000", False), ("localhost.evil.com", False),
])
def test_loopback_hosts_get_plain_http(host, loop):
    assert is_loopback(host) is loop
    assert scheme_for(host) == ("http" if loop else "https")
    assert scheme_for(host, insecure=True) == "http"


def test_origin_includes_default_port():
    assert origin("https://Example.com/v2/") == ("https", "example.com", 443)
    assert origin("http://example.com:80/x") == origin("http://example.com/y")
    assert origin("http://127.0.0.1:5000/") != origin("http://127.0.0.1:5001/")


def test_proxies_from_environment_explicitly():
    env = {"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "internal.example,.corp:443"}
    assert proxies_for("https://registry.example.com/v2/", env) == {"https": "http://proxy:3128"}
    assert proxies_for("https://internal.example/v2/", env) == {}
    assert proxies_for("https://a.b.corp/v2/", env) == {}
    assert proxies_for("http://plain.example/v2/", env) == {}  # no HTTP_PROXY set
    assert proxies_for("https://127.0.0.1:5000/v2/", env) == {}  # loopback never proxied
    assert proxies_for("https://x.example/", {"HTTPS_PROXY": "http://p", "NO_PROXY": "*"}) == {}


# Retries -----------------------------------------------------------------------
def test_500_then_success_is_retried(httpserver: HTTPServer):
    httpserver.expect_ordered_request("/v2/").respond_with_data("down", status=500)
    httpserver.expect_ordered_request("/v2/").respond_with_data("{}", status=200)
    sleeps = Sleeps()
    resp = make(sleeps).request("GET", httpserver.url_for("/v2/"))
    assert resp.status_code == 200
    assert len(httpserver.log) == 2 and len(sleeps) == 1


def test_429_honours_retry_after_capped(httpserver: HTTPServer):
    httpserver.expect_ordered_request("/v2/").respond_with_data(
        "slow down", status=429, headers={"Retry-After": "3"})
    httpserver.expect_ordered_request("/v2/").respond_with_data(
        "slow down", status=429, headers={"Retry-After": "9999"})
    httpserver.expect_ordered_request("/v2/").respond_with_data("ok")
    sleeps = Sleeps()
    resp = make(sleeps, retry_after_cap=60).request("GET", httpserver.url_for("/v2/"))
    assert resp.status_code == 200
    assert sleeps == [3.0, 60.0]


def test_retries_are_bounded(httpserver: HTTPServer):
    httpserver.expect_request("/v2/").respond_with_data("down", status=503)
    sleeps = Sleeps()
    resp = make(sleeps, retries=2).request("GET", httpserver.url_for("/v2/"))
    assert resp.status_code == 503
    assert len(httpserver.log) == 3 and len(sleeps) == 2


def test_body_that_cannot_be_replayed_is_not_retried(httpserver: HTTPServer):
    httpserver.expect_request("/upload", method="PUT").respond_with_data("down", status=500)
    resp = make().request("PUT", httpserver.url_for("/upload"), body=iter([b"once"]))
    assert resp.status_code == 500
    assert len(httpserver.log) == 1


def test_body_factory_is_replayed(httpserver: HTTPServer):
    httpserver.expect_ordered_request("/upload", method="PUT").respond_with_data("", status=502)
    httpserver.expect_ordered_request("/upload", method="PUT", data=b"payload") \
        .respond_with_data("", status=201)
    resp = make().request("PUT", httpserver.url_for("/upload"), body=lambda: b"payload")
    assert resp.status_code == 201
    assert [req.data for req, _ in httpserver.log] == [b"payload", b"payload"]


def test_connection_refused_names_host():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: refused
        with pytest.raises(RegistryUnreachable, match=rf"127\.0\.0\.1:{port}.*connection"):
            make(retries=1).request("GET", f"http://127.0.0.1:{port}/v2/")


# Redirects ---------------------------------------------------------------------
def test_redirect_to_other_host_drops_authorization(httpserver: HTTPServer, other_server):
    other_server.expect_request("/blob").respond_with_data("content")
    httpserver.expect_request("/v2/r/blobs/x").respond_with_data(
        "", status=307, headers={"Location": other_server.url_for("/blob?sig=1")})
    resp = make().request("GET", httpserver.url_for("/v2/r/blobs/x"),
                          headers={"Authorization": "Bearer secret"})
    assert resp.content == b"content"
    assert received_auth(httpserver) == ["Bearer secret"]
    assert received_auth(other_server) == [None]


def test_redirect_same_origin_keeps_authorization(httpserver: HTTPServer):
    httpserver.expect_request("/v2/a").respond_with_data("", status=302,
                                                         headers={"Location": "/v2/b"})
    httpserver.expect_request("/v2/b").respond_with_data("ok")
    resp = make().request("GET", httpserver.url_for("/v2/a"),
                          headers={"Authorization": "Bearer t"})
    assert resp.text == "ok"
    assert received_auth(httpserver) == ["Bearer t", "Bearer t"]


def test_localhost_is_another_host_than_127(httpserver: HTTPServer):
    target = f"http://127.0.0.1:{httpserver.port}/final"
    assert httpserver.url_for("/").startswith("http://localhost:")
    httpserver.expect_request("/start").respond_with_data("", status=307,
                                                          headers={"Location": target})
    httpserver.expect_request("/final").respond_with_data("ok")
    make().request("GET", httpserver.url_for("/start"), headers={"Authorization": "Basic x"})
    assert received_auth(httpserver) == ["Basic x", None]


def test_netrc_is_never_applied(httpserver: HTTPServer, other_server, tmp_path, monkeypatch):
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine 127.0.0.1 login user password hunter2\n"
                     "machine localhost login user password hunter2\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(netrc))
    other_server.expect_request("/blob").respond_with_data("content")
    httpserver.expect_request("/v2/x").respond_with_data(
        "", status=307, headers={"Location": other_server.url_for("/blob")})
    resp = make().request("GET", httpserver.url_for("/v2/x"),
                          headers={"Authorization": "Bearer registry-token"})
    assert resp.content == b"content"
    assert received_auth(other_server) == [None]
    make().request("GET", other_server.url_for("/blob"))
    assert received_auth(other_server) == [None, None]


def test_redirect_loop_is_bounded(httpserver: HTTPServer):
    httpserver.expect_request("/loop").respond_with_data("", status=302,
                                                         headers={"Location": "/loop"})
    with pytest.raises(RegistryUnreachable, match="more than 3 redirects"):
        make(max_redirects=3).request("GET", httpserver.url_for("/loop"))


def test_redirect_to_non_http_scheme_refused(httpserver: HTTPServer):
    httpserver.expect_request("/x").respond_with_data("", status=302,
                                                      headers={"Location": "file:///etc/passwd"})
    with pytest.raises(RegistryError, match="unsupported URL"):
        make().request("GET", httpserver.url_for("/x"))


def test_303_after_post_becomes_get_without_body(httpserver: HTTPServer):
    httpserver.expect_request("/post", method="POST").respond_with_data(
        "", status=303, headers={"Location": "/after"})
    httpserver.expect_request("/after", method="GET").respond_with_data("ok")
    resp = make().request("POST", httpserver.url_for("/post"), body=b"data")
    assert resp.text == "ok"
    assert httpserver.log[1][0].data == b""


# Size caps -----------------------------------------------------------------------
def test_declared_length_over_cap_refused(httpserver: HTTPServer):
    httpserver.expect_request("/big").respond_with_data(b"x" * 2000)
    resp = make().request("GET", httpserver.url_for("/big"), stream=True)
    with pytest.raises(InvalidDocument, match="exceeds the 1000-byte limit"):
        read_capped(resp, 1000, "manifest")


def test_undeclared_length_over_cap_refused(httpserver: HTTPServer):
    def endless(_request):
        return Response((b"y" * 4096 for _ in range(1000)), direct_passthrough=True)

    httpserver.expect_request("/stream").respond_with_handler(endless)
    resp = make().request("GET", httpserver.url_for("/stream"), stream=True)
    with pytest.raises(InvalidDocument, match="exceeds the 10000-byte limit"):
        read_capped(resp, 10000, "token response")


def test_body_under_cap_read_whole(httpserver: HTTPServer):
    httpserver.expect_request("/ok").respond_with_data(b"z" * 1000)
    resp = make().request("GET", httpserver.url_for("/ok"), stream=True)
    assert read_capped(resp, 1000, "doc") == b"z" * 1000


# TLS with a custom CA bundle -------------------------------------------------------
def test_ca_bundle_enables_tls_and_is_verified(tmp_path):
    cert, key = self_signed(tmp_path, "registry")
    other, _ = self_signed(tmp_path, "stranger")
    server = tls_server(cert, key)
    try:
        server.expect_request("/v2/").respond_with_json({})
        host = f"127.0.0.1:{server.port}"
        good = make(ca_bundle=cert)
        assert good.base_url(host) == f"https://{host}"
        assert good.request("GET", f"{good.base_url(host)}/v2/").status_code == 200
        with pytest.raises(RegistryUnreachable, match="TLS error"):
            make(ca_bundle=other, retries=0).request("GET", f"https://{host}/v2/")
    finally:
        server.stop()


def test_insecure_uses_unverified_tls_when_offered_else_http(tmp_path, httpserver: HTTPServer):
    cert, key = self_signed(tmp_path, "selfsigned")
    tls = tls_server(cert, key)
    try:
        tls.expect_request("/v2/").respond_with_json({})
        t = make(insecure=True)
        tls_host = f"127.0.0.1:{tls.port}"
        assert t.base_url(tls_host) == f"https://{tls_host}"
        assert t.request("GET", f"{t.base_url(tls_host)}/v2/").status_code == 200
        plain_host = f"127.0.0.1:{httpserver.port}"
        assert t.base_url(plain_host) == f"http://{plain_host}"
        with pytest.raises(RegistryUnreachable, match="TLS error"):
            make(retries=0).request("GET", f"https://{tls_host}/v2/")  # verified by default
    finally:
        tls.stop()


def test_http_proxy_from_environment_with_credentials(httpserver: HTTPServer, monkeypatch):
    """The proxy gets the absolute URL and its own Proxy-Authorization (not the user's)."""
    httpserver.expect_request("/v2/").respond_with_data("via proxy")
    monkeypatch.setenv("HTTP_PROXY", f"http://user:pw@127.0.0.1:{httpserver.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    resp = make().request("GET", "http://registry.example:5000/v2/")
    assert (resp.status_code, resp.content) == (200, b"via proxy")
    (req, _), = httpserver.log
    assert req.url == "http://registry.example:5000/v2/"
    assert req.headers.get("Proxy-Authorization") == "Basic dXNlcjpwdw=="  # user:pw


def test_unread_body_is_not_taken_for_the_next_response(httpserver: HTTPServer):
    """Closing a response whose body was not read must not leave its bytes on a pooled
    connection, where the next request would read them as its answer."""
    httpserver.expect_request("/big").respond_with_data(b"x" * (1 << 20))
    httpserver.expect_request("/small").respond_with_data(b"second")
    t = make()
    resp = t.request("GET", httpserver.url_for("/big"), stream=True)
    assert next(resp.iter_content(10)) == b"x" * 10
    resp.close()
    assert t.request("GET", httpserver.url_for("/small")).content == b"second"


def test_insecure_transport_talks_plain_http(httpserver: HTTPServer):
    httpserver.expect_request("/v2/").respond_with_data("plain")
    t = make(insecure=True)
    host = f"127.0.0.1:{httpserver.port}"
    assert t.request("GET", f"{t.base_url(host)}/v2/").content == b"plain"
