"""What an active snapshot changed against its parent: the differ's first pass.

The result is a function of the two merged trees only (the parent chain's and the active
snapshot's), so an overlay upper and a flattened copy of the same changes give the same
entries (and the same tar bytes):

* an entry is added (A) when the parent has nothing at its path, changed (C) when its
  type, mode, owner, mtime, size, link target, device number or xattrs differ (for an
  overlay upper entry whose metadata all match, its content is compared too);
* a path the parent has and the new tree lacks is deleted (D): a whiteout, or
  ``DIR/.wh..wh..opq`` when every name the parent had in DIR is gone (what
  ``rm -rf DIR; mkdir DIR`` leaves, which overlayfs marks opaque);
* a dir is in the layer when its own metadata changed or it holds a change (containerd's
  overlay differ and docker's ``changes`` report it as C the same way);
* names of one inode stay one inode: when one is in the layer, all its names in the new
  tree are (the applier makes the later ones hardlinks to the first).

With an overlay upper only the upper is walked: a name it lacks shows the parent's entry
unchanged, except under an opaque dir, whose upper subtree is the whole dir.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

from ociimg.fsutil import walk_at
from ociimg.layers.fsops import DIR_OPEN
from ociimg.layers.lowertree import LowerTree, Old
from ociimg.layers.ondisk import OnDisk

OPAQUE_MARKER = ".wh..wh..opq"
WHITEOUT_PREFIX = ".wh."
_CHUNK = 1 << 20


@dataclass(slots=True)
class Entry:
    parts: tuple[str, ...]
    kind: str  # "A", "C", "D" (a whiteout) or "O" (an opaque marker)
    st: os.stat_result | None = None
    xattrs: dict[str, bytes] = field(default_factory=dict)
    link: str | None = None  # a symlink's target


@dataclass(slots=True)
class _Dir:
    entry: Entry | None  # None for the root
    complete: bool  # the new tree's dir holds all of the merged dir
    old: dict[str, Old]  # the parent's entries in this dir
    seen: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    changed: bool = False


@dataclass
class ChangeSet:
    entries: list[Entry]  # tar order: sorted by path, parents first
    deleted: list[tuple[str, ...]]  # every deleted path (docker diff lists them all)


class _Walk:
    def __init__(self, new: OnDisk, lower: LowerTree, complete_root: bool) -> None:
        self.new = new
        self.lower = lower
        self.emitted: dict[tuple[str, ...], Entry] = {}
        self.dirs: dict[tuple[str, ...], Entry] = {}
        self.links: dict[tuple[int, int], list[Entry]] = {}
        self.deleted: list[tuple[str, ...]] = []
        self.stack = [_Dir(None, complete_root, lower.children(()))]

    def visit(self, dirfd: int, name: str, st: os.stat_result, rel: list[str]) -> bool:
        ctx = self.stack[-1]
        if stat.S_ISSOCK(st.st_mode):
            return False  # a tar cannot hold one (docker and containerd skip them too)
        if self.new.is_whiteout(st):
            if not ctx.complete and name in ctx.old:
                ctx.deleted.add(name)
            return False
        parts = (*rel, name)
        try:
            entry = self._entry(dirfd, name, st, parts, ctx.old.get(name))
        except FileNotFoundError:
            return False  # gone since it was listed: as if never there
        ctx.seen.add(name)
        old = ctx.old.get(name)
        if stat.S_ISDIR(st.st_mode):
            self.dirs[parts] = entry
            same_kind = old is not None and stat.S_ISDIR(old.st.st_mode)
            child = _Dir(entry, ctx.complete or not same_kind or self.new.is_opaque(dirfd, name),
                         self.lower.children(parts) if same_kind else {})
            child.changed = not same_kind or self._differs(dirfd, name, entry, old, parts)
            self.stack.append(child)
            return True
        if old is None or self._differs(dirfd, name, entry, old, parts):
            self.emitted[parts] = entry
        if st.st_nlink > 1:
            self.links.setdefault((st.st_dev, st.st_ino), []).append(entry)
        return False

    def leave(self, dirfd: int, name: str, st: os.stat_result, rel: list[str]) -> None:
        ctx = self.stack.pop()
        self._close_dir(ctx, (*rel, name))

    def finish(self) -> ChangeSet:
        self._close_dir(self.stack.pop(), ())
        for names in self.links.values():
            if len(names) > 1 and any(e.parts in self.emitted for e in names):
                for e in names:
                    self.emitted.setdefault(e.parts, e)
        for parts in list(self.emitted):
            for i in range(len(parts) - 1, 0, -1):  # deepest first: stop at one that is in
                up = parts[:i]
                if up in self.emitted:
                    break
                self.emitted[up] = self.dirs[up]
        entries = sorted(self.emitted.values(), key=lambda e: path_order(e.parts))
        return ChangeSet(entries, sorted(self.deleted, key=path_order))

    def _close_dir(self, ctx: _Dir, parts: tuple[str, ...]) -> None:
        if ctx.complete:
            ctx.deleted |= set(ctx.old) - ctx.seen
        if ctx.deleted:
            self.deleted.extend((*parts, n) for n in ctx.deleted)
            if ctx.deleted == set(ctx.old):
                marker = (*parts, OPAQUE_MARKER)
                self.emitted[marker] = Entry(marker, "O")
            else:
                for n in ctx.deleted:
                    wh = (*parts, WHITEOUT_PREFIX + n)
                    self.emitted[wh] = Entry(wh, "D")
        if ctx.changed and ctx.entry is not None:
            self.emitted[parts] = ctx.entry

    def _entry(self, dirfd: int, name: str, st: os.stat_result, parts: tuple[str, ...],
               old: Old | None) -> Entry:
        path = f"/proc/self/fd/{dirfd}/{name}"
        names = _xattr_names(path)
        self.new.check_self_contained(names, "/" + "/".join(parts))
        link = os.readlink(name, dir_fd=dirfd) if stat.S_ISLNK(st.st_mode) else None
        return Entry(parts, "A" if old is None else "C", st, read_xattrs(path, names), link)

    def _differs(self, dirfd: int, name: str, new: Entry, old: Old,
                 parts: tuple[str, ...]) -> bool:
        a, b = new.st, old.st
        assert a is not None
        if stat.S_IFMT(a.st_mode) != stat.S_IFMT(b.st_mode) or \
                stat.S_IMODE(a.st_mode) != stat.S_IMODE(b.st_mode) or \
                (a.st_uid, a.st_gid, a.st_mtime_ns) != (b.st_uid, b.st_gid, b.st_mtime_ns):
            return True
        kind = stat.S_IFMT(a.st_mode)
        if kind == stat.S_IFREG and a.st_size != b.st_size:
            return True
        if kind in (stat.S_IFCHR, stat.S_IFBLK) and a.st_rdev != b.st_rdev:
            return True
        with self.lower.parent_of(parts, old) as pfd:
            if pfd is None:
                return True
            if kind == stat.S_IFLNK and os.readlink(name, dir_fd=pfd) != new.link:
                return True
            if read_xattrs(f"/proc/self/fd/{pfd}/{name}") != new.xattrs:
                return True
            # Same metadata: an overlay upper file was copied up (opened for writing, say)
            # and may hold the same bytes; a flattened copy is trusted like containerd's
            # double walk, except where mtimes have no sub-second part to tell by.
            if kind == stat.S_IFREG and (self.new.overlay or a.st_mtime_ns % 10**9 == 0):
                return not _same_content(dirfd, pfd, name)
        return False


def path_order(parts: tuple[str, ...]) -> str:
    """Sort key: by path, component by component (parents first, "a/b" before "a.b").
    NUL never occurs in a name and sorts below every character; one string compares
    far faster than a tuple of thousands of components."""
    return "\0".join(parts)


def _xattr_names(path: str) -> list[str]:
    try:
        return os.listxattr(path, follow_symlinks=False)
    except FileNotFoundError:
        raise
    except OSError:
        return []


def read_xattrs(path: str, keys: list[str] | None = None) -> dict[str, bytes]:
    """The xattrs an image gets from the entry at ``path`` (never followed)."""
    if keys is None:
        keys = _xattr_names(path)
    out = {}
    for key in sorted(keys):
        name = OnDisk.image_xattr(key)
        if name is None:
            continue
        try:
            out[name] = os.getxattr(path, key, follow_symlinks=False)
        except OSError:
            continue
    return out


def _same_content(new_dir: int, old_dir: int, name: str) -> bool:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    a = os.open(name, flags, dir_fd=new_dir)
    try:
        b = os.open(name, flags, dir_fd=old_dir)
        try:
            while True:
                x, y = os.read(a, _CHUNK), os.read(b, _CHUNK)
                if x != y:
                    return False
                if not x:
                    return True
        finally:
            os.close(b)
    finally:
        os.close(a)


def collect_changes(root: os.PathLike[str] | str, new: OnDisk, lower: LowerTree, *,
                    complete: bool) -> ChangeSet:
    """The changes of the tree at ``root`` (an upper when ``new`` is the overlay format,
    else a whole flattened tree: ``complete``) against ``lower``."""
    walk = _Walk(new, lower, complete)
    fd = os.open(root, DIR_OPEN)
    try:
        walk_at(fd, walk.visit, walk.leave)
    finally:
        os.close(fd)
    return walk.finish()
