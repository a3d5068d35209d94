"""Hostile input to the image endpoints: names that climb or never end, garbage
X-Registry-Auth, load bodies that are bombs, traversals or 2 GB of zeros, a registry that
serves bad manifests and blobs. Each gets one clean error; nothing is stored or tagged,
nothing lands outside the store, and the server keeps answering."""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import io
import json
import socket
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.apiserver import ApiServer
from tests.integration.registry_server import free_port
from tests.treewalk import tree_manifest

pytestmark = pytest.mark.integration


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("docker", timeout=60)
        self._path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(60)
        self.sock.connect(self._path)


def call(server: ApiServer, method: str, path: str, body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = UnixConnection(server.socket)
    try:
        conn.request(method, path, body=body, headers=headers or {},
                     encode_chunked=body is not None and not isinstance(body, bytes))
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def message(body: bytes) -> str:
    return json.loads(body)["message"]


def alive(server: ApiServer) -> None:
    assert call(server, "GET", "/_ping") == (200, b"OK")
    assert "Traceback" not in server.server_log()


def stored_names(server: ApiServer) -> list[str]:
    index = server.root / "store" / "index.json"
    if not index.exists():
        return []
    return [m.get("annotations", {}).get("org.opencontainers.image.ref.name", "")
            for m in json.loads(index.read_text())["manifests"]]


def leftover_spools(server: ApiServer) -> list[str]:
    ingest = server.root / "store" / "ingest"
    return [p.name for p in ingest.iterdir()] if ingest.exists() else []


@pytest.fixture
def canary(tmp_path: Path) -> Iterator[Path]:
    """A directory beside the server's root that nothing may touch."""
    path = tmp_path / "canary"
    path.mkdir()
    (path / "keep").write_text("x")
    before = tree_manifest(path)
    yield path
    assert tree_manifest(path) == before


def test_names_that_climb_or_never_end(api: ApiServer, api_busybox: str, canary: Path) -> None:
    climbing = ["..%2F..%2F..%2Fetc%2Fpasswd", "../../etc/passwd", "busybox%2F..%2F..",
                "oci:%2Ftmp%2Fx", f"oci:{canary}", "sha256:..%2F..", "%00"]
    for name in climbing:
        for method, suffix in (("GET", "/json"), ("GET", "/history"), ("DELETE", ""),
                               ("GET", "/get")):
            status, body = call(api, method, f"/v1.41/images/{name}{suffix}")
            assert status in (400, 404), (name, method, suffix, status)
            assert json.loads(body)["message"]
    for method, path in (("GET", "/images/busybox/nonsense"), ("PUT", "/images/busybox"),
                         ("GET", "/v1.41/images/busybox/json/extra")):
        status, body = call(api, method, path)
        assert (status, message(body)) == (404, "page not found"), (method, path)
    long_name = "a" * 5000
    status, body = call(api, "GET", f"/images/{long_name}/json")
    assert status == 404 and message(body).startswith("No such image: aaa")
    status, body = call(api, "POST", f"/images/create?fromImage={long_name}&tag=latest")
    assert status == 400 and "invalid reference format" in message(body)
    status, body = call(api, "POST", "/images/busybox/tag?repo=../../x&tag=1")
    assert status == 400
    status, body = call(api, "POST", f"/images/busybox/tag?repo={long_name}&tag=1")
    assert status == 400
    status, _ = call(api, "POST", "/images/busybox/tag?repo=ok/name&tag=../1")
    assert status == 400
    assert sorted(stored_names(api)) == ["docker.io/library/busybox:latest"]
    alive(api)


@pytest.mark.parametrize("header", [
    "!!!not base64!!!", base64.urlsafe_b64encode(b"not json").decode(),
    base64.urlsafe_b64encode(b"[1, 2]").decode(), "A" * 8000,
    base64.urlsafe_b64encode(b'{"username": ' + b"[" * 2500 + b"]" * 2500 + b"}").decode(),
], ids=["not-base64", "not-json", "not-object", "long", "deep"])
def test_registry_auth_garbage_is_a_400(api: ApiServer, api_busybox: str, header: str) -> None:
    for path in ("/images/create?fromImage=127.0.0.1:1/x&tag=1",
                 "/images/127.0.0.1:1/x/push?tag=1"):
        status, body = call(api, "POST", path, headers={"X-Registry-Auth": header})
        assert status == 400, (path, status, body)
        assert "X-Registry-Auth" in message(body)
    alive(api)


def tar_bytes(members: dict[str, bytes], *, compress: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), 1) if compress else buf.getvalue()


