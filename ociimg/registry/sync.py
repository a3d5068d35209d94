"""Sync repositories or lists of images between registries and OCI layouts, skipping
every image the destination already has with the same digest (skopeo sync).

A source given without a tag is the whole repository (every tag, listed through the
paginated tags API) or the whole layout (every ref name). A registry destination is a
prefix: ``SRC_HOST/a/b/app:1`` goes to ``DEST/app:1`` (skopeo sync's default); a layout
destination gets ``app:1`` as the ref name. Each image keeps its digest (all platforms
copied, as ``copy`` does by default).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ociimg.digest import Digest
from ociimg.errors import ImageNotFound, InvalidReference, ManifestUnknown
from ociimg.reference import LayoutReference, Reference, parse_image_name, parse_reference
from ociimg.registry.client import ClientOptions, RegistryClient
from ociimg.registry.copy import CopyOptions, ImageName, copy
from ociimg.store import Store


@dataclass
class SyncOptions:
    insecure: bool = False
    ca_bundle: Path | None = None
    auth_file: Path | None = None
    page_size: int | None = None
    dry_run: bool = False
    clients: dict[str, RegistryClient] = field(default_factory=dict)

    def client_options(self) -> ClientOptions:
        return ClientOptions(insecure=self.insecure, ca_bundle=self.ca_bundle,
                             auth_file=self.auth_file)

    def client(self, ref: Reference) -> RegistryClient:
        if ref.api_host not in self.clients:
            self.clients[ref.api_host] = RegistryClient.open(
                ref.domain, ref.api_host, self.client_options(), ref.repository)
        return self.clients[ref.api_host]

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
        self.clients.clear()


@dataclass
class SyncResult:
    source: str
    destination: str
    digest: str
    copied: bool


def has_explicit_tag(text: str) -> bool:
    last = text.removeprefix("docker://").rsplit("/", 1)[-1]
    return ":" in last or "@" in last


def expand_source(text: str, options: SyncOptions) -> list[ImageName]:
    """One source argument → the images it names."""
    if text.startswith(("oci:", "oci-archive:")):
        ref = parse_image_name(text)
        assert isinstance(ref, LayoutReference)
        if ref.tag or ref.kind != "oci":
            return [ref]
        return [LayoutReference("oci", ref.path, name) for name, _ in Store(ref.path).refs()]
    ref = parse_reference(text)
    if has_explicit_tag(text):
        return [ref]
    tags = options.client(ref).list_tags(ref.repository, options.page_size)
    return [ref.with_tag(t) for t in sorted(tags)]


def _repo_and_tag(src: ImageName) -> tuple[str, str]:
    if isinstance(src, Reference):
        return src.repository.rsplit("/", 1)[-1], src.tag or src.digest.hex[:12]  # type: ignore[union-attr]
    name = src.tag or "latest"
    if ":" in name:
        repo, _, tag = name.rpartition(":")
        return repo.rsplit("/", 1)[-1], tag
    return src.path.name.lower() or "image", name


def destination_for(src: ImageName, dest: str) -> ImageName:
    repo, tag = _repo_and_tag(src)
    if dest.startswith("oci:"):
        ref = parse_image_name(dest)
        assert isinstance(ref, LayoutReference)
        return LayoutReference("oci", ref.path, f"{repo}:{tag}")
    base = dest.removeprefix("docker://").rstrip("/")
    try:
        return parse_reference(f"{base}/{repo}:{tag}")
    except InvalidReference as exc:
        raise InvalidReference(f"sync destination {dest}: {exc.message}",
                               hint="give a registry prefix (docker://HOST[/PATH]) or "
                               "oci:DIR") from exc


def current_digest(ref: ImageName, options: SyncOptions) -> Digest | None:
    """What ``ref`` points to now; None if nothing."""
    if isinstance(ref, LayoutReference):
        if not (ref.path / "index.json").is_file():
            return None
        with contextlib.suppress(ImageNotFound):
            return Store(ref.path).resolve(ref.tag or "latest").digest
        return None
    client = options.client(ref)
    try:
        head = client.head_manifest(ref.repository, ref.manifest_reference)
        if head is not None:
            return head.digest
        return client.get_manifest(ref.repository, ref.manifest_reference)[2]
    except ManifestUnknown:
        return None


def sync(sources: list[str], dest: str, options: SyncOptions | None = None,
         report: Callable[[SyncResult], None] | None = None) -> list[SyncResult]:
    options = options or SyncOptions()
    results: list[SyncResult] = []
    try:
        for text in sources:
            for src in expand_source(text, options):
                dst = destination_for(src, dest)
                digest = current_digest(src, options)
                if digest is None:
                    raise ManifestUnknown(f"sync: source {src} not found")
                present = current_digest(dst, options) == digest
                if not present and not options.dry_run:
                    digest = copy(src, dst, CopyOptions(
                        all_platforms=True, src_insecure=options.insecure,
                        dest_insecure=options.insecure, ca_bundle=options.ca_bundle,
                        auth_file=options.auth_file))
                result = SyncResult(str(src), str(dst), str(digest), not present)
                results.append(result)
                if report is not None:
                    report(result)
    finally:
        options.close()
    return results
