"""``ociimg gc``: blobs no image references, then snapshots no image or container uses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ociimg.commands.leases import active_leases
from ociimg.digest import Digest
from ociimg.errors import OciimgError
from ociimg.fsutil import tree_size
from ociimg.layers.snapshots import SnapshotStore
from ociimg.spec import MANIFEST_TYPES, MAX_CONFIG_BYTES, Descriptor, chain_ids, parse_config
from ociimg.store import Store


@dataclass(frozen=True)
class GarbageReport:
    removed_blobs: int
    bytes_freed: int
    removed_snapshots: int
    snapshot_bytes_freed: int
    warnings: tuple[str, ...] = ()


def collect_garbage(root: Path, containers: list[dict]) -> GarbageReport:  # type: ignore[type-arg]
    """``containers`` are the metas of existing containers: their snapshots stay, as do
    those of bundles made by ``unpack --overlay`` until ``umount`` (their leases). Call
    with the containers' creation lock held (it also covers a bundle being made)."""
    store = Store.open(root)
    blobs = store.gc()
    warnings = list(blobs.warnings)
    keep = image_chain_ids(store, warnings)
    leases = active_leases(root)  # mounted `unpack --overlay` bundles
    for meta in [*containers, *leases]:
        keep.update(Digest.parse(c) for c in meta.get("snapshots", []))
    snapshots = SnapshotStore(root / "snapshots")
    unreadable = [lease["unreadable"] for lease in leases if "unreadable" in lease]
    if unreadable:
        warnings.append(f"lease {unreadable[0]} cannot be read: no snapshot was removed")
        return GarbageReport(blobs.removed_blobs, blobs.bytes_freed, 0, 0, tuple(warnings))
    sizes = {d.hex: tree_size(snapshots.path / d.hex) for d in _all_chain_ids(snapshots)}
    removed = snapshots.gc(keep)
    return GarbageReport(blobs.removed_blobs, blobs.bytes_freed, len(removed),
                         sum(sizes.get(d.hex, 0) for d in removed), tuple(warnings))


def image_chain_ids(store: Store, warnings: list[str],
                    refs: list[tuple[str, Descriptor]] | None = None) -> set[Digest]:
    """Chain IDs of every image manifest (every platform) the store has (or ``refs``
    have). An image whose
    manifest or config does not parse cannot have been unpacked by us, so it has no
    snapshots of its own: it is skipped (said in ``warnings``), never fatal to gc."""
    keep: set[Digest] = set()
    for name, top in store.refs() if refs is None else refs:
        for desc in store.walk(top, on_error=lambda _d, _e: None):
            if desc.media_type not in MANIFEST_TYPES or not store.has_blob(desc.digest):
                continue
            try:
                manifest = store.read_manifest(desc)
                config_desc = manifest.config  # type: ignore[union-attr]
                if store.has_blob(config_desc.digest):
                    raw = store.read_blob(config_desc.digest, limit=MAX_CONFIG_BYTES)
                    config = parse_config(raw, where=f"config {config_desc.digest}")
                    keep.update(chain_ids(config.diff_ids))
            except OciimgError as exc:
                message = f"image {name}: {exc}"
                if not any(w.startswith(message) for w in warnings):
                    warnings.append(f"{message}; its snapshots are not kept")
    return keep


def _all_chain_ids(snapshots: SnapshotStore) -> list[Digest]:
    return [info.chain_id for info in snapshots.list()] if snapshots.path.is_dir() else []


