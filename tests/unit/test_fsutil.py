"""Crash-safe file helpers."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from ociimg.fsutil import atomic_write, remove_tree, replace_dir


def test_atomic_write_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.json"
    atomic_write(target, b"one")
    atomic_write(target, b"two", mode=0o600)
    assert target.read_bytes() == b"two"
    assert target.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["f.json"]  # no temp left


def test_replace_dir_swaps_in_the_new_tree(tmp_path: Path) -> None:
    final, tmp = tmp_path / "final", tmp_path / "tmp"
    final.mkdir()
    (final / "old").write_text("x")
    tmp.mkdir()
    (tmp / "new").write_text("y")
    replace_dir(tmp, final)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]
    assert [p.name for p in final.iterdir()] == ["new"]


def _remove_as_unprivileged_user(base: Path) -> None:
    """Run in a child as nobody: root ignores permission bits, an ordinary user does not."""
    os.setgid(65534)
    os.setuid(65534)
    tree = base / "tree"
    (tree / "locked" / "deeper").mkdir(parents=True)
    (tree / "locked" / "deeper" / "f").write_text("x")
    (tree / "readonly").mkdir()
    (tree / "readonly" / "g").write_text("y")
    os.chmod(tree / "readonly", 0o555)
    os.chmod(tree / "locked" / "deeper", 0o000)
    os.chmod(tree / "locked", 0o000)
    remove_tree(tree)
    assert not tree.exists()


def test_remove_tree_handles_unreadable_and_readonly_dirs(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        _remove_as_unprivileged_user(tmp_path)
        return
    # pytest's tmp_path sits under a root-only 0700 dir; nobody needs a reachable one.
    base = Path(tempfile.mkdtemp(prefix="ociimg-fsutil-"))
    os.chmod(base, 0o755)
    os.chown(base, 65534, 65534)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            _remove_as_unprivileged_user(base)
            code = 0
        except BaseException as exc:  # noqa: BLE001 - reported through the exit code
            os.write(2, f"{type(exc).__name__}: {exc}\n".encode())
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    try:
        assert os.waitstatus_to_exitcode(status) == 0
        assert list(base.iterdir()) == []
    finally:
        remove_tree(base)


def test_remove_tree_of_a_missing_path_is_quiet(tmp_path: Path) -> None:
    remove_tree(tmp_path / "absent")
    link = tmp_path / "link"
    link.symlink_to("/etc")
    remove_tree(link)
    assert not link.is_symlink() and os.path.exists("/etc")


@pytest.mark.parametrize("data", [b"", b"\x00" * 100000])
def test_atomic_write_sizes(tmp_path: Path, data: bytes) -> None:
    atomic_write(tmp_path / "f", data)
    assert (tmp_path / "f").read_bytes() == data
