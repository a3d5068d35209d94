"""``events --stats``: a container's cgroup statistics in runc's JSON shape (runc's
types.Stats: cpu, memory, pids), read from the cgroup files of either version. What
the kernel does not offer here is left out rather than invented."""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ociimg.runtime.cgroups import CgroupManager

_MAX = 2**64 - 1  # runc's "no limit" (math.MaxUint64)


def collect(manager: CgroupManager) -> dict[str, Any]:
    dirs = getattr(manager, "dirs", None)
    if dirs is not None:
        return _v1(dirs)
    return _v2(manager.path)


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _int(path: str) -> int:
    text = _read(path)
    if text is None or text == "max":
        return _MAX if text == "max" else 0
    try:
        return int(text)
    except ValueError:
        return 0


def _keyed(path: str) -> dict[str, int]:
    out = {}
    for line in (_read(path) or "").splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def _v1(dirs: dict[str, str]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if (acct := dirs.get("cpuacct")) is not None:
        tick = 10**9 // os.sysconf("SC_CLK_TCK")
        times = _keyed(os.path.join(acct, "cpuacct.stat"))
        doc["cpu"] = {"usage": {
            "total": _int(os.path.join(acct, "cpuacct.usage")),
            "percpu": [int(v) for v in
                       (_read(os.path.join(acct, "cpuacct.usage_percpu")) or "").split()],
            "kernel": times.get("system", 0) * tick, "user": times.get("user", 0) * tick},
            "throttling": {}}
    if (mem := dirs.get("memory")) is not None:
        doc["memory"] = {"usage": {
            "usage": _int(os.path.join(mem, "memory.usage_in_bytes")),
            "max": _int(os.path.join(mem, "memory.max_usage_in_bytes")),
            "limit": _int(os.path.join(mem, "memory.limit_in_bytes")),
            "failcnt": _int(os.path.join(mem, "memory.failcnt"))},
            "raw": _keyed(os.path.join(mem, "memory.stat"))}
    if (pids := dirs.get("pids")) is not None:
        doc["pids"] = _pids(pids)
    return doc


def _pids(path: str) -> dict[str, int]:
    """runc leaves out the limit when there is none ("max")."""
    doc = {"current": _int(os.path.join(path, "pids.current"))}
    if (limit := _int(os.path.join(path, "pids.max"))) != _MAX:
        doc["limit"] = limit
    return doc


def _v2(path: str) -> dict[str, Any]:
    cpu = _keyed(os.path.join(path, "cpu.stat"))
    doc: dict[str, Any] = {"cpu": {"usage": {
        "total": cpu.get("usage_usec", 0) * 1000, "kernel": cpu.get("system_usec", 0) * 1000,
        "user": cpu.get("user_usec", 0) * 1000}, "throttling": {
        "periods": cpu.get("nr_periods", 0), "throttled_periods": cpu.get("nr_throttled", 0),
        "throttled_time": cpu.get("throttled_usec", 0) * 1000}}}
    doc["memory"] = {"usage": {"usage": _int(os.path.join(path, "memory.current")),
                               "limit": _int(os.path.join(path, "memory.max")),
                               "failcnt": _keyed(os.path.join(path, "memory.events"))
                               .get("max", 0)},
                     "raw": _keyed(os.path.join(path, "memory.stat"))}
    doc["pids"] = _pids(path)
    return doc
