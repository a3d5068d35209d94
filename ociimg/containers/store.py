"""The container store: ``ROOT/containers/<id>/`` directories and their records.

A container directory holds a runtime-spec bundle (config.json, rootfs/), ``meta.json``
(name, image, manifest digest, parent chain id, runtime, restart policy, health check,
labels, tty), and, written by its monitor, ``monitor.json`` (the monitor's pid),
``run.json`` (the current run's start and restart count), ``ctr.log`` (every run's
output), ``health.json``, the ``attach`` socket and ``exit.json`` once the program has
exited; ``stopped`` marks a stop the restart policy must respect. A directory appears
under its id only whole (made as ``.tmp-<id>`` and renamed). Names are symlinks
``containers/.names/NAME -> ID`` taken under a lock; ``containers/.events`` is the
event log (eventlog.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ociimg.containers.names import (
    check_name,
    release_name,
    remove_container_files,
    reserve_name,
)
from ociimg.errors import ContainerNotFound, OciimgError

TYPE_CHECKING = False  # the monitor removes auto-removed containers: the store loads lazily
if TYPE_CHECKING:
    from ociimg.digest import Digest

_META_MAX = 1 << 20


@dataclass(frozen=True)
class Container:
    id: str
    path: Path
    meta: dict[str, Any]

    @property
    def name(self) -> str:
        return self.meta.get("name") or self.id[:12]

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    @property
    def snapshot_key(self) -> str:
        return self.meta.get("snapshotKey") or self.id

    @property
    def image(self) -> str | None:
        return self.meta.get("image")

    @property
    def image_digest(self) -> Digest | None:
        from ociimg.digest import Digest
        digest = self.meta.get("digest")
        return Digest.parse(digest) if digest else None

    @property
    def parent(self) -> Digest | None:
        """The top chain id of the image's layers (the snapshot the rootfs is over)."""
        from ociimg.digest import Digest
        parent = self.meta.get("parent")
        return Digest.parse(parent) if parent else None


def containers_dir(root: Path) -> Path:
    return root / "containers"


def new_id() -> str:
    return os.urandom(32).hex()  # secrets.token_hex's bytes, without its hmac/OpenSSL import


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@contextlib.contextmanager
def containers_locked(root: Path, *, shared: bool = False) -> Iterator[None]:
    """Creating a container holds this shared, ``gc`` exclusive (without waiting): until
    its meta.json is in place, nothing but this lock tells gc that the snapshots under the
    new rootfs are in use (an ``oci:`` image is not in the store to keep them)."""
    from ociimg.store import locks
    with locks.locked(containers_dir(root) / ".lock", shared=shared, blocking=shared):
        yield


# Records ---------------------------------------------------------------------------
# read_json's bytes by path: `ps` and the API's container list read every container's
# records on every call. A file whose identity (inode, size, mtime, ctime) is unchanged
# is not read again; one changed within _RACY_NS of the look is never kept (a rewrite in
# place within its timestamps' granularity would keep that identity).
_RECORDS: dict[str, tuple[tuple[int, ...], bytes]] = {}
_RECORDS_MAX = 8192
_RACY_NS = 100_000_000


def _record_bytes(path: Path, what: str) -> bytes:
    import stat

    from ociimg.store.files import read_regular
    key = os.fspath(path)
    try:
        st = os.lstat(key)  # as read_regular's open: a final symlink is not followed
    except FileNotFoundError:
        _RECORDS.pop(key, None)
        raise
    ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    hit = _RECORDS.get(key)
    if hit is not None and hit[0] == ident and stat.S_ISREG(st.st_mode):
        return hit[1]
    data = read_regular(path, _META_MAX, what)  # refuses what is not a regular file
    settled = time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > _RACY_NS
    if settled and len(data) == st.st_size:  # else it changed while we read
        if len(_RECORDS) >= _RECORDS_MAX:
            _RECORDS.clear()
        _RECORDS[key] = (ident, data)
    return data


def read_json(path: Path, what: str) -> dict[str, Any] | None:
    """A small JSON record of ours, None if absent (never follows a symlink)."""
    try:
        doc = json.loads(_record_bytes(path, what))
    except FileNotFoundError:
        return None
    except (OciimgError, OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def write_json(path: Path, doc: dict[str, Any], *, sync_dir: bool = True) -> None:
    """``sync_dir``: as fsutil.atomic_write's."""
    from ociimg.fsutil import atomic_write
    atomic_write(path, json.dumps(doc, indent=2).encode(), sync_dir=sync_dir)


def load(path: Path) -> Container | None:
    meta = read_json(path / "meta.json", f"container {path.name} meta.json")
    return Container(path.name, path, meta) if meta is not None else None


def list_containers(root: Path) -> list[Container]:
    base = containers_dir(root)
    if not base.is_dir():
        return []
    out = [c for d in base.iterdir() if not d.name.startswith(".") and (c := load(d))]
    # createdNs orders containers made within the same second (docker's ps: newest first)
    return sorted(out, key=lambda c: (c.meta.get("created", ""), c.meta.get("createdNs", 0),
                                      c.id))


def find_container(root: Path, key: str) -> Container:
    """By name, full id, or a unique id prefix."""
    items = list_containers(root)
    for c in items:
        if c.meta.get("name") == key or c.id == key:
            return c
    matches = [c for c in items if c.id.startswith(key)] if len(key) >= 3 else []
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ContainerNotFound(f"container {key}: ambiguous id prefix",
                                hint="give more characters of the id")
    raise ContainerNotFound(f"no such container: {key}", hint="list them with: ociimg ps -a")


def exit_record(c: Container) -> dict[str, Any] | None:
    return read_json(c.path / "exit.json", f"container {c.id} exit.json")


def remove_dir(c: Container) -> None:
    """The directory and the name; the rootfs must be unmounted already."""
    remove_container_files(c.path, c.meta)


__all__ = ["Container", "check_name", "containers_dir", "containers_locked",
           "exit_record", "find_container", "list_containers", "load", "new_id", "now",
           "read_json", "release_name", "remove_dir", "reserve_name", "write_json"]
