"""Registry reads without pulling, against a real docker-registry on loopback: inspect
docker:// fetches no layer (counted by a recording proxy in front of the registry),
manifest/digest agree with the bytes served, list-tags follows Link pages, delete
removes a manifest, sync copies what is missing and then skips everything."""

from __future__ import annotations

import http.client
import io
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ociimg.digest import Digest
from ociimg.reference import LayoutReference, parse_image_name
from ociimg.registry import CopyOptions, copy
from tests.clirun import ociimg
from tests.integration.registry_server import RegistryServer

TAGS = ["t1", "t2", "t3", "t4", "t5"]


class RecordingProxy:
    """A loopback HTTP proxy in front of the registry that records every request line
    (the registry's own access log is off): what a command fetched, counted."""

    def __init__(self, upstream: str) -> None:
        self.requests: list[tuple[str, str]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                proxy.requests.append((self.command, self.path))
                conn = http.client.HTTPConnection(upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _forward

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    def blob_gets(self) -> list[str]:
        return [p for m, p in self.requests if m == "GET" and "/blobs/" in p]


@pytest.fixture
def pushed(registry: RegistryServer, fixture_layout: Path, request: pytest.FixtureRequest
           ) -> str:
    """The multilayer fixture under five tags of a repository of this test's own."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60]
    repo = f"{registry.host}/reads/{name}"
    for tag in TAGS:
        copy(LayoutReference("oci", fixture_layout, "multilayer"),
             parse_image_name(f"{repo}:{tag}"), CopyOptions())  # type: ignore[arg-type]
    return repo


@pytest.fixture
def proxy(registry: RegistryServer) -> Iterator[RecordingProxy]:
    p = RecordingProxy(registry.host)
    yield p
    p.close()


def test_inspect_docker_ref_downloads_no_layer(pushed: str, registry: RegistryServer,
                                               proxy: RecordingProxy, tmp_path: Path) -> None:
    ref = pushed.replace(registry.host, proxy.host)
    proc = ociimg(tmp_path, "inspect", "--json", f"docker://{ref}:t1")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    config_digest = doc["manifest"]["config"]["digest"]
    assert len(doc["layers"]) >= 2
    # the config is the only blob fetched; no layer, and nothing was stored
    assert proxy.blob_gets() == [f"/v2/{ref.split('/', 1)[1]}/blobs/{config_digest}"]
    assert not (tmp_path / "store" / "blobs").exists()
    assert "Layers:" in ociimg(tmp_path, "inspect", f"docker://{ref}:t1").stdout
    history = ociimg(tmp_path, "history", "--json", f"docker://{ref}:t1")
    assert history.returncode == 0 and json.loads(history.stdout)
    assert all("/blobs/" not in p or config_digest in p for _m, p in proxy.requests)


def test_manifest_raw_and_digest_agree(pushed: str, tmp_path: Path) -> None:
    raw = ociimg(tmp_path, "manifest", "--raw", f"docker://{pushed}:t2")
    assert raw.returncode == 0, raw.stderr
    digest = ociimg(tmp_path, "digest", f"docker://{pushed}:t2").stdout.strip()
    assert digest == str(Digest.of(raw.stdout.encode()))
    pretty = json.loads(ociimg(tmp_path, "manifest", f"docker://{pushed}:t2").stdout)
    assert pretty == json.loads(raw.stdout)
    missing = ociimg(tmp_path, "digest", f"docker://{pushed}:nope")
    assert missing.returncode == 1 and "not found" in missing.stderr


@pytest.mark.parametrize("page_size", [None, "1", "2"])
def test_list_tags_follows_every_page(pushed: str, proxy: RecordingProxy,
                                      registry: RegistryServer, tmp_path: Path,
                                      page_size: str | None) -> None:
    ref = pushed.replace(registry.host, proxy.host)
    args = ["--page-size", page_size] if page_size else []
    proc = ociimg(tmp_path, "list-tags", "--json", *args, f"docker://{ref}")
    assert proc.returncode == 0, proc.stderr
    assert sorted(json.loads(proc.stdout)["tags"]) == TAGS
    # Debian's docker-registry (distribution 2.8) answers every tag on one page,
    # ignoring n: the Link walk is tested against a paginating server in
    # tests/unit/test_inspection_registry.py; here, that n= is asked for.
    pages = [p for m, p in proxy.requests if m == "GET" and "/tags/list" in p]
    assert pages and (page_size is None or pages[0].endswith(f"?n={page_size}"))


def test_delete_removes_the_manifest(pushed: str, tmp_path: Path) -> None:
    digest = ociimg(tmp_path, "digest", f"docker://{pushed}:t3").stdout.strip()
    proc = ociimg(tmp_path, "delete", f"docker://{pushed}:t3")
    assert proc.returncode == 0, proc.stderr
    assert digest in proc.stdout
    gone = ociimg(tmp_path, "manifest", f"docker://{pushed}@{digest}")
    assert gone.returncode == 1 and "not found" in gone.stderr
    again = ociimg(tmp_path, "delete", f"docker://{pushed}@{digest}")
    assert again.returncode == 1 and "not found" in again.stderr
    local = ociimg(tmp_path, "delete", "busybox")
    assert local.returncode == 1 and "docker://" in local.stderr


def test_sync_copies_missing_then_skips_everything(pushed: str, registry: RegistryServer,
                                                   tmp_path: Path) -> None:
    dest = f"docker://{registry.host}/mirror-{tmp_path.name[-12:].lower()}"
    first = ociimg(tmp_path, "sync", "--json", "--page-size", "2", f"docker://{pushed}", dest)
    assert first.returncode == 0, first.stderr
    rows = json.loads(first.stdout)
    assert [r["copied"] for r in rows] == [True] * len(TAGS)
    second = json.loads(ociimg(tmp_path, "sync", "--json", f"docker://{pushed}", dest).stdout)
    assert [r["copied"] for r in second] == [False] * len(TAGS)
    assert {r["digest"] for r in second} == {r["digest"] for r in rows}
    layout = tmp_path / "layout"
    to_layout = ociimg(tmp_path, "sync", f"docker://{pushed}:t1", f"docker://{pushed}:t2",
                       f"oci:{layout}")
    assert to_layout.returncode == 0, to_layout.stderr
    names = ociimg(tmp_path, "list-tags", f"oci:{layout}").stdout.split()
    assert sorted(names) == [f"{pushed.rsplit('/', 1)[1]}:t1", f"{pushed.rsplit('/', 1)[1]}:t2"]
    skip = ociimg(tmp_path, "sync", f"docker://{pushed}:t1", f"oci:{layout}")
    assert skip.stdout.startswith("present")


def test_cat_and_ls_stream_docker_layers_without_storing(pushed: str, tmp_path: Path,
                                                         fixture_layout: Path) -> None:
    local = ociimg(tmp_path, "cat", f"oci:{fixture_layout}:multilayer", "/app/run.sh")
    remote = ociimg(tmp_path, "cat", f"docker://{pushed}:t1", "/app/run.sh")
    assert remote.returncode == 0, remote.stderr
    assert remote.stdout == local.stdout and remote.stdout
    listing = ociimg(tmp_path, "ls", f"docker://{pushed}:t1", "/app")
    assert listing.stdout.splitlines() == ["/app/run.sh"]
    assert not (tmp_path / "store" / "blobs").exists()


def _put_artifact(registry: RegistryServer, repo: str, subject_digest: str) -> str:
    """An SBOM manifest whose subject is the image, and the referrers fallback tag
    (distribution-spec: an index tagged ``sha256-<hex>``) that a pusher maintains
    for a registry without the referrers API (docker-registry 2.8)."""
    from ociimg import spec
    from ociimg.registry.client import RegistryClient

    host, path = repo.split("/", 1)
    client = RegistryClient.open(host, host, None, path)
    try:
        empty = b"{}"
        client.upload_blob(path, spec.Descriptor(spec.OCI_EMPTY, Digest.of(empty), 2),
                           lambda: io.BytesIO(empty))
        raw = spec.canonical_json({
            "schemaVersion": 2, "mediaType": spec.OCI_MANIFEST,
            "artifactType": "application/spdx+json",
            "config": {"mediaType": spec.OCI_EMPTY, "digest": str(Digest.of(empty)),
                       "size": 2}, "layers": [],
            "subject": {"mediaType": spec.OCI_MANIFEST, "digest": subject_digest,
                        "size": 1}})
        digest = client.put_manifest(path, str(Digest.of(raw)), raw, spec.OCI_MANIFEST)
        index = spec.canonical_json({"schemaVersion": 2, "mediaType": spec.OCI_INDEX,
                                     "manifests": [{"mediaType": spec.OCI_MANIFEST,
                                                    "digest": str(digest), "size": len(raw),
                                                    "artifactType": "application/spdx+json"}]})
        client.put_manifest(path, subject_digest.replace(":", "-"), index, spec.OCI_INDEX)
    finally:
        client.close()
    return str(digest)


def test_referrers_of_a_registry_image_through_the_fallback_tag(
        pushed: str, registry: RegistryServer, tmp_path: Path) -> None:
    subject = ociimg(tmp_path, "digest", f"docker://{pushed}:t4").stdout.strip()
    artifact = _put_artifact(registry, pushed, subject)
    doc = json.loads(ociimg(tmp_path, "referrers", "--json", f"docker://{pushed}:t4").stdout)
    assert [(d["digest"], d["artifactType"], d["source"]) for d in doc] == [
        (artifact, "application/spdx+json", "referrers")]
    shown = ociimg(tmp_path, "inspect", f"docker://{pushed}:t4").stdout
    assert f"Attachment:   {artifact} application/spdx+json" in shown
    out = tmp_path / "sbom"
    got = ociimg(tmp_path, "referrers", f"docker://{pushed}:t4", "--extract", artifact,
                 "-o", str(out))
    assert got.returncode == 0, got.stderr
    assert json.loads((out / "manifest.json").read_text())["subject"]["digest"] == subject
