"""The differ: an active snapshot → an OCI changeset tar (image-spec layer.md), its
``docker diff`` list, and commit (the tar applied as a committed snapshot).

The entries come from :mod:`ociimg.layers.changes` (the same for an overlay upper and
a flattened copy), in path order with parents first; headers and data from
:mod:`ociimg.layers.tarwriter`. Whiteouts are ``.wh.NAME``, an emptied dir
``.wh..wh..opq``; a second name of an inode is a hardlink to the first. A diff holds the
snapshot's key lock, so ``remove`` waits for it instead of pulling the tree away.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from ociimg.digest import Digest, HashingWriter
from ociimg.errors import DiffIDMismatch, OciimgError
from ociimg.layers import tarwriter
from ociimg.layers.active import BACKEND_COPY, KIND_VIEW, ActiveInfo
from ociimg.layers.changes import ChangeSet, Entry, collect_changes
from ociimg.layers.lowertree import LowerTree, open_dir_beneath
from ociimg.layers.ondisk import OnDisk, OnDiskFormat
from ociimg.store import locks

if TYPE_CHECKING:
    from ociimg.layers.apply import ApplyOptions
    from ociimg.layers.snapshots import SnapshotStore

OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"


@dataclass(frozen=True, slots=True)
class Change:
    kind: str  # "A" added, "C" changed, "D" deleted (docker diff)
    path: str  # absolute in the container: "/etc/passwd"


class SnapshotChanged(OciimgError):
    """The active snapshot's tree changed under the differ in a way it cannot follow."""


@contextmanager
def _held(snaps: SnapshotStore, key: str) -> Iterator[ActiveInfo]:
    with locks.locked(snaps._active.lock_path(key)):
        yield snaps.active_info(key)


def _changeset(snaps: SnapshotStore, info: ActiveInfo) -> tuple[ChangeSet, Path]:
    base = snaps.active_dir(info.key)
    lowers = [snaps.fs_dir(d) for d in reversed(info.lowers)]
    if info.backend == BACKEND_COPY:
        root, new, complete = base / "fs", OnDisk(OnDiskFormat.DIR), True
    else:
        root, new, complete = base / "upper", OnDisk(OnDiskFormat.OVERLAY, snaps.userxattr), False
    if info.kind == KIND_VIEW and info.backend != BACKEND_COPY:
        return ChangeSet([], []), root  # a read-only overlay has no upper
    with LowerTree(lowers, userxattr=snaps.userxattr) as lower:
        try:
            return collect_changes(root, new, lower, complete=complete), root
        except OSError as exc:
            if exc.errno not in (errno.ESTALE, errno.ENOENT, errno.ENOTDIR):
                raise
            raise SnapshotChanged(f"snapshot {info.key}: its tree changed during the diff "
                                  f"({exc.strerror})", hint="stop the container (or pause "
                                  "it) and diff again") from exc


def list_changes(snaps: SnapshotStore, key: str) -> list[Change]:
    with _held(snaps, key) as info:
        changes, _ = _changeset(snaps, info)
    out = [Change(e.kind, "/" + "/".join(e.parts)) for e in changes.entries
           if e.kind in ("A", "C")]
    out.extend(Change("D", "/" + "/".join(p)) for p in changes.deleted)
    return sorted(out, key=lambda c: c.path.replace("/", "\0"))


def write_diff(snaps: SnapshotStore, key: str, out: BinaryIO, *,
               source_date_epoch: int | None = None) -> Digest:
    with _held(snaps, key) as info:
        return _write_locked(snaps, info, out, source_date_epoch)


def _write_locked(snaps: SnapshotStore, info: ActiveInfo, out: BinaryIO,
                  source_date_epoch: int | None) -> Digest:
    changes, root = _changeset(snaps, info)
    return write_changes(changes, root, out, source_date_epoch)


