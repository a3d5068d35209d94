"""``ociimg unpack``: an image → a runtime-spec bundle (config.json + rootfs).

The bundle is assembled in a temp dir beside the destination and renamed into
place only when complete, so an interrupted or failed unpack never leaves a
bundle that looks valid.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ociimg.bundle import BundleOptions, to_runtime_config, write_bundle
from ociimg.commands.resolve import ResolvedImage, warn_unsafe_labels
from ociimg.errors import AlreadyExists, OciimgError
from ociimg.events import NullProgress, Progress
from ociimg.fsutil import remove_tree, temp_dir_beside
from ociimg.layers import overlay
from ociimg.layers.snapshots import SnapshotStore
from ociimg.layers.unpack import unpack_rootfs

OVERLAY_MARKER = ".ociimg-overlay.json"


@dataclass
class UnpackOptions:
    overlay: bool = False
    force: bool = False
    bundle: BundleOptions = field(default_factory=BundleOptions)


@dataclass(frozen=True)
class UnpackResult:
    bundle: Path
    rootfs: Path
    config: dict[str, Any]
    overlay: bool


def unpack_image(image: ResolvedImage, dest: Path, root: Path, options: UnpackOptions,
                 progress: Progress | None = None) -> UnpackResult:
    progress = progress or NullProgress()
    dest = dest.absolute()
    _check_destination(dest, options.force)
    with temp_dir_beside(dest) as tmp:
        os.chmod(tmp, 0o700)  # setuid files and devices inside must not be reachable (umoci)
        rootfs = tmp / "rootfs"
        if options.overlay:
            _mount_overlay_rootfs(image, root, tmp, progress)
        else:
            for warning in unpack_rootfs(image.store, image.manifest, image.config, rootfs,
                                         progress):
                progress.log(f"warning: {warning}")
        try:
            config = to_runtime_config(image.config, options.bundle, rootfs)
            warn_unsafe_labels(image, progress)
            write_bundle(tmp, config)
            if dest.exists():
                remove_bundle(dest)
            os.rename(tmp, dest)
        except BaseException:
            if os.path.ismount(rootfs):
                overlay.umount(rootfs)
            raise
    return UnpackResult(dest, dest / "rootfs", config, options.overlay)


def _check_destination(dest: Path, force: bool) -> None:
    if dest.exists() and any(dest.iterdir()) and not force:
        raise AlreadyExists(f"unpack destination {dest} exists and is not empty",
                            hint="choose a new directory or pass --force to replace it")


def _mount_overlay_rootfs(image: ResolvedImage, root: Path, bundle: Path,
                         progress: Progress) -> None:
    snapshots = SnapshotStore(root / "snapshots")
    lowers = snapshots.prepare(image.store, image.manifest, image.config, progress)
    _, mounted = overlay.mount_rootfs(lowers, bundle, progress, userxattr=snapshots.userxattr)
    if mounted:
        (bundle / OVERLAY_MARKER).write_text(json.dumps({"lowers": [str(p) for p in lowers]}))


def umount_bundle(bundle: Path) -> None:
    """Release the overlay rootfs of a bundle made with ``unpack --overlay``."""
    bundle = bundle.absolute()
    if not (bundle / OVERLAY_MARKER).exists():
        raise OciimgError(f"{bundle} is not an overlay bundle made by ociimg unpack --overlay")
    overlay.umount(bundle / "rootfs")


def remove_bundle(bundle: Path) -> None:
    if (bundle / OVERLAY_MARKER).exists():
        overlay.umount(bundle / "rootfs")
    remove_tree(bundle)
