"""client + pull/push orchestration against a fake registry with injected faults.

The fake (pytest-httpserver on loopback) serves real bytes; faults are queued per
request: truncated bodies, ignored Range, wrong Content-Range, wrong digests,
redirects, 5xx. Every test checks the store ends up verified — or untouched.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from ociimg import spec
from ociimg.digest import Digest
from ociimg.errors import (
    DigestMismatch,
    InvalidDocument,
    InvalidReference,
    ManifestUnknown,
    NoMatchingPlatform,
    RegistryUnreachable,
    Unauthorized,
)
from ociimg.reference import parse_reference
from ociimg.registry.auth import Authenticator, Credentials
from ociimg.registry.client import ClientOptions, RegistryClient, add_query
from ociimg.registry.pull import PullOptions, pull
from ociimg.registry.push import PushOptions, push
from ociimg.registry.transport import Transport, TransportOptions
from ociimg.store import Store

MiB = 1 << 20
Fault = Callable[[Request, bytes], Response]


class FakeRegistry:
    """Just enough distribution-spec: manifests by tag/digest, blobs with Range, uploads."""

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.host = f"127.0.0.1:{server.port}"
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, tuple[bytes, str]] = {}
        self.blob_faults: list[Fault] = []
        self.manifest_headers: dict[str, str] = {}
        self.uploads: dict[str, bytearray] = {}
        self.patch_faults: list[str] = []
        self.referrers: dict | None = None  # None: the registry lacks the referrers API
        server.expect_request(re.compile("/v2/.*")).respond_with_handler(self.handle)

    # Content ---------------------------------------------------------------------
    def add_blob(self, data: bytes, media_type: str = spec.OCI_LAYER) -> spec.Descriptor:
        digest = Digest.of(data)
        self.blobs[str(digest)] = data
        return spec.Descriptor(media_type, digest, len(data))

    def add_manifest(self, doc: dict, media_type: str, *tags: str) -> spec.Descriptor:
        raw = json.dumps(doc).encode()
        digest = Digest.of(raw)
        for ref in (str(digest), *tags):
            self.manifests[ref] = (raw, media_type)
        return spec.Descriptor(media_type, digest, len(raw))

    def add_image(self, tag: str | None = None, layers: list[bytes] | None = None,
                  arch: str = "amd64") -> spec.Descriptor:
        layer_descs = [self.add_blob(b) for b in (layers or [os.urandom(1000)])]
        config = self.add_blob(json.dumps({
            "architecture": arch, "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [str(d.digest) for d in layer_descs]},
        }).encode(), spec.OCI_CONFIG)
        doc = {"schemaVersion": 2, "mediaType": spec.OCI_MANIFEST, "config": config.to_json(),
               "layers": [d.to_json() for d in layer_descs]}
        return self.add_manifest(doc, spec.OCI_MANIFEST, *([tag] if tag else []))

    def blob_requests(self) -> list[Request]:
        return [r for r, _ in self.server.log if "/blobs/sha256:" in r.path]

    # Handler -----------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        m = re.fullmatch(r"/v2/(.+)/(manifests|blobs)/(.+)", request.path)
        if "/referrers/" in request.path:
            if self.referrers is None:
                return Response('{"errors":[{"code":"NOT_FOUND"}]}', 404)
            return Response(json.dumps(self.referrers), 200, content_type=spec.OCI_INDEX)
        if "/blobs/uploads/" in request.path:
            return self.handle_upload(request)
        if not m:
            return Response("{}", 200)
        if m.group(2) == "manifests":
            return self.handle_manifest(request, m.group(3))
        data = self.blobs.get(m.group(3))
        if data is None:
            return Response('{"errors":[{"code":"BLOB_UNKNOWN"}]}', 404)
        if self.blob_faults:
            return self.blob_faults.pop(0)(request, data)
        return serve_range(request, data)

    def handle_manifest(self, request: Request, ref: str) -> Response:
        if request.method == "PUT":
            digest = Digest.of(request.get_data())
            self.manifests[ref] = self.manifests[str(digest)] = (
                request.get_data(), request.headers["Content-Type"])
            return Response("", 201, {"Docker-Content-Digest": str(digest)})
        if ref not in self.manifests:
            body = '{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}'
            return Response(body, 404, content_type="application/json")
        raw, media_type = self.manifests[ref]
        headers = {"Docker-Content-Digest": str(Digest.of(raw)), **self.manifest_headers}
        return Response(b"" if request.method == "HEAD" else raw, 200, headers,
                        content_type=media_type)

    def handle_upload(self, request: Request) -> Response:
        if request.method == "POST":
            session = f"s{len(self.uploads)}"
            self.uploads[session] = bytearray()
            return Response("", 202, {"Location": f"uploads/{session}?_state=opaque",
                                      "OCI-Chunk-Min-Length": str(MiB + MiB // 2)})
        session = request.path.rsplit("/", 1)[1]
        location = f"/v2/lib/app/blobs/uploads/{session}?_state=next"
        if request.method == "GET":  # upload status
            return Response("", 204, {"Location": location,
                                      "Range": f"0-{len(self.uploads[session]) - 1}"})
        if request.method == "PATCH":
            start = int(request.headers["Content-Range"].split("-")[0])
            fault = self.patch_faults.pop(0) if self.patch_faults else None
            if start != len(self.uploads[session]) or fault == "416":
                return Response("", 416)
            if fault != "drop":  # "drop": accept the request but keep nothing (ECR)
                self.uploads[session] += request.get_data()
            end = len(self.uploads[session]) - 1
            # ECR answers 201 to PATCH (aws/containers-roadmap#2831); a client must cope.
            return Response("", 201, {"Location": location, "Range": f"0-{end}"})
        self.uploads[session] += request.get_data()
        data = bytes(self.uploads[session])
        if str(Digest.of(data)) != request.args.get("digest"):
            return Response('{"errors":[{"code":"DIGEST_INVALID"}]}', 400)
        self.blobs[request.args["digest"]] = data
        return Response("", 201)


def serve_range(request: Request, data: bytes) -> Response:
    m = re.fullmatch(r"bytes=(\d+)-", request.headers.get("Range", ""))
    if not m:
        return Response(data, 200)
    start = int(m.group(1))
    return Response(data[start:], 206,
                    {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"})


def truncated(keep: int) -> Fault:
    """Promise the whole body, send ``keep`` bytes of it, close the connection."""
    def fault(request: Request, data: bytes) -> Response:
        start = int(re.fullmatch(r"bytes=(\d+)-", request.headers.get("Range", "bytes=0-"))[1])
        part = data[start:start + keep]
        status = 206 if start else 200
        headers = {"Content-Length": str(len(data) - start)}
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        return Response(iter([part]), status, headers, direct_passthrough=True)
    return fault


def ignoring_range(request: Request, data: bytes) -> Response:
    return Response(data, 200)


def wrong_content_range(request: Request, data: bytes) -> Response:
    return Response(data[10:], 206, {"Content-Range": f"bytes 10-{len(data) - 1}/{len(data)}"})


def status(code: int) -> Fault:
    return lambda request, data: Response("oops", code)


@pytest.fixture
def fake(httpserver: HTTPServer) -> FakeRegistry:
    return FakeRegistry(httpserver)


@pytest.fixture
def store(tmp_path) -> Store:
    s = Store(tmp_path / "store")
    s.init()
    return s


def client_for(fake: FakeRegistry, **options) -> RegistryClient:
    opts = ClientOptions(backoff_base=0.0, **options)
    transport = Transport(TransportOptions(backoff_base=0.0, retries=opts.retries),
                          sleep=lambda s: None)
    return RegistryClient(fake.host, transport,
                          Authenticator(f"http://{fake.host}", transport), opts)


def fetch(client: RegistryClient, store: Store, desc: spec.Descriptor) -> None:
    with store.ingest(desc.digest, desc.size) as ingest:
        client.fetch_blob("lib/app", desc, ingest)
        ingest.commit()


def ingest_files(store: Store) -> list[str]:
    return sorted(p.name for p in store.ingest_dir.rglob("data"))


# Manifests -----------------------------------------------------------------------
def test_get_manifest_verifies_docker_content_digest(fake, store):
    desc = fake.add_image("v1")
    raw, media_type, digest = client_for(fake).get_manifest("lib/app", "v1")
    assert (media_type, digest) == (spec.OCI_MANIFEST, desc.digest)
    assert Digest.of(raw) == desc.digest
    fake.manifest_headers["Docker-Content-Digest"] = "sha256:" + "0" * 64
    with pytest.raises(DigestMismatch, match="Docker-Content-Digest"):
        client_for(fake).get_manifest("lib/app", "v1")


def test_manifest_by_digest_must_hash_to_it(fake):
    desc = fake.add_image("v1")
    other = fake.add_image("v2")
    fake.manifests[str(desc.digest)] = fake.manifests["v2"]  # serves the wrong bytes
    fake.manifest_headers["Docker-Content-Digest"] = str(other.digest)
    with pytest.raises(DigestMismatch, match="content has digest"):
        client_for(fake).get_manifest("lib/app", str(desc.digest))


def test_schema1_refused(fake):
    fake.manifests["old"] = (json.dumps({"schemaVersion": 1, "name": "lib/app", "tag": "old",
                                         "fsLayers": []}).encode(), spec.DOCKER_SCHEMA1_SIGNED)
    with pytest.raises(InvalidDocument, match="schema1 manifests are not supported"):
        client_for(fake).get_manifest("lib/app", "old")


def test_content_type_must_match_body_media_type(fake):
    desc = fake.add_image("v1")
    raw, _ = fake.manifests["v1"]
    fake.manifests["v1"] = (raw, spec.DOCKER_MANIFEST)
    with pytest.raises(InvalidDocument, match="does not match body mediaType"):
        client_for(fake).get_manifest("lib/app", "v1")
    fake.manifests["v1"] = (raw, "application/json")  # says nothing: the body decides
    assert client_for(fake).get_manifest("lib/app", "v1")[2] == desc.digest


def test_manifest_size_cap(fake):
    fake.manifests["huge"] = (b"{" + b" " * (4 * MiB) + b"}", spec.OCI_MANIFEST)
    with pytest.raises(InvalidDocument, match="limit"):
        client_for(fake).get_manifest("lib/app", "huge")


def test_unknown_manifest_reports_registry_error_code(fake):
    with pytest.raises(ManifestUnknown, match="MANIFEST_UNKNOWN"):
        client_for(fake).get_manifest("lib/app", "nope")


@pytest.mark.parametrize("repo, reference", [
    ("lib/app", "../../../v2/_catalog"), ("lib/app", "sha256:abc"),
    ("lib/app", "sha256:" + "A" * 64), ("../etc", "v1"), ("lib/App", "v1"),
])
def test_bad_names_never_reach_a_url(fake, repo, reference):
    with pytest.raises((InvalidReference, InvalidDocument)):
        client_for(fake).get_manifest(repo, reference)
    assert fake.server.log == []


def test_put_manifest_checks_returned_digest(fake, httpserver):
    raw = json.dumps({"schemaVersion": 2}).encode()
    assert client_for(fake).put_manifest("lib/app", "v9", raw, spec.OCI_MANIFEST) == \
        Digest.of(raw)
    assert fake.manifests["v9"] == (raw, spec.OCI_MANIFEST)


# Blobs ---------------------------------------------------------------------------
def test_truncated_body_resumes_with_range(fake, store):
    data = os.urandom(3 * MiB)
    desc = fake.add_blob(data)
    fake.blob_faults = [truncated(2 * MiB + 1000)]
    fetch(client_for(fake), store, desc)
    assert store.blob_path(desc.digest).read_bytes() == data
    first, second = fake.blob_requests()
    assert "Range" not in first.headers
    offset = int(re.fullmatch(r"bytes=(\d+)-", second.headers["Range"])[1])
    assert 0 < offset <= 2 * MiB + 1000
    assert ingest_files(store) == [] and store.fsck() == []


def test_partial_survives_failure_and_next_attempt_resumes(fake, store):
    data = os.urandom(3 * MiB)
    desc = fake.add_blob(data)
    fake.blob_faults = [truncated(2 * MiB + 5)]
    with pytest.raises(RegistryUnreachable, match="connection broken|body ended"):
        fetch(client_for(fake, resume_attempts=0), store, desc)
    assert not store.has_blob(desc.digest) and ingest_files(store) == ["data"]
    fetch(client_for(fake), store, desc)  # a new client: the partial is on disk
    assert int(fake.blob_requests()[-1].headers["Range"][6:-1]) >= MiB
    assert store.blob_path(desc.digest).read_bytes() == data


def test_server_ignoring_range_restarts_from_zero(fake, store):
    data = os.urandom(3 * MiB)
    desc = fake.add_blob(data)
    fake.blob_faults = [truncated(2 * MiB + 7), ignoring_range]
    fetch(client_for(fake), store, desc)
    assert store.blob_path(desc.digest).read_bytes() == data
    assert store.fsck() == []


def test_wrong_content_range_is_not_spliced(fake, store):
    data = os.urandom(3 * MiB)
    desc = fake.add_blob(data)
    fake.blob_faults = [truncated(2 * MiB + 7), wrong_content_range]
    fetch(client_for(fake), store, desc)
    assert store.blob_path(desc.digest).read_bytes() == data
    assert [r.headers.get("Range") is None for r in fake.blob_requests()] == [True, False, True]


def test_wrong_digest_leaves_nothing_in_blobs(fake, store):
    data = os.urandom(5000)
    desc = fake.add_blob(data)
    fake.blobs[str(desc.digest)] = os.urandom(5000)  # same size, other content
    with pytest.raises(DigestMismatch):
        fetch(client_for(fake), store, desc)
    assert not store.has_blob(desc.digest)
    assert list((store.path / "blobs" / "sha256").iterdir()) == []
    assert ingest_files(store) == []


def test_oversized_blob_refused(fake, store):
    desc = fake.add_blob(os.urandom(5000))
    fake.blobs[str(desc.digest)] += b"extra"
    with pytest.raises(DigestMismatch, match="more data"):
        fetch(client_for(fake), store, desc)
    assert not store.has_blob(desc.digest)


def test_blob_500_then_success(fake, store):
    desc = fake.add_blob(os.urandom(1000))
    fake.blob_faults = [status(500), status(503)]
    fetch(client_for(fake), store, desc)
    assert store.has_blob(desc.digest)


def test_blob_redirect_to_storage_gets_no_authorization(fake, store, httpserver):
    storage = HTTPServer(host="127.0.0.1", port=0)
    storage.start()
    try:
        data = os.urandom(1000)
        desc = fake.add_blob(data)
        storage.expect_request("/bucket/blob").respond_with_data(data)
        token_auth = "Bearer registry-token"

        def redirect(request: Request, _data: bytes) -> Response:
            assert request.headers.get("Authorization") == token_auth
            return Response("", 307, {"Location": storage.url_for("/bucket/blob?X-Sig=1")})
        fake.blob_faults = [redirect]
        client = client_for(fake)
        client.auth._tokens["repository:lib/app:pull"] = ("registry-token", float("inf"))
        fetch(client, store, desc)
        assert store.blob_path(desc.digest).read_bytes() == data
        assert [r.headers.get("Authorization") for r, _ in storage.log] == [None]
    finally:
        storage.stop()


# Push verbs ------------------------------------------------------------------------
def test_add_query_keeps_existing_params():
    assert add_query("http://h/upload/1?_state=a%2Fb", digest="sha256:x") == \
        "http://h/upload/1?_state=a%2Fb&digest=sha256%3Ax"


def test_monolithic_upload_keeps_location_query(fake, store):
    data = os.urandom(2000)
    desc = spec.Descriptor(spec.OCI_LAYER, Digest.of(data), len(data))
    digest = store.put_blob(data)
    client_for(fake).upload_blob("lib/app", desc, lambda: store.open_blob(digest))
    assert fake.blobs[str(desc.digest)] == data
    put = [r for r, _ in fake.server.log if r.method == "PUT"][0]
    assert put.args["_state"] == "opaque" and put.args["digest"] == str(desc.digest)


def test_chunked_upload_honours_min_chunk_and_tolerates_201(fake, store):
    data = os.urandom(4 * MiB + 123)
    digest = store.put_blob(data)
    desc = spec.Descriptor(spec.OCI_LAYER, digest, len(data))
    client = client_for(fake, chunk_size=MiB, chunked_threshold=MiB)
    client.upload_blob("lib/app", desc, lambda: store.open_blob(digest))
    assert fake.blobs[str(digest)] == data
    ranges = [r.headers["Content-Range"] for r, _ in fake.server.log if r.method == "PATCH"]
    step = MiB + MiB // 2  # OCI-Chunk-Min-Length beats our 1 MiB
    assert ranges == [f"0-{step - 1}", f"{step}-{2 * step - 1}", f"{2 * step}-{len(data) - 1}"]
    put = [r for r, _ in fake.server.log if r.method == "PUT"][0]
    assert put.args["_state"] == "next" and put.get_data() == b""


@pytest.mark.parametrize("faults", [["416"], ["drop"], ["ok", "416", "drop"]])
def test_chunked_upload_resyncs_with_registry(fake, store, faults):
    data = os.urandom(5 * MiB)
    digest = store.put_blob(data)
    desc = spec.Descriptor(spec.OCI_LAYER, digest, len(data))
    fake.patch_faults = list(faults)
    client = client_for(fake, chunk_size=2 * MiB, chunked_threshold=MiB)
    client.upload_blob("lib/app", desc, lambda: store.open_blob(digest))
    assert fake.blobs[str(digest)] == data
    assert fake.patch_faults == []


def test_mount_blob(httpserver):
    httpserver.expect_request("/v2/dst/blobs/uploads/", method="POST",
                              query_string={"mount": "sha256:" + "1" * 64, "from": "src"}) \
        .respond_with_data("", status=201)
    httpserver.expect_request("/v2/dst/blobs/uploads/", method="POST") \
        .respond_with_data("", status=202, headers={"Location": "/v2/dst/blobs/uploads/u1"})
    httpserver.expect_request("/v2/dst/blobs/uploads/u1", method="DELETE") \
        .respond_with_data("", status=204)
    fake_host = type("F", (), {"host": f"127.0.0.1:{httpserver.port}"})
    client = client_for(fake_host)
    assert client.mount_blob("dst", Digest("sha256", "1" * 64), "src") is True
    assert client.mount_blob("dst", Digest("sha256", "2" * 64), "src") is False
    assert httpserver.log[-1][0].method == "DELETE"


# Pull / push orchestration -------------------------------------------------------------
def multiarch(fake: FakeRegistry) -> spec.Descriptor:
    amd = fake.add_image(arch="amd64")
    arm = fake.add_image(arch="arm64")
    attest = fake.add_image(arch="unknown")
    entries = [{**amd.to_json(), "platform": {"os": "linux", "architecture": "amd64"}},
               {**arm.to_json(), "platform": {"os": "linux", "architecture": "arm64"}},
               {**attest.to_json(), "platform": {"os": "unknown", "architecture": "unknown"}}]
    return fake.add_manifest({"schemaVersion": 2, "mediaType": spec.OCI_INDEX,
                              "manifests": entries}, spec.OCI_INDEX, "multi")


def pull_options(**kw) -> PullOptions:
    return PullOptions(backoff_base=0.0, retries=1, **kw)


def test_pull_index_one_platform_then_nothing_refetched(fake, store):
    index = multiarch(fake)
    ref = parse_reference(f"{fake.host}/lib/app:multi")
    result = pull(ref, store, pull_options(platform=spec.Platform.parse("linux/arm64")))
    assert result.descriptor.digest == index.digest
    assert store.resolve(str(ref)).digest == index.digest
    ((child, manifest),) = result.images
    assert child.platform.architecture == "arm64" and store.has_blob(manifest.layers[0].digest)
    assert store.fsck() == []
    before = len(fake.server.log)
    pull(ref, store, pull_options(platform=spec.Platform.parse("linux/arm64")))
    again = [r for r, _ in fake.server.log[before:]]
    assert [r.method for r in again] == ["HEAD"]  # HEAD: index already held, blobs too


def test_pull_all_platforms_skips_attestations(fake, store):
    multiarch(fake)
    result = pull(parse_reference(f"{fake.host}/lib/app:multi"), store,
                  pull_options(all_platforms=True))
    assert sorted(d.platform.architecture for d, _ in result.images) == ["amd64", "arm64"]


def test_no_matching_platform_lists_available(fake, store):
    multiarch(fake)
    with pytest.raises(NoMatchingPlatform, match=r"linux/s390x.*linux/amd64, linux/arm64") as e:
        pull(parse_reference(f"{fake.host}/lib/app:multi"), store,
             pull_options(platform=spec.Platform.parse("linux/s390x")))
    assert "unknown" not in str(e.value)
    assert store.refs() == []


def test_failed_pull_tags_nothing(fake, store):
    desc = fake.add_image("v1", layers=[os.urandom(3000)])
    manifest = spec.parse_manifest(fake.manifests["v1"][0])
    del fake.blobs[str(manifest.layers[0].digest)]
    with pytest.raises(Exception, match="not found|BLOB_UNKNOWN"):
        pull(parse_reference(f"{fake.host}/lib/app:v1"), store, pull_options())
    assert store.refs() == [] and store.has_blob(desc.digest)


def test_unauthorized_after_auth(httpserver, store):
    httpserver.expect_request("/token").respond_with_json({"token": "t"})
    httpserver.expect_request(re.compile("/v2/.*")).respond_with_data(
        "", status=401,
        headers={"WWW-Authenticate": f'Bearer realm="http://127.0.0.1:{httpserver.port}/token"'})
    with pytest.raises(Unauthorized):
        pull(parse_reference(f"127.0.0.1:{httpserver.port}/lib/app:v1"), store, pull_options())


def test_push_round_trip_keeps_digests(fake, store, tmp_path):
    multiarch(fake)
    src_ref = parse_reference(f"{fake.host}/lib/app:multi")
    pulled = pull(src_ref, store, pull_options(all_platforms=True, include_attestations=True))
    dest = parse_reference(f"{fake.host}/copy/app:v2")
    digest = push(store, str(src_ref), dest, PushOptions(backoff_base=0.0))
    assert digest == pulled.descriptor.digest
    assert fake.manifests["v2"][0] == store.read_blob(digest)
    fresh = Store(tmp_path / "fresh")
    again = pull(dest, fresh, pull_options(all_platforms=True))
    assert again.descriptor.digest == digest


def test_push_index_with_missing_children(fake, store):
    multiarch(fake)
    src_ref = parse_reference(f"{fake.host}/lib/app:multi")
    pull(src_ref, store, pull_options(platform=spec.Platform.host()))  # one platform only
    host_child = spec.match_platform(store.read_manifest(store.resolve(str(src_ref))),
                                     spec.Platform.host())
    progress = Progress()
    digest = push(store, str(src_ref), parse_reference(f"{fake.host}/x/y:z"), PushOptions(),
                  progress)
    assert digest == host_child.digest  # the pulled platform's image, pushed alone
    assert any("pushing that image alone" in m for m in progress.logs)

    other = Store(store.path.parent / "other")
    pull(src_ref, other, pull_options(platform=spec.Platform.parse("linux/arm64")))
    if spec.Platform.host().architecture != "arm64":  # the host's image was not pulled
        with pytest.raises(Exception, match="not in the store") as e:
            push(other, str(src_ref), parse_reference(f"{fake.host}/x/y:w"), PushOptions())
        assert "--all-platforms" in e.value.hint


def test_foreign_layer_is_not_fetched(fake, store, httpserver):
    foreign = HTTPServer(host="127.0.0.1", port=0)
    foreign.start()
    try:
        normal = fake.add_blob(os.urandom(100))
        config = fake.add_blob(json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
            "type": "layers", "diff_ids": [str(normal.digest)]}}).encode(), spec.OCI_CONFIG)
        foreign_layer = {"mediaType": spec.DOCKER_LAYER_FOREIGN,
                         "digest": "sha256:" + "f" * 64, "size": 10,
                         "urls": [foreign.url_for("/layer.tar.gz")]}
        fake.add_manifest({"schemaVersion": 2, "mediaType": spec.DOCKER_MANIFEST,
                           "config": {**config.to_json(), "mediaType": spec.DOCKER_CONFIG},
                           "layers": [foreign_layer, normal.to_json()]},
                          spec.DOCKER_MANIFEST, "win")
        progress = Progress()
        pull(parse_reference(f"{fake.host}/lib/app:win"), store, pull_options(), progress)
        assert foreign.log == []
        assert not any("f" * 64 in r.path for r in fake.blob_requests())
        assert any("skipping foreign layer" in m for m in progress.logs)
        assert progress.totals[str(normal.digest)] == 100  # per-blob bytes, keyed by digest
    finally:
        foreign.stop()


def test_head_without_digest_falls_back_to_get(fake, store):
    desc = fake.add_image("v1")
    fake.manifest_headers["Docker-Content-Digest"] = ""  # ECR/Nexus omit it on HEAD
    result = pull(parse_reference(f"{fake.host}/lib/app:v1"), store, pull_options())
    assert result.descriptor.digest == desc.digest
    methods = [r.method for r, _ in fake.server.log if "/manifests/" in r.path]
    assert methods == ["HEAD", "GET"]


class Progress:
    def __init__(self) -> None:
        self.logs: list[str] = []
        self.totals: dict[str, int] = {}

    def start(self, key, description, total):
        self.totals.setdefault(key, 0)

    def advance(self, key, amount):
        self.totals[key] = self.totals.get(key, 0) + amount

    def done(self, key, message=None):
        pass

    def log(self, message):
        self.logs.append(message)


def test_challenge_from_redirect_target_is_not_answered(fake, store):
    storage = HTTPServer(host="127.0.0.1", port=0)
    storage.start()
    try:
        desc = fake.add_blob(os.urandom(100))
        realm = f"https://127.0.0.1:{storage.port}/token"
        storage.expect_request("/bucket").respond_with_data(
            "", status=401, headers={"WWW-Authenticate": f'Bearer realm="{realm}"'})
        fake.blob_faults = [lambda request, data: Response(
            "", 307, {"Location": storage.url_for("/bucket")})]
        client = client_for(fake)
        client.auth.credentials = Credentials("user", "secret")
        with pytest.raises(Unauthorized):
            fetch(client, store, desc)
        assert [r.path for r, _ in storage.log] == ["/bucket"]
        assert all("Authorization" not in r.headers for r, _ in storage.log)
    finally:
        storage.stop()


def referrer_index(subject: spec.Descriptor, fake: FakeRegistry) -> dict:
    entries = []
    for artifact_type in ("application/vnd.dev.sigstore.bundle+json", "application/spdx+json"):
        d = fake.add_manifest({"schemaVersion": 2, "mediaType": spec.OCI_MANIFEST,
                               "artifactType": artifact_type,
                               "config": {"mediaType": spec.OCI_EMPTY, "size": 2,
                                          "digest": str(Digest.of(b"{}"))},
                               "layers": [], "subject": subject.to_json()}, spec.OCI_MANIFEST)
        entries.append({**d.to_json(), "artifactType": artifact_type})
    return {"schemaVersion": 2, "mediaType": spec.OCI_INDEX, "manifests": entries}


@pytest.mark.parametrize("api", [True, False])
def test_referrers_api_and_tag_schema_fallback(fake, api):
    subject = fake.add_image("v1")
    index = referrer_index(subject, fake)
    if api:
        fake.referrers = index
    else:
        fake.add_manifest(index, spec.OCI_INDEX, f"sha256-{subject.digest.hex}")
    client = client_for(fake)
    assert len(client.referrers("lib/app", subject.digest)) == 2
    (sbom,) = client.referrers("lib/app", subject.digest, "application/spdx+json")
    assert sbom.artifact_type == "application/spdx+json"


def test_no_referrers_anywhere_is_empty(fake):
    subject = fake.add_image("v1")
    assert client_for(fake).referrers("lib/app", subject.digest) == []


def test_upload_location_on_another_host_gets_no_credentials(httpserver, store):
    other = HTTPServer(host="127.0.0.1", port=0)
    other.start()
    try:
        data = os.urandom(500)
        digest = store.put_blob(data)
        httpserver.expect_request("/v2/lib/app/blobs/uploads/", method="POST").respond_with_data(
            "", status=202, headers={"Location": other.url_for("/upload/1?sig=x")})
        other.expect_request("/upload/1", method="PUT").respond_with_data("", status=201)
        client = client_for(type("F", (), {"host": f"127.0.0.1:{httpserver.port}"}))
        client.auth._tokens["repository:lib/app:pull,push"] = ("secret-token", float("inf"))
        client.upload_blob("lib/app", spec.Descriptor(spec.OCI_LAYER, digest, len(data)),
                           lambda: store.open_blob(digest))
        assert httpserver.log[0][0].headers["Authorization"] == "Bearer secret-token"
        ((put, _),) = other.log
        assert "Authorization" not in put.headers and put.get_data() == data
    finally:
        other.stop()
