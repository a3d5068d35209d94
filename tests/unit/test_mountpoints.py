"""oskit.mountpoints: the one remover of runtime-made mount points (build steps and the
/etc files of containers use it): empty ones go, filled ones stay, times come back, and
nothing outside the tree is touched through a symlinked parent."""

from __future__ import annotations

import os
from pathlib import Path

from ociimg.oskit.mountpoints import remove_mount_points


def test_empty_mount_points_go_deepest_first_and_filled_ones_stay(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "proc").mkdir(parents=True)
    (tree / "dev" / "pts").mkdir(parents=True)
    (tree / "etc").mkdir()
    (tree / "etc" / "hosts").write_text("")
    (tree / "etc" / "hostname").write_text("kept: written by the program\n")
    (tree / "data").mkdir()
    (tree / "data" / "file").write_text("x")
    os.utime(tree / "etc", ns=(1_000_000_000, 2_000_000_000))
    remove_mount_points(tree, ["/proc", "/dev", "/dev/pts", "/etc/hosts", "/etc/hostname",
                               "/data", "/missing"], {"/etc": (1_000_000_000, 2_000_000_000)})
    assert sorted(os.listdir(tree)) == ["data", "etc"]
    assert os.listdir(tree / "etc") == ["hostname"]
    assert (tree / "etc").stat().st_mtime_ns == 2_000_000_000


def test_a_symlinked_parent_never_leads_outside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "etc").mkdir(parents=True)
    (outside / "etc" / "hosts").write_text("")
    (outside / "victim").mkdir()
    os.utime(outside / "victim", ns=(5, 7))
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "etc").symlink_to(outside / "etc")  # absolute: out of the tree if followed
    (tree / "v").symlink_to("../outside/victim")
    remove_mount_points(tree, ["/etc/hosts", "/v", "/v/x"], {"/v": (1, 1), "/etc": (1, 1)})
    assert (outside / "etc" / "hosts").exists()
    assert (outside / "victim").is_dir() and (outside / "victim").stat().st_mtime_ns == 7
    assert (tree / "v").is_symlink() and (tree / "etc").is_symlink()
