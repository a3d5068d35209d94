"""Overlay-format snapshots → one flattened tree (when overlayfs cannot be mounted).

The merge does in user space what an overlay mount shows: layers bottom → top, a
0:0 char device deletes, an opaque dir (``trusted.overlay.opaque=y``) starts empty.
Like a DIR-format unpack, the result carries no ``trusted.overlay.*`` xattrs (escaped
ones included: outside an overlay mount they would steer a later one). Hardlinks inside
a layer stay hardlinks. Sources are our own snapshots; the destination is walked
with ``O_NOFOLLOW`` dir fds, so a symlink from a lower layer is never written through.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ociimg.fsutil import replace_dir, temp_dir_beside
from ociimg.layers import paths
from ociimg.layers.apply import overlay_xattr_prefix

_DIR_OPEN = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class _Merge:
    root: int
    rootless: bool
    prefix: str  # trusted.overlay. or user.overlay. (userxattr snapshots)
    inodes: dict[tuple[int, int], tuple[str, ...]] = field(default_factory=dict)


def merge_snapshots(lowers: Sequence[Path], dest: Path, *, rootless: bool | None = None,
                    userxattr: bool = False) -> None:
    """Write the merged view of ``lowers`` (bottom → top) to a new dir ``dest``."""
    prefix = overlay_xattr_prefix(userxattr)
    rootless = os.geteuid() != 0 if rootless is None else rootless
    with temp_dir_beside(dest) as tmp:
        dst = os.open(tmp, _DIR_OPEN)
        try:
            os.fchmod(dst, 0o755)
            for lower in lowers:
                src = os.open(lower, _DIR_OPEN)
                try:
                    ctx = _Merge(dst, rootless, prefix)  # hardlinks never span layers
                    _merge_dir(src, dst, (), ctx)
                    _copy_meta(src, None, dst, None, os.fstat(src), ctx)
                finally:
                    os.close(src)
        finally:
            os.close(dst)
        replace_dir(tmp, dest)


def _merge_dir(src: int, dst: int, rel: tuple[str, ...], ctx: _Merge) -> None:
    for name in os.listdir(src):
        st = os.stat(name, dir_fd=src, follow_symlinks=False)
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
            paths.remove_at(dst, name)
        elif stat.S_ISDIR(st.st_mode):
            _merge_subdir(src, dst, name, st, rel, ctx)
        else:
            paths.remove_at(dst, name)
            _copy_leaf(src, dst, name, st, rel, ctx)


def _merge_subdir(src: int, dst: int, name: str, st: os.stat_result, rel: tuple[str, ...],
                  ctx: _Merge) -> None:
    sfd = os.open(name, _DIR_OPEN, dir_fd=src)
    try:
        opaque = _getxattr(sfd, ctx.prefix + "opaque") == b"y"
        cur = _lstat(dst, name)
        if cur is not None and (opaque or not stat.S_ISDIR(cur.st_mode)):
            paths.remove_at(dst, name)
            cur = None
        if cur is None:
            os.mkdir(name, 0o700, dir_fd=dst)
        dfd = os.open(name, _DIR_OPEN, dir_fd=dst)
        try:
            _merge_dir(sfd, dfd, (*rel, name), ctx)
            _copy_meta(sfd, None, dfd, None, st, ctx)  # after children: mtime
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)


def _copy_leaf(src: int, dst: int, name: str, st: os.stat_result, rel: tuple[str, ...],
               ctx: _Merge) -> None:
    key = (st.st_dev, st.st_ino)
    if st.st_nlink > 1 and key in ctx.inodes:
        first = ctx.inodes[key]
        fdir = _open_rel(ctx.root, first[:-1])
        try:
            os.link(first[-1], name, src_dir_fd=fdir, dst_dir_fd=dst, follow_symlinks=False)
        finally:
            os.close(fdir)
        return
    if st.st_nlink > 1:
        ctx.inodes[key] = (*rel, name)
    if stat.S_ISREG(st.st_mode):
        sfd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src)
        dfd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      0o600, dir_fd=dst)
        try:
            while os.sendfile(dfd, sfd, None, 1 << 24):
                pass
        finally:
            os.close(sfd)
            os.close(dfd)
    elif stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(name, dir_fd=src), name, dir_fd=dst)
    elif stat.S_ISFIFO(st.st_mode):
        os.mkfifo(name, 0o600, dir_fd=dst)
    else:
        os.mknod(name, st.st_mode, st.st_rdev, dir_fd=dst)
    _copy_meta(src, name, dst, name, st, ctx)


def _open_rel(root: int, parts: tuple[str, ...]) -> int:
    fd = os.dup(root)
    for part in parts:
        nxt = os.open(part, _DIR_OPEN, dir_fd=fd)
        os.close(fd)
        fd = nxt
    return fd


def _lstat(dirfd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _getxattr(fd: int, key: str) -> bytes | None:
    try:
        return os.getxattr(fd, key)
    except OSError:
        return None


def _copy_meta(src: int, sname: str | None, dst: int, dname: str | None, st: os.stat_result,
               ctx: _Merge) -> None:
    """Owner, mode, xattrs, times; on the fds themselves, or on dirfd-relative names."""
    if sname is None or dname is None:
        s_target: int | str = src
        d_target: int | str = dst
    else:
        s_target, d_target = f"/proc/self/fd/{src}/{sname}", f"/proc/self/fd/{dst}/{dname}"
    nofollow = {} if isinstance(d_target, int) else {"follow_symlinks": False}
    if not ctx.rootless:
        os.chown(d_target, st.st_uid, st.st_gid, **nofollow)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(d_target, stat.S_IMODE(st.st_mode))
    try:
        names = os.listxattr(s_target, **nofollow)
    except OSError:
        names = []
    escaped = ctx.prefix + "overlay."
    for key in names:
        target = key
        if key.startswith("trusted.overlay."):
            continue  # overlayfs's, or escaped ones a DIR unpack would drop as well
        if key.startswith(ctx.prefix):  # user.overlay.*: the snapshot's own, or escaped
            if not key.startswith(escaped):
                continue
            target = ctx.prefix + key[len(escaped):]
        try:
            os.setxattr(d_target, target, os.getxattr(s_target, key, **nofollow), **nofollow)
        except OSError:
            pass  # a namespace this fs or user cannot write; the snapshot keeps it
    os.utime(d_target, ns=(st.st_atime_ns, st.st_mtime_ns), **nofollow)