def test_load_refuses_traversal_and_bombs(api: ApiServer, canary: Path) -> None:
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    escape = f"../../../../../../{canary}/escaped"
    bodies = {
        "traversal in members": tar_bytes({escape: b"x", "manifest.json": b"[]"}),
        "traversal in manifest.json": tar_bytes({
            "manifest.json": json.dumps([{"Config": f"../../../{canary}/keep",
                                          "RepoTags": ["evil:1"], "Layers": []}]).encode(),
            "c.json": config}),
        "absolute layer path": tar_bytes({
            "manifest.json": json.dumps([{"Config": "c.json", "RepoTags": ["evil:2"],
                                          "Layers": ["/etc/passwd"]}]).encode(),
            "c.json": config}),
        # 256 MiB of spaces as manifest.json, gzip-compressed to a few hundred KiB.
        "manifest bomb": _gzip_tar_of_spaces("manifest.json", 256 << 20),
        "not a tar": b"PK\x03\x04" + b"\x00" * 4096,
        "empty": b"\x00" * 4096,
    }
    for what, body in bodies.items():
        status, answer = call(api, "POST", "/images/load?quiet=1", body=body,
                              headers={"Content-Type": "application/x-tar"})
        assert 400 <= status < 600 and status != 200, what
        assert message(answer), what
    assert stored_names(api) == [] and leftover_spools(api) == []
    assert not (canary / "escaped").exists()
    alive(api)


