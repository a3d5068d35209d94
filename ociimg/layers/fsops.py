"""Small fd-relative filesystem operations shared by the applier's overlay format.

Whiteout devices, copy-up of a lower entry into an upper dir (for hardlinks that
point into a lower layer), and metadata copies. Every call is relative to a dir fd
and never follows a symlink in the final component.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator

DIR_OPEN = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def lstat_at(dirfd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def is_whiteout_dev(st: os.stat_result | None) -> bool:
    return st is not None and stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _same_name(key: str) -> str | None:
    return key


def copy_meta(src_pfd: int, name: str | None, dst_pfd: int, st: os.stat_result,
              rootless: bool, xattr_name: Callable[[str], str | None] = _same_name) -> None:
    """Owner, mode, xattrs and times of ``st`` onto ``name`` in ``dst_pfd`` (from
    ``name`` in ``src_pfd``), or onto the open dir ``dst_pfd`` itself when ``name`` is
    None. ``xattr_name`` renames an xattr or drops it (None)."""
    if name is None:
        src: int | str = src_pfd
        dst: int | str = dst_pfd
        nofollow = {}
    else:
        src, dst = f"/proc/self/fd/{src_pfd}/{name}", f"/proc/self/fd/{dst_pfd}/{name}"
        nofollow = {"follow_symlinks": False}
    if not rootless:
        os.chown(dst, st.st_uid, st.st_gid, **nofollow)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    try:
        keys = os.listxattr(src, **nofollow)
    except OSError:
        keys = []
    for key in keys:
        target = xattr_name(key)
        try:
            if target is not None:
                os.setxattr(dst, target, os.getxattr(src, key, **nofollow), **nofollow)
        except OSError:
            pass  # best effort, like overlayfs copy-up on filesystems without xattrs
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), **nofollow)


def copy_node(src_pfd: int, name: str, dst_pfd: int, st: os.stat_result) -> None:
    """Create a copy of the non-directory ``name`` (content, link target or device
    number; no metadata) in ``dst_pfd``, where nothing of that name exists."""
    if stat.S_ISREG(st.st_mode):
        src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_pfd)
        try:
            dst = os.open(name, FILE_CREATE, 0o600, dir_fd=dst_pfd)
            try:
                copy_sparse(src, dst)
            finally:
                os.close(dst)
        finally:
            os.close(src)
    elif stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(name, dir_fd=src_pfd), name, dir_fd=dst_pfd)
    elif stat.S_ISFIFO(st.st_mode):
        os.mkfifo(name, 0o600, dir_fd=dst_pfd)
    else:
        os.mknod(name, st.st_mode, st.st_rdev, dir_fd=dst_pfd)


def data_segments(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """The [start, end) ranges of data in the first ``size`` bytes of ``fd``, by
    SEEK_DATA/SEEK_HOLE; the rest are holes. A filesystem without them: all data. A file
    that shrinks meanwhile just ends early."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return  # only a hole is left
            if exc.errno != errno.EINVAL:
                raise
            start = pos
        if start >= size:
            return
        try:
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENXIO):  # ENXIO: cut under us
                raise
            end = size
        if end > start:
            yield start, end
        pos = end


def copy_sparse(src: int, dst: int) -> None:
    """Copy a regular file's data segments only; holes stay holes.

    A sparse file in a lower layer (1 GiB of holes from a few hundred bytes of tar)
    was written out in full when a hardlink in a later layer copied it up.
    """
    size = os.fstat(src).st_size
    for start, end in data_segments(src, size):
        _copy_range(src, dst, start, end - start)
    os.ftruncate(dst, size)


def _copy_range(src: int, dst: int, offset: int, count: int) -> None:
    while count > 0:
        try:
            n = os.copy_file_range(src, dst, min(count, 1 << 30), offset, offset)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            n = _copy_range_plain(src, dst, offset, count)
        if n == 0:
            return  # the file shrank under us
        offset += n
        count -= n


def _copy_range_plain(src: int, dst: int, offset: int, count: int) -> int:
    data = os.pread(src, min(count, 1 << 20), offset)
    view = memoryview(data)
    at = offset
    while view:
        written = os.pwrite(dst, view, at)
        view, at = view[written:], at + written
    return len(data)


def copy_entry(src_pfd: int, name: str, dst_pfd: int, st: os.stat_result,
               rootless: bool, xattr_name: Callable[[str], str | None] = _same_name) -> None:
    copy_node(src_pfd, name, dst_pfd, st)
    copy_meta(src_pfd, name, dst_pfd, st, rootless, xattr_name)


OVERLAY_XATTR_PREFIX = "trusted.overlay."
USER_OVERLAY_PREFIX = "user.overlay."  # overlayfs "userxattr" mounts (rootless)


def overlay_xattr_prefix(userxattr: bool) -> str:
    return USER_OVERLAY_PREFIX if userxattr else OVERLAY_XATTR_PREFIX
