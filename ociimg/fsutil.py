"""Crash-safe filesystem helpers: nothing half-written ever looks complete."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory, fsync, rename."""
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
    fsync_dir(path.parent)


def remove_tree(path: str | os.PathLike[str]) -> None:
    """Remove a tree even when it holds read-only dirs (unpacked rootfs do)."""

    def onerror(func, p, exc_info):  # type: ignore[no-untyped-def]
        is_dir = os.path.isdir(p) and not os.path.islink(p)
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o700)
            if is_dir:
                os.chmod(p, 0o700)
        if func in (os.rmdir, os.unlink, os.remove):
            with contextlib.suppress(FileNotFoundError):
                func(p)
        elif is_dir:  # it could not be opened or listed before the chmod
            shutil.rmtree(p, onerror=onerror)

    if os.path.lexists(path):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, onerror=onerror)
        else:
            os.unlink(path)


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
