"""``ociimg export`` and ``ociimg cp``: files out of and into a container's filesystem.

The container's tree is hostile: any name in it may be a symlink, and a process in a
running container can swap a dir for a symlink while we copy. So a container path is
only ever opened with ``resolve_in_root`` (symlinks resolved inside the container's
root, ".." clamped), and below it every entry is opened relative to its parent's fd with
``O_NOFOLLOW`` and checked by fstat against what was listed: a symlink pointing out is
copied as a symlink, never followed, and a swap mid-copy fails the copy (ESTALE) instead
of reaching the host. Entries are written under a temp name and renamed into place.

Copying out does not carry the container's owners, setuid/setgid bits or xattrs to the
host, and skips device nodes, unless ``archive`` (``cp -a``) asks for owners and xattrs;
device nodes are never created on the host. Copying in makes files owned by root in the
container (docker cp), or keeps the host's owners with ``archive``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ociimg.commands.archive import (
    PATH_FLAGS,
    SKIPPED_XATTRS,
    open_checked,
    opened,
    reopen,
    write_atomically,
    write_tar,
)
from ociimg.errors import InvalidArgument, NotFound, OciimgError
from ociimg.fsutil import climb, ident, walk_at
from ociimg.layers.fsops import copy_sparse, lstat_at

_DIR_READ = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_TMP = ".ociimg-cp-"


class CopyError(OciimgError):
    """A cp or export that cannot be done as asked."""


@dataclass
class CopyOptions:
    archive: bool = False             # -a: keep owners and xattrs
    follow: bool = False              # -L: follow a symlink named as the source
    # Into a container: the owner of what is created (docker cp: root) unless archive.
    owner: tuple[int, int] | None = (0, 0)
    to_host: bool = False             # the destination is the host: no devices, no setid
    skipped: list[str] = field(default_factory=list)  # what was not copied, for the user


# Opening ---------------------------------------------------------------------------
def open_in_container(rootfd: int, path: str, *, follow_last: bool,
                      flags: int = os.O_PATH) -> int:
    """``path`` resolved inside the container root ``rootfd``; OSError as the kernel's."""
    from ociimg.oskit.paths import resolve_in_root
    return resolve_in_root(rootfd, path, flags=flags, follow_last=follow_last)


def _not_found(what: str, exc: OSError) -> OciimgError:
    hint = "symlinks in a container resolve inside it; look with ociimg diff or export"
    if exc.errno == errno.ENOENT:
        return NotFound(f"{what}: no such file or directory", hint=hint)
    if exc.errno == errno.ENOTDIR:
        return NotFound(f"{what}: not a directory (or a parent is not)", hint=hint)
    if exc.errno == errno.ELOOP:
        return CopyError(f"{what}: too many levels of symbolic links")
    return CopyError(f"{what}: {exc.strerror}")


# Copy ------------------------------------------------------------------------------
def copy_entry(src_pfd: int, st: os.stat_result, dst_dirfd: int, name: str,
               options: CopyOptions) -> None:
    """Copy the non-dir ``src_pfd`` to ``name`` in ``dst_dirfd`` (replacing a non-dir
    there: written under a temp name, then renamed over it)."""
    existing = lstat_at(dst_dirfd, name)
    if existing is not None and stat.S_ISDIR(existing.st_mode):
        raise CopyError(f"cannot overwrite directory {name!r} with a non-directory")
    if options.to_host and (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                            or stat.S_ISSOCK(st.st_mode)):
        options.skipped.append(name)
        return
    tmp = f"{_TMP}{secrets.token_hex(6)}"
    _make_node(src_pfd, st, dst_dirfd, tmp, options)
    try:
        os.rename(tmp, name, src_dir_fd=dst_dirfd, dst_dir_fd=dst_dirfd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dst_dirfd)
        raise


