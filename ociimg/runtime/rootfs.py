"""The container's root filesystem: propagation, the rootfs bind, /dev, pivot_root,
readonly and masked paths (runc libcontainer/rootfs_linux.go, in its order)."""

from __future__ import annotations

import os
import stat

from ociimg.errors import ContainerError
from ociimg.runtime import linux
from ociimg.runtime.linux import MNT, MS
from ociimg.runtime.mounts import (
    PROPAGATION,
    make_mountpoint,
    open_checked,
    resolve_in_root,
    statvfs_flags,
)

TYPE_CHECKING = False  # typing costs ~5 ms of every runtime start
if TYPE_CHECKING:
    from typing import Any

# runtime-spec config-linux.md "Default Devices": (name, major, minor).
DEFAULT_DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
                   ("urandom", 1, 9), ("tty", 5, 0))
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"))


def set_root_propagation(propagation: str | None) -> None:
    """Make / rslave (default) so nothing we mount leaks to the host, while host
    unmounts still reach us (runc prepareRoot)."""
    flags = PROPAGATION.get(propagation or "rslave")
    if flags is None:
        raise ContainerError(f"linux.rootfsPropagation: unknown value {propagation!r}")
    linux.mount(None, "/", None, flags)


def make_parent_private(path: str) -> None:
    """pivot_root fails when the rootfs's parent mount is shared; make that mount private
    (runc rootfsParentMountPrivate)."""
    mount_point, shared = _containing_mount(os.path.dirname(os.path.abspath(path)))
    if shared:
        linux.mount(None, mount_point, None, MS.PRIVATE)


def _containing_mount(path: str) -> tuple[str, bool]:
    best, shared = "/", False
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split(" - ")[0].split()
            mp = fields[4]
            if (path == mp or path.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best):
                best, shared = mp, any(t.startswith("shared:") for t in fields[6:])
    return best, shared


def bind_rootfs(rootfs: str) -> None:
    """Bind the rootfs onto itself so it is a mount point (pivot_root needs one)."""
    linux.mount(rootfs, rootfs, None, MS.BIND | MS.REC)


def needs_dev_setup(mounts: list[Any]) -> bool:
    """runc: /dev is populated unless the config bind-mounts /dev from somewhere."""
    return not any(m.destination == "/dev" and m.kind == "bind" for m in mounts)


def mount_dev_tmpfs(rootfs: str) -> None:
    """No /dev mount in the config: give the container a tmpfs /dev rather than writing
    device nodes into the image's rootfs."""
    target = make_mountpoint(rootfs, "/dev", as_file=False)
    fd = open_checked(rootfs, target, os.O_DIRECTORY)
    try:
        linux.mount("tmpfs", f"/proc/self/fd/{fd}", "tmpfs", MS.NOSUID | MS.STRICTATIME,
                    "mode=755,size=65536k")
    finally:
        os.close(fd)


