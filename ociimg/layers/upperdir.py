"""The OVERLAY on-disk format's part of the layer applier: writing into an upperdir.

The upper holds only this layer, so the lower layers are consulted through a
:class:`MergedView`: missing parent dirs are created with the attributes of the lower
dir they cover (§C1 #12), a lower file a hardlink names is copied up first (a link
cannot cross snapshot dirs; overlayfs's own copy-up does the same), and opaque dirs get
``<prefix>overlay.opaque=y`` (overlayfs.rst "whiteouts and opaque directories").
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

from ociimg.layers import fsops, paths
from ociimg.layers.fsops import DIR_OPEN
from ociimg.layers.merged import MergedView

if TYPE_CHECKING:
    from ociimg.layers.apply import ApplyOptions


class UpperDirOps:
    """Mixed into the applier; the attributes below are the applier's."""

    res: paths.Resolver
    view: MergedView
    options: ApplyOptions
    _ovl: str
    _opaque: set[str]
    _dirs: list[tuple[list[str], int, int, int]]

    if TYPE_CHECKING:
        def warn(self, key: str, message: str) -> None: ...
        def _replace(self, pfd: int, name: str, *, keep_dir: bool = False
                     ) -> os.stat_result | None: ...
        def _note_layer_path(self, parts: list[str]) -> None: ...

    def _mark_opaque_fd(self, fd: int, key: str) -> None:
        self._opaque.add(key)
        fsops.remove_whiteout_devices(fd)
        try:
            os.setxattr(fd, self._ovl + "opaque", b"y")
        except PermissionError:
            self.warn("opaque", "opaque dirs not marked: trusted.overlay.* needs "
                      "CAP_SYS_ADMIN; use userxattr for rootless overlay snapshots")

    def _overlay_path(self, parts: list[str]) -> list[str]:
        """``parts`` with its parent dirs as the merged view resolves them (through
        lower layers' symlinks too), created in this upper."""
        parent = parts[:-1]
        if self.res.dir(parent) is None:
            parent = self.view.resolve(parent)
            self._ensure_overlay_parents(parent)
        return [*parent, *parts[-1:]]

    def _ensure_overlay_parents(self, parent: list[str]) -> None:
        """Create missing upper dirs with the lower dir's attributes (§C1 #12).

        A dir created where this layer left a whiteout is marked opaque, so the
        deleted lower dir does not show through again.
        """
        if self.res.dir(parent) is not None:
            return
        for i in range(1, len(parent) + 1):
            if self.res.dir(parent[:i]) is not None:
                continue
            pfd = self.res.dir(parent[: i - 1])
            name = parent[i - 1]
            st = fsops.lstat_at(pfd, name) if pfd is not None else None
            if pfd is None or (st is not None and stat.S_ISLNK(st.st_mode)):
                return  # a symlink in the upper: the resolver's create walk follows it
            self._replace(pfd, name)
            self.res.child_depth(pfd, "/".join(parent[:i]))
            os.mkdir(name, 0o700, dir_fd=pfd)
            lower = self.view.lower_entry(parent[:i])
            if lower is not None and stat.S_ISDIR(lower.st.st_mode):
                lst = lower.st
                fsops.copy_meta(lower.dirfd, name, pfd, lst, self.options.rootless)
                # Children added below change the mtime again: restore it at the end.
                self._dirs.append((parent[:i], stat.S_IMODE(lst.st_mode), lst.st_atime_ns,
                                   lst.st_mtime_ns))
            else:
                os.chmod(name, 0o755, dir_fd=pfd)
            if fsops.is_whiteout_dev(st):
                fd = os.open(name, DIR_OPEN, dir_fd=pfd)
                try:
                    self._mark_opaque_fd(fd, "/".join(parent[:i]))
                finally:
                    os.close(fd)

    def _copy_up(self, target: list[str]) -> bool:
        """Copy a lower layer's file into this upper so a hardlink can point at it."""
        found = self.view.lower_entry(target)
        if found is None or stat.S_ISDIR(found.st.st_mode):
            return False
        self._ensure_overlay_parents(target[:-1])
        upfd = self.res.dir(target[:-1], create=True)
        assert upfd is not None
        fsops.copy_entry(found.dirfd, target[-1], upfd, found.st, self.options.rootless)
        self._note_layer_path(target)
        return True
