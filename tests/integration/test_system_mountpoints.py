"""The /etc files' mount points the runtime makes in an image without /etc are removed
when the container exits (one remover, oskit.mountpoints, shared with build steps):
`diff` shows nothing and a commit carries no empty /etc."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.cli_helpers import ociimg

pytestmark = pytest.mark.usefixtures("root")


def test_etc_mount_points_of_an_image_without_etc_leave_no_trace(ociroot: Path,
                                                                 fixture_layout: Path) -> None:
    image = f"oci:{fixture_layout}:busybox"
    # The /etc files are mounts in it: everything else in /etc goes, then /etc at commit
    ociimg(ociroot, "run", "--name", "strip", "--network", "none", image, "sh", "-c",
           "rm -rf /etc/* ; true")
    ociimg(ociroot, "commit", "strip", "noetc:1")
    # The hosts and resolv.conf strip's run needed (busybox has neither) did not go in.
    assert ociimg(ociroot, "ls", "noetc:1", "/etc").stdout.split() == ["/etc/hostname"]
    ociimg(ociroot, "run", "--name", "c", "--network", "none", "noetc:1", "sh", "-c",
           "cat /etc/hostname >/dev/null && test -s /etc/hosts")
    assert ociimg(ociroot, "diff", "c").stdout == ""
    cid = json.loads(ociimg(ociroot, "container", "inspect", "c").stdout)[0]["Id"]
    upper = ociroot / "snapshots" / "active" / cid / "upper"
    assert upper.is_dir()
    made = [p.name for p in (upper / "etc").iterdir()] if (upper / "etc").is_dir() else []
    assert not {"hosts", "resolv.conf", "hostname"} & set(made), made
    assert ociimg(ociroot, "run", "--rm", "--network", "none", "noetc:1", "sh", "-c",
                  "ls -d /etc").stdout.strip() == "/etc"  # made again for this run
    ociimg(ociroot, "rm", "strip", "c")
