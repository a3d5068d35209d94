"""Spec mounts: ``plan_mounts`` turns config.json ``mounts`` into MountOps (pure), and
``apply_mount`` performs one inside the container's rootfs.

Every destination is resolved inside the rootfs without following a symlink out of it
(runc's securejoin / MkdirAllInRoot), and the mount targets ``/proc/self/fd/N`` of an
``O_PATH|O_NOFOLLOW`` descriptor whose real path was checked, so a symlink swapped in later
cannot redirect the mount onto the host (CVE-2021-30465).
"""

from __future__ import annotations

import os
import posixpath

from ociimg.errors import ContainerError
from ociimg.oskit import linux
from ociimg.oskit.linux import MS
from ociimg.oskit.mountinfo import read_mountinfo
from ociimg.oskit.paths import resolve_in_root
from ociimg.runtime.records import record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# option → (flags to set, flags to clear); runc's libcontainer/specconv mountFlags table.
_FLAGS: dict[str, tuple[int, int]] = {
    "defaults": (0, 0),
    "ro": (MS.RDONLY, 0), "rw": (0, MS.RDONLY),
    "nosuid": (MS.NOSUID, 0), "suid": (0, MS.NOSUID),
    "nodev": (MS.NODEV, 0), "dev": (0, MS.NODEV),
    "noexec": (MS.NOEXEC, 0), "exec": (0, MS.NOEXEC),
    "sync": (MS.SYNCHRONOUS, 0), "async": (0, MS.SYNCHRONOUS),
    "dirsync": (MS.DIRSYNC, 0),
    "remount": (MS.REMOUNT, 0),
    "mand": (MS.MANDLOCK, 0), "nomand": (0, MS.MANDLOCK),
    "noatime": (MS.NOATIME, 0), "atime": (0, MS.NOATIME),
    "nodiratime": (MS.NODIRATIME, 0), "diratime": (0, MS.NODIRATIME),
    "relatime": (MS.RELATIME, 0), "norelatime": (0, MS.RELATIME),
    "strictatime": (MS.STRICTATIME, 0), "nostrictatime": (0, MS.STRICTATIME),
    "nosymfollow": (MS.NOSYMFOLLOW, 0),
    "bind": (MS.BIND, 0), "rbind": (MS.BIND | MS.REC, 0),
}

PROPAGATION: dict[str, int] = {
    "private": MS.PRIVATE, "rprivate": MS.PRIVATE | MS.REC,
    "shared": MS.SHARED, "rshared": MS.SHARED | MS.REC,
    "slave": MS.SLAVE, "rslave": MS.SLAVE | MS.REC,
    "unbindable": MS.UNBINDABLE, "runbindable": MS.UNBINDABLE | MS.REC,
}

# Options that belong to runtimes' extensions and need no action here.
_IGNORED = {"tmpcopyup", "copy-symlink", "notmpcopyup"}
_UNSUPPORTED = {"idmap", "ridmap", "rro", "rrw", "rnosuid", "rsuid", "rnodev", "rdev",
                "rnoexec", "rexec", "rnoatime", "ratime", "rrelatime", "rstrictatime"}

# Files under /proc that may be overmounted (lxcfs); runc's checkProcMount allow-list.
PROC_ALLOWED = frozenset({
    "/proc/cpuinfo", "/proc/diskstats", "/proc/meminfo", "/proc/stat", "/proc/swaps",
    "/proc/uptime", "/proc/loadavg", "/proc/slabinfo", "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid",
})

# Flags a bind mount only honours on a second MS_REMOUNT call.
_REMOUNT_MASK = ~(MS.BIND | MS.REC | MS.REMOUNT) & 0xFFFFFFFF


@record(frozen=True, slots=True)
class MountOp:
    kind: str           # "bind", "proc", "sysfs", "cgroup" or "fs"
    source: str | None
    destination: str    # normalised absolute path inside the container
    fstype: str | None
    flags: int
    data: str | None
    propagation: tuple[int, ...] = ()

    @property
    def remount_flags(self) -> int:
        """Flags a bind needs applied by remount (ro, nosuid, …); 0 when none."""
        return self.flags & _REMOUNT_MASK if self.kind == "bind" else 0


