"""COPY and ADD into a step's root, without a container (Docker's directory semantics).

Sources are paths matched in a source root: the build context, or the merged view of an
earlier stage or image (``--from``). The source path itself is resolved inside its root
(a symlink followed there, never out); below it every entry is opened relative to its
parent's fd with ``O_NOFOLLOW``, so a symlink is copied as a symlink. The destination is
resolved inside the step's root with ``resolve_in_root`` (a symlink in the destination
is followed inside the image, never onto the host), missing parents are created, and
files are written under a temp name and renamed into place.

Rules (reference.md COPY, BuildKit's behaviour): a directory copies its contents; a
destination ending in ``/`` (or several sources) is a directory, as is an existing
directory; otherwise the single file is written at the destination path. Owners are 0:0
for the context and kept for ``--from``, unless ``--chown``; ``--chmod`` sets the mode of
everything copied; created parents get the ``--chown`` owner, existing directories keep
theirs. Hardlinks within the copied set stay hardlinks. A name ``.wh.*`` cannot be stored
in a layer (it would read as a deletion) and is refused.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from ociimg.errors import BuildError
from ociimg.layers.fsops import DIR_OPEN, copy_sparse, lstat_at
from ociimg.oskit.paths import resolve_in_root

WHITEOUT_PREFIX = ".wh."
_TMP = ".ociimg-copy-"
_REOPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC  # an O_PATH fd's magic link
_OVERLAY_XATTRS = ("trusted.overlay.", "user.overlay.")


@dataclass
class CopyOptions:
    owner: tuple[int, int] | None = (0, 0)   # None: keep the source's (COPY --from)
    chmod: Chmod | None = None
    xattrs: bool = False                      # copy xattrs (from an image, not the context)
    # A context-relative path → left out with all below it (.containerignore); None: none.
    excluded: Callable[[str, bool], bool] | None = None
    parents_owner: tuple[int, int] = (0, 0)   # of destination parents COPY creates
    links: dict[tuple[int, int], tuple[int, str]] = field(default_factory=dict)


Chmod = Callable[[int, bool], int]  # (current permission bits, is a dir) → new bits
_SYMBOLIC = re.compile(r"([ugoa]*)([-+=])([rwxXst]*)")
_WHO = {"u": 0o4700, "g": 0o2070, "o": 0o1007}
_WHAT = {"r": 0o444, "w": 0o222, "x": 0o111, "s": 0o6000, "t": 0o1000}


def parse_chmod(text: str) -> Chmod:
    """``--chmod``: octal (``0755``) or chmod(1)'s symbolic form (``u+x,g-w,o=r``,
    ``a+X``: execute for dirs and for files some class can execute), as BuildKit."""
    if text.isdigit():
        try:
            mode = int(text, 8)
        except ValueError:
            raise BuildError(f"--chmod={text}: not an octal mode") from None
        if mode > 0o7777:
            raise BuildError(f"--chmod={text}: mode out of range")
        return lambda _old, _is_dir: mode
    clauses = [_SYMBOLIC.fullmatch(c) for c in text.split(",")]
    if not text or not all(clauses):
        raise BuildError(f"--chmod={text}: not an octal or symbolic mode",
                         hint="write e.g. --chmod=0755 or --chmod=u+x,go-w")

    def apply(old: int, is_dir: bool) -> int:
        mode = old
        for m in clauses:
            assert m is not None
            who, op, perms = m.groups()
            mask = 0
            for w in who or "a":
                mask |= 0o7777 if w == "a" else _WHO[w]
            bits = 0
            for p in perms:
                if p == "X":
                    bits |= 0o111 if is_dir or old & 0o111 else 0
                else:
                    bits |= _WHAT[p]
            bits &= mask
            if op == "+":
                mode |= bits
            elif op == "-":
                mode &= ~bits
            else:
                mode = (mode & ~(mask & 0o7777)) | bits
        return mode & 0o7777

    return apply


def _mode(options: CopyOptions, st: os.stat_result) -> int:
    old = stat.S_IMODE(st.st_mode)
    return old if options.chmod is None else options.chmod(old, stat.S_ISDIR(st.st_mode))


def dest_path(dest: str, workdir: str) -> str:
    """COPY's destination made absolute against WORKDIR (a trailing / kept)."""
    if dest.startswith("/"):
        return dest
    base = workdir.rstrip("/")
    if dest in (".", "./"):
        return base + "/"
    return f"{base}/{dest}"