def _make_node(src_pfd: int, st: os.stat_result, dst_dirfd: int, tmp: str,
               options: CopyOptions) -> None:
    if stat.S_ISREG(st.st_mode):
        src = reopen(src_pfd, os.O_RDONLY | os.O_NONBLOCK)
        try:
            dst = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW |
                          os.O_CLOEXEC, 0o600, dir_fd=dst_dirfd)
            try:
                copy_sparse(src, dst)
                _set_meta(dst, src_pfd, st, options)
            finally:
                os.close(dst)
        finally:
            os.close(src)
        return
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink("", dir_fd=src_pfd), tmp, dir_fd=dst_dirfd)
    elif stat.S_ISFIFO(st.st_mode):
        os.mkfifo(tmp, 0o600, dir_fd=dst_dirfd)
    else:
        os.mknod(tmp, stat.S_IFMT(st.st_mode) | 0o600, st.st_rdev, dir_fd=dst_dirfd)
    pfd = os.open(tmp, PATH_FLAGS, dir_fd=dst_dirfd)
    try:
        _set_meta(pfd, src_pfd, st, options, path_fd=True)
    finally:
        os.close(pfd)


def _set_meta(fd: int, src_pfd: int, st: os.stat_result, options: CopyOptions, *,
              path_fd: bool = False) -> None:
    """Owner, mode, xattrs, times of ``st`` onto the fd (an O_PATH fd goes through
    /proc/self/fd: the inode itself, never a name that could have been swapped)."""
    target: int | str = f"/proc/self/fd/{fd}" if path_fd else fd
    link = stat.S_ISLNK(st.st_mode)
    owner = (st.st_uid, st.st_gid) if options.archive else options.owner
    if owner is not None and not (options.to_host and not options.archive):
        os.chown(target, *owner, follow_symlinks=not link)
    if not link:
        mode = stat.S_IMODE(st.st_mode)
        if options.to_host and not options.archive and not stat.S_ISDIR(st.st_mode):
            mode &= ~(stat.S_ISUID | stat.S_ISGID)
        os.chmod(target, mode)
        if options.archive:
            _copy_xattrs(src_pfd, target)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=not link)


def _copy_xattrs(src_pfd: int, target: int | str) -> None:
    src = f"/proc/self/fd/{src_pfd}"
    with contextlib.suppress(OSError):
        for key in os.listxattr(src):
            if not key.startswith(SKIPPED_XATTRS):
                with contextlib.suppress(OSError):
                    os.setxattr(target, key, os.getxattr(src, key))


def copy_tree(src_pfd: int, dst_dirfd: int, options: CopyOptions) -> None:
    """Everything below the dir ``src_pfd`` into the open dir ``dst_dirfd`` (merged with
    what is there); the dir's own metadata goes onto ``dst_dirfd`` last."""
    src_dir = reopen(src_pfd, os.O_RDONLY | os.O_DIRECTORY)
    walker = _TreeCopy(os.dup(dst_dirfd), options)
    try:
        walk_at(src_dir, walker.visit, walker.leave)
        _set_meta(walker.dst, src_pfd, os.fstat(src_pfd), options)
    finally:
        os.close(src_dir)
        os.close(walker.dst)


class _TreeCopy:
    """walk_at callbacks: ``dst`` follows the walk down (one fd, climbed back up by
    identity like the source side), so depth costs no fds."""

    def __init__(self, dst: int, options: CopyOptions) -> None:
        self.dst = dst
        self.options = options
        self.parents: list[tuple[int, int]] = []

    def visit(self, dirfd: int, name: str, st: os.stat_result, rel: list[str]) -> bool:
        if name.startswith(_TMP):
            return False  # our own temp of a copy in progress
        pfd = open_checked(dirfd, name, st)
        try:
            if not stat.S_ISDIR(st.st_mode):
                copy_entry(pfd, st, self.dst, name, self.options)
                return False
        finally:
            os.close(pfd)
        child = make_dir(self.dst, name)
        self.parents.append(ident(os.fstat(self.dst)))
        os.close(self.dst)
        self.dst = child
        return True

    def leave(self, dirfd: int, name: str, st: os.stat_result, rel: list[str]) -> None:
        pfd = open_checked(dirfd, name, st)
        try:
            _set_meta(self.dst, pfd, st, self.options)
        finally:
            os.close(pfd)
        child, self.dst = self.dst, -1
        self.dst = climb(child, self.parents.pop())


