"""The distribution-spec API verbs for one registry (distribution-spec spec.md).

Every digest and name is validated before it goes into a URL (CVE-2024-3727). Bodies
are verified against the digest of the exact bytes received, never a re-serialisation
(image-spec considerations.md). Blobs stream into the store's ``Ingest`` in 1 MiB
chunks, resuming with ``Range`` from whatever the ingest already holds.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ociimg import spec
from ociimg.digest import Digest
from ociimg.errors import (
    BlobUnknown,
    DigestMismatch,
    InvalidDocument,
    InvalidReference,
    ManifestUnknown,
    NotFound,
    OciimgError,
    RegistryError,
    RegistryUnreachable,
    Unauthorized,
)
from ociimg.events import NullProgress, Progress
from ociimg.reference import REPOSITORY_RE, TAG_RE
from ociimg.registry.auth import Authenticator, find_credentials
from ociimg.registry.budget import Limits
from ociimg.registry.registries import is_insecure
from ociimg.registry.transport import (
    MAX_ERROR_BYTES,
    Transport,
    TransportOptions,
    backoff_delays,
    discard,
    iter_body,
    parse_json,
    read_capped,
)
from ociimg.registry.urls import origin, resolve_url

CHUNK = 1 << 20
_CONTENT_RANGE_RE = re.compile(r"bytes ([0-9]{1,19})-([0-9]{1,19})/([0-9]{1,19}|\*)")
MAX_TAGS = 1 << 20  # a repository with more is hostile (or wants another tool)
_LINK_NEXT_RE = re.compile(r'<([^>]*)>\s*;[^,]*rel="?next"?')
_MAX_CHUNK = 256 << 20  # a PATCH chunk is read into memory: a registry's minimum is capped


class BlobSink(Protocol):
    """What fetch_blob writes into: the store's Ingest (see ociimg.store)."""

    offset: int

    def write(self, data: bytes) -> int: ...
    def restart(self) -> None: ...


@dataclass
class ClientOptions:
    insecure: bool = False
    ca_bundle: Path | None = None
    auth_file: Path | None = None
    retries: int = 5
    backoff_base: float = 0.5
    resume_attempts: int = 5  # reconnects for one blob after a broken body
    chunk_size: int | None = None  # upload in PATCH chunks of this size; None: monolithic
    chunked_threshold: int = 64 << 20  # with chunk_size set, only blobs above this
    concurrency: int = 4  # sizes the connection pool: one connection per worker
    limits: Limits | None = None  # time/speed limits; None: from the environment


def check_repository(repo: str) -> str:
    if not isinstance(repo, str) or not REPOSITORY_RE.fullmatch(repo) or len(repo) > 255:
        raise InvalidReference(f"invalid repository name {str(repo)[:80]!r}")
    return repo


def check_manifest_reference(reference: str) -> str:
    """A tag or a digest; anything else never reaches a URL."""
    if isinstance(reference, str) and ":" in reference:
        Digest.parse(reference, where="manifest reference")
        return reference
    if not isinstance(reference, str) or not TAG_RE.fullmatch(reference):
        raise InvalidReference(f"invalid tag {str(reference)[:140]!r}")
    return reference


def media_type_of(content_type: str | None) -> str | None:
    """Content-Type without parameters (distribution-spec: params are ignored)."""
    if not content_type:
        return None
    return content_type.split(";", 1)[0].strip().lower() or None


def parse_error_body(body: bytes) -> list[tuple[str, str]]:
    """distribution-spec error format: {"errors": [{"code", "message", "detail"}]}."""
    try:
        doc = parse_json(body, "error body")
    except InvalidDocument:
        return []
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(errors, list):
        return []
    return [(str(e.get("code", "")), str(e.get("message", ""))[:200])
            for e in errors if isinstance(e, dict)]


