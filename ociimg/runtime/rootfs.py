"""The container's root filesystem: propagation, the rootfs bind, /dev, pivot_root,
readonly and masked paths (runc libcontainer/rootfs_linux.go, in its order)."""

from __future__ import annotations

import os
import stat

from ociimg.errors import ContainerError
from ociimg.oskit import linux
from ociimg.oskit.linux import MNT, MS
from ociimg.oskit.mountinfo import containing_mount, read_mountinfo
from ociimg.oskit.paths import resolve_in_root
from ociimg.runtime.lazylog import get_logger
from ociimg.runtime.mounts import PROPAGATION, open_mountpoint, open_root, statvfs_flags

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

log = get_logger(__name__)

# runtime-spec config-linux.md "Default Devices": (name, major, minor).
DEFAULT_DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
                   ("urandom", 1, 9), ("tty", 5, 0))
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"))


def set_root_propagation(propagation: str | None) -> None:
    """Make / rslave (default) so nothing we mount leaks to the host, while host
    unmounts still reach us (runc prepareRoot)."""
    linux.mount(None, "/", None, propagation_flags(propagation))


def propagation_flags(propagation: str | None) -> int:
    flags = PROPAGATION.get(propagation or "rslave")
    if flags is None:
        raise ContainerError(f"linux.rootfsPropagation: unknown value {propagation!r}")
    return flags


def is_unbindable(propagation: str) -> bool:
    return bool(propagation_flags(propagation) & MS.UNBINDABLE)


def set_setup_propagation(propagation: str | None) -> None:
    """The propagation of / while the rootfs is bound and the mounts are made: the
    configured one, except that (r)unbindable becomes (r)private, since a bind of an
    unbindable mount fails with EINVAL (runc fails there). Unbindable is private plus
    "cannot be bound", so nothing propagates either way; the requested flag is set on the
    container's / after pivot_root (init.enter_rootfs)."""
    flags = propagation_flags(propagation)
    if flags & MS.UNBINDABLE:
        flags = (flags & ~MS.UNBINDABLE) | MS.PRIVATE
    linux.mount(None, "/", None, flags)


def make_parent_private(path: str) -> None:
    """pivot_root fails when the mount the rootfs lives on is shared; make that mount
    private (runc rootfsParentMountPrivate). It is the rootfs itself when the rootfs is a
    mount point, as containerd's snapshot mounts are: its parent's mount would be the wrong
    one (the rootfs bind then joins the rootfs's peer group and pivot_root says EINVAL)."""
    parent = containing_mount(read_mountinfo(), os.path.abspath(path))
    if parent is not None and parent.shared:
        linux.mount(None, parent.mount_point, None, MS.PRIVATE)


def bind_rootfs(rootfs: str) -> None:
    """Bind the rootfs onto itself so it is a mount point (pivot_root needs one)."""
    linux.mount(rootfs, rootfs, None, MS.BIND | MS.REC)


def bind_rootfs_shared_ns(rootfs: str) -> None:
    """In a mount namespace the container does not own (the runtime's, inherited, or one
    joined by path), everything the container mounts goes under a bind of the rootfs onto
    itself, made rprivate at once: the mounts are then not propagated into other
    namespaces, a readonly root remounts this bind and not the filesystem under it, and
    delete removes the whole tree with one detach (release_shared_ns_mounts). The host's
    / keeps its propagation: it is not ours to change."""
    linux.mount(rootfs, rootfs, None, MS.BIND | MS.REC)
    linux.mount(None, rootfs, None, MS.PRIVATE | MS.REC)


def needs_dev_setup(mounts: list[Any]) -> bool:
    """runc: /dev is populated unless the config bind-mounts /dev from somewhere."""
    return not any(m.destination == "/dev" and m.kind == "bind" for m in mounts)


def mount_dev_tmpfs(rootfs: str) -> None:
    """No /dev mount in the config: give the container a tmpfs /dev rather than writing
    device nodes into the image's rootfs."""
    fd, _target = open_mountpoint(rootfs, "/dev", as_file=False)
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
    rootfd = open_root(rootfs)
    try:
        fd = resolve_in_root(rootfd, "/dev", flags=os.O_PATH | os.O_DIRECTORY)
    finally:
        os.close(rootfd)
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
    key = f"{os.major(st_dev)}:{os.minor(st_dev)}"
    return [m.mount_point for m in read_mountinfo() if m.dev == key]


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
    old = os.open("/", os.O_DIRECTORY | os.O_PATH | os.O_CLOEXEC)
    try:
        new = os.open(rootfs, os.O_DIRECTORY | os.O_PATH | os.O_CLOEXEC)
        try:
            os.fchdir(new)
            linux.pivot_root(".", ".")
        finally:
            os.close(new)
        # The old root sits on top of the new one now. Make it, and only it, rslave so
        # the unmount does not propagate to the host: "." must name the old root, so go
        # there by its fd; from the new root's cwd, mount(2) would resolve "." to the
        # new root and slave the container's own mounts (an rshared volume then no longer
        # propagates to the host).
        os.fchdir(old)
        linux.mount(None, ".", None, MS.SLAVE | MS.REC)
        linux.umount2(".", MNT.DETACH)
        os.chdir("/")
    finally:
        os.close(old)