def make_dir(parent: int, name: str) -> int:
    """Open dir ``name`` in ``parent``, created (0700 until its metadata is set) if
    missing; a non-dir there is an error, a symlink is never followed."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o700, dir_fd=parent)
    try:
        return os.open(name, _DIR_READ, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            raise CopyError(f"cannot overwrite non-directory {name!r} with a directory"
                            ) from exc
        raise


# Paths the user gives --------------------------------------------------------------
@dataclass(frozen=True)
class SourceSpec:
    path: str
    must_be_dir: bool                 # SRC/ or SRC/.
    contents_only: bool               # SRC/.

    @classmethod
    def parse(cls, path: str) -> SourceSpec:
        if not path:
            raise InvalidArgument("cp: empty path")
        if "\0" in path:
            raise InvalidArgument("cp: path contains a NUL byte")
        contents = path == "." or path.endswith("/.")
        return cls(path, path.endswith(("/", "/.")) or path == ".", contents)

    @property
    def basename(self) -> str:
        parts = [p for p in self.path.split("/") if p not in ("", ".")]
        return parts[-1] if parts and parts[-1] != ".." else "/"


def tar_name(spec: SourceSpec) -> str:
    name = spec.basename
    return "." if name == "/" else name


def check_kind(spec: SourceSpec, st: os.stat_result, what: str) -> None:
    if spec.must_be_dir and not stat.S_ISDIR(st.st_mode):
        raise CopyError(f"{what}: not a directory")


def copy_into_dir(src_pfd: int, st: os.stat_result, spec: SourceSpec, dst_dirfd: int,
                  dest_exists: bool, target_name: str | None, options: CopyOptions) -> None:
    """docker cp's rules once the destination is known: ``dst_dirfd`` is the existing
    destination dir (``dest_exists``) or the parent where ``target_name`` is created."""
    if stat.S_ISDIR(st.st_mode):
        if dest_exists and not spec.contents_only:
            target_dir = make_dir(dst_dirfd, spec.basename)
        elif dest_exists:
            target_dir = os.dup(dst_dirfd)
        else:
            assert target_name is not None
            target_dir = make_dir(dst_dirfd, target_name)
        with opened(target_dir):
            copy_tree(src_pfd, target_dir, options)
        return
    name = spec.basename if dest_exists else target_name
    assert name is not None
    copy_entry(src_pfd, st, dst_dirfd, name, options)


# Commands --------------------------------------------------------------------------
@contextlib.contextmanager
def _container_rootfd(root: Path, name_or_id: str) -> Iterator[tuple[str, int]]:
    from ociimg.commands.changes import container_root, manager_for
    c = manager_for(root).get(name_or_id)
    with container_root(root, c) as path:
        with opened(os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)) as rootfd:
            yield c.name, rootfd


def export_container(root: Path, name_or_id: str, out: BinaryIO) -> None:
    """``docker export``: a tar of the container's whole merged filesystem."""
    with _container_rootfd(root, name_or_id) as (_, rootfd):
        write_tar(out, rootfd, ".", contents_only=True)


def export_to_file(root: Path, name_or_id: str, dest: Path) -> None:
    """Export into ``dest`` through a temp file beside it, renamed only when complete:
    never a half tar under ``dest``."""
    write_atomically(dest, lambda f: export_container(root, name_or_id, f))


def copy_from_container(root: Path, name_or_id: str, src: str, dest: str | BinaryIO,
                        options: CopyOptions | None = None) -> CopyOptions:
    """``docker cp CONTAINER:SRC DEST``; ``dest`` a binary stream: a tar of SRC (``-``).
    Returns the options with ``skipped`` filled in."""
    options = options or CopyOptions()
    with _container_rootfd(root, name_or_id) as (cname, rootfd):
        return copy_out_of_root(rootfd, cname, src, dest, options)


def copy_out_of_root(rootfd: int, label: str, src: str, dest: str | BinaryIO,
                     options: CopyOptions) -> CopyOptions:
    """SRC resolved inside the root ``rootfd`` (a container's) to the host ``dest``."""
    options.to_host, options.owner = True, None
    spec = SourceSpec.parse(src)
    what = f"{label}:{src}"
    try:
        src_pfd = open_in_container(rootfd, src, follow_last=options.follow or
                                    spec.must_be_dir)
    except OSError as exc:
        raise _not_found(what, exc) from exc
    with opened(src_pfd):
        st = os.fstat(src_pfd)
        check_kind(spec, st, what)
        if not isinstance(dest, str):
            write_tar(dest, src_pfd, tar_name(spec), contents_only=spec.contents_only)
        else:
            _copy_to_host(src_pfd, st, spec, dest, options)
    return options


