"""The safe tar applier: one layer tar stream → a directory tree.

Headers are only *parsed* (:mod:`ociimg.layers.members`, with tarfile's parser for
anything unusual); nothing goes through ``tarfile.extract*`` (its filters drop setuid
bits and ownership and have had many escapes: python/cpython#135034). Every write is a
dir-fd-relative syscall under a parent resolved by :mod:`ociimg.layers.paths`, so no
entry, symlink or hardlink leads out of the root.

This module is the format-independent algorithm. The on-disk format (umoci's
``DirRootfs``/``OverlayfsRootfs``: a flattened tree, or an overlayfs upperdir holding
only this layer) is the object it holds as ``fmt`` (:mod:`ociimg.layers.formats`):
where an entry and a hardlink target go, how a whiteout and an opaque dir hide the
layers below.

The changeset semantics (image-spec layer.md), one definition for both formats; a
flattened unpack, an overlay mount of the snapshots, their user-space merge and umoci
must agree (tests/integration/test_changeset_semantics.py, a property test):

* An entry replaces what is at its path; a dir over a dir keeps the dir and its
  content and takes the entry's attributes.
* Parent dirs are implicit: a missing one is created (0755), an existing dir is kept as
  it is, a non-dir in the way is replaced. In an upper, an implicit dir copies the
  lower dir's attributes, never overlayfs's marks (a copied opaque mark hid the
  layers below from every later layer that omits the dir entry).
* ``.wh.NAME`` deletes NAME from the layers below; ``DIR/.wh..wh..opq`` deletes
  everything the layers below have in DIR, the layer root included. Both hide lower
  layers only (this layer's entries stay, whatever the tar order) and both only delete:
  nothing is created for them, and a marked dir does not become this layer's entry.
* An opaque layer *root* cannot be an xattr in an upper (overlayfs never looks for one
  on a layer root, so the mark hid nothing when mounted while a flattened unpack
  deleted everything). The snapshot still stacks on the lower ones (chain IDs and
  containers share them); it hides them with what overlayfs honours: a whiteout for
  each name the lower roots show and this layer lacks, and an opaque mark on each
  root-level dir of this layer (:meth:`OverlayFormat._hide_lower_root`).
* An inode cannot span snapshots: a hardlink to a lower file copies the file up
  together with the other names its inode shows in the merged view (as links to the
  copy), so the names stay one inode as in the flattened tree.
"""

from __future__ import annotations

import gc
import io
import os
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ociimg.digest import Digest, HashingReader
from ociimg.errors import InvalidDocument, UnsafeArchive
from ociimg.fsutil import walk_at
from ociimg.layers import fsops, paths
from ociimg.layers.entrymeta import EntryMeta
from ociimg.layers.filedata import write_data, write_sparse
from ociimg.layers.formats import apply_format
from ociimg.layers.fsops import (
    DIR_OPEN,
    FILE_CREATE,
)
from ociimg.layers.members import MemberReader
from ociimg.layers.ondisk import OnDisk, OnDiskFormat
from ociimg.layers.stream import APPLY_CHUNK, APPLY_DEPTH, ForwardReader, Prefetcher
from ociimg.layers.tarinfo import LayerTarInfo, mtime_ns

# uid_t is unsigned 32-bit and chown(2) takes (uid_t)-1 as "leave unchanged": a tar uid
# of 2^32-1 would leave a setuid file owned by root, and larger ones wrap (containerd
# CVE-2024-40635). Out-of-range ids are refused, never wrapped.
MAX_ID = 2**32 - 2
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"


@dataclass(frozen=True, slots=True)
class ApplyOptions:
    format: OnDiskFormat = OnDiskFormat.DIR
    rootless: bool = field(default_factory=lambda: os.geteuid() != 0)
    # OVERLAY only: the snapshot dirs below this layer, top first; used for
    # hardlinks to lower files and the attributes of implicit parent dirs.
    lowers: tuple[Path, ...] | None = None
    # "auto" (openat2 when the kernel has it), "openat2" or "walk"; tests force each.
    resolver: str = "auto"
    # OVERLAY only: mark opaque dirs with user.overlay.* for a rootless overlay mounted
    # with "userxattr" (Linux >= 5.11) instead of trusted.overlay.* (CAP_SYS_ADMIN).
    userxattr: bool = False
    # Decompression-bomb caps (containerd CVE-2023-25153): entries per layer, and the sum of the
    # file sizes a layer declares (None: no cap; the disk is the limit).
    max_entries: int = 10_000_000
    max_file_bytes: int | None = None


