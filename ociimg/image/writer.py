"""The image writer: base image + new layers + history + config changes → a stored image.

One function, :func:`write_image`, composes what every image-producing path needs
(commit now; build, load and the API later): each new layer's uncompressed tar is
compressed and hashed in one pass (the blob digest and the diff ID together), the config
gets the diff IDs, history and changes, the manifest points at all of it, and the tag is
written last. Blobs go through ``Store.put_stream``/``put_blob`` (temp file, verify,
rename), and the whole write holds a store lease so gc cannot sweep a blob between its
write and the tag: a failure leaves unreferenced blobs for gc, never a tag on a half image.

Layer compression is deterministic (gzip header mtime 0, no file name; zstd without
threads), so the same tar gives the same blob with the same zlib/zstd build.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, BinaryIO

from ociimg import spec
from ociimg.digest import Digest
from ociimg.errors import BlobUnknown, InvalidArgument, InvalidDocument
from ociimg.image.changes import ConfigChange, apply_changes
from ociimg.layers.stream import QueueThread
from ociimg.reference import check_ref_name
from ociimg.spec import Descriptor, ImageConfig, Platform, canonical_json
from ociimg.store import Store

_CHUNK = 1 << 20
_PIPE_DEPTH = 8  # chunks in flight between a layer producer and the compressor
GZIP_LEVEL = 6  # zlib's default: what docker and containers/image write
ZSTD_LEVEL = 3

_MEDIA_TYPES = {"gzip": spec.OCI_LAYER_GZIP, "zstd": spec.OCI_LAYER_ZSTD, "none": spec.OCI_LAYER}
# Docker schema2 layers are the same bytes as their OCI counterparts (skopeo converts the
# same way); the new manifest is OCI, so base layers are described with OCI types.
_OCI_EQUIVALENT = {
    spec.DOCKER_LAYER_GZIP: spec.OCI_LAYER_GZIP,
    spec.DOCKER_LAYER_FOREIGN: spec.OCI_LAYER_NONDIST_GZIP,
}
# Fields of a Docker config that describe the container that built the base, not this image.
_STALE_DOCKER_FIELDS = ("container", "container_config", "docker_version", "id", "parent")


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One ``history`` item (image-spec config.md). ``created`` None: the image's time."""

    created_by: str = ""
    comment: str = ""
    author: str = ""
    empty_layer: bool = False
    created: datetime | None = None

    def to_json(self, default_created: datetime) -> dict[str, Any]:
        out: dict[str, Any] = {"created": format_time(self.created or default_created)}
        if self.created_by:
            out["created_by"] = self.created_by
        if self.author:
            out["author"] = self.author
        if self.comment:
            out["comment"] = self.comment
        if self.empty_layer:
            out["empty_layer"] = True
        return out


LayerProducer = Callable[[BinaryIO], object]


@dataclass(frozen=True)
class NewLayer:
    """An uncompressed layer tar: a readable stream, or a function that writes the tar to
    the sink it is given (``SnapshotStore.diff``'s shape); the function runs in a thread."""

    source: BinaryIO | LayerProducer
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WrittenLayer:
    descriptor: Descriptor
    diff_id: Digest
    uncompressed_size: int


