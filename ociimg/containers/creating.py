"""A container made: its name reserved, its rootfs mounted, its volumes and network
planned, its bundle and meta.json written in a temporary directory renamed into place only
when whole (ContainerManager.create, under the containers lock)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from ociimg.containers import store
from ociimg.containers.eventlog import append_event
from ociimg.containers.policies import healthcheck_record
from ociimg.containers.store import Container
from ociimg.errors import ContainerError
from ociimg.fsutil import fsync_dir, remove_tree

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ociimg.bundle import BundleOptions
    from ociimg.containers.manager import ContainerManager, CreateOptions
    from ociimg.containers.protocol import OciRuntime
    from ociimg.containers.resolved import ResolvedImage
    from ociimg.events import Progress


def create_container(m: ContainerManager, image: ResolvedImage, options: CreateOptions,
                     runtime: OciRuntime, progress: Progress) -> Container:
    """The container's bundle with its rootfs mounted; nothing of it is left on failure."""
    from ociimg.bundle import to_runtime_config, write_bundle
    from ociimg.containers.resolved import warn_unsafe_labels
    from ociimg.containers.rootfs import (
        mount_rootfs,
        mount_snapshot,
        release_rootfs,
        remove_rootfs,
    )
    from ociimg.containers.volumes import VolumeStore
    cid = store.new_id()
    created_volumes: list[str] = []
    final = store.containers_dir(m.root) / cid
    tmp = final.with_name(f".tmp-{cid}")
    tmp.mkdir(parents=True, mode=0o700)
    # Held from the volumes' planning until meta.json records them (volume rm and
    # prune look there), not while the rootfs is unpacked.
    volumes_lock = contextlib.ExitStack()
    try:
        if options.name:
            store.reserve_name(m.root, options.name, cid)
        if options.snapshot is None:
            mount_rootfs(image, m.root, tmp, cid, progress, volatile=options.remove)
        else:
            mount_snapshot(m.root, tmp, options.snapshot)
        volumes_lock.enter_context(VolumeStore(m.root).locked())
        plan = _plan_mounts(m, image, options, tmp / "rootfs")
        created_volumes = plan.created
        bundle_options = dataclasses.replace(options.bundle, mounts=plan.binds)
        if bundle_options.hostname is None:
            bundle_options = dataclasses.replace(bundle_options, hostname=cid[:12])
        bundle_options = _prepare_network(m, image, options, bundle_options, cid, tmp)
        config = to_runtime_config(image.config, bundle_options, tmp / "rootfs")
        warn_unsafe_labels(image, progress)
        write_bundle(tmp, config)
        meta = _meta_record(cid, image, options, runtime, config["process"]["args"],
                            plan.records, tty=bool(bundle_options.terminal))
        # The network files and meta.json were fsynced, their names are made durable
        # here, once, before the directory is renamed into place.
        store.write_json(tmp / "meta.json", meta, sync_dir=False)
        fsync_dir(tmp)
        os.rename(tmp, final)
    except BaseException:
        release_rootfs(tmp)
        if options.snapshot is None:
            remove_rootfs(m.root, cid)
        remove_tree(tmp)
        if options.name:
            store.release_name(m.root, options.name, cid)
        VolumeStore(m.root).drop_unused(created_volumes)
        raise
    finally:
        volumes_lock.close()
    append_event(m.root, "create", meta)
    return Container(cid, final, meta)


def _meta_record(cid: str, image: ResolvedImage, options: CreateOptions, runtime: OciRuntime,
                 command: list[str], mounts: list[dict[str, Any]], *, tty: bool
                 ) -> dict[str, Any]:
    """meta.json: what the container was made from and with."""
    chain = image.chain()
    meta: dict[str, Any] = {"id": cid, "name": options.name, "image": image.name,
        "digest": str(image.descriptor.digest), "command": command,
        "imageStore": str(image.store.path.absolute()),  # commit's base layers
        "created": store.now(), "createdNs": time.time_ns(),
        "snapshots": [str(d) for d in chain], "parent": str(chain[-1]) if chain else None,
        "stopSignal": options.stop_signal or image.config.stop_signal or "SIGTERM",
        "stopTimeout": options.stop_timeout, "mounts": mounts,
        "autoRemove": options.remove, "interactive": options.interactive,
        "tty": tty, "runtime": runtime.describe(), "restart": options.restart.as_dict(),
        "labels": dict(options.labels),
        "healthcheck": healthcheck_record(options.healthcheck, image)}
    if options.snapshot is not None:
        meta["snapshotKey"] = options.snapshot
    return meta


def _plan_mounts(m: ContainerManager, image: ResolvedImage, options: CreateOptions,
                 rootfs: Path) -> Any:
    from ociimg.containers.volumes import VolumeStore, plan_mounts
    inherited = []
    for key, readonly in options.volumes_from:
        for rec in m.get(key).meta.get("mounts") or []:
            if isinstance(rec, dict) and rec.get("type") in ("volume", "bind"):
                inherited.append({**rec, "rw": rec.get("rw", True) if readonly is None
                                  else not readonly})
    # A build step's container keeps what RUN writes under a VOLUME (BuildKit: VOLUME
    # is metadata during a build): no anonymous volumes for it.
    image_volumes = {} if options.snapshot else image.config.config.get("Volumes") or {}
    return plan_mounts(
        VolumeStore(m.root), rootfs, explicit=options.volumes,
        binds=list(options.bundle.mounts), inherited=inherited,
        image_volumes=sorted(v for v in image_volumes if isinstance(v, str)
                             and v.startswith("/")) if isinstance(image_volumes, dict)
        else [])


def _prepare_network(m: ContainerManager, image: ResolvedImage, options: CreateOptions,
                     bundle: BundleOptions, cid: str, tmp: Path) -> BundleOptions:
    """The container's network record and /etc files; the bundle joins its netns."""
    import ociimg.network as network
    net = options.network or network.NetworkOptions(
        mode="host" if bundle.network == "host" else "none")
    joined = _joined_netns(m, net.container) if net.mode == "container" else None
    ports = image.config.config.get("ExposedPorts") or {}
    exposed = sorted(p for p in ports if isinstance(p, str)) if isinstance(ports, dict) \
        else []
    prepared = network.prepare(m.root, tmp, cid, options.name, bundle.hostname or cid,
                               net, exposed, joined,
                               mount_dir=store.containers_dir(m.root) / cid)
    return dataclasses.replace(
        bundle, network=prepared.bundle_network, netns_path=prepared.netns_path,
        mounts=[*bundle.mounts, *prepared.mounts], env=[*prepared.env, *bundle.env])


def _joined_netns(m: ContainerManager, key: str | None) -> tuple[str, Path]:
    """``--network container:NAME``: the running container's netns and directory."""
    import ociimg.network as network
    other = m.get(key or "")
    st = m.status(other)
    if st.status != "running" or st.pid is None:
        raise ContainerError(f"container {other.name} is {st.status}, not running",
                             hint="--network container:NAME joins a running container")
    record = network.read_record(other.path) or {}
    path = record.get("netns") if record.get("mode") in ("bridge", "container") \
        else None
    return path or f"/proc/{st.pid}/ns/net", other.path

