"""What a container's cgroup says: its processes (``top``) and its usage (``stats``), on
cgroup v2, v1 and the hybrid layout (v1 controllers plus an empty v2 hierarchy).

The cgroup is found from the container's init (/proc/PID/cgroup) and where each
hierarchy is mounted (/proc/self/mountinfo), never from a path assumed by convention.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ociimg.errors import ContainerError

_UNLIMITED = 1 << 62  # v1 writes PAGE_COUNTER_MAX pages for "no limit"


@dataclass(frozen=True)
class Usage:
    cpu_ns: int          # CPU time used, all cpus
    memory: int          # bytes in use, page cache that can be dropped left out (docker)
    memory_limit: int    # bytes; the host's memory when unlimited
    pids: int


def _mountpoints() -> dict[str, str]:
    """Controller (or "" for the v2 hierarchy) → where its hierarchy is mounted."""
    out: dict[str, str] = {}
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if len(fields) < 5 or len(rfields) < 3:
                continue
            point = fields[4].replace("\\040", " ")
            if rfields[0] == "cgroup2":
                out.setdefault("", point)
            elif rfields[0] == "cgroup":
                for opt in rfields[2].split(","):
                    if opt in ("cpu", "cpuacct", "memory", "pids", "freezer") or \
                            opt.startswith("name="):
                        out.setdefault(opt, point)
    return out


def cgroup_dirs(pid: int) -> dict[str, str]:
    """Controller → the directory of ``pid``'s cgroup in that hierarchy."""
    points = _mountpoints()
    out = {}
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise ContainerError(f"process {pid}: no cgroup ({exc.strerror})") from exc
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for ctl in (controllers.split(",") if controllers else [""]):
            if ctl in points:
                out[ctl] = os.path.join(points[ctl], path.lstrip("/"))
    return out


def _read(path: str) -> str:
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read().strip()


def _keyed(path: str) -> dict[str, int]:
    out = {}
    for line in _read(path).splitlines():
        key, _, value = line.partition(" ")
        if value.isdigit():
            out[key] = int(value)
    return out


def cgroup_pids(pid: int) -> list[int]:
    """Every process in ``pid``'s cgroup (the container's, children's included)."""
    dirs = cgroup_dirs(pid)
    for ctl in ("pids", "memory", "", "cpu"):
        d = dirs.get(ctl)
        if d is None:
            continue
        try:
            return _procs(d)
        except OSError:
            continue
    return [pid]


def _procs(d: str) -> list[int]:
    out = []
    for root, _, files in os.walk(d):
        if "cgroup.procs" in files:
            out += [int(x) for x in _read(os.path.join(root, "cgroup.procs")).split()]
    return sorted(set(out))


def host_memory() -> int:
    with open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def usage(pid: int) -> Usage:
    dirs = cgroup_dirs(pid)
    v2 = dirs.get("")
    if v2 and os.path.exists(os.path.join(v2, "memory.current")):
        return _usage_v2(v2)
    return _usage_v1(dirs)


def _usage_v2(d: str) -> Usage:
    cpu = _keyed(os.path.join(d, "cpu.stat")).get("usage_usec", 0) * 1000
    memory = int(_read(os.path.join(d, "memory.current")))
    memory -= _keyed(os.path.join(d, "memory.stat")).get("inactive_file", 0)
    limit_text = _read(os.path.join(d, "memory.max"))
    limit = host_memory() if limit_text == "max" else int(limit_text)
    pids = int(_read(os.path.join(d, "pids.current"))) \
        if os.path.exists(os.path.join(d, "pids.current")) else len(_procs(d))
    return Usage(cpu, max(memory, 0), limit, pids)


def _usage_v1(dirs: dict[str, str]) -> Usage:
    cpu = 0
    if "cpuacct" in dirs:
        cpu = int(_read(os.path.join(dirs["cpuacct"], "cpuacct.usage")))
    memory, limit = 0, host_memory()
    if "memory" in dirs:
        d = dirs["memory"]
        memory = int(_read(os.path.join(d, "memory.usage_in_bytes")))
        memory -= _keyed(os.path.join(d, "memory.stat")).get("total_inactive_file", 0)
        value = int(_read(os.path.join(d, "memory.limit_in_bytes")))
        limit = min(value, limit) if value < _UNLIMITED else limit
    pids = int(_read(os.path.join(dirs["pids"], "pids.current"))) if "pids" in dirs else 0
    return Usage(cpu, max(memory, 0), limit, pids)