def chroot_root(rootfs: str) -> None:
    """Enter the rootfs without a mount namespace of the container's own: pivot_root
    would re-root every process of that namespace (the host's, or the owner's of a joined
    one), and MS_MOVE over / would move the host's root; chroot changes only this process
    (runc does the same without CLONE_NEWNS). A chroot is no boundary against a process
    with CAP_SYS_CHROOT, but such a container shares the runtime's mounts by its config."""
    fd = os.open(rootfs, os.O_DIRECTORY | os.O_PATH | os.O_CLOEXEC)
    try:
        os.fchdir(fd)
        os.chroot(".")
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
        raise ContainerError(f"linux.sysctl: {key} needs a {need} namespace of its own",
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


# A mount namespace the container does not own: its mounts are removed by delete.
def owns_mount_namespace(namespaces: tuple[Any, ...]) -> bool:
    """Whether the container gets a mount namespace of its own (listed, without a path).
    Otherwise it inherits the runtime's or joins one by path (runtime-spec config-linux.md
    "Namespaces")."""
    return any(ns.type == "mount" and ns.path is None for ns in namespaces)


def _ns_identity(path: str) -> str:
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}"


def _mounts_at(path: str) -> list[tuple[int, int]]:
    """(mount id, parent id) of every mount on ``path`` in this mount namespace."""
    return [(m.mount_id, m.parent_id) for m in read_mountinfo() if m.mount_point == path]


def shared_ns_record(namespaces: tuple[Any, ...], rootfs: str) -> dict[str, Any]:
    """Taken before the init is forked: which namespace the container's mounts will live
    in (the joined path, or None for the runtime's own, with its identity so a recycled
    /proc/<pid> or another namespace is never touched) and the mounts already on the
    rootfs, which are not ours to remove."""
    path = next((ns.path for ns in namespaces if ns.type == "mount"), None)
    ident = _ns_identity(path or "/proc/self/ns/mnt")
    before = _in_mount_ns(path, ident, lambda: [m for m, _ in _mounts_at(rootfs)])
    if before is None:
        raise ContainerError(f"mount namespace {path}: cannot enter it")
    return {"ns_path": path, "ns": ident, "rootfs": rootfs, "before": before}


def release_shared_ns_mounts(record: dict[str, Any]) -> bool:
    """Detach the rootfs bind the init made (and every mount under it) in a namespace the
    container did not own; mounts on the rootfs from before the container stay. False
    when the namespace is gone (its mounts went with it) or is not reachable from here."""
    def detach() -> int:
        done = 0
        while True:
            at = _mounts_at(record["rootfs"])
            # the top mount: no other mount on the same path has it as parent
            top = [m for m, _ in at if not any(p == m for _, p in at)]
            if not top or top[0] in record["before"]:
                return done
            linux.umount2(record["rootfs"], MNT.DETACH)
            done += 1
    if record["ns_path"] is None and _ns_identity("/proc/self/ns/mnt") != record["ns"]:
        log.warning("mounts under %s stay in the mount namespace `create` ran in: run "
                    "delete from there to remove them", record["rootfs"])
        return False
    return bool(_in_mount_ns(record["ns_path"], record["ns"], detach))


def _in_mount_ns(path: str | None, ident: str, func: Any) -> Any:
    """``func()`` in the mount namespace at ``path`` (None: this process's own), only if
    it is still the namespace ``ident`` names; None otherwise. A joined namespace is
    entered by a forked child (setns changes the caller's root and cwd for good)."""
    if path is None:
        return func() if _ns_identity("/proc/self/ns/mnt") == ident else None
    from ociimg.runtime import jsonio
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            st = os.fstat(fd)
            if f"{st.st_dev}:{st.st_ino}" == ident:
                linux.setns(fd, linux.CLONE.NEWNS)
                os.write(write_fd, jsonio.dumps(func()).encode())
                code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    chunks = []
    try:
        while chunk := os.read(read_fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(read_fd)
        _, status = os.waitpid(pid, 0)
    if status != 0 or not chunks:
        return None
    return jsonio.loads(b"".join(chunks))
