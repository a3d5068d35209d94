"""One transport grammar for every command that reads or writes an image.

``docker://REF`` (a registry), a bare name (the local store), ``oci:DIR[:REF]``,
``oci-archive:FILE[:REF]``, ``docker-archive:FILE[:REF]`` and ``dir:DIR`` (skopeo's).
:func:`parse_transport` gives an :class:`ImageSource` — the read side that inspect,
history, ls, cat, diff, du and verification share: the image's manifest (narrowed to a
platform), config, exact manifest bytes and verified blob streams, from whichever
transport, without copying anything into the store. :func:`copy_image` writes any
transport from any other (``docker-archive`` destinations need the layers
decompressed, hence this module sits above ``layers`` and ``registry``), and
:func:`import_image` brings a non-store image into the store for run and unpack.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO

from ociimg import spec
from ociimg.digest import Digest, HashingReader
from ociimg.errors import (
    BlobUnknown,
    DigestMismatch,
    ImageNotFound,
    InvalidDocument,
    InvalidReference,
)
from ociimg.fsutil import fsync_dir, temp_dir_beside
from ociimg.reference import LayoutReference, Reference, parse_image_name, parse_reference
from ociimg.store import Store

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ociimg.registry.copy import CopyOptions, LocalSource


@dataclass
class ImageSource:
    """An image at one transport, read in place. ``blobs`` is its blob source (a Store,
    an archive, a ``dir:`` image or the registry); ``top`` what the name resolved to
    (a manifest or an index)."""

    text: str
    blobs: Any
    top: spec.Descriptor
    name: str | None = None  # the name the image has there (a store or layout ref name)
    _chosen: tuple[spec.Descriptor, spec.Manifest] | None = field(default=None, repr=False)
    _closer: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, repr=False)

    def __enter__(self) -> ImageSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._closer.close()

    def raw_manifest(self) -> bytes:
        """The top document's exact bytes (what its digest and a signature are over)."""
        return self.blobs.read_blob(self.top.digest)

    def index(self) -> spec.Index | None:
        if self.top.media_type not in spec.INDEX_TYPES:
            return None
        doc = self.blobs.read_manifest(self.top)
        return doc if isinstance(doc, spec.Index) else None

    def manifest(self, platform: spec.Platform | None = None
                 ) -> tuple[spec.Descriptor, spec.Manifest]:
        """The image manifest: the top one, or an index narrowed to ``platform``
        (default: this host)."""
        desc = self.top
        doc = self.blobs.read_manifest(desc)
        if isinstance(doc, spec.Index):
            desc = spec.match_platform(doc, platform or spec.Platform.host())
            doc = self.blobs.read_manifest(desc)
            if isinstance(doc, spec.Index):
                raise InvalidDocument(f"{self.text}: nested index {desc.digest} not supported")
        self._chosen = (desc, doc)
        return desc, doc

    def config(self, platform: spec.Platform | None = None) -> spec.ImageConfig:
        desc, manifest = self._chosen if self._chosen and platform is None \
            else self.manifest(platform)
        if manifest.config.media_type not in (spec.OCI_CONFIG, spec.DOCKER_CONFIG):
            raise InvalidDocument(f"{self.text}: config type {manifest.config.media_type} is "
                                  "not a container image", hint="this is an artifact")
        raw = self.blobs.read_blob(manifest.config.digest, limit=spec.MAX_CONFIG_BYTES)
        return spec.parse_config(raw, where=f"config {manifest.config.digest}")

    @contextlib.contextmanager
    def open_blob(self, digest: Digest | str, size: int | None = None) -> Iterator[BinaryIO]:
        """A blob's stream; reading it to the end checks its digest (and ``size``):
        a mismatch raises DigestMismatch at EOF, never returns wrong bytes silently."""
        d = Digest.coerce(digest)
        with self.blobs.open_blob(d) as raw:
            yield _Verified(raw, d, size, self.text)  # type: ignore[misc]


