"""How the applier writes one layer in each on-disk format (umoci's ``OnDiskFormat``).

The applier (:mod:`ociimg.layers.apply`) is the format-independent algorithm: it
parses entries, writes their data and metadata and applies the changeset semantics.
What differs between a flattened tree and an overlayfs upperdir is asked of the
format object it holds, built from the :class:`OnDisk` value:

* where an entry goes (``entry_path``/``whiteout_path``: an upper resolves parent
  paths through the lower layers and creates the dirs they cover, ``prepare_parents``);
* how a whiteout hides the layers below (``whiteout``: removal, or a whiteout device)
  and how an opaque dir does (``opaque_applies``, ``mark_opaque``, ``forget_dir``);
* where a hardlink's target is (``link_target``, ``link_target_dir``: a lower file is
  copied up into the upper);
* the layer root (an upper inherits the lower root and hides it at ``finish``).

:class:`DirFormat` is here; :class:`ociimg.layers.upperdir.OverlayFormat` is the
upperdir one.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Protocol

from ociimg.layers import paths
from ociimg.layers.ondisk import OnDisk
from ociimg.layers.upperdir import OverlayFormat

if TYPE_CHECKING:
    from ociimg.layers.apply import ApplyOptions


class Host(Protocol):
    """What a format uses of the applier that holds it."""

    res: paths.Resolver

    def warn(self, key: str, message: str) -> None: ...
    def replace(self, pfd: int, name: str, *, keep_dir: bool = False,
                key: str | None = None) -> os.stat_result | None: ...
    def remember_times(self, parts: list[str], fd: int) -> None: ...
    def defer_dir(self, parts: list[str], mode: int, atime: int, mtime: int) -> None: ...


class ApplyFormat(Protocol):
    def close(self) -> None: ...
    def sweep(self) -> None: ...
    def entry_path(self, parts: list[str]) -> list[str]: ...
    def whiteout_path(self, parts: list[str]) -> list[str]: ...
    def prepare_parents(self, parent: list[str]) -> None: ...
    def whiteout(self, parent: list[str], name: str, path: str) -> None: ...
    def opaque_applies(self, parent: list[str]) -> bool: ...
    def mark_opaque(self, fd: int, key: str) -> None: ...
    def forget_dir(self, path: str) -> None: ...
    def link_target(self, target: list[str]) -> list[str]: ...
    def link_target_dir(self, target: list[str]) -> int | None: ...
    def finish(self) -> None: ...


class DirFormat:
    """A flattened tree: the layers below are on disk in the same tree, so a whiteout
    deletes, an opaque dir is emptied of them (by the applier's prune) and paths and
    link targets are plain paths of the tree."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.res = host.res

    def close(self) -> None:
        pass

    def sweep(self) -> None:
        pass

    def entry_path(self, parts: list[str]) -> list[str]:
        return parts  # the resolver's create walk makes missing parents

    def whiteout_path(self, parts: list[str]) -> list[str]:
        return parts

    def prepare_parents(self, parent: list[str]) -> None:
        pass

    def whiteout(self, parent: list[str], name: str, path: str) -> None:
        pfd = self.res.dir(parent)
        if pfd is not None:
            self.host.remember_times(parent, pfd)
            self.host.replace(pfd, name, key=path)

    def opaque_applies(self, parent: list[str]) -> bool:
        return not parent or self.res.dir(parent) is not None

    def mark_opaque(self, fd: int, key: str) -> None:
        pass  # the prune deleted what lay below; nothing marks it

    def forget_dir(self, path: str) -> None:
        pass

    def link_target(self, target: list[str]) -> list[str]:
        return target

    def link_target_dir(self, target: list[str]) -> int | None:
        return self.res.dir(target[:-1])

    def finish(self) -> None:
        pass


def apply_format(host: Host, ondisk: OnDisk, options: ApplyOptions) -> ApplyFormat:
    if ondisk.overlay:
        return OverlayFormat(host, ondisk, options.lowers, options.rootless)
    return DirFormat(host)
