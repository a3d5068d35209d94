"""``exec -u`` resolves the user in the running container's own /etc/passwd, which the
container itself may have replaced with a FIFO or a device node (item 18): the host side
must neither hang on it nor open it, and a numeric uid still works (as with runc)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("root")
WORKTREE = Path(__file__).resolve().parents[2]


def ociimg(root: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OCIIMG_ROOT": str(root), "PYTHONPATH": str(WORKTREE)}
    return subprocess.run([sys.executable, "-m", "ociimg", *args], env=env, text=True,
                          capture_output=True, timeout=timeout)


def mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(path))]


@pytest.mark.parametrize("make", ["mkfifo /etc/passwd", "mknod /etc/passwd c 1 5"],
                         ids=["fifo", "chardev-1-5"])
def test_exec_user_with_a_planted_passwd(tmp_path: Path, fixture_layout: Path,
                                         make: str) -> None:
    root = tmp_path / "root"
    image = f"oci:{fixture_layout}:busybox"
    started = ociimg(root, "run", "-d", "--name", "box", image, "sleep", "300")
    assert started.returncode == 0, started.stderr
    try:
        planted = ociimg(root, "exec", "box", "sh", "-c", f"rm -f /etc/passwd && {make}")
        assert planted.returncode == 0, planted.stderr

        # A name needs the database: one clear line, at once (a FIFO hung here before).
        by_name = ociimg(root, "exec", "-u", "nobody", "box", "true", timeout=30)
        assert by_name.returncode == 1 and "Traceback" not in by_name.stderr
        assert by_name.stderr.startswith("ociimg: error: ") and "/etc/passwd" in \
            by_name.stderr and "not a regular file" in by_name.stderr, by_name.stderr

        # A numeric uid works without a usable passwd (`id` itself would read the FIFO).
        by_uid = ociimg(root, "exec", "-u", "1000:1000", "box", "grep", "^Uid:",
                        "/proc/self/status", timeout=30)
        assert by_uid.returncode == 0, by_uid.stderr
        assert by_uid.stdout.split()[1:] == ["1000"] * 4
    finally:
        ociimg(root, "rm", "-f", "box")
    leftover = mounts_under(tmp_path)
    for m in reversed(leftover):
        subprocess.run(["umount", "-l", m], check=False)
    assert not leftover, f"mounts left behind: {leftover}"
