"""cgroup drivers: pick v1/v2 for this host and place a container's cgroup.

Usage from the runtime (the cgroup exists, with its limits, before anything joins;
the children join by themselves, so no write to cgroup.procs waits for an RCU grace
period — container.py, process.py)::

    manager = create_manager(spec["linux"].get("cgroupsPath"), container_id,
                             spec["linux"].get("resources"))
    manager.apply()                        # runc's Apply: mkdir (+ controllers / cpusets)
    manager.set()                          # runc's Set: the limits, and nothing else
    manager.self_join_files()              # v1: the child writes "0" to these itself
    manager.v2_dir()                       # v2/hybrid: the init is forked into it
    manager.add_v2(pid)                    # ... or moved there where clone3 is refused
    manager.set(new_resources)             # later updates (runc update)
    state["cgroup"] = manager.to_state()
    ...
    load_manager(state["cgroup"]).destroy()

``apply(pid)`` makes the cgroup and places a process that already runs; its limits
are a separate ``set()`` (placing never writes a limit, setting never places).

``cgroupsPath`` (runc's cgroupfs driver semantics): absent → ``/ociimg/<id>``;
absolute → below each hierarchy's root; relative → below this process's own cgroup
in each hierarchy (from /proc/self/cgroup). systemd ``slice:prefix:name`` paths
are refused. With ``root_override`` (a fake /sys/fs/cgroup for tests) the layout is
read from that directory and the runtime's own cgroup counts as the root.
"""

from __future__ import annotations

import os

from ociimg.errors import ContainerError
from ociimg.runtime.cgroups.common import CgroupManager
from ociimg.runtime.cgroups.detect import (
    CgroupLayout,
    CgroupMount,
    join,
    own_dir,
    read_host_layout,
    read_own_cgroups,
)
from ociimg.runtime.cgroups.v1 import V1Manager

__all__ = ["CgroupManager", "V1Manager", "V2Manager", "create_manager", "load_manager",
           "layout_from_tree", "cgroups_path_for"]



def __getattr__(name: str) -> object:
    # The v2 manager (and its eBPF device filter) is imported on v2 hosts only.
    if name == "V2Manager":
        from ociimg.runtime.cgroups.v2 import V2Manager
        return V2Manager
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")



_V1_CONTROLLERS = ("cpuset", "cpu", "cpuacct", "memory", "devices", "freezer", "net_cls",
                   "net_prio", "blkio", "perf_event", "hugetlb", "pids", "rdma", "misc")


def cgroups_path_for(cgroups_path: str | None, container_id: str) -> str:
    """Validate ``linux.cgroupsPath`` (default ``/ociimg/<id>``)."""
    path = cgroups_path or f"/ociimg/{container_id}"
    # systemd's slice:prefix:name (runc: "^[^/:]*:[^/:]*:[^/:]+$")
    if path.count(":") == 2 and "/" not in path and not path.endswith(":"):
        raise ContainerError(f"cgroup: systemd cgroupsPath {path!r} is not supported",
                             hint="ociimg drives cgroupfs directly: give a path like "
                                  "/mygroup/<id>")
    parts = [p for p in path.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts) or "\0" in path:
        raise ContainerError(f"cgroup: invalid cgroupsPath {path!r}",
                             hint="give a path like /ociimg/<id>, without '.' or '..'")
    return ("/" if path.startswith("/") else "") + "/".join(parts)


def layout_from_tree(root: str | os.PathLike[str]) -> CgroupLayout:
    """The layout of a (fake) /sys/fs/cgroup directory, judged by its contents."""
    root = os.path.normpath(root)
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        return CgroupLayout("v2", {}, CgroupMount(root, "/", 2))
    v1: dict[str, CgroupMount] = {}
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        entry = os.path.join(root, name)
        names = [n for n in name.split(",") if n in _V1_CONTROLLERS]
        if os.path.isdir(entry) and names:
            mount = CgroupMount(entry, "/", 1, frozenset(names))
            v1.update({n: mount for n in names})
    unified = os.path.join(root, "unified")
    if v1:
        has_unified = os.path.exists(os.path.join(unified, "cgroup.controllers"))
        return CgroupLayout("hybrid" if has_unified else "v1", v1,
                            CgroupMount(unified, "/", 2) if has_unified else None)
    raise ContainerError(f"cgroup: no cgroup hierarchy found under {root}",
                         hint="point root_override at a cgroup tree")


def _host_layout() -> tuple[CgroupLayout, dict[str, str]]:
    return read_host_layout(), read_own_cgroups()


def create_manager(cgroups_path: str | None, container_id: str, resources: dict | None,
                   *, root_override: str | os.PathLike[str] | None = None) -> CgroupManager:
    """A manager for the container's cgroup on this host (nothing is created yet).

    A config without ``linux.resources`` still gets a resources dict: the first ``set()``
    always writes the device rules (deny all, then runc's default allow list), so a
    container never starts with every host device open to it.
    """
    path = cgroups_path_for(cgroups_path, container_id)
    if resources is None:
        resources = {}
    if root_override is not None:
        layout, own = layout_from_tree(root_override), {}
    else:
        layout, own = _host_layout()
    if layout.mode == "v2":
        assert layout.unified is not None
        base = own_dir(layout.unified, own.get("")) if not path.startswith("/") \
            else layout.unified.mountpoint
        rel = os.path.relpath(join(base, path), layout.unified.mountpoint)
        from ociimg.runtime.cgroups.v2 import V2Manager
        # A fake tree is no cgroup2 filesystem: no BPF device program can attach there.
        return V2Manager(layout.unified.mountpoint, rel, resources,
                         device_filter=root_override is None)
    dirs: dict[str, str] = {}
    for controller, mount in layout.v1.items():
        base = own_dir(mount, own.get(controller)) if not path.startswith("/") \
            else mount.mountpoint
        dirs[controller] = join(base, path)
    unified_dir = None
    if layout.unified is not None:
        base = own_dir(layout.unified, own.get("")) if not path.startswith("/") \
            else layout.unified.mountpoint
        unified_dir = join(base, path)
    roots = {c: m.mountpoint for c, m in layout.v1.items()}
    return V1Manager.from_dirs(dirs, roots, resources, unified_dir)


def load_manager(state: dict, resources: dict | None = None) -> CgroupManager:
    """Rebuild a manager from ``to_state()`` output (e.g. in ``delete``)."""
    try:
        if state["version"] == 2:
            from ociimg.runtime.cgroups.v2 import V2Manager
            return V2Manager(state["root"], state["path"], resources,
                             device_filter=state.get("device_filter", True))
        if state["version"] == 1:
            unified = state.get("unified")
            return V1Manager.from_dirs(dict(state["paths"]), dict(state["roots"]),
                                       resources, unified)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ContainerError(f"cgroup: malformed saved cgroup state: {exc}",
                             hint="delete the container with --force") from exc
    raise ContainerError(f"cgroup: unknown saved cgroup version {state.get('version')!r}",
                         hint="delete the container with --force")
