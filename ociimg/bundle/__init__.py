"""Image config + run options → runtime-spec ``config.json``, and writing a bundle directory.

The conversion follows image-spec ``conversion.md``: WorkingDir, Env, Entrypoint and Cmd are
copied verbatim; ``Config.User`` is resolved against the image's own /etc/passwd and
/etc/group (never the host's NSS); os/architecture/… become ``org.opencontainers.image.*``
annotations, and explicit ``Config.Labels`` win over those generated values. Everything else
(mounts, namespaces, capabilities, masked paths, seccomp) comes from ``bundle.profiles``, the
same defaults runc's ``spec`` and Docker hand a container.

``to_runtime_config`` is pure except for reading the rootfs's /etc/passwd and /etc/group.
``Config.Volumes`` are recorded in the ``VOLUMES_ANNOTATION`` annotation; no anonymous volume is
created (a caller wanting one adds a bind or tmpfs mount for it).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ociimg.bundle import profiles
from ociimg.bundle.runflags import (
    Device,
    TmpfsMount,
    Ulimit,
    bounding_capabilities,
    check_sysctls,
    host_devices,
    parse_tmpfs,
    rlimits,
    set_shm_size,
    tmpfs_json,
)
from ociimg.errors import InvalidDocument
from ociimg.fsutil import atomic_write
from ociimg.spec import ImageConfig
from ociimg.users import ExecUser, resolve_user

# 1.1.0, not 1.2.0: Debian's crun 1.8 refuses configs that claim a newer spec than it knows,
# and nothing we generate needs a 1.2 field.
OCI_VERSION = "1.1.0"
INIT_PATH = "/run/ociimg-init"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CPU_PERIOD = 100_000
# Not an org.opencontainers.* key: image-spec reserves that prefix for the specs themselves.
VOLUMES_ANNOTATION = "io.ociimg.image.volumes"
# Label keys a runtime or its cgroup manager interprets (crun run.oci.*, systemd unit
# properties in runc/crun, containerd and CRI-O reserved keys): an image label must not be
# able to steer the host (containerd CVE-2026-53488), so such labels are not copied.
UNSAFE_ANNOTATION_PREFIXES = (
    "run.oci.",
    "org.systemd.property.",
    "io.containerd.",
    "containerd.io/",
    "io.kubernetes.cri",  # also io.kubernetes.cri-o.*
    "io.podman.annotations.",
)
_NETWORK_MODES = ("private", "none", "host")


@dataclass
class BindMount:
    source: str
    destination: str
    readonly: bool = False
    propagation: str = "rprivate"      # --mount bind-propagation=


@dataclass
class BundleOptions:
    """What a caller (``ociimg run``, ``unpack``) overrides or adds to the image's config."""

    args: list[str] | None = None          # replaces Cmd
    entrypoint: list[str] | None = None    # replaces Entrypoint (and drops Cmd unless args)
    env: list[str] = field(default_factory=list)  # "K=V", later wins over the image's
    cwd: str | None = None
    user: str | None = None                # "uid[:gid]" or "name[:group]"
    hostname: str | None = None
    terminal: bool = False
    readonly_rootfs: bool = False
    mounts: list[BindMount | tuple[str, str, bool]] = field(default_factory=list)
    tmpfs: list[TmpfsMount | str] = field(default_factory=list)  # str: "DEST[:OPTIONS]"
    network: str = "private"               # "private" | "none" (both: empty netns) | "host"
    netns_path: str | None = None          # private: join this netns instead of a new one
    memory: int | None = None              # bytes
    cpus: float | None = None
    pids_limit: int | None = None
    cgroups_path: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)  # external input: wins last
    no_new_privileges: bool = True
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    seccomp: bool = True                   # False: unconfined
    rootfs_path: str = "rootfs"
    init: str | None = None                # host path of a static init (catatonit/tini)
    # docker run's host-facing options (bundle/runflags.py)
    devices: list[Device] = field(default_factory=list)
    ulimits: list[Ulimit] = field(default_factory=list)
    sysctls: dict[str, str] = field(default_factory=dict)
    group_add: list[str] = field(default_factory=list)  # names (image's /etc/group) or gids
    shm_size: int | None = None            # bytes of /dev/shm
    privileged: bool = False               # all caps and devices, no seccomp, no masks