def _gzip_tar_of_spaces(name: str, size: int) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=1) as gz:
        info = tarfile.TarInfo(name)
        info.size = size
        gz.write(info.tobuf())
        block = b" " * (1 << 20)
        for _ in range(size // len(block)):
            gz.write(block)
        gz.write(b"\x00" * 1024)
    return out.getvalue()


def test_load_of_2gb_of_zeros_stops_at_once(api: ApiServer) -> None:
    """Announced as 2 GiB, refused after its first MiB: the answer comes while the
    client has sent almost nothing (nothing more is read to disk)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(30)
        sock.connect(str(api.socket))
        sock.sendall(b"POST /v1.41/images/load HTTP/1.1\r\nHost: docker\r\n"
                     b"Content-Type: application/x-tar\r\n"
                     b"Content-Length: %d\r\n\r\n" % (2 << 30))
        sock.sendall(bytes(1 << 20))
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert message(body) == "load: the archive is empty"
    assert stored_names(api) == [] and leftover_spools(api) == []
    alive(api)


def test_load_is_bounded_on_disk(api: ApiServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCIIMG_API_LOAD_LIMIT", str(1 << 20))
    api.stop()
    api.start()
    body = tar_bytes({"big": bytes(4 << 20)})
    try:
        status, answer = call(api, "POST", "/images/load", body=body)
        assert status == 413 and "larger than 1048576 bytes" in message(answer)
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert stored_names(api) == [] and leftover_spools(api) == []
    alive(api)


# A registry that lies ------------------------------------------------------------------
@pytest.fixture
def liar() -> Iterator[Any]:
    from pytest_httpserver import HTTPServer

    server = HTTPServer(host="127.0.0.1", port=free_port())
    server.start()
    server.expect_request("/v2/").respond_with_data("{}", content_type="application/json")
    yield server
    server.clear()
    server.stop()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _manifest(config: bytes, layer: bytes) -> bytes:
    return json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": _digest(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": _digest(layer), "size": len(layer)}]}).encode()


def _serve_manifest(liar: Any, repo: str, raw: bytes, digest: str | None = None) -> None:
    headers = {"Docker-Content-Digest": digest or _digest(raw)}
    for method in ("HEAD", "GET"):
        liar.expect_request(f"/v2/{repo}/manifests/1", method=method).respond_with_data(
            raw if method == "GET" else b"", headers=headers,
            content_type="application/vnd.oci.image.manifest.v1+json")


def test_pull_of_bad_manifests_and_blobs(api: ApiServer, liar: Any) -> None:
    host = f"127.0.0.1:{liar.port}"
    _serve_manifest(liar, "bad/json", b"{not json")
    good_config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers",' \
                  b'"diff_ids":["' + _digest(b"layer").encode() + b'"]}}'
    raw = _manifest(good_config, b"layer")
    _serve_manifest(liar, "bad/digest", raw, digest=_digest(b"something else"))
    _serve_manifest(liar, "bad/blob", raw)
    for blob in (good_config, b"layer"):  # the right sizes, the wrong bytes
        liar.expect_request(f"/v2/bad/blob/blobs/{_digest(blob)}").respond_with_data(
            b"X" * len(blob))
    for repo in ("bad/json", "bad/digest"):
        result = api.docker("pull", f"{host}/{repo}:1", check=False)
        assert result.returncode == 1, repo
        assert result.stderr.startswith("Error response from daemon: "), repo
        assert result.stderr.count("\n") == 1, result.stderr  # one line, no traceback
    result = api.docker("pull", f"{host}/bad/blob:1", check=False)
    assert result.returncode == 1
    assert "verification failed" in result.stderr
    assert stored_names(api) == []
    assert api.docker("images", "-q").stdout.strip() == ""
    alive(api)


def test_save_of_a_corrupt_layer_never_looks_whole(api: ApiServer, api_busybox: str,
                                                   tmp_path: Path) -> None:
    """The layer is checked against its diff ID while streamed: when it fails after the
    200 went out, the connection is cut, and `docker save` fails instead of writing a tar
    that ends as if it were whole."""
    doc = json.loads(api.docker("inspect", "busybox").stdout)[0]
    manifest_digest = doc["RepoDigests"][0].split("@")[1]
    blobs = api.root / "store" / "blobs" / "sha256"
    manifest = json.loads((blobs / manifest_digest.removeprefix("sha256:")).read_bytes())
    layer = blobs / manifest["layers"][0]["digest"].removeprefix("sha256:")
    data = bytearray(layer.read_bytes())
    layer.chmod(0o644)
    data[len(data) // 2] ^= 0xFF
    layer.write_bytes(bytes(data))
    out = tmp_path / "saved.tar"
    result = api.docker("save", "-o", str(out), "busybox", check=False, timeout=30)
    assert result.returncode != 0
    assert not out.exists() or out.stat().st_size < 1024
    assert "images/get" in api.server_log()
    alive(api)


def test_stalled_pulls_do_not_starve_other_requests(api: ApiServer) -> None:
    """Eight pulls stuck on a registry that stops sending: each holds a thread of its
    own, not one of the few pool workers every other request needs, so `docker images`
    still answers; released, the pulls complete."""
    import threading

    from pytest_httpserver import HTTPServer
    from werkzeug import Request, Response

    from tests.waiting import wait_until

    registry = HTTPServer(host="127.0.0.1", port=free_port(), threaded=True)
    registry.start()
    release, entered, lock = threading.Event(), [0], threading.Lock()

    def stalled(layer: bytes) -> Any:
        def handler(_request: Request) -> Response:
            with lock:
                entered[0] += 1
            release.wait(60)
            return Response(layer)
        return handler

    try:
        registry.expect_request("/v2/").respond_with_data("{}")
        for i in range(8):  # distinct layers: one blob's download is shared, under a lock
            layer = tar_bytes({"hello": f"hi {i}\n".encode()})
            config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers",' \
                     b'"diff_ids":["' + _digest(layer).encode() + b'"]}}'
            _serve_manifest(registry, f"slow/r{i}", _manifest(config, layer))
            registry.expect_request(f"/v2/slow/r{i}/blobs/{_digest(config)}") \
                .respond_with_data(config)
            registry.expect_request(f"/v2/slow/r{i}/blobs/{_digest(layer)}") \
                .respond_with_handler(stalled(layer))
        results: list[tuple[int, bytes]] = []
        pulls = [threading.Thread(target=lambda i=i: results.append(call(
            api, "POST", f"/images/create?fromImage=127.0.0.1:{registry.port}/slow/r{i}"
                         "&tag=1"))) for i in range(8)]
        for t in pulls:
            t.start()
        wait_until(lambda: entered[0] >= 8, "all eight pulls waiting for their layer")
        assert api.docker("images", "-q", timeout=30).stdout.strip() == ""
        release.set()
        for t in pulls:
            t.join(60)
        assert sorted(status for status, _ in results) == [200] * 8
        assert all(b"Downloaded newer image" in body for _, body in results)
        assert len(api.docker("images", "-q").stdout.split()) == 8
    finally:
        release.set()
        registry.clear()
        registry.stop()
    alive(api)
