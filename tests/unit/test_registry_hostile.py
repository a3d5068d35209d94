"""A hostile registry or token service (issue 8, items 13, 14, 19): credentials and
bodies never follow a redirect to another origin, slow or huge answers are cut off,
malformed URLs, tokens and JSON are one-line errors. Real servers on 127.0.0.1; the
"other origin" server records everything it receives."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from ociimg.errors import InvalidDocument, ManifestUnknown, RegistryError, RegistryUnreachable
from ociimg.registry.auth import Authenticator, Credentials, check_realm, login, token_lifetime
from ociimg.registry.budget import Budget, Limits
from ociimg.registry.client import ClientOptions, RegistryClient
from ociimg.registry.transport import Transport, TransportOptions
from tests.tlsserver import self_signed, tls_server

SECRET = "refresh-SECRET-7f3a"
PASSWORD = "hunter2-PASSWORD"
FAST = Limits(speed_limit=1000, speed_time=0.5, deadline_base=1.5)


def make(**kw) -> Transport:
    kw.setdefault("retries", 0)
    return Transport(TransportOptions(backoff_base=0.0, **kw), sleep=lambda s: None)


@pytest.fixture
def other():
    """Another origin (another port): it must never see a credential or a body."""
    server = HTTPServer(host="127.0.0.1", port=0)
    server.expect_request("/steal").respond_with_json({"token": "stolen"})
    server.start()
    yield server
    server.clear()
    server.stop()


def everything_received(server: HTTPServer) -> str:
    """All the bytes a server was sent that could carry a secret: headers, query, body."""
    return "\n".join(f"{req.method} {req.full_path}\n{req.headers}\n{req.get_data(as_text=True)}"
                     for req, _resp in server.log)


# Item 13: credential leak on token redirect -----------------------------------------
def challenge(server: HTTPServer, realm: str) -> None:
    server.expect_request("/v2/lib/app/manifests/v1").respond_with_data(
        "", status=401, headers={"WWW-Authenticate": f'Bearer realm="{realm}",service="svc"'})


def base(server: HTTPServer) -> str:
    return f"http://{server.host}:{server.port}"


def client(server_url: str, creds: Credentials, **kw) -> RegistryClient:
    t = make(**kw)
    host = server_url.split("://", 1)[1].rstrip("/")
    return RegistryClient(host, t, Authenticator(server_url, t, creds),
                          ClientOptions(retries=0, backoff_base=0.0))


def test_refresh_token_post_is_not_resent_to_another_origin(httpserver: HTTPServer, other):
    challenge(httpserver, httpserver.url_for("/token"))
    httpserver.expect_request("/token", method="POST").respond_with_data(
        "", status=307, headers={"Location": other.url_for("/steal")})
    creds = Credentials("<token>", "", identity_token=SECRET)
    with pytest.raises(RegistryError, match="refusing to send the request body"):
        client(base(httpserver), creds).get_manifest("lib/app", "v1")
    posted = [req for req, _ in httpserver.log if req.method == "POST"]
    assert SECRET in posted[0].get_data(as_text=True)  # the realm itself did get it
    assert other.log == []


def test_https_realm_redirecting_to_plain_http_carries_nothing(tmp_path, other):
    cert, key = self_signed(tmp_path, "registry")
    tls = tls_server(cert, key)
    try:
        challenge(tls, tls.url_for("/token"))
        # GET with Basic credentials: 307 to plain http on another port.
        tls.expect_request("/token", method="GET").respond_with_data(
            "", status=307, headers={"Location": other.url_for("/steal")})
        tls.expect_request("/token", method="POST").respond_with_data(
            "", status=308, headers={"Location": other.url_for("/steal")})
        base = f"https://127.0.0.1:{tls.port}"
        basic = client(base, Credentials("user", PASSWORD), ca_bundle=cert)
        with pytest.raises(RegistryError):  # "stolen" token is then refused by the registry
            basic.get_manifest("lib/app", "v1")
        refresh = client(base, Credentials("<token>", "", identity_token=SECRET), ca_bundle=cert)
        with pytest.raises(RegistryError, match="refusing to send the request body"):
            refresh.get_manifest("lib/app", "v1")
    finally:
        tls.stop()
    seen = everything_received(other)
    assert other.log and {req.method for req, _ in other.log} == {"GET"}  # redirected GETs
    assert "Authorization" not in seen and PASSWORD not in seen and SECRET not in seen
    assert "dXNlcj" not in seen  # base64 of "user:"


def test_blob_redirect_to_storage_keeps_range_drops_everything_else(httpserver, other):
    other.expect_request("/blob").respond_with_data("content")
    httpserver.expect_request("/v2/r/blobs/x").respond_with_data(
        "", status=307, headers={"Location": other.url_for("/blob?sig=1")})
    make().request("GET", httpserver.url_for("/v2/r/blobs/x"),
                   headers={"Authorization": "Bearer tok", "Cookie": "session=1",
                            "X-Registry-Auth": "xyz", "Range": "bytes=3-"}).close()
    (req, _), = other.log
    assert req.headers.get("Range") == "bytes=3-"
    for name in ("Authorization", "Cookie", "X-Registry-Auth"):
        assert name not in req.headers


def test_upload_with_body_is_not_redirected_to_another_origin(httpserver, other):
    httpserver.expect_request("/upload", method="PUT").respond_with_data(
        "", status=307, headers={"Location": other.url_for("/steal")})
    with pytest.raises(RegistryError, match="refusing to send the request body"):
        make().request("PUT", httpserver.url_for("/upload"), body=lambda: b"layer bytes")
    assert other.log == []


def test_upload_location_downgrading_to_http_is_refused(tmp_path, other):
    cert, key = self_signed(tmp_path, "registry")
    tls = tls_server(cert, key)
    try:
        tls.expect_request("/v2/lib/app/blobs/uploads/", method="POST").respond_with_data(
            "", status=202, headers={"Location": other.url_for("/upload")})
        c = client(f"https://127.0.0.1:{tls.port}", Credentials("user", PASSWORD),
                   ca_bundle=cert)
        from ociimg import spec
        from ociimg.digest import Digest
        desc = spec.Descriptor("application/octet-stream", Digest.of(b"x"), 1)
        with pytest.raises(RegistryError, match="refusing to downgrade"):
            c.upload_blob("lib/app", desc, lambda: __import__("io").BytesIO(b"x"))
    finally:
        tls.stop()
    assert other.log == []


@pytest.mark.parametrize("realm, registry_url", [
    ("http://registry.example.com/token", "https://registry.example.com"),
    ("http://registry.example.com:443/token", "https://registry.example.com"),
])
def test_plain_http_realm_for_an_https_registry_is_refused(realm, registry_url):
    with pytest.raises(RegistryError, match="plain http"):
        check_realm(realm, registry_url)


# Item 14: unbounded reads and trickling servers ----------------------------------------
class RawServer:
    """A threaded TCP server speaking whatever ``serve(conn)`` writes: for answers a
    real HTTP server library would never send (trickled headers and bodies)."""

    def __init__(self, serve: Callable[[socket.socket], None]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.serve = serve
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                conn.recv(65536)  # the request (small: a GET)
                self.serve(conn)
            except OSError:
                pass  # the client hung up: what we want

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        self.thread.join(5)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def trickle(prefix: bytes, body: bytes, interval: float, stop: threading.Event
            ) -> Callable[[socket.socket], None]:
    def serve(conn: socket.socket) -> None:
        conn.sendall(prefix)
        for i in range(len(body)):
            if stop.is_set():
                return
            conn.sendall(body[i:i + 1])
            time.sleep(interval)
    return serve


@pytest.fixture
def raw_server() -> Iterator[Callable[[Callable[[socket.socket], None]], RawServer]]:
    servers: list[RawServer] = []

    def start(serve: Callable[[socket.socket], None]) -> RawServer:
        servers.append(RawServer(serve))
        return servers[-1]
    yield start
    for s in servers:
        s.close()


@pytest.fixture
def fast_limits(monkeypatch) -> None:
    """Small limits through the environment, as a user would set them."""
    monkeypatch.setenv("OCIIMG_SPEED_LIMIT", str(FAST.speed_limit))
    monkeypatch.setenv("OCIIMG_SPEED_TIME", str(FAST.speed_time))
    monkeypatch.setenv("OCIIMG_DEADLINE", str(FAST.deadline_base))


def test_trickled_body_is_cut_by_the_speed_limit(raw_server, fast_limits):
    stop = threading.Event()
    body = b"x" * 200  # 10 bytes/s for 20 s: far below 1000 bytes/s
    server = raw_server(trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 200\r\n\r\n", body,
                                0.1, stop))
    start = time.monotonic()
    resp = make().request("GET", server.url("/v2/lib/app/manifests/v1"), stream=True)
    with pytest.raises(RegistryUnreachable, match="too slow: transfer below 1000 bytes/s"):
        resp.content  # noqa: B018
    stop.set()
    assert time.monotonic() - start < 5


def test_trickled_headers_are_cut_by_the_deadline(raw_server, fast_limits):
    stop = threading.Event()
    server = raw_server(trickle(b"", b"HTTP/1.1 200 OK\r\n" + b"X-Slow: a\r\n" * 50,
                                0.05, stop))
    start = time.monotonic()
    with pytest.raises(RegistryUnreachable, match="no response headers within 1.5s"):
        make().request("GET", server.url("/v2/"))
    stop.set()
    assert time.monotonic() - start < 5


def test_a_transfer_cut_for_slowness_is_not_retried(raw_server, fast_limits):
    # Retries are for failures that end fast; one that waited out the deadline would make
    # a silent registry take (retries + 1) deadlines.
    stop = threading.Event()
    connections = []

    def silent(conn: socket.socket) -> None:
        connections.append(conn)
        stop.wait(10)
    server = raw_server(silent)
    start = time.monotonic()
    with pytest.raises(RegistryUnreachable, match="no response headers within 1.5s"):
        make(retries=3).request("GET", server.url("/v2/"))
    stop.set()
    assert len(connections) == 1 and time.monotonic() - start < 4


def test_slow_reader_upload_is_cut_by_the_speed_limit(raw_server, fast_limits):
    def slow_reader(conn: socket.socket) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        for _ in range(200):
            conn.recv(16)
            time.sleep(0.05)
    server = raw_server(slow_reader)
    start = time.monotonic()
    with pytest.raises(RegistryUnreachable, match="too slow"):
        make().request("PUT", server.url("/upload"), body=b"y" * (32 << 20))
    assert time.monotonic() - start < 8


def test_trickled_tls_handshake_is_cut_by_the_deadline(raw_server, fast_limits, tmp_path):
    """The handshake runs in the ssl module on the bare socket: a server that starts a
    16 KiB TLS record and sends it a byte at a time is cut off by a watchdog."""
    stop = threading.Event()
    record = b"\x16\x03\x03\x40\x00"  # handshake record, 16 KiB announced
    server = raw_server(trickle(b"", record + b"\x02" * 400, 0.05, stop))
    cert, _key = self_signed(tmp_path, "registry")
    start = time.monotonic()
    with pytest.raises(RegistryUnreachable, match="too slow: no TLS handshake within"):
        make(ca_bundle=cert).request("GET", f"https://127.0.0.1:{server.port}/v2/")
    stop.set()
    assert time.monotonic() - start < 5


def test_deadline_scales_with_the_expected_size():
    clock = [100.0]
    budget = Budget(Limits(speed_limit=1000, speed_time=30, deadline_base=10), 50_000,
                    clock=lambda: clock[0])
    assert budget.deadline == pytest.approx(100 + 10 + 50)
    assert Budget(Limits(speed_limit=0), 1 << 40).deadline is None  # limits off
    off = Budget(Limits(speed_limit=0, deadline_base=0), 0, clock=lambda: clock[0])
    clock[0] += 1e6
    off.check()  # nothing to exceed
    assert off.wait(60.0) == (60.0, False)  # only the socket's own read timeout


def test_limits_from_environment_are_checked():
    assert Limits.from_env({"OCIIMG_SPEED_LIMIT": "10", "OCIIMG_SPEED_TIME": "2"}) == \
        Limits(10, 2.0, Limits().deadline_base)
    for bad in ("abc", "-1", "nan", "inf"):
        with pytest.raises(RegistryError, match="OCIIMG_SPEED_TIME"):
            Limits.from_env({"OCIIMG_SPEED_TIME": bad})


def test_login_does_not_buffer_a_huge_v2_body(httpserver: HTTPServer, tmp_path):
    sent = [0]

    def huge(_request: Request) -> Response:
        def body() -> Iterator[bytes]:
            for _ in range(256):  # 256 MiB, unsized
                sent[0] += 1 << 20
                yield b"\0" * (1 << 20)
        return Response(body(), 200, direct_passthrough=True)

    httpserver.expect_request("/v2/").respond_with_handler(huge)
    host = f"127.0.0.1:{httpserver.port}"
    login(host, "user", PASSWORD, tmp_path / "auth.json")
    assert sent[0] < 64 << 20  # the connection was dropped after the headers


def test_buffered_response_is_capped(httpserver: HTTPServer):
    httpserver.expect_request("/big").respond_with_data(b"z" * (2 << 20))
    with pytest.raises(InvalidDocument, match="exceeds the 1048576-byte limit"):
        make().request("GET", httpserver.url_for("/big"))


# Item 19: tracebacks from hostile URLs, tokens and JSON ----------------------------------
BAD_LOCATIONS = ["http://[::1/x", "http://host:99999/", "http://host:-1/", "http://[zz::1]:80/",
                 "https://:80/"]


def answer(status: str, location: str) -> Callable[[socket.socket], None]:
    """werkzeug refuses to send such a Location: a raw answer carries it."""
    def serve(conn: socket.socket) -> None:
        conn.sendall(f"HTTP/1.1 {status}\r\nLocation: {location}\r\nContent-Length: 0\r\n"
                     "Connection: close\r\n\r\n".encode())
    return serve


@pytest.mark.parametrize("location", BAD_LOCATIONS)
def test_bad_redirect_location_is_a_one_line_error(raw_server, location):
    server = raw_server(answer("302 Found", location))
    with pytest.raises(RegistryError, match="redirect"):
        make().request("GET", server.url("/v2/"))


@pytest.mark.parametrize("realm", ["http://[::1/token", "https://auth:99999/token",
                                   "https://auth:-1/token"])
def test_bad_realm_is_a_one_line_error(httpserver: HTTPServer, realm):
    challenge(httpserver, realm)
    with pytest.raises(RegistryError, match="token realm"):
        client(base(httpserver), Credentials("u", "p")).get_manifest(
            "lib/app", "v1")


@pytest.mark.parametrize("location", BAD_LOCATIONS)
def test_bad_upload_location_is_a_one_line_error(raw_server, location):
    server = raw_server(answer("202 Accepted", location))
    from ociimg import spec
    from ociimg.digest import Digest
    desc = spec.Descriptor("application/octet-stream", Digest.of(b"x"), 1)
    c = client(f"http://127.0.0.1:{server.port}", Credentials("u", "p"))
    with pytest.raises(RegistryError, match="upload Location"):
        c.upload_blob("lib/app", desc, lambda: __import__("io").BytesIO(b"x"))


@pytest.mark.parametrize("expires", ["1" + "0" * 400, "-5", "1.5", '"100"', "true", "NaN",
                                     "Infinity", "1e999", "[]"])
def test_token_expires_in_is_data(httpserver: HTTPServer, expires):
    httpserver.expect_request("/token").respond_with_data(
        f'{{"token": "t0k", "expires_in": {expires}}}', content_type="application/json")
    httpserver.expect_request("/v2/lib/app/manifests/v1",
                              headers={"Authorization": "Bearer t0k"}).respond_with_data(
        "{}", status=404)
    challenge(httpserver, httpserver.url_for("/token"))
    with pytest.raises(ManifestUnknown, match="not found"):  # the token was accepted
        client(base(httpserver), Credentials("u", "p")).get_manifest(
            "lib/app", "v1")
    assert 50 <= token_lifetime(json.loads(expires)) <= 24 * 3600


DEEP = b"[" * 100_000 + b"]" * 100_000


def test_deeply_nested_token_response_is_one_line(httpserver: HTTPServer):
    httpserver.expect_request("/token").respond_with_data(DEEP)
    challenge(httpserver, httpserver.url_for("/token"))
    with pytest.raises(RegistryError, match="nested too deeply"):
        client(base(httpserver), Credentials("u", "p")).get_manifest(
            "lib/app", "v1")


def test_deeply_nested_error_body_is_one_line(httpserver: HTTPServer):
    httpserver.expect_request("/v2/lib/app/manifests/v1").respond_with_data(
        DEEP, status=400, content_type="application/json")
    with pytest.raises(RegistryError, match="HTTP 400"):
        client(base(httpserver), None).get_manifest("lib/app", "v1")


def test_deeply_nested_auth_file_is_one_line(tmp_path):
    from ociimg.registry.auth import find_credentials
    path = tmp_path / "auth.json"
    path.write_bytes(b'{"auths": ' + DEEP + b"}")
    with pytest.raises(InvalidDocument, match="nested too deeply"):
        find_credentials("example.com", auth_file=path)


def test_form_body_carries_refresh_token_only_to_the_realm(httpserver: HTTPServer):
    """Sanity for the test above: the POST really carries the secret (so the refusal
    is what keeps it from the other origin)."""
    httpserver.expect_request("/token", method="POST").respond_with_json({"token": "ok"})
    httpserver.expect_request("/v2/lib/app/manifests/v1",
                              headers={"Authorization": "Bearer ok"}).respond_with_data(
        "", status=404)
    challenge(httpserver, httpserver.url_for("/token"))
    with pytest.raises(ManifestUnknown):
        client(base(httpserver),
               Credentials("<token>", "", identity_token=SECRET)).get_manifest("lib/app", "v1")
    form = parse_qs(next(req for req, _ in httpserver.log if req.method == "POST")
                    .get_data(as_text=True))
    assert form["refresh_token"] == [SECRET]


@pytest.mark.parametrize("text", ["host:99999/x", "host:0/x", "[::1/x", "[:::::]:5/x",
                                  "docker://[::1]:99999/x", "h:" + "9" * 5000 + "/x",
                                  "oci:/tmp/a\0b:x"])
def test_bad_registry_host_in_reference_is_one_line(text):
    from ociimg.errors import InvalidReference
    from ociimg.reference import parse_image_name
    with pytest.raises(InvalidReference):
        parse_image_name(text)
