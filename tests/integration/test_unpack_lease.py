"""A bundle made by ``unpack --overlay`` holds a lease on its snapshots until ``umount``:
``rmi`` and ``gc`` must not delete the lower layers of a mounted rootfs (a CI step's bundle
would then run with missing files). Real overlay mounts, as root."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ociimg.commands.leases import active_leases, add_lease, leases_dir
from ociimg.digest import Digest
from tests.integration.cli_helpers import ociimg
from tests.integration.runtime_helpers import mounts_under

pytestmark = pytest.mark.usefixtures("root")


def tree(path: Path) -> dict[str, int]:
    """Every file under ``path`` with its size, read through the mount."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames + dirnames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(path))] = st.st_size if not p.is_dir() else -1
    return out


def snapshot_dirs(root: Path) -> list[Path]:
    base = root / "snapshots"
    return [p for p in base.iterdir() if not p.name.startswith(".")] if base.is_dir() else []


def _check_lease_protects(root: Path, bundle: Path, drop_image: list[str]) -> None:
    assert mounts_under(bundle) == [str(bundle / "rootfs")]
    before = tree(bundle / "rootfs")
    assert "bin/busybox" in before
    snapshots = snapshot_dirs(root)
    assert snapshots
    for args in drop_image:
        ociimg(root, *args.split())
    ociimg(root, "gc")
    assert tree(bundle / "rootfs") == before  # nothing went missing under the mount
    assert all(p.is_dir() for p in snapshots)
    assert subprocess.run([str(bundle / "rootfs" / "bin" / "busybox"), "true"]).returncode == 0

    ociimg(root, "umount", str(bundle))
    assert mounts_under(bundle) == []
    assert f"Deleted {len(snapshots)} snapshots" in ociimg(root, "gc").stdout
    assert not any(p.exists() for p in snapshots)
    assert not list(leases_dir(root).iterdir())


def test_gc_keeps_the_snapshots_of_a_mounted_bundle_from_a_layout(ociroot: Path,
                                                                  fixture_layout: Path,
                                                                  tmp_path: Path) -> None:
    # An oci: image is not in the store: nothing but the lease keeps its snapshots.
    bundle = tmp_path / "bundle"
    ociimg(ociroot, "unpack", "--overlay", f"oci:{fixture_layout}:busybox", str(bundle))
    _check_lease_protects(ociroot, bundle, [])


def test_rmi_and_gc_keep_the_snapshots_of_a_mounted_bundle(ociroot: Path, tmp_path: Path,
                                                           pushed_fixtures: dict[str, str]
                                                           ) -> None:
    busybox = pushed_fixtures["busybox"]
    ociimg(ociroot, "pull", "-q", busybox)
    bundle = tmp_path / "bundle"
    ociimg(ociroot, "unpack", "--overlay", busybox, str(bundle))
    _check_lease_protects(ociroot, bundle, [f"rmi {busybox}"])


def test_unpack_force_over_a_mounted_bundle_moves_the_lease(ociroot: Path, tmp_path: Path,
                                                            fixture_layout: Path) -> None:
    bundle = tmp_path / "bundle"
    ociimg(ociroot, "unpack", "--overlay", f"oci:{fixture_layout}:busybox", str(bundle))
    ociimg(ociroot, "unpack", "--overlay", "--force", f"oci:{fixture_layout}:busybox",
           str(bundle))
    assert len(list(leases_dir(ociroot).iterdir())) == 1
    _check_lease_protects(ociroot, bundle, [])


def test_a_lease_whose_bundle_is_gone_protects_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    add_lease(root, tmp_path / "deleted-bundle", [Digest.of(b"x")])
    assert active_leases(root) == []
    assert not list(leases_dir(root).iterdir())
