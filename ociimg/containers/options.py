"""docker run's option values, parsed: volumes and mounts, devices, sizes, signals,
security options. Shared by ``ociimg run`` (cli/runopts.py) and ``ociimg serve``'s
container create (api/convert.py); pure except where a host path or device is looked at."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ociimg.errors import InvalidArgument, OciimgError

if TYPE_CHECKING:
    from ociimg.bundle import BindMount
    from ociimg.bundle.runflags import TmpfsMount
    from ociimg.containers.volumes import VolumeMount


# Mounts --------------------------------------------------------------------------------
_PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")
_SELINUX = ("z", "Z")  # relabel requests: nothing to do without SELinux


def parse_volume_flag(text: str) -> BindMount | VolumeMount:
    """``-v``: ``/CTR`` (anonymous volume), ``NAME:/CTR[:OPTS]`` (named volume, made on first
    use) or ``/HOST:/CTR[:OPTS]`` (bind); OPTS from ro, rw, z, Z, nocopy, propagation."""
    from ociimg.bundle import BindMount
    from ociimg.containers.volumes import VolumeMount, check_volume_name
    parts = text.split(":")
    if len(parts) == 1:
        return VolumeMount(_destination(parts[0], text))
    if len(parts) > 3 or not parts[0]:
        raise InvalidArgument(f"invalid volume {text!r}",
                              hint="use [NAME|/HOST:]/CONTAINER[:ro|rw|z|Z|nocopy]")
    source, dest = parts[0], _destination(parts[1], text)
    opts = [o for o in parts[2].split(",") if o] if len(parts) == 3 else []
    readonly, nocopy, propagation = False, False, "rprivate"
    for opt in opts:
        if opt in ("ro", "rw"):
            readonly = opt == "ro"
        elif opt in _PROPAGATIONS:
            propagation = opt
        elif opt == "nocopy":
            nocopy = True
        elif opt not in _SELINUX:
            raise InvalidArgument(f"invalid volume option {opt!r} in {text!r}",
                                  hint="options: ro, rw, z, Z, nocopy, [r]private, [r]shared, "
                                       "[r]slave")
    if source.startswith(("/", "./", "../")) or source in (".", ".."):  # docker CLI's rule
        return BindMount(_host_path(source, create=True), dest, readonly, propagation)
    return VolumeMount(dest, check_volume_name(source), readonly, nocopy)


def _destination(path: str, text: str) -> str:
    if not path.startswith("/"):
        raise InvalidArgument(f"invalid volume {text!r}: the container path {path!r} is not "
                              "absolute", hint="use [NAME|/HOST:]/CONTAINER[:OPTIONS]")
    if "\0" in path:
        raise InvalidArgument(f"invalid mount destination {path!r}")
    return path


def _host_path(source: str, *, create: bool = False) -> str:
    """An absolute host path; ``-v`` makes a missing one a directory (docker), ``--mount``
    refuses it (docker too)."""
    host = Path(source).absolute()
    if create and not os.path.lexists(host):
        try:
            host.mkdir(mode=0o755, parents=True)
        except OSError as exc:
            raise InvalidArgument(f"bind source {host}: {exc.strerror}") from None
    if not host.exists():
        raise InvalidArgument(f"bind source {host} does not exist",
                              hint="create it first, or give a volume name instead")
    return str(host)


def parse_mount(text: str) -> BindMount | VolumeMount | TmpfsMount:
    """``--mount type=bind|volume|tmpfs,source=,target=,readonly,...`` (docker)."""
    from ociimg.bundle import BindMount
    from ociimg.bundle.runflags import TmpfsMount
    from ociimg.containers.volumes import VolumeMount, check_volume_name
    fields = _mount_fields(text)
    kind = fields.pop("type", "volume")
    target = fields.pop("target", None)
    if not target:
        raise InvalidArgument(f"--mount {text!r}: target is missing",
                              hint="add target=/path/in/container")
    target = _destination(target, text)
    source = fields.pop("source", "")
    readonly = _bool(fields.pop("readonly", "false"), text)
    if kind == "bind":
        prop = fields.pop("bind-propagation", "rprivate")
        if prop not in _PROPAGATIONS or not source:
            raise InvalidArgument(f"--mount {text!r}: a bind needs source= and a valid "
                                  "bind-propagation")
        mount: BindMount | VolumeMount | TmpfsMount = BindMount(
            _host_path(source), target, readonly, prop)
    elif kind == "volume":
        nocopy = _bool(fields.pop("volume-nocopy", "false"), text)
        mount = VolumeMount(target, check_volume_name(source) if source else None, readonly,
                            nocopy)
    elif kind == "tmpfs":
        if source:
            raise InvalidArgument(f"--mount {text!r}: a tmpfs has no source")
        opts = ["ro"] if readonly else []
        if "tmpfs-size" in fields:
                        opts.append(f"size={parse_size(fields.pop('tmpfs-size'))}")
        if "tmpfs-mode" in fields:
            opts.append(f"mode={fields.pop('tmpfs-mode')}")
        mount = TmpfsMount(target, tuple(opts))
    else:
        raise InvalidArgument(f"--mount {text!r}: unsupported type {kind!r}",
                              hint="use type=bind, volume or tmpfs")
    fields.pop("consistency", None)  # docker for mac's; no meaning on Linux
    if fields:
        raise InvalidArgument(f"--mount {text!r}: unknown or misplaced key "
                              f"{sorted(fields)[0]!r}")
    return mount
_MOUNT_KEYS = {"type": "type", "source": "source", "src": "source", "target": "target",
               "destination": "target", "dst": "target", "readonly": "readonly",
               "ro": "readonly", "bind-propagation": "bind-propagation",
               "volume-nocopy": "volume-nocopy", "tmpfs-size": "tmpfs-size",
               "tmpfs-mode": "tmpfs-mode", "consistency": "consistency"}


def _mount_fields(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in text.split(","):
        key, eq, value = item.partition("=")
        name = _MOUNT_KEYS.get(key.strip().lower())
        if name is None:
            raise InvalidArgument(f"--mount {text!r}: unknown key {key!r}",
                                  hint="keys: type, source, target, readonly, "
                                       "bind-propagation, volume-nocopy, tmpfs-size, tmpfs-mode")
        if name in out:
            raise InvalidArgument(f"--mount {text!r}: {key} given twice")
        out[name] = value if eq else ("true" if name in ("readonly", "volume-nocopy") else "")
    return out


def _bool(value: str, text: str) -> bool:
    low = value.lower()
    if low in ("1", "true"):
        return True
    if low in ("0", "false"):
        return False
    raise InvalidArgument(f"--mount {text!r}: {value!r} is not true or false")


def parse_volumes_from(text: str) -> tuple[str, bool | None]:
    """``CONTAINER[:ro|rw]``: its volumes and binds, with their modes unless given."""
    name, _, mode = text.partition(":")
    if not name or mode not in ("", "ro", "rw", "z", "Z"):
        raise InvalidArgument(f"invalid --volumes-from {text!r}", hint="use CONTAINER[:ro|rw]")
    return name, None if mode not in ("ro", "rw") else mode == "ro"


def parse_device(text: str) -> Any:
    """``--device HOST[:CONTAINER][:PERMS]`` (docker)."""
    from ociimg.bundle.runflags import host_device
    parts = text.split(":")
    if len(parts) == 2 and not parts[1].startswith("/"):
        return host_device(parts[0], None, parts[1])
    if len(parts) > 3 or not parts[0]:
        raise InvalidArgument(f"invalid --device {text!r}",
                              hint="use /dev/HOST[:/dev/CONTAINER][:rwm]")
    return host_device(parts[0], parts[1] if len(parts) > 1 else None,
                       parts[2] if len(parts) > 2 else "rwm")


def check_userns(mode: str | None) -> None:
    if mode not in (None, "", "host"):
        raise InvalidArgument(f"unsupported --userns {mode!r}",
                              hint="ociimg runs containers in the host's user namespace: "
                                   "--userns=host")


def check_stop_signal(name: str | None) -> str | None:
    import signal
    if name is None:
        return None
    text = name.upper()
    try:
        sig = signal.Signals(int(text)) if text.isdigit() else signal.Signals[
            text if text.startswith("SIG") else f"SIG{text}"]
    except (KeyError, ValueError):
        raise InvalidArgument(f"invalid --stop-signal {name!r}",
                              hint="use a signal name (SIGTERM, TERM) or number") from None
    return sig.name


# Sizes, init, security options, signals ----------------------------------------
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)([bkmg]?)b?$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(text: str) -> int:
    """``512m``, ``1g``, ``65536`` → bytes (docker's --memory units)."""
    m = _SIZE_RE.match(text.strip())
    if not m:
        raise InvalidArgument(f"invalid size {text!r}", hint="use a number with b, k, m or g")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])
