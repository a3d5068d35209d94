"""Named volumes: ``ROOT/volumes/<name>/`` with ``volume.json`` and the data in ``_data/``.

A volume appears whole (made as ``.tmp-*`` and renamed). It is in use while a container
(any state) records it in its ``meta.json`` ``mounts``; ``remove`` refuses one in use.
A container create holds the volumes lock shared from the volume's creation until its
meta.json is in place, ``remove``/``prune`` hold it exclusive.

Copy-up (docker's rule): when a volume is mounted and empty, what the image has at the
mount path is copied into it first. The image's tree is hostile: the mount path is
resolved inside the rootfs (a symlink cannot lead out), every entry below it is opened
relative to its parent without following symlinks (symlinks are copied as symlinks), and
device nodes are not copied. A volume's data is written to by containers: nothing on the
host ever follows a path through it (the runtime binds ``_data`` itself; removal never
follows a link).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ociimg.errors import AlreadyExists, InvalidArgument, NotFound, OciimgError
from ociimg.fsutil import atomic_write, climb, fsync_dir, ident, remove_tree, walk_at

# docker's volume name rule (volume/local: ^[a-zA-Z0-9][a-zA-Z0-9_.-]+$), bounded.
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{1,127}")
_DIR_READ = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_META = "volume.json"
MAX_IMAGE_VOLUMES = 256
DATA = "_data"


class VolumeInUse(OciimgError):
    exit_code = 1


@dataclass(frozen=True)
class VolumeMount:
    """A volume to mount: ``name`` None makes a new anonymous one."""

    destination: str
    name: str | None = None
    readonly: bool = False
    nocopy: bool = False               # --mount volume-nocopy: no copy-up
    propagation: str = "rprivate"


@dataclass(frozen=True)
class Volume:
    name: str
    path: Path                         # ROOT/volumes/NAME
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def data(self) -> Path:
        return self.path / DATA

    @property
    def anonymous(self) -> bool:
        return bool(self.meta.get("anonymous"))

    def as_dict(self) -> dict[str, Any]:
        return {"Name": self.name, "Driver": "local", "Mountpoint": str(self.data),
                "CreatedAt": self.meta.get("created"), "Labels": self.meta.get("labels") or {},
                "Scope": "local", "Options": {}, "Anonymous": self.anonymous}


def check_volume_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InvalidArgument(f"invalid volume name {name!r}",
                              hint="use 2-128 characters [a-zA-Z0-9_.-], starting with a "
                                   "letter or digit")
    return name


class VolumeStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.base = self.root / "volumes"

    @contextlib.contextmanager
    def locked(self, *, shared: bool = False) -> Iterator[None]:
        from ociimg.store import locks
        self.base.mkdir(mode=0o700, parents=True, exist_ok=True)
        with locks.locked(self.base / ".lock", shared=shared, blocking=True):
            yield

    # Reading ------------------------------------------------------------------------
    def get(self, name: str) -> Volume:
        check_volume_name(name)
        path = self.base / name
        meta = _read_meta(path)
        if meta is None:
            raise NotFound(f"no such volume: {name}",
                           hint="list volumes with `ociimg volume ls`")
        return Volume(name, path, meta)

    def list(self) -> list[Volume]:
        if not self.base.is_dir():
            return []
        out = []
        for entry in sorted(os.listdir(self.base)):
            meta = _read_meta(self.base / entry) if _NAME.fullmatch(entry) else None
            if meta is not None:
                out.append(Volume(entry, self.base / entry, meta))
        return out

    def users(self) -> dict[str, list[str]]:
        """Volume name → ids of the containers that record it."""
        from ociimg.containers.store import list_containers
        out: dict[str, list[str]] = {}
        for c in list_containers(self.root):
            for m in c.meta.get("mounts") or []:
                if isinstance(m, dict) and m.get("type") == "volume" and m.get("name"):
                    out.setdefault(str(m["name"]), []).append(c.id)
        return out

    # Writing ------------------------------------------------------------------------
    def create(self, name: str | None = None, *, labels: dict[str, str] | None = None,
               exist_ok: bool = False) -> Volume:
        """A new volume (anonymous: a random name) or, with ``exist_ok``, the one there."""
        anonymous = name is None
        name = secrets.token_hex(32) if name is None else check_volume_name(name)
        final = self.base / name
        if _read_meta(final) is not None:
            if exist_ok:
                return self.get(name)
            raise AlreadyExists(f"volume {name} already exists")
        self.base.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.base / f".tmp-{secrets.token_hex(8)}"
        tmp.mkdir(mode=0o700)
        try:
            (tmp / DATA).mkdir(mode=0o755)
            meta = {"name": name, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "labels": dict(labels or {}), "anonymous": anonymous}
            atomic_write(tmp / _META, json.dumps(meta, indent=2).encode(), mode=0o600)
            os.rename(tmp, final)
        except OSError as exc:
            remove_tree(tmp)
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY) and exist_ok:
                return self.get(name)  # made by a concurrent create
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise AlreadyExists(f"volume {name} already exists") from None
            raise
        except BaseException:
            remove_tree(tmp)
            raise
        fsync_dir(self.base)
        return Volume(name, final, meta)

    def remove(self, name: str, *, force: bool = False) -> None:
        with self.locked():
            v = self.get(name)
            users = self.users().get(v.name)
            if users and not force:
                raise VolumeInUse(f"volume {name} is in use by container {users[0][:12]}",
                                  hint="remove that container first (ociimg rm)")
            self._delete(v)

    def prune(self, *, named: bool = False) -> list[str]:
        """Remove the anonymous volumes no container uses (docker >= 23), with ``named``
        the named ones too; their names."""
        with self.locked():
            used = self.users()
            gone = [v.name for v in self.list() if v.name not in used
                    and (named or v.anonymous)]
            for name in gone:
                self._delete(self.get(name))
        return gone

    def _delete(self, v: Volume) -> None:
        # Renamed away first: a half-removed volume never looks like one.
        trash = self.base / f".tmp-rm-{secrets.token_hex(8)}"
        os.rename(v.path, trash)
        remove_tree(trash)

    def drop_unused(self, names: list[str]) -> None:
        """Undo of a failed create: the volumes it made (the lock is held already)."""
        for name in names:
            with contextlib.suppress(OciimgError, OSError):
                self._delete(self.get(name))

    def remove_anonymous(self, names: list[str]) -> None:
        """A removed container's anonymous volumes (``rm -v``, ``--rm``), unless another
        container still uses one (``--volumes-from``)."""
        with self.locked():
            used = self.users()
            for name in names:
                with contextlib.suppress(NotFound, InvalidArgument):
                    v = self.get(name)
                    if v.anonymous and not used.get(name):
                        self._delete(v)


def _read_meta(path: Path) -> dict[str, Any] | None:
    try:
        fd = os.open(path / _META, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        doc = json.loads(os.read(fd, 1 << 20))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    return doc if isinstance(doc, dict) else None


# Copy-up ---------------------------------------------------------------------------
def copy_up(rootfs: Path, path: str, volume: Volume) -> bool:
    """What the image has at ``path`` (a dir, resolved inside ``rootfs``) into
    ``volume``'s data when that is empty (docker); True if something was copied."""
    from ociimg.oskit.paths import resolve_in_root
    dst = os.open(volume.data, _DIR_READ)
    try:
        if os.listdir(dst):
            return False
        rootfd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            src = resolve_in_root(rootfd, path, flags=os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return False  # nothing (or no dir) there in the image: an empty volume
        finally:
            os.close(rootfd)
        try:
            _copy_tree(src, dst)
        finally:
            os.close(src)
    finally:
        os.close(dst)
    return True


def _copy_tree(src: int, dst: int) -> None:
    from ociimg.layers.fsops import copy_entry, copy_meta
    state = {"dst": os.dup(dst)}
    parents: list[tuple[int, int]] = []

    def visit(dirfd: int, name: str, st: os.stat_result, rel: list[str]) -> bool:
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) or stat.S_ISSOCK(st.st_mode):
            return False  # no device nodes from an image onto the host's disk
        if not stat.S_ISDIR(st.st_mode):
            copy_entry(dirfd, name, state["dst"], st, rootless=False)
            return False
        os.mkdir(name, 0o700, dir_fd=state["dst"])
        child = os.open(name, _DIR_READ, dir_fd=state["dst"])
        parents.append(ident(os.fstat(state["dst"])))
        os.close(state["dst"])
        state["dst"] = child
        return True

    def leave(dirfd: int, name: str, st: os.stat_result, rel: list[str]) -> None:
        # On the fds, not by name: nothing here resolves a path in the volume.
        src_dir = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
        try:
            if ident(os.fstat(src_dir)) != ident(st):
                raise OSError(errno.ESTALE, f"{name}: replaced during copy-up")
            copy_meta(src_dir, None, state["dst"], st, rootless=False)
        finally:
            os.close(src_dir)
        child, state["dst"] = state["dst"], -1
        state["dst"] = climb(child, parents.pop())

    try:
        walk_at(src, visit, leave)
        copy_meta(src, None, dst, os.fstat(src), rootless=False)  # the mount point's owner/mode
    finally:
        if state["dst"] != -1:
            os.close(state["dst"])


