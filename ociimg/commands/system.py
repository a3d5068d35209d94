"""``ociimg system df|prune|reset``: the whole root at once.

``reset`` is the reboot-like cleanup (``podman system reset``): every container of the
root stopped and removed, their network attachments torn down (and those of any dead
monitor, host-wide: :func:`ociimg.network.reap`), every mount below the root undone,
then the root itself removed. Attachments of live containers of other roots are never
touched: the attachment records name the container's directory, and only records under
this root, or whose lock nobody holds, are ours to tear down.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from ociimg.build.cache import CACHE_DIR
from ociimg.containers.manager import ACTIVE, ContainerManager
from ociimg.containers.store import Container, containers_dir, containers_locked, list_containers
from ociimg.containers.volumes import VolumeStore
from ociimg.errors import InvalidArgument, OciimgError
from ociimg.fsutil import remove_tree, tree_size
from ociimg.layers.snapshots import SnapshotStore
from ociimg.oskit import linux
from ociimg.oskit.mountinfo import read_mountinfo


@dataclass(frozen=True)
class UsageRow:
    kind: str          # docker's TYPE column: Images, Containers, Local Volumes, Build Cache
    total: int
    active: int
    size: int          # bytes on disk
    reclaimable: int   # bytes that prune -a (--volumes) would free


@dataclass
class ResetReport:
    containers: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)   # container ids detached
    unmounted: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# --- df -------------------------------------------------------------------------------


def disk_usage(root: Path) -> list[UsageRow]:
    """docker system df's four rows, read only (nothing is created)."""
    return [_image_usage(root), _container_usage(root), _volume_usage(root),
            _build_cache_usage(root)]


def _image_usage(root: Path) -> UsageRow:
    """SIZE: blobs and committed snapshots; RECLAIMABLE: what images no container uses
    hold alone (docker counts the same way: shared layers stay with the used image)."""
    from ociimg.commands.maintenance import image_chain_ids
    from ociimg.store import Store
    if not (root / "store" / "index.json").is_file():
        return UsageRow("Images", 0, 0, 0, 0)
    store = Store(root / "store")
    refs = store.refs()
    used = {str(c.meta.get(k)) for c in list_containers(root) for k in ("image", "digest")}
    active = [(n, d) for n, d in refs if n in used or str(d.digest) in used]
    blobs = {str(d.digest): d.size for _n, top in refs
             for d in store.walk(top, on_error=lambda _d, _e: None) if store.has_blob(d.digest)}
    needed = {str(d.digest) for _n, top in active
              for d in store.walk(top, on_error=lambda _d, _e: None)}
    snapshots = SnapshotStore(root / "snapshots")
    chains = {i.chain_id: tree_size(snapshots.path / i.chain_id.hex)
              for i in snapshots.list()} if snapshots.path.is_dir() else {}
    kept_chains = image_chain_ids(store, [], active)
    size = tree_size(root / "store" / "blobs") + sum(chains.values())
    reclaim = sum(s for d, s in blobs.items() if d not in needed) + \
        sum(s for c, s in chains.items() if c not in kept_chains)
    return UsageRow("Images", len({d.digest for _n, d in refs}),
                    len({d.digest for _n, d in active}), size, reclaim)


def _container_usage(root: Path) -> UsageRow:
    items = list_containers(root)
    manager = ContainerManager(root)
    snapshots = _snapshots(root)
    size = reclaim = active = 0
    for c in items:
        own = _container_size(c, snapshots)
        size += own
        if manager.status(c).status in ACTIVE:
            active += 1
        else:
            reclaim += own
    return UsageRow("Containers", len(items), active, size, reclaim)


def _container_size(c: Container, snapshots: SnapshotStore | None) -> int:
    """Its logs and its upper dir (what the container wrote)."""
    own = tree_size(c.path / "log.jsonl") + tree_size(c.path / "log")
    if snapshots is not None:
        own += tree_size(snapshots.active_dir(c.snapshot_key))
    return own


