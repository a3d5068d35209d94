"""``docker-archive:`` — what ``docker save`` writes and ``docker load`` reads, read in
place and written as a stream.

Two formats share one file: ``manifest.json`` (a list of ``{"Config", "RepoTags",
"Layers"}``) naming members of the tar — the legacy one (``<id>/layer.tar``,
``<config-hex>.json``, ``repositories``; skopeo writes ``<diffid-hex>.tar``) and
Docker ≥ 25's, which is an OCI layout (``blobs/sha256/…``) with the same
``manifest.json`` beside its ``index.json`` (moby image/tarexport). Both are read
through ``manifest.json`` only: layers are the uncompressed tars named there, whose
digests are the config's diff IDs, so an image is presented as an OCI manifest built
from the config (as containers/image's docker-archive source does), and the same file
gives the same manifest digest every time.

The archive is hostile input: members are indexed by :class:`MemberArchive` (bounded
headers and counts, no devices, only this format's names); links (``docker save``
writes a layer shared by two images once and links the other ``layer.tar`` to it) are
followed only to another member, never out of the archive; every name in
``manifest.json`` must be such a member; the config must hash to its name, and layers
are checked against the diff IDs by whoever reads them (a verified copy).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

from ociimg import spec
from ociimg.digest import Digest, HashingReader
from ociimg.errors import (
    BlobUnknown,
    DiffIDMismatch,
    DigestMismatch,
    ImageNotFound,
    InvalidDocument,
    InvalidReference,
    UnsafeArchive,
)
from ociimg.reference import parse_reference
from ociimg.registry.archive import MemberArchive, _names_hint

MAX_LINK_HOPS = 8
MAX_IMAGES = 4096
MAX_CONFIG_TOTAL = 64 << 20
_HEX = r"[a-f0-9]{64}"
_MEMBER_RE = re.compile(
    rf"manifest\.json|repositories|oci-layout|index\.json|{_HEX}\.json|{_HEX}\.tar|"
    rf"{_HEX}/(?:layer\.tar|json|VERSION)|blobs/sha256/{_HEX}|blobs/sha512/[a-f0-9]{{128}}")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class DockerImage:
    """One entry of manifest.json, as an OCI image: names, manifest, config."""

    names: tuple[str, ...]
    descriptor: spec.Descriptor  # of the manifest built from the config
    config: spec.Descriptor


class DockerArchive(MemberArchive):
    """The read side of a Store (has_blob, open_blob, read_blob, read_manifest, entries,
    refs, resolve) over a ``docker save`` tar."""

    kind = "docker-archive"
    allow_links = True

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        if "manifest.json" not in self.members:
            raise InvalidReference(f"{self.path}: not a docker-archive (no manifest.json)")
        self._docs: dict[Digest, bytes] = {}
        self._layers: dict[Digest, str] = {}
        raw = self.read_member("manifest.json", spec.MAX_MANIFEST_BYTES)
        entries = spec.load_json(raw, f"{self.path}:manifest.json", spec.MAX_MANIFEST_BYTES)
        if not isinstance(entries, list) or not entries:
            raise InvalidDocument(f"{self.path}:manifest.json: not a non-empty list of images")
        if len(entries) > MAX_IMAGES:
            raise UnsafeArchive(f"{self.path}: manifest.json lists {len(entries)} images "
                                f"(limit {MAX_IMAGES})")
        self._config_bytes = 0
        self.images = [self._image(e, f"manifest.json[{i}]") for i, e in enumerate(entries)]

    @staticmethod
    def accepts(name: str) -> bool:
        return _MEMBER_RE.fullmatch(name) is not None

    # manifest.json -------------------------------------------------------------------
    def _image(self, entry: Any, where: str) -> DockerImage:
        if not isinstance(entry, dict):
            raise InvalidDocument(f"{self.path}:{where}: not an object")
        config_name = _field(entry, "Config", str, where)
        tags = _field(entry, "RepoTags", list, where, optional=True) or []
        layer_names = _field(entry, "Layers", list, where)
        config_raw = self.read_member(self.target(config_name, f"{where}.Config"),
                                      spec.MAX_CONFIG_BYTES)
        # Entries may all name one 4 MiB config: reading is bounded in total, not per entry.
        self._config_bytes += len(config_raw)
        if self._config_bytes > MAX_CONFIG_TOTAL:
            raise UnsafeArchive(f"{self.path}: the images' configs exceed {MAX_CONFIG_TOTAL} "
                                "bytes in total")
        config_digest = Digest.of(config_raw)
        named = re.search(rf"({_HEX})(?:\.json)?$", config_name)
        if named and named.group(1) != config_digest.hex:
            raise DigestMismatch(f"{self.path}: config {config_name} hashes to {config_digest}",
                                 hint="the archive is corrupt or was altered")
        config = spec.parse_config(config_raw, where=f"{self.path}:{config_name}")
        if len(layer_names) != len(config.diff_ids):
            raise InvalidDocument(f"{self.path}:{where}: {len(layer_names)} layers, the config "
                                  f"has {len(config.diff_ids)} diff IDs")
        layers = []
        for i, (name, diff_id) in enumerate(zip(layer_names, config.diff_ids, strict=True)):
            if not isinstance(name, str):
                raise InvalidDocument(f"{self.path}:{where}.Layers[{i}]: not a string")
            member = self.target(name, f"{where}.Layers[{i}]")
            self._layers.setdefault(diff_id, member)
            layers.append(spec.Descriptor(spec.OCI_LAYER, diff_id,
                                          self.members[self._layers[diff_id]].size))
        self._docs[config_digest] = config_raw
        config_desc = spec.Descriptor(spec.OCI_CONFIG, config_digest, len(config_raw))
        manifest = spec.canonical_json({
            "schemaVersion": 2, "mediaType": spec.OCI_MANIFEST,
            "config": config_desc.to_json(), "layers": [d.to_json() for d in layers]})
        digest = Digest.of(manifest)
        self._docs[digest] = manifest
        names = tuple(_normalized_tag(t, f"{self.path}:{where}.RepoTags") for t in tags)
        return DockerImage(names, spec.Descriptor(spec.OCI_MANIFEST, digest, len(manifest)),
                           config_desc)

    def target(self, name: str, where: str) -> str:
        """The regular member ``name`` is, following links inside the archive only."""
        seen = name
        for _ in range(MAX_LINK_HOPS):
            if name.startswith("/") or name == ".." or name.startswith("../") or \
                    "/../" in name or "\0" in name:
                via = f" (through a link to {name[:100]!r})" if name != seen else ""
                raise UnsafeArchive(f"{self.path}: {where} {seen[:100]!r} points outside "
                                    f"the archive{via}")
            if name in self.members:
                return name
            link = self.links.get(name)
            if link is None:
                raise InvalidDocument(f"{self.path}: {where} {seen[:100]!r} is not in the "
                                      "archive")
            name = link
        raise UnsafeArchive(f"{self.path}: {where} {seen[:100]!r}: more than "
                            f"{MAX_LINK_HOPS} links")

    # The read side of a Store --------------------------------------------------------
    def has_blob(self, digest: Digest | str) -> bool:
        d = Digest.coerce(digest)
        return d in self._docs or d in self._layers

    def open_blob(self, digest: Digest | str) -> IO[bytes]:
        d = Digest.coerce(digest)
        if d in self._docs:
            return io.BytesIO(self._docs[d])
        if d in self._layers:
            return self.open_member(self._layers[d])
        raise BlobUnknown(f"blob {digest} not in the archive {self.path}")

    def read_blob(self, digest: Digest | str, limit: int = spec.MAX_MANIFEST_BYTES) -> bytes:
        d = Digest.coerce(digest)
        if d not in self._docs:
            raise BlobUnknown(f"document {d} not in the archive {self.path}")
        return self._docs[d]

    def read_manifest(self, desc: spec.Descriptor) -> spec.Manifest | spec.Index:
        return spec.parse_manifest_or_index(self.read_blob(desc.digest), desc.media_type,
                                            where=f"manifest {desc.digest}")

    def entries(self) -> list[spec.Descriptor]:
        return [image.descriptor for image in self.images]

    def refs(self) -> list[tuple[str, spec.Descriptor]]:
        return [(name, image.descriptor) for image in self.images for name in image.names]

    def resolve(self, name: str) -> spec.Descriptor:
        """An image by a RepoTag (as given or normalised), its image ID (config digest,
        docker's ``sha256:…``) or manifest digest."""
        try:
            normalized = str(parse_reference(name))
        except InvalidReference:
            normalized = name
        for image in self.images:
            if name in image.names or normalized in image.names or \
                    name in (str(image.config.digest), str(image.descriptor.digest)):
                return image.descriptor
        raise ImageNotFound(f"image {name} not found in the archive {self.path}",
                            hint=_names_hint(self.refs()))


def _field(doc: dict[str, Any], key: str, typ: type, where: str, *,
           optional: bool = False) -> Any:
    value = doc.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, typ):
        raise InvalidDocument(f"{where}.{key}: expected a {typ.__name__}")
    return value


