"""Images made in code in a Store: one uncompressed layer, a config and a manifest (or an
index over manifests), for tests that need a real image without building fixtures."""

from __future__ import annotations

import io
import tarfile
from typing import Any

from ociimg import spec
from ociimg.digest import Digest
from ociimg.spec import Descriptor, Platform
from ociimg.store import Store


def tar_layer(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1700000000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_image(store: Store, files: dict[str, bytes], *, arch: str = "amd64",
               name: str | None = None, put: bool = True,
               config: dict[str, Any] | None = None) -> Descriptor:
    """A config (``config`` as its "config", default a Cmd) + one uncompressed layer +
    manifest; returns the manifest descriptor."""
    layer = tar_layer(files)
    raw_config = spec.canonical_json({
        "architecture": arch, "os": "linux",
        "config": {"Cmd": ["/bin/sh"]} if config is None else config,
        "rootfs": {"type": "layers", "diff_ids": [str(Digest.of(layer))]}})
    return store_image(store, layer, raw_config, platform=Platform("linux", arch), name=name,
                       put=put)


def store_image(store: Store, layer: bytes, config: bytes, *, platform: Platform | None = None,
                name: str | None = None, put: bool = True) -> Descriptor:
    """A manifest over the blobs ``config`` (any bytes) and ``layer``; with ``put`` all
    three go into ``store``, with ``name`` it is tagged. Returns its descriptor."""
    manifest = spec.canonical_json({
        "schemaVersion": 2, "mediaType": spec.OCI_MANIFEST,
        "config": {"mediaType": spec.OCI_CONFIG, "digest": str(Digest.of(config)),
                   "size": len(config)},
        "layers": [{"mediaType": spec.OCI_LAYER, "digest": str(Digest.of(layer)),
                    "size": len(layer)}]})
    if put:
        for blob in (layer, config, manifest):
            store.put_blob(blob)
    desc = Descriptor(spec.OCI_MANIFEST, Digest.of(manifest), len(manifest), platform=platform)
    if name:
        store.tag(name, desc)
    return desc


def make_index(store: Store, manifests: list[Descriptor], name: str | None = None) -> Descriptor:
    raw = spec.canonical_json({"schemaVersion": 2, "mediaType": spec.OCI_INDEX,
                               "manifests": [d.to_json() for d in manifests]})
    desc = Descriptor(spec.OCI_INDEX, store.put_blob(raw), len(raw))
    if name:
        store.tag(name, desc)
    return desc


def blob_files(store: Store) -> set[str]:
    return {p.name for p in (store.path / "blobs" / "sha256").iterdir()}
