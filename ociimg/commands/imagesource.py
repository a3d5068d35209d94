"""The image the inspection commands read: a store name, an ``oci:`` layout, or a
``docker://`` reference read from the registry without a pull.

A bridge until the transport module (INTERFACES.md "Image sources") is merged: it
offers the same read side (manifest, config, verified blob streams, raw manifest) over
the sources the existing code already reads.
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
from ociimg.errors import InvalidDocument, InvalidReference
from ociimg.reference import LayoutReference, Reference, parse_image_name
from ociimg.spec import Descriptor, ImageConfig, Index, Manifest, Platform
from ociimg.store import Store

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
    store: Store | None = None  # local sources
    remote: RemoteImage | None = None  # docker:// sources
    platforms: list[str] = field(default_factory=list)

    @contextlib.contextmanager
    def open_blob(self, desc: Descriptor) -> Iterator[BinaryIO]:
        """A layer's compressed bytes: local blobs are verified when written to the
        store; a registry's are streamed (the tar reader is the consumer)."""
        if self.store is not None:
            with self.store.open_blob(desc.digest) as f:
                yield f
            return
        assert self.remote is not None
        with self.remote.stream_blob(desc) as f:
            yield f


def is_remote(text: str) -> bool:
    return text.startswith("docker://")


def open_image(text: str, root: Path, platform: Platform | None = None,
               client_options: ClientOptions | None = None) -> OpenedImage:
    """``text`` as a store name, ``oci:DIR[:REF]`` or ``docker://REF``."""
    if is_remote(text):
        ref = parse_image_name(text)
        assert isinstance(ref, Reference)
        return RemoteImage(ref, client_options).open(platform)
    store, name = local_store(text, root)
    return _open_local(store, name, platform)


def local_store(text: str, root: Path) -> tuple[Store, str]:
    """The store and the name in it that ``text`` means (a layout or the store)."""
    if text.startswith(("oci:", "oci-archive:")):
        ref = parse_image_name(text)
        assert isinstance(ref, LayoutReference)
        if ref.kind != "oci":
            raise InvalidReference(f"{text}: read oci: layouts, docker:// or the store here",
                                   hint=f"copy it into a layout first: ociimg copy {text} "
                                   "oci:DIR:TAG")
        if not (ref.path / "oci-layout").is_file():
            raise InvalidReference(f"{text}: {ref.path} is not an OCI layout (no oci-layout)")
        store = Store(ref.path)
        return store, _layout_name(store, ref)
    from ociimg.commands.resolve import store_name

    store = Store.open(root)
    return store, store_name(store, text)


def _layout_name(store: Store, ref: LayoutReference) -> str:
    if ref.tag:
        return ref.tag
    names = [n for n, _ in store.refs()]
    if len(names) == 1:
        return names[0]
    raise InvalidReference(f"{ref}: the layout holds {len(names)} images; name one",
                           hint=f"use oci:{ref.path}:NAME, one of: {', '.join(names[:20])}")


def _open_local(store: Store, name: str, platform: Platform | None) -> OpenedImage:
    top = store.resolve(name)
    desc, manifest, config = store.image_for(name, platform)
    index = None
    if top.media_type in spec.INDEX_TYPES:
        doc = store.read_manifest(top)
        index = doc if isinstance(doc, Index) else None
    return OpenedImage(name, top, store.read_blob(top.digest), desc, manifest, config, index,
                       store=store, platforms=_platforms(index))


def _platforms(index: Index | None) -> list[str]:
    return [str(p) for p in index.platforms()] if index else []


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