# --- public API -------------------------------------------------------------------------


def to_runtime_config(image_config: ImageConfig, options: BundleOptions, rootfs: Path,
                      ) -> dict[str, Any]:
    """The runtime-spec config for running ``image_config`` from the unpacked ``rootfs``."""
    if image_config.platform.os != "linux":
        raise InvalidDocument(
            f"image config: os {image_config.platform.os!r} is not supported",
            hint="ociimg runs linux images only; pick one with --platform linux/<arch>")
    user = resolve_user(options.user if options.user is not None else image_config.user,
                        Path(rootfs))
    caps = bounding_capabilities(profiles.ALL_CAPABILITIES) if options.privileged \
        else capability_set(options.cap_add, options.cap_drop)
    if options.group_add:
        user = _with_groups(user, options.group_add, Path(rootfs))
    config: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": _process(image_config, options, user, caps),
        "root": {"path": options.rootfs_path, "readonly": options.readonly_rootfs},
        "mounts": _mounts(options),
        "annotations": _annotations(image_config, options),
        "linux": _linux(image_config, options, caps),
    }
    if options.hostname:
        config["hostname"] = options.hostname
    return config


def write_bundle(bundle_dir: Path, config: dict[str, Any]) -> None:
    """Write ``config.json`` into ``bundle_dir`` atomically; the dir itself is made 0700.

    umoci's security note: a rootfs holds setuid binaries and device nodes owned by the
    image, so other users of the host must not be able to reach into it.
    """
    bundle_dir = Path(bundle_dir)
    bundle_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(bundle_dir, 0o700)
    data = json.dumps(config, indent=2, sort_keys=False).encode() + b"\n"
    atomic_write(bundle_dir / "config.json", data, mode=0o600)


def unsafe_labels(image_config: ImageConfig) -> list[str]:
    """Label keys that ``to_runtime_config`` leaves out of the annotations (for a warning)."""
    return sorted(k for k in image_config.labels if _is_unsafe_key(k))


# --- process ----------------------------------------------------------------------------


def _process(image_config: ImageConfig, options: BundleOptions, user: ExecUser,
             caps: list[str]) -> dict[str, Any]:
    process: dict[str, Any] = {
        "terminal": options.terminal,
        "user": _user_json(user),
        "args": build_args(image_config, options),
        "env": build_env(image_config, options, user),
        "cwd": _cwd(image_config, options),
        "capabilities": capability_sets(caps, user.uid, options.cap_add),
        "rlimits": rlimits([dict(r) for r in profiles.DEFAULT_RLIMITS], options.ulimits),
        "noNewPrivileges": options.no_new_privileges,
    }
    return process


def build_args(image_config: ImageConfig, options: BundleOptions) -> list[str]:
    """Entrypoint + Cmd (conversion.md); an entrypoint override drops the image's Cmd, as
    ``docker run --entrypoint`` does, since that Cmd was written for the old entrypoint."""
    if options.entrypoint is not None:
        entrypoint = list(options.entrypoint)
        cmd = list(options.args) if options.args is not None else []
    else:
        entrypoint = image_config.entrypoint
        cmd = list(options.args) if options.args is not None else image_config.cmd
    args = entrypoint + cmd
    if not args:
        raise InvalidDocument(
            "runtime config: the image has no Entrypoint or Cmd and no command was given",
            hint="give a command to run after the image name")
    if options.init:
        return [INIT_PATH, "--", *args]
    return args


def _split_env(entry: str, where: str) -> tuple[str, str]:
    name, sep, value = entry.partition("=")
    if not sep or not name:
        raise InvalidDocument(f"{where}: environment entry {entry!r} is not NAME=VALUE",
                              hint="write environment variables as NAME=VALUE")
    return name, value