def _snapshots(root: Path) -> SnapshotStore | None:
    return SnapshotStore(root / "snapshots") if (root / "snapshots").is_dir() else None


def _volume_usage(root: Path) -> UsageRow:
    volumes = VolumeStore(root)
    items = volumes.list()
    used = volumes.users() if items else {}
    sizes = {v.name: tree_size(v.path) for v in items}
    return UsageRow("Local Volumes", len(items), sum(1 for v in items if v.name in used),
                    sum(sizes.values()),
                    sum(s for n, s in sizes.items() if n not in used))


def _build_cache_usage(root: Path) -> UsageRow:
    base = root / CACHE_DIR
    entries = [e for e in base.rglob("*.json")] if base.is_dir() else []
    size = tree_size(base)
    return UsageRow("Build Cache", len(entries), 0, size, size)


# --- prune ----------------------------------------------------------------------------


@dataclass
class PruneReport:
    containers: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    build_cache: bool = False
    bytes_freed: int = 0


def prune(root: Path, *, all_images: bool = False, volumes: bool = False) -> PruneReport:
    """docker system prune: stopped containers, networks no container uses, dangling
    images (``all_images``: every image no container uses), the build cache and, with
    ``volumes``, the anonymous volumes no container uses; then gc."""
    from ociimg.commands.maintenance import collect_garbage
    from ociimg.network import config, read_record, reap
    report = PruneReport()
    manager = ContainerManager(root)
    snapshots = _snapshots(root)
    for c in manager.list():
        if manager.status(c).status not in ACTIVE:
            size = _container_size(c, snapshots)
            manager.remove(c)
            report.containers.append(c.id)
            report.bytes_freed += size
    reap()
    left = list_containers(root)
    used_nets = {n for c in left for n in (read_record(c.path) or {}).get("networks") or []}
    for net in config.list_networks(root):
        if net.name != config.DEFAULT_NAME and net.name not in used_nets:
            config.remove(root, net.name)
            report.networks.append(net.name)
    report.images = _prune_images(root, left, all_images)
    if (root / CACHE_DIR).is_dir():
        before = tree_size(root / CACHE_DIR)
        _drop_build_cache(root)
        report.build_cache = True
        report.bytes_freed += before
    if volumes:
        report.volumes = VolumeStore(root).prune()
    if (root / "store" / "index.json").is_file():
        with containers_locked(root):
            gc = collect_garbage(root, [c.meta for c in list_containers(root)])
        report.bytes_freed += gc.bytes_freed + gc.snapshot_bytes_freed
    return report


def _prune_images(root: Path, left: list, all_images: bool) -> list[str]:  # type: ignore[type-arg]
    from ociimg.commands.listing import split_name
    from ociimg.store import Store
    if not (root / "store" / "index.json").is_file():
        return []
    store = Store(root / "store")
    used = {str(c.meta.get(k)) for c in left for k in ("image", "digest")}
    gone = []
    for name, desc in store.refs():
        if name in used or str(desc.digest) in used:
            continue
        if all_images or split_name(name)[0] == "<none>":
            store.untag(name)
            gone.append(name)
    return gone


def _drop_build_cache(root: Path) -> None:
    """Renamed away under the store's gc lock: a running build (it holds a lease) keeps
    its cache until it ends; the rename means no half-removed cache is ever read."""
    import secrets

    from ociimg.store import locks
    trash = root / f".{CACHE_DIR}-rm-{secrets.token_hex(6)}"
    with locks.locked(root / "store" / ".gc.lock"):
        os.rename(root / CACHE_DIR, trash)
    remove_tree(trash)


# --- reset ----------------------------------------------------------------------------


