"""The snapshot store: each layer unpacked once, in overlay format, keyed by chain ID.

``snapshots/<chain-id hex>/fs`` is an overlayfs upperdir-style tree holding exactly
one layer (whiteouts as 0:0 char devices, opaque dirs marked); ``snapshot.json``
beside it says what it is. A snapshot is built under ``snapshots/.tmp-<hex>-…``,
checked against its diff ID and renamed into place, under a per-chain-ID lock, so a
crash or a concurrent process never leaves one that looks whole (containerd's
``pkg/rootfs/apply.go``: prepare under a temp key, apply, check diff ID, commit).
Images that share a layer stack share its snapshots.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ociimg.digest import Digest
from ociimg.events import NullProgress, Progress
from ociimg.fsutil import atomic_write, fsync_dir, remove_tree
from ociimg.spec import (
    Descriptor,
    ImageConfig,
    Manifest,
    canonical_json,
    chain_ids,
    check_layers,
)
from ociimg.store import Store, locks

META = "snapshot.json"
# Bumped when the applier's OVERLAY output changes for the same layer stack, so snapshots
# made by an older ociimg are rebuilt instead of trusted by chain ID. 2: parents resolved
# through lower layers' symlinks (layers/merged.py). 3: an opaque layer root is whiteouts
# and opaque root dirs; implicit parents no longer copy a lower dir's opaque mark; the
# root inherits the lower root's attributes.
FORMAT = 3
_TMP_PREFIX = ".tmp-"
_RETIRED = ".retired"  # outdated snapshots that may still be mounted (_retire)


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    chain_id: Digest
    diff_id: Digest
    layer: Digest
    media_type: str


class SnapshotStore:
    def __init__(self, path: str | os.PathLike[str], *, rootless: bool | None = None,
                 userxattr: bool | None = None) -> None:
        self.path = Path(path)
        self.rootless = os.geteuid() != 0 if rootless is None else rootless
        # Rootless snapshots mark opaque dirs with user.overlay.*: mount them with
        # mount_overlay(..., userxattr=store.userxattr).
        self.userxattr = self.rootless if userxattr is None else userxattr

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

    def prepare(self, store: Store, manifest: Manifest, config: ImageConfig,
                progress: Progress = NullProgress()) -> list[Path]:
        """Make sure every layer of the image has a snapshot; fs dirs bottom → top."""
        check_layers(manifest, config)
        self._init()
        dirs: list[Path] = []
        for layer, diff_id, chain_id in zip(manifest.layers, config.diff_ids,
                                            chain_ids(config.diff_ids), strict=True):
            self._ensure(store, layer, diff_id, chain_id, tuple(reversed(dirs)), progress)
            dirs.append(self.fs_dir(chain_id))
        return dirs

    def _ensure(self, store: Store, layer: Descriptor, diff_id: Digest, chain_id: Digest,
                lowers: tuple[Path, ...], progress: Progress) -> None:
        key = f"snapshot {chain_id.short}"
        if self.has(chain_id):
            progress.done(key, "already unpacked")
            return
        with locks.locked(self._lock_path(chain_id)):
            if self.has(chain_id):  # another process made it while we waited
                progress.done(key, "already unpacked")
                return
            final = self.path / chain_id.hex
            if final.exists():
                self._retire(final)  # no metadata, an old format or the other flavour
            progress.start(key, f"unpacking {layer.digest.short}", layer.size)
            tmp = Path(tempfile.mkdtemp(dir=self.path, prefix=f"{_TMP_PREFIX}{chain_id.hex}-"))
            try:
                self._build(tmp, store, layer, diff_id, chain_id, lowers, progress)
                os.rename(tmp, final)
            except BaseException:
                remove_tree(tmp)
                raise
            fsync_dir(self.path)
            progress.done(key)

    def _build(self, tmp: Path, store: Store, layer: Descriptor, diff_id: Digest,
               chain_id: Digest, lowers: tuple[Path, ...], progress: Progress) -> None:
        # Imported here: with every snapshot present (a container of a pulled image) the
        # applier, tarfile and the decompressors are never needed (~10 ms of `ociimg run`).
        from ociimg.layers.apply import ApplyOptions, OnDiskFormat
        from ociimg.layers.unpack import apply_blob
        fs = tmp / "fs"
        fs.mkdir()
        os.chmod(fs, 0o755)
        options = ApplyOptions(OnDiskFormat.OVERLAY, rootless=self.rootless, lowers=lowers,
                               userxattr=self.userxattr)
        result = apply_blob(store, layer, fs, options, diff_id)
        for warning in result.warnings:
            progress.log(f"layer {layer.digest.short}: {warning}")
        atomic_write(tmp / META, canonical_json({
            "chainID": str(chain_id), "diffID": str(diff_id), "layer": str(layer.digest),
            "mediaType": layer.media_type, "size": result.size, "entries": result.entries,
            "userxattr": self.userxattr, "format": FORMAT,
        }))

    def _lock_path(self, chain_id: Digest) -> Path:
        return self.path / ".locks" / f"{chain_id.hex}.lock"

    def remove(self, chain_id: Digest) -> bool:
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

    def gc(self, keep: set[Digest]) -> list[Digest]:
        """Remove snapshots not in ``keep`` and temps nobody is writing; returns removed.

        ``keep`` must include the chain IDs of every image that running containers use.
        """
        if not self.path.is_dir():
            return []
        keep_hex = {d.hex for d in keep}
        removed = []
        retired = self.path / _RETIRED
        for entry in sorted(retired.iterdir()) if retired.is_dir() else ():
            if entry.name.split("-", 1)[0] not in keep_hex:
                remove_tree(entry)
        for entry in sorted(self.path.iterdir()):
            name = entry.name
            if name.startswith(_TMP_PREFIX):
                self._remove_stale_temp(entry)
            elif not name.startswith(".") and name not in keep_hex:
                fd = locks.try_lock(self.path / ".locks" / f"{name}.lock")
                if fd is None:
                    continue  # being built right now
                try:
                    remove_tree(entry)
                finally:
                    locks.release_lock(fd)
                with contextlib.suppress(ValueError):
                    removed.append(Digest.parse(f"sha256:{name}"))
        return removed

    def _remove_stale_temp(self, entry: Path) -> None:
        chain_hex = entry.name[len(_TMP_PREFIX):].split("-", 1)[0]
        fd = locks.try_lock(self.path / ".locks" / f"{chain_hex}.lock")
        if fd is None:
            return  # its builder still holds the lock
        try:
            remove_tree(entry)
        finally:
            locks.release_lock(fd)
