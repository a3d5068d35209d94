"""Copy an image between registries and OCI layouts, keeping digests (skopeo copy).

Every source is first made available as a store (a registry source is fetched into a
store: the caller's, else a temporary one); every destination is then written from that
store. Documents travel as raw bytes, so digests are preserved. Without
``all_platforms`` an index is narrowed to one platform's manifest, as skopeo's default
``--multi-arch system`` does; with it the index is copied whole, attestations included,
so its digest stays the same.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ociimg import spec
from ociimg.digest import Digest, is_digest
from ociimg.errors import InvalidReference, UnsafeArchive
from ociimg.events import NullProgress, Progress
from ociimg.reference import LayoutReference, Reference
from ociimg.registry.client import RegistryClient
from ociimg.registry.pull import PullOptions, fetch_image, serialized
from ociimg.registry.push import PushOptions, push_descriptor
from ociimg.store import Store

ImageName = Reference | LayoutReference


@dataclass
class CopyOptions:
    platform: spec.Platform | None = None
    all_platforms: bool = False
    src_insecure: bool = False
    dest_insecure: bool = False
    ca_bundle: Path | None = None
    auth_file: Path | None = None
    concurrency: int = 4
    chunk_size: int | None = None
    retries: int = 5
    backoff_base: float = 0.5

    def pull_options(self) -> PullOptions:
        return PullOptions(platform=self.platform, all_platforms=self.all_platforms,
                           include_attestations=self.all_platforms,
                           insecure=self.src_insecure, ca_bundle=self.ca_bundle,
                           auth_file=self.auth_file, concurrency=self.concurrency,
                           retries=self.retries, backoff_base=self.backoff_base)

    def push_options(self) -> PushOptions:
        return PushOptions(insecure=self.dest_insecure, ca_bundle=self.ca_bundle,
                           auth_file=self.auth_file, concurrency=self.concurrency,
                           chunk_size=self.chunk_size, retries=self.retries,
                           backoff_base=self.backoff_base,
                           platform=None if self.all_platforms else self.platform)


def copy(src: ImageName, dst: ImageName, options: CopyOptions | None = None,
         progress: Progress | None = None, *, cache: Store | None = None) -> Digest:
    """Copy ``src`` to ``dst``; returns the digest of what was written at ``dst``."""
    options = options or CopyOptions()
    progress = serialized(progress or NullProgress())
    with _source(src, options, progress, cache) as (store, desc):
        desc = narrow(store, desc, options)
        if isinstance(dst, Reference):
            push_options = options.push_options()
            push_options.platform = None  # already narrowed
            return push_descriptor(store, desc, dst, push_options, progress, str(src))
        with _layout_dest(dst) as dest_store:
            copy_between_stores(store, dest_store, desc)
            dest_store.tag(layout_name(dst, src), desc)
        return desc.digest


def narrow(store: Store, desc: spec.Descriptor, options: CopyOptions) -> spec.Descriptor:
    """An index becomes the one platform's manifest unless all platforms are copied."""
    if options.all_platforms or desc.media_type not in spec.INDEX_TYPES:
        return desc
    doc = store.read_manifest(desc)
    if isinstance(doc, spec.Index):
        return spec.match_platform(doc, options.platform or spec.Platform.host())
    return desc


def layout_name(dst: LayoutReference, src: ImageName) -> str:
    """The ref name in the destination layout: as given, else the source's tag."""
    if dst.tag:
        return dst.tag
    if isinstance(src, Reference) and src.tag:
        return src.tag
    if isinstance(src, LayoutReference) and src.tag:
        return src.tag
    return "latest"


def copy_between_stores(src: Store, dst: Store, desc: spec.Descriptor) -> None:
    """Every blob reachable from ``desc`` that ``dst`` lacks, leaves first."""
    for d in reversed(list(src.walk(desc))):
        if dst.has_blob(d.digest) or not src.has_blob(d.digest):
            continue  # absent in src: an unselected platform or a foreign layer
        with src.open_blob(d.digest) as stream:
            dst.put_stream(stream, expected=d.digest, size=d.size)


