"""flock(2)-based locks for the store.

A lock file may be deleted while another process waits on it (an ingest directory is
removed after commit; gc removes stale ones). A waiter would then hold a lock on an
unlinked inode that nobody else can see, so after every acquisition we check that the
path still names the inode we locked, and start over if not.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from ociimg.errors import LockTimeout
from ociimg.fsutil import remove_tree
from ociimg.store.files import open_own_file


def _same_inode(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    fst = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino)


def acquire_lock(path: Path, *, shared: bool = False, blocking: bool = True) -> int:
    """Open (creating) ``path`` and flock it; returns the fd. Raises LockTimeout when
    ``blocking`` is false and someone else holds a conflicting lock."""
    op = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB)
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = open_own_file(path, os.O_RDWR, 0o600, "lock")
        try:
            fcntl.flock(fd, op)
        except BlockingIOError as exc:
            os.close(fd)
            raise LockTimeout(f"lock {path}: held by another process",
                              hint="wait for the other ociimg command to finish") from exc
        except BaseException:
            os.close(fd)
            raise
        if _same_inode(fd, path):
            return fd
        os.close(fd)  # the file was removed while we waited: lock the new one


def release_lock(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


@contextlib.contextmanager
def locked(path: Path, *, shared: bool = False, blocking: bool = True) -> Iterator[int]:
    fd = acquire_lock(path, shared=shared, blocking=blocking)
    try:
        yield fd
    finally:
        release_lock(fd)


def remove_unless_locked(tree: Path, lock: Path) -> bool:
    """Remove ``tree`` unless someone holds ``lock`` (then its writer is still at work and
    False is returned): how gc-like sweeps remove the temps of crashed writers."""
    fd = try_lock(lock)
    if fd is None:
        return False
    try:
        remove_tree(tree)
    finally:
        release_lock(fd)
    return True


def try_lock(path: Path) -> int | None:
    """An exclusive lock if free right now, else None."""
    try:
        return acquire_lock(path, blocking=False)
    except LockTimeout:
        return None
