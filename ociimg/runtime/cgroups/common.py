"""What the v1 and v2 drivers share: cgroup file IO, value conversions, the
manager interface, and the device rules every container gets.

Drivers only ever write under directories they were given (youki's libcgroups),
so the unit tests run them on a tempdir "fake tree" holding the files a kernel
would expose.
"""

from __future__ import annotations

import _signal as signal
import errno
import math
import os
import time
from abc import ABC, abstractmethod

from ociimg.errors import ContainerError
from ociimg.runtime.records import record

# cgroup.procs writes can fail with EINVAL while a forked task is still TASK_NEW;
# runc retries 5 times, 30 ms apart. rmdir fails with EBUSY while exiting tasks
# are still accounted; we retry for up to about two seconds.
_PROCS_RETRIES = 5
_RMDIR_ATTEMPTS = 40


def write_value(directory: str, name: str, value: str) -> None:
    """Write one cgroup file in a single write(); the error names file and value.

    No O_CREAT: a missing file means the controller is absent, never "create it".
    """
    path = os.path.join(directory, name)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise ContainerError(f"cgroup: {path} does not exist",
                             hint="the controller for it is not enabled or not mounted") from exc
    try:
        os.write(fd, value.encode())
    except OSError as exc:
        raise ContainerError(f"cgroup: write {value!r} to {path}: {exc.strerror}",
                             hint="check the value against the kernel's limits") from exc
    finally:
        os.close(fd)


def read_value(directory: str, name: str) -> str:
    path = os.path.join(directory, name)
    try:
        return read_text(path).strip()
    except FileNotFoundError as exc:
        raise ContainerError(f"cgroup: {path} does not exist",
                             hint="the cgroup is gone or its controller is not enabled") from exc


def inside(path: str, root: str) -> bool:
    """``path`` is ``root`` or below it (both normalised)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def read_text(path: str) -> str:
    with open(path) as f:
        return f.read()


def num_to_str(value: int | None) -> str | None:
    """runc's numToStr for v2 files: None/0 = unset, -1 = "max"."""
    if value is None or value == 0:
        return None
    if value == -1:
        return "max"
    return str(value)


def shares_to_weight(shares: int | None) -> int:
    """cpu.shares [2..262144] → cpu.weight [1..10000]; 0/None = unset.

    The quadratic fit in log space that current runc and crun use (opencontainers/
    cgroups ConvertCPUSharesToCgroupV2Value, runc#4785): it maps the v1 default 1024
    to the v2 default 100, which the older linear formula did not (it gave 39).
    """
    if not shares:
        return 0
    if shares <= 2:
        return 1
    if shares >= 262144:
        return 10000
    log2 = math.log2(shares)
    exponent = (log2 * log2 + 125 * log2) / 612.0 - 7.0 / 34.0
    return int(math.ceil(10**exponent))


def blkio_weight_to_io_weight(weight: int | None) -> int:
    """blkio.weight [10..1000] → io.weight [1..10000] (runc's linear formula)."""
    if not weight:
        return 0
    return 1 + (weight - 10) * 9999 // 990


def swap_to_v2(memory_swap: int | None, memory: int | None) -> int:
    """The spec's memory.swap is memory+swap (v1); v2's memory.swap.max is swap only.

    Returns 0 for "unset" and -1 for "max" (runc ConvertMemorySwapToCgroupV2Value).
    """
    swap = memory_swap or 0
    mem = memory or 0
    if mem == -1 and swap == 0:
        return -1  # unlimited memory without a swap value: both unlimited, as on v1
    if swap in (-1, 0):
        return swap
    if swap < -1:
        raise ContainerError(f"cgroup: invalid memory.swap {swap}",
                             hint="use -1 for unlimited or a byte count ≥ memory.limit")
    if mem == -1:
        return swap  # unlimited memory: the whole memory+swap budget is swap
    if mem == 0:
        raise ContainerError("cgroup: memory.swap set without memory.limit",
                             hint="a swap limit on cgroup v2 needs a memory limit too")
    if mem < 0:
        raise ContainerError(f"cgroup: invalid memory.limit {mem}", hint="use -1 or bytes")
    if swap < mem:
        raise ContainerError(f"cgroup: memory.swap {swap} is below memory.limit {mem}",
                             hint="memory.swap is memory+swap: make it ≥ memory.limit")
    return swap - mem