def build_env(image_config: ImageConfig, options: BundleOptions, user: ExecUser,
              ) -> list[str]:
    """Image Env verbatim, then our defaults only for names it lacks, then caller overrides.

    conversion.md: a converter SHOULD NOT add names already present in Config.Env (umoci
    #652 stopped clobbering HOME); caller-supplied variables may change anything.
    """
    env: dict[str, str] = {}
    for entry in image_config.env:
        name, value = _split_env(entry, "image config.Env")
        env[name] = value
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("HOME", user.home or "/")
    if options.terminal:
        env.setdefault("TERM", "xterm")
    for entry in options.env:
        name, value = _split_env(entry, "run options")
        env.pop(name, None)  # a caller's variable also moves to the end, after what it overrides
        env[name] = value
    return [f"{name}={value}" for name, value in env.items()]


def _cwd(image_config: ImageConfig, options: BundleOptions) -> str:
    cwd = options.cwd if options.cwd is not None else (image_config.working_dir or "/")
    if not cwd.startswith("/"):
        raise InvalidDocument(f"runtime config: working directory {cwd!r} is not absolute",
                              hint="give an absolute working directory, e.g. /app")
    return cwd


def _with_groups(user: ExecUser, groups: list[str], rootfs: Path) -> ExecUser:
    """``--group-add``: a gid, or a group name looked up in the image's /etc/group."""
    gids = list(user.additional_gids)
    for group in groups:
        gid = resolve_user(f"0:{group}", rootfs).gid
        if gid not in gids:
            gids.append(gid)
    return dataclasses.replace(user, additional_gids=tuple(gids))


def _user_json(user: ExecUser) -> dict[str, Any]:
    out: dict[str, Any] = {"uid": user.uid, "gid": user.gid}
    if user.additional_gids:
        out["additionalGids"] = list(user.additional_gids)
    return out


# --- capabilities -----------------------------------------------------------------------


def _normalize_cap(name: str) -> str:
    cap = name.strip().upper()
    if cap == "ALL":
        return cap
    if not cap.startswith("CAP_"):
        cap = "CAP_" + cap
    if cap not in profiles.ALL_CAPABILITIES:
        raise InvalidDocument(f"run options: unknown capability {name!r}",
                              hint="use a name from capabilities(7), e.g. NET_ADMIN")
    return cap


def capability_set(cap_add: list[str], cap_drop: list[str]) -> list[str]:
    """Defaults + added − dropped, in kernel bit order; "ALL" works on either side (Docker)."""
    add = {_normalize_cap(c) for c in cap_add}
    drop = {_normalize_cap(c) for c in cap_drop}
    if "ALL" in add:
        caps = set(profiles.ALL_CAPABILITIES)
    else:
        caps = set(profiles.DEFAULT_CAPABILITIES) | add
    if "ALL" in drop:
        caps = add - {"ALL"} if "ALL" not in add else set()
    caps -= drop
    return [c for c in profiles.ALL_CAPABILITIES if c in caps]


def capability_sets(caps: list[str], uid: int, cap_add: list[str]) -> dict[str, list[str]]:
    """runtime-spec process.capabilities for a process running as ``uid``.

    Root gets ``caps`` as bounding, effective and permitted. A non-root user gets them only as
    its bounding set (what Docker and podman do: uid 1000 should not silently hold
    CAP_CHOWN), plus any explicitly added ones raised through ambient (podman). Inheritable
    stays empty except for those (CVE-2022-29162).
    """
    if uid == 0:
        return {"bounding": list(caps), "effective": list(caps), "inheritable": [],
                "permitted": list(caps), "ambient": []}
    added = {_normalize_cap(c) for c in cap_add} - {"ALL"}
    raised = [c for c in caps if c in added]
    return {"bounding": list(caps), "effective": raised, "inheritable": list(raised),
            "permitted": list(raised), "ambient": list(raised)}


# --- annotations ------------------------------------------------------------------------


def _is_unsafe_key(key: str) -> bool:
    return key.startswith(UNSAFE_ANNOTATION_PREFIXES)


