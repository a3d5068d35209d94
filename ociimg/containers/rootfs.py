"""A container's root filesystem.

The rootfs is an overlay of the image's committed snapshots with the container's own
upper/ and work/ beside it (a flattened copy where overlayfs is unavailable). It is
mounted by ``mount_rootfs`` and unmounted by ``release_rootfs`` when the program exits;
the upper stays until the container is removed, so a stopped container's changes are
still there. These two functions are the only place that knows how. The monitor imports
this module after every container's exit: it stays light.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

    from ociimg.containers.resolved import ResolvedImage
    from ociimg.events import Progress


def mount_rootfs(image: ResolvedImage, root: Path, bundle: Path, progress: Progress) -> None:
    """``bundle``/rootfs over the image's snapshots (made first if missing)."""
    from ociimg.layers import overlay
    from ociimg.layers.snapshots import SnapshotStore
    snapshots = SnapshotStore(root / "snapshots")
    lowers = snapshots.prepare(image.store, image.manifest, image.config, progress)
    overlay.mount_rootfs(lowers, bundle, progress, userxattr=snapshots.userxattr)


def release_rootfs(bundle: str | os.PathLike[str]) -> None:
    """Unmount ``bundle``/rootfs if mounted; its upper dir stays."""
    rootfs = os.path.join(bundle, "rootfs")
    if os.path.ismount(rootfs):
        from ociimg.oskit import linux
        linux.umount2(rootfs, 0)
