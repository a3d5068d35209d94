"""cgroup v1 driver: one directory per controller hierarchy it is given.

Order and quirks follow runc's ``fs`` driver: cpuset directories get their parent's
``cpuset.cpus``/``cpuset.mems`` before any task joins (a new cpuset is empty and
refuses tasks); memory and memory+swap limits are written in whichever order keeps
``memsw >= limit`` true at every step; devices start from "deny all" and then
replay the spec's rules in order, followed by runc's default allow list.
"""

from __future__ import annotations

import _signal as signal
import os
import time

from ociimg.errors import ContainerError
from ociimg.runtime.cgroups.common import (
    CgroupManager,
    add_pid,
    device_rules,
    inside,
    read_pids,
    read_value,
    remove_cgroup,
    signal_pids,
    wait_empty,
    write_value,
)
from ociimg.runtime.lazylog import get_logger

log = get_logger(__name__)

_PATH_PREFERENCE = ("memory", "pids", "cpu", "devices", "freezer", "cpuset")


def _rel(path: str) -> str:
    rel = path.strip("/")
    if not rel or ".." in rel.split("/"):
        raise ContainerError(f"cgroup: invalid cgroup path {path!r}",
                             hint="give a path below the cgroup root, without '..'")
    return rel


class V1Manager(CgroupManager):
    def __init__(self, mounts: dict[str, str], path: str, resources: dict | None = None,
                 *, unified: str | None = None) -> None:
        rel = _rel(path)
        dirs = {c: os.path.join(m, rel) for c, m in mounts.items()}
        self._setup(dirs, dict(mounts), resources,
                    None if unified is None else os.path.join(unified, rel))

    @classmethod
    def from_dirs(cls, dirs: dict[str, str], roots: dict[str, str],
                  resources: dict | None = None, unified_dir: str | None = None
                  ) -> V1Manager:
        """A manager on explicit per-controller directories (relative cgroupsPath, state)."""
        self = cls.__new__(cls)
        self._setup(dirs, roots, resources, unified_dir)
        return self

    def _setup(self, dirs: dict[str, str], roots: dict[str, str], resources: dict | None,
               unified_dir: str | None) -> None:
        dirs = {c: os.path.normpath(d) for c, d in dirs.items()}
        roots = {c: os.path.normpath(r) for c, r in roots.items()}
        for c, d in dirs.items():
            if roots.get(c) is not None and not inside(d, roots[c]):
                raise ContainerError(f"cgroup: {d} is outside the {c} hierarchy {roots[c]}",
                                     hint="check linux.cgroupsPath")
        self.dirs = dirs
        self.roots = roots
        self.resources = resources
        self.unified_dir = None if unified_dir is None else os.path.normpath(unified_dir)

    @property
    def path(self) -> str:
        for c in _PATH_PREFERENCE:
            if c in self.dirs:
                return self.dirs[c]
        return next(iter(self.dirs.values()))

    def unique_dirs(self) -> list[str]:
        """One entry per hierarchy (cpu and cpuacct often share one mount)."""
        return list(dict.fromkeys(self.dirs.values()))

    def create(self) -> None:
        if "cpuset" in self.dirs:
            ensure_cpuset(self.roots["cpuset"], self.dirs["cpuset"])
        for d in self.unique_dirs():
            os.makedirs(d, exist_ok=True)
        if self.unified_dir is not None:
            try:
                os.makedirs(self.unified_dir, exist_ok=True)
            except OSError as exc:  # hybrid's unified cgroup is a courtesy, not a need
                log.warning("cgroup: cannot create %s: %s", self.unified_dir, exc)
                self.unified_dir = None

    def controller_dir(self, controller: str) -> str:
        if controller not in self.dirs:
            raise ContainerError(f"cgroup: v1 controller {controller} is not mounted",
                                 hint=f"drop the {controller} limits from linux.resources "
                                      "or mount the controller")
        return self.dirs[controller]

    def set(self, resources: dict | None = None) -> None:
        """Write ``resources`` (default: those given at creation, devices included).

        An explicit update rewrites device rules only when it has a "devices" key
        (runc update leaves them alone): the rewrite starts with deny-all, so running
        processes would briefly lose every device. The first ``set()`` of a new manager
        writes them even for empty resources; a manager rebuilt from state without
        resources (``load_manager``) knows none and writes nothing.
        """
        r = self.resources if resources is None else resources
        if r is None:
            return
        with_devices = resources is None or "devices" in resources
        if r.get("unified"):
            raise ContainerError("linux.resources.unified needs cgroup v2",
                                 hint="this host uses cgroup v1 for resources")
        mem, cpu = r.get("memory") or {}, r.get("cpu") or {}
        if mem:
            set_memory(self.controller_dir("memory"), mem)
        if any(cpu.get(k) is not None for k in
               ("shares", "quota", "period", "burst", "realtimePeriod", "realtimeRuntime",
                "idle")):
            set_cpu(self.controller_dir("cpu"), cpu)
        if cpu.get("cpus") or cpu.get("mems"):
            set_cpuset(self.controller_dir("cpuset"), cpu)
        if r.get("pids") is not None:
            limit = r["pids"].get("limit")
            value = "max" if limit is None or limit <= 0 else str(limit)
            write_value(self.controller_dir("pids"), "pids.max", value)
        if r.get("hugepageLimits"):
            d = self.controller_dir("hugetlb")
            for h in r["hugepageLimits"]:
                write_value(d, f"hugetlb.{h['pageSize']}.limit_in_bytes", str(h["limit"]))
        if r.get("blockIO"):
            set_blkio(self.controller_dir("blkio"), r["blockIO"])
        net = r.get("network") or {}
        if net.get("classID") is not None:  # controller_dir refuses an unmounted one
            write_value(self.controller_dir("net_cls"), "net_cls.classid", str(net["classID"]))
        for prio in net.get("priorities") or ():
            write_value(self.controller_dir("net_prio"), "net_prio.ifpriomap",
                        f"{prio['name']} {prio['priority']}")
        if not with_devices:
            return
        if "devices" in self.dirs:
            set_devices(self.dirs["devices"], r)
        elif r.get("devices"):
            log.warning("cgroup: devices controller not mounted; device rules not enforced")

    def add(self, pid: int) -> None:
        for d in self.unique_dirs():
            add_pid(d, pid)
        self.add_v2(pid)

    def self_join_files(self) -> list[str]:
        return [os.path.join(d, "tasks") for d in self.unique_dirs()]

    def v2_dir(self) -> str | None:
        return self.unified_dir

    def add_v2(self, pid: int) -> None:
        if self.unified_dir is not None:
            try:
                add_pid(self.unified_dir, pid)
            except ContainerError as exc:  # hybrid's unified cgroup is a courtesy
                log.warning("%s", exc)

    def pids(self) -> list[int]:
        found: set[int] = set()
        for d in self.unique_dirs():
            found.update(read_pids(d))
        return sorted(found)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        # Freeze first so nothing forks between reading the pids and signalling
        # them (runc signalAllProcesses).
        frozen = False
        if "freezer" in self.dirs and os.path.isdir(self.dirs["freezer"]):
            try:
                self.freeze()
                frozen = True
            except (ContainerError, OSError):  # the cgroup may vanish
                pass
        signal_pids(self.pids(), sig)
        if frozen:
            try:
                self.thaw()
            except (ContainerError, OSError):
                pass

    def freeze(self) -> None:
        set_freezer(self.controller_dir("freezer"), "FROZEN")

    def thaw(self) -> None:
        set_freezer(self.controller_dir("freezer"), "THAWED")

    def is_frozen(self) -> bool:
        try:
            return read_value(self.dirs["freezer"], "freezer.state") == "FROZEN"
        except (KeyError, ContainerError, OSError):
            return False

    def destroy(self) -> None:
        if self.exists() and self.pids():
            self.kill(signal.SIGKILL)
            wait_empty(self)
        for d in self.unique_dirs():
            remove_cgroup(d)
        if self.unified_dir is not None:
            remove_cgroup(self.unified_dir)

    def exists(self) -> bool:
        return any(os.path.isdir(d) for d in self.unique_dirs())

    def to_state(self) -> dict:
        return {"version": 1, "paths": dict(self.dirs), "roots": dict(self.roots),
                "unified": self.unified_dir}


