"""Mount points a runtime had to create in a rootfs (``/proc``, ``/etc/hosts``, a
``--mount`` target), removed again once the container is done with them, so they never
show in a diff, a commit or a build step's layer (BuildKit and docker's init layer do the
same). Paths are resolved inside the tree: the container may have swapped a parent for
a symlink.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator

from ociimg.oskit.paths import resolve_in_root


def remove_mount_points(tree: str | os.PathLike[str], paths: list[str],
                        times: dict[str, tuple[int, int]]) -> None:
    """Remove ``paths`` (absolute inside ``tree``), deepest first, where they are still
    an empty dir or an empty regular file; then give the dirs in ``times`` their
    (atime_ns, mtime_ns) back. Whatever is not there, or has content now, stays."""
    try:
        rootfd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        for path in sorted(paths, key=lambda p: p.rstrip("/").count("/"), reverse=True):
            parent, _, name = path.rstrip("/").rpartition("/")
            with _opened_dir(rootfd, parent or "/") as pfd:
                if pfd is None or not name:
                    continue
                try:
                    st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
                    if stat.S_ISDIR(st.st_mode):
                        os.rmdir(name, dir_fd=pfd)
                    elif stat.S_ISREG(st.st_mode) and st.st_size == 0:
                        os.unlink(name, dir_fd=pfd)
                except OSError:
                    pass  # not there, or something was put in it: it stays
        for path, (atime, mtime) in times.items():
            with _opened_dir(rootfd, path) as fd:
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.utime(f"/proc/self/fd/{fd}", ns=(atime, mtime))
    finally:
        os.close(rootfd)


@contextlib.contextmanager
def _opened_dir(rootfd: int, path: str) -> Iterator[int | None]:
    try:
        fd = resolve_in_root(rootfd, path, flags=os.O_PATH | os.O_DIRECTORY,
                             follow_last=False)
    except OSError:
        yield None
        return
    try:
        yield fd
    finally:
        os.close(fd)
