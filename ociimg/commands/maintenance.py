"""``ociimg gc``: blobs no image references, then snapshots no image or container uses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ociimg.digest import Digest
from ociimg.fsutil import tree_size
from ociimg.layers.snapshots import SnapshotStore
from ociimg.spec import MANIFEST_TYPES, chain_ids, parse_config
from ociimg.store import Store


@dataclass(frozen=True)
class GarbageReport:
    removed_blobs: int
    bytes_freed: int
    removed_snapshots: int
    snapshot_bytes_freed: int


def collect_garbage(root: Path, containers: list[dict]) -> GarbageReport:  # type: ignore[type-arg]
    """``containers`` are the metas of existing containers: their snapshots stay."""
    store = Store.open(root)
    blobs = store.gc()
    keep = image_chain_ids(store)
    for meta in containers:
        keep.update(Digest.parse(c) for c in meta.get("snapshots", []))
    snapshots = SnapshotStore(root / "snapshots")
    sizes = {d.hex: tree_size(snapshots.path / d.hex) for d in _all_chain_ids(snapshots)}
    removed = snapshots.gc(keep)
    return GarbageReport(blobs.removed_blobs, blobs.bytes_freed, len(removed),
                         sum(sizes.get(d.hex, 0) for d in removed))


def image_chain_ids(store: Store) -> set[Digest]:
    """Chain IDs of every image manifest (every platform) the store has."""
    keep: set[Digest] = set()
    for _, top in store.refs():
        for desc in store.walk(top):
            if desc.media_type not in MANIFEST_TYPES or not store.has_blob(desc.digest):
                continue
            manifest = store.read_manifest(desc)
            if store.has_blob(manifest.config.digest):  # type: ignore[union-attr]
                config = parse_config(store.read_blob(manifest.config.digest))  # type: ignore[union-attr]
                keep.update(chain_ids(config.diff_ids))
    return keep


def _all_chain_ids(snapshots: SnapshotStore) -> list[Digest]:
    return [info.chain_id for info in snapshots.list()] if snapshots.path.is_dir() else []


