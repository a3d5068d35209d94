"""Reshaping the cgroup mounts a forked child sees, to drive a pure v1 or pure v2 layout
on a hybrid host."""

from __future__ import annotations

import os
from pathlib import Path

from ociimg.oskit import linux
from ociimg.runtime.cgroups import detect


def reshape_cgroup_mounts(keep: str) -> None:
    """In a private mount ns: leave only a pure v2 ("v2") or pure v1 ("v1") layout."""
    linux.unshare(linux.CLONE.NEWNS)
    linux.mount(None, "/", None, linux.MS.REC | linux.MS.PRIVATE)
    mounts = detect.cgroup_mounts(Path("/proc/self/mountinfo").read_text())
    for m in sorted(mounts, key=lambda m: len(str(m.mountpoint)), reverse=True):
        if keep == "v1" and m.version == 1:
            continue
        linux.umount2(m.mountpoint, linux.MNT.DETACH)
    if keep == "v2":
        if os.path.ismount(detect.CGROUP_ROOT):
            linux.umount2(detect.CGROUP_ROOT, linux.MNT.DETACH)
        linux.mount("cgroup2", detect.CGROUP_ROOT, "cgroup2")