def _check_data_dir(v: Volume) -> None:
    """The runtime binds ``_data`` by path: a ``_data`` that is not a real directory
    (a symlink to a host dir) would put that dir in the container (with nocopy, or a
    volume in use, nothing else opens it first)."""
    try:
        st = os.lstat(v.data)
    except OSError as exc:
        st = None
        why = exc.strerror
    else:
        why = "not a directory"
    if st is None or not stat.S_ISDIR(st.st_mode):
        from ociimg.errors import IntegrityError
        raise IntegrityError(f"volume {v.name}: {v.data}: {why}",
                             hint="the volume was tampered with: remove it "
                                  "(ociimg volume rm) and create it again")


def anonymous_volumes(meta: dict[str, Any]) -> list[str]:
    """The anonymous volumes a container's meta.json records."""
    return [m["name"] for m in meta.get("mounts") or []
            if isinstance(m, dict) and m.get("anonymous") and m.get("name")]


# Planning a container's mounts -----------------------------------------------------
@dataclass
class MountPlan:
    """What a new container mounts: bind mounts for its bundle, and the records kept in
    its meta.json (``mounts``: what ``volume rm`` checks and ``--volumes-from`` copies)."""

    binds: list[Any] = field(default_factory=list)      # bundle BindMounts
    records: list[dict[str, Any]] = field(default_factory=list)
    created: list[str] = field(default_factory=list)    # volumes made for it (undo)