class _Verified:
    def __init__(self, raw: IO[bytes], digest: Digest, size: int | None, where: str) -> None:
        self._reader = HashingReader(raw, digest.algorithm)  # type: ignore[arg-type]
        self._digest, self._size, self._where = digest, size, where
        self._checked = False

    def read(self, n: int = -1) -> bytes:
        data = self._reader.read(n)
        if not data or n < 0:
            self._check()
        return data

    def readinto(self, buf: bytearray | memoryview) -> int:
        n = self._reader.readinto(buf)
        if not n:
            self._check()
        return n

    def readable(self) -> bool:
        return True

    def finish(self) -> None:
        """Read what is left (a longer blob is a mismatch too) and check."""
        self._reader.drain()
        self._check()

    def _check(self) -> None:
        if self._checked:
            return
        self._checked = True
        actual = self._reader.digest()
        if actual != self._digest or (self._size is not None and
                                      self._reader.count != self._size):
            raise DigestMismatch(f"{self._where}: blob {self._digest} hashes to {actual} "
                                 f"({self._reader.count} bytes)",
                                 hint="the source is corrupt or was altered")


# Opening ------------------------------------------------------------------------------
def parse_transport(text: str, root: Path | None = None, *,
                    pull_options: Any = None) -> ImageSource:
    """An image by what a user typed. A bare name is the local store under ``root``
    (default: the default root); ``docker://`` reads the registry without pulling."""
    ref = parse_image_name(text)
    if isinstance(ref, LayoutReference):
        return open_local_source(ref, text)
    if text.startswith("docker://"):
        return _open_registry(ref, text, pull_options)
    from ociimg.store.layout import default_root

    store = Store(Path(root or default_root()) / "store")  # a source: read, never created
    name = _store_name(store, text)
    return ImageSource(text, store, store.resolve(name), name)


def open_local_source(ref: LayoutReference, text: str | None = None) -> ImageSource:
    from ociimg.registry.copy import open_local, resolve_layout

    blobs = open_local(ref)
    top = resolve_layout(blobs, ref)
    names = [n for n, d in blobs.refs() if d.digest == top.digest]
    return ImageSource(text or str(ref), blobs, top, ref.tag or (names[0] if names else None))


def find_store_name(store: Store, text: str) -> str | None:
    """The stored name for what a user typed: ``busybox`` → docker.io/library/busybox:latest,
    a digest (prefix) or ``repo@digest`` → a name of that image; None if absent."""
    try:
        desc = store.resolve(text)
    except ImageNotFound:
        return None
    names = [name for name, d in store.refs() if d.digest == desc.digest]
    try:
        normalized = str(parse_reference(text))
    except InvalidReference:
        normalized = text
    for candidate in (text, normalized):
        if candidate in names:
            return candidate
    return names[0]


def _store_name(store: Store, text: str) -> str:
    name = find_store_name(store, text)
    if name is None:
        raise ImageNotFound(f"image {text} not found in the store {store.path}",
                            hint=f"pull it first, or read the registry: docker://{text}")
    return name


def _open_registry(ref: Reference, text: str, pull_options: Any) -> ImageSource:
    from ociimg.registry import PullOptions, RegistryClient
    from ociimg.registry.remote import RegistryBlobs

    options = pull_options or PullOptions()
    client = RegistryClient.open(ref.domain, ref.api_host, options.client_options(),
                                 ref.repository)
    blobs = RegistryBlobs(client, ref)
    source = ImageSource(text, blobs, blobs.top(), str(ref))
    source._closer.callback(client.close)
    return source


# Writing ------------------------------------------------------------------------------
def copy_image(src: str, dst: str, options: CopyOptions | None = None,
               progress: Any = None) -> Digest:
    """``ociimg copy``: every transport to every transport (a bare name is a registry
    reference, as for skopeo; the store is ``oci:ROOT/store:NAME``)."""
    from ociimg.registry import CopyOptions
    from ociimg.registry import copy as registry_copy

    options = options or CopyOptions()
    src_ref, dst_ref = parse_image_name(src), parse_image_name(dst)
    if isinstance(dst_ref, LayoutReference) and dst_ref.kind == "docker-archive":
        with _source_for_save(src, src_ref, options) as (blobs, desc, names):
            if isinstance(src_ref, LayoutReference):  # a registry source: checked by the pull
                from ociimg.registry.copy import verify_layout_image
                verify_layout_image(blobs, src_ref, desc, options.verifier)
            names = (dst_ref.tag,) if dst_ref.tag else names
            save_images(dst_ref.path, [(blobs, desc, tuple(reference_names(names)))],
                        "docker-archive", options.platform)
            return desc.digest
    return registry_copy(src_ref, dst_ref, options, progress)