@contextlib.contextmanager
def _source(src: ImageName, options: CopyOptions, progress: Progress,
            cache: Store | None) -> Iterator[tuple[Store, spec.Descriptor]]:
    if isinstance(src, LayoutReference):
        with _layout_source(src) as store:
            yield store, resolve_layout(store, src)
        return
    with _scratch_store(cache) as store:
        client = RegistryClient.open(src.domain, src.api_host,
                                     options.pull_options().client_options(), src.repository)
        try:
            with store.lease():
                top, _images = fetch_image(client, src, store, options.pull_options(), progress)
                yield store, top
        finally:
            client.close()


def resolve_layout(store: Store, ref: LayoutReference) -> spec.Descriptor:
    """The image named ``ref.tag`` in a layout, or its only image when no tag is given."""
    if ref.tag:
        if is_digest(ref.tag):
            found = [d for d in store.entries() if str(d.digest) == ref.tag]
            if found:
                return found[0]
        return store.resolve(ref.tag)
    entries = store.entries()
    if len(entries) != 1:
        raise InvalidReference(f"{ref}: the layout holds {len(entries)} images; name one",
                               hint=f"use {ref.kind}:{ref.path}:NAME")
    return entries[0]


@contextlib.contextmanager
def _scratch_store(cache: Store | None) -> Iterator[Store]:
    if cache is not None:
        cache.init()
        yield cache
        return
    with tempfile.TemporaryDirectory(prefix="ociimg-copy-") as tmp:
        store = Store(Path(tmp) / "store")
        store.init()
        yield store


@contextlib.contextmanager
def _layout_source(ref: LayoutReference) -> Iterator[Store]:
    if ref.kind == "oci":
        if not (ref.path / "oci-layout").is_file():
            raise InvalidReference(f"{ref}: {ref.path} is not an OCI layout (no oci-layout)")
        yield Store(ref.path)
        return
    with tempfile.TemporaryDirectory(prefix="ociimg-archive-") as tmp:
        extract_layout_archive(ref.path, Path(tmp))
        yield Store(Path(tmp))


@contextlib.contextmanager
def _layout_dest(ref: LayoutReference) -> Iterator[Store]:
    if ref.kind == "oci":
        store = Store(ref.path)
        store.init()
        yield store
        return
    with tempfile.TemporaryDirectory(prefix="ociimg-archive-",
                                     dir=ref.path.parent if ref.path.parent.exists() else None
                                     ) as tmp:
        layout = Path(tmp) / "layout"
        if ref.path.exists():
            extract_layout_archive(ref.path, layout)  # add to an existing archive
        store = Store(layout)
        store.init()
        yield store
        write_layout_archive(layout, ref.path)


def extract_layout_archive(archive: Path, dest: Path) -> None:
    """Only the layout's own files: oci-layout, index.json, blobs/<alg>/<hex>, regular."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            if member.isdir() or name in ("", "."):
                continue
            if not member.isreg() or not _is_layout_member(name):
                raise UnsafeArchive(f"{archive}: unexpected entry {member.name[:100]!r} in an "
                                    "OCI archive", hint="only OCI image layouts are accepted")
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, open(target, "wb") as out:  # type: ignore[union-attr]
                shutil.copyfileobj(src, out, 1 << 20)


def _is_layout_member(name: str) -> bool:
    if name in ("oci-layout", "index.json"):
        return True
    parts = name.split("/")
    return len(parts) == 3 and parts[0] == "blobs" and is_digest(f"{parts[1]}:{parts[2]}")


def write_layout_archive(layout: Path, archive: Path) -> None:
    """tar the layout (no ingest/ or lock files) to ``archive``, atomically."""
    fd, tmp = tempfile.mkstemp(dir=archive.parent, prefix=f".{archive.name}.")
    os.close(fd)
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for name in ("oci-layout", "index.json"):
                tar.add(layout / name, arcname=name)
            for blob in sorted((layout / "blobs").glob("*/*")):
                tar.add(blob, arcname=f"blobs/{blob.parent.name}/{blob.name}")
        os.replace(tmp, archive)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