def ensure_cpuset(root: str, target: str) -> None:
    """mkdir each level below ``root`` and fill empty cpus/mems from the parent."""
    current = root
    for part in os.path.relpath(target, root).split("/"):
        if part == ".":
            continue
        parent, current = current, os.path.join(current, part)
        try:
            os.mkdir(current)
        except FileExistsError:
            pass
        for name in ("cpuset.cpus", "cpuset.mems"):
            if not read_value(current, name):
                write_value(current, name, read_value(parent, name))


def set_memory(d: str, mem: dict) -> None:
    limit, swap = mem.get("limit"), mem.get("swap")
    if limit == -1 and not swap:
        swap = -1  # unlimited memory without a swap value: unlimited memory+swap
    has_memsw = os.path.exists(os.path.join(d, "memory.memsw.limit_in_bytes"))
    if swap and not has_memsw:
        if swap != -1:
            log.warning("cgroup: swap accounting is off; memory.swap %s ignored", swap)
        swap = None
    if limit and swap:
        try:
            current = int(read_value(d, "memory.limit_in_bytes"))
        except (ValueError, ContainerError):
            current = 0
        # The kernel insists memsw >= limit after every single write.
        if swap == -1 or current < swap:
            write_value(d, "memory.memsw.limit_in_bytes", str(swap))
            write_value(d, "memory.limit_in_bytes", str(limit))
        else:
            write_value(d, "memory.limit_in_bytes", str(limit))
            write_value(d, "memory.memsw.limit_in_bytes", str(swap))
    elif limit:
        write_value(d, "memory.limit_in_bytes", str(limit))
    elif swap:
        write_value(d, "memory.memsw.limit_in_bytes", str(swap))
    if mem.get("reservation"):
        write_value(d, "memory.soft_limit_in_bytes", str(mem["reservation"]))
    if mem.get("kernel"):
        log.warning("cgroup: memory.kernel is deprecated by the kernel; ignored")
    if mem.get("kernelTCP"):
        write_value(d, "memory.kmem.tcp.limit_in_bytes", str(mem["kernelTCP"]))
    if mem.get("swappiness") is not None:
        write_value(d, "memory.swappiness", str(mem["swappiness"]))
    if mem.get("disableOOMKiller"):
        write_value(d, "memory.oom_control", "1")


