"""Layer blobs → trees: one blob (verified both ways), or a whole flattened rootfs."""

from __future__ import annotations

import os
from pathlib import Path

from ociimg.digest import Digest, HashingReader
from ociimg.errors import AlreadyExists, DiffIDMismatch, DigestMismatch
from ociimg.events import NullProgress, Progress
from ociimg.fsutil import replace_dir, temp_dir_beside
from ociimg.layers.apply import ApplyOptions, ApplyResult, OnDiskFormat, apply_layer
from ociimg.layers.compression import open_decompressed
from ociimg.spec import Descriptor, ImageConfig, Manifest, check_layers
from ociimg.store import Store


def apply_blob(store: Store, layer: Descriptor, root: Path, options: ApplyOptions,
               diff_id: Digest | None = None) -> ApplyResult:
    """Apply one layer blob from ``store`` onto ``root``.

    The compressed bytes are hashed up to EOF (trailing bytes after the last gzip
    member count, umoci 0.4.7 CHANGELOG) and checked against the descriptor; the
    uncompressed stream against ``diff_id`` (config.rootfs.diff_ids).
    """
    what = f"layer {layer.digest}"
    with store.open_blob(layer.digest) as raw:
        hashing = HashingReader(raw, layer.digest.algorithm)
        result = apply_layer(root, open_decompressed(hashing, layer.media_type, what), options)
        hashing.drain()
    if hashing.digest() != layer.digest or hashing.count != layer.size:
        raise DigestMismatch(f"{what}: blob is {hashing.count} bytes hashing to "
                             f"{hashing.digest()}, descriptor says {layer.size} bytes",
                             hint="run `ociimg fsck --remove` and pull the image again")
    if diff_id is not None and result.diff_id != diff_id:
        raise DiffIDMismatch(f"{what}: uncompressed content hashes to {result.diff_id}, the "
                             f"image config says {diff_id}",
                             hint="the image is inconsistent; rebuild or re-push it")
    return result


def unpack_rootfs(store: Store, manifest: Manifest, config: ImageConfig, dest: Path,
                  progress: Progress = NullProgress(), *, rootless: bool | None = None
                  ) -> list[str]:
    """Apply every layer, bottom to top, into a flattened tree at ``dest``.

    Built in a temp dir beside ``dest`` and renamed into place only when every layer
    applied and verified: a failure leaves nothing at ``dest``. Returns warnings.
    """
    check_layers(manifest, config)
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise AlreadyExists(f"unpack destination {dest} exists and is not empty",
                            hint="choose a new directory or remove it first")
    options = ApplyOptions(OnDiskFormat.DIR,
                           rootless=os.geteuid() != 0 if rootless is None else rootless)
    warnings: list[str] = []
    with temp_dir_beside(dest) as tmp:
        os.chmod(tmp, 0o755)
        for i, (layer, diff_id) in enumerate(zip(manifest.layers, config.diff_ids, strict=True)):
            key = f"unpack {layer.digest.short}"
            progress.start(key, f"layer {i + 1}/{len(manifest.layers)}", layer.size)
            result = apply_blob(store, layer, tmp, options, diff_id)
            warnings.extend(w for w in result.warnings if w not in warnings)
            progress.done(key)
        replace_dir(tmp, dest)
    for w in warnings:
        progress.log(w)
    return warnings
