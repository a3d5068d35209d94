"""Pull: registry → store, resumable, verified, tagged only when complete.

Order (containerd's fetch handler, containers/image copy): resolve the tag (HEAD first:
Docker Hub does not count HEADs against the pull limit), store the top-level document
exactly as received, narrow an index to the wanted platform(s), fetch configs and
layers in parallel into resumable ingests, and only then tag the name — a name in the
store always means every blob is present.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ociimg import spec
from ociimg.digest import Digest
from ociimg.errors import InvalidDocument
from ociimg.events import NullProgress, Progress
from ociimg.reference import Reference
from ociimg.registry.client import ClientOptions, RegistryClient
from ociimg.store import Store

# The signature hook (ociimg.signing's policy verifier): called with the image's name,
# each manifest that name will stand for and the client it came from (None for a
# layout), after the manifests are stored and before any layer is fetched or the name
# tagged; it raises to refuse the image.
Verifier = Callable[[Any, spec.Descriptor, "RegistryClient | None"], None]


@dataclass
class PullOptions:
    platform: spec.Platform | None = None  # None: this host
    all_platforms: bool = False
    include_attestations: bool = False  # with all_platforms: also unknown/unknown entries
    insecure: bool = False
    ca_bundle: Path | None = None
    auth_file: Path | None = None
    concurrency: int = 4
    retries: int = 5
    backoff_base: float = 0.5
    verifier: Verifier | None = None

    def client_options(self) -> ClientOptions:
        return ClientOptions(insecure=self.insecure, ca_bundle=self.ca_bundle,
                             auth_file=self.auth_file, retries=self.retries,
                             concurrency=self.concurrency, backoff_base=self.backoff_base)


@dataclass
class PullResult:
    reference: Reference
    descriptor: spec.Descriptor  # the top level (index or manifest), as tagged
    images: list[tuple[spec.Descriptor, spec.Manifest]] = field(default_factory=list)


def pull(ref: Reference, store: Store, options: PullOptions | None = None,
         progress: Progress | None = None) -> PullResult:
    """Fetch ``ref`` into ``store`` and tag it as ``str(ref)``."""
    options = options or PullOptions()
    progress = serialized(progress or NullProgress())
    store.init()
    client = RegistryClient.open(ref.domain, ref.api_host, options.client_options(),
                                 ref.repository)
    try:
        with _lease(store):
            top, images = fetch_image(client, ref, store, options, progress)
            store.tag(str(ref), top)
    finally:
        client.close()
    return PullResult(ref, top, images)


def fetch_image(client: RegistryClient, ref: Reference, store: Store, options: PullOptions,
                progress: Progress) -> tuple[spec.Descriptor, list[tuple[spec.Descriptor,
                                                                         spec.Manifest]]]:
    """Everything ``ref`` needs into ``store``, untagged; returns (top level, images)."""
    top = resolve_top(client, ref, store, progress)
    doc = store.read_manifest(top)
    if isinstance(doc, spec.Index):
        children = select_manifests(doc, options)
        for child in children:
            fetch_document(client, ref.repository, child, store)
        images = [(c, _read_manifest(store, c)) for c in children]
    else:
        images = [(top, doc)]
    verify_images(options.verifier, ref, client, top, [d for d, _ in images],
                  whole_index=isinstance(doc, spec.Index) and options.all_platforms)
    fetch_blobs(client, ref.repository, [m for _, m in images], store, options, progress)
    return top, images


def verify_images(verifier: Verifier | None, name: Any, client: RegistryClient | None,
                  top: spec.Descriptor, chosen: list[spec.Descriptor], whole_index: bool) -> None:
    """Every manifest ``name`` will stand for: the platform manifests chosen (what
    podman verifies), and the index itself when it is kept whole."""
    if verifier is None:
        return
    for desc in ([top] if whole_index and top not in chosen else []) + chosen:
        verifier(name, desc, client)


def resolve_top(client: RegistryClient, ref: Reference, store: Store,
                progress: Progress) -> spec.Descriptor:
    """The top-level descriptor; its document lands in the store byte for byte."""
    repo = ref.repository
    reference = ref.manifest_reference
    if ref.digest is not None and store.has_blob(ref.digest):
        raw = store.read_blob(ref.digest)
        return _descriptor_for(raw, ref.digest)
    head = client.head_manifest(repo, reference)
    if head is not None and store.has_blob(head.digest):
        progress.log(f"{ref}: manifest {head.digest.short} already in the store")
        raw = store.read_blob(head.digest)
        return _descriptor_for(raw, head.digest)
    raw, media_type, digest = client.get_manifest(repo, reference)
    store.put_blob(raw, expected=digest)
    return spec.Descriptor(media_type, digest, len(raw))


def _descriptor_for(raw: bytes, digest: Digest) -> spec.Descriptor:
    doc = spec.parse_manifest_or_index(raw, where=f"manifest {digest}")
    return spec.Descriptor(doc.media_type, digest, len(raw))


def select_manifests(index: spec.Index, options: PullOptions) -> list[spec.Descriptor]:
    """The index entries to fetch: one platform, or all of them but attestations."""
    if not options.all_platforms:
        return [spec.match_platform(index, options.platform or spec.Platform.host())]
    return [d for d in index.manifests if d.media_type in spec.MANIFEST_TYPES
            and (options.include_attestations or not d.is_attestation)]


def fetch_document(client: RegistryClient, repo: str, desc: spec.Descriptor,
                   store: Store) -> None:
    """A manifest referenced by digest, stored exactly as received (if not there yet)."""
    if store.has_blob(desc.digest):
        return
    raw, _media_type, _digest = client.get_manifest(repo, str(desc.digest))
    if len(raw) != desc.size:
        raise InvalidDocument(f"manifest {desc.digest}: {len(raw)} bytes, the index says "
                              f"{desc.size}")
    store.put_blob(raw, expected=desc.digest)


def _read_manifest(store: Store, desc: spec.Descriptor) -> spec.Manifest:
    doc = store.read_manifest(desc)
    if not isinstance(doc, spec.Manifest):
        raise InvalidDocument(f"manifest {desc.digest}: nested index not supported")
    return doc


def fetch_blobs(client: RegistryClient, repo: str, manifests: list[spec.Manifest],
                store: Store, options: PullOptions, progress: Progress) -> None:
    """Configs and layers, each digest once, in parallel (bounded)."""
    wanted: dict[Digest, spec.Descriptor] = {}
    for manifest in manifests:
        for desc in (manifest.config, *manifest.layers):
            if desc.urls and desc.media_type in FOREIGN_LAYER_TYPES:
                # Foreign layers live on another host: never send our credentials there
                # (containerd CVE-2020-15157) and do not fetch them at all.
                progress.log(f"skipping foreign layer {desc.digest.short} ({desc.urls[0]})")
                continue
            wanted.setdefault(desc.digest, desc)
    # Largest first: the longest download starts at once instead of forming a tail
    # that runs alone after the others finished (longest-processing-time scheduling).
    missing = sorted((d for d in wanted.values() if not store.has_blob(d.digest)),
                     key=lambda d: d.size, reverse=True)
    run_bounded([lambda d=d: fetch_one_blob(client, repo, d, store, progress) for d in missing],
                options.concurrency, "pull")


def run_bounded(tasks: list[Callable[[], None]], concurrency: int, name: str) -> None:
    """Run ``tasks`` on at most ``concurrency`` threads; on the first failure cancel
    what has not started, let running ones finish (their partials stay resumable),
    and raise that failure."""
    workers = max(1, min(concurrency, len(tasks)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name) as pool:
        futures = [pool.submit(task) for task in tasks]
        for fut in as_completed(futures):
            if fut.exception() is not None:
                for other in futures:
                    other.cancel()
                raise fut.exception()  # type: ignore[misc]


FOREIGN_LAYER_TYPES = frozenset({spec.DOCKER_LAYER_FOREIGN, spec.OCI_LAYER_NONDIST,
                            spec.OCI_LAYER_NONDIST_GZIP, spec.OCI_LAYER_NONDIST_ZSTD})


def fetch_one_blob(client: RegistryClient, repo: str, desc: spec.Descriptor, store: Store,
                   progress: Progress) -> None:
    key = str(desc.digest)
    progress.start(key, f"blob {desc.digest.short}", desc.size)
    with store.ingest(desc.digest, desc.size) as ingest:
        if ingest.done:
            progress.done(key, "already present")
            return
        client.fetch_blob(repo, desc, ingest, progress)
        ingest.commit()
    progress.done(key)


class Locked:
    """Progress renderers are not thread-safe; workers report through one lock."""

    def __init__(self, inner: Progress) -> None:
        self.inner = inner
        self._lock = threading.Lock()

    def start(self, key: str, description: str, total: int | None) -> None:
        with self._lock:
            self.inner.start(key, description, total)

    def advance(self, key: str, amount: int) -> None:
        with self._lock:
            self.inner.advance(key, amount)

    def done(self, key: str, message: str | None = None) -> None:
        with self._lock:
            self.inner.done(key, message)

    def log(self, message: str) -> None:
        with self._lock:
            self.inner.log(message)


def serialized(progress: Progress) -> Progress:
    return progress if isinstance(progress, Locked) else Locked(progress)


@contextlib.contextmanager
def _lease(store: Store) -> Iterator[None]:
    lease = getattr(store, "lease", None)
    if lease is None:
        yield
        return
    with lease():
        yield