def open_dev_dir(rootfs: str) -> int:
    """O_PATH fd of the container's /dev, the only place nodes and links are made in.

    It must be a mount point (inside the rootfs) of a filesystem mounted nowhere outside
    the rootfs: a fresh tmpfs. A host directory that a volume or an image symlink put
    there (``/dev -> /vol`` with ``-v HOST:/vol``) is mounted on the host as well, and
    the runtime must never write device nodes into it."""
    fd = os.open(resolve_in_root(rootfs, "/dev"),
                 os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")
        root = os.path.abspath(rootfs).rstrip("/")
        st_dev = os.fstat(fd).st_dev
        outside, mounted_here = None, False
        for mount_point in _mount_points_of(st_dev):
            if mount_point == real:
                mounted_here = True
            elif mount_point != root and not mount_point.startswith(root + "/"):
                outside = mount_point
        if not real.startswith(root + "/") or outside is not None or not mounted_here:
            where = f"is also mounted at {outside}" if outside else "is not a mount of its own"
            raise ContainerError(f"/dev in the container ({real}) {where}; refusing to create "
                                 "device nodes in it",
                                 hint="a mount or a symlink in the image puts a host "
                                      "directory on /dev; bind /dev explicitly or remove it")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _mount_points_of(st_dev: int) -> list[str]:
    """Every mount point of the filesystem ``st_dev`` in this mount namespace."""
    # Loaded already: create made the cgroup before it forked the init.
    from ociimg.runtime.cgroups.detect import unescape_mountinfo
    key = f"{os.major(st_dev)}:{os.minor(st_dev)}"
    with open("/proc/self/mountinfo") as f:
        return [unescape_mountinfo(fields[4]) for line in f
                if (fields := line.split(" ", 5))[2] == key]


def create_devices(rootfs: str, devices: tuple[dict[str, Any], ...]) -> None:
    """Default devices, then linux.devices; mknod where allowed, else bind the host's
    node (a user ns may not mknod — runc's bindMountDeviceNode). Every node is made
    relative to the checked /dev fd, never by a path that a symlink could redirect."""
    dev_fd = open_dev_dir(rootfs)
    try:
        for name, major, minor in DEFAULT_DEVICES:
            _make_device(dev_fd, f"/dev/{name}", stat.S_IFCHR, major, minor, 0o666, 0, 0)
        for i, dev in enumerate(devices):
            kind = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK,
                    "p": stat.S_IFIFO}.get(dev.get("type", ""))
            path = dev.get("path", "")
            parts = path.split("/")[2:]
            if kind is None or not path.startswith("/dev/") \
                    or any(p in ("", ".", "..") for p in parts):
                raise ContainerError(f"linux.devices[{i}]: needs type c|b|u|p and a "
                                     f"/dev/ path without '.' or '..' (got {path!r})")
            _make_device(dev_fd, path, kind, dev.get("major", 0), dev.get("minor", 0),
                         dev.get("fileMode", 0o666), dev.get("uid", 0), dev.get("gid", 0))
    finally:
        os.close(dev_fd)


def _open_subdir(dev_fd: int, parts: list[str], path: str) -> int:
    """fd of /dev/<parts...>, made 0755 where missing; never through a symlink or onto
    another mount (a volume on /dev/x must not receive device nodes either)."""
    st_dev = os.fstat(dev_fd).st_dev
    fd = os.dup(dev_fd)
    try:
        for part in parts:
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            sub = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=fd)
            os.close(fd)
            fd = sub
            if os.fstat(fd).st_dev != st_dev:
                raise ContainerError(f"device {path}: its directory is another mount",
                                     hint="device nodes go in the container's own /dev")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _make_device(dev_fd: int, path: str, kind: int, major: int, minor: int, mode: int,
                 uid: int, gid: int) -> None:
    parts = path.split("/")[2:]
    parent = _open_subdir(dev_fd, parts[:-1], path)
    name = parts[-1]
    try:
        try:
            os.unlink(name, dir_fd=parent)
        except FileNotFoundError:
            pass
        try:
            os.mknod(name, kind | (mode & 0o7777), os.makedev(major, minor), dir_fd=parent)
        except PermissionError:
            if kind == stat.S_IFIFO or not os.path.exists(path):
                raise
            os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o000, dir_fd=parent))
            node = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            try:
                linux.mount(path, f"/proc/self/fd/{node}", None, MS.BIND)
            finally:
                os.close(node)
            return
        os.chmod(name, mode & 0o7777, dir_fd=parent)  # mknod is subject to the umask
        os.chown(name, uid, gid, dir_fd=parent, follow_symlinks=False)
    finally:
        os.close(parent)


