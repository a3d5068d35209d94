"""Reading an image's documents for ``ociimg inspect`` and the Python API: a store
image, an ``oci:`` layout, or ``docker://REF`` read from the registry (manifests and
the config only: never a layer blob)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ociimg import spec
from ociimg.commands.history import history_rows
from ociimg.commands.imagesource import OpenedImage, open_image
from ociimg.errors import OciimgError
from ociimg.spec import Descriptor, Platform
from ociimg.store import Store

if TYPE_CHECKING:
    from ociimg.registry.client import ClientOptions

# Layer formats whose gzip stream is many members: the trailer counts the last only.
_MULTI_MEMBER = ("containerd.io/snapshot/stargz/toc.digest",
                 "io.github.containers.zstd-chunked.manifest-checksum")
_GZIP_SLACK = 1 << 16  # incompressible data grows by ~5 bytes per 64 KiB stored block


def inspect_image(image: str, root: Path, platform: Platform | None = None,
                  client_options: ClientOptions | None = None) -> dict[str, Any]:
    """What ``ociimg inspect --json`` prints: the image's name, digests, manifest, config,
    layers (with uncompressed sizes where the blob tells them cheaply), the history
    summary, attached artifacts, and the index's platforms for a multi-platform image."""
    img = open_image(image, root, platform, client_options)
    try:
        return describe(img)
    finally:
        img.close()


def describe(img: OpenedImage) -> dict[str, Any]:
    from ociimg.commands.referrers import list_attachments

    layers = []
    sizes_by_digest = layer_sizes(img)
    for layer in img.manifest.layers:
        doc = layer.to_json()
        size = sizes_by_digest[str(layer.digest)]
        if size is not None:
            doc["uncompressedSize"] = size
        layers.append(doc)
    sizes = [x.get("uncompressedSize") for x in layers]
    doc: dict[str, Any] = {
        "name": img.name,
        "digest": str(img.descriptor.digest),
        "mediaType": img.manifest.media_type,
        "platform": str(img.config.platform),
        "manifest": img.manifest.to_json(),
        "config": img.config.to_json(),
        "layers": layers,
        "size": sum(x.size for x in img.manifest.layers),
        "uncompressedSize": sum(sizes) if sizes and None not in sizes else None,  # type: ignore[arg-type]
        "history": history_rows(img.manifest, img.config,
                                {x["digest"]: x.get("uncompressedSize") for x in layers}),
        "attachments": [],
    }
    try:  # a registry's referrers listing failing must not hide the image itself
        doc["attachments"] = list_attachments(img)
    except OciimgError as exc:
        doc["attachmentsError"] = exc.message
    if img.index is not None:
        doc["index"] = str(img.top.digest)
        doc["platforms"] = img.platforms
    return doc


def layer_sizes(img: OpenedImage) -> dict[str, int | None]:
    """Uncompressed sizes by layer digest, where the blob tells them cheaply."""
    return {str(d.digest): uncompressed_size(img.store, d) if img.store is not None else None
            for d in img.manifest.layers}


def uncompressed_size(store: Store, desc: Descriptor) -> int | None:
    """A layer's uncompressed size without decompressing it: a plain tar's own size, a
    single-member gzip's ISIZE trailer (RFC 1952: the size mod 2^32, unwrapped by the
    compressed size); None when the blob cannot tell (zstd, eStargz, absent)."""
    if desc.media_type in (spec.OCI_LAYER, spec.OCI_LAYER_NONDIST):
        return desc.size
    if any(key in desc.annotations for key in _MULTI_MEMBER) or not store.has_blob(desc.digest):
        return None
    with store.open_blob(desc.digest) as f:
        if f.read(2) != b"\x1f\x8b" or desc.size < 20:
            return None
        f.seek(desc.size - 4)
        (isize,) = struct.unpack("<I", f.read(4))
    floor = desc.size - desc.size // _GZIP_SLACK * 5 - 64
    while isize < floor:
        isize += 1 << 32
    return isize
