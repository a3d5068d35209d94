"""plan_mounts is pure: option parsing, bind handling, destination checks; resolve_in_root
on a tmp tree (no root needed)."""

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
    resolve_in_root,
)

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


def test_resolve_in_root_keeps_symlinks_inside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "real" / "dir").mkdir(parents=True)
    os.symlink("/etc", root / "abs")                 # absolute → root/etc
    os.symlink("../../../../..", root / "real" / "up")  # climbs → clamped at root
    os.symlink("real/dir", root / "rel")
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    r = str(root)
    assert resolve_in_root(r, "/abs/passwd") == f"{r}/etc/passwd"
    assert resolve_in_root(r, "/real/up/etc") == f"{r}/etc"
    assert resolve_in_root(r, "/rel/x") == f"{r}/real/dir/x"
    assert resolve_in_root(r, "/../../..") == r
    assert resolve_in_root(r, "/missing/a/b") == f"{r}/missing/a/b"
    with pytest.raises(OSError, match="too many symlinks"):
        resolve_in_root(r, "/loop1/x")


def test_resolve_in_root_dotdot_after_a_missing_component_stays_inside(tmp_path: Path
                                                                      ) -> None:
    """``link -> missing/../../../..``: once "missing" is absent the rest used to be
    joined as written, so makedirs of the result climbed out of the root."""
    root = tmp_path / "a" / "b" / "root"
    root.mkdir(parents=True)
    os.symlink("missing/../../../../escape", root / "link")
    os.symlink("/nodir/../../..", root / "abs")
    r = str(root)
    assert resolve_in_root(r, "/link") == f"{r}/escape"
    assert resolve_in_root(r, "/link/x/../y") == f"{r}/escape/y"
    assert resolve_in_root(r, "/abs/dev") == f"{r}/dev"
    (root / "file").write_text("")
    assert resolve_in_root(r, "/file/../../up") == f"{r}/up"


@pytest.mark.parametrize(("link", "dest"), [("/", "/vol"), (".", "/vol"), ("../..", "/vol"),
                                            ("/vol2/..", "/vol"), ("/", "/vol/")])
def test_destination_resolving_to_the_root_is_refused(tmp_path: Path, link: str,
                                                      dest: str) -> None:
    from ociimg.runtime.mounts import make_mountpoint
    root = tmp_path / "root"
    (root / "vol2").mkdir(parents=True)
    os.symlink(link, root / "vol")
    with pytest.raises(ContainerError, match="over the container's root"):
        make_mountpoint(str(root), normalize_destination(dest), as_file=False, kind="bind")


def test_destination_resolving_into_proc_is_refused(tmp_path: Path) -> None:
    from ociimg.runtime.mounts import make_mountpoint
    root = tmp_path / "root"
    (root / "proc" / "sys").mkdir(parents=True)
    os.symlink("/proc/sys", root / "x")
    with pytest.raises(ContainerError, match="/x resolves to /proc/sys"):
        make_mountpoint(str(root), "/x", as_file=False, kind="bind")
    assert make_mountpoint(str(root), "/proc/meminfo", as_file=True, kind="bind")