@record(frozen=True, slots=True)
class DeviceRule:
    allow: bool
    type: str  # "a", "c" or "b"
    major: int  # -1 = any
    minor: int
    access: str

    def line(self) -> str:
        """devices.allow/deny syntax: "c 1:3 rwm", "a *:* rwm"."""
        major = "*" if self.major < 0 else str(self.major)
        minor = "*" if self.minor < 0 else str(self.minor)
        return f"{self.type} {major}:{minor} {self.access}"


# The rules runc appends after the spec's own (specconv AllowedDevices): mknod of
# anything, and the default devices every container has (runtime-spec
# config-linux.md "Default Devices") plus pts, ptmx and /dev/net/tun.
DEFAULT_DEVICE_RULES: tuple[DeviceRule, ...] = (
    DeviceRule(True, "c", -1, -1, "m"),
    DeviceRule(True, "b", -1, -1, "m"),
    DeviceRule(True, "c", 1, 3, "rwm"),
    DeviceRule(True, "c", 1, 8, "rwm"),
    DeviceRule(True, "c", 1, 7, "rwm"),
    DeviceRule(True, "c", 5, 0, "rwm"),
    DeviceRule(True, "c", 1, 5, "rwm"),
    DeviceRule(True, "c", 1, 9, "rwm"),
    DeviceRule(True, "c", 136, -1, "rwm"),
    DeviceRule(True, "c", 5, 2, "rwm"),
    DeviceRule(True, "c", 10, 200, "rwm"),
)


def device_rules(resources: dict | None) -> list[DeviceRule]:
    """``linux.resources.devices`` in spec order, then runc's default allow rules."""
    rules = []
    for i, dev in enumerate((resources or {}).get("devices") or []):
        where = f"linux.resources.devices[{i}]"
        dtype = dev.get("type") or "a"
        access = dev.get("access") or ""
        if dtype not in ("a", "c", "b", "u", "p"):
            raise ContainerError(f"{where}: invalid type {dtype!r}", hint='use "a", "c" or "b"')
        if not access or set(access) - set("rwm"):
            raise ContainerError(f"{where}: invalid access {access!r}",
                                 hint='use a combination of "r", "w" and "m"')
        if dtype in ("u", "p"):
            dtype = "c"  # unbuffered char devices and FIFOs are char rules to the kernel
        major = dev.get("major")
        minor = dev.get("minor")
        rules.append(DeviceRule(bool(dev.get("allow")), dtype,
                                -1 if major is None else int(major),
                                -1 if minor is None else int(minor), access))
    return rules + list(DEFAULT_DEVICE_RULES)


def add_pid(directory: str, pid: int) -> None:
    for attempt in range(_PROCS_RETRIES):
        try:
            write_value(directory, "cgroup.procs", str(pid))
            return
        except ContainerError as exc:
            cause = exc.__cause__
            if not (isinstance(cause, OSError) and cause.errno == errno.EINVAL) \
                    or attempt == _PROCS_RETRIES - 1:
                raise
            time.sleep(0.03)


def read_pids(directory: str, recursive: bool = True) -> list[int]:
    """PIDs in cgroup.procs of ``directory`` (and its sub-cgroups)."""
    pids: list[int] = []
    dirs = [directory]
    while dirs:
        current = dirs.pop()
        try:
            text = read_text(os.path.join(current, "cgroup.procs"))
        except FileNotFoundError:
            continue
        pids.extend(int(line) for line in text.split() if line.strip())
        if recursive:
            try:
                dirs.extend(sub_dirs(current))
            except FileNotFoundError:
                continue
    return sorted(set(pids))


def sub_dirs(directory: str) -> list[str]:
    """Child cgroups, from the directory entries' types: a cgroup dir holds dozens of
    files, and a stat() of each (os.path.isdir) cost ~3 ms of every container's delete."""
    with os.scandir(directory) as entries:
        return [e.path for e in entries if e.is_dir(follow_symlinks=False)]