def _normalized_tag(tag: Any, where: str) -> str:
    if not isinstance(tag, str):
        raise InvalidDocument(f"{where}: not a string")
    ref = parse_reference(tag)
    if ref.digest is not None:
        raise InvalidDocument(f"{where}: {tag[:100]!r} is not a name:tag")
    return str(ref)


# Writing ------------------------------------------------------------------------------
LayerOpener = Callable[[], BinaryIO]


@dataclass(frozen=True)
class SavedImage:
    """What goes into a docker-archive for one image: names, config bytes, and for each
    diff ID an opener of the layer's uncompressed tar (the caller decompresses)."""

    names: tuple[str, ...]
    config: bytes
    layers: tuple[tuple[Digest, LayerOpener], ...]


def write_docker_archive(out: BinaryIO, images: Iterable[SavedImage],
                         scratch: Path | None = None) -> None:
    """The legacy docker-archive layout skopeo writes (``<diffid>.tar``, ``<id>.json``,
    ``manifest.json``), which docker, podman and skopeo load. Each layer is checked
    against its diff ID while written. A layer's size is known only once it is
    decompressed: on a seekable ``out`` its header is patched afterwards, otherwise the
    layer is spooled to a temp file in ``scratch`` first."""
    writer = _TarWriter(out, scratch)
    # One entry per image ID (config digest), as docker save: two names of one image
    # (or the same image stored with differently compressed layers) share it.
    entries: dict[Digest, dict[str, Any]] = {}
    written: set[Digest] = set()
    for image in images:
        config_digest = Digest.of(image.config)
        if config_digest in entries:
            tags = entries[config_digest]["RepoTags"]
            tags += [n for n in image.names if n not in tags]
            continue
        writer.add_bytes(f"{config_digest.hex}.json", image.config)
        for diff_id, opener in image.layers:
            if diff_id not in written:
                writer.add_layer(f"{diff_id.hex}.tar", diff_id, opener)
                written.add(diff_id)
        entries[config_digest] = {"Config": f"{config_digest.hex}.json",
                                  "RepoTags": list(image.names),
                                  "Layers": [f"{d.hex}.tar" for d, _ in image.layers]}
    writer.add_bytes("manifest.json",
                     spec.canonical_json(list(entries.values())))  # type: ignore[arg-type]
    writer.close()


