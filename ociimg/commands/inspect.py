"""Reading an image's documents for ``ociimg inspect`` and the Python API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ociimg.commands.resolve import store_name
from ociimg.errors import InvalidReference
from ociimg.reference import LayoutReference, parse_image_name
from ociimg.spec import INDEX_TYPES, Platform
from ociimg.store import Store


def inspect_image(image: str, root: Path, platform: Platform | None = None) -> dict[str, Any]:
    """What ``ociimg inspect --json`` prints: the image's name, digests, manifest, config and
    layers (and the index's platforms for a multi-platform image)."""
    ref = parse_image_name(image) if image.startswith(("oci:", "oci-archive:")) else None
    if isinstance(ref, LayoutReference):
        if ref.kind != "oci":
            raise InvalidReference(f"{image}: inspect reads oci: layouts and the store",
                                   hint="copy it into a layout first: ociimg copy "
                                   f"{image} oci:DIR:TAG")
        store, name = Store(ref.path), (ref.tag or "latest")
    else:
        store = Store.open(root)
        name = store_name(store, image)
    top = store.resolve(name)
    desc, manifest, config = store.image_for(name, platform or Platform.host())
    doc: dict[str, Any] = {
        "name": name,
        "digest": str(desc.digest),
        "mediaType": manifest.media_type,
        "platform": str(config.platform),
        "manifest": manifest.to_json(),
        "config": config.to_json(),
        "layers": [layer.to_json() for layer in manifest.layers],
    }
    if top.media_type in INDEX_TYPES:
        index = store.read_manifest(top)
        doc["index"] = str(top.digest)
        doc["platforms"] = [str(p) for p in index.platforms()]  # type: ignore[union-attr]
    return doc
