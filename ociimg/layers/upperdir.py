"""The OVERLAY on-disk format's side of the layer applier: writing into an upperdir.

The upper holds only this layer, so the lower layers are consulted through a
:class:`MergedView`: an entry's parent path is resolved as the mounted image shows it
(through lower layers' symlinks too), missing parent dirs are created with the
attributes of the lower dir they cover (§C1 #12), a lower file a hardlink names is
copied up first (a link cannot cross snapshot dirs; overlayfs's own copy-up does the
same), a whiteout is a 0:0 char device and opaque dirs get ``<prefix>overlay.opaque=y``
(overlayfs.rst "whiteouts and opaque directories"). The plain-dir counterpart is
:class:`ociimg.layers.formats.DirFormat`.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

from ociimg.fsutil import walk_at
from ociimg.layers import fsops, paths
from ociimg.layers.fsops import DIR_OPEN
from ociimg.layers.merged import Found, MergedView
from ociimg.layers.ondisk import OnDisk

if TYPE_CHECKING:
    from ociimg.layers.formats import Host


class OverlayFormat:
    """How one layer is written into its own overlayfs upperdir over ``lowers``."""

    def __init__(self, host: Host, ondisk: OnDisk, lowers: tuple[os.PathLike[str], ...] | None,
                 rootless: bool) -> None:
        self.host = host
        self.res = host.res
        self.ondisk = ondisk
        self.rootless = rootless
        self._ovl = ondisk.overlay_prefix
        self.opaque: set[str] = set()  # keys of the dirs this layer marked opaque
        self._inode_index: dict[int, dict[tuple[int, int], list[tuple[str, ...]]]] = {}
        # None: what lies below is unknown (a standalone upper): every whiteout and
        # opaque marker is recorded as given. Else whiteouts are exact (nothing is
        # written or created for what no lower layer has).
        self.lowers_known = lowers is not None
        self._lower_res = [paths.Resolver(os.open(p, DIR_OPEN)) for p in lowers or ()]
        self.view = MergedView([self.res, *self._lower_res], ondisk.opaque_xattr, self.opaque)
        self._inherit_lower_root()

    def close(self) -> None:
        for r in self._lower_res:
            r.close()
            os.close(r.rootfd)

    def sweep(self) -> None:
        for r in self._lower_res:
            r.sweep()

    # -- paths --------------------------------------------------------------------
    def entry_path(self, parts: list[str]) -> list[str]:
        """``parts`` with its parent dirs as the merged view resolves them (through
        lower layers' symlinks too), created in this upper."""
        parent = parts[:-1]
        if self.res.dir(parent) is None:
            parent = self.view.resolve(parent)
            self.prepare_parents(parent)
        return [*parent, *parts[-1:]]

    def whiteout_path(self, parts: list[str]) -> list[str]:
        """``entry_path`` without creating anything: a whiteout's dir is resolved like
        any entry's parent, as in a flattened tree, but a whiteout only deletes."""
        parent = parts[:-1]
        if self.res.dir(parent) is None:
            parent = self.view.resolve(parent)
        return [*parent, *parts[-1:]]

    def is_dir(self, parts: list[str]) -> bool:
        """Whether the merged tree has a dir at the symlink-free ``parts``."""
        if self.res.dir(parts) is not None:
            return True
        pfd = self.res.dir(parts[:-1])
        if pfd is not None and fsops.lstat_at(pfd, parts[-1]) is not None:
            return False  # this layer's non-dir or whiteout hides the lower entry
        lower = self.view.lower_entry(parts)
        return lower is not None and stat.S_ISDIR(lower.st.st_mode)

    # -- whiteouts and opaque dirs ------------------------------------------------
    def whiteout(self, parent: list[str], name: str, path: str) -> None:
        """Hide the lower layers' ``path``: a whiteout device where something lies below."""
        if any(path.startswith(d + "/") or not d for d in self.opaque):
            return  # no plain whiteouts inside an opaque dir (§C1 #9)
        if self.lowers_known and self.view.lower_entry([*parent, name]) is None:
            return  # nothing below to hide: no whiteout, and no parent dirs made for one
        self.prepare_parents(parent)
        pfd = self.res.dir(parent, create=True)
        assert pfd is not None
        self.host.replace(pfd, name, key=path)
        self.ondisk.make_whiteout(pfd, name)

    def opaque_applies(self, parent: list[str]) -> bool:
        """Whether ``parent/.wh..wh..opq`` has a dir to act on; in a standalone upper
        (lowers unknown) it is recorded as given."""
        return not parent or self.is_dir(parent) or not self.lowers_known

    def forget_dir(self, path: str) -> None:
        """The dir at ``path`` went away: a new dir there is not marked opaque."""
        if self.opaque:
            self.opaque.difference_update(
                [k for k in self.opaque if k == path or k.startswith(path + "/")])

    def finish(self) -> None:
        """End of the layer (before the dirs' times are put back): an opaque layer root
        is hidden the way overlayfs honours."""
        if "" in self.opaque:
            self._hide_lower_root()

    def _upper_xattr(self, key: str) -> str | None:
        """A lower entry's xattr as copied into this upper (implicit parent dirs, copy-up):
        overlayfs's own marks (opaque, redirect, origin ...) describe the lower layer's
        entry, not this one, and are dropped; a lower dir's opaque mark copied onto an
        implicit parent hid what lies below it in other layers. Escaped xattrs
        (<prefix>overlay.X: the image's own) are kept."""
        if key.startswith(self._ovl) and not key.startswith(self._ovl + "overlay."):
            return None
        return key

    def mark_opaque(self, fd: int, key: str) -> None:
        """Mark the upper dir ``fd`` opaque; it holds only this layer's entries."""
        self.opaque.add(key)
        if not key:
            return  # the root: overlayfs ignores the mark there (see _hide_lower_root)
        try:
            self.ondisk.mark_opaque(fd)
        except PermissionError:
            self.host.warn("opaque", "opaque dirs not marked: trusted.overlay.* needs "
                           "CAP_SYS_ADMIN; use userxattr for rootless overlay snapshots")

    def prepare_parents(self, parent: list[str]) -> None:
        """Create missing upper dirs with the lower dir's attributes (§C1 #12).

        A dir created where this layer left a whiteout or a non-dir is new and marked
        opaque, so the deleted lower dir does not show through again.
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
            self.host.replace(pfd, name, key="/".join(parent[:i]))
            self.res.child_depth(pfd, "/".join(parent[:i]))
            os.mkdir(name, 0o700, dir_fd=pfd)
            # Over this layer's own whiteout or non-dir the lower dir is deleted: the
            # parent is a new dir (as in a flattened unpack), not a copy of the deleted one.
            lower = None if st is not None else self.view.lower_entry(parent[:i])
            if lower is not None and stat.S_ISDIR(lower.st.st_mode):
                lst = lower.st
                fsops.copy_meta(lower.dirfd, name, pfd, lst, self.rootless,
                                self._upper_xattr)
                # Children added below change the mtime again: restore it at the end.
                self.host.defer_dir(parent[:i], stat.S_IMODE(lst.st_mode), lst.st_atime_ns,
                                    lst.st_mtime_ns)
            else:
                os.chmod(name, 0o755, dir_fd=pfd)
            if st is not None:  # and it must hide the lower dir's entries
                fd = os.open(name, DIR_OPEN, dir_fd=pfd)
                try:
                    self.mark_opaque(fd, "/".join(parent[:i]))
                finally:
                    os.close(fd)

    # -- hardlinks ------------------------------------------------------------------
    def link_target(self, target: list[str]) -> list[str]:
        """A target this upper lacks is named as the merged view resolves it: it may
        lie behind a lower layer's symlink."""
        tpfd = self.res.dir(target[:-1])
        if tpfd is None or fsops.lstat_at(tpfd, target[-1]) is None:
            return [*self.view.resolve(target[:-1]), target[-1]]
        return target

    def link_target_dir(self, target: list[str]) -> int | None:
        """The upper dir holding the link target; a lower target is copied up first."""
        tpfd = self.res.dir(target[:-1])
        if tpfd is None or fsops.lstat_at(tpfd, target[-1]) is None:
            if self._copy_up(target):
                tpfd = self.res.dir(target[:-1])
        return tpfd

    def _copy_up(self, target: list[str]) -> bool:
        """Copy a lower layer's file into this upper so a hardlink can point at it."""
        found = self.view.lower_entry(target)
        if found is None or stat.S_ISDIR(found.st.st_mode):
            return False
        self.prepare_parents(target[:-1])
        upfd = self.res.dir(target[:-1], create=True)
        assert upfd is not None
        fsops.copy_entry(found.dirfd, target[-1], upfd, found.st, self.rootless,
                         self._upper_xattr)
        # Still the lower layer's file, not this layer's entry (not a layer path): a
        # whiteout or an opaque dir of this layer hides it, the hardlink stays.
        if found.st.st_nlink > 1:
            self._copy_up_other_names(found, target)
        return True

    def _copy_up_other_names(self, found: Found, target: list[str]) -> None:
        """The copy gets the lower inode's other visible names too, as links: an inode
        cannot span snapshots, and a flattened tree keeps them all one inode."""
        key = (found.st.st_dev, found.st.st_ino)
        for other in self._inode_names(found.layer).get(key, ()):
            parts = list(other)
            if parts == target:
                continue
            shown = self.view.lower_entry(parts)
            if shown is None or shown.layer != found.layer or \
                    (shown.st.st_dev, shown.st.st_ino) != key:
                continue  # hidden or replaced by a layer in between
            upper = self.res.dir(parts[:-1])
            if upper is not None and fsops.lstat_at(upper, parts[-1]) is not None:
                continue  # this layer's own entry (or whiteout) there wins
            self.prepare_parents(parts[:-1])
            pfd = self.res.dir(parts[:-1], create=True)
            tpfd = self.res.dir(target[:-1])
            assert pfd is not None and tpfd is not None
            os.link(target[-1], parts[-1], src_dir_fd=tpfd, dst_dir_fd=pfd,
                    follow_symlinks=False)

    def _inode_names(self, layer: int) -> dict[tuple[int, int], list[tuple[str, ...]]]:
        """Paths of the multiply linked files of lower layer ``layer`` (one walk of
        that snapshot, on the first hardlink into one of its linked files)."""
        index = self._inode_index.get(layer)
        if index is None:
            index = self._inode_index[layer] = {}

            def visit(dirfd: int, name: str, st: os.stat_result, rel: list[str]) -> bool:
                if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                    index.setdefault((st.st_dev, st.st_ino), []).append((*rel, name))
                return stat.S_ISDIR(st.st_mode)

            walk_at(self.view.layers[layer].rootfd, visit)
        return index

    def _inherit_lower_root(self) -> None:
        """The upper's root starts with the merged lower root's owner, mode, xattrs and
        times: a layer without a "./" entry leaves the root as it was (a flattened
        unpack keeps it), while an overlay mount shows the topmost layer's root."""
        lower = self.view.layers[1] if len(self.view.layers) > 1 else None
        if lower is not None:
            fsops.copy_meta(lower.rootfd, None, self.res.rootfd, os.fstat(lower.rootfd),
                            self.rootless, self._upper_xattr)

    def _hide_lower_root(self) -> None:
        """``.wh..wh..opq`` at the layer root, in an upperdir.

        overlayfs does not look for an opaque mark on the root of a layer (a layer
        root always merges with the one below), so the mark alone would hide nothing
        when mounted while a flattened unpack deletes everything below. The snapshot
        must still stack on the lower ones (containers share them, and chain IDs name
        the whole stack), so the root is made opaque by what overlayfs does honour:
        a whiteout for every name the lower layers show that this layer lacks, and an
        opaque mark on each root-level dir this layer has (the mark works there). A
        non-dir of this layer already hides the lower entry of its name.
        """
        for name, _found in sorted(self.view.lower_root_names().items()):
            st = fsops.lstat_at(self.res.rootfd, name)
            if st is None:
                self.ondisk.make_whiteout(self.res.rootfd, name)
            elif stat.S_ISDIR(st.st_mode) and name not in self.opaque:
                fd = os.open(name, DIR_OPEN, dir_fd=self.res.rootfd)
                try:
                    self.mark_opaque(fd, name)
                finally:
                    os.close(fd)