INIT_CANDIDATES = ("/usr/bin/catatonit", "/usr/libexec/podman/catatonit", "/usr/bin/tini-static",
                   "/usr/bin/tini")


def find_init() -> str:
    for path in INIT_CANDIDATES:
        if os.path.isfile(path):
            return path
    raise OciimgError("--init: no static init binary found",
                      hint="apt-get install catatonit, or give one with --init-path")


def parse_security_opts(items: list[str]) -> dict[str, bool]:
    """The podman/docker --security-opt values ociimg understands."""
    known = {"seccomp=unconfined": ("seccomp", False),
             "no-new-privileges": ("no_new_privileges", True),
             "no-new-privileges=true": ("no_new_privileges", True),
             "no-new-privileges=false": ("no_new_privileges", False)}
    out = {}
    for item in items:
        if item not in known:
            raise InvalidArgument(f"unsupported --security-opt {item!r}",
                              hint="supported: " + ", ".join(known))
        key, value = known[item]
        out[key] = value
    return out


def parse_signal(text: str) -> int:
    import signal
    name = text.upper()
    if name.isdigit():
        return int(name)
    name = name if name.startswith("SIG") else f"SIG{name}"
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise InvalidArgument(f"invalid signal {text!r}",
                              hint="use a name (TERM, SIGKILL, HUP) or a number") from None


@dataclass
class MountFlags:
    """A container's mounts as run's flags (or the API's HostConfig) give them, parsed:
    binds, named or anonymous volumes, tmpfs."""
    binds: list[Any] = field(default_factory=list)
    volumes: list[Any] = field(default_factory=list)
    tmpfs: list[Any] = field(default_factory=list)