def parse_options(options: list[str] | tuple[str, ...], where: str = "mount"
                  ) -> tuple[int, tuple[int, ...], str | None]:
    """Split mount options into (flags, propagation flags, data string)."""
    flags = 0
    propagation: list[int] = []
    data: list[str] = []
    for opt in options:
        if opt in _FLAGS:
            set_, clear = _FLAGS[opt]
            flags = (flags | set_) & ~clear
        elif opt in PROPAGATION:
            propagation.append(PROPAGATION[opt])
        elif opt in _UNSUPPORTED:
            raise ContainerError(f"{where}: mount option {opt!r} is not supported",
                                 hint="drop the option from config.json")
        elif opt not in _IGNORED:
            data.append(opt)
    return flags, tuple(propagation), ",".join(data) or None


def plan_mounts(mounts: list[dict[str, Any]] | tuple[dict[str, Any], ...],
                bundle: str) -> list[MountOp]:
    """Turn config.json mounts into MountOps, in order; refuses unsafe destinations."""
    return [plan_mount(m, bundle, f"mounts[{i}]") for i, m in enumerate(mounts)]


def plan_mount(mount: dict[str, Any], bundle: str, where: str = "mount") -> MountOp:
    dest = normalize_destination(mount["destination"])
    fstype = mount.get("type") or None
    flags, propagation, data = parse_options(mount.get("options") or [], where)
    source = mount.get("source") or None
    is_bind = bool(flags & MS.BIND) or fstype == "bind"
    if is_bind:
        flags |= MS.BIND
        if source is None:
            raise ContainerError(f"{where}: bind mount of {dest} has no source")
        # runc: a relative bind source is relative to the bundle directory.
        source = source if source.startswith("/") else os.path.join(bundle, source)
        kind = "bind"
    else:
        kind = {"proc": "proc", "sysfs": "sysfs", "cgroup": "cgroup",
                "cgroup2": "cgroup"}.get(fstype or "", "fs")
    check_destination(dest, kind, where)
    return MountOp(kind, source, dest, None if is_bind else fstype, flags, data, propagation)


def normalize_destination(dest: str) -> str:
    # runc accepts a relative destination as relative to / (with a warning). normpath keeps
    # a leading "//" (POSIX allows it a meaning), which would slip past the /proc check.
    return "/" + posixpath.normpath(posixpath.join("/", dest)).lstrip("/")


def check_destination(dest: str, kind: str, where: str = "mount") -> None:
    """Refuse mounts over / and over /proc subpaths (runc checkProcMount)."""
    if dest == "/":
        raise ContainerError(f"{where}: refusing to mount over the container's root",
                             hint="use root.path for the root filesystem")
    if dest == "/proc":
        if kind != "proc":
            raise ContainerError(f"{where}: /proc may only be a proc mount, not {kind}",
                                 hint="mount type proc on /proc")
        return
    if dest.startswith("/proc/") and dest not in PROC_ALLOWED:
        raise ContainerError(f"{where}: refusing to mount over {dest} (inside /proc)",
                             hint="only lxcfs-style files such as /proc/meminfo may be "
                                  "overmounted")


# ---- applying (in the container's mount namespace, before pivot_root) ----

def open_root(root: str) -> int:
    return os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def fd_path(fd: int) -> str:
    """Where ``fd`` really is (in this mount namespace): what a check must look at."""
    return os.readlink(f"/proc/self/fd/{fd}")


def container_path(root: str, host_path: str) -> str | None:
    """The container path of ``host_path``: "/" for ``root``, None when outside it."""
    if host_path == root:
        return "/"
    if not host_path.startswith(root.rstrip("/") + "/"):
        return None
    return host_path[len(root.rstrip("/")):]