def write_changes(changes: ChangeSet, root: Path, out: BinaryIO,
                  source_date_epoch: int | None = None) -> Digest:
    """The tar of ``changes``, the data read from the tree at ``root``; its digest."""
    sink = HashingWriter(out)
    dirs = _DirCache(os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
    try:
        written: dict[tuple[int, int], bytes] = {}  # inode -> its first name in the tar
        for entry in changes.entries:
            _write_entry(sink, dirs, entry, written, source_date_epoch)
    finally:
        dirs.close()
    sink.write(tarwriter.end_of_archive())
    return sink.digest()


def _mtime(st: os.stat_result, epoch: int | None) -> int:
    seconds = st.st_mtime_ns // 10**9
    return min(seconds, epoch) if epoch is not None else seconds


class _DirCache:
    """The dir of the last file written, kept open: entries come sorted, so a dir's
    files follow one another."""

    def __init__(self, rootfd: int) -> None:
        self.rootfd = rootfd
        self._parts: tuple[str, ...] | None = None
        self._fd: int | None = None

    def get(self, parts: tuple[str, ...]) -> int | None:
        if parts != self._parts:
            self._drop()
            self._fd = open_dir_beneath(self.rootfd, parts)
            self._parts = parts
        return self._fd

    def _drop(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._parts = None, None

    def close(self) -> None:
        self._drop()
        os.close(self.rootfd)


def _write_entry(sink: HashingWriter, dirs: _DirCache, entry: Entry,
                 written: dict[tuple[int, int], bytes], epoch: int | None) -> None:
    name = "/".join(entry.parts).encode("utf-8", "surrogateescape")
    if entry.kind in ("D", "O"):
        sink.write(tarwriter.header(name))
        return
    st = entry.st
    assert st is not None
    kind = stat.S_IFMT(st.st_mode)
    common = {"mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid,
              "mtime": _mtime(st, epoch), "xattrs": entry.xattrs}
    if kind == stat.S_IFDIR:
        sink.write(tarwriter.header(name + b"/", typeflag=tarwriter.DIRTYPE, **common))
        return
    inode = (st.st_dev, st.st_ino)
    if st.st_nlink > 1 and inode in written:
        sink.write(tarwriter.header(name, typeflag=tarwriter.LNKTYPE, linkname=written[inode],
                                    **common))
        return
    if kind == stat.S_IFREG:
        if not _write_file(sink, dirs, entry, name, common):
            return
    elif kind == stat.S_IFLNK:
        link = (entry.link or "").encode("utf-8", "surrogateescape")
        sink.write(tarwriter.header(name, typeflag=tarwriter.SYMTYPE, linkname=link, **common))
    else:
        typeflag = tarwriter.tar_type(st.st_mode)
        if typeflag is None:
            return
        sink.write(tarwriter.header(name, typeflag=typeflag, devmajor=os.major(st.st_rdev),
                                    devminor=os.minor(st.st_rdev), **common))
    if st.st_nlink > 1:
        written[inode] = name


def _write_file(sink: HashingWriter, dirs: _DirCache, entry: Entry, name: bytes,
                common: dict) -> bool:
    """A regular file's header and data, from an fd opened without following any
    symlink; False when it is gone or was replaced since the walk (left out)."""
    pfd = dirs.get(entry.parts[:-1])
    if pfd is None:
        return False
    try:
        fd = os.open(entry.parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                     dir_fd=pfd)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
            return False
        raise
    try:
        st = os.fstat(fd)
        assert entry.st is not None
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != \
                (entry.st.st_dev, entry.st.st_ino):
            return False
        sink.write(tarwriter.header(name, size=st.st_size, **common))
        tarwriter.stream_file(fd, st.st_size, sink)  # type: ignore[arg-type]
    finally:
        os.close(fd)
    return True


def commit_active(snaps: SnapshotStore, key: str, *, source_date_epoch: int | None = None,
                  on_tar: Callable[[BinaryIO], object] | None = None) -> Digest:
    """Diff ``key`` into a temp file and apply that as a committed snapshot (the
    applier's OVERLAY output for that layer over the parent chain); its chain ID.
    ``on_tar`` reads that tar (from its start) before it is applied: a builder stores
    the layer blob from the same diff instead of diffing twice."""
    with _held(snaps, key) as info:
        if info.kind == KIND_VIEW:
            raise OciimgError(f"snapshot {key}: a read-only view cannot be committed")
        snaps._init()
        with tempfile.TemporaryFile(dir=snaps.path) as tar:
            diff_id = _write_locked(snaps, info, tar, source_date_epoch)  # type: ignore[arg-type]
            if on_tar is not None:
                tar.seek(0)
                on_tar(tar)  # type: ignore[arg-type]
            parent = info.parent
            chain = diff_id if parent is None else Digest.of(f"{parent} {diff_id}".encode())
            with locks.locked(snaps._lock_path(chain)):
                if snaps._has_with_parent(chain, parent):
                    return chain
                lowers = tuple(snaps.fs_dir(d) for d in reversed(info.lowers))

                def fill(fs: Path, options: ApplyOptions) -> tuple[int, int, list[str]]:
                    from ociimg.layers.apply import apply_layer
                    tar.seek(0)
                    result = apply_layer(fs, tar, options)  # type: ignore[arg-type]
                    if result.diff_id != diff_id:
                        raise DiffIDMismatch(f"commit {key}: the applied tar hashed to "
                                             f"{result.diff_id}, not {diff_id}")
                    return result.size, result.entries, result.warnings

                snaps._make(chain, parent, diff_id, diff_id, OCI_LAYER_TAR, lowers, fill)
    return chain
