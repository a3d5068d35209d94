"""cgroup v2 driver: one directory under the cgroup2 mount it is given.

The no-internal-process rule means controllers are enabled in the
``cgroup.subtree_control`` of every ancestor, never of the container's own cgroup
(which holds its processes). v1-style spec values are converted the way runc does
(runc ``docs/cgroup-v2.md``; opencontainers/cgroups ``utils.go``).

Device rules (the spec's, then runc's default allow list) are enforced with a
BPF_PROG_TYPE_CGROUP_DEVICE program attached to the cgroup (``ebpf.py``, runc#2167).
``device_filter=False`` (used for the unit tests' fake trees, which are not cgroup2)
skips it and logs once that device rules are not enforced.
"""

from __future__ import annotations

import _signal as signal
import os
import time

from ociimg.errors import ContainerError
from ociimg.runtime.cgroups import ebpf
from ociimg.runtime.cgroups.common import (
    CgroupManager,
    add_pid,
    blkio_weight_to_io_weight,
    device_rules,
    num_to_str,
    read_pids,
    read_text,
    remove_cgroup,
    shares_to_weight,
    signal_pids,
    swap_to_v2,
    wait_empty,
    write_value,
)
from ociimg.runtime.lazylog import get_logger

log = get_logger(__name__)
_warned_devices = False


def _is_set(value: object) -> bool:
    return value is not None and value != 0


def required_controllers(resources: dict | None) -> list[str]:
    """The v2 controllers ``linux.resources`` needs, in a stable order (pure)."""
    r = resources or {}
    needed = []
    mem, cpu = r.get("memory") or {}, r.get("cpu") or {}
    if any(_is_set(mem.get(k)) for k in ("limit", "reservation", "swap")):
        needed.append("memory")
    if any(_is_set(cpu.get(k)) for k in ("shares", "quota", "period", "burst")) \
            or cpu.get("idle") is not None:
        needed.append("cpu")
    if cpu.get("cpus") or cpu.get("mems"):
        needed.append("cpuset")
    if r.get("pids") is not None:
        needed.append("pids")
    if r.get("hugepageLimits"):
        needed.append("hugetlb")
    if any(r.get("blockIO") or {}):
        needed.append("io")
    for key in r.get("unified") or {}:
        controller = key.split(".", 1)[0]
        if controller != "cgroup" and controller not in needed:
            needed.append(controller)
    return needed


