"""list-tags against a registry of our own that paginates (pytest-httpserver on
loopback): every page followed through Link headers, relative or absolute; a Link to
another host, or one that loops, ends in one clear error."""

from __future__ import annotations

import json
import re

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from ociimg.errors import RegistryError
from ociimg.registry.client import ClientOptions, RegistryClient

TAGS = [f"v{i}" for i in range(23)]


def paginate(style: str):  # noqa: ANN201
    def handler(request: Request) -> Response:
        n = int(request.args.get("n", "10"))
        last = request.args.get("last")
        start = TAGS.index(last) + 1 if last else 0
        page = TAGS[start:start + n]
        headers = {}
        if start + n < len(TAGS):
            target = f"/v2/app/tags/list?n={n}&last={page[-1]}"
            if style == "absolute":
                target = request.host_url.rstrip("/") + target
            elif style == "foreign":
                target = "http://127.0.0.2:9/v2/app/tags/list?n=1"
            elif style == "loop":
                target = f"/v2/app/tags/list?n={n}"
            headers["Link"] = f'<{target}>; rel="next"'
        return Response(json.dumps({"name": "app", "tags": page}), 200, headers,
                        content_type="application/json")
    return handler


def client_for(server: HTTPServer) -> RegistryClient:
    return RegistryClient.open(f"127.0.0.1:{server.port}", f"127.0.0.1:{server.port}",
                               ClientOptions(retries=0), "app")


@pytest.mark.parametrize("style", ["relative", "absolute"])
@pytest.mark.parametrize("page_size", [1, 5, None])
def test_every_page_is_followed(httpserver: HTTPServer, style: str, page_size: int | None
                                ) -> None:
    httpserver.expect_request("/v2/app/tags/list").respond_with_handler(paginate(style))
    client = client_for(httpserver)
    try:
        assert client.list_tags("app", page_size) == TAGS
    finally:
        client.close()
    pages = [r for r, _ in httpserver.log]
    assert len(pages) == -(-len(TAGS) // (page_size or 10))


@pytest.mark.parametrize("style,needle", [("foreign", "another host"),
                                          ("loop", "do not end")])
def test_hostile_links_refused(httpserver: HTTPServer, style: str, needle: str) -> None:
    httpserver.expect_request("/v2/app/tags/list").respond_with_handler(paginate(style))
    client = client_for(httpserver)
    try:
        with pytest.raises(RegistryError, match=needle):
            client.list_tags("app", 4)
    finally:
        client.close()
    assert all(re.match(r"/v2/app/tags/list", r.path) for r, _ in httpserver.log)


def test_bad_tags_field_is_an_error(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/v2/app/tags/list").respond_with_json({"tags": "v1"})
    client = client_for(httpserver)
    try:
        with pytest.raises(Exception, match="not a list of strings"):
            client.list_tags("app")
    finally:
        client.close()


def test_delete_on_a_registry_without_deletes_says_how(httpserver: HTTPServer) -> None:
    digest = "sha256:" + "ab" * 32
    httpserver.expect_request(f"/v2/app/manifests/{digest}", method="DELETE").respond_with_json(
        {"errors": [{"code": "UNSUPPORTED", "message": "The operation is unsupported."}]},
        status=405)
    client = client_for(httpserver)
    try:
        with pytest.raises(RegistryError, match="does not allow deletes") as info:
            from ociimg.digest import Digest
            client.delete_manifest("app", Digest.parse(digest))
    finally:
        client.close()
    assert "storage.delete.enabled" in (info.value.hint or "")


def test_inspect_survives_a_referrers_error_and_fetches_no_layer(
        httpserver: HTTPServer, tmp_path) -> None:  # noqa: ANN001
    from ociimg import spec
    from ociimg.digest import Digest
    from tests.clirun import ociimg

    config = spec.canonical_json({"architecture": "amd64", "os": "linux",
                                  "config": {"Cmd": ["sh"]},
                                  "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]}})
    manifest = spec.canonical_json({
        "schemaVersion": 2, "mediaType": spec.OCI_MANIFEST,
        "config": {"mediaType": spec.OCI_CONFIG, "digest": str(Digest.of(config)),
                   "size": len(config)},
        "layers": [{"mediaType": spec.OCI_LAYER_GZIP, "digest": "sha256:" + "1" * 64,
                    "size": 5 << 30}]})
    digest = Digest.of(manifest)
    for ref in ("v1", str(digest)):
        httpserver.expect_request(f"/v2/app/manifests/{ref}").respond_with_data(
            manifest, content_type=spec.OCI_MANIFEST,
            headers={"Docker-Content-Digest": str(digest)})
    httpserver.expect_request(f"/v2/app/blobs/{Digest.of(config)}").respond_with_data(config)
    httpserver.expect_request(f"/v2/app/referrers/{digest}").respond_with_json(
        {"errors": [{"code": "DENIED", "message": "no"}]}, status=403)
    proc = ociimg(tmp_path, "inspect", f"docker://127.0.0.1:{httpserver.port}/app:v1")
    assert proc.returncode == 0, proc.stderr
    assert "Attachments:  ? (" in proc.stdout and "access denied" in proc.stdout
    blobs = [r.path for r, _ in httpserver.log if "/blobs/" in r.path]
    assert blobs == [f"/v2/app/blobs/{Digest.of(config)}"]  # the 5 GiB layer: never asked