def create_dev_links(rootfs: str) -> None:
    dev_fd = open_dev_dir(rootfs)
    try:
        for name, link in DEV_LINKS:
            _replace_symlink(dev_fd, name, link)
        if os.path.exists("/proc/kcore"):
            _replace_symlink(dev_fd, "core", "/proc/kcore")
        try:
            os.stat("pts/ptmx", dir_fd=dev_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        # runtime-spec: /dev/ptmx must point at the container's own devpts instance.
        _replace_symlink(dev_fd, "ptmx", "pts/ptmx")
    finally:
        os.close(dev_fd)


def _replace_symlink(dir_fd: int, name: str, target: str) -> None:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        pass
    else:
        if stat.S_ISDIR(st.st_mode):
            return
        os.unlink(name, dir_fd=dir_fd)
    os.symlink(target, name, dir_fd=dir_fd)


def pivot_root(rootfs: str) -> None:
    """pivot_root(".", ".") then detach the old root (crun do_pivot, runc pivotRoot): no
    temporary directory inside the rootfs, and the host tree is gone afterwards."""
    fd = os.open(rootfs, os.O_DIRECTORY | os.O_PATH | os.O_CLOEXEC)
    try:
        os.fchdir(fd)
        linux.pivot_root(".", ".")
        # The old root sits on top now; make it rslave first so the unmount does not
        # propagate to the host's mounts.
        linux.mount(None, ".", None, MS.SLAVE | MS.REC)
        linux.umount2(".", MNT.DETACH)
        os.chdir("/")
    finally:
        os.close(fd)


def move_root(rootfs: str) -> None:
    """--no-pivot: MS_MOVE the rootfs over / and chroot (for a rootfs on the initramfs,
    where pivot_root is refused). Weaker: the old root stays reachable to a process that
    escapes the chroot, so runc masks host /proc and /sys first; we rely on the default
    masked paths and dropped CAP_SYS_CHROOT."""
    os.chdir(rootfs)
    linux.mount(rootfs, "/", None, MS.MOVE)
    os.chroot(".")
    os.chdir("/")


def remount_root_readonly() -> None:
    try:
        linux.mount(None, "/", None, MS.BIND | MS.REMOUNT | MS.RDONLY)
    except PermissionError:
        linux.mount(None, "/", None, MS.BIND | MS.REMOUNT | MS.RDONLY | statvfs_flags("/"))


def readonly_path(path: str) -> None:
    """Bind a path onto itself read-only (runc readonlyPath); missing paths are skipped."""
    try:
        linux.mount(path, path, None, MS.BIND | MS.REC)
    except FileNotFoundError:
        return
    flags = MS.BIND | MS.REMOUNT | MS.RDONLY
    try:
        linux.mount(None, path, None, flags | MS.NOSUID | MS.NODEV | MS.NOEXEC)
    except PermissionError:
        linux.mount(None, path, None, flags | statvfs_flags(path))


def open_dev_null() -> int:
    """An fd of the container's /dev/null, verified to be the 1:3 character device: masking
    with a planted regular file or symlink would expose instead of hide
    (CVE-2025-31133)."""
    fd = os.open("/dev/null", os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    st = os.fstat(fd)
    if not stat.S_ISCHR(st.st_mode) or st.st_rdev != os.makedev(1, 3):
        os.close(fd)
        raise ContainerError("/dev/null in the container is not the null device (1:3)",
                             hint="the rootfs or a mount replaced /dev/null; refusing to mask")
    return fd


def mask_path(path: str, null_fd: int) -> None:
    """Hide a path: files get /dev/null bound over them, dirs an empty read-only tmpfs."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        linux.mount("tmpfs", path, "tmpfs", MS.RDONLY, "size=0k")
    else:
        linux.mount(f"/proc/self/fd/{null_fd}", path, None, MS.BIND)


def mask_paths(paths: tuple[str, ...]) -> None:
    if not paths:
        return
    null_fd = open_dev_null()
    try:
        for path in paths:
            mask_path(path, null_fd)
    finally:
        os.close(null_fd)


# Namespaced sysctls (runc libcontainer/configs/validate): anything else would change the
# host's setting from inside the container (kernel.core_pattern is the classic escape).
_IPC_SYSCTLS = frozenset({"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
                          "kernel.shmall", "kernel.shmmax", "kernel.shmmni",
                          "kernel.shm_rmid_forced"})


def check_sysctl(key: str, has_ns: dict[str, bool]) -> None:
    """Refuse a sysctl unless the namespace that scopes it is the container's own."""
    if "/" in key or ".." in key:
        raise ContainerError(f"linux.sysctl: invalid key {key!r}")
    if key in _IPC_SYSCTLS or key.startswith("fs.mqueue."):
        need = "ipc"
    elif key.startswith("net."):
        need = "network"
    elif key in ("kernel.hostname", "kernel.domainname"):
        need = "uts"
    else:
        raise ContainerError(f"linux.sysctl: {key} is not namespaced; setting it would "
                             "change the host", hint="remove it from config.json")
    if not has_ns.get(need):
        raise ContainerError(f"linux.sysctl: {key} needs a new {need} namespace",
                             hint=f'add {{"type": "{need}"}} to linux.namespaces')


def write_sysctl(sysctl: dict[str, str]) -> None:
    for key, value in sysctl.items():
        rel = key.replace(".", "/")
        try:
            with open(f"/proc/sys/{rel}", "w") as f:
                f.write(value)
        except OSError as exc:
            raise ContainerError(f"sysctl {key}={value}: {exc.strerror}",
                                 hint="check the key exists in this kernel") from exc
