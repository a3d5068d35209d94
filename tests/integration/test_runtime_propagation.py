"""Mount propagation of an rshared volume, as critest's "mount with 'rshared' should support
propagation from host to container and vice versa" needs, side by side with runc: a mount
the container makes inside the volume appears on the host. pivot_root must make only the
old root rslave; slaving the container's own tree cut the volume off from the host's peer
group (it came back as a new group, ``shared:N master:M``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ociimg.oskit import linux
from ociimg.oskit.linux import MS
from ociimg.oskit.mountinfo import read_mountinfo
from tests.conftest import need
from tests.integration.forked import run_in_child, shared_tmpfs_in_own_mount_ns
from tests.integration.runtime_helpers import base_config, make_bundle, runtime

pytestmark = pytest.mark.usefixtures("root")

MOUNT_IN_VOLUME = "mkdir -p /vol/inner && mount --bind /etc /vol/inner && echo mounted"


def _config(volume: Path) -> dict:
    config = base_config(["sh", "-c", MOUNT_IN_VOLUME])
    caps = config["process"]["capabilities"]
    for kind in caps:
        caps[kind] = sorted(set(caps[kind]) | {"CAP_SYS_ADMIN"})
    config["linux"].pop("seccomp", None)
    config["linux"]["rootfsPropagation"] = "rshared"
    config["mounts"].append({"destination": "/vol", "type": "bind", "source": str(volume),
                             "options": ["rbind", "rshared", "rw"]})
    return config


def _propagates(tmp_path: Path, state_root: Path, runtime_name: str) -> dict:
    base = shared_tmpfs_in_own_mount_ns(tmp_path / runtime_name)
    volume = base / "volume"
    volume.mkdir()
    linux.mount(str(volume), str(volume), None, MS.BIND)
    linux.mount(None, str(volume), None, MS.SHARED | MS.REC)
    bundle = make_bundle(base, [], _config(volume))
    rootfs = str(bundle / "rootfs")
    linux.mount(rootfs, rootfs, None, MS.BIND)  # a mount point, as containerd's rootfs is
    if runtime_name == "runc":
        proc = subprocess.run(["runc", "--root", str(base / "runc-state"), "run", "--bundle",
                               str(bundle), "prop-runc"], capture_output=True, text=True,
                              timeout=60)
    else:
        proc = runtime(state_root, "run", "--bundle", str(bundle), "prop-ours")
    return {"rc": proc.returncode, "out": proc.stdout, "err": proc.stderr,
            "seen_on_host": sorted(p.name for p in (volume / "inner").iterdir())}


@pytest.mark.parametrize("runtime_name", ["ours", "runc"])
def test_a_mount_inside_an_rshared_volume_reaches_the_host(
        runtime_env: tuple[Path, Path], tmp_path: Path, runtime_name: str) -> None:
    if runtime_name == "runc":
        need(shutil.which("runc") is not None, "runc missing: apt-get install runc")
    _bundle, state_root = runtime_env
    status, result = run_in_child(lambda: _propagates(tmp_path, state_root, runtime_name))
    assert status == 0 and result is not None and "ok" in result, result
    res = result["ok"]
    assert res["rc"] == 0, res["err"]
    assert res["out"] == "mounted\n"
    assert "passwd" in res["seen_on_host"]  # the container's bind of /etc, seen from outside
    assert not any(m.mount_point.startswith(str(tmp_path)) for m in read_mountinfo())