def plan_mounts(volumes: VolumeStore, rootfs: Path, *, explicit: list[VolumeMount],
                binds: list[Any], inherited: list[dict[str, Any]],
                image_volumes: list[str]) -> MountPlan:
    """Explicit volumes and binds win over ``inherited`` (--volumes-from records), which win
    over the image's VOLUMEs (each an anonymous volume). Call under ``volumes.locked()``
    and keep it until the container's meta.json records the plan."""
    from ociimg.bundle import BindMount
    plan = MountPlan()
    taken: set[str] = set()

    def claim(dest: str) -> bool:
        key = os.path.normpath(dest)
        if key in taken:
            return False
        taken.add(key)
        return True

    users: dict[str, list[str]] | None = None  # read only when a copy-up may happen
    for b in binds:
        b = b if isinstance(b, BindMount) else BindMount(*b)  # BundleOptions takes tuples too
        if claim(b.destination):
            plan.binds.append(b)
            plan.records.append({"type": "bind", "source": b.source,
                                 "destination": b.destination, "rw": not b.readonly})
    wanted = [*explicit]
    for rec in inherited:
        ro = not rec.get("rw", True)
        if rec.get("type") == "volume":
            wanted.append(VolumeMount(rec["destination"], rec["name"], ro, nocopy=True))
        elif rec.get("type") == "bind" and claim(rec["destination"]):
            plan.binds.append(BindMount(rec["source"], rec["destination"], ro))
            plan.records.append(dict(rec))
    if len(image_volumes) > MAX_IMAGE_VOLUMES:  # each one a new directory on the host
        from ociimg.errors import InvalidDocument
        raise InvalidDocument(f"image config: {len(image_volumes)} VOLUMEs (at most "
                              f"{MAX_IMAGE_VOLUMES})", hint="the image is malformed or hostile")
    # The image's VOLUMEs are its data: "/" (or "/..") would hide the whole rootfs.
    wanted += [VolumeMount(dest) for dest in image_volumes if os.path.normpath(dest).strip("/")]
    try:
        for vm in wanted:
            if not claim(vm.destination):
                continue
            made = vm.name is None or _read_meta(volumes.base / vm.name) is None
            v = volumes.create(vm.name, exist_ok=True)
            if made:
                plan.created.append(v.name)
            _check_data_dir(v)
            if not vm.nocopy:
                users = volumes.users() if users is None else users
                if not users.get(v.name):
                    copy_up(rootfs, vm.destination, v)
            plan.binds.append(BindMount(str(v.data), vm.destination, vm.readonly,
                                        vm.propagation))
            plan.records.append({"type": "volume", "name": v.name, "destination":
                                 vm.destination, "rw": not vm.readonly,
                                 "anonymous": v.anonymous})
    except BaseException:
        volumes.drop_unused(plan.created)
        raise
    return plan