class V2Manager(CgroupManager):
    def __init__(self, root: str, path: str, resources: dict | None = None, *,
                 device_filter: bool = True) -> None:
        self.root = os.path.normpath(root)
        self.rel = path.strip("/")
        if not self.rel or ".." in self.rel.split("/"):
            raise ContainerError(f"cgroup: invalid cgroup path {path!r}",
                                 hint="give a path below the cgroup root, without '..'")
        self.resources = resources
        self.device_filter = device_filter

    @property
    def path(self) -> str:
        return os.path.join(self.root, self.rel)

    def create(self) -> None:
        needed = required_controllers(self.resources)
        current = self.root
        for part in self.rel.split("/"):
            enable_controllers(current, needed)
            current = os.path.join(current, part)
            try:
                os.mkdir(current)
            except FileExistsError:
                pass

    def set(self, resources: dict | None = None) -> None:
        """Write ``resources`` (default: those given at creation, devices included).

        An explicit update attaches a device program only when it has a "devices" key
        (runc update leaves them alone; programs stack, and all must allow). The first
        ``set()`` of a new manager attaches one even for empty resources (deny all but
        runc's defaults); a manager rebuilt from state without resources writes nothing.
        """
        r = self.resources if resources is None else resources
        if r is None:
            return
        with_devices = resources is None or "devices" in resources
        net = r.get("network") or {}
        if net.get("classID") is not None or net.get("priorities"):
            # net_cls/net_prio exist only in cgroup v1: never drop the limits silently.
            raise ContainerError("cgroup: linux.resources.network (classID, priorities) "
                                 "needs the cgroup v1 net_cls/net_prio controllers",
                                 hint="this host uses cgroup v2; drop linux.resources.network")
        set_memory(self.path, r.get("memory") or {})
        set_cpu(self.path, r.get("cpu") or {})
        set_pids(self.path, r.get("pids"))
        set_hugetlb(self.path, r.get("hugepageLimits") or [])
        set_io(self.path, r.get("blockIO") or {})
        set_unified(self.path, r.get("unified") or {})
        if not with_devices:
            return
        if self.device_filter:
            ebpf.attach_device_program(self.path, device_rules(r))
        else:
            warn_devices(r.get("devices") or [])

    def add(self, pid: int) -> None:
        add_pid(self.path, pid)

    def v2_dir(self) -> str | None:
        return self.path

    def pids(self) -> list[int]:
        return read_pids(self.path)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        # cgroup.kill (Linux 5.14) kills the whole subtree atomically, fork races included.
        if sig == signal.SIGKILL and os.path.exists(os.path.join(self.path, "cgroup.kill")):
            write_value(self.path, "cgroup.kill", "1")
            return
        signal_pids(self.pids(), sig)

    def freeze(self) -> None:
        write_value(self.path, "cgroup.freeze", "1")
        wait_frozen(self.path, True)

    def thaw(self) -> None:
        write_value(self.path, "cgroup.freeze", "0")
        wait_frozen(self.path, False)

    def is_frozen(self) -> bool:
        events = os.path.join(self.path, "cgroup.events")
        try:
            if os.path.exists(events):  # the kernel's view: every task actually stopped
                return "frozen 1" in read_text(events).splitlines()
            return read_text(os.path.join(self.path, "cgroup.freeze")).strip() == "1"
        except OSError:
            return False

    def destroy(self) -> None:
        if not os.path.isdir(self.path):
            return
        if self.pids():
            self.kill(signal.SIGKILL)
            wait_empty(self)
        remove_cgroup(self.path)

    def to_state(self) -> dict:
        return {"version": 2, "root": str(self.root), "path": "/" + self.rel,
                "device_filter": self.device_filter}


def enable_controllers(directory: str, needed: list[str]) -> None:
    """Enable ``needed`` in ``directory``'s subtree_control (for its children)."""
    if not needed:
        return
    controllers_file = os.path.join(directory, "cgroup.controllers")
    if os.path.exists(controllers_file):
        available = read_text(controllers_file).split()
        missing = [c for c in needed if c not in available]
        if missing:
            raise ContainerError(
                f"cgroup: controller(s) {', '.join(missing)} not available in {directory}",
                hint="on a hybrid host they are bound to cgroup v1; otherwise enable "
                     "them in the parent's cgroup.subtree_control")
    subtree = os.path.join(directory, "cgroup.subtree_control")
    enabled = read_text(subtree).split() if os.path.exists(subtree) else []
    todo = [c for c in needed if c not in enabled]
    if not todo:
        return
    try:
        write_value(directory, "cgroup.subtree_control", " ".join("+" + c for c in todo))
    except ContainerError:
        for c in todo:  # one at a time, so the error names the controller that failed
            write_value(directory, "cgroup.subtree_control", "+" + c)


def set_memory(path: str, mem: dict) -> None:
    limit, swap = mem.get("limit"), mem.get("swap")
    swap_v2 = swap_to_v2(swap, limit)
    swap_str = num_to_str(swap_v2)
    if swap_str is None and swap_v2 == 0 and (swap or 0) > 0:
        swap_str = "0"  # swap == limit: no swap at all
    if swap_str is not None:
        if os.path.exists(os.path.join(path, "memory.swap.max")):
            write_value(path, "memory.swap.max", swap_str)
        elif swap_str not in ("max", "0"):
            raise ContainerError(f"cgroup: {path}/memory.swap.max does not exist",
                                 hint="swap accounting is off on this kernel; drop memory.swap")
    if (value := num_to_str(limit)) is not None:
        write_value(path, "memory.max", value)
    if (value := num_to_str(mem.get("reservation"))) is not None:
        write_value(path, "memory.low", value)
    for ignored in ("kernel", "kernelTCP", "swappiness", "disableOOMKiller"):
        if mem.get(ignored) not in (None, False):
            log.warning("cgroup v2 has no equivalent of memory.%s; ignored", ignored)


