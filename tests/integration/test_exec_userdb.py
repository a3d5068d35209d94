"""``exec -u`` resolves the user in the running container's own /etc/passwd, which the
container itself may have replaced with a FIFO or a device node (item 18): the host side
must neither hang on it nor open it, and a numeric uid still works (as with runc)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.cli_helpers import ociimg

pytestmark = pytest.mark.usefixtures("root")


@pytest.mark.parametrize("make", ["mkfifo /etc/passwd", "mknod /etc/passwd c 1 5"],
                         ids=["fifo", "chardev-1-5"])
def test_exec_user_with_a_planted_passwd(ociroot: Path, fixture_layout: Path,
                                         make: str) -> None:
    image = f"oci:{fixture_layout}:busybox"
    ociimg(ociroot, "run", "-d", "--name", "box", image, "sleep", "300")
    try:
        ociimg(ociroot, "exec", "box", "sh", "-c", f"rm -f /etc/passwd && {make}")

        # A name needs the database: one clear line, at once (a FIFO hung here before).
        by_name = ociimg(ociroot, "exec", "-u", "nobody", "box", "true", timeout=30, check=False)
        assert by_name.returncode == 1 and "Traceback" not in by_name.stderr
        assert by_name.stderr.startswith("ociimg: error: ") and "/etc/passwd" in \
            by_name.stderr and "not a regular file" in by_name.stderr, by_name.stderr

        # A numeric uid works without a usable passwd (`id` itself would read the FIFO).
        by_uid = ociimg(ociroot, "exec", "-u", "1000:1000", "box", "grep", "^Uid:",
                        "/proc/self/status", timeout=30, check=False)
        assert by_uid.returncode == 0, by_uid.stderr
        assert by_uid.stdout.split()[1:] == ["1000"] * 4
    finally:
        ociimg(ociroot, "rm", "-f", "box", check=False)
