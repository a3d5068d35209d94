"""``ociimg diff`` and ``ociimg commit``: a container's change set, listed or written as
the top layer of a new image (``docker diff``/``docker commit``).

The container's writable layer is its active snapshot (``SnapshotStore``, key = the
container's ``snapshot_key``); its changes and its OCI changeset tar come from there,
on a running container as well as on a stopped one. The new image is the container's
image plus that layer, written by the image writer (``ociimg.image``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ociimg.digest import Digest
from ociimg.errors import (
    ContainerError,
    ImageNotFound,
    InvalidArgument,
    InvalidDocument,
    OciimgError,
)
from ociimg.image import HistoryEntry, NewLayer, copy_blobs, parse_changes, write_image
from ociimg.reference import parse_reference
from ociimg.spec import (
    MAX_CONFIG_BYTES,
    Descriptor,
    ImageConfig,
    Manifest,
    chain_ids,
    check_layers,
    parse_config,
    parse_manifest_or_index,
)
from ociimg.store import Store

if TYPE_CHECKING:
    from ociimg.containers import Container, ContainerManager
    from ociimg.layers.snapshots import SnapshotStore

# Meta key under which a container records the store or ``oci:`` layout its image came
# from (from a layout, commit copies the base layers into the store).
IMAGE_STORE_META = "imageStore"


@dataclass(frozen=True)
class CommitOptions:
    name: str | None = None           # NAME[:TAG] as typed; None: localhost/<container>
    message: str = ""                 # -m: the history entry's comment
    author: str = ""                  # -a: config and history author
    changes: tuple[str, ...] = ()     # -c: Dockerfile instructions (ociimg.image.changes)
    pause: bool = True                # freeze a running container while its layer is read
    compression: str = "gzip"
    # Reproducible output (reproducible-builds.org): the image's and history's time, and
    # file mtimes in the layer clamped to it.
    source_date_epoch: int | None = None


@dataclass(frozen=True)
class CommitResult:
    name: str
    descriptor: Descriptor
    layer: Descriptor | None          # None: nothing changed, no layer added (empty_layer)
    container: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "digest": str(self.descriptor.digest),
                "container": self.container,
                "layer": str(self.layer.digest) if self.layer else None}


# Shared lookups -------------------------------------------------------------------
def manager_for(root: Path) -> ContainerManager:
    from ociimg.containers import ContainerManager
    return ContainerManager(root)


def snapshots_for(root: Path) -> SnapshotStore:
    from ociimg.layers.snapshots import SnapshotStore
    return SnapshotStore(root / "snapshots")


def _check_has_layer(snapshots: SnapshotStore, c: Container) -> None:
    keys = {a.key for a in snapshots.active()}
    if c.snapshot_key not in keys:
        raise ContainerError(f"container {c.name}: its writable layer is gone",
                             hint="the container was removed or made by an older ociimg; "
                             "run it again")


@contextlib.contextmanager
def container_root(root: Path, c: Container) -> Iterator[Path]:
    """The container's merged filesystem: its mounted rootfs while it runs, else its
    snapshot mounted on a temp dir for the duration."""
    import os
    if os.path.ismount(c.rootfs):
        yield c.rootfs
        return
    snapshots = snapshots_for(root)
    _check_has_layer(snapshots, c)
    with snapshots.mounted(c.snapshot_key) as path:
        yield path


# diff ------------------------------------------------------------------------------
def container_changes(root: Path, name_or_id: str) -> list[tuple[str, str]]:
    """``docker diff``: (kind, path) sorted by path; kind A added, C changed, D deleted."""
    c = manager_for(root).get(name_or_id)
    snapshots = snapshots_for(root)
    _check_has_layer(snapshots, c)
    return sorted(((ch.kind, ch.path) for ch in snapshots.changes(c.snapshot_key)),
                  key=lambda kp: kp[1])


# commit ----------------------------------------------------------------------------
def commit_container(root: Path, name_or_id: str,
                     options: CommitOptions = CommitOptions()) -> CommitResult:
    """Write the container's changes as a new image (see the module doc)."""
    changes = parse_changes(list(options.changes))  # bad input fails before any work
    manager = manager_for(root)
    c = manager.get(name_or_id)
    tag = image_name(options.name, c.name)
    store = Store.open(root)
    manifest, config = base_image(store, c)
    snapshots = snapshots_for(root)
    _check_has_layer(snapshots, c)
    key = c.snapshot_key
    with _paused(manager, c, options.pause):
        changed = bool(snapshots.changes(key))
        epoch = options.source_date_epoch
        layers = [NewLayer(lambda out: snapshots.diff(key, out, source_date_epoch=epoch))
                  ] if changed else []
        history = [HistoryEntry(created_by=created_by(c), comment=options.message,
                                author=options.author, empty_layer=not changed)]
        desc = write_image(store, base_config=config, base_layers=list(manifest.layers),
                           new_layers=layers, history=history, config_changes=changes,
                           tag=tag, author=options.author or None,
                           compression=options.compression,
                           created=None if epoch is None else datetime.fromtimestamp(epoch, UTC))
    top = store.read_manifest(desc)
    layer = top.layers[-1] if changed and isinstance(top, Manifest) else None
    return CommitResult(tag, desc, layer, container=c.id)


