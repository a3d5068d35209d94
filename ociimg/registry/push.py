"""Push: store → registry, keeping every digest.

Order matters to the registry (distribution-spec spec.md "Pushing"): blobs first, then
manifests children-first, the top-level document last under the destination tag —
a registry may refuse a manifest whose blobs, or an index whose manifests, it lacks.
Documents are pushed as the raw bytes in the store, so digests never change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ociimg import spec
from ociimg.digest import Digest
from ociimg.errors import (
    DigestMismatch,
    ImageNotFound,
    InvalidDocument,
    NoMatchingPlatform,
    RegistryUnreachable,
)
from ociimg.events import NullProgress, Progress
from ociimg.reference import Reference
from ociimg.registry.client import ClientOptions, RegistryClient
from ociimg.registry.pull import run_bounded, serialized
from ociimg.store import Store

_UPLOAD_ATTEMPTS = 3


@dataclass
class PushOptions:
    insecure: bool = False
    ca_bundle: Path | None = None
    auth_file: Path | None = None
    concurrency: int = 4
    chunk_size: int | None = None  # PATCH uploads in chunks of this size; None: monolithic
    chunked_threshold: int | None = None  # only blobs above this go chunked (default: chunk_size)
    platform: spec.Platform | None = None  # push only this platform's manifest of an index
    mount_from: tuple[str, ...] = ()  # repositories on the same registry to mount blobs from
    retries: int = 5
    backoff_base: float = 0.5

    def client_options(self) -> ClientOptions:
        threshold = self.chunked_threshold
        if threshold is None:
            threshold = self.chunk_size or 0
        return ClientOptions(insecure=self.insecure, ca_bundle=self.ca_bundle,
                             auth_file=self.auth_file, retries=self.retries,
                             concurrency=self.concurrency, backoff_base=self.backoff_base,
                             chunk_size=self.chunk_size, chunked_threshold=threshold)


@dataclass(frozen=True)
class PushPlan:
    top: spec.Descriptor
    manifests: list[tuple[spec.Descriptor, spec.Manifest]]  # pushed before ``top``


def push(store: Store, source_name: str, dest: Reference, options: PushOptions | None = None,
         progress: Progress | None = None) -> Digest:
    """Push the image named ``source_name`` in ``store`` to ``dest``; returns its digest."""
    desc = store.resolve(source_name)
    return push_descriptor(store, desc, dest, options, progress, source_name)


def push_descriptor(store: Store, desc: spec.Descriptor, dest: Reference,
                    options: PushOptions | None = None, progress: Progress | None = None,
                    name: str | None = None) -> Digest:
    options = options or PushOptions()
    progress = serialized(progress or NullProgress())
    plan = plan_push(store, desc, options.platform, name or str(desc.digest), progress)
    target = dest_reference(dest, plan.top.digest)
    client = RegistryClient.open(dest.domain, dest.api_host, options.client_options(),
                                 dest.repository)
    try:
        upload_blobs(client, dest.repository, plan, store, options, progress)
        for child, _manifest in plan.manifests:
            if child.digest != plan.top.digest:
                client.put_manifest(dest.repository, str(child.digest),
                                    store.read_blob(child.digest), child.media_type)
        client.put_manifest(dest.repository, target, store.read_blob(plan.top.digest),
                            plan.top.media_type)
    finally:
        client.close()
    return plan.top.digest


def dest_reference(dest: Reference, digest: Digest) -> str:
    """The tag to push under, or the digest itself for a by-digest destination."""
    if dest.digest is not None and dest.digest != digest:
        raise DigestMismatch(f"push to {dest}: the image's digest is {digest}",
                             hint="drop @digest from the destination, or push that image")
    return dest.tag if dest.tag else str(digest)


def plan_push(store: Store, desc: spec.Descriptor, platform: spec.Platform | None,
              name: str, progress: Progress) -> PushPlan:
    doc = store.read_manifest(desc)
    if isinstance(doc, spec.Manifest):
        return PushPlan(desc, [(desc, doc)])
    if platform is not None:
        child = spec.match_platform(doc, platform)
        return PushPlan(child, [(child, _manifest(store, child, name))])
    missing = [c for c in doc.manifests if not store.has_blob(c.digest)]
    if not missing:
        return PushPlan(desc, [(c, _manifest(store, c, name)) for c in doc.manifests])
    # Pulled for one platform only: push that image alone (skopeo's default
    # --multi-arch=system); the registry would refuse an index with missing children.
    try:
        child = spec.match_platform(doc, spec.Platform.host())
    except NoMatchingPlatform:
        child = None
    if child is None or not store.has_blob(child.digest):
        what = ", ".join(str(c.platform or c.digest.short) for c in missing)
        raise ImageNotFound(
            f"push {name}: the index lists {len(missing)} manifest(s) not in the store ({what})",
            hint="pull the source with --all-platforms, or push one platform with --platform")
    progress.log(f"push {name}: only {child.platform} was pulled; pushing that image alone "
                 f"({child.digest.short}), not the index")
    return PushPlan(child, [(child, _manifest(store, child, name))])


def _manifest(store: Store, desc: spec.Descriptor, name: str) -> spec.Manifest:
    doc = store.read_manifest(desc)
    if not isinstance(doc, spec.Manifest):
        raise InvalidDocument(f"push {name}: nested index {desc.digest} not supported")
    return doc


def upload_blobs(client: RegistryClient, repo: str, plan: PushPlan, store: Store,
                 options: PushOptions, progress: Progress) -> None:
    blobs: dict[Digest, spec.Descriptor] = {}
    for _desc, manifest in plan.manifests:
        for d in (manifest.config, *manifest.layers):
            if d.urls and not store.has_blob(d.digest):
                progress.log(f"skipping foreign layer {d.digest.short} (not in the store)")
                continue
            blobs.setdefault(d.digest, d)
    run_bounded([lambda d=d: upload_one_blob(client, repo, d, store, options, progress)
                 for d in blobs.values()], options.concurrency, "push")


def upload_one_blob(client: RegistryClient, repo: str, desc: spec.Descriptor, store: Store,
                    options: PushOptions, progress: Progress) -> None:
    key = str(desc.digest)
    progress.start(key, f"blob {desc.digest.short}", desc.size)
    if client.blob_exists(repo, desc.digest):
        progress.done(key, "already exists")
        return
    for source in options.mount_from:
        if source != repo and client.mount_blob(repo, desc.digest, source):
            progress.done(key, f"mounted from {source}")
            return
    if not store.has_blob(desc.digest):
        raise ImageNotFound(f"push: blob {desc.digest} is not in the store {store.path}",
                            hint="pull the image again, then push")
    for attempt in range(1, _UPLOAD_ATTEMPTS + 1):
        try:
            client.upload_blob(repo, desc, lambda: store.open_blob(desc.digest), progress)
            break
        except RegistryUnreachable:
            # The upload session died with the connection: start a new one.
            if attempt == _UPLOAD_ATTEMPTS:
                raise
    progress.done(key)