def reset(root: Path) -> ResetReport:
    """Stop and remove everything under ``root`` and the host state its containers made
    (network attachments, netns, mounts, cgroups through the runtime's delete), then
    remove the root itself. Safe to repeat; what cannot be undone is in ``warnings``."""
    import ociimg.network as network
    report = ResetReport()
    root = Path(os.path.abspath(root))
    check_root(root)
    _remove_containers(root, report)
    # Their monitors tore their attachments down; what killed monitors left has a free
    # lock and goes here (host-wide: a dead monitor's record is nobody's). A record of
    # this root whose lock is still held has a monitor that outlived its container's
    # removal: never waited for (reset must not hang), said in the warnings.
    report.networks += network.reap()
    for cid in sorted(_attachments_under(root)):
        report.warnings.append(f"container {cid[:12]}: its monitor still holds its network "
                               "attachment; run reset again once it has exited")
    if list_containers(root):  # removing their dirs would orphan what still runs
        report.warnings.append(f"{root} is kept: some containers could not be removed")
        return report
    _unmount_below(root, report)
    if root.exists():
        try:
            remove_tree(root)
        except OSError as exc:
            report.warnings.append(f"remove {root}: {exc.strerror}")
    return report


# What ociimg makes at the top of its root; anything else means --root names a directory
# that is not one (a typo, $HOME, /): reset removes nothing there.
ROOT_ENTRIES = frozenset({"store", "containers", "snapshots", "volumes", "networks",
                          CACHE_DIR, "leases"})


def check_root(root: Path) -> None:
    try:
        entries = os.listdir(root)
    except FileNotFoundError:
        return
    except NotADirectoryError:
        entries = [""]
    foreign = sorted(e for e in entries if e not in ROOT_ENTRIES
                     and not e.startswith(f".{CACHE_DIR}-rm-"))
    if foreign:
        raise InvalidArgument(f"{root} holds {foreign[0]!r}, which ociimg did not make: "
                              "not an ociimg root, nothing removed",
                              hint="check --root / $OCIIMG_ROOT")


def _remove_containers(root: Path, report: ResetReport) -> None:
    manager = ContainerManager(root)
    for c in manager.list():
        try:
            manager.remove(c, force=True, volumes=True)
            report.containers.append(c.id)
        except (OciimgError, OSError) as exc:
            report.warnings.append(f"container {c.name}: {exc}")
            _kill_monitor(manager, c)


def _kill_monitor(manager: ContainerManager, c: object) -> None:
    """A monitor that would not stop its container: its teardown then happens here
    (its attachment lock frees when it dies)."""
    import signal
    pid = manager.monitor_pid(c)  # type: ignore[arg-type]
    if pid:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OciimgError):
        manager.kill(c, signal.SIGKILL, all_processes=True)  # type: ignore[arg-type]


def _attachments_under(root: Path) -> set[str]:
    """Container ids whose host-wide attachment record names a directory of ``root``."""
    import json

    import ociimg.network as network
    base = str(containers_dir(root)) + os.sep
    out = set()
    for cid in network.attached_ids():
        with contextlib.suppress(OSError, ValueError):
            doc = json.loads((network.STATE_DIR / "attached" / f"{cid}.json").read_bytes())
            if str(doc.get("dir", "")).startswith(base):
                out.add(cid)
    return out


def _unmount_below(root: Path, report: ResetReport) -> None:
    """Every mount below ``root``, deepest first, stacked ones too (MNT_DETACH: a busy
    one goes when its last user does). The root itself, if mounted, is the user's."""
    prefix = str(root) + os.sep
    failed: set[str] = set()
    while True:
        points = [m.mount_point for m in read_mountinfo()
                  if m.mount_point.startswith(prefix) and m.mount_point not in failed]
        if not points:
            return
        point = max(points, key=lambda p: p.count("/"))
        try:
            linux.umount2(point, linux.MNT.DETACH | linux.MNT.UMOUNT_NOFOLLOW)
            report.unmounted.append(point)
        except OSError as exc:
            failed.add(point)
            report.warnings.append(f"unmount {point}: {exc.strerror}")
