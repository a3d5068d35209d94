"""Open a path inside a root as if the root were "/": nothing ever leads out of it.

``resolve_in_root`` is the one resolver for every stage (the layer applier, the runtime's
mount destinations, the image's user database, ``ociimg cp``). Two implementations with
one behaviour:

* ``openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)``: the kernel clamps ".." and
  absolute symlinks to the root (Linux >= 5.6) and retries itself when a rename races it;
* a component walk, the fallback and the only one that creates missing parents: each
  component is opened ``O_PATH | O_NOFOLLOW`` relative to the dir fd before it and
  fstat'ed, so what is checked is what was opened (no lstat-then-open race). A symlink's
  text is read from that fd and walked again from the root (absolute) or the current dir;
  ".." is never opened below the root, and above a dir it is only accepted when it is
  the very dir the walk came from (a dir moved away mid-walk cannot lead out). A magic
  link (``/proc/self/root``) is only ever read as text, resolved inside the root.

Errors are OSError with the kernel's errno (ELOOP past 40 symlinks, like MAXSYMLINKS;
ENOENT, ENOTDIR, EXDEV, ENAMETOOLONG), so each caller maps them to its own error kind.

Reading a file of an untrusted tree: ``resolve_in_root(rootfd, path)`` (O_PATH), fstat,
then reopen ``/proc/self/fd/N`` only if it is a regular file (a FIFO or device is never
opened). Writing one: ``open_parent_in_root(rootfd, path)``, then a temp file and a
rename relative to that dir fd.
"""

from __future__ import annotations

import errno
import os
import stat

from ociimg.oskit import linux

MAX_SYMLINKS = 40  # Linux's MAXSYMLINKS
PATH_MAX = 4096
_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_IN_ROOT = linux.RESOLVE.IN_ROOT | linux.RESOLVE.NO_MAGICLINKS
_EAGAIN_RETRIES = 16  # openat2 says EAGAIN when a rename raced it; it is safe to retry

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    MakeDir = Callable[[int, str, "os.stat_result | None"], None]


def _probe_openat2() -> bool:
    fd = os.open("/", _DIR)
    try:
        os.close(linux.openat2(fd, ".", _DIR, 0, _IN_ROOT))
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


HAVE_OPENAT2 = _probe_openat2()


def resolve_in_root(rootfd: int, path: str, *, flags: int = os.O_PATH, mode: int = 0o644,
                    follow_last: bool = True, create_parents: bool | MakeDir = False,
                    no_xdev: bool = False, use_openat2: bool | None = None) -> int:
    """An fd (``flags | O_CLOEXEC``; the caller closes it) for ``path`` resolved inside
    the dir ``rootfd`` as if it were "/".

    ``follow_last=False`` opens a final symlink itself (O_PATH) or fails with ELOOP, as
    O_NOFOLLOW does. ``O_CREAT`` in ``flags`` creates the last component with ``mode``
    (through a final dangling symlink only when following, and never with O_EXCL).
    ``create_parents`` makes missing parent dirs 0755; a callable ``(dirfd, name, st)``
    is called instead for a parent that is missing (st None) or not a dir (st given),
    and must leave a dir there. With ``O_DIRECTORY`` in ``flags`` it makes the last
    component as well (``mkdir -p``). ``no_xdev`` refuses to cross a mount (EXDEV).
    """
    if "\0" in path:
        raise OSError(errno.EINVAL, "path contains a NUL byte", path[:200])
    if len(path.encode("utf-8", "surrogateescape")) >= PATH_MAX:
        raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), path[:200])
    flags |= os.O_CLOEXEC
    if not follow_last or flags & (os.O_CREAT | os.O_EXCL) == os.O_CREAT | os.O_EXCL:
        flags |= os.O_NOFOLLOW
    if HAVE_OPENAT2 if use_openat2 is None else use_openat2:
        resolve = _IN_ROOT | (linux.RESOLVE.NO_XDEV if no_xdev else 0)
        try:
            return _openat2_retrying(rootfd, path, flags, mode, resolve)
        except (FileNotFoundError, NotADirectoryError):
            if not create_parents:
                raise
    return _Walk(rootfd, path, create_parents, no_xdev).open(flags, mode)