def open_mountpoint(root: str, dest: str, as_file: bool, kind: str = "fs",
                    where: str = "mount") -> tuple[int, str]:
    """O_PATH fd and host path of the mount point for ``dest``, made where missing (dirs
    0755, or an empty file). ``dest`` is resolved inside ``root`` by oskit's
    resolve_in_root, so no symlink or ".." leads out (runc's securejoin /
    MkdirAllInRoot), and checked as resolved rather than as written: an image symlink
    (``/vol -> /``) must not turn a volume into a mount over the whole rootfs, nor
    ``/x -> /proc/sys`` slip past the /proc check. The mount then targets
    ``/proc/self/fd/N`` of this fd, so nothing swapped in later redirects it onto the
    host (CVE-2021-30465)."""
    rootfd = open_root(root)
    try:
        fd = _open_dest(rootfd, dest, as_file)
        real_root = fd_path(rootfd)
    except OSError as exc:
        raise ContainerError(f"{where}: mount point {dest}: {exc.strerror}",
                             hint="check the destination inside the rootfs") from exc
    finally:
        os.close(rootfd)
    try:
        target = fd_path(fd)
        _check_resolved(dest, container_path(real_root, target), target, kind, where)
    except BaseException:
        os.close(fd)
        raise
    return fd, target


def _open_dest(rootfd: int, dest: str, as_file: bool) -> int:
    if not as_file:
        return resolve_in_root(rootfd, dest, flags=os.O_PATH | os.O_DIRECTORY,
                               create_parents=True)
    try:
        return resolve_in_root(rootfd, dest)
    except FileNotFoundError:
        pass
    # O_RDONLY|O_NONBLOCK: what may have appeared meanwhile is never written or waited on.
    os.close(resolve_in_root(rootfd, dest, mode=0o644, create_parents=True,
                             flags=os.O_RDONLY | os.O_CREAT | os.O_NONBLOCK | os.O_NOCTTY))
    return resolve_in_root(rootfd, dest)


def _check_resolved(dest: str, resolved: str | None, target: str, kind: str,
                    where: str) -> None:
    if resolved is None:
        raise ContainerError(f"{where}: mount point {dest} resolves outside the rootfs "
                             f"({target})",
                             hint="a symlink in the image redirects a mount destination")
    if resolved == dest:
        check_destination(dest, kind, where)
        return
    try:
        check_destination(resolved, kind, where)
    except ContainerError as exc:
        raise ContainerError(f"{exc.message} ({dest} resolves to {resolved} through a "
                             "symlink in the rootfs)",
                             hint="mount on a path that is not a symlink in the image"
                             ) from exc


def apply_mount(op: MountOp, root: str, *, cgroupns: bool = False) -> None:
    """Perform one MountOp under root (host path of the container's /)."""
    as_file = op.kind == "bind" and not os.path.isdir(op.source or "")
    if op.kind == "bind" and not os.path.exists(op.source or ""):
        raise ContainerError(f"bind mount source {op.source} does not exist",
                             hint=f"create it or remove the mount of {op.destination}")
    fd, target = open_mountpoint(root, op.destination, as_file, op.kind)
    try:
        _mount_one(op, f"/proc/self/fd/{fd}", target, root, cgroupns)
    finally:
        os.close(fd)
    for pflag in op.propagation:
        linux.mount(None, target, None, pflag)


def _mount_one(op: MountOp, fdpath: str, target: str, root: str, cgroupns: bool) -> None:
    if op.kind == "bind":
        linux.mount(op.source, fdpath, None, op.flags & (MS.BIND | MS.REC))
        if op.remount_flags:
            remount_bind(target, op.remount_flags)
    elif op.kind == "sysfs":
        try:
            linux.mount(op.source or "sysfs", fdpath, "sysfs", op.flags, op.data)
        except PermissionError:
            # Without our own netns (or in a user ns) sysfs can't be mounted; runc binds /sys.
            linux.mount("/sys", fdpath, None, MS.BIND | MS.REC)
            remount_bind(target, op.flags & _REMOUNT_MASK)
    elif op.kind == "cgroup":
        mount_cgroups(target, op, cgroupns)
    else:
        linux.mount(op.source or op.fstype, fdpath, op.fstype, op.flags, op.data)