def set_cpu(d: str, cpu: dict) -> None:
    if cpu.get("shares"):
        write_value(d, "cpu.shares", str(cpu["shares"]))
    quota, period = cpu.get("quota"), cpu.get("period")
    if period:
        try:
            write_value(d, "cpu.cfs_period_us", str(period))
        except ContainerError:
            if not quota:
                raise
            # A shorter period can clash with the current quota: quota first, then retry.
            write_value(d, "cpu.cfs_quota_us", str(quota))
            write_value(d, "cpu.cfs_period_us", str(period))
    if quota:
        write_value(d, "cpu.cfs_quota_us", str(quota))
    if cpu.get("burst") is not None:
        write_value(d, "cpu.cfs_burst_us", str(cpu["burst"]))
    if cpu.get("realtimePeriod"):
        write_value(d, "cpu.rt_period_us", str(cpu["realtimePeriod"]))
    if cpu.get("realtimeRuntime"):
        write_value(d, "cpu.rt_runtime_us", str(cpu["realtimeRuntime"]))
    if cpu.get("idle") is not None:
        write_value(d, "cpu.idle", str(cpu["idle"]))


def set_cpuset(d: str, cpu: dict) -> None:
    if cpu.get("cpus"):
        write_value(d, "cpuset.cpus", cpu["cpus"])
    if cpu.get("mems"):
        write_value(d, "cpuset.mems", cpu["mems"])


def set_blkio(d: str, bio: dict) -> None:
    if bio.get("weight"):
        write_value(d, "blkio.weight", str(bio["weight"]))
    if bio.get("leafWeight"):
        write_value(d, "blkio.leaf_weight", str(bio["leafWeight"]))
    for dev in bio.get("weightDevice") or []:
        if dev.get("weight"):
            write_value(d, "blkio.weight_device", f"{dev['major']}:{dev['minor']} {dev['weight']}")
    files = {"throttleReadBpsDevice": "blkio.throttle.read_bps_device",
             "throttleWriteBpsDevice": "blkio.throttle.write_bps_device",
             "throttleReadIOPSDevice": "blkio.throttle.read_iops_device",
             "throttleWriteIOPSDevice": "blkio.throttle.write_iops_device"}
    for field, name in files.items():
        for dev in bio.get(field) or []:
            write_value(d, name, f"{dev['major']}:{dev['minor']} {dev['rate']}")


def set_devices(d: str, resources: dict) -> None:
    write_value(d, "devices.deny", "a")
    for rule in device_rules(resources):
        write_value(d, "devices.allow" if rule.allow else "devices.deny", rule.line())


def set_freezer(d: str, state: str, attempts: int = 200) -> None:
    for i in range(attempts):
        # The kernel reports FREEZING until every task stopped; runc rewrites
        # FROZEN while waiting, which also catches tasks that forked meanwhile.
        if i % 10 == 0:
            write_value(d, "freezer.state", state)
        if read_value(d, "freezer.state") == state:
            return
        time.sleep(0.01)
    write_value(d, "freezer.state", "THAWED")
    raise ContainerError(f"cgroup: {d} did not reach {state}",
                         hint="a process may be stuck in uninterruptible sleep; retry")
