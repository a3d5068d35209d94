"""``ociimg unpack``: an image → a runtime-spec bundle (config.json + rootfs).

The bundle is assembled in a temp dir beside the destination and renamed into
place only when complete, so an interrupted or failed unpack never leaves a
bundle that looks valid.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ociimg.bundle import BundleOptions, to_runtime_config, write_bundle
from ociimg.commands.leases import MARKER, add_lease, read_marker, release_lease
from ociimg.commands.resolve import ResolvedImage, warn_unsafe_labels
from ociimg.errors import AlreadyExists, OciimgError
from ociimg.events import NullProgress, Progress
from ociimg.fsutil import remove_tree, temp_dir_beside
from ociimg.layers import overlay
from ociimg.layers.snapshots import SnapshotStore
from ociimg.layers.unpack import unpack_rootfs
from ociimg.spec import chain_ids


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
    with _creation_lock(root, options.overlay), temp_dir_beside(dest) as tmp:
        os.chmod(tmp, 0o700)  # setuid files and devices inside must not be reachable (umoci)
        result = _assemble(image, dest, tmp, root, options, progress)
    return result


def _creation_lock(root: Path, overlay: bool) -> contextlib.AbstractContextManager[object]:
    """Until an overlay bundle's lease is recorded, only the containers' creation lock
    keeps gc from removing the snapshots being mounted (as for `run`, which it is)."""
    if not overlay:
        return contextlib.nullcontext()
    from ociimg.containers.store import containers_locked

    return containers_locked(root, shared=True)


def _assemble(image: ResolvedImage, dest: Path, tmp: Path, root: Path, options: UnpackOptions,
              progress: Progress) -> UnpackResult:
    rootfs = tmp / "rootfs"
    lease = None
    if options.overlay:
        lease = _mount_overlay_rootfs(image, root, tmp, dest, progress)
    else:
        for warning in unpack_rootfs(image.store, image.manifest, image.config, rootfs,
                                     progress):
            progress.log(f"warning: {warning}")
    try:
        config = to_runtime_config(image.config, options.bundle, rootfs)
        warn_unsafe_labels(image, progress)
        write_bundle(tmp, config)
        if dest.exists():
            remove_bundle(dest, root)
        os.rename(tmp, dest)
    except BaseException:
        if os.path.ismount(rootfs):
            overlay.umount(rootfs)
        if lease:
            release_lease(root, lease)
        raise
    return UnpackResult(dest, dest / "rootfs", config, options.overlay)


def _check_destination(dest: Path, force: bool) -> None:
    if dest.exists() and any(dest.iterdir()) and not force:
        raise AlreadyExists(f"unpack destination {dest} exists and is not empty",
                            hint="choose a new directory or pass --force to replace it")


def _mount_overlay_rootfs(image: ResolvedImage, root: Path, bundle: Path, dest: Path,
                          progress: Progress) -> str | None:
    """Mount the rootfs in ``bundle`` (renamed to ``dest`` later); returns the lease
    that keeps its snapshots from gc, None for a flattened copy (overlay unavailable)."""
    snapshots = SnapshotStore(root / "snapshots")
    lowers = snapshots.unpack_image(image.store, image.manifest, image.config, progress)
    lease = add_lease(root, dest, chain_ids(image.config.diff_ids))
    try:
        _, mounted = overlay.mount_rootfs(lowers, bundle, progress,
                                          userxattr=snapshots.userxattr)
    except BaseException:
        release_lease(root, lease)
        raise
    if not mounted:
        release_lease(root, lease)
        return None
    (bundle / MARKER).write_text(json.dumps({"lowers": [str(p) for p in lowers],
                                             "lease": lease, "root": str(root)}))
    return lease


def umount_bundle(bundle: Path, root: Path | None = None) -> None:
    """Release the overlay rootfs of a bundle made with ``unpack --overlay``, and its
    lease: gc may remove the snapshots from now on. An already unmounted bundle (after
    a reboot) just gives up its lease."""
    bundle = bundle.absolute()
    marker = read_marker(bundle)
    if marker is None:
        raise OciimgError(f"{bundle} is not an overlay bundle made by ociimg unpack --overlay")
    if os.path.ismount(bundle / "rootfs"):
        overlay.umount(bundle / "rootfs")
    _release_marker_lease(marker, root)


def remove_bundle(bundle: Path, root: Path | None = None) -> None:
    marker = read_marker(bundle)
    if marker is not None:
        if os.path.ismount(bundle / "rootfs"):
            overlay.umount(bundle / "rootfs")
        _release_marker_lease(marker, root)
    remove_tree(bundle)


def _release_marker_lease(marker: dict[str, Any], root: Path | None) -> None:
    lease = marker.get("lease")
    lease_root = marker.get("root") if isinstance(marker.get("root"), str) else root
    if isinstance(lease, str) and lease_root is not None:
        release_lease(Path(lease_root), lease)