@dataclass(slots=True)
class ApplyResult:
    diff_id: Digest
    size: int
    entries: int
    warnings: list[str] = field(default_factory=list)


def apply_layer(root: Path, stream: BinaryIO, options: ApplyOptions = ApplyOptions()
                ) -> ApplyResult:
    """Apply the uncompressed tar ``stream`` onto ``root``; returns its diff ID.

    The diff ID covers the *whole* stream, including bytes after the tar's end
    blocks (image-spec config.md, ``rootfs.diff_ids``): the stream is drained to EOF.
    """
    hashing = HashingReader(stream)
    rootfd = os.open(root, DIR_OPEN)
    applier = _Applier(rootfd, options)
    # Tens of thousands of short-lived objects per layer and no reference cycles: the
    # cyclic collector only cost time (~3% of the unpack's CPU).
    collecting = gc.isenabled()
    gc.disable()
    try:
        with Prefetcher(hashing, APPLY_CHUNK, APPLY_DEPTH) as ahead:
            applier.stream = ForwardReader(ahead)
            _apply_entries(applier)
            applier.finish()
            ahead.drain()
    finally:
        if collecting:
            gc.enable()
        applier.close()
        os.close(rootfd)
    return ApplyResult(hashing.digest(), hashing.count, applier.entries, applier.warnings)


def _apply_entries(applier: _Applier) -> None:
    assert applier.stream is not None
    try:
        # Mode "r:" on a forward-only reader: MemberReader decodes the common headers in
        # place and hands the rest to tarfile; file data is copied by us straight from
        # the prefetched chunks.
        with tarfile.open(fileobj=applier.stream, mode="r:",
                          tarinfo=LayerTarInfo) as tf:
            members = MemberReader(tf, applier.stream.source)
            while (info := members.next()) is not None:
                applier.apply_entry(info, tf)
                tf.members.clear()  # tarfile keeps the headers it read; we need none
            if not applier.stream.ended_at(tf.offset):
                raise InvalidDocument(f"layer tar: truncated or corrupt header at byte "
                                      f"{tf.offset} (no end-of-archive block)",
                                      hint="the layer is truncated or damaged")
    except (tarfile.TarError, UnicodeError, io.UnsupportedOperation) as exc:
        raise InvalidDocument(f"layer tar: {exc}",
                              hint="the layer is not a valid tar archive") from exc


