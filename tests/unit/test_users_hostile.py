"""An image's /etc/passwd or /etc/group that is a FIFO, a device node or a link out of the
root: never opened for I/O, never read without bound, and a numeric uid still works."""

from __future__ import annotations

import ctypes
import os
import stat
import struct
from pathlib import Path

import pytest

from ociimg.errors import InvalidDocument
from ociimg.oskit import paths
from ociimg.users import ExecUser, read_in_root, resolve_user
from tests.conftest import need

IN_OPEN = 0x20
_libc = ctypes.CDLL(None, use_errno=True)


class OpenWatch:
    """inotify IN_OPEN on one path: did anything open it (for I/O; O_PATH is no open)?"""

    def __init__(self, path: Path) -> None:
        self.fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self.fd >= 0, os.strerror(ctypes.get_errno())
        wd = _libc.inotify_add_watch(self.fd, bytes(path), IN_OPEN)
        assert wd >= 0, os.strerror(ctypes.get_errno())

    def opened(self) -> bool:
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return False
        masks = [struct.unpack_from("iIII", data, off)[1]
                 for off in _offsets(data)]
        return any(m & IN_OPEN for m in masks)

    def close(self) -> None:
        os.close(self.fd)


def _offsets(data: bytes) -> list[int]:
    out, off = [], 0
    while off < len(data):
        out.append(off)
        off += 16 + struct.unpack_from("iIII", data, off)[3]
    return out


def _rootfs(tmp_path: Path) -> Path:
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    return rootfs


NODES = ["fifo", "zero"]


def _make_node(path: Path, kind: str) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    else:
        need(os.geteuid() == 0, "mknod of a character device needs root")
        os.mknod(path, stat.S_IFCHR | 0o644, os.makedev(1, 5))  # what /dev/zero is


@pytest.mark.parametrize("use_openat2", [False, True])
@pytest.mark.parametrize("kind", NODES)
@pytest.mark.parametrize("db", ["passwd", "group"])
def test_a_device_or_fifo_user_database_is_never_opened(tmp_path: Path, kind: str, db: str,
                                                         use_openat2: bool) -> None:
    if use_openat2:
        need(paths.HAVE_OPENAT2, "openat2 (Linux >= 5.6) not available")
    rootfs = _rootfs(tmp_path)
    node = rootfs / "etc" / db
    _make_node(node, kind)
    watch = OpenWatch(node)
    try:
        with pytest.raises(InvalidDocument, match=f"/etc/{db}: .*not a regular file"):
            read_in_root(rootfs, f"/etc/{db}", 1 << 20, use_openat2=use_openat2)
        assert not watch.opened(), f"/etc/{db} ({kind}) was opened before its type was checked"
    finally:
        watch.close()


@pytest.mark.parametrize("kind", NODES)
def test_user_lookup_with_a_device_passwd_fails_for_names_and_works_for_uids(
        tmp_path: Path, kind: str) -> None:
    rootfs = _rootfs(tmp_path)
    _make_node(rootfs / "etc" / "passwd", kind)
    _make_node(rootfs / "etc" / "group", kind)
    # docker/runc: an unknown (here: unreadable) user name is an error ...
    with pytest.raises(InvalidDocument, match="/etc/passwd"):
        resolve_user("nobody", rootfs)
    # ... and a numeric uid works without a passwd; a named group needs /etc/group.
    assert resolve_user("1000", rootfs) == ExecUser(1000, 0)
    assert resolve_user("1000:1000", rootfs) == ExecUser(1000, 1000)
    with pytest.raises(InvalidDocument, match="/etc/group"):
        resolve_user("1000:staff", rootfs)


def test_a_symlink_to_dev_zero_stays_in_the_root(tmp_path: Path) -> None:
    rootfs = _rootfs(tmp_path)
    (rootfs / "etc" / "passwd").symlink_to("/dev/zero")  # rootfs/dev/zero: absent
    assert read_in_root(rootfs, "/etc/passwd", 1 << 20) is None
    assert resolve_user("0", rootfs) == ExecUser(0, 0)
    (rootfs / "dev").mkdir()
    (rootfs / "dev" / "zero").write_bytes(b"root:x:0:0::/root:/bin/sh\n" * 10)
    with pytest.raises(InvalidDocument, match="larger than 100 bytes"):
        read_in_root(rootfs, "/etc/passwd", 100)
