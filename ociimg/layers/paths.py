"""Dir fds for tar paths inside the unpack root: nothing ever leads out of it.

Resolution is ``oskit.paths.resolve_in_root`` (openat2 RESOLVE_IN_ROOT, else its
component walk; CVE-2025-45582, CVE-2014-6407); this module adds what the applier needs
on top: a cache of recent dir fds, the depth limit, and parents made in place of
whatever non-directory is in the way (umoci#546).

Tar names are never joined onto a host path and prefix-checked (umoci security.md;
CVE-2020-27833); every write is relative to a dir fd handed out here.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import OrderedDict

from ociimg import fsutil
from ociimg.errors import UnsafeArchive
from ociimg.fsutil import ident
from ociimg.oskit import paths as oskit_paths
from ociimg.oskit.paths import HAVE_OPENAT2, MAX_SYMLINKS

__all__ = ["HAVE_OPENAT2", "MAX_SYMLINKS", "MAX_DEPTH", "Resolver", "split_name",
           "make_dir_replacing", "remove_at", "clear_dir"]
# Dirs nested deeper than this are refused: real images nest < 100, and deeper trees
# only slow every later walk (rm, gc, merges; these are iterative and fd-based, so they
# cope, fsutil.walk_at). The depth that counts is the real one: a name of a few
# components can reach a deep dir through symlinks, so every dir the applier creates is
# checked against its parent's depth (Resolver.child_depth), not the name's length.
MAX_DEPTH = 256
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_CACHE_SIZE = 128
_DEPTH_CACHE = 1 << 20  # identities; beyond it depths are recomputed by climbing


def split_name(name: str) -> list[str]:
    """Tar entry name → path components below the root.

    A leading "/" and "." components are dropped (tar's own normalisation); ".." is
    refused outright: no layer producer needs it and every traversal CVE uses it.
    """
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"tar entry {name!r}: '..' path component",
                            hint="the layer is hostile or broken; do not use this image")
    if len(parts) > MAX_DEPTH:
        raise _too_deep(name)
    return parts


def _too_deep(name: str) -> UnsafeArchive:
    return UnsafeArchive(f"tar entry {name[:200]!r}: nested deeper than {MAX_DEPTH} dirs",
                         hint="the layer is hostile or broken; do not use this image")


class Resolver:
    """Hands out O_PATH dir fds for paths inside ``rootfd``; caches recent ones.

    The cache is keyed by the tar path; ``invalidate()`` must be called whenever a
    directory or symlink that a cached path may pass through is removed or replaced.
    Fds returned are owned by the resolver: don't close them. Invalidated fds stay
    open until ``sweep()`` (the caller may still be using one as a parent).
    """

    def __init__(self, rootfd: int, *, use_openat2: bool | None = None) -> None:
        self.rootfd = rootfd
        self.use_openat2 = HAVE_OPENAT2 if use_openat2 is None else use_openat2
        self._cache: OrderedDict[tuple[str, ...], int] = OrderedDict()
        self._retired: list[int] = []
        self._root_id = ident(os.fstat(rootfd))
        self._depths: dict[tuple[int, int], int] = {}  # dir identity -> depth below root

    def close(self) -> None:
        self.invalidate()
        self.sweep()

    def invalidate(self) -> None:
        self._retired.extend(self._cache.values())
        self._cache.clear()
        self._depths.clear()  # a removed dir's inode number may be reused elsewhere

    def child_depth(self, pfd: int, name: str) -> int:
        """The depth a new dir ``name`` in the dir ``pfd`` would have below the root;
        UnsafeArchive beyond MAX_DEPTH. Call before each mkdir, then
        ``remember_depth`` on the new dir's fd."""
        depth = self._depth(pfd) + 1
        if depth > MAX_DEPTH:
            raise _too_deep(name)
        return depth

    def remember_depth(self, fd: int, depth: int) -> None:
        if len(self._depths) < _DEPTH_CACHE:
            self._depths[ident(os.fstat(fd))] = depth

    def _depth(self, fd: int) -> int:
        """Real depth of the dir ``fd`` below the root: cached identities, else a climb
        through ".." (bounded: a dir deeper than MAX_DEPTH is reported as too deep)."""
        key = ident(os.fstat(fd))
        chain: list[tuple[int, int]] = []
        cur = -1
        try:
            while (found := self._depths.get(key)) is None:
                if key == self._root_id:
                    found = 0
                    break
                chain.append(key)
                if len(chain) > MAX_DEPTH:
                    raise _too_deep(f"dir at depth > {MAX_DEPTH}")
                up = os.open("..", _DIR_FLAGS, dir_fd=fd if cur == -1 else cur)
                if cur != -1:
                    os.close(cur)
                cur = up
                parent = ident(os.fstat(cur))
                if parent == key:  # "/": the fd was not below the root at all
                    raise UnsafeArchive("a path left the unpack root")
                key = parent
        finally:
            if cur != -1:
                os.close(cur)
        for k in reversed(chain):
            found += 1
            if len(self._depths) < _DEPTH_CACHE:
                self._depths[k] = found
        return found

    def sweep(self) -> None:
        """Close invalidated fds; call between entries, when none is in use."""
        for fd in self._retired:
            os.close(fd)
        self._retired.clear()

    def dir(self, parts: list[str] | tuple[str, ...], *, create: bool = False) -> int | None:
        """Dir fd for ``parts``; None if missing (``create`` makes it, replacing non-dirs)."""
        if not parts:
            return self.rootfd
        key = tuple(parts)
        fd = self._cache.get(key)
        if fd is not None:
            self._cache.move_to_end(key)
            return fd
        fd = self._open(key, create)
        if fd is None:
            return None
        self._cache[key] = fd
        if len(self._cache) > _CACHE_SIZE:
            self._retired.append(self._cache.popitem(last=False)[1])
        return fd

    def adopt(self, parts: list[str] | tuple[str, ...], fd: int) -> bool:
        """Take ``fd`` as the dir fd of ``parts``: a dir the caller opened with O_NOFOLLOW
        by its name in ``dir(parts[:-1])`` (the dir it just made, say), which is what
        resolving ``parts`` would open. Its children then need no openat2. False when
        ``parts`` is cached already: the caller keeps ``fd`` (and closes it)."""
        key = tuple(parts)
        if not key or key in self._cache:
            return False
        self._cache[key] = fd
        if len(self._cache) > _CACHE_SIZE:
            self._retired.append(self._cache.popitem(last=False)[1])
        return True

    def _open(self, parts: tuple[str, ...], create: bool) -> int | None:
        name = "/".join(parts)
        try:
            return oskit_paths.resolve_in_root(
                self.rootfd, name, flags=_DIR_FLAGS,
                create_parents=self._make_parent if create else False,
                use_openat2=self.use_openat2)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENAMETOOLONG, errno.EINVAL):
                raise UnsafeArchive(f"path {name[:200]!r}: {exc.strerror}",
                                    hint="the layer is hostile or broken; do not use "
                                         "this image") from exc
            raise

    def _make_parent(self, dirfd: int, name: str, st: os.stat_result | None) -> None:
        """A parent dir of an entry: made where missing, replacing a non-dir; its real
        depth counts (symlinks can lead deeper than the name)."""
        depth = self.child_depth(dirfd, name)
        make_dir_replacing(dirfd, name, st)
        if len(self._depths) < _DEPTH_CACHE:
            self._depths[ident(os.stat(name, dir_fd=dirfd, follow_symlinks=False))] = depth


def make_dir_replacing(dirfd: int, name: str, st: os.stat_result | None) -> None:
    """Create ``name`` as a 0755 dir, removing a non-directory in the way (umoci#546)."""
    if st is not None:
        os.unlink(name, dir_fd=dirfd)
    os.mkdir(name, 0o755, dir_fd=dirfd)
    os.chmod(name, 0o755, dir_fd=dirfd)  # mkdir is subject to the umask


def remove_at(dirfd: int, name: str) -> bool:
    """Remove ``name`` (a whole tree for a dir, walked without recursion) without
    following symlinks.

    Returns True when a directory or a symlink went away (callers then invalidate
    their resolver caches).
    """
    st = fsutil.remove_at(dirfd, name)
    return st is not None and (stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode))


def clear_dir(fd: int, keep: set[str] | None = None) -> None:
    """Remove every entry of the dir open as ``fd`` except the names in ``keep``."""
    fsutil.clear_dir(fd, keep or frozenset())
