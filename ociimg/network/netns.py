"""Network namespaces of containers: an nsfs bind mount ``NETNS_DIR/<id>`` per container.

The namespace outlives the process that made it (the runtime joins it by path; netavark
configures it by path) until :func:`remove` unmounts it. NETNS_DIR is a shared bind
mount of itself (podman's ``makeNetnsDir``): without that, a mount namespace created
while a netns file is mounted (every container's) holds its own copy of the nsfs mount,
and the unmount here would leave that copy pinning the namespace (podman#24024, #163).
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading

from ociimg.errors import ContainerError
from ociimg.oskit import linux
from ociimg.oskit.mountinfo import read_mountinfo

NETNS_DIR = "/run/ociimg/netns"


def path_for(cid: str) -> str:
    return os.path.join(NETNS_DIR, cid)


def create(cid: str) -> str:
    """A new, empty network namespace (loopback down) mounted at ``path_for(cid)``."""
    _make_shared_dir()
    path = path_for(cid)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o444)
    os.close(fd)
    failed: list[OSError] = []

    def unshare_and_mount() -> None:
        # unshare(CLONE_NEWNET) moves only this thread; it ends right after the mount,
        # so the caller's threads never run in the new namespace.
        try:
            linux.unshare(linux.CLONE.NEWNET)
            linux.mount("/proc/thread-self/ns/net", path, None, linux.MS.BIND)
        except OSError as exc:
            failed.append(exc)

    worker = threading.Thread(target=unshare_and_mount, name="ociimg-netns")
    worker.start()
    worker.join()
    if failed:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise ContainerError(f"create network namespace {path}: {failed[0].strerror}",
                             hint="network namespaces need root (CAP_SYS_ADMIN)")
    return path


def remove(cid: str) -> None:
    """Unmount and unlink the container's netns file; nothing if it is already gone."""
    path = path_for(cid)
    try:
        linux.umount2(path, linux.MNT.DETACH | linux.MNT.UMOUNT_NOFOLLOW)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOENT):  # not mounted, or no file
            raise ContainerError(f"unmount network namespace {path}: {exc.strerror}",
                                 hint="see grep ociimg/netns /proc/self/mountinfo") from None
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _make_shared_dir() -> None:
    os.makedirs(NETNS_DIR, mode=0o755, exist_ok=True)
    from pathlib import Path

    from ociimg.store import locks
    with locks.locked(Path(NETNS_DIR).parent / ".netns.lock"):
        if any(m.mount_point == NETNS_DIR for m in read_mountinfo()):
            return
        linux.mount(NETNS_DIR, NETNS_DIR, None, linux.MS.BIND)
        linux.mount(None, NETNS_DIR, None, linux.MS.SHARED)
