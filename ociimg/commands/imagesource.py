"""The image the inspection commands read: any transport (a store name, ``oci:``,
``oci-archive:``, ``docker-archive:``, ``dir:``: ociimg.transports) or ``docker://REF``
read from the registry in place: manifests and the config fetched into memory, layers
only when a command reads files (streamed, never spooled or stored).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from ociimg import spec
from ociimg.digest import Digest
from ociimg.errors import InvalidDocument
from ociimg.reference import LayoutReference, Reference, parse_image_name
from ociimg.spec import Descriptor, ImageConfig, Index, Manifest, Platform
from ociimg.store import Store
from ociimg.transports import ImageSource

if TYPE_CHECKING:
    from ociimg.registry.client import ClientOptions, RegistryClient


@dataclass
class OpenedImage:
    """One platform's image, and the top-level document it was found through."""

    name: str
    top: Descriptor
    top_raw: bytes
    descriptor: Descriptor  # the platform's manifest
    manifest: Manifest
    config: ImageConfig
    index: Index | None
    source: ImageSource | None = None  # local transports
    remote: RemoteImage | None = None  # docker:// sources
    platforms: list[str] = field(default_factory=list)

    @property
    def store(self) -> Store | None:
        """The store or ``oci:`` layout holding the blobs, if that is the source."""
        blobs = self.source.blobs if self.source is not None else None
        return blobs if isinstance(blobs, Store) else None

    def local_refs(self) -> list[tuple[str, Descriptor]]:
        """The named images beside this one (a store's or a layout's refs)."""
        refs = getattr(self.source.blobs, "refs", None) if self.source else None
        return list(refs()) if refs is not None else []

    def read_manifest(self, desc: Descriptor) -> Manifest | Index:
        if self.remote is not None:
            return self.remote.get_document(str(desc.digest))[2]
        assert self.source is not None
        return self.source.blobs.read_manifest(desc)  # type: ignore[no-any-return]

    @contextlib.contextmanager
    def open_blob(self, desc: Descriptor) -> Iterator[BinaryIO]:
        """A blob's bytes, verified against its digest as they are read."""
        if self.source is not None:
            with self.source.open_blob(desc.digest, desc.size) as f:
                yield f
            return
        assert self.remote is not None
        with self.remote.stream_blob(desc) as f:
            yield f

    def close(self) -> None:
        if self.source is not None:
            self.source.close()
        if self.remote is not None:
            self.remote.close()


def is_remote(text: str) -> bool:
    return text.startswith("docker://")


def open_image(text: str, root: Path, platform: Platform | None = None,
               client_options: ClientOptions | None = None) -> OpenedImage:
    """``text`` as any transport; ``docker://REF`` read from the registry in place."""
    if is_remote(text):
        ref = parse_image_name(text)
        assert isinstance(ref, Reference)
        return RemoteImage(ref, client_options).open(platform)
    source = _store_source(text, root)
    if source is None:  # the archives and dir: (their readers import the registry client)
        from ociimg.transports import parse_transport

        source = parse_transport(text, root)
    try:
        desc, manifest = source.manifest(platform)
        config = source.config()
        index = source.index()
        return OpenedImage(source.name or text, source.top, source.raw_manifest(), desc,
                           manifest, config, index, source=source,
                           platforms=_platforms(index))
    except BaseException:
        source.close()
        raise


def _store_source(text: str, root: Path) -> ImageSource | None:
    """The store or an ``oci:`` layout read directly: the other transports' readers
    import the registry client, ~100 ms a history or an ``ls`` need not pay."""
    if text.startswith(("oci-archive:", "docker-archive:", "dir:", "docker-daemon:")):
        return None
    if text.startswith("oci:"):
        ref = parse_image_name(text)
        assert isinstance(ref, LayoutReference)
        if not (ref.path / "oci-layout").is_file():
            from ociimg.errors import InvalidReference

            raise InvalidReference(f"{text}: {ref.path} is not an OCI layout (no oci-layout)")
        store = Store(ref.path)
        name = ref.tag or _only_name(store, text)
        # A layout is whatever someone put in that directory: blobs hashed as read.
        return ImageSource(text, store, store.resolve(name), name)
    from ociimg.commands.resolve import store_name

    store = Store(Path(root) / "store")  # only read: a missing store stays missing
    name = store_name(store, text)
    return _Trusted(text, store, store.resolve(name), name)