def copy_sources(src_rootfd: int, relpaths: list[str], dst_rootfd: int, dest: str,
                 options: CopyOptions, *, as_dir: bool) -> None:
    """Copy each of ``relpaths`` (inside ``src_rootfd``) to ``dest`` in ``dst_rootfd``;
    ``as_dir``: the destination is a directory whatever else is true."""
    for rel in relpaths:
        try:
            fd = resolve_in_root(src_rootfd, rel, flags=os.O_PATH)
        except OSError as exc:
            raise BuildError(f"COPY {rel}: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                with _dest_dir(dst_rootfd, dest, options) as dst:
                    sfd = os.open(f"/proc/self/fd/{fd}", _REOPEN_DIR)
                    try:
                        _copy_children(sfd, dst, rel.strip("/"), options)
                    finally:
                        os.close(sfd)
                continue
            parent, name = _file_dest(dst_rootfd, dest, rel, as_dir)
            with _dest_dir(dst_rootfd, parent, options) as dst:
                _copy_file_fd(fd, st, dst, name, options)
        finally:
            os.close(fd)


def _file_dest(dst_rootfd: int, dest: str, rel: str, as_dir: bool) -> tuple[str, str]:
    """(destination dir, name) for a single file source."""
    base = rel.rstrip("/").rsplit("/", 1)[-1]
    if as_dir or dest.endswith("/"):
        return dest, base
    try:
        fd = resolve_in_root(dst_rootfd, dest, flags=os.O_PATH)
    except OSError:
        fd = None
    if fd is not None:
        try:
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                return dest, base
        finally:
            os.close(fd)
    parent, _, name = dest.rstrip("/").rpartition("/")
    return parent or "/", name


@contextlib.contextmanager
def _dest_dir(rootfd: int, path: str, options: CopyOptions):  # type: ignore[no-untyped-def]
    owner = options.parents_owner

    def make(dirfd: int, name: str, st: os.stat_result | None) -> None:
        if st is not None:
            raise OSError(errno.ENOTDIR, "not a directory", name)
        os.mkdir(name, 0o755, dir_fd=dirfd)
        os.chown(name, *owner, dir_fd=dirfd, follow_symlinks=False)

    try:
        fd = resolve_in_root(rootfd, path, flags=os.O_RDONLY | os.O_DIRECTORY,
                             create_parents=make)
    except OSError as exc:
        raise BuildError(f"COPY destination {path}: {exc.strerror}",
                         hint="the destination (or one of its parents) is not a directory") \
            from None
    try:
        yield fd
    finally:
        os.close(fd)


def _check_name(name: str, rel: str) -> None:
    if name.startswith(WHITEOUT_PREFIX):
        raise BuildError(f"COPY {rel}: a file named {name!r} cannot be stored in an image "
                         "layer (it would mean a deletion)", hint="rename it or exclude it "
                         "in .containerignore")


def _copy_children(src_dir: int, dst_dir: int, rel: str, options: CopyOptions) -> None:
    for name in sorted(os.listdir(src_dir)):
        child_rel = f"{rel}/{name}" if rel else name
        st = lstat_at(src_dir, name)
        if st is None:
            continue
        if options.excluded is not None and \
                options.excluded(child_rel, stat.S_ISDIR(st.st_mode)):
            continue
        _check_name(name, child_rel)
        if stat.S_ISDIR(st.st_mode):
            _copy_dir(src_dir, name, st, dst_dir, child_rel, options)
        else:
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_dir)
            try:
                if (os.fstat(fd).st_dev, os.fstat(fd).st_ino) != (st.st_dev, st.st_ino):
                    raise BuildError(f"COPY {child_rel}: changed while being copied")
                link = os.readlink(name, dir_fd=src_dir) if stat.S_ISLNK(st.st_mode) else None
                _copy_file_fd(fd, st, dst_dir, name, options, link)
            finally:
                os.close(fd)


