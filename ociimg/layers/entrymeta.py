"""One entry's owner, mode, xattrs and times, as the applier writes them.

Ownership is left alone in a rootless unpack (with one warning); xattrs are stored
under the name the on-disk format gives them (:meth:`OnDisk.stored_xattr`), and the
host's SELinux label is never copied from a tar (§C1 #15).
"""

from __future__ import annotations

import errno
import os
import stat
import tarfile
from collections.abc import Callable

from ociimg.errors import InvalidDocument
from ociimg.layers.ondisk import OnDisk
from ociimg.layers.tarinfo import mtime_ns, xattrs_of


class EntryMeta:
    def __init__(self, ondisk: OnDisk, rootless: bool,
                 warn: Callable[[str, str], None]) -> None:
        self.ondisk = ondisk
        self.rootless = rootless
        self.warn = warn
        self._euid, self._egid = os.geteuid(), os.getegid()

    def chown(self, fd: int, name: str | None, info: tarfile.TarInfo, *, symlink: bool) -> None:
        if self.rootless:
            if (info.uid, info.gid) != (self._euid, self._egid):
                self.warn("chown", "file ownership not applied: changing owners needs "
                          "CAP_CHOWN (rootless unpack)")
            return
        if name is None:
            os.chown(fd, info.uid, info.gid)
        else:
            os.chown(name, info.uid, info.gid, dir_fd=fd, follow_symlinks=False)

    def settle_owner_mode(self, fd: int, info: tarfile.TarInfo, mode: int) -> None:
        """chown/chmod a new file only where it differs: a root unpack of root-owned
        files with umask-compatible modes needs neither. One fstat instead of two
        inode updates per file (bench/unpack: ~58k files); the fstat also sees what
        creation really gave (umask, a setgid parent's group)."""
        st = os.fstat(fd)
        if (st.st_uid, st.st_gid) != (info.uid, info.gid):
            self.chown(fd, None, info, symlink=False)
        if stat.S_IMODE(st.st_mode) != mode:
            os.chmod(fd, mode)

    def set_at(self, pfd: int, name: str, info: tarfile.TarInfo, *,
               symlink: bool = False) -> None:
        """All of it, for ``name`` in ``pfd`` (a symlink, fifo or device)."""
        self.chown(pfd, name, info, symlink=symlink)
        if not symlink:  # Linux has no lchmod; a symlink's mode is always 0777
            os.chmod(name, info.mode & 0o7777, dir_fd=pfd)
        if xattrs_of(info):
            self.set_xattrs(f"/proc/self/fd/{pfd}/{name}", info, existing=False)
        os.utime(name, ns=(mtime_ns(info, "atime"), mtime_ns(info)), dir_fd=pfd,
                 follow_symlinks=False)

    def set_xattrs(self, target: int | str, info: tarfile.TarInfo, *, existing: bool) -> None:
        """The entry's xattrs; on an ``existing`` dir they replace the ones it had."""
        wanted = {}
        for key, value in xattrs_of(info).items():
            if key == "security.selinux":
                continue  # host-specific label (§C1 #15)
            stored = self.ondisk.stored_xattr(key)
            if stored is None:
                self.warn("xattr-overlay", f"skipped overlayfs xattr {key} in a "
                          "flattened rootfs")
                continue
            wanted[stored] = value
        if existing:
            self._clear_xattrs(target, wanted)
        for key, value in wanted.items():
            try:
                os.setxattr(target, key, value, follow_symlinks=isinstance(target, int))
            except OSError as exc:
                if exc.errno in (errno.EINVAL, errno.ERANGE):  # a malformed value
                    raise InvalidDocument(f"tar entry {info.name[:200]!r}: xattr {key[:80]!r}: "
                                          f"{os.strerror(exc.errno)}",
                                          hint="the layer is broken or hostile") from exc
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EACCES):
                    raise
                ns = key.split(".", 1)[0]
                self.warn(f"xattr-{ns}-{exc.errno}", f"xattrs in namespace {ns}.* not "
                          f"applied ({os.strerror(exc.errno)})")

    def _clear_xattrs(self, target: int | str, keep: dict[str, bytes]) -> None:
        try:
            names = os.listxattr(target, follow_symlinks=isinstance(target, int))
        except OSError:
            return
        for key in names:
            if key in keep or self.ondisk.is_format_xattr(key):
                continue
            try:
                os.removexattr(target, key, follow_symlinks=isinstance(target, int))
            except OSError:
                self.warn(f"xattr-rm-{key}", f"could not remove xattr {key}")