def remount_bind(target: str, flags: int) -> None:
    """Apply flags to a bind mount; a user ns locks nosuid/nodev/noexec, so keep them
    (runc retries with the statfs flags)."""
    if not flags:
        return
    try:
        linux.mount(None, target, None, MS.REMOUNT | MS.BIND | flags)
    except PermissionError:
        linux.mount(None, target, None, MS.REMOUNT | MS.BIND | flags | statvfs_flags(target))


def statvfs_flags(path: str) -> int:
    f = os.statvfs(path).f_flag
    table = ((os.ST_RDONLY, MS.RDONLY), (os.ST_NOSUID, MS.NOSUID), (os.ST_NODEV, MS.NODEV),
             (os.ST_NOEXEC, MS.NOEXEC), (os.ST_NOATIME, MS.NOATIME),
             (os.ST_NODIRATIME, MS.NODIRATIME), (os.ST_RELATIME, MS.RELATIME))
    return sum(ms for st, ms in table if f & st)


def mount_cgroups(target: str, op: MountOp, cgroupns: bool) -> None:
    """cgroup mount: cgroup2 on a pure-v2 host; else a tmpfs with one mount per hierarchy
    (runc's v1 layout). With a cgroup ns each hierarchy is mounted fresh (its root is the
    container's cgroup); without one the container's own cgroup dirs are bind-mounted."""
    flags = op.flags & ~MS.RDONLY
    if _is_cgroup2_root():
        linux.mount("cgroup2", target, "cgroup2", op.flags)
        return
    linux.mount("tmpfs", target, "tmpfs", flags | MS.NOSUID | MS.NODEV | MS.NOEXEC, "mode=755")
    for name, options, host_mount, path in cgroup_hierarchies():
        sub = os.path.join(target, name)
        os.makedirs(sub, exist_ok=True)
        if cgroupns:
            fstype = "cgroup2" if name == "unified" else "cgroup"
            linux.mount("cgroup", sub, fstype, op.flags, options or None)
        else:
            linux.mount(os.path.join(host_mount, path.lstrip("/")), sub, None, MS.BIND)
            remount_bind(sub, op.flags & _REMOUNT_MASK)
        for alias in name.split(","):
            if alias != name and not os.path.lexists(os.path.join(target, alias)):
                os.symlink(name, os.path.join(target, alias))
    if op.flags & MS.RDONLY:
        linux.mount(None, target, None, MS.REMOUNT | MS.RDONLY | flags | MS.NOSUID | MS.NODEV
                    | MS.NOEXEC, "mode=755")


def _is_cgroup2_root() -> bool:
    return os.path.exists("/sys/fs/cgroup/cgroup.controllers")


def cgroup_hierarchies() -> list[tuple[str, str, str, str]]:
    """(name, mount options, host mount point, our path) per mounted hierarchy."""
    mounts: dict[str, tuple[str, str]] = {}
    for m in read_mountinfo():
        if m.fstype == "cgroup2":
            mounts["unified"] = (m.mount_point, "")
        elif m.fstype == "cgroup":
            opts = [o for o in m.super_options.split(",")
                    if o not in ("rw", "ro", "nosuid", "nodev", "noexec", "relatime")]
            ctrls = [o for o in opts if not o.startswith("name=") and "=" not in o]
            named = [o[5:] for o in opts if o.startswith("name=")]
            key = ",".join(ctrls) if ctrls else (named[0] if named else "")
            if key:
                mounts[key] = (m.mount_point, ",".join(opts))
    out = []
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            key = "unified" if not ctrls else ctrls.removeprefix("name=")
            if key in mounts:
                mount_point, options = mounts[key]
                out.append((key, options, mount_point, path))
    return out
