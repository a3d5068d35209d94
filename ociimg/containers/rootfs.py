"""A container's root filesystem.

The rootfs is the active snapshot ``key`` (the container's id) over the image's top
committed snapshot (containerd's Prepare): its upper/work live under
``snapshots/active/<id>/``, mounted on ``<container>/rootfs`` by ``mount_rootfs`` and
unmounted by ``release_rootfs`` when the program exits. The snapshot stays until
``remove_rootfs`` (``rm``), so diff, commit and export work on a stopped container, as
docker's do. These functions are the only place that knows how. The monitor imports this
module after every container's exit: it stays light.
"""

from __future__ import annotations

import dataclasses
import errno
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

    from ociimg.containers.resolved import ResolvedImage
    from ociimg.events import Progress
    from ociimg.layers.overlay import Mount


def mount_rootfs(image: ResolvedImage, root: Path, bundle: Path, key: str,
                 progress: Progress, *, volatile: bool = False) -> None:
    """``bundle``/rootfs: a new active snapshot ``key`` over the image's layers (their
    committed snapshots made first if missing). ``volatile`` (a container removed when
    it exits, podman's choice for --rm too): overlayfs's ``volatile`` option, so the
    unmount does not sync the whole upper filesystem (tens of ms on a busy disk) for a
    writable layer that is deleted next."""
    from ociimg.layers.overlay import mount_all
    from ociimg.layers.snapshots import SnapshotStore
    snapshots = SnapshotStore(root / "snapshots")
    snapshots.unpack_image(image.store, image.manifest, image.config, progress)
    chain = image.chain()
    mounts = snapshots.prepare(key, chain[-1] if chain else None,
                               labels={"ociimg.container": key})
    target = bundle / "rootfs"
    try:
        target.mkdir(mode=0o755, exist_ok=True)
        if volatile:
            try:
                mount_all([_volatile(m) for m in mounts], target)
                return
            except OSError as exc:
                if exc.errno != errno.EINVAL:  # EINVAL: a kernel before 5.10 lacks it
                    raise
        mount_all(mounts, target)
    except BaseException:
        snapshots.remove(key)
        raise


def _volatile(mount: Mount) -> Mount:
    writable = mount.type == "overlay" and any(o.startswith("upperdir=")
                                               for o in mount.options)
    return dataclasses.replace(mount, options=(*mount.options, "volatile")) \
        if writable else mount


def mount_snapshot(root: Path, bundle: Path, key: str) -> None:
    """``bundle``/rootfs: the active snapshot ``key`` its owner prepared (a build step)."""
    from ociimg.layers.overlay import mount_all
    from ociimg.layers.snapshots import SnapshotStore
    target = bundle / "rootfs"
    target.mkdir(mode=0o755, exist_ok=True)
    mount_all(SnapshotStore(root / "snapshots").mounts(key), target)


def release_rootfs(bundle: str | os.PathLike[str]) -> None:
    """Unmount ``bundle``/rootfs if mounted; its upper dir stays."""
    rootfs = os.path.join(bundle, "rootfs")
    while os.path.ismount(rootfs):  # mount_all may have stacked several
        from ociimg.oskit import linux
        linux.umount2(rootfs, 0)


def remove_rootfs(root: str | os.PathLike[str], key: str) -> None:
    """Drop the active snapshot ``key`` (unmounted first by release_rootfs). A container
    made before rootfs were active snapshots has none: its upper went with its dir."""
    from ociimg.errors import NotFound
    from ociimg.layers.snapshots import SnapshotStore
    try:
        SnapshotStore(os.path.join(root, "snapshots")).remove(key)
    except NotFound:
        pass
