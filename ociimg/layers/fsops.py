"""Small fd-relative filesystem operations shared by the applier's overlay format.

Whiteout devices, copy-up of a lower entry into an upper dir (for hardlinks that
point into a lower layer), and metadata copies. Every call is relative to a dir fd
and never follows a symlink in the final component.
"""

from __future__ import annotations

import os
import stat

_DIR_OPEN = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def lstat_at(dirfd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def is_whiteout_dev(st: os.stat_result | None) -> bool:
    return st is not None and stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def remove_whiteout_devices(fd: int) -> None:
    for name in os.listdir(fd):
        st = lstat_at(fd, name)
        if is_whiteout_dev(st):
            os.unlink(name, dir_fd=fd)
        elif st is not None and stat.S_ISDIR(st.st_mode):
            sub = os.open(name, _DIR_OPEN, dir_fd=fd)
            try:
                remove_whiteout_devices(sub)
            finally:
                os.close(sub)


def copy_meta(src_pfd: int, name: str, dst_pfd: int, st: os.stat_result,
               rootless: bool) -> None:
    if not rootless:
        os.chown(name, st.st_uid, st.st_gid, dir_fd=dst_pfd, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=dst_pfd)
    src, dst = f"/proc/self/fd/{src_pfd}/{name}", f"/proc/self/fd/{dst_pfd}/{name}"
    try:
        for key in os.listxattr(src, follow_symlinks=False):
            os.setxattr(dst, key, os.getxattr(src, key, follow_symlinks=False),
                        follow_symlinks=False)
    except OSError:
        pass  # best effort, like overlayfs copy-up on filesystems without xattrs
    os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dst_pfd, follow_symlinks=False)


def copy_entry(src_pfd: int, name: str, dst_pfd: int, st: os.stat_result,
                rootless: bool) -> None:
    if stat.S_ISREG(st.st_mode):
        src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_pfd)
        dst = os.open(name, _FILE_FLAGS, 0o600, dir_fd=dst_pfd)
        try:
            while os.sendfile(dst, src, None, 1 << 23):
                pass
        finally:
            os.close(src)
            os.close(dst)
    elif stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(name, dir_fd=src_pfd), name, dir_fd=dst_pfd)
    elif stat.S_ISFIFO(st.st_mode):
        os.mkfifo(name, 0o600, dir_fd=dst_pfd)
    else:
        os.mknod(name, st.st_mode, st.st_rdev, dir_fd=dst_pfd)
    copy_meta(src_pfd, name, dst_pfd, st, rootless)
