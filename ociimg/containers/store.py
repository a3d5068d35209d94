"""The container store: ``ROOT/containers/<id>/`` directories and their records.

A container directory holds a runtime-spec bundle (config.json, rootfs/), ``meta.json``
(name, image, manifest digest, parent chain id, runtime), and, written by its monitor,
``monitor.json`` (the monitor's pid), ``log`` (detached output) and ``exit.json`` once
the program has exited. A directory appears under its id only whole (made as ``.tmp-<id>``
and renamed). Names are symlinks ``containers/.names/NAME -> ID`` taken under a lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ociimg.digest import Digest
from ociimg.errors import AlreadyExists, ContainerNotFound, InvalidArgument, OciimgError
from ociimg.fsutil import atomic_write, remove_tree
from ociimg.store import locks
from ociimg.store.files import read_regular

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
        return self.id

    @property
    def image(self) -> str | None:
        return self.meta.get("image")

    @property
    def image_digest(self) -> Digest | None:
        digest = self.meta.get("digest")
        return Digest.parse(digest) if digest else None

    @property
    def parent(self) -> Digest | None:
        """The top chain id of the image's layers (the snapshot the rootfs is over)."""
        parent = self.meta.get("parent")
        return Digest.parse(parent) if parent else None


def containers_dir(root: Path) -> Path:
    return root / "containers"


def new_id() -> str:
    return secrets.token_hex(32)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@contextlib.contextmanager
def containers_locked(root: Path, *, shared: bool = False) -> Iterator[None]:
    """Creating a container holds this shared, ``gc`` exclusive (without waiting): until
    its meta.json is in place, nothing but this lock tells gc that the snapshots under the
    new rootfs are in use (an ``oci:`` image is not in the store to keep them)."""
    with locks.locked(containers_dir(root) / ".lock", shared=shared, blocking=shared):
        yield


# Names -----------------------------------------------------------------------------
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def check_name(name: str) -> None:
    """Docker's container name grammar, [a-zA-Z0-9][a-zA-Z0-9_.-]*: a name is also a
    file name under containers/.names."""
    if not name or not name[0].isascii() or not name[0].isalnum() \
            or not set(name) <= _NAME_CHARS or len(name) > 255:
        raise InvalidArgument(f"invalid container name {name!r}",
                              hint="use letters, digits, '_', '.' and '-', starting with a "
                                   "letter or digit")


def reserve_name(root: Path, name: str, cid: str) -> None:
    """Take ``name`` for container ``cid``: a symlink containers/.names/NAME -> ID, made
    under a lock, so two concurrent ``run --name X`` cannot both get it. A link whose
    container no longer exists (removed, or its create crashed) is taken over."""
    check_name(name)
    names = containers_dir(root) / ".names"
    names.mkdir(parents=True, exist_ok=True, mode=0o700)
    link = names / name
    with locks.locked(names / ".lock"):  # names cannot start with '.'
        with contextlib.suppress(FileNotFoundError):
            owner = os.readlink(link)
            if _exists_or_creating(root, owner) or owner == cid:
                raise AlreadyExists(f"container name {name} is already in use by "
                                    f"{owner[:12]}", hint=f"remove it first: ociimg rm {name}")
            os.unlink(link)
        for c in list_containers(root):  # named before names were links
            if c.meta.get("name") == name:
                raise AlreadyExists(f"container name {name} is already in use by "
                                    f"{c.id[:12]}", hint=f"remove it first: ociimg rm {name}")
        os.symlink(cid, link)


def release_name(root: Path, name: str, cid: str) -> None:
    link = containers_dir(root) / ".names" / name
    with contextlib.suppress(OSError):
        if os.readlink(link) == cid:
            os.unlink(link)


def _exists_or_creating(root: Path, cid: str) -> bool:
    base = containers_dir(root)
    return (base / cid).is_dir() or (base / f".tmp-{cid}").is_dir()


# Records ---------------------------------------------------------------------------
def read_json(path: Path, what: str) -> dict[str, Any] | None:
    """A small JSON record of ours, None if absent (never follows a symlink)."""
    try:
        doc = json.loads(read_regular(path, _META_MAX, what))
    except FileNotFoundError:
        return None
    except (OciimgError, OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def write_json(path: Path, doc: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(doc, indent=2).encode())


def load(path: Path) -> Container | None:
    meta = read_json(path / "meta.json", f"container {path.name} meta.json")
    return Container(path.name, path, meta) if meta is not None else None


def list_containers(root: Path) -> list[Container]:
    base = containers_dir(root)
    if not base.is_dir():
        return []
    out = [c for d in base.iterdir() if not d.name.startswith(".") and (c := load(d))]
    return sorted(out, key=lambda c: (c.meta.get("created", ""), c.id))


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


def write_exit_record(path: Path, code: int) -> None:
    write_json(path / "exit.json", {"exitCode": code, "finished": now()})


def remove_dir(c: Container) -> None:
    """The directory and the name; the rootfs must be unmounted already."""
    remove_tree(c.path)
    if c.meta.get("name"):
        release_name(c.path.parent.parent, c.meta["name"], c.id)
