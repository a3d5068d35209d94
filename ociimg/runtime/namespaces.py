"""Namespaces: which to create, which to join, id maps, and the loopback in a new netns."""

from __future__ import annotations

import _socket
import fcntl
import os
import struct

from ociimg.errors import ContainerError
from ociimg.oskit import linux
from ociimg.oskit.linux import CLONE
from ociimg.runtime.config import IDMapping, Namespace, RuntimeConfig

CLONE_FLAGS = {"mount": CLONE.NEWNS, "uts": CLONE.NEWUTS, "ipc": CLONE.NEWIPC,
               "network": CLONE.NEWNET, "pid": CLONE.NEWPID, "user": CLONE.NEWUSER,
               "cgroup": CLONE.NEWCGROUP, "time": CLONE.NEWTIME}
# /proc/<pid>/ns/<name> for each type, for exec and for validation.
PROC_NAMES = {"mount": "mnt", "uts": "uts", "ipc": "ipc", "network": "net", "pid": "pid",
              "user": "user", "cgroup": "cgroup", "time": "time"}
# Join order: the user ns first (it grants the rights for the rest), the mount ns last
# (after it, /proc/<pid>/ns paths of the host may no longer resolve) — nsexec.c.
JOIN_ORDER = ("user", "ipc", "uts", "network", "pid", "cgroup", "time", "mount")


def new_namespace_flags(namespaces: tuple[Namespace, ...]) -> int:
    """CLONE_NEW* for the namespaces the intermediate creates: all but the user ns
    (created first, on its own, so the parent can write its id maps before the rest) and
    the cgroup ns, which the init makes once it is in the container's cgroups (the new
    namespace's root is its creator's cgroup)."""
    flags = 0
    for ns in namespaces:
        if ns.path is None and ns.type not in ("user", "cgroup"):
            flags |= CLONE_FLAGS[ns.type]
    return flags


def join_namespaces(paths: dict[str, str]) -> None:
    """setns into each namespace by path (opened all first, then joined in order). A
    "root" entry (process_namespace_paths) is a chrooted init's root: entered last, so
    that a process joining a container without a mount ns of its own is confined to the
    container's root as the init is, not left at the namespace's /."""
    fds = {}
    root_fd = None
    try:
        if "root" in paths:
            root_fd = os.open(paths["root"], os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        for ns_type in JOIN_ORDER:
            if ns_type in paths:
                try:
                    fds[ns_type] = os.open(paths[ns_type], os.O_RDONLY | os.O_CLOEXEC)
                except OSError as exc:
                    raise ContainerError(f"join {ns_type} namespace {paths[ns_type]}: "
                                         f"{exc.strerror}") from exc
        for ns_type, fd in fds.items():
            linux.setns(fd, CLONE_FLAGS[ns_type])
        if root_fd is not None:
            os.fchdir(root_fd)
            os.chroot(".")
    finally:
        for fd in [*fds.values(), *([root_fd] if root_fd is not None else [])]:
            os.close(fd)


def format_id_map(mappings: tuple[IDMapping, ...]) -> str:
    return "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in mappings)


def write_id_maps(pid: int, uid_mappings: tuple[IDMapping, ...],
                  gid_mappings: tuple[IDMapping, ...]) -> None:
    """Parent side: write the child's uid_map/gid_map (one write each, as the kernel
    requires). We are privileged, so setgroups stays allowed."""
    if not uid_mappings or not gid_mappings:
        raise ContainerError("a user namespace needs linux.uidMappings and linux.gidMappings",
                             hint="add mappings to config.json")
    for name, maps in (("uid_map", uid_mappings), ("gid_map", gid_mappings)):
        fd = os.open(f"/proc/{pid}/{name}", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, format_id_map(maps).encode())
        except OSError as exc:
            raise ContainerError(f"write /proc/{pid}/{name}: {exc.strerror}",
                                 hint="check that the mappings do not overlap") from exc
        finally:
            os.close(fd)


def write_time_offsets(config: RuntimeConfig) -> None:
    """Clock offsets of a new time ns; only writable before a process lives in it, i.e.
    after unshare (which affects our children) and before the fork (time_namespaces(7))."""
    ns = config.namespace("time")
    if ns is None or ns.path:
        raise ContainerError("linux.timeOffsets needs a new time namespace",
                             hint='add {"type": "time"} to linux.namespaces')
    lines = "".join(f"{clock} {secs} {nsecs}\n"
                    for clock, (secs, nsecs) in config.time_offsets.items())
    with open("/proc/self/timens_offsets", "w") as f:
        f.write(lines)


_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


def bring_up_loopback() -> None:
    """runc adds a loopback "network" to every new netns and sets lo up."""
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        req = struct.pack("16sh14x", b"lo", 0)
        flags = struct.unpack("16sh14x", fcntl.ioctl(sock, _SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sh14x", b"lo", flags | _IFF_UP))
    finally:
        sock.close()


def process_namespace_paths(pid: int, types: list[str]) -> dict[str, str]:
    """Paths of a running container's namespaces, for exec; plus "root" when the init is
    chrooted (a container without a mount ns of its own, rootfs.chroot_root): /proc/<pid>/
    root then names a directory below the namespace's /, which setns alone would not
    enter."""
    own = {t: os.readlink(f"/proc/self/ns/{PROC_NAMES[t]}") for t in types
           if os.path.exists(f"/proc/self/ns/{PROC_NAMES[t]}")}
    out = {}
    try:
        if os.readlink(f"/proc/{pid}/root") != "/":
            out["root"] = f"/proc/{pid}/root"
    except FileNotFoundError as exc:
        raise ContainerError(f"container process {pid} is gone") from exc
    for t in types:
        path = f"/proc/{pid}/ns/{PROC_NAMES[t]}"
        try:
            if os.readlink(path) != own.get(t):
                out[t] = path
        except FileNotFoundError as exc:
            raise ContainerError(f"container process {pid} is gone") from exc
    return out