class _Applier:
    """State of one layer's application: resolver, this layer's paths, deferred work."""

    def __init__(self, rootfd: int, options: ApplyOptions) -> None:
        self.options = options
        self.ondisk = OnDisk(options.format, options.userxattr)
        self.meta = EntryMeta(self.ondisk, options.rootless, self.warn)
        use = {"auto": None, "openat2": True, "walk": False}[options.resolver]
        self.res = paths.Resolver(rootfd, use_openat2=use)
        self.entries = 0
        self._file_bytes = 0
        self.warnings: list[str] = []
        self._warned: set[str] = set()
        self._layer_paths: set[str] = set()  # every path this layer created (and parents)
        # parts, record number, mode, atime, mtime. The number tells a record from before
        # its dir was pruned (a helper dir of an upper, say) from one of a new dir there.
        self._dirs: list[tuple[list[str], int, int, int, int]] = []
        self._pruned: dict[str, int] = {}  # path -> record number when it was removed
        self._seq = 0  # numbers records and prunes in order
        self._entry_key = ""  # the path of the entry being applied
        self._links: list[tuple[list[str], list[str], str]] = []  # deferred hardlinks
        # Dirs we changed, by inode: a path may reach one through a symlink.
        self._times: dict[tuple[int, int], tuple[list[str], int, int]] = {}
        self._timed: set[str] = set()
        self._explicit: set[str] = set()  # dirs this layer has an entry for (finish)
        self.stream: ForwardReader | None = None
        # Last: an upper's root starts as a copy of the lower one.
        self.fmt = apply_format(self, self.ondisk, options)

    def close(self) -> None:
        self.res.close()
        self.fmt.close()

    def _sweep(self) -> None:
        """Close the fds the resolvers retired; between entries, when none is in use."""
        self.res.sweep()
        self.fmt.sweep()

    def warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.warnings.append(message)

    # -- dispatch ---------------------------------------------------------------
    def apply_entry(self, info: tarfile.TarInfo, tf: tarfile.TarFile) -> None:
        self.entries += 1
        self._check_limits(info)
        self._sweep()
        if "\0" in info.name or "\0" in info.linkname:  # PAX path/linkpath may hold one
            raise InvalidDocument(f"tar entry {info.name[:200]!r}: NUL byte in its path or "
                                  "link target", hint="the layer is broken or hostile")
        parts = paths.split_name(info.name)
        if not parts:
            if not info.isdir():  # umoci CVE-2021-29136
                raise UnsafeArchive(f"tar entry {info.name!r}: the root must stay a directory")
            self._set_dir_meta(self.res.rootfd, ".", [], info)
            return
        base = parts[-1]
        if base.startswith(WHITEOUT_PREFIX):
            parts = self.fmt.whiteout_path(parts)
            self._apply_whiteout(info.name, parts[:-1], base)
            return
        parts = self.fmt.entry_path(parts)
        self._note_layer_path(parts)
        self._entry_key = "/".join(parts)
        pfd = self._parent_dir(parts[:-1])
        try:
            self._create(pfd, parts, info, tf)
        except OSError as exc:
            raise OSError(exc.errno, f"unpack entry {info.name[:300]}: {exc.strerror}") from exc

    def _create(self, pfd: int, parts: list[str], info: tarfile.TarInfo,
                tf: tarfile.TarFile) -> None:
        name = parts[-1]
        if info.isreg():
            self._create_file(pfd, name, info, tf)
        elif info.isdir():
            self._create_dir(pfd, parts, info)
        elif info.issym():
            if not info.linkname:  # Linux has no empty symlinks (ENOENT)
                raise InvalidDocument(f"tar entry {info.name[:200]!r}: symlink without a target",
                                      hint="the layer is broken or hostile")
            self.replace(pfd, name)
            os.symlink(info.linkname, name, dir_fd=pfd)
            self.meta.set_at(pfd, name, info, symlink=True)
        elif info.islnk():
            self._create_hardlink(parts, paths.split_name(info.linkname), info.name)
        elif info.ischr() or info.isblk():
            self._create_device(pfd, name, info)
        elif info.isfifo():
            self.replace(pfd, name)
            os.mkfifo(name, 0o600, dir_fd=pfd)
            self.meta.set_at(pfd, name, info)
        else:
            self.warn(f"type-{info.type!r}", f"skipped tar entry {info.name!r} of "
                      f"unsupported type {info.type!r}")

    def _check_limits(self, info: tarfile.TarInfo) -> None:
        if not (0 <= info.uid <= MAX_ID and 0 <= info.gid <= MAX_ID):
            self._refuse_ids(info)
        if self.entries > self.options.max_entries:
            raise UnsafeArchive(f"layer tar: more than {self.options.max_entries} entries",
                                hint="raise ApplyOptions.max_entries if the image is genuine")
        if info.isreg():
            self._file_bytes += info.size
            cap = self.options.max_file_bytes
            if cap is not None and self._file_bytes > cap:
                raise UnsafeArchive(f"layer tar: files exceed {cap} bytes at {info.name!r}",
                                    hint="raise ApplyOptions.max_file_bytes if genuine")

    @staticmethod
    def _refuse_ids(info: tarfile.TarInfo) -> None:
        for what, value in (("uid", info.uid), ("gid", info.gid)):
            if not 0 <= value <= MAX_ID:
                raise UnsafeArchive(f"tar entry {info.name!r}: {what} {value} is out of range "
                                    f"(0..{MAX_ID})", hint="the layer is hostile or broken")

    def _parent_dir(self, parent: list[str]) -> int:
        """The entry's parent dir, created if missing; its times are remembered first."""
        pfd = self.res.dir(parent)
        if pfd is None:
            for i in range(len(parent) - 1, -1, -1):  # the deepest ancestor that exists
                afd = self.res.dir(parent[:i])
                if afd is not None:
                    self.remember_times(parent[:i], afd)
                    break
            pfd = self.res.dir(parent, create=True)
            assert pfd is not None
        self.remember_times(parent, pfd)
        return pfd

    def remember_times(self, parts: list[str], fd: int) -> None:
        """Adding or removing a child changes a dir's mtime; put it back at the end,
        like umoci restoring the parent's metadata after each entry (§C1 #11)."""
        key = "/".join(parts)
        if key in self._timed:
            return  # one fstat per dir path and layer, not per entry
        self._timed.add(key)
        if key in self._explicit:
            # This layer's entry for the dir sets its times last (finish), over any
            # remembered ones: nothing to remember (a fstat here, an openat2, fstat and
            # utime in finish, per dir).
            return
        st = os.fstat(fd)
        self._times.setdefault((st.st_dev, st.st_ino), (parts, st.st_atime_ns, st.st_mtime_ns))

    def _note_layer_path(self, parts: list[str]) -> None:
        for i in range(len(parts), 0, -1):
            key = "/".join(parts[:i])
            if key in self._layer_paths:
                break
            self._layer_paths.add(key)

    def replace(self, pfd: int, name: str, *, keep_dir: bool = False,
                 key: str | None = None) -> os.stat_result | None:
        """Clear the way for a new entry (image-spec layer.md: dir+dir keeps the dir).
        ``key``: the path of ``name`` (default: the current entry's)."""
        st = fsops.lstat_at(pfd, name)
        if st is None or (keep_dir and stat.S_ISDIR(st.st_mode)):
            return st
        if paths.remove_at(pfd, name):
            self.res.invalidate()
            if stat.S_ISDIR(st.st_mode):
                self._forget_dir(self._entry_key if key is None else key)
        return st

    def _forget_dir(self, path: str) -> None:
        """A dir (and all below it) went away: its deferred mode/times and opaque mark
        must not apply to a new dir made at the same path later in the layer."""
        self._pruned[path] = self._next_seq()
        self.fmt.forget_dir(path)

    # -- entry types ------------------------------------------------------------
    def _create_file(self, pfd: int, name: str, info: tarfile.TarInfo,
                     tf: tarfile.TarFile) -> None:
        mode = info.mode & 0o7777
        # A plain mode is given to open(2) directly; setuid/setgid/sticky files are made
        # 0600 and get their mode after chown (chown clears setuid: §C1 #13).
        plain = not mode & 0o7000
        create_mode = mode if plain else 0o600
        try:
            fd = os.open(name, FILE_CREATE, create_mode, dir_fd=pfd)
        except FileExistsError:
            self.replace(pfd, name)
            fd = os.open(name, FILE_CREATE, create_mode, dir_fd=pfd)
        try:
            assert self.stream is not None
            self.stream.seek(info.offset_data)
            if info.sparse is None:
                write_data(self.stream.source, fd, info.size)
            else:  # the entry's stored data ends where tarfile reads the next header
                write_sparse(self.stream.source, fd, info, tf.offset)
            if plain:
                self.meta.settle_owner_mode(fd, info, mode)
            else:
                self.meta.chown(fd, None, info, symlink=False)
                os.chmod(fd, mode)
            self.meta.set_xattrs(fd, info, existing=False)
            os.utime(fd, ns=(mtime_ns(info, "atime"), mtime_ns(info)))
        finally:
            os.close(fd)

    def _create_dir(self, pfd: int, parts: list[str], info: tarfile.TarInfo) -> None:
        name = parts[-1]
        st = self.replace(pfd, name, keep_dir=True)
        existed = st is not None and stat.S_ISDIR(st.st_mode)
        if not existed:
            depth = self.res.child_depth(pfd, "/".join(parts))
            os.mkdir(name, 0o700, dir_fd=pfd)
        fd = os.open(name, DIR_OPEN, dir_fd=pfd)
        try:
            if not existed:
                self.res.remember_depth(fd, depth)
            if st is not None and not existed:
                # Deleted (a whiteout, or a non-dir of this layer over the lower dir)
                # then re-created in one layer: the new dir must hide the lower one
                # entirely (in an upperdir: opaque).
                self.fmt.mark_opaque(fd, "/".join(parts))
            self._set_dir_meta(fd, None, parts, info, existing=existed)
        except BaseException:
            os.close(fd)
            raise
        # Its entries come next (tars list a dir before its content): the resolver keeps
        # this fd for them instead of resolving the path again (openat2 + close per dir).
        if not self.res.adopt(parts, fd):
            os.close(fd)

    def _set_dir_meta(self, fd: int, name: str | None, parts: list[str],
                      info: tarfile.TarInfo, existing: bool = True) -> None:
        self._explicit.add("/".join(parts))
        self.meta.chown(fd, None, info, symlink=False)
        self.meta.set_xattrs(fd, info, existing=existing)
        # Mode and times last, deepest first: adding children changes a dir's mtime,
        # and a 0555 dir must stay writable until its children exist (§C1 #11, #14).
        self.defer_dir(parts, info.mode & 0o7777, mtime_ns(info, "atime"), mtime_ns(info))

    def defer_dir(self, parts: list[str], mode: int, atime: int, mtime: int) -> None:
        """Set the dir's mode and times at the end of the layer."""
        self._dirs.append((parts, self._next_seq(), mode, atime, mtime))

    def _create_device(self, pfd: int, name: str, info: tarfile.TarInfo) -> None:
        if self.options.rootless:
            self.warn("devices", "device nodes skipped: creating them needs CAP_MKNOD "
                      "(rootless unpack)")
            return
        if not (0 <= info.devmajor < 1 << 12 and 0 <= info.devminor < 1 << 20):
            # Linux dev_t: 12-bit major, 20-bit minor (MKDEV); larger ones raised
            # OverflowError or EINVAL from mknod.
            raise InvalidDocument(f"tar entry {info.name[:200]!r}: device number "
                                  f"{info.devmajor}:{info.devminor} is out of range",
                                  hint="the layer is broken or hostile")
        self.replace(pfd, name)
        kind = stat.S_IFCHR if info.ischr() else stat.S_IFBLK
        os.mknod(name, kind | 0o600, os.makedev(info.devmajor, info.devminor), dir_fd=pfd)
        self.meta.set_at(pfd, name, info)

    def _create_hardlink(self, parts: list[str], target: list[str], entry: str) -> None:
        if not target:
            raise UnsafeArchive(f"hardlink {entry!r}: target is the root")
        target = self.fmt.link_target(target)
        tpfd = self.fmt.link_target_dir(target)
        if tpfd is None or fsops.lstat_at(tpfd, target[-1]) is None:
            self._links.append((parts, target, entry))  # target may come later (§C1 #6)
            return
        tst = fsops.lstat_at(tpfd, target[-1])
        assert tst is not None
        if stat.S_ISDIR(tst.st_mode):
            raise UnsafeArchive(f"hardlink {entry!r}: target {'/'.join(target)!r} is a directory")
        pfd = self.res.dir(parts[:-1], create=True)
        assert pfd is not None
        cur = fsops.lstat_at(pfd, parts[-1])
        if cur is not None and (cur.st_dev, cur.st_ino) == (tst.st_dev, tst.st_ino):
            return
        self.replace(pfd, parts[-1], key="/".join(parts))  # §C1 #7
        tpfd = self.fmt.link_target_dir(target)  # the replace may have invalidated fds
        if tpfd is None or fsops.lstat_at(tpfd, target[-1]) is None:  # it was below the link
            raise UnsafeArchive(f"hardlink {entry!r}: target {'/'.join(target)!r} was "
                                "removed by replacing the link's own path")
        os.link(target[-1], parts[-1], src_dir_fd=tpfd, dst_dir_fd=pfd, follow_symlinks=False)

    # -- whiteouts ----------------------------------------------------------------
    def _apply_whiteout(self, entry: str, parent: list[str], base: str) -> None:
        if base == OPAQUE_MARKER:
            self._apply_opaque(parent)
            return
        name = base[len(WHITEOUT_PREFIX):]
        if name in ("", ".", ".."):  # image-spec layer.md: a bare .wh. SHOULD error
            raise UnsafeArchive(f"tar entry {entry!r}: whiteout without a name")
        path = "/".join([*parent, name])
        if path in self._layer_paths:
            # Whiteouts hide lower layers only (layer.md "Whiteouts"): this layer's
            # entry stays, but the lower dir it re-created is hidden in any tar order.
            pfd = self.res.dir(parent)
            st = fsops.lstat_at(pfd, name) if pfd is not None else None
            if st is not None and stat.S_ISDIR(st.st_mode):
                self._apply_opaque([*parent, name])
            return
        self.fmt.whiteout(parent, name, path)

    def _apply_opaque(self, parent: list[str]) -> None:
        """``.wh..wh..opq``: hide all lower entries of the dir, whatever its tar position.

        Like a plain whiteout it only deletes: where no dir of that name exists (in this
        layer so far or below) there is nothing to hide, and no dir is made for it.
        """
        if not self.fmt.opaque_applies(parent):
            return
        key = "/".join(parent)
        self.fmt.prepare_parents(parent)
        # The dir exists (through symlinks too, like any parent), or in a standalone
        # upper is made; the marker's dir is never replaced.
        pfd = self.res.dir(parent, create=True)
        assert pfd is not None
        fd = os.open(".", DIR_OPEN, dir_fd=pfd)
        try:
            self.remember_times(parent, fd)
            # DIR: the lower layers' entries. OVERLAY: what the upper holds that is not
            # this layer's (whiteouts, dirs made to hold them, lower files copied up for
            # hardlinks): the mark hides the rest, as the flattened tree has it.
            self._prune_lower(fd, key)
            self.fmt.mark_opaque(fd, key)
        finally:
            os.close(fd)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _was_pruned(self, parts: list[str], made: int) -> bool:
        if not self._pruned:
            return False
        return any(self._pruned.get("/".join(parts[:i]), -1) > made
                   for i in range(1, len(parts) + 1))

    def _prune_lower(self, fd: int, key: str) -> None:
        """Delete what is under the dir but is not this layer's entry (nor leads to one)."""
        prefix = key + "/" if key else ""
        layer_paths = self._layer_paths

        def visit(dirfd: int, name: str, st: os.stat_result, rel: list[str]) -> bool:
            path = prefix + "/".join([*rel, name])
            if path in layer_paths:
                return stat.S_ISDIR(st.st_mode)  # keep it, prune below it
            paths.remove_at(dirfd, name)
            if stat.S_ISDIR(st.st_mode):
                self._forget_dir(path)
            return False

        # Only this layer's paths are descended into, and those are depth-checked.
        walk_at(fd, visit)
        self.res.invalidate()

    # -- end of layer -----------------------------------------------------------
    def finish(self) -> None:
        self.fmt.finish()  # before the times of dirs are put back
        for parts, target, entry in self._links:
            self._sweep()
            tpfd = self.fmt.link_target_dir(target)
            if tpfd is None or fsops.lstat_at(tpfd, target[-1]) is None:
                raise UnsafeArchive(f"hardlink {entry!r}: target {'/'.join(target)!r} does "
                                    "not exist in this layer or below")
            self._create_hardlink(parts, target, entry)
        self._links.clear()
        for (dev, ino), (parts, atime, mtime) in self._times.items():
            self._sweep()
            fd = self.res.dir(parts)
            st = os.fstat(fd) if fd is not None else None
            if st is not None and (st.st_dev, st.st_ino) == (dev, ino):
                os.utime(f"/proc/self/fd/{fd}", ns=(atime, mtime))  # an O_PATH fd
        # Explicit dir entries last: their tar times win over remembered ones.
        for parts, made, mode, atime, mtime in sorted(self._dirs, key=lambda d: -len(d[0])):
            self._sweep()
            pfd = self.res.dir(parts[:-1])
            if pfd is None:
                continue  # removed later in the same layer
            name = parts[-1] if parts else "."
            st = fsops.lstat_at(pfd, name)
            if st is None or not stat.S_ISDIR(st.st_mode) or self._was_pruned(parts, made):
                continue  # removed or replaced later in the same layer
            os.chmod(name, mode, dir_fd=pfd)
            os.utime(name, ns=(atime, mtime), dir_fd=pfd, follow_symlinks=False)
