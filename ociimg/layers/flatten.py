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

from ociimg.fsutil import climb, ident, replace_dir, temp_dir_beside
from ociimg.layers import paths
from ociimg.layers.fsops import (
    DIR_OPEN,
    copy_meta,
    copy_node,
    is_whiteout_dev,
    lstat_at,
    overlay_xattr_prefix,
)


@dataclass
class _Merge:
    root: int
    rootless: bool
    prefix: str  # trusted.overlay. or user.overlay. (userxattr snapshots)
    inodes: dict[tuple[int, int], tuple[str, ...]] = field(default_factory=dict)

    def merged_xattr(self, key: str) -> str | None:
        """A snapshot xattr's name in the merged tree; None drops it."""
        if key.startswith("trusted.overlay."):
            return None  # overlayfs's, or escaped ones a DIR unpack would drop as well
        if key.startswith(self.prefix):  # user.overlay.*: the snapshot's own, or escaped
            escaped = self.prefix + "overlay."
            return self.prefix + key[len(escaped):] if key.startswith(escaped) else None
        return key


def merge_snapshots(lowers: Sequence[Path], dest: Path, *, rootless: bool | None = None,
                    userxattr: bool = False) -> None:
    """Write the merged view of ``lowers`` (bottom → top) to a new dir ``dest``."""
    prefix = overlay_xattr_prefix(userxattr)
    rootless = os.geteuid() != 0 if rootless is None else rootless
    with temp_dir_beside(dest) as tmp:
        dst = os.open(tmp, DIR_OPEN)
        try:
            os.fchmod(dst, 0o755)
            for lower in lowers:
                src = os.open(lower, DIR_OPEN)
                try:
                    ctx = _Merge(dst, rootless, prefix)  # hardlinks never span layers
                    _merge_dir(src, dst, ctx)
                    _copy_meta(src, None, dst, os.fstat(src), ctx)
                finally:
                    os.close(src)
        finally:
            os.close(dst)
        replace_dir(tmp, dest)


def _merge_dir(src_top: int, dst_top: int, ctx: _Merge) -> None:
    """Merge the snapshot dir ``src_top`` into ``dst_top``: a walk of both trees side by
    side, without recursion and with two fds whatever the depth (fsutil.walk_at)."""
    # Per open level: the parents' identities, the names left there, the dir's stat.
    stack: list[tuple[tuple[int, int], tuple[int, int], list[str], os.stat_result]] = []
    rel: list[str] = []
    src, dst = os.dup(src_top), os.dup(dst_top)
    try:
        names = os.listdir(src)
        while True:
            if names:
                name = names.pop()
                st = os.stat(name, dir_fd=src, follow_symlinks=False)
                if is_whiteout_dev(st):
                    paths.remove_at(dst, name)
                elif not stat.S_ISDIR(st.st_mode):
                    paths.remove_at(dst, name)
                    _copy_leaf(src, dst, name, st, tuple(rel), ctx)
                else:
                    sfd, dfd = _enter_subdir(src, dst, name, ctx)
                    stack.append((ident(os.fstat(src)), ident(os.fstat(dst)), names, st))
                    rel.append(name)
                    os.close(src)
                    os.close(dst)
                    src, dst, names = sfd, dfd, os.listdir(sfd)
            elif stack:
                src_up, dst_up, names, st = stack.pop()
                rel.pop()
                _copy_meta(src, None, dst, st, ctx)  # after children: mtime
                s_child, d_child, src, dst = src, dst, -1, -1
                try:
                    src = climb(s_child, src_up)
                finally:
                    dst = climb(d_child, dst_up)
            else:
                return
    finally:
        for fd in (src, dst):
            if fd != -1:
                os.close(fd)


def _enter_subdir(src: int, dst: int, name: str, ctx: _Merge) -> tuple[int, int]:
    """Open ``name`` in the snapshot and the merged dir; an opaque snapshot dir, or a
    non-dir in the merged tree, replaces what was there."""
    sfd = os.open(name, DIR_OPEN, dir_fd=src)
    try:
        opaque = _getxattr(sfd, ctx.prefix + "opaque") == b"y"
        cur = lstat_at(dst, name)
        if cur is not None and (opaque or not stat.S_ISDIR(cur.st_mode)):
            paths.remove_at(dst, name)
            cur = None
        if cur is None:
            os.mkdir(name, 0o700, dir_fd=dst)
        return sfd, os.open(name, DIR_OPEN, dir_fd=dst)
    except BaseException:
        os.close(sfd)
        raise


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
    copy_node(src, name, dst, st)
    _copy_meta(src, name, dst, st, ctx)


def _open_rel(root: int, parts: tuple[str, ...]) -> int:
    fd = os.dup(root)
    for part in parts:
        nxt = os.open(part, DIR_OPEN, dir_fd=fd)
        os.close(fd)
        fd = nxt
    return fd


def _getxattr(fd: int, key: str) -> bytes | None:
    try:
        return os.getxattr(fd, key)
    except OSError:
        return None


def _copy_meta(src: int, name: str | None, dst: int, st: os.stat_result, ctx: _Merge) -> None:
    copy_meta(src, name, dst, st, ctx.rootless, ctx.merged_xattr)