def _only_name(store: Store, text: str) -> str:
    names = [n for n, _ in store.refs()]
    if len(names) == 1:
        return names[0]
    from ociimg.errors import InvalidReference

    raise InvalidReference(f"{text}: the layout holds {len(names)} images; name one",
                           hint=f"use {text}:NAME, one of: {', '.join(names[:20])}")


def _platforms(index: Index | None) -> list[str]:
    return [str(p) for p in index.platforms()] if index else []


class _Trusted(ImageSource):
    """A store or layout image: its blobs were verified when written (``fsck``
    re-checks them), so they are read without hashing them again."""

    @contextlib.contextmanager
    def open_blob(self, digest: Digest | str, size: int | None = None) -> Iterator[BinaryIO]:
        with self.blobs.open_blob(digest) as f:
            yield f


class _MemorySink:
    """A BlobSink for small documents (a config): bytes in memory, capped."""

    def __init__(self, limit: int) -> None:
        self.buf = io.BytesIO()
        self.offset = 0
        self.limit = limit

    def write(self, data: bytes) -> int:
        if self.offset + len(data) > self.limit:
            raise InvalidDocument(f"blob larger than {self.limit} bytes")
        self.offset += len(data)
        return self.buf.write(data)

    def restart(self) -> None:
        self.buf = io.BytesIO()
        self.offset = 0


class RemoteImage:
    """A registry image read in place: manifests and the config, never a layer unless
    a command asks for one (ls/cat of a docker:// image stream it)."""

    def __init__(self, ref: Reference, options: ClientOptions | None = None) -> None:
        self.ref = ref
        self.options = options
        self._client: RegistryClient | None = None

    @property
    def client(self) -> RegistryClient:
        if self._client is None:
            from ociimg.registry.client import RegistryClient

            self._client = RegistryClient.open(self.ref.domain, self.ref.api_host,
                                               self.options, self.ref.repository)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def get_document(self, reference: str) -> tuple[bytes, Descriptor, Manifest | Index]:
        raw, media_type, digest = self.client.get_manifest(self.ref.repository, reference)
        doc = spec.parse_manifest_or_index(raw, media_type, where=f"manifest {digest}")
        return raw, Descriptor(media_type, digest, len(raw)), doc

    def read_blob(self, desc: Descriptor, limit: int) -> bytes:
        """A small blob (config, attestation) fetched into memory and verified."""
        if desc.size > limit:
            raise InvalidDocument(f"blob {desc.digest}: {desc.size} bytes, more than {limit}")
        sink = _MemorySink(limit)
        self.client.fetch_blob(self.ref.repository, desc, sink)
        data = sink.buf.getvalue()
        if Digest.of(data, desc.digest.algorithm) != desc.digest:
            from ociimg.errors import DigestMismatch

            raise DigestMismatch(f"blob {desc.digest}: content does not match its digest")
        return data

    @contextlib.contextmanager
    def stream_blob(self, desc: Descriptor) -> Iterator[BinaryIO]:
        from ociimg.registry.client import blob_stream

        with blob_stream(self.client, self.ref.repository, desc) as stream:
            yield stream

    def open(self, platform: Platform | None) -> OpenedImage:
        top_raw, top, doc = self.get_document(self.ref.manifest_reference)
        index = doc if isinstance(doc, Index) else None
        desc, manifest = top, doc
        if index is not None:
            desc = spec.match_platform(index, platform or Platform.host())
            _raw, desc, manifest = self.get_document(str(desc.digest))
        if not isinstance(manifest, Manifest):
            raise InvalidDocument(f"{self.ref}: nested index {desc.digest} not supported")
        if manifest.config.media_type not in (spec.OCI_CONFIG, spec.DOCKER_CONFIG):
            raise InvalidDocument(f"{self.ref}: config type {manifest.config.media_type} is "
                                  "not a container image", hint="this is an artifact")
        config = spec.parse_config(self.read_blob(manifest.config, spec.MAX_CONFIG_BYTES),
                                   where=f"config {manifest.config.digest}")
        return OpenedImage(str(self.ref), top, top_raw, desc, manifest, config, index,
                           remote=self, platforms=_platforms(index))
