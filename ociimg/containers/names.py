"""Container names: symlinks ``containers/.names/NAME -> ID``, and removing a container's
files. Light on purpose: the monitor removes auto-removed containers with it."""

from __future__ import annotations

import os

from ociimg.errors import AlreadyExists, InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any


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
    from ociimg.containers.store import list_containers
    from ociimg.store import locks
    names = root / "containers" / ".names"
    names.mkdir(parents=True, exist_ok=True, mode=0o700)
    link = names / name
    with locks.locked(names / ".lock"):  # names cannot start with '.'
        try:
            owner = os.readlink(link)
        except FileNotFoundError:
            owner = None
        if owner is not None:
            if _exists_or_creating(root, owner) or owner == cid:
                raise AlreadyExists(f"container name {name} is already in use by "
                                    f"{owner[:12]}", hint=f"remove it first: ociimg rm {name}")
            os.unlink(link)
        for c in list_containers(root):  # named before names were links
            if c.meta.get("name") == name:
                raise AlreadyExists(f"container name {name} is already in use by "
                                    f"{c.id[:12]}", hint=f"remove it first: ociimg rm {name}")
        os.symlink(cid, link)


def release_name(root: str | os.PathLike[str], name: str, cid: str) -> None:
    link = os.path.join(root, "containers", ".names", name)
    try:
        if os.readlink(link) == cid:
            os.unlink(link)
    except OSError:
        pass


def _exists_or_creating(root: Path, cid: str) -> bool:
    base = root / "containers"
    return (base / cid).is_dir() or (base / f".tmp-{cid}").is_dir()


def remove_container_files(path: str | os.PathLike[str], meta: dict[str, Any]) -> None:
    """A container's directory (its rootfs unmounted already), then its name."""
    from ociimg.fsutil import remove_tree
    remove_tree(path)
    if meta.get("name"):
        release_name(os.path.dirname(os.path.dirname(os.fspath(path))), meta["name"],
                     meta["id"])
