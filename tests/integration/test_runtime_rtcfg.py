"""Attacks on the runtime through the bundle (as root, real kernel), each compared with
runc 1.1.5: device access without linux.resources, mount destinations that resolve to
the root through an image symlink, and leaks after a create killed mid-way."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.runtime_helpers import base_config, runtime, write_config

# The node is made inside the container (CAP_MKNOD, "c *:* m" is allowed) on its /dev
# tmpfs, which is not nodev: only the device cgroup can refuse the open (EPERM).
OPEN_FUSE = ("mknod -m 666 /dev/probe c 10 229 && "
             "{ (exec 3<>/dev/probe) 2>/dev/null && echo OPEN || echo REFUSED; }")


@pytest.mark.parametrize("resources", ["absent", "empty", "memory-only"])
def test_devices_outside_the_default_list_are_refused(runtime_env: tuple[Path, Path],
                                                      resources: str) -> None:
    bundle, state_root = runtime_env
    config = base_config(["sh", "-c", OPEN_FUSE])
    if resources == "empty":
        config["linux"]["resources"] = {}
    elif resources == "memory-only":
        config["linux"]["resources"] = {"memory": {"reservation": 64 << 20}}
    write_config(bundle, config)
    proc = runtime(state_root, "run", "-b", str(bundle), "c1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["REFUSED"]


def test_device_allowed_by_a_rule_opens(runtime_env: tuple[Path, Path]) -> None:
    """The control for the test above: the same open succeeds once a rule allows 10:229,
    so REFUSED there came from the device cgroup."""
    bundle, state_root = runtime_env
    config = base_config(["sh", "-c", OPEN_FUSE])
    config["linux"]["resources"] = {"devices": [
        {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rw"}]}
    write_config(bundle, config)
    proc = runtime(state_root, "run", "-b", str(bundle), "c1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["OPEN"]
