"""Active snapshots: a writable (or read-only) tree over a committed chain, by key.

containerd's snapshotter model (``snapshots.Snapshotter``): ``prepare(key, parent)``
gives the mounts of a writable snapshot over the committed snapshot ``parent`` (a chain
ID), ``view`` a read-only one; ``commit`` turns its changes into a committed snapshot;
``remove`` drops it. ``snapshots/active/<key>/`` holds ``meta.json`` and, with overlayfs,
the ``upper/`` and ``work/`` dirs (plus an empty ``base/`` lower for a snapshot without
parent); without overlayfs, ``fs/``: a flattened copy of the parent chain, bind mounted.
Each is made in a temp dir and renamed, under a per-key lock, so a crash never leaves a
half-made snapshot that looks whole. The differ (:mod:`ociimg.layers.diff`) reads these.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ociimg.digest import Digest
from ociimg.errors import AlreadyExists, InvalidReference, NotFound, OciimgError
from ociimg.fsutil import atomic_write, fsync_dir, remove_tree
from ociimg.layers import overlay
from ociimg.layers.overlay import Mount
from ociimg.oskit.mountinfo import read_mountinfo
from ociimg.spec import canonical_json
from ociimg.store import locks

if TYPE_CHECKING:
    from ociimg.layers.snapshots import SnapshotStore

ACTIVE_DIR = "active"
MOUNTS_DIR = ".mnt"  # mount points of mounted(); gc only ever rmdir()s them
ACTIVE_META = "meta.json"
TMP_PREFIX = ".tmp-"
MAX_KEY = 128
# A key names a directory: one safe path component, never '.', '..' or a hidden name.
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
KIND_ACTIVE = "active"
KIND_VIEW = "view"
BACKEND_OVERLAY = "overlay"
BACKEND_COPY = "copy"  # a flattened copy, where overlayfs cannot be mounted


class SnapshotInUse(OciimgError):
    """An active snapshot cannot be removed while something has it mounted."""


@dataclass(frozen=True, slots=True)
class ActiveInfo:
    key: str
    parent: Digest | None
    kind: str  # "active" (writable) or "view" (read-only)
    labels: dict[str, str] = field(default_factory=dict)
    backend: str = BACKEND_OVERLAY
    lowers: tuple[Digest, ...] = ()  # the parent chain, bottom → top


def check_key(key: str) -> str:
    """A key is one path component: refused when it could name anything else."""
    if not isinstance(key, str) or not key or len(key) > MAX_KEY or \
            not _KEY.fullmatch(key) or ".." in key:
        raise InvalidReference(f"snapshot key {key[:80]!r}: not a valid key",
                               hint=f"use 1-{MAX_KEY} letters, digits, '_', '.' or '-', "
                                    "starting with a letter or digit")
    return key


def _check_labels(labels: dict[str, str] | None) -> dict[str, str]:
    labels = dict(labels or {})
    for k, v in labels.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise InvalidReference(f"snapshot label {k!r}: keys and values must be strings")
    return labels


def overlay_hardening_options() -> tuple[str, ...]:
    """``index=off``, ``redirect_dir=off`` and ``metacopy=off`` where the kernel knows them.

    A renamed lower dir (redirect_dir=on) and a metadata-only copy-up (metacopy=on)
    leave upper entries that are not self-contained: the differ would have to follow
    them into the lower layers. With index=on, a copied-up lower hardlink changes every
    name of the inode while the other names get no upper entry until they are looked up,
    so a diff of the upper would miss them. Turning all three off keeps every change an
    entry of the upper, whatever the host's module defaults; the differ still refuses a
    redirect or metacopy entry if it finds one.
    """
    params = Path("/sys/module/overlay/parameters")
    return tuple(f"{name}=off" for name in ("index", "redirect_dir", "metacopy")
                 if (params / name).exists())


class ActiveSnapshots:
    """The active half of a :class:`SnapshotStore` (which delegates to this)."""

    def __init__(self, store: SnapshotStore, *, use_overlay: bool | None = None) -> None:
        self.store = store
        self.root = store.path / ACTIVE_DIR
        self.use_overlay = overlay.overlay_supported() if use_overlay is None else use_overlay

    # --- paths and metadata -------------------------------------------------------

    def dir(self, key: str) -> Path:
        return self.root / check_key(key)

    def lock_path(self, key: str) -> Path:
        """The lock that orders the changes (and mounts) of active snapshot ``key``."""
        return self.store.path / ".locks" / f"active-{check_key(key)}.lock"

    def info(self, key: str) -> ActiveInfo:
        try:
            doc = json.loads((self.dir(key) / ACTIVE_META).read_bytes())
        except FileNotFoundError:
            raise NotFound(f"snapshot {key}: no such active snapshot") from None
        return _info_from(doc)

    def active(self) -> list[ActiveInfo]:
        out = []
        for entry in sorted(self.root.iterdir()) if self.root.is_dir() else ():
            if entry.name.startswith("."):
                continue
            try:
                out.append(_info_from(json.loads((entry / ACTIVE_META).read_bytes())))
            except (FileNotFoundError, ValueError, KeyError):
                continue
        return out

    # --- create -------------------------------------------------------------------

    def create(self, key: str, parent: Digest | None, kind: str,
               labels: dict[str, str] | None) -> list[Mount]:
        check_key(key)
        labels = _check_labels(labels)
        lowers = self.store.chain_of(parent) if parent is not None else []
        self.store._init()
        self.root.mkdir(exist_ok=True)
        backend = BACKEND_OVERLAY if self.use_overlay else BACKEND_COPY
        with locks.locked(self.lock_path(key)):
            final = self.root / key
            if final.exists():
                raise AlreadyExists(f"snapshot {key}: an active snapshot of that key exists",
                                    hint="remove it first, or use another key")
            tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=f"{TMP_PREFIX}{key}-"))
            try:
                self._populate(tmp, backend, kind, lowers)
                atomic_write(tmp / ACTIVE_META, canonical_json({
                    "key": key, "parent": None if parent is None else str(parent),
                    "lowers": [str(d) for d in lowers], "kind": kind, "labels": labels,
                    "backend": backend, "userxattr": self.store.userxattr,
                }))
                os.rename(tmp, final)
            except BaseException:
                remove_tree(tmp)
                raise
            fsync_dir(self.root)
        return self.mounts(key)

    def _populate(self, tmp: Path, backend: str, kind: str, lowers: list[Digest]) -> None:
        if backend == BACKEND_COPY:
            from ociimg.layers.flatten import merge_snapshots
            merge_snapshots([self.store.fs_dir(d) for d in lowers], tmp / "fs",
                            rootless=self.store.rootless, userxattr=self.store.userxattr)
            return
        if not lowers:
            (tmp / "base").mkdir(mode=0o755)
        if kind == KIND_ACTIVE:
            (tmp / "upper").mkdir(mode=0o755)
            (tmp / "work").mkdir(mode=0o700)

    # --- mounts -------------------------------------------------------------------

    def mounts(self, key: str) -> list[Mount]:
        info = self.info(key)
        base = self.dir(key)
        readonly = info.kind == KIND_VIEW
        if info.backend == BACKEND_COPY:
            return [Mount("bind", str(base / "fs"), ("rbind", "ro" if readonly else "rw"))]
        lower_dirs = [str(self.store.fs_dir(d)) for d in reversed(info.lowers)]
        if not lower_dirs:
            lower_dirs = [str(base / "base")]
        elif readonly and len(lower_dirs) == 1:
            # overlayfs wants two lowers without an upper; a bind of the one snapshot
            # would show its whiteout devices and opaque marks.
            lower_dirs.append(str(self._empty_dir()))
        opts = ["lowerdir=" + ":".join(overlay._escape(p) for p in lower_dirs)]
        if readonly:
            opts.insert(0, "ro")
        else:
            opts.append(f"upperdir={overlay._escape(str(base / 'upper'))}")
            opts.append(f"workdir={overlay._escape(str(base / 'work'))}")
        if self.store.userxattr:
            opts.append("userxattr")
        opts.extend(overlay_hardening_options())
        return [Mount("overlay", "overlay", tuple(opts))]

    def _empty_dir(self) -> Path:
        empty = self.root / ".empty"
        empty.mkdir(mode=0o755, exist_ok=True)
        return empty

    # --- remove -------------------------------------------------------------------

    def remove(self, key: str) -> None:
        final = self.dir(key)
        with locks.locked(self.lock_path(key)):
            if not final.exists():
                raise NotFound(f"snapshot {key}: no such active snapshot")
            where = self._mounted_at(final)
            if where is not None:
                raise SnapshotInUse(f"snapshot {key}: still mounted on {where}",
                                    hint="unmount it first (its container must be stopped)")
            # Rename first so a crash mid-removal leaves a temp gc removes, not a
            # half snapshot that still looks active.
            doomed = Path(tempfile.mkdtemp(dir=self.root, prefix=f"{TMP_PREFIX}{key}-"))
            os.rename(final, doomed / "old")
            remove_tree(doomed)

    @staticmethod
    def _mounted_at(final: Path) -> str | None:
        """A mount in this namespace that shows the snapshot's upper (an overlay) or its
        flattened copy (a bind): removing the tree under it would empty a live rootfs."""
        upper = f"upperdir={overlay._escape(str(final / 'upper'))}"
        try:
            fs = os.stat(final / "fs")
        except FileNotFoundError:
            fs = None
        for m in read_mountinfo():
            if m.fstype == "overlay" and upper in m.super_options.split(","):
                return m.mount_point
            if fs is not None and m.dev == f"{os.major(fs.st_dev)}:{os.minor(fs.st_dev)}" \
                    and m.root != "/":
                try:
                    st = os.stat(m.mount_point)
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) == (fs.st_dev, fs.st_ino):
                    return m.mount_point
        return None

    # --- gc -----------------------------------------------------------------------

    def kept_chain_ids(self) -> set[Digest]:
        """Every committed snapshot an active one stands on (its whole parent chain)."""
        keep: set[Digest] = set()
        for entry in sorted(self.root.iterdir()) if self.root.is_dir() else ():
            meta = entry / ACTIVE_META
            try:
                doc = json.loads(meta.read_bytes())
            except (FileNotFoundError, NotADirectoryError, ValueError):
                continue
            for d in doc.get("lowers", []):
                keep.add(Digest.parse(d))
        return keep

    def remove_stale_temps(self) -> None:
        """Temps of a crashed create/remove (nobody holds their key's lock), and the
        empty mount points of a crashed mounted()."""
        for entry in sorted(self.root.iterdir()) if self.root.is_dir() else ():
            if not entry.name.startswith(TMP_PREFIX):
                continue
            key = entry.name[len(TMP_PREFIX):].rsplit("-", 1)[0]
            locks.remove_unless_locked(entry, self.lock_path(key))
        mnt = self.store.path / MOUNTS_DIR
        for entry in sorted(mnt.iterdir()) if mnt.is_dir() else ():
            try:
                os.rmdir(entry)  # never a tree walk: it may be a live mount point
            except OSError:
                pass


def _info_from(doc: dict) -> ActiveInfo:
    parent = doc.get("parent")
    return ActiveInfo(doc["key"], Digest.parse(parent) if parent else None, doc["kind"],
                      dict(doc.get("labels", {})), doc.get("backend", BACKEND_OVERLAY),
                      tuple(Digest.parse(d) for d in doc.get("lowers", [])))
