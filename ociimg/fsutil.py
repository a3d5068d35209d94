"""Crash-safe filesystem helpers: nothing half-written ever looks complete."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: bytes, mode: int = 0o644, *,
                 sync_dir: bool = True) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory, fsync, rename,
    fsync the directory. ``sync_dir=False`` leaves the last step to the caller: files
    written into a private temp dir that is fsynced once before it is renamed into place
    (each directory fsync is a journal commit of its own)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if sync_dir:
        fsync_dir(path.parent)


# Tree walks: never recursive and never through growing path strings. A layer (or a
# container) can nest dirs far deeper than Python's recursion limit or PATH_MAX, and a
# walk that dies on one breaks gc for the whole store. The walk holds one dir fd and a
# stack of (dev, ino) identities; it climbs back with openat("..") and checks the
# identity, so the number of open fds does not grow with depth.
_DIR_READ = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
Visit = Callable[[int, str, os.stat_result, list[str]], bool]
Leave = Callable[[int, str, os.stat_result, list[str]], None]


def ident(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def climb(fd: int, parent: tuple[int, int]) -> int:
    """Close the dir fd ``fd`` and return an fd of its parent, which must be the dir
    whose identity is ``parent`` (else the tree moved under the walk)."""
    try:
        up = os.open("..", _DIR_READ, dir_fd=fd)
    finally:
        os.close(fd)
    if ident(os.fstat(up)) != parent:
        os.close(up)
        raise OSError(errno.ESTALE, "a dir moved during a tree walk")
    return up


def walk_at(top: int, visit: Visit, leave: Leave | None = None) -> None:
    """Depth-first walk of everything below the open dir ``top`` (not followed, not closed).

    ``visit(dirfd, name, st, rel)`` is called for each entry (``st`` from lstat, ``rel``
    the components from ``top`` to ``dirfd``: a list the walk reuses, copy it to keep
    it); for a dir, returning True descends into it, and ``leave`` gets the same
    arguments after its children. Entries may be removed or added in ``visit``.
    """
    stack: list[tuple[tuple[int, int], list[str], str, os.stat_result]] = []
    rel: list[str] = []
    cur = os.dup(top)
    try:
        cur_id = ident(os.fstat(cur))
        names = os.listdir(cur)
        while True:
            if names:
                name = names.pop()
                try:
                    st = os.stat(name, dir_fd=cur, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if not visit(cur, name, st, rel) or not stat.S_ISDIR(st.st_mode):
                    continue
                child = os.open(name, _DIR_READ, dir_fd=cur)
                try:
                    child_st = os.fstat(child)
                    if ident(child_st) != ident(st):
                        raise OSError(errno.ESTALE, f"{name}: replaced during a tree walk")
                    child_names = os.listdir(child)
                except BaseException:
                    os.close(child)
                    raise
                stack.append((cur_id, names, name, st))
                rel.append(name)
                os.close(cur)
                cur, cur_id, names = child, ident(child_st), child_names
            elif stack:
                parent_id, names, name, st = stack.pop()
                rel.pop()
                child, cur = cur, -1  # climb() closes it, even when it fails
                cur, cur_id = climb(child, parent_id), parent_id
                if leave is not None:
                    leave(cur, name, st, rel)
            else:
                return
    finally:
        if cur != -1:
            os.close(cur)


def _unprivileged() -> bool:
    return os.geteuid() != 0


def clear_dir(fd: int, keep: set[str] | frozenset[str] = frozenset()) -> None:
    """Remove everything in the open dir ``fd`` except the top-level names in ``keep``.

    Read-only and unreadable dirs (unpacked rootfs have them) are made writable first
    when we are not root; root ignores permission bits.
    """
    fix_modes = _unprivileged()
    if fix_modes:
        _make_writable(fd)
    top_dev = os.fstat(fd).st_dev

    def visit(dirfd: int, name: str, st: os.stat_result, rel: list[str]) -> bool:
        if not rel and name in keep:
            return False
        if stat.S_ISDIR(st.st_mode):
            if st.st_dev != top_dev:
                # A filesystem mounted inside (a bundle's rootfs still mounted, a volume):
                # emptying it would delete what the mount shows, not our tree.
                raise OSError(errno.EBUSY, "another filesystem is mounted here; unmount "
                              "it first", "/".join([*rel, name]))
            if fix_modes and stat.S_IMODE(st.st_mode) & 0o700 != 0o700:
                os.chmod(name, stat.S_IMODE(st.st_mode) | 0o700, dir_fd=dirfd)
            return True
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dirfd)
        return False

    def leave(dirfd: int, name: str, st: os.stat_result, rel: list[str]) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(name, dir_fd=dirfd)

    walk_at(fd, visit, leave)


def _make_writable(fd: int) -> None:
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    if mode & 0o700 != 0o700:
        os.fchmod(fd, mode | 0o700)


def remove_at(dirfd: int, name: str) -> os.stat_result | None:
    """Remove ``name`` in ``dirfd`` (a whole tree for a dir) without following symlinks;
    returns what it was (None: nothing there)."""
    try:
        st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dirfd)
        return st
    if _unprivileged() and stat.S_IMODE(st.st_mode) & 0o700 != 0o700:
        os.chmod(name, stat.S_IMODE(st.st_mode) | 0o700, dir_fd=dirfd)
    fd = os.open(name, _DIR_READ, dir_fd=dirfd)
    try:
        if ident(os.fstat(fd)) != ident(st):
            raise OSError(errno.ESTALE, f"{name}: replaced while being removed")
        clear_dir(fd)
    finally:
        os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(name, dir_fd=dirfd)
    return st


def remove_tree(path: str | os.PathLike[str]) -> None:
    """Remove a tree even when it holds read-only dirs (unpacked rootfs do) or nests
    deeper than PATH_MAX; a symlink is removed, never followed."""
    head, name = os.path.split(os.path.abspath(path))
    try:
        parent = os.open(head, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        if _unprivileged():
            # An unwritable parent (a read-only dir being emptied) is the caller's
            # to fix, except in our own unpacked trees, which clear_dir handles.
            with contextlib.suppress(OSError):
                if not os.access(head, os.W_OK):
                    _make_writable(parent)
        remove_at(parent, name)
    finally:
        os.close(parent)


def tree_size(path: str | os.PathLike[str]) -> int:
    """Bytes a tree occupies on disk (allocated blocks, hardlinked files once)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    if not stat.S_ISDIR(st.st_mode):
        return st.st_blocks * 512
    total = st.st_blocks * 512
    seen: set[tuple[int, int]] = set()

    def visit(dirfd: int, name: str, st: os.stat_result, rel: list[str]) -> bool:
        nonlocal total
        if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
            if ident(st) in seen:
                return False
            seen.add(ident(st))
        total += st.st_blocks * 512
        return True

    fd = os.open(path, _DIR_READ)
    try:
        walk_at(fd, visit)
    finally:
        os.close(fd)
    return total


def replace_dir(tmp: str | os.PathLike[str], final: str | os.PathLike[str]) -> None:
    """Move a completed directory into place atomically (rename), replacing an old one."""
    final = Path(final)
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.rename(final, old)
        os.rename(tmp, final)
        remove_tree(old)
    else:
        os.rename(tmp, final)
    fsync_dir(final.parent)


@contextlib.contextmanager
def temp_dir_beside(final: str | os.PathLike[str]) -> Iterator[Path]:
    """A temp dir on the same filesystem as ``final``; removed unless renamed away."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    try:
        yield tmp
    finally:
        if tmp.exists():
            remove_tree(tmp)