def cpu_max(quota: int | None, period: int | None) -> str | None:
    """cpu.max is "QUOTA PERIOD" or "max PERIOD"; the period may be left out."""
    if not _is_set(quota) and not _is_set(period):
        return None
    value = str(quota) if quota is not None and quota > 0 else "max"
    return f"{value} {period}" if _is_set(period) else value


def set_cpu(path: str, cpu: dict) -> None:
    if weight := shares_to_weight(cpu.get("shares")):
        write_value(path, "cpu.weight", str(weight))
    if (value := cpu_max(cpu.get("quota"), cpu.get("period"))) is not None:
        write_value(path, "cpu.max", value)
    if cpu.get("burst") is not None:
        write_value(path, "cpu.max.burst", str(cpu["burst"]))
    if cpu.get("idle") is not None:
        write_value(path, "cpu.idle", str(cpu["idle"]))
    if cpu.get("cpus"):
        write_value(path, "cpuset.cpus", cpu["cpus"])
    if cpu.get("mems"):
        write_value(path, "cpuset.mems", cpu["mems"])


def pids_max(pids: dict) -> str:
    limit = pids.get("limit")
    return "max" if limit is None or limit <= 0 else str(limit)


def set_pids(path: str, pids: dict | None) -> None:
    if pids is not None:
        write_value(path, "pids.max", pids_max(pids))


def set_hugetlb(path: str, limits: list[dict]) -> None:
    for h in limits:
        write_value(path, f"hugetlb.{h['pageSize']}.max", str(h["limit"]))


def set_io(path: str, bio: dict) -> None:
    if weight := blkio_weight_to_io_weight(bio.get("weight")):
        write_value(path, "io.weight", f"default {weight}")
    for dev in bio.get("weightDevice") or []:
        if dev.get("weight"):
            weight = blkio_weight_to_io_weight(dev["weight"])
            write_value(path, "io.weight", f"{dev['major']}:{dev['minor']} {weight}")
    keys = {"throttleReadBpsDevice": "rbps", "throttleWriteBpsDevice": "wbps",
            "throttleReadIOPSDevice": "riops", "throttleWriteIOPSDevice": "wiops"}
    for field, key in keys.items():
        for dev in bio.get(field) or []:
            write_value(path, "io.max", f"{dev['major']}:{dev['minor']} {key}={dev['rate']}")


def set_unified(path: str, unified: dict) -> None:
    """linux.resources.unified: raw v2 files, written as given (runtime-spec)."""
    for key, value in unified.items():
        if "/" in key or key.startswith(".") or "." not in key:
            raise ContainerError(f"linux.resources.unified: invalid file name {key!r}",
                                 hint="keys are cgroup v2 file names such as memory.high")
        write_value(path, key, str(value))


def warn_devices(devices: list[dict]) -> None:
    global _warned_devices
    if devices and not _warned_devices:
        _warned_devices = True
        log.warning("cgroup v2: device rules are not enforced (no eBPF device filter "
                    "on this cgroup)")


def wait_frozen(path: str, frozen: bool, attempts: int = 100) -> None:
    events = os.path.join(path, "cgroup.events")
    want = f"frozen {int(frozen)}"
    for _ in range(attempts):
        if not os.path.exists(events) or want in read_text(events).splitlines():
            return
        time.sleep(0.01)
    raise ContainerError(f"cgroup: {path} did not become {'frozen' if frozen else 'thawed'}",
                         hint="a process may be stuck in the kernel; retry")
