"""Container create bodies ↔ the container library: ``POST /containers/create``'s Config,
HostConfig and NetworkingConfig as CreateOptions (through the parsers ``ociimg run``
uses), and our containers as docker's list and inspect documents.

Every field the body may carry is either honoured, checked to be the harmless default, or
refused with a 400: an option dropped silently could run a container with less isolation
than the client asked for (an unknown SecurityOpt) or more than it can see (host PID).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from typing import Any

from ociimg.api.http import ApiError
from ociimg.errors import InvalidArgument, OciimgError
from ociimg.reference import familiar_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ociimg.containers.manager import CreateOptions
    from ociimg.containers.options import MountFlags

API_RECORD = "api.json"  # in the container's directory: the create body, for inspect
ZERO_TIME = "0001-01-01T00:00:00Z"
_MAX_INT = (1 << 63) - 1


@dataclass
class CreateRequest:
    image: str
    options: CreateOptions
    record: dict[str, Any]               # Config and HostConfig as inspect shows them
    warnings: list[str] = field(default_factory=list)


def _bad(message: str) -> ApiError:
    return ApiError(400, message)


# Typed fields of a hostile body -----------------------------------------------------------
def _get(doc: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any = None,
         where: str = "") -> Any:
    value = doc.get(key)
    if value is None:
        return default
    if (isinstance(value, bool) and kind is int) or not isinstance(value, kind):
        raise _bad(f"invalid {where}{key}: {_short(value)}")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _bad(f"invalid {where}: {_short(value)} is not a string")
    if "\0" in value:
        raise _bad(f"invalid {where}: {_short(value)} contains a NUL byte")
    return value


def _strings(doc: dict[str, Any], key: str, where: str = "") -> list[str] | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, str):  # docker's StrSlice takes one string too
        value = [value]
    if not isinstance(value, list):
        raise _bad(f"invalid {where}{key}: {_short(value)} is not a list of strings")
    return [_text(v, f"{where}{key}") for v in value]


def _string_map(doc: dict[str, Any], key: str, where: str = "") -> dict[str, str]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(f"invalid {where}{key}: {_short(value)} is not an object")
    return {_text(k, f"{where}{key}"): _text(v, f"{where}{key}[{k}]") for k, v in value.items()}


def _count(doc: dict[str, Any], key: str, where: str = "HostConfig.") -> int:
    value = _get(doc, key, int, 0, where)
    if not 0 <= value <= _MAX_INT:
        raise _bad(f"invalid {where}{key}: {value} is out of range")
    return value


# POST /containers/create -----------------------------------------------------------------
def create_request(body: Any, name: str | None) -> CreateRequest:
    """The container ``body`` describes (docker's ContainerConfig with HostConfig and
    NetworkingConfig inline) as CreateOptions; 400 for what is malformed or unsupported.
    Host paths (binds, devices) are looked at; nothing is created but a bind source."""
    import dataclasses

    from ociimg.bundle import BundleOptions
    from ociimg.containers.manager import CreateOptions
    from ociimg.containers.options import check_stop_signal, parse_volumes_from
    if not isinstance(body, dict):
        raise _bad("invalid JSON: the body is not an object")
    host = _get(body, "HostConfig", dict, {})
    image = _text(body.get("Image") or "", "Image")
    if not image:
        raise _bad("Config cannot be empty in order to create a container")
    _refuse_unsupported(body, host)
    warnings: list[str] = []
    entrypoint = _strings(body, "Entrypoint")
    if entrypoint == [""]:  # docker: --entrypoint "" resets the image's
        entrypoint = []
    env = _strings(body, "Env") or []
    for item in env:
        if not item.partition("=")[0]:
            raise _bad(f"invalid environment variable: {_short(item)}")
    cwd = _get(body, "WorkingDir", str, "") or None
    if cwd is not None and not cwd.startswith("/"):
        raise _bad(f"the working directory '{cwd}' is invalid, it needs to be an absolute "
                   "path")
    mounts = _mounts(body, host)
    bundle = BundleOptions(
        args=_strings(body, "Cmd"), entrypoint=entrypoint, env=env,
        cwd=_text(cwd, "WorkingDir") if cwd else None,
        user=_text(body.get("User") or "", "User") or None,
        hostname=_hostname(body), terminal=bool(_get(body, "Tty", bool, False)),
        readonly_rootfs=bool(_get(host, "ReadonlyRootfs", bool, False, "HostConfig.")),
        mounts=mounts.binds, tmpfs=mounts.tmpfs,
        **_resources(host), **_security(host),
        devices=_devices(host), ulimits=_ulimits(host),
        sysctls=_string_map(host, "Sysctls", "HostConfig."),
        group_add=_strings(host, "GroupAdd", "HostConfig.") or [])
    if _get(host, "Init", bool, False, "HostConfig."):
        from ociimg.containers.options import find_init
        bundle = dataclasses.replace(bundle, init=find_init())
    restart, remove = _restart(host)
    options = CreateOptions(
        name=_name(name), remove=remove,
        interactive=bool(_get(body, "OpenStdin", bool, False)), bundle=bundle,
        network=_network(body, host), volumes=mounts.volumes,
        volumes_from=[parse_volumes_from(v) for v in
                      _strings(host, "VolumesFrom", "HostConfig.") or []],
        stop_signal=check_stop_signal(_get(body, "StopSignal", str) or None),
        stop_timeout=_stop_timeout(body), restart=restart,
        labels=_string_map(body, "Labels"), healthcheck=_healthcheck(body))
    return CreateRequest(image, options, _record(body, host), warnings)


def _name(name: str | None) -> str | None:
    if not name:
        return None
    from ociimg.containers.names import check_name
    name = name.removeprefix("/")
    try:
        check_name(name)
    except InvalidArgument:
        raise _bad(f"Invalid container name ({_short(name)[1:-1]}), only "
                   "[a-zA-Z0-9][a-zA-Z0-9_.-] are allowed") from None
    return name


def _hostname(body: dict[str, Any]) -> str | None:
    name = _get(body, "Hostname", str, "")
    domain = _get(body, "Domainname", str, "")
    if not name:
        return None
    full = f"{name}.{domain}" if domain else name
    import re
    if len(full) > 253 or not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", full):
        raise _bad(f"invalid hostname {_short(full)}")
    return full


# Fields we cannot honour: the default passes, anything else is a clear 400.
_HOST_DEFAULTS: dict[str, tuple[Any, ...]] = {
    "PidMode": ("", "private"), "IpcMode": ("", "private", "shareable"),
    "UTSMode": ("", "private"), "CgroupnsMode": ("", "private"), "Cgroup": ("",),
    "CgroupParent": ("",), "Runtime": ("", "runc"), "Isolation": ("", "default"),
    "VolumeDriver": ("", "local"), "UsernsMode": ("", "host"),
    "CpuQuota": (0,), "CpuPeriod": (0,), "CpuRealtimePeriod": (0,), "CpuRealtimeRuntime": (0,),
    "CpusetCpus": ("",), "CpusetMems": ("",), "BlkioWeight": (0,), "KernelMemory": (0,),
    "KernelMemoryTCP": (0,), "CpuCount": (0,), "CpuPercent": (0,), "IOMaximumIOps": (0,),
    "IOMaximumBandwidth": (0,), "MemorySwappiness": (-1,), "OomKillDisable": (False,),
    "Links": ((),), "DeviceCgroupRules": ((),), "DeviceRequests": ((),),
    "BlkioWeightDevice": ((),), "BlkioDeviceReadBps": ((),), "BlkioDeviceWriteBps": ((),),
    "BlkioDeviceReadIOps": ((),), "BlkioDeviceWriteIOps": ((),), "StorageOpt": ((),),
    "MaskedPaths": ((),), "ReadonlyPaths": ((),),
}


def _refuse_unsupported(body: dict[str, Any], host: dict[str, Any]) -> None:
    for key, allowed in _HOST_DEFAULTS.items():
        value = host.get(key)
        if value is None:
            continue
        if isinstance(value, list | dict):
            value = tuple(value)
        if value not in allowed:
            raise _bad(f"HostConfig.{key} {_short(host[key])} is not supported by ociimg "
                       f"serve (only {' or '.join(repr(a) for a in allowed if a != ())}"
                       f"{'empty' if () in allowed else ''})")
    oom = _get(host, "OomScoreAdj", int, 0, "HostConfig.")
    if not 0 <= oom <= 1000:
        raise _bad(f"HostConfig.OomScoreAdj {oom} is not supported (0 to 1000)")
    log = _get(host, "LogConfig", dict, {}, "HostConfig.")
    if (log.get("Type") or "json-file") not in ("json-file", "k8s-file", "local"):
        raise _bad(f"logging driver {_short(log.get('Type'))} is not supported: ociimg "
                   "keeps each container's log itself (json-file)")
    if body.get("NetworkDisabled"):
        host.setdefault("NetworkMode", "none")


def _stop_timeout(body: dict[str, Any]) -> float | None:
    value = _get(body, "StopTimeout", int)
    if value is None:
        return None
    if not -1 <= value <= 86400 * 365:
        raise _bad(f"invalid StopTimeout {value}")
    return None if value < 0 else float(value)


def _restart(host: dict[str, Any]) -> tuple[Any, bool]:
    from ociimg.containers.policies import RestartPolicy
    policy = _get(host, "RestartPolicy", dict, {}, "HostConfig.")
    name = _get(policy, "Name", str, "", "HostConfig.RestartPolicy.") or "no"
    count = _get(policy, "MaximumRetryCount", int, 0, "HostConfig.RestartPolicy.")
    if count < 0 or count > 1 << 31:
        raise _bad(f"invalid restart policy: MaximumRetryCount {count} is out of range")
    if count and name != "on-failure":
        raise _bad(f"invalid restart policy: maximum retry count cannot be used with restart "
                   f"policy '{name}'")
    parsed = RestartPolicy.parse(f"{name}:{count}" if count else name)
    remove = bool(_get(host, "AutoRemove", bool, False, "HostConfig."))
    if remove and parsed.name != "no":
        raise _bad("can't create 'AutoRemove' container with restart policy")
    return parsed, remove


def _healthcheck(body: dict[str, Any]) -> Any:
    from ociimg.containers.policies import Healthcheck
    hc = _get(body, "Healthcheck", dict)
    if not hc:
        return None
    test = _strings(hc, "Test", "Healthcheck.") or []
    if not test:
        return None  # the image's
    if test[0] not in ("NONE", "CMD", "CMD-SHELL") or (test[0] != "NONE" and len(test) < 2):
        raise _bad(f"invalid Healthcheck.Test {_short(test)}")

    def seconds(key: str, default: float) -> float:
        ns = _get(hc, key, int, 0, "Healthcheck.")
        if not 0 <= ns <= 10**9 * 86400 * 365:
            raise _bad(f"invalid Healthcheck.{key} {ns}")
        return ns / 1e9 or default
    retries = _get(hc, "Retries", int, 0, "Healthcheck.")
    if not 0 <= retries <= 1 << 31:
        raise _bad(f"invalid Healthcheck.Retries {retries}")
    return Healthcheck(test, interval=seconds("Interval", 30.0),
                       timeout=seconds("Timeout", 30.0),
                       start_period=seconds("StartPeriod", 0.0), retries=retries or 3)


def _resources(host: dict[str, Any]) -> dict[str, Any]:
    memory = _count(host, "Memory")
    if memory and memory < 6 << 20:
        raise _bad("Minimum memory limit allowed is 6MB")
    swap = _get(host, "MemorySwap", int, 0, "HostConfig.")
    if swap not in (0, -1) and swap < memory:
        raise _bad("Minimum memoryswap limit should be larger than memory limit, see usage")
    nano = _count(host, "NanoCpus")
    if nano and not 10**7 <= nano <= (os.cpu_count() or 1) * 10**9:
        raise _bad(f"Range of CPUs is from 0.01 to {os.cpu_count() or 1}.00, as there are "
                   f"only {os.cpu_count() or 1} CPUs available")
    _count(host, "CpuShares")  # a relative weight: accepted, the kernel's default applies
    pids = _get(host, "PidsLimit", int, 0, "HostConfig.")
    if not -1 <= pids <= _MAX_INT:
        raise _bad(f"invalid HostConfig.PidsLimit {pids}")
    shm = _count(host, "ShmSize")
    return {"memory": memory or None, "cpus": nano / 1e9 if nano else None,
            "pids_limit": pids if pids > 0 else None, "shm_size": shm or None}


_KNOWN_NOOP_OPTS = ("label=disable", "label:disable", "apparmor=unconfined",
                    "apparmor:unconfined")


def _security(host: dict[str, Any]) -> dict[str, Any]:
    from ociimg.containers.options import parse_security_opts
    opts = []
    for item in _strings(host, "SecurityOpt", "HostConfig.") or []:
        if item in _KNOWN_NOOP_OPTS:  # no SELinux/AppArmor here: nothing to turn off
            continue
        key, sep, value = item.partition(":") if "=" not in item else item.partition("=")
        opts.append(f"{key}={value}" if sep and value else key)
    for item in opts:
        if item.startswith("seccomp=") and item != "seccomp=unconfined":
            raise _bad("SecurityOpt seccomp=<profile> is not supported by ociimg serve "
                       "(its default profile, or seccomp=unconfined)")
    return {**parse_security_opts(opts),
            "privileged": bool(_get(host, "Privileged", bool, False, "HostConfig.")),
            "cap_add": _strings(host, "CapAdd", "HostConfig.") or [],
            "cap_drop": _strings(host, "CapDrop", "HostConfig.") or []}


def _devices(host: dict[str, Any]) -> list[Any]:
    from ociimg.bundle.runflags import host_device
    out = []
    for d in _get(host, "Devices", list, [], "HostConfig."):
        if not isinstance(d, dict):
            raise _bad(f"invalid HostConfig.Devices entry {_short(d)}")
        path = _text(d.get("PathOnHost") or "", "Devices.PathOnHost")
        out.append(host_device(path, _text(d.get("PathInContainer") or "", "Devices")
                               or None, _text(d.get("CgroupPermissions") or "rwm", "Devices")))
    return out


def _ulimits(host: dict[str, Any]) -> list[Any]:
    from ociimg.bundle.runflags import parse_ulimit
    out = []
    for u in _get(host, "Ulimits", list, [], "HostConfig."):
        if not isinstance(u, dict):
            raise _bad(f"invalid HostConfig.Ulimits entry {_short(u)}")
        name = _text(u.get("Name") or "", "Ulimits.Name")
        soft, hard = u.get("Soft"), u.get("Hard")
        if not all(isinstance(v, int) and not isinstance(v, bool) and -1 <= v < 1 << 64
                   for v in (soft, hard)):
            raise _bad(f"invalid ulimit {name}: soft {_short(soft)}, hard {_short(hard)}")
        out.append(parse_ulimit(f"{name}={soft}:{hard}"))
    return out


# Mounts: Binds, Mounts, Tmpfs, Volumes ----------------------------------------------------
def _mounts(body: dict[str, Any], host: dict[str, Any]) -> MountFlags:
    from ociimg.bundle import BindMount
    from ociimg.bundle.runflags import TmpfsMount
    from ociimg.containers.options import MountFlags, parse_volume_flag
    from ociimg.containers.volumes import VolumeMount
    out = MountFlags()
    for text in _strings(host, "Binds", "HostConfig.") or []:
        if text.startswith("."):  # dockerd: a bind source is absolute, else a volume name
            raise _bad(f"invalid volume specification: {_short(text)}: a bind source must "
                       "be an absolute path")
        out_mount = parse_volume_flag(text)
        (out.binds if isinstance(out_mount, BindMount) else out.volumes).append(out_mount)
    for m in _get(host, "Mounts", list, [], "HostConfig."):
        mount = _mount(m)
        if isinstance(mount, BindMount):
            out.binds.append(mount)
        elif isinstance(mount, TmpfsMount):
            out.tmpfs.append(mount)
        else:
            out.volumes.append(mount)
    for dest, opts in _string_map(host, "Tmpfs", "HostConfig.").items():
        out.tmpfs.append(TmpfsMount(_destination(dest), tuple(o for o in opts.split(",")
                                                              if o)))
    taken = {os.path.normpath(m.destination) for m in [*out.binds, *out.volumes, *out.tmpfs]}
    volumes = _get(body, "Volumes", dict, {})
    for dest in volumes:
        dest = _destination(_text(dest, "Volumes"))
        if os.path.normpath(dest) not in taken:  # the CLI repeats -v's targets here
            out.volumes.append(VolumeMount(dest))
    dests = [os.path.normpath(m.destination) for m in [*out.binds, *out.tmpfs, *out.volumes]]
    dup = next((d for d in dests if dests.count(d) > 1), None)
    if dup:
        raise _bad(f"Duplicate mount point: {dup}")
    return out


def _destination(path: str) -> str:
    from ociimg.containers.options import _destination as check
    return check(path, path)


def _mount(m: Any) -> Any:
    from ociimg.bundle import BindMount
    from ociimg.bundle.runflags import TmpfsMount
    from ociimg.containers.options import _host_path
    from ociimg.containers.volumes import VolumeMount, check_volume_name
    if not isinstance(m, dict):
        raise _bad(f"invalid HostConfig.Mounts entry {_short(m)}")
    kind = _get(m, "Type", str, "volume", "Mounts.")
    target = _destination(_text(m.get("Target") or "", "Mounts.Target") or "")
    source = _text(m.get("Source") or "", "Mounts.Source")
    readonly = bool(_get(m, "ReadOnly", bool, False, "Mounts."))
    if kind == "bind":
        prop = _get(_get(m, "BindOptions", dict, {}, "Mounts."), "Propagation", str,
                    "rprivate", "Mounts.BindOptions.") or "rprivate"
        if not source.startswith("/"):
            raise _bad(f"invalid mount config for type \"bind\": invalid mount path: "
                       f"'{source}' mount path must be absolute")
        if not os.path.exists(source):
            raise _bad(f"invalid mount config for type \"bind\": bind source path does not "
                       f"exist: {source}")
        from ociimg.containers.options import _PROPAGATIONS
        if prop not in _PROPAGATIONS:
            raise _bad(f"invalid mount config: bind propagation {_short(prop)}")
        return BindMount(_host_path(source), target, readonly, prop)
    if kind == "volume":
        nocopy = bool(_get(_get(m, "VolumeOptions", dict, {}, "Mounts."), "NoCopy", bool,
                           False, "Mounts.VolumeOptions."))
        return VolumeMount(target, check_volume_name(source) if source else None, readonly,
                           nocopy)
    if kind == "tmpfs":
        if source:
            raise _bad("invalid mount config for type \"tmpfs\": source must be empty")
        tmpfs = _get(m, "TmpfsOptions", dict, {}, "Mounts.")
        opts = ["ro"] if readonly else []
        size = _count(tmpfs, "SizeBytes", "Mounts.TmpfsOptions.")
        if size:
            opts.append(f"size={size}")
        mode = _get(tmpfs, "Mode", int, 0, "Mounts.TmpfsOptions.")
        if mode:
            if not 0 < mode <= 0o7777:
                raise _bad(f"invalid tmpfs mode {mode}")
            opts.append(f"mode={mode:o}")
        return TmpfsMount(target, tuple(opts))
    raise _bad(f"mount type {_short(kind)} is not supported (bind, volume or tmpfs)")


# Networking --------------------------------------------------------------------------------
def _network(body: dict[str, Any], host: dict[str, Any]) -> Any:
    from ociimg.network.options import network_options
    mode = _get(host, "NetworkMode", str, "", "HostConfig.") or "default"
    net = {"default": "bridge"}.get(mode, mode)
    endpoints = _get(_get(body, "NetworkingConfig", dict, {}), "EndpointsConfig", dict, {},
                     "NetworkingConfig.")
    aliases: list[str] = []
    ip = None
    user_network = net not in ("bridge", "none", "host") and not net.startswith("container:")
    for key, ep in endpoints.items():
        if ep is None:
            continue
        if not isinstance(ep, dict):
            raise _bad(f"invalid NetworkingConfig.EndpointsConfig[{_short(key)}]")
        if key != net and not (key in ("bridge", "default") and net == "bridge"):
            raise _bad(f"NetworkingConfig names network {_short(key)} but NetworkMode is "
                       f"{_short(net)}: connect further networks after create")
        # Aliases are DNS names: the default network has no DNS, so they are dropped there
        # (compose sets them everywhere).
        if user_network:
            aliases = _strings(ep, "Aliases", "EndpointsConfig.") or []
        ipam = _get(ep, "IPAMConfig", dict, {}, "EndpointsConfig.")
        ip = _get(ipam, "IPv4Address", str, "", "IPAMConfig.") or None
    return network_options(
        net, _ports(body, host),
        bool(_get(host, "PublishAllPorts", bool, False, "HostConfig.")),
        _strings(host, "Dns", "HostConfig.") or [],
        _strings(host, "DnsSearch", "HostConfig.") or [],
        _strings(host, "DnsOptions", "HostConfig.") or [],
        _strings(host, "ExtraHosts", "HostConfig.") or [], aliases, ip,
        _get(body, "MacAddress", str, "") or None, _get(body, "Hostname", str, "") or None)


def _ports(body: dict[str, Any], host: dict[str, Any]) -> list[str]:
    """PortBindings as ``-p`` texts for the CLI's parser: every piece checked first, so
    no separator in a value can change what the text means. With PublishAllPorts, the
    body's ExposedPorts (``--expose``) are published too, as the image's are."""
    import re
    out = []
    bindings = dict(_get(host, "PortBindings", dict, {}, "HostConfig."))
    if _get(host, "PublishAllPorts", bool, False, "HostConfig."):
        for key in _get(body, "ExposedPorts", dict, {}):
            bindings.setdefault(key, None)
    for key, binds in bindings.items():
        if not isinstance(key, str) or not re.fullmatch(r"[0-9]{1,5}(/(tcp|udp|sctp))?", key):
            raise _bad(f"invalid port specification: {_short(key)}")
        port, _, proto = key.partition("/")
        for b in binds or [{}]:
            if not isinstance(b, dict):
                raise _bad(f"invalid PortBindings[{key}] entry {_short(b)}")
            hip = _get(b, "HostIp", str, "", "PortBindings.")
            hport = _get(b, "HostPort", str, "", "PortBindings.")
            if hip in ("0.0.0.0", "::"):
                hip = ""
            if not re.fullmatch(r"[0-9.]*", hip) or not re.fullmatch(r"[0-9]{0,5}", hport):
                raise _bad(f"invalid port binding {_short(hip)}:{_short(hport)} for {key} "
                           "(IPv4 address and a single port)")
            out.append(f"{hip + ':' if hip else ''}{hport + ':' if hport or hip else ''}"
                       f"{port}/{proto or 'tcp'}")
    return out


def _record(body: dict[str, Any], host: dict[str, Any]) -> dict[str, Any]:
    """What inspect shows of the request: the Config and HostConfig fields docker keeps."""
    config_keys = ("Hostname", "Domainname", "User", "AttachStdin", "AttachStdout",
                   "AttachStderr", "ExposedPorts", "Tty", "OpenStdin", "StdinOnce", "Env",
                   "Cmd", "Healthcheck", "Image", "Volumes", "WorkingDir", "Entrypoint",
                   "Labels", "StopSignal", "StopTimeout", "MacAddress")
    host_keys = ("Binds", "NetworkMode", "PortBindings", "RestartPolicy", "AutoRemove",
                 "VolumesFrom", "CapAdd", "CapDrop", "Dns", "DnsOptions", "DnsSearch",
                 "ExtraHosts", "GroupAdd", "Privileged", "PublishAllPorts", "ReadonlyRootfs",
                 "SecurityOpt", "Tmpfs", "ShmSize", "Sysctls", "Memory", "NanoCpus",
                 "CpuShares", "PidsLimit", "Ulimits", "Devices", "Mounts", "Init",
                 "LogConfig", "UsernsMode")
    return {"Config": {k: body.get(k) for k in config_keys if k in body},
            "HostConfig": {k: host.get(k) for k in host_keys if k in host}}


# Documents: list and inspect -----------------------------------------------------------------
def rfc3339(seconds: float | None) -> str:
    if not seconds:
        return ZERO_TIME
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")


def network_name(name: str) -> str:
    from ociimg.network.config import DEFAULT_NAME
    return "bridge" if name == DEFAULT_NAME else name


def _net_record(c: Any) -> dict[str, Any]:
    """network.json as network.read_record reads it, through the container records'
    cache (a container list reads every container's)."""
    from ociimg.containers import store
    from ociimg.network import RECORD
    return store.read_json(c.path / RECORD, RECORD) or {}  # absent, bad, being rewritten: {}


def ports_of(record: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in record.get("ports") or []:
        out.append({"IP": p.get("host_ip") or "0.0.0.0", "PrivatePort": p["container_port"],
                    "PublicPort": p["host_port"], "Type": p["protocol"]})
    return out


def _networks(c: Any, record: dict[str, Any]) -> dict[str, Any]:
    mode = record.get("mode") or "none"
    if mode in ("host", "none"):
        return {mode: _endpoint()}
    if mode == "container":
        return {}
    attached = {a.get("network"): a for a in record.get("attached") or []}
    out = {}
    for name in record.get("networks") or []:
        a = attached.get(name) or {}
        address = a.get("address") or ""
        ip, _, prefix = address.partition("/")
        out[network_name(name)] = _endpoint(
            ip=ip, prefix=int(prefix) if prefix.isdigit() else 0,
            gateway=a.get("gateway") or "", mac=a.get("mac") or "",
            aliases=[c.id[:12], *(record.get("aliases") or [])] if name != "ociimg" else None,
            network_id=name)
    return out


def _endpoint(ip: str = "", prefix: int = 0, gateway: str = "", mac: str = "",
              aliases: list[str] | None = None, network_id: str = "") -> dict[str, Any]:
    return {"IPAMConfig": None, "Links": None, "Aliases": aliases, "NetworkID": network_id,
            "EndpointID": "", "Gateway": gateway, "IPAddress": ip, "IPPrefixLen": prefix,
            "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
            "MacAddress": mac, "DriverOpts": None}


def mounts_of(c: Any) -> list[dict[str, Any]]:
    out = []
    for rec in c.meta.get("mounts") or []:
        if not isinstance(rec, dict):
            continue
        kind = rec.get("type") or "bind"
        out.append({"Type": kind, "Name": rec.get("name") or "",
                    "Source": rec.get("source") or "",
                    "Destination": rec.get("destination") or "",
                    "Driver": "local" if kind == "volume" else "", "Mode": "",
                    "RW": bool(rec.get("rw", True)), "Propagation":
                    rec.get("propagation") or ("rprivate" if kind == "bind" else "")})
    return out


def api_record(c: Any) -> dict[str, Any]:
    from ociimg.containers import store
    try:
        doc = store.read_json(c.path / API_RECORD, API_RECORD)
    except (OciimgError, OSError, ValueError):
        doc = None
    return doc if isinstance(doc, dict) else {}


def list_doc(c: Any, row: dict[str, Any]) -> dict[str, Any]:
    """One entry of GET /containers/json from ``row`` (containers.listing.ps_row)."""
    from ociimg.containers.listing import docker_state
    net = _net_record(c)
    saved = api_record(c)
    command = row.get("command") or []
    return {"Id": c.id, "Names": [f"/{c.name}"],
            "Image": (saved.get("Config") or {}).get("Image") or familiar_name(row.get("image")),
            "ImageID": saved.get("ImageID") or c.meta.get("digest") or "",
            "Command": " ".join(command),
            "Created": int(c.meta.get("createdNs", 0) // 10**9) or 0,
            "Ports": ports_of(net), "Labels": row.get("labels") or {},
            "State": docker_state(row["status"]), "Status": row["statusText"],
            "HostConfig": {"NetworkMode": _network_mode(net)},
            "NetworkSettings": {"Networks": _networks(c, net)}, "Mounts": mounts_of(c)}


def _image_id(c: Any) -> str:
    return api_record(c).get("ImageID") or c.meta.get("digest") or ""


def _network_mode(record: dict[str, Any]) -> str:
    mode = record.get("mode") or "none"
    if mode == "container":
        return f"container:{record.get('container')}"
    if mode == "bridge":
        nets = record.get("networks") or []
        return network_name(nets[0]) if nets else "bridge"
    return mode


def inspect_doc(manager: Any, c: Any) -> dict[str, Any]:
    """GET /containers/{id}/json: docker's shape, from our records and the create body."""
    from ociimg.containers.listing import docker_state
    st = manager.status(c)
    run = manager.run_record(c)
    meta = c.meta
    saved = api_record(c)
    net = _net_record(c)
    state: dict[str, Any] = {
        "Status": docker_state(st.status), "Running": st.status in ("running", "paused"),
        "Paused": st.status == "paused", "Restarting": st.status == "restarting",
        "OOMKilled": False, "Dead": st.status == "unknown", "Pid": st.pid or 0,
        "ExitCode": st.exit_code or 0, "Error": "",
        "StartedAt": rfc3339(run.get("startedAt")),
        "FinishedAt": st.finished or ZERO_TIME}
    health = manager.health(c)
    if health is not None:
        state["Health"] = health
    command = meta.get("command") or [""]
    config = {"Hostname": c.id[:12], "Domainname": "", "User": "", "AttachStdin": False,
              "AttachStdout": False, "AttachStderr": False, "ExposedPorts": None,
              "Tty": bool(meta.get("tty")), "OpenStdin": bool(meta.get("interactive")),
              "StdinOnce": False, "Env": None, "Cmd": None,
              "Image": familiar_name(meta.get("image")),
              "Volumes": None, "WorkingDir": "", "Entrypoint": None, "OnBuild": None,
              "Labels": meta.get("labels") or {}, "StopSignal": meta.get("stopSignal")}
    config.update({k: v for k, v in (saved.get("Config") or {}).items() if v is not None})
    config["Tty"] = bool(meta.get("tty"))  # what the monitor does, whatever was asked
    config["OpenStdin"] = bool(meta.get("interactive"))
    config["Labels"] = meta.get("labels") or {}
    restart = meta.get("restart") or {}
    host_config = {"Binds": None, "NetworkMode": _network_mode(net), "PortBindings": {},
                   "RestartPolicy": {"Name": restart.get("name", "no"),
                                     "MaximumRetryCount": restart.get("maximumRetryCount", 0)},
                   "AutoRemove": bool(meta.get("autoRemove")), "VolumeDriver": "",
                   "VolumesFrom": None, "CapAdd": None, "CapDrop": None, "Dns": [],
                   "DnsOptions": [], "DnsSearch": [], "ExtraHosts": None, "Privileged": False,
                   "PublishAllPorts": False, "ReadonlyRootfs": False, "SecurityOpt": None,
                   "LogConfig": {"Type": "json-file", "Config": {}}, "Memory": 0,
                   "NanoCpus": 0, "PidsLimit": None, "ShmSize": 67108864, "Init": None}
    host_config.update({k: v for k, v in (saved.get("HostConfig") or {}).items()
                        if v is not None})
    mode = _network_mode(net)
    if not (mode == "bridge" and host_config["NetworkMode"] == "default"):  # as asked
        host_config["NetworkMode"] = mode
    ports: dict[str, Any] = {}
    for p in ports_of(net):
        ports.setdefault(f"{p['PrivatePort']}/{p['Type']}", []).append(
            {"HostIp": p["IP"], "HostPort": str(p["PublicPort"])})
    networks = _networks(c, net)
    first = next(iter(networks.values()), _endpoint())
    return {
        "Id": c.id, "Created": _created(meta), "Path": command[0], "Args": command[1:],
        "State": state, "Image": _image_id(c), "ResolvConfPath": str(c.path / "resolv.conf"),
        "HostnamePath": str(c.path / "hostname"), "HostsPath": str(c.path / "hosts"),
        "LogPath": str(c.path / "ctr.log"), "Name": f"/{c.name}",
        "RestartCount": run.get("restartCount", 0), "Driver": "overlay2",
        "Platform": "linux", "MountLabel": "", "ProcessLabel": "", "AppArmorProfile": "",
        "ExecIDs": None, "HostConfig": host_config, "GraphDriver": {"Data": None,
                                                                   "Name": "overlay2"},
        "Mounts": mounts_of(c), "Config": config,
        "NetworkSettings": {"Bridge": "", "SandboxID": "", "HairpinMode": False,
                            "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0,
                            "Ports": ports, "SandboxKey": net.get("netns") or "",
                            "Gateway": first["Gateway"], "IPAddress": first["IPAddress"],
                            "IPPrefixLen": first["IPPrefixLen"],
                            "MacAddress": first["MacAddress"], "Networks": networks}}


def _created(meta: dict[str, Any]) -> str:
    ns = meta.get("createdNs")
    if not isinstance(ns, int):
        return meta.get("created") or ZERO_TIME
    stamp = datetime.datetime.fromtimestamp(ns // 10**9, datetime.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ns % 10**9:09d}Z"
