"""What `ociimg run --rm` skips for speed, and that it skips only that: an auto-removed
container's overlay is mounted volatile (its unmount does not sync the host filesystem
for a writable layer deleted next), a kept container's is not; the network's teardown,
though run beside the rootfs's removal, is over before the CLI returns."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import need
from tests.integration.cli_helpers import ociimg
from tests.integration.network_helpers import host_state

ROOT_LINE = "grep ' / ' /proc/self/mounts"


@pytest.fixture
def image(fixture_layout: Path) -> str:
    return f"oci:{fixture_layout}:busybox"


def _root_options(out: str) -> list[str]:
    line = next(entry for entry in out.splitlines() if entry.split()[1:3] == ["/", "overlay"])
    return line.split()[3].split(",")


def test_an_auto_removed_container_has_a_volatile_rootfs(ociroot: Path, image: str) -> None:
    out = ociimg(ociroot, "run", "-q", "--rm", "--network", "none", image, "sh", "-c",
                 ROOT_LINE).stdout
    assert "fsync=volatile" in _root_options(out)
    assert not list((ociroot / "snapshots" / "active").iterdir())  # and it is gone


def test_a_kept_container_syncs_its_rootfs(ociroot: Path, image: str) -> None:
    out = ociimg(ociroot, "run", "-q", "--name", "kept", "--network", "none", image, "sh",
                 "-c", ROOT_LINE).stdout
    options = _root_options(out)
    assert "fsync=volatile" not in options and any(o.startswith("upperdir=") for o in options)
    # Started again, it mounts the same writable layer (a volatile one would refuse).
    assert ociimg(ociroot, "start", "-a", "kept").returncode == 0
    ociimg(ociroot, "rm", "kept")


def test_the_bridge_is_torn_down_before_run_rm_returns(ociroot: Path, image: str,
                                                       tmp_path: Path) -> None:
    """The teardown runs on a thread of the monitor beside the rootfs's removal; the exit
    code is reported after both (docker and podman return after the cleanup too)."""
    need(os.access("/usr/lib/podman/netavark", os.X_OK), "netavark missing: apt-get install "
         "netavark aardvark-dns")
    cidfile = tmp_path / "cid"
    proc = ociimg(ociroot, "run", "-q", "--rm", "--cidfile", str(cidfile), image, "sh",
                  "-c", "ip -o -4 addr show eth0 | grep -c inet; exit 3", check=False)
    assert (proc.returncode, proc.stdout) == (3, "1\n"), proc.stderr
    cid = cidfile.read_text().strip()
    assert host_state([cid]) == {"netns": [], "attached": [], "locks": [], "leases": [],
                                 "rules": []}
    assert not (ociroot / "containers" / cid).exists()
