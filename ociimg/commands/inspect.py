"""Reading an image's documents for ``ociimg inspect`` and the Python API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ociimg.spec import Platform
from ociimg.transports import parse_transport


def inspect_image(image: str, root: Path, platform: Platform | None = None) -> dict[str, Any]:
    """What ``ociimg inspect --json`` prints: the image's name, digests, manifest, config and
    layers (and the index's platforms for a multi-platform image), from any transport."""
    with parse_transport(image, root) as source:
        desc, manifest = source.manifest(platform or Platform.host())
        config = source.config()
        index = source.index()
        doc: dict[str, Any] = {
            "name": source.name or image,
            "digest": str(desc.digest),
            "mediaType": manifest.media_type,
            "platform": str(config.platform),
            "manifest": manifest.to_json(),
            "config": config.to_json(),
            "layers": [layer.to_json() for layer in manifest.layers],
        }
        if index is not None:
            doc["index"] = str(source.top.digest)
            doc["platforms"] = [str(p) for p in index.platforms()]
    return doc
