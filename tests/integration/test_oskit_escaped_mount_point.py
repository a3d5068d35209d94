"""A bundle whose rootfs lives under a mount point with a space, a newline and a
backslash in its path: mountinfo escapes those (\\040, \\012, \\134), and the runtime must
still find that mount and make it private before pivot_root (runc
rootfsParentMountPrivate). Left shared, the rootfs bind joins its peer group and
pivot_root fails with EINVAL."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ociimg.oskit import linux
from ociimg.oskit.linux import MS
from ociimg.oskit.mountinfo import containing_mount, read_mountinfo
from tests.conftest import need
from tests.integration.forked import run_in_child, shared_tmpfs_in_own_mount_ns
from tests.integration.runtime_helpers import base_config, make_bundle, runtime

ODD = "odd dir\nwith\\back\tslash"


def _run_under_shared_odd_mount(tmp_path: Path, state_root: Path) -> dict:
    mnt = shared_tmpfs_in_own_mount_ns(tmp_path / ODD)
    parent = containing_mount(read_mountinfo(), str(mnt / "bundle"))
    assert parent is not None and parent.mount_point == str(mnt) and parent.shared
    config = base_config(["sh", "-c", "echo ok; cat /proc/self/mountinfo | wc -l"])
    config["linux"]["rootfsPropagation"] = "rshared"
    bundle = make_bundle(mnt, [], config)
    proc = runtime(state_root, "run", "--bundle", str(bundle), "odd1")
    return {"rc": proc.returncode, "out": proc.stdout, "err": proc.stderr}


def test_rootfs_under_an_escaped_mount_point_runs_with_rshared(
        runtime_env: tuple[Path, Path], tmp_path: Path) -> None:
    _bundle, state_root = runtime_env
    status, result = run_in_child(lambda: _run_under_shared_odd_mount(tmp_path, state_root))
    assert result is not None and "ok" in result, result
    res = result["ok"]
    assert res["rc"] == 0, res["err"]
    assert res["out"].splitlines()[0] == "ok"
    assert status == 0
    # the mount lived only in the child's namespace
    assert not any(m.mount_point.startswith(str(tmp_path)) for m in read_mountinfo())
    assert os.listdir(tmp_path / ODD) == []


def _run_with_shared_rootfs_mount(tmp_path: Path, state_root: Path) -> dict:
    """containerd's layout: the rootfs is a mount point of its own (the snapshot's
    overlay), shared, and the config asks for rshared propagation (critest's "mount with
    'rshared' should support propagation from host to container")."""
    base = shared_tmpfs_in_own_mount_ns(tmp_path / "shared")
    config = base_config(["echo", "ok"])
    config["linux"]["rootfsPropagation"] = "rshared"
    bundle = make_bundle(base, [], config)
    rootfs = str(bundle / "rootfs")
    linux.mount(rootfs, rootfs, None, MS.BIND)  # the rootfs is a mount point, shared
    out = {}
    for name, cmd in (("ours", None), ("runc", ["runc"])):
        if cmd is None:
            proc = runtime(state_root, "run", "--bundle", str(bundle), "shared1")
        else:
            proc = subprocess.run([*cmd, "--root", str(tmp_path / "runc-state"), "run",
                                   "--bundle", str(bundle), "shared-runc"],
                                  capture_output=True, text=True, timeout=60)
        out[name] = {"rc": proc.returncode, "out": proc.stdout, "err": proc.stderr}
    return out


def test_a_shared_rootfs_mount_point_with_rshared_runs_as_with_runc(
        runtime_env: tuple[Path, Path], tmp_path: Path) -> None:
    need(shutil.which("runc") is not None, "runc missing: apt-get install runc")
    _bundle, state_root = runtime_env
    status, result = run_in_child(lambda: _run_with_shared_rootfs_mount(tmp_path, state_root))
    assert status == 0 and result is not None and "ok" in result, result
    res = result["ok"]
    assert res["runc"]["rc"] == 0, res["runc"]["err"]
    assert res["ours"]["rc"] == 0, res["ours"]["err"]
    assert res["ours"]["out"] == res["runc"]["out"] == "ok\n"
    assert not any(m.mount_point.startswith(str(tmp_path)) for m in read_mountinfo())
