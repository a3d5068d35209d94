"""The snapshot store: each layer unpacked once, in overlay format, keyed by chain ID.

``snapshots/<chain-id hex>/fs`` is an overlayfs upperdir-style tree holding exactly
one layer (whiteouts as 0:0 char devices, opaque dirs marked); ``snapshot.json``
beside it says what it is. A snapshot is built under ``snapshots/.tmp-<hex>-…``,
checked against its diff ID and renamed into place, under a per-chain-ID lock, so a
crash or a concurrent process never leaves one that looks whole (containerd's
``pkg/rootfs/apply.go``: prepare under a temp key, apply, check diff ID, commit).
Images that share a layer stack share its snapshots. Each records its parent's chain
ID, so active snapshots (:mod:`ociimg.layers.active`: ``prepare``/``view`` by key,
``diff``, ``commit``) can stand on any committed chain and gc keeps those chains.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from ociimg.digest import Digest
from ociimg.errors import InvalidDocument, NotFound
from ociimg.events import NullProgress, Progress
from ociimg.fsutil import atomic_write, fsync_dir, remove_tree
from ociimg.layers.active import MOUNTS_DIR, ActiveInfo, ActiveSnapshots
from ociimg.layers.overlay import Mount
from ociimg.spec import (
    Descriptor,
    ImageConfig,
    Manifest,
    canonical_json,
    chain_ids,
    check_layers,
)
from ociimg.store import Store, locks

if TYPE_CHECKING:
    from ociimg.layers.apply import ApplyOptions as ApplyOptionsT
    from ociimg.layers.diff import Change

META = "snapshot.json"
# Bumped when the applier's OVERLAY output changes for the same layer stack, so snapshots
# made by an older ociimg are rebuilt instead of trusted by chain ID. 2: parents resolved
# through lower layers' symlinks (layers/merged.py). 3: an opaque layer root is whiteouts
# and opaque root dirs; implicit parents no longer copy a lower dir's opaque mark; the
# root inherits the lower root's attributes.
FORMAT = 3
_TMP_PREFIX = ".tmp-"
_RETIRED = ".retired"  # outdated snapshots that may still be mounted (_retire)
MAX_CHAIN = 4096  # layers in one chain; far above any real image (docker caps at 127)


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    chain_id: Digest
    diff_id: Digest
    layer: Digest
    media_type: str


class SnapshotStore:
    def __init__(self, path: str | os.PathLike[str], *, rootless: bool | None = None,
                 userxattr: bool | None = None, use_overlay: bool | None = None) -> None:
        self.path = Path(path)
        self.rootless = os.geteuid() != 0 if rootless is None else rootless
        # Rootless snapshots mark opaque dirs with user.overlay.*: mount them with
        # mount_overlay(..., userxattr=store.userxattr).
        self.userxattr = self.rootless if userxattr is None else userxattr
        # Active snapshots: overlay upper/work dirs, or flattened copies where overlayfs
        # is unavailable (None: probe the kernel; False forces copies, for tests).
        self._active = ActiveSnapshots(self, use_overlay=use_overlay)

    def _init(self) -> None:
        # 0700: snapshots hold setuid files and device nodes (umoci#181).
        self.path.mkdir(parents=True, exist_ok=True)
        os.chmod(self.path, 0o700)
        (self.path / ".locks").mkdir(exist_ok=True)

    def fs_dir(self, chain_id: Digest) -> Path:
        return self.path / chain_id.hex / "fs"

    def has(self, chain_id: Digest) -> bool:
        """A complete snapshot of the current format in this store's xattr flavour."""
        try:
            doc = json.loads((self.path / chain_id.hex / META).read_bytes())
        except (FileNotFoundError, ValueError):
            return False
        return doc.get("format") == FORMAT and bool(doc.get("userxattr")) == self.userxattr

    def list(self) -> list[SnapshotInfo]:
        out = []
        for meta in sorted(self.path.glob(f"*/{META}")):
            doc = json.loads(meta.read_bytes())
            out.append(SnapshotInfo(Digest.parse(doc["chainID"]), Digest.parse(doc["diffID"]),
                                    Digest.parse(doc["layer"]), doc["mediaType"]))
        return out

    def unpack_image(self, store: Store, manifest: Manifest, config: ImageConfig,
                     progress: Progress = NullProgress()) -> list[Path]:
        """Make sure every layer of the image has a snapshot; fs dirs bottom → top."""
        check_layers(manifest, config)
        self._init()
        dirs: list[Path] = []
        parent: Digest | None = None
        for layer, diff_id, chain_id in zip(manifest.layers, config.diff_ids,
                                            chain_ids(config.diff_ids), strict=True):
            self._ensure(store, layer, diff_id, chain_id, parent, tuple(reversed(dirs)),
                         progress)
            dirs.append(self.fs_dir(chain_id))
            parent = chain_id
        return dirs

    def _ensure(self, store: Store, layer: Descriptor, diff_id: Digest, chain_id: Digest,
                parent: Digest | None, lowers: tuple[Path, ...], progress: Progress) -> None:
        key = f"snapshot {chain_id.short}"
        if self._has_with_parent(chain_id, parent):
            progress.done(key, "already unpacked")
            return
        with locks.locked(self._lock_path(chain_id)):
            if self._has_with_parent(chain_id, parent):  # made while we waited
                progress.done(key, "already unpacked")
                return
            progress.start(key, f"unpacking {layer.digest.short}", layer.size)

            def fill(fs: Path, options: ApplyOptionsT) -> tuple[int, int, list[str]]:
                from ociimg.layers.unpack import apply_blob
                result = apply_blob(store, layer, fs, options, diff_id)
                return result.size, result.entries, result.warnings

            for warning in self._make(chain_id, parent, diff_id, layer.digest,
                                      layer.media_type, lowers, fill):
                progress.log(f"layer {layer.digest.short}: {warning}")
            progress.done(key)

    def _has_with_parent(self, chain_id: Digest, parent: Digest | None) -> bool:
        """has(), and the snapshot names its parent (active snapshots follow the chain
        through it); a snapshot made before parents were recorded gets it added."""
        if not self.has(chain_id):
            return False
        meta = self.path / chain_id.hex / META
        doc = json.loads(meta.read_bytes())
        if "parent" not in doc:  # racing writers write the same bytes
            doc["parent"] = None if parent is None else str(parent)
            atomic_write(meta, canonical_json(doc))
        return True

    def chain_of(self, chain_id: Digest) -> list[Digest]:
        """The committed chain ending in ``chain_id``, bottom → top (each one present)."""
        out: list[Digest] = []
        cur: Digest | None = chain_id
        while cur is not None:
            try:
                doc = json.loads((self.path / cur.hex / META).read_bytes())
            except (FileNotFoundError, ValueError):
                doc = None
            if doc is None or not self.has(cur) or "parent" not in doc:
                raise NotFound(f"snapshot {cur}: no committed snapshot of that chain ID",
                               hint="unpack the image first (SnapshotStore.unpack_image)")
            out.append(cur)
            if len(out) > MAX_CHAIN:
                raise InvalidDocument(f"snapshot {chain_id}: a chain of over {MAX_CHAIN} "
                                      "snapshots (a loop?)")
            cur = Digest.parse(doc["parent"]) if doc["parent"] else None
        out.reverse()
        return out

    def _make(self, chain_id: Digest, parent: Digest | None, diff_id: Digest,
              layer: Digest, media_type: str, lowers: tuple[Path, ...],
              fill: Callable[[Path, ApplyOptionsT], tuple[int, int, list[str]]]) -> list[str]:
        """Build snapshot ``chain_id`` in a temp dir with ``fill`` (which applies the layer
        and checks its diff ID) and rename it into place; the caller holds its lock."""
        # Imported here: with every snapshot present (a container of a pulled image) the
        # applier, tarfile and the decompressors are never needed (~10 ms of `ociimg run`).
        from ociimg.layers.apply import ApplyOptions, OnDiskFormat
        final = self.path / chain_id.hex
        if final.exists():
            self._retire(final)  # no metadata, an old format or the other flavour
        tmp = Path(tempfile.mkdtemp(dir=self.path, prefix=f"{_TMP_PREFIX}{chain_id.hex}-"))
        try:
            fs = tmp / "fs"
            fs.mkdir()
            os.chmod(fs, 0o755)
            options = ApplyOptions(OnDiskFormat.OVERLAY, rootless=self.rootless,
                                   lowers=lowers, userxattr=self.userxattr)
            size, entries, warnings = fill(fs, options)
            atomic_write(tmp / META, canonical_json({
                "chainID": str(chain_id), "diffID": str(diff_id), "layer": str(layer),
                "mediaType": media_type, "size": size, "entries": entries,
                "userxattr": self.userxattr, "format": FORMAT,
                "parent": None if parent is None else str(parent),
            }))
            os.rename(tmp, final)
        except BaseException:
            remove_tree(tmp)
            raise
        fsync_dir(self.path)
        return warnings

    def _lock_path(self, chain_id: Digest) -> Path:
        return self.path / ".locks" / f"{chain_id.hex}.lock"

    def remove_committed(self, chain_id: Digest) -> bool:
        with locks.locked(self._lock_path(chain_id)):
            final = self.path / chain_id.hex
            if not final.exists():
                return False
            self._discard(final)
            return True

    def _retire(self, final: Path) -> None:
        """Move an outdated snapshot out of the way without deleting it: containers and
        `unpack --overlay` bundles made before an upgrade still have it mounted as a
        lower layer (an overlay keeps its layers across a rename, not across removal).
        gc removes it once nothing keeps its chain ID."""
        retired = self.path / _RETIRED
        retired.mkdir(exist_ok=True)
        os.rename(final, retired / f"{final.name}-{secrets.token_hex(4)}")

    def _discard(self, final: Path) -> None:
        # Rename first so a crash mid-removal leaves a temp, not a half snapshot.
        doomed = Path(tempfile.mkdtemp(dir=self.path, prefix=f"{_TMP_PREFIX}{final.name}-"))
        os.rename(final, doomed / "old")
        remove_tree(doomed)

    # --- active snapshots (containerd's Prepare/View/Mounts/Commit/Remove) -------------

    def prepare(self, key: str, parent: Digest | None, *,
                labels: dict[str, str] | None = None) -> list[Mount]:
        """A writable active snapshot ``key`` over the committed chain ``parent`` (None:
        an empty tree); returns its mounts. The chain must be unpacked already."""
        return self._active.create(key, parent, "active", labels)

    def view(self, key: str, parent: Digest, *,
             labels: dict[str, str] | None = None) -> list[Mount]:
        """A read-only active snapshot of the committed chain ``parent``."""
        return self._active.create(key, parent, "view", labels)

    def mounts(self, key: str) -> list[Mount]:
        return self._active.mounts(key)

    def active(self) -> list[ActiveInfo]:
        return self._active.active()

    def active_info(self, key: str) -> ActiveInfo:
        return self._active.info(key)

    def active_dir(self, key: str) -> Path:
        """Where active snapshot ``key`` keeps its upper/work (or flattened fs)."""
        return self._active.dir(key)

    def remove(self, key: str) -> None:
        """Remove active snapshot ``key`` (its upper/work or copy); unmount it first."""
        self._active.remove(key)

    @contextlib.contextmanager
    def mounted(self, key: str) -> Iterator[Path]:
        """The merged view of active snapshot ``key`` on a temp mount point (read-only
        for a view), unmounted and removed afterwards."""
        from ociimg.layers.overlay import mount_all, unmount
        mounts = self.mounts(key)
        base = self.path / MOUNTS_DIR
        base.mkdir(mode=0o700, exist_ok=True)
        target = Path(tempfile.mkdtemp(dir=base, prefix=f"{key}-"))
        # Mounting and unmounting one writable layer's views one at a time: overlayfs
        # clears and remakes the work dir it is given, under a mount of it in progress.
        lock = self._active.lock_path(key)
        try:
            with locks.locked(lock):
                mount_all(mounts, target)
            try:
                yield target
            finally:
                with locks.locked(lock):
                    unmount(target)
        finally:
            os.rmdir(target)

    def diff(self, key: str, out: BinaryIO, *, source_date_epoch: int | None = None) -> Digest:
        """Write the OCI changeset tar of active snapshot ``key`` against its parent to
        ``out`` (uncompressed); returns its diff ID."""
        from ociimg.layers.diff import write_diff
        return write_diff(self, key, out, source_date_epoch=source_date_epoch)

    def changes(self, key: str) -> list[Change]:
        """``docker diff``: what ``key`` added (A), changed (C) and deleted (D)."""
        from ociimg.layers.diff import list_changes
        return list_changes(self, key)

    def commit(self, key: str, *, source_date_epoch: int | None = None,
               on_tar: Callable[[BinaryIO], object] | None = None) -> Digest:
        """Commit active snapshot ``key`` as a committed snapshot; returns its chain ID.

        The active snapshot stays (``docker commit`` leaves the container; a builder
        removes its step's key itself). The committed tree is the diff applied by the
        applier, so it is exactly what unpacking that layer over the parent makes, and
        shares its chain ID with it. ``on_tar`` gets the layer tar first (see
        :func:`~ociimg.layers.diff.commit_active`)."""
        from ociimg.layers.diff import commit_active
        return commit_active(self, key, source_date_epoch=source_date_epoch, on_tar=on_tar)

    def gc(self, keep: set[Digest]) -> list[Digest]:
        """Remove snapshots not in ``keep`` and temps nobody is writing; returns removed.

        ``keep`` must include the chain IDs of every image that running containers use;
        the parent chains of active snapshots are kept without being named.
        """
        if not self.path.is_dir():
            return []
        self._active.remove_stale_temps()
        keep_hex = {d.hex for d in keep | self._active.kept_chain_ids()}
        removed = []
        retired = self.path / _RETIRED
        for entry in sorted(retired.iterdir()) if retired.is_dir() else ():
            if entry.name.split("-", 1)[0] not in keep_hex:
                remove_tree(entry)
        for entry in sorted(self.path.iterdir()):
            name = entry.name
            if name.startswith(_TMP_PREFIX):
                self._remove_stale_temp(entry)
            elif _is_chain_hex(name) and name not in keep_hex:
                if not locks.remove_unless_locked(entry, self.path / ".locks" / f"{name}.lock"):
                    continue  # being built right now
                with contextlib.suppress(ValueError):
                    removed.append(Digest.parse(f"sha256:{name}"))
        return removed

    def _remove_stale_temp(self, entry: Path) -> None:
        chain_hex = entry.name[len(_TMP_PREFIX):].split("-", 1)[0]
        locks.remove_unless_locked(entry, self.path / ".locks" / f"{chain_hex}.lock")


def _is_chain_hex(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)