def _annotations(image_config: ImageConfig, options: BundleOptions) -> dict[str, str]:
    """Generated values first, then the image's labels over them (conversion.md: explicit
    labels take precedence), then the caller's annotations. Values are copied as opaque
    strings; nothing here interprets them."""
    p = image_config.platform
    generated: dict[str, str | None] = {
        "org.opencontainers.image.os": p.os,
        "org.opencontainers.image.architecture": p.architecture,
        "org.opencontainers.image.variant": p.variant,
        "org.opencontainers.image.os.version": p.os_version,
        "org.opencontainers.image.os.features":
            ",".join(str(f) for f in p.os_features) if p.os_features else None,
        "org.opencontainers.image.author": image_config.author,
        "org.opencontainers.image.created": image_config.created,
        "org.opencontainers.image.stopSignal": image_config.stop_signal,
        "org.opencontainers.image.exposedPorts": _joined_keys(image_config, "ExposedPorts"),
        VOLUMES_ANNOTATION: _joined_keys(image_config, "Volumes"),
    }
    out = {k: v for k, v in generated.items() if v}
    out.update({k: v for k, v in image_config.labels.items() if not _is_unsafe_key(k)})
    out.update(options.annotations)
    return out


def _joined_keys(image_config: ImageConfig, field_name: str) -> str | None:
    value = image_config.config.get(field_name)
    if not value:
        return None
    if not isinstance(value, dict):
        raise InvalidDocument(f"image config.{field_name}: expected an object",
                              hint="the image config is malformed; rebuild the image")
    return ",".join(sorted(value))


# --- mounts -----------------------------------------------------------------------------


def _bind(spec: BindMount | tuple[str, str, bool]) -> dict[str, Any]:
    if not isinstance(spec, BindMount):
        spec = BindMount(*spec)
    if not spec.destination.startswith("/"):
        raise InvalidDocument(f"bind mount {spec.destination!r}: destination is not absolute",
                              hint="write mounts as /host/path:/container/path")
    # type "bind" rather than none+options: runc#2035 and umoci 0.4.5.
    return {"destination": spec.destination, "type": "bind",
            "source": os.path.abspath(spec.source),
            "options": ["rbind", spec.propagation, "ro" if spec.readonly else "rw"]}


def _init_mount(init: str) -> dict[str, Any]:
    """``--init``: a static init binary from the host, read-only, as PID 1 (podman mounts
    catatonit at /run/podman-init the same way; docker uses tini as /sbin/docker-init)."""
    if not os.path.isfile(init) or not os.access(init, os.X_OK):
        raise InvalidDocument(f"init binary {init} is missing or not executable",
                              hint="apt-get install catatonit (or tini) or pass --init-path")
    return {"destination": INIT_PATH, "type": "bind", "source": os.path.abspath(init),
            "options": ["bind", "ro", "nosuid", "nodev"]}


def _tmpfs(spec: TmpfsMount | str) -> dict[str, Any]:
    return tmpfs_json(parse_tmpfs(spec) if isinstance(spec, str) else spec)


def _mounts(options: BundleOptions) -> list[dict[str, Any]]:
    """The default mounts, then the caller's; a caller's mount on a default destination
    (say /dev/shm) replaces that default instead of stacking on it (Docker)."""
    extra = [_bind(m) for m in options.mounts] + [_tmpfs(t) for t in options.tmpfs]
    if options.init:
        extra.append(_init_mount(options.init))
    taken = {m["destination"].rstrip("/") or "/" for m in extra}
    mounts = [m for m in profiles.default_mounts() if m["destination"] not in taken]
    if options.shm_size is not None:
        set_shm_size(mounts, options.shm_size)
    if options.privileged:  # docker: /sys and the cgroup tree writable
        for m in mounts:
            if m["type"] in ("sysfs", "cgroup"):
                m["options"] = [o for o in m["options"] if o != "ro"] + ["rw"]
    return mounts + extra


# --- linux ------------------------------------------------------------------------------


