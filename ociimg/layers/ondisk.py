"""The on-disk format of a tree, as a value: a plain dir or an overlayfs upper dir.

umoci's ``OnDiskFormat`` (``DirRootfs``, ``OverlayfsRootfs{UserXattr}``): the applier
writes whiteouts and opaque dirs through it and the differ reads them back through it,
so the two agree on one definition (overlayfs.rst "whiteouts and opaque directories"):

* a whiteout is a 0:0 character device in an upper; in a plain dir it is simply gone;
* an opaque dir carries ``<prefix>opaque=y`` (``trusted.overlay.`` or, for a
  ``userxattr`` mount, ``user.overlay.``); a plain dir has no such thing;
* an image's own ``<prefix>X`` xattr is stored escaped as ``<prefix>overlay.X`` in an
  upper (Linux >= 6.7 shows it as ``<prefix>X`` through the mount) and dropped from a
  plain dir, where it would steer a later overlay mount;
* an upper entry must be self-contained: a ``redirect`` (a renamed lower dir) or a
  ``metacopy`` (data left in the lower file) would need the lower layers to read.
"""

from __future__ import annotations

import enum
import os
import stat
from dataclasses import dataclass

from ociimg.errors import OciimgError
from ociimg.layers import paths
from ociimg.layers.fsops import OVERLAY_XATTR_PREFIX, USER_OVERLAY_PREFIX, is_whiteout_dev

OPAQUE = "opaque"
_NOT_SELF_CONTAINED = ("redirect", "metacopy")


class OnDiskFormat(enum.Enum):
    DIR = "dir"
    OVERLAY = "overlay"


class UpperNotSelfContained(OciimgError):
    """An overlay upper entry points into the lower layers (redirect_dir, metacopy)."""


@dataclass(frozen=True, slots=True)
class OnDisk:
    kind: OnDiskFormat = OnDiskFormat.DIR
    userxattr: bool = False

    @property
    def overlay(self) -> bool:
        return self.kind is OnDiskFormat.OVERLAY

    @property
    def overlay_prefix(self) -> str:
        """The xattr namespace overlayfs reads its marks from in this flavour."""
        return USER_OVERLAY_PREFIX if self.userxattr else OVERLAY_XATTR_PREFIX

    @property
    def opaque_xattr(self) -> str:
        return self.overlay_prefix + OPAQUE

    # --- whiteouts ----------------------------------------------------------------
    def is_whiteout(self, st: os.stat_result | None) -> bool:
        return self.overlay and is_whiteout_dev(st)

    def make_whiteout(self, dirfd: int, name: str) -> None:
        """Hide ``name`` of the layers below: a 0:0 char device in an upper (where
        nothing of that name is left), removal in a plain dir."""
        if self.overlay:
            os.mknod(name, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=dirfd)
        else:
            paths.remove_at(dirfd, name)

    # --- opaque dirs --------------------------------------------------------------
    def is_opaque(self, dirfd: int, name: str) -> bool:
        if not self.overlay:
            return False
        try:
            return os.getxattr(f"/proc/self/fd/{dirfd}/{name}", self.opaque_xattr,
                               follow_symlinks=False) == b"y"
        except OSError:
            return False

    def mark_opaque(self, fd: int) -> None:
        """Mark the open upper dir ``fd`` opaque (PermissionError without the right)."""
        if self.overlay:
            os.setxattr(fd, self.opaque_xattr, b"y")

    # --- xattrs -------------------------------------------------------------------
    def stored_xattr(self, key: str) -> str | None:
        """The on-disk name of an image's xattr ``key``; None: not stored."""
        if self.overlay:
            prefix = self.overlay_prefix
            return prefix + "overlay." + key[len(prefix):] if key.startswith(prefix) else key
        return None if key.startswith(OVERLAY_XATTR_PREFIX) else key

    def is_format_xattr(self, key: str) -> bool:
        """An on-disk xattr of the format itself (an upper's marks and escaped image
        xattrs), kept when an entry's own xattrs replace an existing dir's."""
        return self.overlay and key.startswith(self.overlay_prefix)

    @staticmethod
    def image_xattr(key: str) -> str | None:
        """The tar name of an on-disk xattr; None drops it: overlayfs's own marks and
        any ``*.overlay.*`` name (they would steer the next overlay mount), and the
        host's SELinux label (the applier does not set it either)."""
        if key.startswith((OVERLAY_XATTR_PREFIX, USER_OVERLAY_PREFIX)) or \
                key == "security.selinux":
            return None
        return key

    def check_self_contained(self, xattr_names: list[str], shown: str) -> None:
        """Refuse an upper entry (its xattr names given) that needs the lower layers."""
        if not self.overlay:
            return
        for mark in _NOT_SELF_CONTAINED:
            if self.overlay_prefix + mark in xattr_names:
                raise UpperNotSelfContained(
                    f"snapshot diff: {shown}: overlayfs {mark} entry (its data or name "
                    "lives in a lower layer)", hint="active snapshots are mounted with "
                    "redirect_dir=off and metacopy=off; this upper was written by a mount "
                    "with them on")
