"""Opening files that someone else may have planted: an ``oci:`` layout handed to us, the
store's own files, an image's /etc/passwd.

A FIFO blocks open(2) and read(2) forever, a device runs its driver's open (a tape
rewinds, a tty becomes our controlling terminal, /dev/zero never ends), a symlink leads
anywhere. So nothing is opened for reading until its type is known: the path is opened
with O_PATH|O_NOFOLLOW (no driver open, no FIFO wait, a symlink is the link itself),
fstat'ed, and only a regular file is reopened for reading through /proc/self/fd, the
inode already checked and not the name (crun and runc reopen O_PATH fds the same way).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from ociimg.errors import InvalidDocument

_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket",
          stat.S_IFLNK: "a symbolic link", stat.S_IFDIR: "a directory"}


def file_kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


# open(2) errors that mean "this is not a regular file": a symlink under O_NOFOLLOW, a
# directory, a socket or a device without a driver.
_NOT_REGULAR_ERRNOS = frozenset({errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.ENODEV,
                                 errno.EOPNOTSUPP})


def open_own_file(path: Path, flags: int, mode: int, what: str) -> int:
    """Open (creating) one of the store's own files for writing: O_NOFOLLOW|O_NONBLOCK, then
    refused unless a regular file, so a planted symlink is never written through and a
    FIFO never blocks us."""
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     mode)
    except OSError as exc:
        if exc.errno in _NOT_REGULAR_ERRNOS:
            raise InvalidDocument(f"{what} {path}: not a regular file ({exc.strerror})",
                                  hint="remove it; ociimg creates this file itself") from exc
        raise
    st_mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(st_mode):
        os.close(fd)
        raise InvalidDocument(f"{what} {path}: {file_kind(st_mode)}, not a regular file",
                              hint="remove it; ociimg creates this file itself")
    os.set_blocking(fd, True)
    return fd


def open_path_fd(path: str | os.PathLike[str], *, dir_fd: int | None = None) -> int:
    """An O_PATH fd for ``path`` itself (a final symlink is not followed)."""
    return os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)


def reopen_regular(path_fd: int, what: str) -> int:
    """Reopen an O_PATH fd for reading if (and only if) it is a regular file; raises
    InvalidDocument naming ``what`` otherwise. ``path_fd`` stays open (the caller's)."""
    mode = os.fstat(path_fd).st_mode
    if not stat.S_ISREG(mode):
        raise InvalidDocument(f"{what}: {file_kind(mode)}, not a regular file",
                              hint="a layout's files and an image's user database must be "
                              "regular files")
    try:
        return os.open(f"/proc/self/fd/{path_fd}", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise InvalidDocument(f"{what}: cannot reopen without /proc",
                              hint="mount /proc: ociimg opens untrusted files through it"
                              ) from exc


def open_regular(path: str | os.PathLike[str], what: str | None = None) -> BinaryIO:
    """``path`` opened for reading, refused unless it is a regular file (not a symlink,
    FIFO, device, socket or directory). FileNotFoundError passes through."""
    what = what or str(path)
    try:
        pfd = open_path_fd(path)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise InvalidDocument(f"{what}: cannot open ({exc.strerror})") from exc
    try:
        fd = reopen_regular(pfd, what)
    finally:
        os.close(pfd)
    return os.fdopen(fd, "rb")


def read_regular(path: str | os.PathLike[str], limit: int, what: str | None = None) -> bytes:
    """The bytes of regular file ``path``; InvalidDocument if larger than ``limit``."""
    what = what or str(path)
    with open_regular(path, what) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise InvalidDocument(f"{what}: larger than the {limit}-byte limit")
    return data


def is_regular(path: Path) -> bool:
    """True for a regular file that is not a symlink (no open, no follow)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False
