"""A container's root filesystem, and the resolved image it is made from.

The rootfs is an overlay of the image's committed snapshots with the container's own
upper/ and work/ beside it (a flattened copy where overlayfs is unavailable). It is
mounted by ``mount_rootfs`` and unmounted by ``release_rootfs`` when the program exits;
the upper stays until the container is removed, so a stopped container's changes are
still there. These two functions are the only place that knows how.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TYPE_CHECKING = False  # the monitor imports release_rootfs: it stays light
if TYPE_CHECKING:
    from ociimg.digest import Digest
    from ociimg.events import Progress
    from ociimg.spec import Descriptor, ImageConfig, Manifest
    from ociimg.store import Store


@dataclass(frozen=True)
class ResolvedImage:
    """An image found in a store (or an ``oci:`` layout) for one platform."""

    store: Store
    name: str
    descriptor: Descriptor
    manifest: Manifest
    config: ImageConfig

    def chain(self) -> list[Digest]:
        """Chain ids of its layers, bottom to top (the last is the rootfs's parent)."""
        from ociimg.spec import chain_ids
        return chain_ids(self.config.diff_ids)


def mount_rootfs(image: ResolvedImage, root: Path, bundle: Path, progress: Progress) -> None:
    """``bundle``/rootfs over the image's snapshots (made first if missing)."""
    from ociimg.layers import overlay
    from ociimg.layers.snapshots import SnapshotStore
    snapshots = SnapshotStore(root / "snapshots")
    lowers = snapshots.prepare(image.store, image.manifest, image.config, progress)
    overlay.mount_rootfs(lowers, bundle, progress, userxattr=snapshots.userxattr)


def release_rootfs(bundle: Path) -> None:
    """Unmount ``bundle``/rootfs if mounted; its upper dir stays."""
    rootfs = bundle / "rootfs"
    if os.path.ismount(rootfs):
        from ociimg.oskit import linux
        linux.umount2(rootfs, 0)


def warn_unsafe_labels(image: ResolvedImage, progress: Progress) -> None:
    """Labels a runtime would act on are dropped from the annotations; say so."""
    from ociimg.bundle import unsafe_labels
    dropped = unsafe_labels(image.config)
    if dropped:
        progress.log(f"warning: image labels not copied to annotations (reserved for "
                     f"runtimes): {', '.join(dropped)}")