@contextlib.contextmanager
def _source_for_save(text: str, ref: Reference | LayoutReference, options: CopyOptions
                     ) -> Iterator[tuple[LocalSource, spec.Descriptor, tuple[str, ...]]]:
    if isinstance(ref, LayoutReference):
        source = open_local_source(ref, text)
        names = tuple(n for n, d in source.blobs.refs() if d.digest == source.top.digest)
        yield source.blobs, source.top, names
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ociimg-save-") as tmp:
        from ociimg.registry import copy as registry_copy

        scratch = LayoutReference("oci", Path(tmp) / "layout", "image")
        registry_copy(ref, scratch, options)
        store = Store(scratch.path)
        yield store, store.resolve("image"), (str(ref),)


def save_images(path: Path | None, images: Sequence[tuple[Any, spec.Descriptor,
                                                          tuple[str, ...]]],
                fmt: str, platform: spec.Platform | None = None,
                out: BinaryIO | None = None) -> None:
    """Write ``images`` ((blob source, descriptor, names)) as a docker-archive or an
    oci-archive to ``path`` (complete or not at all: written beside it, renamed over
    it) or to the stream ``out``."""
    if fmt not in ("docker-archive", "oci-archive"):
        raise InvalidReference(f"unknown archive format {fmt!r}",
                               hint="use docker-archive or oci-archive")
    if path is None:
        assert out is not None
        _write_archive(out, images, fmt, platform, None)
        return
    with temp_dir_beside(path) as tmp:
        with open(tmp / "archive", "xb") as f:
            _write_archive(f, images, fmt, platform, tmp)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp / "archive", path)
        fsync_dir(path.parent)


def _write_archive(out: BinaryIO, images: Sequence[tuple[Any, spec.Descriptor,
                                                         tuple[str, ...]]],
                   fmt: str, platform: spec.Platform | None, scratch: Path | None) -> None:
    if fmt == "docker-archive":
        write_docker(out, images, platform, scratch)
    else:
        write_oci(out, images, platform)


def write_docker(out: BinaryIO, images: Sequence[tuple[Any, spec.Descriptor, tuple[str, ...]]],
                 platform: spec.Platform | None, scratch: Path | None) -> None:
    from ociimg.layers.compression import open_decompressed
    from ociimg.registry.dockerarchive import SavedImage, write_docker_archive

    def layer_opener(blobs: Any, layer: spec.Descriptor) -> Any:
        @contextlib.contextmanager
        def opener() -> Iterator[BinaryIO]:
            with blobs.open_blob(layer.digest) as raw:
                yield open_decompressed(raw, layer.media_type, f"layer {layer.digest}")
        return opener

    saved = []
    for blobs, desc, names in images:
        source = ImageSource(str(desc.digest), blobs, desc)
        _mdesc, manifest = source.manifest(platform)
        config_raw = blobs.read_blob(manifest.config.digest, limit=spec.MAX_CONFIG_BYTES)
        config = spec.parse_config(config_raw, where=f"config {manifest.config.digest}")
        spec.check_layers(manifest, config)
        layers = tuple((diff_id, layer_opener(blobs, layer))
                       for diff_id, layer in zip(config.diff_ids, manifest.layers, strict=True))
        saved.append(SavedImage(names, config_raw, layers))
    write_docker_archive(out, saved, scratch)


def write_oci(out: BinaryIO, images: Sequence[tuple[Any, spec.Descriptor, tuple[str, ...]]],
              platform: spec.Platform | None = None) -> None:
    """An OCI layout as a tar stream, straight from the sources' blobs: every blob each
    image needs (all its platforms, or ``platform``'s if the others are not there),
    index.json naming each image by each name."""
    import tarfile

    from ociimg.registry.copy import plan_copy

    entries, order, seen = [], [], set()
    for blobs, top, names in images:
        desc = whole_or_narrowed(blobs, top, platform)
        for d in plan_copy(blobs, None, desc, str(desc.digest)):
            if d.digest not in seen:
                seen.add(d.digest)
                order.append((blobs, d))
        for name in names or (None,):
            annotations = dict(desc.annotations)
            annotations.pop(spec.ANNOTATION_REF_NAME, None)
            if name:
                annotations[spec.ANNOTATION_REF_NAME] = name
                annotations["io.containerd.image.name"] = name
            entries.append(desc.with_annotations(annotations).to_json())
    index = spec.canonical_json({"schemaVersion": 2, "mediaType": spec.OCI_INDEX,
                                 "manifests": entries})
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, "oci-layout", spec.canonical_json({"imageLayoutVersion": "1.0.0"}))
        _add(tar, "index.json", index)
        for blobs, d in order:
            info = tarfile.TarInfo(f"blobs/{d.digest.algorithm}/{d.digest.hex}")
            info.size, info.mode = d.size, 0o444
            with blobs.open_blob(d.digest) as stream:
                verified = _Verified(stream, d.digest, d.size, f"save {d.digest}")
                tar.addfile(info, verified)
                verified.finish()