def image_name(text: str | None, container_name: str) -> str:
    """The store name for NAME[:TAG] (``busybox`` → docker.io/library/busybox:latest);
    without one, ``localhost/<container name>:latest``."""
    if text is None:
        text = f"localhost/{container_name.lower()}:latest"
    ref = parse_reference(text)
    if ref.digest is not None:
        raise InvalidArgument(f"commit: {text}: an image name cannot carry a digest",
                              hint="name the new image NAME[:TAG]; its digest is printed")
    return str(ref if ref.tag else ref.with_tag("latest"))


def created_by(c: Container) -> str:
    """docker commit's ``created_by``: the container's command."""
    command = c.meta.get("command") or []
    return " ".join(str(a) for a in command) if isinstance(command, list) else str(command)


@contextlib.contextmanager
def _paused(manager: ContainerManager, c: Container, pause: bool) -> Iterator[None]:
    """Freeze a running container while its layer is read, so the layer is one moment
    of it (docker commit --pause, the default)."""
    if not pause or manager.status(c).status != "running":
        yield
        return
    try:
        manager.pause(c)
    except (OSError, OciimgError) as exc:
        raise ContainerError(f"commit {c.name}: cannot pause it ({exc})",
                             hint="commit with --no-pause to read it while it runs") from exc
    try:
        yield
    finally:
        manager.resume(c)


def base_image(store: Store, c: Container) -> tuple[Manifest, ImageConfig]:
    """The manifest and config the container was made from, with every layer blob in
    ``store``: an image from an ``oci:`` layout has its layers copied in (verified) from
    that layout, or is refused when the layout no longer holds it."""
    digest = c.image_digest
    if digest is None:
        raise ContainerError(f"container {c.name}: no image recorded",
                             hint="it was made by an older ociimg; commit needs its image")
    source = store
    if not store.has_blob(digest):
        source = _layout_with(c, digest, store)
    manifest = _read_manifest(source, digest)
    config = parse_config(source.read_blob(manifest.config.digest, limit=MAX_CONFIG_BYTES),
                          where=f"config {manifest.config.digest}")
    check_layers(manifest, config)
    chain = chain_ids(config.diff_ids)
    if (chain[-1] if chain else None) != c.parent:
        raise InvalidDocument(f"container {c.name}: its image {digest.short} does not match "
                              "the layers it runs on", hint="the store or layout was altered")
    if source is not store:
        copy_blobs(source, store, manifest.layers)
    elif missing := [d for d in manifest.layers if not store.has_blob(d.digest)]:
        raise ImageNotFound(f"commit {c.name}: layer {missing[0].digest.short} of its image "
                            "is not in the store", hint="pull the image again, then commit")
    return manifest, config


def _layout_with(c: Container, digest: Digest, store: Store) -> Store:
    layout = c.meta.get(IMAGE_STORE_META)
    if layout and Path(layout) == store.path.absolute():
        layout = None  # it was in this store: there is nowhere else to look
    where = f" (it ran from oci:{layout})" if layout else ""
    refusal = ImageNotFound(
        f"commit {c.name}: its image {digest.short} is not in the store{where}",
        hint="copy the image into the store (ociimg copy oci:DIR:TAG NAME), run the "
             "container from there, and commit that one")
    if not layout:
        raise refusal
    source = Store(Path(layout))
    if not source.has_blob(digest):
        raise refusal
    return source


def _read_manifest(store: Store, digest: Digest) -> Manifest:
    doc = parse_manifest_or_index(store.read_blob(digest), where=f"manifest {digest}")
    if not isinstance(doc, Manifest):
        raise InvalidDocument(f"image {digest.short}: an index, not an image manifest")
    return doc