def signal_pids(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def remove_cgroup(directory: str) -> None:
    """rmdir ``directory`` and any sub-cgroups, deepest first, retrying EBUSY."""
    try:
        children = sub_dirs(directory)
    except (FileNotFoundError, NotADirectoryError):
        return
    for child in children:
        remove_cgroup(child)
    removed_files = False
    for attempt in range(_RMDIR_ATTEMPTS):
        try:
            os.rmdir(directory)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno == errno.ENOTEMPTY and not removed_files:
                # A real cgroup dir rmdirs with its files listed; only a plain
                # directory (the unit tests' fake tree) needs them unlinked first.
                removed_files = _unlink_files(directory)
                continue
            if exc.errno != errno.EBUSY or attempt == _RMDIR_ATTEMPTS - 1:
                raise ContainerError(f"cgroup: remove {directory}: {exc.strerror}",
                                     hint="processes are still in the cgroup; kill them "
                                          "and retry") from exc
            time.sleep(0.05)


def _unlink_files(directory: str) -> bool:
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_file():
                try:
                    os.unlink(entry.path)
                except OSError:
                    pass
    return True


class CgroupManager(ABC):
    """The interface the runtime uses; ``create_manager`` picks the driver."""

    resources: dict | None

    @property
    @abstractmethod
    def path(self) -> str:
        """The container's cgroup directory (v2) or the first controller's (v1)."""

    @abstractmethod
    def create(self) -> None:
        """Make the directories, enable controllers, seed cpusets (idempotent)."""

    @abstractmethod
    def set(self, resources: dict | None = None) -> None:
        """runc's Set: write ``linux.resources`` (default: the ones given at creation)
        to a cgroup made by ``apply``; places nothing."""

    @abstractmethod
    def add(self, pid: int) -> None:
        """Move ``pid`` into the cgroup."""

    def self_join_files(self) -> list[str]:
        """Files into which a single-threaded process writes "0" to join the cgroup by
        itself. The kernel then moves only the calling thread and skips the global
        cgroup_threadgroup_rwsem, whose write side waits for an RCU grace period
        (~5-20 ms; cgroup_procs_write_start). v1's per-hierarchy ``tasks`` files; none on
        v2, where the fast way in is to be born there (``v2_dir``)."""
        return []

    def v2_dir(self) -> str | None:
        """The cgroup2 directory a child is forked into (clone3 CLONE_INTO_CGROUP):
        the container's cgroup on v2, the unified one on a hybrid host, else None."""
        return None

    def add_v2(self, pid: int) -> None:
        """Move ``pid`` into ``v2_dir`` (when it could not be born there)."""
        target = self.v2_dir()
        if target is not None:
            add_pid(target, pid)

    def apply(self, pid: int | None = None) -> None:
        """runc's Apply: make the cgroup and place ``pid`` in it; no limit is written.

        Placing and limiting are separate steps, in runc's order (Apply, then Set): a
        systemd driver can only place (its unit is the cgroup) before limits exist. With
        no ``pid`` the cgroup is only made: the runtime's own children then join by
        themselves (``self_join_files``/``v2_dir``), after ``set()``.
        """
        self.create()
        if pid is not None:
            self.add(pid)

    @abstractmethod
    def pids(self) -> list[int]: ...

    @abstractmethod
    def freeze(self) -> None: ...

    @abstractmethod
    def thaw(self) -> None: ...

    @abstractmethod
    def is_frozen(self) -> bool:
        """True when frozen (the runtime's "paused" status); False if unknown/gone."""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        signal_pids(self.pids(), sig)

    @abstractmethod
    def destroy(self) -> None:
        """Kill what is left, wait for it, and remove the directories."""

    @abstractmethod
    def to_state(self) -> dict: ...

    def exists(self) -> bool:
        return os.path.isdir(self.path)


def wait_empty(manager: CgroupManager, attempts: int = 100) -> bool:
    for _ in range(attempts):
        if not manager.pids():
            return True
        time.sleep(0.02)
    return not manager.pids()