def _copy_dir(src_parent: int, name: str, st: os.stat_result, dst_parent: int, rel: str,
              options: CopyOptions) -> None:
    src = os.open(name, DIR_OPEN, dir_fd=src_parent)
    try:
        if (os.fstat(src).st_dev, os.fstat(src).st_ino) != (st.st_dev, st.st_ino):
            raise BuildError(f"COPY {rel}: changed while being copied")
        existing = lstat_at(dst_parent, name)
        if existing is not None and not stat.S_ISDIR(existing.st_mode):
            os.unlink(name, dir_fd=dst_parent)
            existing = None
        if existing is None:
            os.mkdir(name, 0o700, dir_fd=dst_parent)
        dst = os.open(name, DIR_OPEN, dir_fd=dst_parent)
        try:
            _copy_children(src, dst, rel, options)
            _set_meta(dst, src, st, options)
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _copy_file_fd(fd: int, st: os.stat_result, dst_dir: int, name: str,
                  options: CopyOptions, link: str | None = None) -> None:
    """Copy the non-directory opened (O_PATH, not followed) as ``fd`` to ``name``; a
    symlink's target is ``link`` (read by its parent's fd: the fd's own magic link
    names the symlink, not its target)."""
    _check_name(name, name)
    inode = (st.st_dev, st.st_ino)
    if st.st_nlink > 1 and inode in options.links:
        first_dir, first_name = options.links[inode]
        _replace(dst_dir, name, lambda tmp: os.link(first_name, tmp, src_dir_fd=first_dir,
                                                    dst_dir_fd=dst_dir))
        return
    existing = lstat_at(dst_dir, name)
    if existing is not None and stat.S_ISDIR(existing.st_mode):
        raise BuildError(f"COPY: cannot replace the directory {name!r} with a file",
                         hint="end the destination with / to copy into it")

    def make(tmp: str) -> None:
        mode = st.st_mode
        if stat.S_ISREG(mode):
            src = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                dst = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                              | os.O_CLOEXEC, 0o600, dir_fd=dst_dir)
                try:
                    copy_sparse(src, dst)
                    _set_meta(dst, src, st, options)
                finally:
                    os.close(dst)
            finally:
                os.close(src)
            return
        if stat.S_ISLNK(mode):
            if link is None:
                return  # a source path is resolved, so never a link itself
            os.symlink(link, tmp, dir_fd=dst_dir)
        elif stat.S_ISFIFO(mode):
            os.mkfifo(tmp, 0o600, dir_fd=dst_dir)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            os.mknod(tmp, mode, st.st_rdev, dir_fd=dst_dir)
        else:
            return  # a socket: nothing a layer can hold
        _set_meta_at(dst_dir, tmp, st, options)

    _replace(dst_dir, name, make)
    if st.st_nlink > 1:
        options.links[inode] = (os.dup(dst_dir), name)


def _replace(dst_dir: int, name: str, make: Callable[[str], None]) -> None:
    tmp = f"{_TMP}{secrets.token_hex(6)}"
    try:
        make(tmp)
        os.rename(tmp, name, src_dir_fd=dst_dir, dst_dir_fd=dst_dir)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dst_dir)
        raise


def _owner(st: os.stat_result, options: CopyOptions) -> tuple[int, int]:
    return options.owner if options.owner is not None else (st.st_uid, st.st_gid)


def _set_meta(dst: int, src: int, st: os.stat_result, options: CopyOptions) -> None:
    """Owner, mode, xattrs and mtime on the open ``dst`` (a file or dir)."""
    os.chown(dst, *_owner(st, options))
    os.chmod(dst, _mode(options, st))
    if options.xattrs:
        _copy_xattrs(src, dst)
    os.utime(dst, ns=(st.st_mtime_ns, st.st_mtime_ns))


def _set_meta_at(dst_dir: int, name: str, st: os.stat_result, options: CopyOptions) -> None:
    os.chown(name, *_owner(st, options), dir_fd=dst_dir, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(name, _mode(options, st), dir_fd=dst_dir)
    os.utime(name, ns=(st.st_mtime_ns, st.st_mtime_ns), dir_fd=dst_dir, follow_symlinks=False)


def _copy_xattrs(src: int, dst: int) -> None:
    try:
        keys = os.listxattr(src)
    except OSError:
        return
    for key in keys:
        if key.startswith(_OVERLAY_XATTRS):
            continue
        with contextlib.suppress(OSError):
            os.setxattr(dst, key, os.getxattr(src, key))


def close_links(options: CopyOptions) -> None:
    for dirfd, _name in options.links.values():
        os.close(dirfd)
    options.links.clear()


def write_file(dst_rootfd: int, path: str, data: bytes, options: CopyOptions,
               mode: int = 0o644) -> None:
    """A file with ``data`` at ``path`` (COPY heredocs): owner and mode as COPY's."""
    parent, _, name = path.rstrip("/").rpartition("/")
    with _dest_dir(dst_rootfd, parent or "/", options) as dst:
        def make(tmp: str) -> None:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600, dir_fd=dst)
            try:
                os.write(fd, data)
                os.fchown(fd, *(options.owner or (0, 0)))
                os.fchmod(fd, mode if options.chmod is None else options.chmod(mode, False))
            finally:
                os.close(fd)
        _replace(dst, name, make)


def make_dir(dst_rootfd: int, path: str, owner: tuple[int, int]) -> bool:
    """WORKDIR: create ``path`` (and parents) owned by ``owner``; False if it existed."""
    try:
        os.close(resolve_in_root(dst_rootfd, path, flags=os.O_PATH | os.O_DIRECTORY))
        return False
    except FileNotFoundError:
        pass
    except NotADirectoryError:
        raise BuildError(f"WORKDIR {path}: not a directory in the image") from None
    with _dest_dir(dst_rootfd, path, CopyOptions(parents_owner=owner)):
        return True