def add_query(url: str, **params: str) -> str:
    """Append params to an upload Location that may already carry a query (spec.md push)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


class RegistryClient:
    """API verbs against one registry host; ``scope`` is added per repository."""

    def __init__(self, host: str, transport: Transport, auth: Authenticator,
                 options: ClientOptions | None = None) -> None:
        self.host = host
        self.transport = transport
        self.auth = auth
        self.display = auth.host  # the registry as the user wrote it, for messages
        self.options = options or ClientOptions()
        self.base = transport.base_url(host)

    @classmethod
    def open(cls, domain: str, api_host: str, options: ClientOptions | None = None,
             repository: str | None = None) -> RegistryClient:
        """A client for ``api_host`` with credentials looked up for ``domain``."""
        options = options or ClientOptions()
        insecure = options.insecure or is_insecure(domain)
        transport = Transport(TransportOptions(
            insecure=insecure, ca_bundle=options.ca_bundle, retries=options.retries,
            backoff_base=options.backoff_base, pool_size=max(8, options.concurrency + 2),
            limits=options.limits or Limits.from_env()))
        creds = find_credentials(domain, repository, auth_file=options.auth_file)
        auth = Authenticator(transport.base_url(api_host), transport, creds, display=domain)
        return cls(api_host, transport, auth, options)

    def close(self) -> None:
        self.transport.close()

    # Requests with auth -------------------------------------------------------
    def request(self, method: str, url: str, scope: str, *, headers: dict[str, str] | None = None,
                body: Any = None, stream: bool = True, expected: int | None = None) -> Any:
        """Send, answering at most two challenges (token, then insufficient_scope).
        ``expected``: the size of the answer's body, for the transport's deadline."""
        if not url.startswith(("http://", "https://")):
            url = f"{self.base}{url}"
        headers = dict(headers or {})
        # Credentials go to the registry only: not to an upload Location or a redirect
        # target on another host, and a 401 from there is not answered (CVE-2020-15157).
        ours = origin(url) == origin(self.base)
        sent = self.auth.header(scope) if ours else None
        for _round in range(3):
            if sent:
                headers["Authorization"] = sent
            resp = self.transport.request(method, url, headers=headers, body=body, stream=stream,
                                          expected=expected)
            challenge = resp.headers.get("WWW-Authenticate")
            if resp.status_code != 401 or not challenge or _round == 2:
                return resp
            if not ours or origin(resp.url) != origin(self.base):
                return resp
            discard(resp)
            fresh = self.auth.answer(challenge, scope)
            if fresh == sent:
                raise self.auth.unauthorized(scope)
            sent = fresh
        raise AssertionError("unreachable")

    def fail(self, resp: Any, what: str, not_found: type[NotFound] = ManifestUnknown,
             scope: str = "") -> OciimgError:
        """The error for an unexpected response, from its status and JSON error body."""
        try:
            body = read_capped(resp, MAX_ERROR_BYTES, f"{what}: error body")
        except (InvalidDocument, RegistryUnreachable):
            body = b""
        finally:
            resp.close()
        errors = parse_error_body(body)
        detail = "; ".join(f"{c}: {m}" if m else c for c, m in errors) or f"HTTP {resp.status_code}"
        codes = {c for c, _ in errors}
        status = resp.status_code
        if "MANIFEST_BLOB_UNKNOWN" in codes:
            return BlobUnknown(f"{what}: the registry does not know a blob it references "
                               f"({detail})", hint="push the image's blobs first")
        if status == 404 or codes & {"NAME_UNKNOWN", "MANIFEST_UNKNOWN", "BLOB_UNKNOWN"}:
            return not_found(f"{what}: not found ({detail})",
                             hint="check the repository name and tag")
        if status == 401 and "insufficient_scope" in resp.headers.get("WWW-Authenticate", ""):
            return Unauthorized(f"{what}: access denied by {self.display} (insufficient_scope)",
                                hint="the repository may not exist, or you lack permission; "
                                     f"run: ociimg login {self.display}")
        if status == 401:
            return self.auth.unauthorized(scope)
        if status == 403 or "DENIED" in codes:
            return Unauthorized(f"{what}: access denied by {self.display} ({detail})",
                                hint=f"check your permissions; run: ociimg login {self.display}")
        if status == 429 or "TOOMANYREQUESTS" in codes:
            return RegistryError(f"{what}: rate limited by {self.display} ({detail})",
                                 hint="wait and retry, or log in for a higher limit")
        return RegistryError(f"{what}: {self.display} answered HTTP {status} ({detail})")

    # Manifests ---------------------------------------------------------------
    def get_manifest(self, repo: str, reference: str) -> tuple[bytes, str, Digest]:
        """The manifest or index exactly as served, its media type and verified digest."""
        path = self._manifest_path(repo, reference)
        what = f"manifest {self._name(repo, reference)}"
        scope = f"repository:{repo}:pull"
        resp = self.request("GET", path, scope, headers={"Accept": ", ".join(spec.MANIFEST_ACCEPT)},
                            expected=spec.MAX_MANIFEST_BYTES)
        if resp.status_code != 200:
            raise self.fail(resp, what, ManifestUnknown, scope)
        with resp:
            raw = read_capped(resp, spec.MAX_MANIFEST_BYTES, what)
            declared = media_type_of(resp.headers.get("Content-Type"))
            header_digest = resp.headers.get("Docker-Content-Digest")
        digest = verify_manifest_digest(raw, reference, header_digest, what)
        doc = spec.parse_manifest_or_index(raw, _declared_for_parse(declared), where=what)
        return raw, doc.media_type, digest

    def head_manifest(self, repo: str, reference: str) -> spec.Descriptor | None:
        """HEAD (not counted by Docker Hub's pull limit); None when the registry omits
        Docker-Content-Digest (ECR, Nexus: distribution/distribution#2384)."""
        path = self._manifest_path(repo, reference)
        scope = f"repository:{repo}:pull"
        what = f"manifest {self._name(repo, reference)}"
        resp = self.request("HEAD", path, scope,
                            headers={"Accept": ", ".join(spec.MANIFEST_ACCEPT)})
        resp.close()
        if resp.status_code == 404:
            raise ManifestUnknown(f"{what}: not found", hint="check the repository name and tag")
        if resp.status_code != 200:
            raise self.fail(resp, what, ManifestUnknown, scope)
        header = resp.headers.get("Docker-Content-Digest")
        size = header_int(resp.headers.get("Content-Length"))
        media_type = media_type_of(resp.headers.get("Content-Type"))
        if not header or size is None or not media_type:
            return None
        digest = Digest.parse(header.strip(), where=f"{what}: Docker-Content-Digest")
        if ":" in reference and digest != Digest.parse(reference):
            raise DigestMismatch(f"{what}: registry reports digest {digest}")
        return spec.Descriptor(media_type, digest, size)

    def put_manifest(self, repo: str, reference: str, raw: bytes, media_type: str) -> Digest:
        path = self._manifest_path(repo, reference)
        scope = f"repository:{repo}:pull,push"
        what = f"push manifest {self._name(repo, reference)}"
        resp = self.request("PUT", path, scope, headers={"Content-Type": media_type}, body=raw)
        if resp.status_code not in (200, 201):
            raise self.fail(resp, what, ManifestUnknown, scope)
        resp.close()
        digest = Digest.of(raw)
        header = (resp.headers.get("Docker-Content-Digest") or "").strip()
        if header and Digest.parse(header, where=f"{what}: Docker-Content-Digest") != digest:
            raise DigestMismatch(f"{what}: registry stored digest {header}, we sent {digest}",
                                 hint="the registry rewrote the manifest; it breaks digests")
        return digest

    def referrers(self, repo: str, digest: Digest,
                  artifact_type: str | None = None) -> list[spec.Descriptor]:
        """Manifests whose ``subject`` is ``digest`` (distribution-spec "Listing
        Referrers"); registries without the API are read through the tag schema
        ``<alg>-<hex>`` that pushers maintain instead."""
        Digest.parse(str(digest), where="referrers digest")
        scope = f"repository:{repo}:pull"
        url = f"/v2/{check_repository(repo)}/referrers/{digest}"
        if artifact_type:
            url = add_query(url, artifactType=artifact_type)
        resp = self.request("GET", url, scope, headers={"Accept": spec.OCI_INDEX},
                            expected=spec.MAX_MANIFEST_BYTES)
        what = f"referrers of {self.display}/{repo}@{digest}"
        if resp.status_code == 200:
            with resp:
                raw = read_capped(resp, spec.MAX_MANIFEST_BYTES, what)
                filtered = "artifactType" in resp.headers.get("OCI-Filters-Applied", "")
            entries = list(spec.parse_index(raw, where=what).manifests)
        elif resp.status_code == 404:
            resp.close()
            filtered = False
            try:
                raw, _mt, _d = self.get_manifest(repo, f"{digest.algorithm}-{digest.hex}")
            except ManifestUnknown:
                return []
            entries = list(spec.parse_index(raw, where=what).manifests)
        else:
            raise self.fail(resp, what, ManifestUnknown, scope)
        if artifact_type and not filtered:
            entries = [d for d in entries if d.artifact_type == artifact_type]
        return entries

    def list_tags(self, repo: str, page_size: int | None = None,
                  max_pages: int = 10_000) -> list[str]:
        """Every tag of ``repo``, following ``Link: <…>; rel="next"`` pages
        (distribution-spec "Listing Tags"); a next page on another origin, a page seen
        before or more than ``max_pages`` pages end the listing with an error."""
        scope = f"repository:{repo}:pull"
        what = f"tags of {self.display}/{check_repository(repo)}"
        url = f"{self.base}/v2/{repo}/tags/list"
        if page_size:
            url = add_query(url, n=str(page_size))
        tags: list[str] = []
        seen: set[str] = set()
        while url:
            if url in seen or len(seen) >= max_pages:
                raise RegistryError(f"{what}: the registry's pages do not end ({len(seen)} "
                                    "pages, or a page links back)")
            seen.add(url)
            resp = self.request("GET", url, scope, headers={"Accept": "application/json"},
                                expected=spec.MAX_MANIFEST_BYTES)
            if resp.status_code != 200:
                raise self.fail(resp, what, ManifestUnknown, scope)
            with resp:
                doc = parse_json(read_capped(resp, spec.MAX_MANIFEST_BYTES, what), what)
                link = resp.headers.get("Link")
            page = doc.get("tags") if isinstance(doc, dict) else None
            if page is not None and (not isinstance(page, list)
                                     or not all(isinstance(t, str) for t in page)):
                raise InvalidDocument(f"{what}: 'tags' is not a list of strings")
            tags.extend(t for t in page or [] if TAG_RE.fullmatch(t))
            if len(tags) > MAX_TAGS:  # 10k pages of 4 MiB each would be ~40 GB held
                raise RegistryError(f"{what}: more than {MAX_TAGS} tags; refused")
            url = self._next_page(link, url, what)
        return tags

    def _next_page(self, link: str | None, current: str, what: str) -> str | None:
        match = _LINK_NEXT_RE.search(link or "")
        if not match:
            return None
        url = resolve_url(current, match.group(1), f"{what}: Link")
        if origin(url) != origin(self.base):
            raise RegistryError(f"{what}: next page on another host ({url[:100]}); refused")
        return url

    def delete_manifest(self, repo: str, digest: Digest) -> None:
        """DELETE by digest (distribution-spec "Deleting Manifests"); 405 when the
        registry has deletes turned off."""
        path = self._manifest_path(repo, str(Digest.parse(str(digest), where="delete")))
        scope = f"repository:{repo}:delete"
        what = f"delete {self._name(repo, str(digest))}"
        resp = self.request("DELETE", path, scope)
        if resp.status_code in (202, 200, 204):
            resp.close()
            return
        if resp.status_code == 405:
            resp.close()
            raise RegistryError(f"{what}: {self.display} does not allow deletes (HTTP 405)",
                                hint="docker-registry needs storage.delete.enabled: true")
        raise self.fail(resp, what, ManifestUnknown, scope)

    # Blobs -------------------------------------------------------------------
    def blob_exists(self, repo: str, digest: Digest) -> bool:
        scope = f"repository:{repo}:pull"
        resp = self.request("HEAD", self._blob_path(repo, digest), scope)
        resp.close()
        if resp.status_code == 200:
            return True
        if resp.status_code == 404:
            return False
        raise self.fail(resp, f"blob {self.display}/{repo}@{digest}", BlobUnknown, scope)

    def fetch_blob(self, repo: str, desc: spec.Descriptor, ingest: BlobSink,
                   progress: Progress | None = None) -> None:
        """Stream the blob into ``ingest`` from ``ingest.offset``; the caller commits."""
        progress = progress or NullProgress()
        what = f"blob {self.display}/{repo}@{desc.digest}"
        key = str(desc.digest)
        if ingest.offset:
            progress.log(f"resuming {desc.digest.short} at {ingest.offset} of {desc.size} bytes")
            progress.advance(key, ingest.offset)
        delays = backoff_delays(self.options.backoff_base)
        failures = restarts = 0
        while True:
            try:
                if self._fetch_range(repo, desc, ingest, progress, what):
                    return
                restarts += 1
                if restarts > self.options.resume_attempts:
                    raise RegistryError(f"{what}: the registry keeps answering with the "
                                        "wrong byte range")
            except RegistryUnreachable:
                failures += 1
                if failures > self.options.resume_attempts:
                    raise
                self.transport.sleep(next(delays))

    def _fetch_range(self, repo: str, desc: spec.Descriptor, ingest: BlobSink,
                     progress: Progress, what: str) -> bool:
        """One GET from ``ingest.offset``; True when the blob is complete, False to ask
        again (from zero); a body that ends early raises RegistryUnreachable."""
        offset = ingest.offset
        key = str(desc.digest)
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        scope = f"repository:{repo}:pull"
        resp = self.request("GET", self._blob_path(repo, desc.digest), scope, headers=headers,
                            expected=max(0, desc.size - offset))
        with resp:
            if resp.status_code == 416 and offset:
                ingest.restart()  # the partial is longer than the blob they have: start over
                progress.advance(key, -offset)
                return False
            if resp.status_code not in (200, 206):
                raise self.fail(resp, what, BlobUnknown, scope)
            if offset and not _range_ok(resp, offset, desc.size):
                # The server ignored Range (200: a CDN, podman-container-tools/container-libs
                # #1114) or sent another range: keep nothing we cannot line up.
                progress.log(f"{desc.digest.short}: registry did not resume at {offset}; "
                             "restarting from 0")
                progress.advance(key, -offset)
                ingest.restart()
                if resp.status_code == 206:
                    return False
            for chunk in iter_body(resp, CHUNK, decode=False):
                ingest.write(chunk)
                progress.advance(key, len(chunk))
        if ingest.offset < desc.size:
            raise RegistryUnreachable(f"{what}: body ended at {ingest.offset} of {desc.size} "
                                      "bytes")
        return True

    def mount_blob(self, repo: str, digest: Digest, from_repo: str) -> bool:
        """Cross-repository mount: True if mounted (201), False if we must upload (202)."""
        check_repository(from_repo)
        scope = f"repository:{repo}:pull,push repository:{from_repo}:pull"
        url = add_query(f"{self.base}/v2/{check_repository(repo)}/blobs/uploads/",
                        mount=str(digest), **{"from": from_repo})
        resp = self.request("POST", url, scope)
        resp.close()
        if resp.status_code == 201:
            return True
        if resp.status_code == 202:
            self._cancel_upload(resp, scope)
            return False
        raise self.fail(resp, f"mount {digest} into {self.display}/{repo}", BlobUnknown, scope)

    def upload_blob(self, repo: str, desc: spec.Descriptor,
                    open_stream: Callable[[], IO[bytes]],
                    progress: Progress | None = None) -> None:
        """POST an upload session, then PUT it whole or PATCH it in chunks."""
        progress = progress or NullProgress()
        scope = f"repository:{repo}:pull,push"
        what = f"upload blob {desc.digest.short} to {self.display}/{repo}"
        resp = self.request("POST", f"/v2/{check_repository(repo)}/blobs/uploads/", scope)
        resp.close()
        if resp.status_code != 202:
            raise self.fail(resp, what, BlobUnknown, scope)
        location = self._location(resp, what)
        chunk = self.options.chunk_size
        if chunk and desc.size > self.options.chunked_threshold:
            min_len = header_int(resp.headers.get("OCI-Chunk-Min-Length"))
            chunk = min(max(chunk, min_len or 0), _MAX_CHUNK)
            location = self._patch_chunks(location, desc, open_stream, chunk, scope, what,
                                          progress)
            body: Any = b""
        else:
            body = open_stream
        headers = {"Content-Type": "application/octet-stream"}
        resp = self.request("PUT", add_query(location, digest=str(desc.digest)), scope,
                            headers=headers, body=body)
        resp.close()
        if resp.status_code not in (201, 204):
            raise self.fail(resp, what, BlobUnknown, scope)
        if body is open_stream:
            progress.advance(str(desc.digest), desc.size)

    def _patch_chunks(self, location: str, desc: spec.Descriptor,
                      open_stream: Callable[[], IO[bytes]], chunk: int, scope: str, what: str,
                      progress: Progress) -> str:
        offset = resyncs = 0
        with open_stream() as stream:
            while data := stream.read(chunk):
                headers = {"Content-Type": "application/octet-stream",
                           "Content-Range": f"{offset}-{offset + len(data) - 1}"}
                resp = self.request("PATCH", location, scope, headers=headers, body=data)
                resp.close()
                if resp.status_code == 416 and resyncs < self.options.resume_attempts:
                    # Out of step with the registry (spec.md: 416 ⇒ GET the upload status).
                    resyncs += 1
                    location, offset = self._upload_status(location, scope, what)
                    stream.seek(offset)
                    continue
                # 202 per spec; ECR answers 201 (aws/containers-roadmap#2831).
                if resp.status_code not in (202, 201, 204):
                    raise self.fail(resp, what, BlobUnknown, scope)
                location = self._location(resp, what) if "Location" in resp.headers else location
                progress.advance(str(desc.digest), len(data))
                offset += len(data)
                taken = _range_end(resp.headers.get("Range"))
                if taken is not None and taken + 1 != offset:
                    # The registry kept less than we sent: continue from what it has.
                    offset = taken + 1
                    stream.seek(offset)
        if offset != desc.size:
            raise DigestMismatch(f"{what}: read {offset} bytes from the store, expected "
                                 f"{desc.size}")
        return location

    def _upload_status(self, location: str, scope: str, what: str) -> tuple[str, int]:
        resp = self.request("GET", location, scope)
        resp.close()
        if resp.status_code not in (202, 204):
            raise self.fail(resp, what, BlobUnknown, scope)
        location = self._location(resp, what) if "Location" in resp.headers else location
        end = _range_end(resp.headers.get("Range"))
        return location, 0 if end is None else end + 1

    def _cancel_upload(self, resp: Any, scope: str) -> None:
        if "Location" not in resp.headers:
            return
        try:
            self.request("DELETE", self._location(resp, "cancel upload"), scope).close()
        except OciimgError:
            pass  # an abandoned session expires on the registry by itself

    def _location(self, resp: Any, what: str) -> str:
        location = resp.headers.get("Location")
        if not location:
            raise RegistryError(f"{what}: {self.display} sent no upload Location")
        # Relative or absolute, possibly with query parameters (spec.md "Pushing blobs").
        url = resolve_url(resp.url or self.base, location, f"{what}: upload Location")
        if origin(url)[0] == "http" and origin(self.base)[0] == "https":
            # The blob would travel in clear text; request() already keeps credentials
            # from any other origin.
            raise RegistryError(f"{what}: {self.display} sent an upload Location over plain "
                                f"http ({url[:100]}); refusing to downgrade")
        return url

    # Paths -------------------------------------------------------------------
    def _name(self, repo: str, reference: str) -> str:
        return f"{self.display}/{repo}{'@' if ':' in reference else ':'}{reference}"

    def _manifest_path(self, repo: str, reference: str) -> str:
        return f"/v2/{check_repository(repo)}/manifests/{check_manifest_reference(reference)}"

    def _blob_path(self, repo: str, digest: Digest) -> str:
        Digest.parse(str(digest), where="blob digest")
        return f"/v2/{check_repository(repo)}/blobs/{digest}"


def _declared_for_parse(declared: str | None) -> str | None:
    """Only a manifest media type is compared with the body; lax registries send
    application/json or octet-stream, which say nothing."""
    known = spec.INDEX_TYPES | spec.MANIFEST_TYPES | spec.SCHEMA1_TYPES
    if declared in known or (declared or "").startswith("application/vnd.docker.distribution"):
        return declared
    return None


def verify_manifest_digest(raw: bytes, reference: str, header: str | None, what: str) -> Digest:
    """Check Docker-Content-Digest and a requested digest against the bytes received."""
    expected = Digest.parse(reference, where=what) if ":" in reference else None
    algorithm = expected.algorithm if expected else "sha256"
    actual = Digest.of(raw, algorithm)
    if expected and actual != expected:
        raise DigestMismatch(f"{what}: content has digest {actual}",
                             hint="the registry served different bytes than requested")
    if header:
        claimed = Digest.parse(header.strip(), where=f"{what}: Docker-Content-Digest")
        if Digest.of(raw, claimed.algorithm) != claimed:
            raise DigestMismatch(f"{what}: Docker-Content-Digest {claimed} does not match the "
                                 f"body ({Digest.of(raw, claimed.algorithm)})")
    return actual


def header_int(value: str | None) -> int | None:
    """A non-negative integer header (Content-Length, OCI-Chunk-Min-Length): ASCII
    digits only (str.isdigit() takes "²"), at most 19 of them."""
    text = (value or "").strip()
    if text.isascii() and text.isdigit() and len(text) <= 19:
        return int(text)
    return None


def _range_end(header: str | None) -> int | None:
    """Upload progress header "0-N" (inclusive end; distribution-spec push)."""
    m = re.fullmatch(r"(?:bytes=)?0-([0-9]{1,19})", (header or "").strip())
    return int(m.group(1)) if m else None


def _range_ok(resp: Any, offset: int, size: int) -> bool:
    if resp.status_code != 206:
        return False
    m = _CONTENT_RANGE_RE.fullmatch(resp.headers.get("Content-Range", "").strip())
    if not m:
        return False
    start, end, total = int(m.group(1)), int(m.group(2)), m.group(3)
    return start == offset and end == size - 1 and (total == "*" or int(total) == size)


class BlobStream(io.RawIOBase):
    """A blob's body as a readable stream, hashed as it is read: at its end the size
    and digest are checked (a registry's bytes are verified before they count)."""

    def __init__(self, resp: Any, desc: spec.Descriptor, what: str) -> None:
        self._body = iter_body(resp, CHUNK, decode=False)
        self._desc = desc
        self._what = what
        self._hash = hashlib.new(desc.digest.algorithm)
        self._count = 0
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # type: ignore[no-untyped-def]
        if not self._buf:
            self._buf = next(self._body, b"")
            if not self._buf:
                self._finish()
                return 0
            self._hash.update(self._buf)
            self._count += len(self._buf)
            if self._count > self._desc.size:
                raise DigestMismatch(f"{self._what}: more than {self._desc.size} bytes")
        n = min(len(buf), len(self._buf))
        buf[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def _finish(self) -> None:
        got = Digest(self._desc.digest.algorithm, self._hash.hexdigest())
        if self._count != self._desc.size or got != self._desc.digest:
            raise DigestMismatch(f"{self._what}: got {self._count} bytes with digest {got}",
                                 hint="the registry served different bytes")


@contextlib.contextmanager
def blob_stream(client: RegistryClient, repo: str, desc: spec.Descriptor
                ) -> Iterator[BinaryIO]:
    """Stream one blob without storing it (for reading a layer's listing)."""
    scope = f"repository:{repo}:pull"
    what = f"blob {client.display}/{repo}@{desc.digest}"
    resp = client.request("GET", client._blob_path(repo, desc.digest), scope,
                          headers={"Accept-Encoding": "identity"}, expected=desc.size)
    if resp.status_code != 200:
        raise client.fail(resp, what, BlobUnknown, scope)
    with resp:
        yield io.BufferedReader(BlobStream(resp, desc, what), CHUNK)  # type: ignore[misc]