class _TarWriter:
    def __init__(self, out: BinaryIO, scratch: Path | None) -> None:
        self.out = out
        self.scratch = scratch
        try:
            self.seekable = out.seekable() and stat_is_regular(out)
        except (OSError, ValueError, AttributeError):
            self.seekable = False

    def _header(self, name: str, size: int) -> bytes:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = size, 0o644, 0
        # GNU format: one 512-byte block for these short names at any size (base-256 past
        # 8 GiB), so a header written before the size is known can be rewritten in place.
        return info.tobuf(tarfile.GNU_FORMAT)

    def _pad(self, size: int) -> None:
        if size % tarfile.BLOCKSIZE:
            self.out.write(bytes(tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE))

    def add_bytes(self, name: str, data: bytes) -> None:
        self.out.write(self._header(name, len(data)))
        self.out.write(data)
        self._pad(len(data))

    def add_layer(self, name: str, diff_id: Digest, opener: LayerOpener) -> None:
        with opener() as raw:
            source = HashingReader(raw, diff_id.algorithm)
            if self.seekable:
                start = self.out.tell()
                self.out.write(self._header(name, 0))
                shutil.copyfileobj(source, self.out, _CHUNK)  # type: ignore[misc]
                end = self.out.tell()
                self.out.seek(start)
                self.out.write(self._header(name, source.count))
                self.out.seek(end)
            else:
                with tempfile.TemporaryFile(dir=self.scratch) as spool:
                    shutil.copyfileobj(source, spool, _CHUNK)  # type: ignore[misc]
                    spool.seek(0)
                    self.out.write(self._header(name, source.count))
                    shutil.copyfileobj(spool, self.out, _CHUNK)
            if source.digest() != diff_id:
                raise DiffIDMismatch(f"layer {diff_id}: its uncompressed content hashes to "
                                     f"{source.digest()}", hint="run `ociimg fsck`")
            self._pad(source.count)

    def close(self) -> None:
        self.out.write(bytes(2 * tarfile.BLOCKSIZE))
        self.out.flush()


def stat_is_regular(f: BinaryIO) -> bool:
    return stat.S_ISREG(os.fstat(f.fileno()).st_mode)
