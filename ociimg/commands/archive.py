"""Tar streams of a tree that may be hostile (a container's): ``write_tar`` for
``ociimg export`` and ``ociimg cp … -``, and ``write_atomically`` for a file that must
never be seen half-written.

Every entry below the top is opened relative to its parent's fd with ``O_NOFOLLOW`` and
checked by fstat against what was listed (``open_checked``), so a symlink is written as
a symlink and an entry swapped mid-walk fails the walk; file data is read from the inode
that was checked (``reopen`` through /proc/self/fd), never by name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from ociimg.fsutil import ident, walk_at

PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
# Overlayfs's own attributes: not the container's, never copied or exported.
SKIPPED_XATTRS = ("trusted.overlay.", "user.overlay.")


def reopen(pfd: int, flags: int) -> int:
    """The inode behind the O_PATH fd ``pfd`` opened for I/O (the inode, not a name)."""
    return os.open(f"/proc/self/fd/{pfd}", flags | os.O_CLOEXEC)


def open_checked(dirfd: int, name: str, st: os.stat_result) -> int:
    """O_PATH fd of ``name`` in ``dirfd``, which must still be the inode that was listed."""
    pfd = os.open(name, PATH_FLAGS, dir_fd=dirfd)
    if ident(os.fstat(pfd)) != ident(st):
        os.close(pfd)
        raise OSError(errno.ESTALE, f"{name}: replaced while being copied")
    return pfd


@contextlib.contextmanager
def opened(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def write_tar(out: BinaryIO, src_pfd: int, arcname: str, *, contents_only: bool = False
              ) -> None:
    """A tar of the entry ``src_pfd`` (an O_PATH fd) named ``arcname``, a dir with all
    below it (``contents_only``: only what is below, as docker's ``SRC/.``)."""
    st = os.fstat(src_pfd)
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
        writer = _TarWriter(tf)
        if not stat.S_ISDIR(st.st_mode):
            writer.add(src_pfd, arcname, st)
            return
        if not contents_only:
            writer.add(src_pfd, arcname, st)
        dirfd = reopen(src_pfd, os.O_RDONLY | os.O_DIRECTORY)
        prefix = "" if contents_only else f"{arcname}/"
        try:
            walk_at(dirfd, lambda d, name, s, rel: writer.visit(d, name, s, rel, prefix))
        finally:
            os.close(dirfd)


class _TarWriter:
    def __init__(self, tf: tarfile.TarFile) -> None:
        self.tf = tf
        self.links: dict[tuple[int, int], str] = {}

    def visit(self, dirfd: int, name: str, st: os.stat_result, rel: list[str],
              prefix: str) -> bool:
        pfd = open_checked(dirfd, name, st)
        try:
            self.add(pfd, prefix + "/".join([*rel, name]), st)
        finally:
            os.close(pfd)
        return stat.S_ISDIR(st.st_mode)

    def add(self, pfd: int, arcname: str, st: os.stat_result) -> None:
        info = tarfile.TarInfo(arcname)
        info.mode = stat.S_IMODE(st.st_mode)
        info.uid, info.gid = st.st_uid, st.st_gid
        info.uname = info.gname = ""
        info.mtime = st.st_mtime
        info.pax_headers = _xattr_headers(pfd, st)
        key = ident(st)
        if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1 and key in self.links:
            info.type, info.linkname = tarfile.LNKTYPE, self.links[key]
            self.tf.addfile(info)
            return
        if stat.S_ISREG(st.st_mode):
            if st.st_nlink > 1:
                self.links[key] = arcname
            fd = reopen(pfd, os.O_RDONLY | os.O_NONBLOCK)
            with os.fdopen(fd, "rb") as f:
                info.size = st.st_size
                self.tf.addfile(info, _Exactly(f, st.st_size))
            return
        if stat.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
        elif stat.S_ISLNK(st.st_mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink("", dir_fd=pfd)
        elif stat.S_ISFIFO(st.st_mode):
            info.type = tarfile.FIFOTYPE
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            info.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        else:
            return  # a socket: tar has no type for it (GNU tar skips them too)
        self.tf.addfile(info)


class _Exactly:
    """``size`` bytes of ``f``: a file that shrank while being read is padded with zeros
    and one that grew is cut, so the tar stays well-formed (as GNU tar does)."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self._f = f
        self._left = size

    def read(self, n: int = -1) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        data = self._f.read(n) if n else b""
        if len(data) < n:
            data += bytes(n - len(data))
        self._left -= len(data)
        return data


def _xattr_headers(pfd: int, st: os.stat_result) -> dict[str, str]:
    if stat.S_ISLNK(st.st_mode):
        return {}  # user.* xattrs cannot be set on symlinks; trusted.* is not ours to copy
    path = f"/proc/self/fd/{pfd}"
    try:
        keys = os.listxattr(path)
    except OSError:
        return {}
    out = {}
    for key in sorted(keys):
        if key.startswith(SKIPPED_XATTRS):
            continue
        with contextlib.suppress(OSError):
            out[f"SCHILY.xattr.{key}"] = os.getxattr(path, key).decode("utf-8",
                                                                      "surrogateescape")
    return out


def write_atomically(dest: Path, fill: Callable[[BinaryIO], object]) -> None:
    """``fill`` writes a temp file beside ``dest``; fsynced and renamed over ``dest`` only
    when it returns (an exception removes the temp and leaves ``dest`` as it was)."""
    dest = dest.absolute()
    tmp = dest.with_name(f".{dest.name}.tmp-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            fill(f)  # type: ignore[arg-type]
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