def _add(tar: Any, name: str, data: bytes) -> None:
    import tarfile

    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o444
    tar.addfile(info, io.BytesIO(data))


# Into the store ---------------------------------------------------------------------
def import_image(ref: LayoutReference, store: Store, platform: spec.Platform | None = None,
                 *, all_platforms: bool = False) -> str:
    """Copy the image ``ref`` names (narrowed to ``platform`` unless ``all_platforms``)
    into ``store`` for run, unpack and pull; returns the name it is tagged with there."""
    from ociimg.registry.copy import copy_between_stores

    with open_local_source(ref) as source:
        desc = source.top if all_platforms else source.manifest(platform)[0]
        names = store_names(source.name, desc)
        with store.lease():
            copy_between_stores(source.blobs, store, desc, str(ref))
            for name in names:
                store.tag(name, desc)
    return names[0]


def load_archive(path: Path, store: Store) -> list[tuple[str, spec.Descriptor]]:
    """``ociimg load``: every image of a docker-archive or oci-archive into ``store``.
    All blobs are copied (and verified) before any name is tagged: a bad archive leaves
    no name pointing at half an image."""
    from ociimg.registry.archive import LayoutArchive
    from ociimg.registry.copy import copy_between_stores
    from ociimg.registry.dockerarchive import DockerArchive

    try:
        archive: Any = DockerArchive(path)
    except InvalidReference as exc:
        if "no manifest.json" not in exc.message:
            raise
        archive = LayoutArchive(path)
    tags: list[tuple[str, spec.Descriptor]] = []
    with store.lease():
        for desc in archive.entries():
            desc = whole_or_narrowed(archive, desc)
            copy_between_stores(archive, store, desc, str(path))
            names = [n for n, d in archive.refs() if d.digest == desc.digest] or \
                [_annotated_name(desc)]
            tags += [(n, desc) for n in store_names(names[0], desc, names)]
        for name, desc in tags:
            store.tag(name, desc)
    return tags


def whole_or_narrowed(blobs: Any, desc: spec.Descriptor,
                      platform: spec.Platform | None = None) -> spec.Descriptor:
    """``desc`` if every blob it needs is in ``blobs``; an index that was pulled or saved
    for one platform gives that platform's manifest (else BlobUnknown names what is
    missing)."""
    from ociimg.registry.copy import plan_copy

    try:
        plan_copy(blobs, None, desc, str(desc.digest))
    except BlobUnknown:
        if desc.media_type not in spec.INDEX_TYPES:
            raise
        desc = ImageSource(str(desc.digest), blobs, desc).manifest(platform)[0]
        plan_copy(blobs, None, desc, str(desc.digest))
    return desc


def _annotated_name(desc: spec.Descriptor) -> str | None:
    return desc.annotations.get("io.containerd.image.name") or \
        desc.annotations.get(spec.ANNOTATION_REF_NAME)


def store_names(name: str | None, desc: spec.Descriptor,
                all_names: Sequence[str | None] = ()) -> list[str]:
    """The store names for an image from outside (see :func:`reference_names`); without
    one, the digest is its name (listed as <none> by ``ociimg images``, as docker and
    podman show unnamed images)."""
    return reference_names(all_names or (name,)) or [str(desc.digest)]


def reference_names(names: Sequence[str | None]) -> list[str]:
    """Each name that is a full image reference (``busybox:1``, ``example.com/a/b:t``),
    normalised; a bare tag (skopeo's ``oci:DIR:latest``) names no image."""
    out = []
    for candidate in names:
        if candidate and ("/" in candidate or ":" in candidate):
            with contextlib.suppress(InvalidReference):
                parsed = parse_reference(candidate)
                if parsed.digest is None:
                    out.append(str(parsed))
    return out
