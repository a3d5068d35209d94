"""The merged view of committed snapshot dirs, read-only and path by path, for the differ.

What an overlay mount of the parent chain shows (overlayfs.rst "Directories"): the top
layer holding a name decides what it is, a whiteout hides it, a dir merges with the
same-named dirs below until one is opaque, a non-dir hides everything below. Paths come
from a walk of the new tree, so they are symlink-free: each dir is opened with
``RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH`` (or a component walk with ``O_NOFOLLOW``), and
no fd is kept between calls (only the layer roots).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ociimg.layers.fsops import DIR_OPEN
from ociimg.layers.ondisk import OnDisk, OnDiskFormat
from ociimg.oskit import linux

_RESOLVE = linux.RESOLVE.NO_SYMLINKS | linux.RESOLVE.BENEATH | linux.RESOLVE.NO_MAGICLINKS
_openat2_ok = True


@dataclass(frozen=True, slots=True)
class Old:
    layer: int  # index into the layers, top first
    st: os.stat_result


def open_dir_beneath(rootfd: int, parts: Sequence[str]) -> int | None:
    """An fd of the dir ``parts`` below ``rootfd`` reached without any symlink; None when
    it is missing or not a dir (or a symlink)."""
    global _openat2_ok
    if not parts:
        return os.dup(rootfd)
    if _openat2_ok:
        try:
            return linux.openat2(rootfd, "/".join(parts), DIR_OPEN, 0, _RESOLVE)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return None
            if exc.errno == errno.ENOSYS:
                _openat2_ok = False
            elif exc.errno != errno.ENAMETOOLONG:
                raise
    fd = os.dup(rootfd)
    try:
        for part in parts:
            nxt = os.open(part, DIR_OPEN, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except (FileNotFoundError, NotADirectoryError):
        os.close(fd)
        return None
    except OSError as exc:
        os.close(fd)
        if exc.errno == errno.ELOOP:
            return None
        raise
    return fd


@contextmanager
def opened_dir(rootfd: int, parts: Sequence[str]) -> Iterator[int | None]:
    fd = open_dir_beneath(rootfd, parts)
    try:
        yield fd
    finally:
        if fd is not None:
            os.close(fd)


class LowerTree:
    """The merged tree of ``lowers`` (snapshot fs dirs, top first)."""

    def __init__(self, lowers: Sequence[Path], *, userxattr: bool) -> None:
        self.format = OnDisk(OnDiskFormat.OVERLAY, userxattr)
        self.roots: list[int] = []
        try:
            for p in lowers:
                self.roots.append(os.open(p, DIR_OPEN))
        except BaseException:
            self.close()
            raise
        # dir path -> the layers merged into it, top first (filled as dirs are listed)
        self._layers: dict[tuple[str, ...], list[int]] = {(): list(range(len(self.roots)))}

    def close(self) -> None:
        for fd in self.roots:
            os.close(fd)
        self.roots = []

    def __enter__(self) -> LowerTree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def children(self, parts: tuple[str, ...]) -> dict[str, Old]:
        """What the merged dir ``parts`` holds (empty when it is not a merged dir)."""
        layers = self._layers.get(parts)
        if layers is None:
            layers = self._layers_of(parts)
        out: dict[str, Old] = {}
        stopped: set[str] = set()
        subdirs: dict[str, list[int]] = {}
        for idx in layers:
            with opened_dir(self.roots[idx], parts) as fd:
                if fd is None:
                    continue
                for name in os.listdir(fd):
                    if name in stopped:
                        continue
                    try:
                        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if name not in out and self.format.is_whiteout(st):
                        stopped.add(name)
                        continue
                    if name not in out:
                        out[name] = Old(idx, st)
                    if not stat.S_ISDIR(st.st_mode):
                        stopped.add(name)
                        continue
                    subdirs.setdefault(name, []).append(idx)
                    if self.format.is_opaque(fd, name):
                        stopped.add(name)
        for name, sub in subdirs.items():
            self._layers[(*parts, name)] = sub
        return out

    def _layers_of(self, parts: tuple[str, ...]) -> list[int]:
        """The layers merged at ``parts`` (for a dir whose parent was not listed)."""
        for i in range(len(parts)):
            if parts[: i + 1] not in self._layers:
                self.children(parts[:i])
        return self._layers.get(parts, [])

    @contextmanager
    def parent_of(self, parts: tuple[str, ...], old: Old) -> Iterator[int | None]:
        """The dir fd holding ``old`` (the entry at ``parts``) in its layer."""
        with opened_dir(self.roots[old.layer], parts[:-1]) as fd:
            yield fd
