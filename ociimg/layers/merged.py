"""What an overlay mount of one upper dir over lower snapshot dirs shows, in user space.

The OVERLAY applier writes a layer into its own upperdir, where the lower layers'
entries are not on disk. To place an entry where the mounted (or flattened) image will
have it, it looks paths up here as overlayfs does (overlayfs.rst "Directories"): the
topmost layer holding a name decides what it is; a whiteout hides it; a dir merges with
the same-named dirs below until one is opaque; a non-dir hides everything below.
Symlinks are followed through the merged view and clamped at the root like
RESOLVE_IN_ROOT, so a symlink planted in a lower layer (``lib -> usr/lib``) redirects a
later layer's write inside the image, as a flattened unpack does, and never out of it
(CVE-2025-45582). Every fd comes from a :class:`paths.Resolver` of one layer dir.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass

from ociimg.errors import UnsafeArchive
from ociimg.layers import paths
from ociimg.layers.fsops import is_whiteout_dev, lstat_at


@dataclass(frozen=True, slots=True)
class Found:
    layer: int  # 0: the upper, 1…: the lowers, top first
    dirfd: int  # the dir holding the entry in that layer (owned by its resolver)
    st: os.stat_result


class MergedView:
    def __init__(self, layers: Sequence[paths.Resolver], opaque_xattr: str,
                 upper_opaque: set[str]) -> None:
        self.layers = layers  # upper first
        self._xattr = opaque_xattr
        self._upper_opaque = upper_opaque  # keys the applier marked in this upper

    def resolve(self, parts: list[str]) -> list[str]:
        """The symlink-free path ``parts`` names in the merged view; components from
        the first missing or non-dir one on are kept (the caller creates them)."""
        canon: list[str] = []
        visible = self._root_layers()
        pending = list(reversed(parts))
        links = 0
        while pending:
            name = pending.pop()
            if name in ("", "."):
                continue
            if name == "..":  # clamped at the root
                if canon:
                    canon.pop()
                    visible = self._visible(canon)
                continue
            found = self._top(canon, name, visible)
            if found is not None and stat.S_ISLNK(found.st.st_mode):
                links += 1
                if links > paths.MAX_SYMLINKS:
                    raise UnsafeArchive(f"path {'/'.join(parts)!r}: too many symlinks")
                target = os.readlink(name, dir_fd=found.dirfd)
                if target.startswith("/"):
                    canon, visible = [], self._root_layers()
                pending.extend(reversed(target.split("/")))
                continue
            visible = self._below(canon, name, found, visible)
            canon.append(name)
            if len(canon) > paths.MAX_DEPTH:  # symlinks can lead deeper than the name
                raise UnsafeArchive(f"path {'/'.join(parts)[:200]!r}: nested deeper than "
                                    f"{paths.MAX_DEPTH} dirs")
        return canon

    def lower_entry(self, parts: list[str]) -> Found | None:
        """The lower layers' entry at the symlink-free path ``parts``, if one shows."""
        visible = [i for i in self._visible(parts[:-1]) if i > 0]
        return self._top(parts[:-1], parts[-1], visible)

    def _root_layers(self) -> list[int]:
        """The layers merged at the root: only the upper once this layer made its root
        opaque (the lower layers' entries are then whited out, apply.py)."""
        return [0] if "" in self._upper_opaque else list(range(len(self.layers)))

    def lower_root_names(self) -> dict[str, Found]:
        """What the lower layers show at the root, ignoring this layer entirely."""
        out: dict[str, Found] = {}
        hidden: set[str] = set()
        for idx in range(1, len(self.layers)):
            rootfd = self.layers[idx].rootfd
            for name in os.listdir(rootfd):
                if name in out or name in hidden:
                    continue
                st = lstat_at(rootfd, name)
                if st is None:
                    continue
                if is_whiteout_dev(st):
                    hidden.add(name)
                else:
                    out[name] = Found(idx, rootfd, st)
        return out

    def _visible(self, canon: list[str]) -> list[int]:
        """The layers whose dir at ``canon`` is part of the merged dir."""
        visible = self._root_layers()
        for i, name in enumerate(canon):
            visible = self._below(canon[:i], name, self._top(canon[:i], name, visible),
                                  visible)
        return visible

    def _top(self, prefix: list[str], name: str, visible: list[int]) -> Found | None:
        for idx in visible:
            dfd = self.layers[idx].dir(prefix)
            st = lstat_at(dfd, name) if dfd is not None else None
            if st is None:
                continue
            return None if is_whiteout_dev(st) else Found(idx, dfd, st)  # type: ignore[arg-type]
        return None

    def _below(self, prefix: list[str], name: str, found: Found | None,
               visible: list[int]) -> list[int]:
        """The layers merged into dir ``prefix/name`` whose top entry is ``found``."""
        if found is None or not stat.S_ISDIR(found.st.st_mode):
            return []
        out = [found.layer]
        for idx in visible[visible.index(found.layer) + 1:]:
            if self._opaque(out[-1], prefix, name):
                break
            dfd = self.layers[idx].dir(prefix)
            st = lstat_at(dfd, name) if dfd is not None else None
            if st is None:
                continue
            if not stat.S_ISDIR(st.st_mode):
                break  # a whiteout or a non-dir hides the rest
            out.append(idx)
        return out

    def _opaque(self, idx: int, prefix: list[str], name: str) -> bool:
        if idx == 0:
            return "/".join([*prefix, name]) in self._upper_opaque
        dfd = self.layers[idx].dir(prefix)
        try:
            return os.getxattr(f"/proc/self/fd/{dfd}/{name}", self._xattr,
                               follow_symlinks=False) == b"y"
        except OSError:
            return False