def resolve_in_dir(root: str | os.PathLike[str], path: str, *, flags: int = os.O_PATH,
                   follow_last: bool = True, use_openat2: bool | None = None) -> int:
    """``resolve_in_root`` inside the directory at ``root``, which is opened for the
    lookup only: for a caller that holds a path, not an fd, of the root."""
    rootfd = os.open(root, _DIR)
    try:
        return resolve_in_root(rootfd, path, flags=flags, follow_last=follow_last,
                               use_openat2=use_openat2)
    finally:
        os.close(rootfd)


def split_parent(path: str) -> tuple[str, str]:
    """``path`` → (parent, last name), the name never "", "." or "..": what a caller
    that creates or replaces ``path`` opens with ``resolve_in_root(parent)`` and then
    works on by name relative to that dir fd (cp's temp file + rename)."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or parts[-1] == "..":
        raise OSError(errno.EISDIR, "path names a directory, not an entry in one", path[:200])
    return "/".join(parts[:-1]) or "/", parts[-1]


def open_parent_in_root(rootfd: int, path: str, *, create_parents: bool = False,
                        use_openat2: bool | None = None) -> tuple[int, str]:
    """(O_PATH fd of the dir that holds ``path``, the last name) inside ``rootfd``: for
    a caller that creates or replaces ``path`` by name relative to that fd (a temp file
    then rename, as ``ociimg cp`` writes), so a final symlink is replaced, never
    followed out. The caller closes the fd."""
    parent, name = split_parent(path)
    fd = resolve_in_root(rootfd, parent, flags=os.O_PATH | os.O_DIRECTORY,
                         create_parents=create_parents, use_openat2=use_openat2)
    return fd, name


def _openat2_retrying(rootfd: int, path: str, flags: int, mode: int, resolve: int) -> int:
    rel = path.lstrip("/") or "."
    if not flags & os.O_CREAT:
        mode = 0  # openat2 refuses a mode it would not use (EINVAL)
    for _ in range(_EAGAIN_RETRIES):
        try:
            return linux.openat2(rootfd, rel, flags, mode, resolve)
        except BlockingIOError:
            continue
    return linux.openat2(rootfd, rel, flags, mode, resolve)


class _Walk:
    """One fallback resolution: ``cur`` is an O_PATH fd of the dir reached so far (or
    the root's, never closed here); ``chain`` holds the (st_dev, st_ino) of the dirs
    from the root down to it, so ".." is checked against where the walk really came
    from."""

    def __init__(self, rootfd: int, path: str, create: bool | MakeDir, no_xdev: bool
                 ) -> None:
        self.rootfd = rootfd
        self.path = path
        self.make = create if callable(create) else (_make_missing_dir if create else None)
        root_st = os.fstat(rootfd)
        self.root_dev = root_st.st_dev if no_xdev else None
        self.chain = [(root_st.st_dev, root_st.st_ino)]
        self.cur = rootfd
        self.links = 0

    def open(self, flags: int, mode: int) -> int:
        pending = _components(self.path)
        try:
            while pending:
                name = pending.pop()
                if name == "..":
                    self._up()
                elif not pending and not (flags & os.O_DIRECTORY and self.make):
                    fd = self._last(name, flags, mode, pending)
                    if fd is not None:
                        return fd
                else:
                    self._down(name, pending)
            return os.open(".", flags, mode, dir_fd=self.cur) if self.cur != self.rootfd \
                else _reopen_root(self.rootfd, flags, mode)
        finally:
            self._set(self.rootfd)

    def _set(self, fd: int) -> None:
        if self.cur != self.rootfd:
            os.close(self.cur)
        self.cur = fd

    def _up(self) -> None:
        if len(self.chain) == 1:
            return  # ".." at the root stays there (RESOLVE_IN_ROOT)
        self.chain.pop()
        if len(self.chain) == 1:
            self._set(self.rootfd)
            return
        fd = os.open("..", _DIR, dir_fd=self.cur)
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != self.chain[-1]:
            os.close(fd)
            raise OSError(errno.EAGAIN, "a directory moved during path resolution",
                          self.path[:200])
        self._set(fd)

    def _open_component(self, name: str) -> tuple[int | None, os.stat_result | None]:
        try:
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.cur)
        except FileNotFoundError:
            return None, None
        return fd, os.fstat(fd)

    def _down(self, name: str, pending: list[str]) -> None:
        """Step into the parent component ``name`` (following a symlink)."""
        fd, st = self._open_component(name)
        if fd is not None and stat.S_ISLNK(st.st_mode):
            self._expand(fd, pending)
            return
        if fd is None or not stat.S_ISDIR(st.st_mode):
            if fd is not None:
                os.close(fd)
            if self.make is None:
                raise OSError(errno.ENOTDIR if st else errno.ENOENT,
                              os.strerror(errno.ENOTDIR if st else errno.ENOENT),
                              self.path[:200])
            self.make(self.cur, name, st)
            fd = os.open(name, _DIR | os.O_NOFOLLOW, dir_fd=self.cur)
            st = os.fstat(fd)
        self._enter(fd, st)

    def _enter(self, fd: int, st: os.stat_result) -> None:
        if self.root_dev is not None and st.st_dev != self.root_dev:
            os.close(fd)
            raise OSError(errno.EXDEV, "path crosses a mount point", self.path[:200])
        self._set(fd)
        self.chain.append((st.st_dev, st.st_ino))

    def _expand(self, link_fd: int, pending: list[str]) -> None:
        """Replace the symlink open as ``link_fd`` by its target's components."""
        try:
            self.links += 1
            if self.links > MAX_SYMLINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), self.path[:200])
            target = os.readlink("", dir_fd=link_fd)
        finally:
            os.close(link_fd)
        if target.startswith("/"):
            del self.chain[1:]
            self._set(self.rootfd)
        pending.extend(_components(target))

    def _last(self, name: str, flags: int, mode: int, pending: list[str]) -> int | None:
        """Open the final component; None when it was a followed symlink (its target's
        components are now ``pending``)."""
        fd, st = self._open_component(name)
        if fd is not None and stat.S_ISLNK(st.st_mode) and not flags & os.O_NOFOLLOW:
            self._expand(fd, pending)
            return None
        if fd is not None and flags & os.O_PATH:
            if flags & os.O_DIRECTORY and not stat.S_ISDIR(st.st_mode):
                os.close(fd)
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), self.path[:200])
            if self.root_dev is not None and st.st_dev != self.root_dev:
                os.close(fd)
                raise OSError(errno.EXDEV, "path crosses a mount point", self.path[:200])
            return fd  # opened O_PATH|O_NOFOLLOW|O_CLOEXEC: what was asked for
        if fd is not None:
            os.close(fd)
        # O_NOFOLLOW: a symlink swapped in since the check fails (ELOOP), never followed.
        return os.open(name, flags | os.O_NOFOLLOW, mode, dir_fd=self.cur)


def _components(path: str) -> list[str]:
    """Components of ``path``, last first (a stack to pop), without "" and "."."""
    return [p for p in reversed(path.split("/")) if p not in ("", ".")]


def _reopen_root(rootfd: int, flags: int, mode: int) -> int:
    if flags & os.O_CREAT:
        raise OSError(errno.EISDIR, os.strerror(errno.EISDIR), "/")
    return os.open(".", flags & ~os.O_NOFOLLOW, mode, dir_fd=rootfd)


def _make_missing_dir(dirfd: int, name: str, st: os.stat_result | None) -> None:
    if st is not None:
        raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), name)
    try:
        os.mkdir(name, 0o755, dir_fd=dirfd)
    except FileExistsError:
        pass  # made concurrently: the open that follows checks what it is
