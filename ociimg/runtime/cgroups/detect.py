"""Which cgroup layout this host has, decided from mountinfo text (pure).

* ``v2``: cgroup2 mounted and no v1 controller hierarchies (runc's "unified mode",
  normally cgroup2 at /sys/fs/cgroup).
* ``hybrid``: v1 controller hierarchies plus a cgroup2 mount (systemd puts it at
  /sys/fs/cgroup/unified). Resources go through the v1 driver, as runc does; runc
  and crun do not support hybrid beyond that (opencontainers/runc#2087).
* ``v1``: only v1 hierarchies.
"""

from __future__ import annotations

import os

from ociimg.errors import ContainerError
from ociimg.oskit.mountinfo import parse_mountinfo
from ociimg.runtime.records import field, record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal

# Super-options of a v1 cgroup mount that are not controller names.
_NOT_CONTROLLERS = {"rw", "ro", "xattr", "noprefix", "clone_children", "cpuset_v2_mode",
                    "nsdelegate", "memory_recursiveprot", "memory_localevents",
                    "favordynmods", "memory_hugetlb_accounting", "sane_behavior"}
CGROUP_ROOT = "/sys/fs/cgroup"


@record(frozen=True, slots=True)
class CgroupMount:
    mountpoint: str
    root: str  # the cgroup path mounted there ("/" unless inside a cgroup namespace)
    version: int  # 1 or 2
    controllers: frozenset[str] = frozenset()  # v1 only; "name=systemd" style included


@record(frozen=True, slots=True)
class CgroupLayout:
    mode: Literal["v1", "v2", "hybrid"]
    v1: dict[str, CgroupMount] = field(default_factory=dict)  # controller → mount
    unified: CgroupMount | None = None


def cgroup_mounts(text: str) -> list[CgroupMount]:
    """The cgroup and cgroup2 mounts in /proc/self/mountinfo text, in order."""
    mounts = []
    for m in parse_mountinfo(text):
        if m.fstype not in ("cgroup", "cgroup2"):
            continue
        mountpoint = os.path.normpath(m.mount_point)
        if m.fstype == "cgroup2":
            mounts.append(CgroupMount(mountpoint, m.root, 2))
            continue
        controllers = frozenset(o for o in m.super_options.split(",")
                                if (o not in _NOT_CONTROLLERS and "=" not in o)
                                or o.startswith("name="))
        mounts.append(CgroupMount(mountpoint, m.root, 1, controllers))
    return mounts


def _preferred(mounts: list[CgroupMount]) -> CgroupMount:
    """The mount under /sys/fs/cgroup when a hierarchy is also mounted elsewhere."""
    for m in mounts:
        if m.mountpoint.startswith(CGROUP_ROOT):
            return m
    return mounts[0]


def detect_layout(mountinfo: str) -> CgroupLayout:
    """Decide v1/v2/hybrid from mountinfo text; ContainerError when none is mounted."""
    mounts = cgroup_mounts(mountinfo)
    by_controller: dict[str, list[CgroupMount]] = {}
    for m in mounts:
        if m.version == 1:
            for c in m.controllers:
                if not c.startswith("name="):
                    by_controller.setdefault(c, []).append(m)
    v2 = [m for m in mounts if m.version == 2]
    v1 = {c: _preferred(ms) for c, ms in by_controller.items()}
    if v1:
        unified = None
        if v2:
            unified = next((m for m in v2 if m.mountpoint == f"{CGROUP_ROOT}/unified"),
                           _preferred(v2))
        return CgroupLayout("hybrid" if unified else "v1", v1, unified)
    if v2:
        exact = next((m for m in v2 if m.mountpoint == CGROUP_ROOT), None)
        return CgroupLayout("v2", {}, exact or _preferred(v2))
    raise ContainerError("cgroup: no cgroup filesystem is mounted",
                         hint="mount cgroup2 at /sys/fs/cgroup (or the v1 hierarchies)")


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """/proc/<pid>/cgroup → {controller: path}; the v2 entry is under key ""."""
    result: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split(":", 2)
        if len(parts) != 3:
            raise ContainerError(f"cgroup: malformed /proc/self/cgroup line {line!r}",
                                 hint="is /proc mounted from this pid namespace?")
        _, controllers, path = parts
        if not controllers:
            result[""] = path
            continue
        for c in controllers.split(","):
            result[c] = path
    return result


def read_host_layout() -> CgroupLayout:
    with open("/proc/self/mountinfo", "rb") as f:
        return detect_layout(os.fsdecode(f.read()))


def read_own_cgroups() -> dict[str, str]:
    with open("/proc/self/cgroup") as f:
        return parse_proc_cgroup(f.read())


def own_dir(mount: CgroupMount, own_path: str | None) -> str:
    """This process's cgroup directory inside ``mount`` (runc GetOwnCgroupPath)."""
    if not own_path:
        return mount.mountpoint
    rel = own_path
    root = mount.root.rstrip("/")
    if root and (rel == root or rel.startswith(root + "/")):
        rel = rel[len(root):]
    return join(mount.mountpoint, rel)


def join(base: str, rel: str) -> str:
    """``base`` / ``rel`` (rel taken as relative), normalised like pathlib (no trailing
    "/", no "." parts; ".." is kept for the callers that refuse it)."""
    parts = [p for p in rel.split("/") if p and p != "."]
    return os.path.join(base, *parts) if parts else base
