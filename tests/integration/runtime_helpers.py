"""Bundles for runtime tests: a busybox-static rootfs and a base_config() (crun's tests)."""

from __future__ import annotations

import copy
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

BUSYBOX = Path("/usr/bin/busybox")
RUNTIME = [sys.executable, "-m", "ociimg.runtime"]
REPO = str(Path(__file__).resolve().parents[2])


def make_rootfs(path: Path) -> Path:
    """rootfs/bin/busybox with one symlink per applet, plus the dirs an image has."""
    bindir = path / "bin"
    bindir.mkdir(parents=True)
    shutil.copy2(BUSYBOX, bindir / "busybox")
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            os.symlink("busybox", bindir / applet)
    for d in ("proc", "sys", "dev", "etc", "tmp", "root"):
        (path / d).mkdir(exist_ok=True)
    (path / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                         "nobody:x:65534:65534:nobody:/:/bin/sh\n")
    (path / "etc" / "group").write_text("root:x:0:\nnobody:x:65534:\n")
    return path


def base_config(args: list[str], **overrides: Any) -> dict[str, Any]:
    """A runc-like default config using ociimg.bundle.profiles' defaults."""
    from ociimg.bundle import profiles
    caps = list(profiles.DEFAULT_CAPABILITIES)
    config: dict[str, Any] = {
        "ociVersion": "1.2.0",
        "root": {"path": "rootfs", "readonly": False},
        "hostname": "ociimg-test",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [dict(r) for r in profiles.DEFAULT_RLIMITS],
            "noNewPrivileges": True,
        },
        "mounts": profiles.default_mounts(),
        "linux": {
            "namespaces": [{"type": t} for t in
                           ("pid", "network", "ipc", "uts", "mount", "cgroup")],
            "maskedPaths": list(profiles.DEFAULT_MASKED_PATHS),
            "readonlyPaths": list(profiles.DEFAULT_READONLY_PATHS),
            "seccomp": profiles.default_seccomp_profile(),
            # Without a path the cgroup is named after the container id ("c1"), shared by
            # every concurrent test run: give each config its own.
            "cgroupsPath": f"/ociimg-test/{uuid.uuid4().hex[:12]}",
        },
    }
    for key, value in overrides.items():
        config[key] = value
    return copy.deepcopy(config)


def make_bundle(tmp: Path, args: list[str], config: dict[str, Any] | None = None) -> Path:
    bundle = tmp / "bundle"
    bundle.mkdir(exist_ok=True)
    if not (bundle / "rootfs").exists():
        make_rootfs(bundle / "rootfs")
    write_config(bundle, config or base_config(args))
    return bundle


# cgroupsPath of every config written, so fixtures can check none is left behind.
WRITTEN_CGROUPS: list[str] = []


def write_config(bundle: Path, config: dict[str, Any]) -> None:
    path = (config.get("linux") or {}).get("cgroupsPath")
    if path:
        WRITTEN_CGROUPS.append(path)
    (bundle / "config.json").write_text(json.dumps(config, indent=2))


def leftover_cgroups() -> list[str]:
    """Cgroup dirs of configs written by this process that still exist (in any hierarchy)."""
    found = []
    root = Path("/sys/fs/cgroup")
    hierarchies = [root] if (root / "cgroup.controllers").exists() else [
        p for p in root.iterdir() if p.is_dir() and not p.is_symlink()]
    for path in WRITTEN_CGROUPS:
        found += [str(h / path.lstrip("/")) for h in hierarchies
                  if (h / path.lstrip("/")).exists()]
    return found


def runtime(state_root: Path, *args: str, timeout: float = 60,
            check: bool = False, **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run the CLI; output goes to files, not pipes: a created container keeps the
    runtime's stdio open, and reading a pipe to EOF would wait for it to exit."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.run([*RUNTIME, "--root", str(state_root), *args], stdout=out,
                              stderr=err, timeout=timeout, cwd=REPO, **kw)
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(proc.args, proc.returncode,
                                             out.read().decode(), err.read().decode())
    if check and result.returncode != 0:
        raise AssertionError(f"ociimg-runtime {' '.join(args)} failed ({result.returncode}):"
                             f"\n{result.stdout}\n{result.stderr}")
    return result


def mounts_under(path: Path) -> list[str]:
    """Host mount points at or below path (must be empty after a test)."""
    from ociimg.oskit.mountinfo import read_mountinfo
    prefix = str(path)
    return [m.mount_point for m in read_mountinfo() if m.mount_point.startswith(prefix)]


def state_of(state_root: Path, cid: str) -> dict[str, Any]:
    return json.loads(runtime(state_root, "state", cid, check=True).stdout)


def read_until_hangup(master: int, deadline: float | None = None) -> bytes:
    """Everything a pty's master yields until the other side closes (EIO) or the
    time.monotonic() ``deadline`` passes, then close it."""
    out = b""
    while deadline is None or time.monotonic() < deadline:
        if deadline is not None and not select.select([master], [], [], 0.5)[0]:
            continue
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the last slave fd is gone
            break
        if not data:
            break
        out += data
    os.close(master)
    return out
