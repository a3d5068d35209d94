"""Run options docker users expect, as runtime-spec fragments: tmpfs mounts with their
options, host devices, ulimits, namespaced sysctls and ``--privileged``.

Pure functions except :func:`host_device` and :func:`host_devices`, which stat the host's
device nodes (what ``--device`` and ``--privileged`` hand a container).
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from typing import Any

from ociimg.errors import InvalidDocument

# --- tmpfs ------------------------------------------------------------------------------

# moby mount.MergeTmpfsOptions: flags that come in pairs, the later one wins.
_FLAG_PAIRS = {"ro": "rw", "exec": "noexec", "suid": "nosuid", "dev": "nodev",
               "sync": "async", "atime": "noatime", "diratime": "nodiratime",
               "relatime": "norelatime", "strictatime": "nostrictatime"}
_FLAG_PAIRS.update({v: k for k, v in list(_FLAG_PAIRS.items())})
_TMPFS_KEYS = {
    "size": re.compile(r"[0-9]+[kKmMgG%]?"),
    "nr_blocks": re.compile(r"[0-9]+[kKmMgG]?"),
    "nr_inodes": re.compile(r"[0-9]+[kKmMgG]?"),
    "mode": re.compile(r"[0-7]{1,4}"),
    "uid": re.compile(r"[0-9]{1,10}"),
    "gid": re.compile(r"[0-9]{1,10}"),
}
_PODMAN_ONLY = ("tmpcopyup", "notmpcopyup")  # accepted, nothing to copy into a new tmpfs
TMPFS_DEFAULTS = ("nosuid", "nodev", "noexec")  # moby oci_linux.go, podman's too


@dataclass(frozen=True)
class TmpfsMount:
    destination: str
    options: tuple[str, ...] = ()      # docker's tmpfs data: size=10m, mode=1777, exec, ro...


def parse_tmpfs(text: str) -> TmpfsMount:
    """``--tmpfs DEST[:OPTIONS]`` (docker, podman): the options after the first colon."""
    dest, _, opts = text.partition(":")
    return TmpfsMount(dest, tuple(o for o in opts.split(",") if o))


def merge_tmpfs_options(options: tuple[str, ...] | list[str], where: str) -> list[str]:
    """Defaults then ``options``, each flag pair and each key once (the later wins), every
    value checked: the text goes to mount(2) as data, so nothing unknown passes."""
    flags: dict[str, str] = {}
    keys: dict[str, str] = {"mode": "1777"}
    for opt in (*TMPFS_DEFAULTS, *options):
        key, eq, value = opt.partition("=")
        if not eq and key in _FLAG_PAIRS:
            flags[min(key, _FLAG_PAIRS[key])] = key
        elif not eq and key in _PODMAN_ONLY:
            continue
        elif eq and key in _TMPFS_KEYS and _TMPFS_KEYS[key].fullmatch(value):
            keys[key] = value
        else:
            raise InvalidDocument(f"{where}: invalid tmpfs option {opt!r}",
                                  hint="use size=N[k|m|g], mode=OCTAL, uid=, gid=, nr_inodes=, "
                                       "ro, rw, exec, noexec, suid, dev, ...")
    return [*flags.values(), *(f"{k}={v}" for k, v in keys.items())]


def tmpfs_json(t: TmpfsMount) -> dict[str, Any]:
    where = f"tmpfs {t.destination}"
    if not t.destination.startswith("/"):
        raise InvalidDocument(f"{where}: destination is not absolute",
                              hint="give an absolute path, e.g. --tmpfs /tmp:size=10m")
    return {"destination": t.destination, "type": "tmpfs", "source": "tmpfs",
            "options": merge_tmpfs_options(t.options, where)}


def set_shm_size(mounts: list[dict[str, Any]], size: int) -> None:
    """``--shm-size``: the size of the default /dev/shm tmpfs."""
    if size <= 0:
        raise InvalidDocument(f"run options: shm size {size} is not positive",
                              hint="give a size such as 64m")
    for m in mounts:
        if m["destination"] == "/dev/shm" and m["type"] == "tmpfs":
            m["options"] = [o for o in m["options"] if not o.startswith("size=")]
            m["options"].append(f"size={size // 1024}k" if size % 1024 == 0 else f"size={size}")


# --- devices ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Device:
    path: str                          # in the container, /dev/...
    kind: str                          # "c" or "b"
    major: int
    minor: int
    file_mode: int
    uid: int = 0
    gid: int = 0
    permissions: str = "rwm"

    def spec(self) -> dict[str, Any]:
        return {"path": self.path, "type": self.kind, "major": self.major,
                "minor": self.minor, "fileMode": self.file_mode, "uid": self.uid,
                "gid": self.gid}

    def rule(self) -> dict[str, Any]:
        return {"allow": True, "type": self.kind, "major": self.major, "minor": self.minor,
                "access": self.permissions}


def host_device(host: str, container: str | None = None, permissions: str = "rwm") -> Device:
    """``--device HOST[:CONTAINER][:PERMS]``: the host's node (symlinks followed, as
    docker does for /dev/disk/by-id/...), as a device the container gets."""
    container = container or host
    if not container.startswith("/dev/") or ".." in container.split("/"):
        raise InvalidDocument(f"device {container!r}: the container path must be under /dev",
                              hint="write --device /dev/HOSTDEV[:/dev/NAME][:rwm]")
    if not permissions or set(permissions) - set("rwm") or len(set(permissions)) \
            != len(permissions):
        raise InvalidDocument(f"device {host}: invalid permissions {permissions!r}",
                              hint="use a combination of r, w and m")
    try:
        st = os.stat(host)
    except OSError as exc:
        raise InvalidDocument(f"device {host}: {exc.strerror}",
                              hint="give an existing device node of the host") from None
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        raise InvalidDocument(f"device {host} is not a character or block device",
                              hint="give a device node such as /dev/fuse")
    return Device(container, kind, os.major(st.st_rdev), os.minor(st.st_rdev),
                  stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, permissions)


# runc devices.HostDevices: these are not nodes a container should get from the host.
_SKIPPED_DEV_DIRS = {"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"}


def host_devices(root: str = "/dev") -> list[Device]:
    """Every device node of the host (``--privileged``), without following symlinks."""
    out: list[Device] = []
    stack = [root]
    while stack:
        top = stack.pop()
        try:
            entries = list(os.scandir(top))
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if entry.name not in _SKIPPED_DEV_DIRS:
                    stack.append(entry.path)
                continue
            if entry.path == "/dev/console":
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                kind = "c" if stat.S_ISCHR(st.st_mode) else "b"
                out.append(Device(entry.path, kind, os.major(st.st_rdev), os.minor(st.st_rdev),
                                  stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid))
    return sorted(out, key=lambda d: d.path)


def bounding_capabilities(names: tuple[str, ...] | list[str]) -> list[str]:
    """Of ``names`` (in kernel bit order), those in this process's bounding set: what
    ``--privileged`` can hand out (podman's rule; a host without CAP_SYS_RESOURCE cannot
    give it, and asking would fail the start)."""
    try:
        with open("/proc/self/status") as f:
            bnd = next(int(line.split()[1], 16) for line in f if line.startswith("CapBnd:"))
    except (OSError, StopIteration, ValueError):
        return list(names)
    return [n for bit, n in enumerate(names) if bnd >> bit & 1]


# --- ulimits ----------------------------------------------------------------------------

# docker's go-units ulimit names → RLIMIT_*.
ULIMIT_NAMES = {"as": "RLIMIT_AS", "core": "RLIMIT_CORE", "cpu": "RLIMIT_CPU",
                "data": "RLIMIT_DATA", "fsize": "RLIMIT_FSIZE", "locks": "RLIMIT_LOCKS",
                "memlock": "RLIMIT_MEMLOCK", "msgqueue": "RLIMIT_MSGQUEUE",
                "nice": "RLIMIT_NICE", "nofile": "RLIMIT_NOFILE", "nproc": "RLIMIT_NPROC",
                "rss": "RLIMIT_RSS", "rtprio": "RLIMIT_RTPRIO", "rttime": "RLIMIT_RTTIME",
                "sigpending": "RLIMIT_SIGPENDING", "stack": "RLIMIT_STACK"}
UNLIMITED = (1 << 64) - 1


@dataclass(frozen=True)
class Ulimit:
    type: str                          # RLIMIT_*
    soft: int
    hard: int


def parse_ulimit(text: str) -> Ulimit:
    """``NAME=SOFT[:HARD]`` (docker, go-units ParseUlimit); -1 is unlimited."""
    name, eq, values = text.partition("=")
    if not eq or name not in ULIMIT_NAMES:
        raise InvalidDocument(f"invalid ulimit {text!r}",
                              hint="use NAME=SOFT[:HARD] with NAME one of "
                                   + ", ".join(sorted(ULIMIT_NAMES)))
    soft_text, _, hard_text = values.partition(":")
    soft = _ulimit_value(soft_text, text)
    hard = _ulimit_value(hard_text, text) if hard_text else soft
    if soft > hard:
        raise InvalidDocument(f"ulimit {text!r}: soft limit is above the hard limit",
                              hint="give SOFT <= HARD")
    return Ulimit(ULIMIT_NAMES[name], soft, hard)


def _ulimit_value(value: str, text: str) -> int:
    if value == "-1":
        return UNLIMITED
    if not re.fullmatch(r"[0-9]{1,20}", value) or int(value) > UNLIMITED:
        raise InvalidDocument(f"invalid ulimit {text!r}: {value!r} is not a number",
                              hint="use NAME=SOFT[:HARD] with numbers or -1")
    return int(value)


def rlimits(defaults: list[dict[str, Any]], ulimits: list[Ulimit]) -> list[dict[str, Any]]:
    """The default rlimits with each ``--ulimit`` replacing the one of its type."""
    given = {u.type: {"type": u.type, "hard": u.hard, "soft": u.soft} for u in ulimits}
    out = [given.pop(r["type"], dict(r)) for r in defaults]
    return out + list(given.values())


# --- sysctls ----------------------------------------------------------------------------

_IPC_SYSCTLS = {"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
                "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"}


def check_sysctls(sysctls: dict[str, str], namespaces: set[str]) -> None:
    """runc's validator: only sysctls of a namespace the container has of its own, so
    none writes the host's kernel settings."""
    for key, value in sysctls.items():
        if not re.fullmatch(r"[a-z0-9_]+(\.[A-Za-z0-9_*-]+)+", key) or "\n" in value:
            raise InvalidDocument(f"invalid sysctl {key!r}", hint="use --sysctl NAME=VALUE")
        if key in _IPC_SYSCTLS or key.startswith("fs.mqueue."):
            ns = "ipc"
        elif key.startswith("net."):
            ns = "network"
        elif key == "kernel.domainname":
            ns = "uts"
        else:
            raise InvalidDocument(f"sysctl {key!r} is not in a separate kernel namespace",
                                  hint="only net.*, fs.mqueue.*, kernel.domainname and the "
                                       "IPC kernel.msg*/sem/shm* ones can be set")
        if ns not in namespaces:
            raise InvalidDocument(f"sysctl {key!r} is not allowed in the host's {ns} "
                                  "namespace", hint="drop it or leave the host's namespace")
