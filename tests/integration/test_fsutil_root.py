"""Tree removal as root against real mounts: nothing is deleted through a filesystem
mounted inside the tree (a bundle whose rootfs is still mounted, a volume)."""

from __future__ import annotations

import errno
import subprocess
from pathlib import Path

import pytest

from ociimg.fsutil import remove_tree

pytestmark = pytest.mark.usefixtures("root")


def test_remove_tree_refuses_to_empty_a_mounted_filesystem(tmp_path: Path) -> None:
    tree = tmp_path / "bundle"
    (tree / "rootfs").mkdir(parents=True)
    (tree / "config.json").write_text("{}")
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(tree / "rootfs")], check=True)
    try:
        (tree / "rootfs" / "precious").write_text("keep me")
        with pytest.raises(OSError) as info:
            remove_tree(tree)
        assert info.value.errno == errno.EBUSY and info.value.filename == "rootfs"
        assert (tree / "rootfs" / "precious").read_text() == "keep me"
    finally:
        subprocess.run(["umount", str(tree / "rootfs")], check=True)
    remove_tree(tree)
    assert not tree.exists()
