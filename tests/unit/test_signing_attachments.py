"""Reading .sig attachments from a hostile registry (a loopback test server): a huge
manifest, a payload longer than it claims or not matching its digest are refused
after bounded reads, never buffered whole."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from ociimg.digest import Digest
from ociimg.errors import SignatureInvalid
from ociimg.registry.auth import Authenticator
from ociimg.registry.client import ClientOptions, RegistryClient
from ociimg.registry.transport import Transport, TransportOptions
from ociimg.signing.attachments import read_signatures, signature_tag

DIGEST = Digest.of(b"image manifest")
OCI = "application/vnd.oci.image.manifest.v1+json"


def client(server: HTTPServer) -> RegistryClient:
    transport = Transport(TransportOptions(retries=0, backoff_base=0.0), sleep=lambda s: None)
    url = f"http://127.0.0.1:{server.port}"
    return RegistryClient(f"127.0.0.1:{server.port}", transport,
                          Authenticator(url, transport, None),
                          ClientOptions(retries=0, backoff_base=0.0, resume_attempts=0))


def streamed(sent: list[int], chunks: int) -> Response:
    def body() -> Iterator[bytes]:
        for _ in range(chunks):
            sent[0] += 1 << 20
            yield b" " * (1 << 20)
    return Response(body(), 200, direct_passthrough=True, content_type=OCI)


def sig_manifest(payload_digest: str, size: int) -> bytes:
    return json.dumps({
        "schemaVersion": 2, "mediaType": OCI,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + "0" * 64, "size": 2},
        "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                    "digest": payload_digest, "size": size,
                    "annotations": {"dev.cosignproject.cosign/signature":
                                    base64.b64encode(b"sig").decode()}}]}).encode()


def serve_manifest(server: HTTPServer, raw: bytes) -> None:
    server.expect_request(f"/v2/r/manifests/{signature_tag(DIGEST)}").respond_with_data(
        raw, content_type=OCI)


def test_a_huge_signature_manifest_is_cut_off(httpserver: HTTPServer) -> None:
    sent = [0]
    httpserver.expect_request(f"/v2/r/manifests/{signature_tag(DIGEST)}").respond_with_handler(
        lambda _req: streamed(sent, 256))
    with pytest.raises(SignatureInvalid, match="exceeds the 4194304-byte limit"):
        read_signatures(client(httpserver), "r", DIGEST)
    assert sent[0] < 64 << 20


def test_a_payload_longer_than_declared_is_cut_off(httpserver: HTTPServer) -> None:
    sent = [0]
    serve_manifest(httpserver, sig_manifest("sha256:" + "1" * 64, 100))
    httpserver.expect_request("/v2/r/blobs/sha256:" + "1" * 64).respond_with_handler(
        lambda _req: streamed(sent, 256))
    [sig] = read_signatures(client(httpserver), "r", DIGEST)
    assert sig.problem and "more than the 100 bytes declared" in sig.problem
    assert sent[0] < 64 << 20


def test_a_payload_declared_huge_is_not_fetched(httpserver: HTTPServer) -> None:
    serve_manifest(httpserver, sig_manifest("sha256:" + "2" * 64, 1 << 40))
    [sig] = read_signatures(client(httpserver), "r", DIGEST)
    assert sig.problem and "exceeds" in sig.problem
    assert all("/blobs/" not in req.path for req, _ in httpserver.log)


def test_a_payload_not_matching_its_digest_is_refused(httpserver: HTTPServer) -> None:
    body = b'{"critical":{}}'
    wrong = "sha256:" + hashlib.sha256(b"something else").hexdigest()
    serve_manifest(httpserver, sig_manifest(wrong, len(body)))
    httpserver.expect_request(f"/v2/r/blobs/{wrong}").respond_with_data(body)
    [sig] = read_signatures(client(httpserver), "r", DIGEST)
    assert sig.problem and "does not match its digest" in sig.problem


def test_no_signature_tag_means_no_signatures(httpserver: HTTPServer) -> None:
    def missing(_req: Request) -> Response:
        return Response(json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN"}]}), 404)
    httpserver.expect_request(f"/v2/r/manifests/{signature_tag(DIGEST)}").respond_with_handler(
        missing)
    assert read_signatures(client(httpserver), "r", DIGEST) == []