def _namespaces(network: str, netns_path: str | None = None) -> list[dict[str, str]]:
    if network not in _NETWORK_MODES:
        raise InvalidDocument(f"run options: network {network!r} is not one of "
                              f"{', '.join(_NETWORK_MODES)}",
                              hint="use --network private, none or host")
    kinds = ["pid", "mount", "ipc", "uts"]
    if network != "host":
        kinds.append("network")
    # A cgroup namespace hides the host's cgroup paths (umoci 0.5.0 adds it too).
    kinds.append("cgroup")
    out = [{"type": kind} for kind in kinds]
    if netns_path and network != "host":
        out[kinds.index("network")]["path"] = netns_path
    return out


# Character devices every container may use (runtime-spec config-linux.md "Default Devices";
# runc's AllowedDevices): null, zero, full, random, urandom, tty, console, ptmx, and the pts.
_DEFAULT_DEVICE_RULES: tuple[tuple[int, int | None], ...] = (
    (1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2), (136, None),
)


def _device_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = [{"allow": False, "access": "rwm"}]
    # mknod of any node is allowed (CAP_MKNOD is a default cap); using it still is not.
    rules += [{"allow": True, "type": kind, "access": "m"} for kind in ("c", "b")]
    for major, minor in _DEFAULT_DEVICE_RULES:
        rule: dict[str, Any] = {"allow": True, "type": "c", "major": major}
        if minor is not None:
            rule["minor"] = minor
        rule["access"] = "rwm"
        rules.append(rule)
    return rules


def _resources(options: BundleOptions) -> dict[str, Any]:
    if options.privileged:
        devices: list[dict[str, Any]] = [{"allow": True, "access": "rwm"}]
    else:
        devices = _device_rules() + [d.rule() for d in options.devices]
    resources: dict[str, Any] = {"devices": devices}
    if options.memory is not None:
        if options.memory <= 0:
            raise InvalidDocument(f"run options: memory limit {options.memory} is not positive",
                                  hint="give the limit in bytes, e.g. 268435456 for 256 MiB")
        resources["memory"] = {"limit": options.memory}
    if options.cpus is not None:
        quota = round(options.cpus * CPU_PERIOD)
        if quota < 1000:  # the kernel's minimum cfs quota is 1 ms
            raise InvalidDocument(f"run options: cpus {options.cpus} is too small",
                                  hint="give at least 0.01 CPUs")
        resources["cpu"] = {"quota": quota, "period": CPU_PERIOD}
    if options.pids_limit is not None:
        if options.pids_limit <= 0:
            raise InvalidDocument(f"run options: pids limit {options.pids_limit} is not "
                                  "positive", hint="give a positive number of processes")
        resources["pids"] = {"limit": options.pids_limit}
    return resources


def _linux(image_config: ImageConfig, options: BundleOptions, caps: list[str],
           ) -> dict[str, Any]:
    namespaces = _namespaces(options.network, options.netns_path)
    linux: dict[str, Any] = {
        "namespaces": namespaces,
        # --privileged lifts the masks (docker: "masked and read-only paths")
        "maskedPaths": [] if options.privileged else list(profiles.DEFAULT_MASKED_PATHS),
        "readonlyPaths": [] if options.privileged else list(profiles.DEFAULT_READONLY_PATHS),
        "resources": _resources(options),
    }
    devices = host_devices() if options.privileged else []
    devices += [d for d in options.devices if d.path not in {h.path for h in devices}]
    if devices:
        linux["devices"] = [d.spec() for d in devices]
    if options.sysctls:
        check_sysctls(options.sysctls, {n["type"] for n in namespaces})
        linux["sysctl"] = dict(options.sysctls)
    if options.cgroups_path:
        linux["cgroupsPath"] = options.cgroups_path
    if options.seccomp and not options.privileged:
        # The image's architecture decides the syscall ABI inside, not the host's.
        linux["seccomp"] = profiles.default_seccomp_profile(
            image_config.platform.architecture or None, caps)
    return linux