def format_time(when: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, as docker and buildah write ``created``."""
    if when.tzinfo is None:
        raise InvalidArgument("image time without a time zone", hint="pass an aware datetime")
    text = when.astimezone(UTC).replace(tzinfo=None).isoformat()
    return f"{text}Z"


def write_image(store: Store, *, base_config: ImageConfig | None,
                base_layers: Sequence[Descriptor], new_layers: Sequence[NewLayer],
                history: Sequence[HistoryEntry], config_changes: Sequence[ConfigChange] = (),
                tag: str | None, created: datetime | None = None, author: str | None = None,
                compression: str = "gzip", platform: Platform | None = None) -> Descriptor:
    """Store a new image and (last) tag it; returns the manifest's descriptor.

    ``history`` lists the entries for this write only (appended to the base's): one
    without ``empty_layer`` per new layer, in order, plus any metadata-only entries.
    ``base_layers`` must be in ``store`` (see :func:`copy_blobs` for a layout's)."""
    if tag is not None:
        check_ref_name(tag)
    if compression not in _MEDIA_TYPES:
        raise InvalidArgument(f"layer compression {compression!r} is not supported",
                              hint="use gzip, zstd or none")
    _check_history(history, new_layers)
    _check_base(store, base_config, base_layers)
    # Changes are checked (expanded against the base's Env) before any blob is written.
    apply_changes(dict(base_config.config) if base_config else {}, config_changes)
    created = created or datetime.now(UTC)
    format_time(created)
    with store.lease():
        written = [write_layer(store, layer, compression) for layer in new_layers]
        config = compose_config(base_config, [w.diff_id for w in written], history,
                                config_changes, created=created, author=author,
                                platform=platform)
        config_raw = canonical_json(config)
        config_desc = Descriptor(spec.OCI_CONFIG, store.put_blob(config_raw), len(config_raw))
        layers = [_as_oci(d) for d in base_layers] + [w.descriptor for w in written]
        manifest_raw = canonical_json({
            "schemaVersion": 2, "mediaType": spec.OCI_MANIFEST,
            "config": config_desc.to_json(), "layers": [d.to_json() for d in layers]})
        desc = Descriptor(spec.OCI_MANIFEST, store.put_blob(manifest_raw), len(manifest_raw))
        if tag is not None:
            store.tag(tag, desc)
    return desc


def _check_history(history: Sequence[HistoryEntry], new_layers: Sequence[NewLayer]) -> None:
    layered = sum(1 for h in history if not h.empty_layer)
    if layered != len(new_layers):
        raise InvalidArgument(f"image history: {layered} entries with a layer for "
                              f"{len(new_layers)} new layers",
                              hint="mark metadata-only history entries empty_layer")


def _check_base(store: Store, base_config: ImageConfig | None,
                base_layers: Sequence[Descriptor]) -> None:
    diff_ids = base_config.diff_ids if base_config else ()
    if len(diff_ids) != len(base_layers):
        raise InvalidDocument(f"base image: {len(base_layers)} layers but its config lists "
                              f"{len(diff_ids)} diff_ids")
    for d in base_layers:
        if d.media_type not in spec.LAYER_TYPES:
            raise InvalidDocument(f"base image layer {d.digest}: {d.media_type} is not a "
                                  "tar layer")
        if not store.has_blob(d.digest):
            raise BlobUnknown(f"base image layer {d.digest} is not in the store {store.path}",
                              hint="pull the base image into the store first")


def _as_oci(desc: Descriptor) -> Descriptor:
    media_type = _OCI_EQUIVALENT.get(desc.media_type, desc.media_type)
    return Descriptor(media_type, desc.digest, desc.size, dict(desc.annotations),
                      urls=desc.urls)


def compose_config(base: ImageConfig | None, new_diff_ids: Sequence[Digest],
                   history: Sequence[HistoryEntry], changes: Sequence[ConfigChange], *,
                   created: datetime, author: str | None = None,
                   platform: Platform | None = None) -> dict[str, Any]:
    """The new image config as a JSON object (pure): the base's, with diff IDs and history
    appended, ``changes`` applied to its runtime part, and the new ``created``/``author``."""
    if base is not None:
        doc = base.to_json()
        for key in _STALE_DOCKER_FIELDS:
            doc.pop(key, None)
        base_ids = [str(d) for d in base.diff_ids]
        base_history = [dict(h) for h in base.history]
    else:
        doc = (platform or Platform.host()).to_json()
        base_ids, base_history = [], []
    if platform is not None:
        for key in ("architecture", "os", "variant", "os.version", "os.features"):
            doc.pop(key, None)
        doc.update(platform.to_json())
    doc.pop("author", None)
    if author:
        doc["author"] = author
    doc["created"] = format_time(created)
    doc["config"] = apply_changes(dict(doc.get("config") or {}), changes)
    doc["rootfs"] = {"type": "layers",
                     "diff_ids": base_ids + [str(d) for d in new_diff_ids]}
    entries = base_history + [h.to_json(created) for h in history]
    if entries:
        doc["history"] = entries
    else:
        doc.pop("history", None)
    return doc


# Layers -------------------------------------------------------------------------
def write_layer(store: Store, layer: NewLayer, compression: str = "gzip") -> WrittenLayer:
    """Compress and store one layer tar; the diff ID is hashed from the same pass."""
    if callable(layer.source):
        with _ProducerPipe(layer.source) as pipe:
            return _store_layer(store, pipe, layer, compression)
    return _store_layer(store, layer.source, layer, compression)


def _store_layer(store: Store, source: BinaryIO, layer: NewLayer,
                 compression: str) -> WrittenLayer:
    reader = _CompressingReader(source, compression)
    digest, size = store.put_stream(reader)  # type: ignore[arg-type]
    desc = Descriptor(_MEDIA_TYPES[compression], digest, size, dict(layer.annotations))
    return WrittenLayer(desc, Digest("sha256", reader.diff_hash.hexdigest()), reader.count)


class _CompressingReader:
    """Reads the uncompressed tar from ``source``; returns it compressed. ``diff_hash``
    and ``count`` cover the uncompressed bytes (the diff ID and its size)."""

    def __init__(self, source: BinaryIO, compression: str) -> None:
        import hashlib

        self._source = source
        self.diff_hash = hashlib.sha256()
        self.count = 0
        self._eof = False
        self._compress, self._flush = _compressor(compression)

    def read(self, n: int = -1) -> bytes:
        while not self._eof:
            data = self._source.read(_CHUNK)
            if not data:
                self._eof = True
                return self._flush()
            self.diff_hash.update(data)
            self.count += len(data)
            out = self._compress(data)
            if out:
                return out
        return b""


def _compressor(compression: str) -> tuple[Callable[[bytes], bytes], Callable[[], bytes]]:
    if compression == "gzip":
        # wbits 31: a gzip member whose header has mtime 0 and no file name.
        gz = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
        return gz.compress, gz.flush
    if compression == "zstd":
        import zstandard

        zs = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()
        return zs.compress, zs.flush
    return (lambda data: data), (lambda: b"")


class _Stopped(Exception):
    """The consumer gave up: the producer thread stops writing."""


class _ProducerPipe(QueueThread):
    """Runs ``produce(sink)`` in a thread; ``read`` returns what it writes. The producer's
    exception is re-raised by ``read`` (never a clean EOF: a truncated layer must not be
    stored as if whole); leaving the context stops and joins the thread."""

    def __init__(self, produce: LayerProducer) -> None:
        super().__init__("layer-producer", _PIPE_DEPTH)
        self._produce = produce
        self._done = False

    def _run(self) -> None:
        sink = _QueueSink(self)
        try:
            self._produce(sink)
            sink.flush()
        except _Stopped:
            return
        except BaseException as exc:  # handed to the reading thread, which raises it
            self.put(exc)
            return
        self.put(None)

    def read(self, n: int = -1) -> bytes:
        if self._done:
            return b""
        item = self._queue.get()
        if item is None:
            self._done = True
            return b""
        if isinstance(item, BaseException):
            self._done = True
            raise item
        return item


class _QueueSink:
    """The file-like sink a producer writes to; buffers to ~1 MiB chunks."""

    def __init__(self, pipe: _ProducerPipe) -> None:
        self._pipe = pipe
        self._buf = bytearray()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._buf += data
        if len(self._buf) >= _CHUNK:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if not self._buf:
            return
        chunk, self._buf = bytes(self._buf), bytearray()
        if not self._pipe.put(chunk):
            raise _Stopped

    def writable(self) -> bool:
        return True


# Blobs from elsewhere ------------------------------------------------------------
def copy_blobs(source: Store, dest: Store, descriptors: Sequence[Descriptor]) -> int:
    """Copy the blobs ``dest`` lacks from ``source`` (e.g. an ``oci:`` layout an image was
    run from), each verified against its descriptor; returns how many were copied."""
    copied = 0
    for d in descriptors:
        if dest.has_blob(d.digest):
            continue
        with source.open_blob(d.digest) as f:
            dest.put_stream(f, expected=d.digest, size=d.size)
        copied += 1
    return copied
