"""plan_mounts is pure: option parsing, bind handling, destination checks; mount points
opened inside a tmp tree (no root needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ociimg.bundle.profiles import default_mounts
from ociimg.errors import ContainerError
from ociimg.oskit.linux import MS
from ociimg.runtime.mounts import (
    MountOp,
    normalize_destination,
    parse_options,
    plan_mount,
    plan_mounts,
)
from ociimg.runtime.mounts import open_mountpoint as _open_mountpoint


def open_mountpoint(root: str, dest: str, as_file: bool = False, kind: str = "fs") -> str:
    fd, target = _open_mountpoint(root, dest, as_file, kind)
    try:
        assert os.readlink(f"/proc/self/fd/{fd}") == target
    finally:
        os.close(fd)
    return target

BUNDLE = Path("/bundles/b1")


@pytest.mark.parametrize(("options", "flags", "prop", "data"), [
    ([], 0, (), None),
    (["ro"], MS.RDONLY, (), None),
    (["ro", "rw"], 0, (), None),
    (["nosuid", "nodev", "noexec"], MS.NOSUID | MS.NODEV | MS.NOEXEC, (), None),
    (["nosuid", "suid"], 0, (), None),
    (["rbind", "ro"], MS.BIND | MS.REC | MS.RDONLY, (), None),
    (["bind", "rprivate"], MS.BIND, (MS.PRIVATE | MS.REC,), None),
    (["rslave", "shared"], 0, (MS.SLAVE | MS.REC, MS.SHARED), None),
    (["mode=755", "size=65536k"], 0, (), "mode=755,size=65536k"),
    (["newinstance", "ptmxmode=0666", "mode=0620", "gid=5", "nosuid", "noexec"],
     MS.NOSUID | MS.NOEXEC, (), "newinstance,ptmxmode=0666,mode=0620,gid=5"),
    (["strictatime", "noatime", "atime"], MS.STRICTATIME, (), None),
    (["tmpcopyup"], 0, (), None),
])
def test_parse_options(options: list[str], flags: int, prop: tuple[int, ...],
                       data: str | None) -> None:
    assert parse_options(options) == (flags, prop, data)


@pytest.mark.parametrize("opt", ["idmap", "rro", "rnosuid"])
def test_unsupported_options_are_refused(opt: str) -> None:
    with pytest.raises(ContainerError, match=opt):
        parse_options([opt])


def test_bind_relative_source_is_bundle_relative() -> None:
    op = plan_mount({"destination": "/data", "type": "bind", "source": "vol",
                     "options": ["rbind", "ro", "nosuid"]}, BUNDLE)
    assert op.kind == "bind" and op.source == "/bundles/b1/vol" and op.fstype is None
    assert op.flags == MS.BIND | MS.REC | MS.RDONLY | MS.NOSUID
    # A bind only honours ro/nosuid on a second, remount call.
    assert op.remount_flags == MS.RDONLY | MS.NOSUID


def test_bind_by_option_without_type() -> None:
    op = plan_mount({"destination": "/x", "source": "/src", "options": ["bind"]}, BUNDLE)
    assert op.kind == "bind" and op.flags == MS.BIND and op.remount_flags == 0


def test_bind_without_source_is_refused() -> None:
    with pytest.raises(ContainerError, match="no source"):
        plan_mount({"destination": "/x", "type": "bind", "options": ["rbind"]}, BUNDLE)


def test_default_mounts_plan_in_order() -> None:
    ops = plan_mounts(default_mounts(), BUNDLE)
    assert [op.destination for op in ops] == [m["destination"] for m in default_mounts()]
    kinds = {op.destination: op.kind for op in ops}
    assert kinds["/proc"] == "proc" and kinds["/sys"] == "sysfs"
    assert kinds["/sys/fs/cgroup"] == "cgroup" and kinds["/dev"] == "fs"
    sys_op = next(op for op in ops if op.destination == "/sys")
    assert sys_op.flags & MS.RDONLY and sys_op.fstype == "sysfs"


@pytest.mark.parametrize(("dest", "norm"), [
    ("/a/b/../c", "/a/c"), ("relative/x", "/relative/x"), ("/../../etc", "/etc"),
    ("//tmp//", "/tmp"), ("/proc/./sys/..", "/proc"),
])
def test_normalize_destination(dest: str, norm: str) -> None:
    assert normalize_destination(dest) == norm


@pytest.mark.parametrize("dest", ["/proc/sys", "//proc/sys", "/proc/self/attr",
                                  "/proc/1/..//sys/kernel", "/proc/../proc/kcore"])
def test_mount_over_proc_subpath_refused(dest: str) -> None:
    with pytest.raises(ContainerError, match="inside /proc"):
        plan_mount({"destination": dest, "type": "bind", "source": "/tmp",
                    "options": ["bind"]}, BUNDLE)


def test_lxcfs_style_proc_files_allowed() -> None:
    op = plan_mount({"destination": "/proc/meminfo", "type": "bind",
                     "source": "/var/lib/lxcfs/proc/meminfo", "options": ["bind"]}, BUNDLE)
    assert op.destination == "/proc/meminfo"


def test_non_proc_on_proc_and_root_refused() -> None:
    with pytest.raises(ContainerError, match="/proc may only be a proc mount"):
        plan_mount({"destination": "/proc", "type": "tmpfs", "source": "tmpfs"}, BUNDLE)
    with pytest.raises(ContainerError, match="container's root"):
        plan_mount({"destination": "/..", "type": "tmpfs", "source": "tmpfs"}, BUNDLE)


def test_mountop_is_frozen() -> None:
    op = MountOp("fs", "tmpfs", "/tmp", "tmpfs", 0, None)
    with pytest.raises(AttributeError):
        op.flags = 1  # type: ignore[misc]


def test_mountpoints_keep_symlinks_inside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "real" / "dir").mkdir(parents=True)
    os.symlink("/etc", root / "abs")                 # absolute → root/etc
    os.symlink("../../../../..", root / "real" / "up")  # climbs → clamped at root
    os.symlink("real/dir", root / "rel")
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    r = str(root)
    assert open_mountpoint(r, "/abs/passwd", as_file=True) == f"{r}/etc/passwd"
    assert (root / "etc" / "passwd").is_file()
    assert open_mountpoint(r, "/real/up/etc") == f"{r}/etc"
    assert open_mountpoint(r, "/rel/x") == f"{r}/real/dir/x"
    assert open_mountpoint(r, "/missing/a/b") == f"{r}/missing/a/b"
    with pytest.raises(ContainerError, match="symbolic links"):
        open_mountpoint(r, "/loop1/x")
    assert not (tmp_path / "etc").exists()


def test_mountpoint_dotdot_after_a_missing_component_stays_inside(tmp_path: Path) -> None:
    """``link -> missing/../../../..``: once "missing" is absent the rest must not be
    joined as written, or makedirs of the result climbs out of the root."""
    root = tmp_path / "a" / "b" / "root"
    root.mkdir(parents=True)
    os.symlink("missing/../../../../escape", root / "link")
    os.symlink("/nodir/../../..", root / "abs")
    r = str(root)
    assert open_mountpoint(r, "/link") == f"{r}/escape"
    assert open_mountpoint(r, "/link/x/../y") == f"{r}/escape/y"
    assert open_mountpoint(r, "/abs/dev") == f"{r}/dev"
    (root / "file").write_text("")
    with pytest.raises(ContainerError, match="Not a directory"):
        open_mountpoint(r, "/file/../../up")
    assert not (tmp_path / "a" / "escape").exists()
    assert sorted(os.listdir(tmp_path / "a" / "b")) == ["root"]


def test_mountpoint_file_through_a_dangling_link_is_made_inside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    os.symlink("/run/resolv.conf", root / "etc" / "resolv.conf")
    r = str(root)
    assert open_mountpoint(r, "/etc/resolv.conf", as_file=True) == f"{r}/run/resolv.conf"
    assert (root / "run" / "resolv.conf").is_file()
    os.mkfifo(root / "fifo")  # an existing FIFO is opened O_PATH only: no hang
    assert open_mountpoint(r, "/fifo", as_file=True) == f"{r}/fifo"


@pytest.mark.parametrize(("link", "dest"), [("/", "/vol"), (".", "/vol"), ("../..", "/vol"),
                                            ("/vol2/..", "/vol"), ("/", "/vol/")])
def test_destination_resolving_to_the_root_is_refused(tmp_path: Path, link: str,
                                                      dest: str) -> None:
    root = tmp_path / "root"
    (root / "vol2").mkdir(parents=True)
    os.symlink(link, root / "vol")
    with pytest.raises(ContainerError, match="over the container's root"):
        open_mountpoint(str(root), normalize_destination(dest), as_file=False, kind="bind")


def test_destination_resolving_into_proc_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "proc" / "sys").mkdir(parents=True)
    os.symlink("/proc/sys", root / "x")
    with pytest.raises(ContainerError, match="/x resolves to /proc/sys"):
        open_mountpoint(str(root), "/x", as_file=False, kind="bind")
    assert open_mountpoint(str(root), "/proc/meminfo", as_file=True, kind="bind")
