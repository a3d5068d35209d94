"""Build small images from in-code tars straight into a Store (for layer tests)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import zstandard

from ociimg import spec
from ociimg.digest import Digest
from ociimg.layers.apply import ApplyOptions, OnDiskFormat, apply_layer
from ociimg.spec import Descriptor, ImageConfig, Manifest, parse_config, parse_manifest
from ociimg.store import Store

_MEDIA = {"gzip": spec.OCI_LAYER_GZIP, "zstd": spec.OCI_LAYER_ZSTD, "none": spec.OCI_LAYER}


def compress(data: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(data, compresslevel=1, mtime=0)
    if how == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


def tar_of(files: dict[str, bytes | str | None]) -> bytes:
    """A tar from {name: content}; None is a directory, a str "->target" a symlink."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.mtime = 1_600_000_000
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            elif isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content.removeprefix("->")
                tf.addfile(info)
            else:
                info.size, info.mode = len(content), 0o644
                tf.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def apply_snapshots(base: Path, layers: list[bytes], **options: Any) -> list[Path]:
    """Each tar into its own OVERLAY-format dir ``base/snap<i>`` above the earlier ones,
    as SnapshotStore lays them out; returns the dirs bottom → top."""
    dirs: list[Path] = []
    for i, data in enumerate(layers):
        d = base / f"snap{i}"
        d.mkdir()
        apply_layer(d, io.BytesIO(data), ApplyOptions(
            OnDiskFormat.OVERLAY, lowers=tuple(reversed(dirs)), **options))
        dirs.append(d)
    return dirs


def build_image(store: Store, layers: list[bytes], *, how: str = "gzip",
                diff_ids: list[Digest] | None = None) -> tuple[Manifest, ImageConfig]:
    """Put ``layers`` (uncompressed tars) into ``store``; returns manifest and config."""
    store.init()
    descs = []
    for tar_bytes in layers:
        blob = compress(tar_bytes, how)
        descs.append(Descriptor(_MEDIA[how], store.put_blob(blob), len(blob)))
    ids = diff_ids or [Digest("sha256", hashlib.sha256(t).hexdigest()) for t in layers]
    config_raw = json.dumps({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [str(d) for d in ids]},
    }).encode()
    config_desc = Descriptor(spec.OCI_CONFIG, store.put_blob(config_raw), len(config_raw))
    manifest_raw = json.dumps({
        "schemaVersion": 2, "mediaType": spec.OCI_MANIFEST, "config": config_desc.to_json(),
        "layers": [d.to_json() for d in descs],
    }).encode()
    store.put_blob(manifest_raw)
    return parse_manifest(manifest_raw), parse_config(config_raw)


def image_from_layout(layout_store: Store, tag: str) -> tuple[Manifest, ImageConfig]:
    """Manifest and config of the image tagged ``tag`` (a short ref name) in a layout."""
    index = json.loads(layout_store.index_path.read_bytes())
    desc = next(m for m in index["manifests"]
                if m.get("annotations", {}).get(spec.ANNOTATION_REF_NAME) == tag)
    manifest = parse_manifest(layout_store.read_blob(Digest.parse(desc["digest"])))
    return manifest, parse_config(layout_store.read_blob(manifest.config.digest))