def _copy_to_host(src_pfd: int, st: os.stat_result, spec: SourceSpec, dest: str,
                  options: CopyOptions) -> None:
    path = Path(dest)
    is_dir = stat.S_ISDIR(st.st_mode)
    if path.is_dir():  # the host side is the user's own: its symlinks are followed
        with opened(os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)) as fd:
            copy_into_dir(src_pfd, st, spec, fd, True, None, options)
        return
    if dest.endswith("/") or (is_dir and os.path.lexists(path)):
        raise CopyError(f"{dest}: not a directory" if os.path.lexists(path) else
                        f"destination directory {dest} does not exist",
                        hint="create it first, or name a file without a trailing /")
    if not path.parent.is_dir():
        raise NotFound(f"{path.parent}: no such directory",
                       hint="the parent of the destination must exist")
    with opened(os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)) as fd:
        copy_into_dir(src_pfd, st, spec, fd, False, path.name, options)


def copy_to_container(root: Path, name_or_id: str, src: str | BinaryIO, dest: str,
                      options: CopyOptions | None = None) -> None:
    """``docker cp SRC CONTAINER:DEST``; ``src`` a binary stream: a tar extracted into
    the existing dir DEST (``-``)."""
    options = options or CopyOptions()
    with _container_rootfd(root, name_or_id) as (cname, rootfd):
        copy_into_root(rootfd, cname, src, dest, options)


def copy_into_root(rootfd: int, label: str, src: str | BinaryIO, dest: str,
                   options: CopyOptions) -> None:
    """The host's ``src`` to DEST resolved inside the root ``rootfd`` (a container's)."""
    what = f"{label}:{dest}"
    if not dest or "\0" in dest:
        raise InvalidArgument(f"cp {what}: the container path is empty or holds a NUL byte")
    if options.archive:
        options.owner = None
    if not isinstance(src, str):
        _extract_into(rootfd, dest, src, what)
        return
    spec = SourceSpec.parse(src)
    flags = os.O_PATH | os.O_CLOEXEC
    if not (options.follow or spec.must_be_dir):
        flags |= os.O_NOFOLLOW
    try:
        src_pfd = os.open(src, flags)
    except OSError as exc:
        raise _not_found(src, exc) from exc
    with opened(src_pfd):
        st = os.fstat(src_pfd)
        check_kind(spec, st, src)
        _copy_into_container(rootfd, src_pfd, st, spec, dest, what, options)


def _copy_into_container(rootfd: int, src_pfd: int, st: os.stat_result, spec: SourceSpec,
                         dest: str, what: str, options: CopyOptions) -> None:
    from ociimg.oskit.paths import open_parent_in_root
    try:
        dirfd = open_in_container(rootfd, dest, follow_last=True,
                                  flags=os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
            raise _not_found(what, exc) from exc
        exists = exc.errno == errno.ENOTDIR
    else:
        with opened(dirfd):
            copy_into_dir(src_pfd, st, spec, dirfd, True, None, options)
        return
    if dest.endswith("/") or (exists and stat.S_ISDIR(st.st_mode)):
        raise CopyError(f"{what}: not a directory" if exists else
                        f"{what}: no such directory",
                        hint="create the directory first, or drop the trailing /")
    try:
        pfd, name = open_parent_in_root(rootfd, dest)
    except OSError as exc:
        raise _not_found(f"{what} (its parent)", exc) from exc
    with opened(pfd):
        copy_into_dir(src_pfd, st, spec, pfd, False, name, options)


def _extract_into(rootfd: int, dest: str, stream: BinaryIO, what: str) -> None:
    """A tar stream into the existing container dir ``dest`` through the layer applier
    (every entry kept inside ``dest``)."""
    from ociimg.layers.apply import ApplyOptions, OnDiskFormat, apply_layer
    try:
        dirfd = open_in_container(rootfd, dest, follow_last=True,
                                  flags=os.O_PATH | os.O_DIRECTORY)
    except OSError as exc:
        raise _not_found(what, exc) from exc
    with opened(dirfd):
        # "/." after the fd: the magic link is followed as a parent, and the applier's
        # O_NOFOLLOW open applies to "." (the dir itself).
        # (A str: Path() would drop the "/.".)
        apply_layer(f"/proc/self/fd/{dirfd}/.", stream,  # type: ignore[arg-type]
                    ApplyOptions(OnDiskFormat.DIR))
