"""A typed, validated view of a bundle's config.json (runtime-spec config.md, config-linux.md).

Parsing is strict about the fields the runtime acts on and keeps the raw document for the
rest (hooks get the state, not the config). Errors name the JSON path, e.g.
``config.json: process.args: must be a non-empty list of strings``.
"""

from __future__ import annotations

import os

from ociimg.errors import InvalidDocument
from ociimg.runtime import jsonio
from ociimg.runtime.hooks import STAGES
from ociimg.runtime.records import field, record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")

_RLIMITS = ("RLIMIT_AS", "RLIMIT_CORE", "RLIMIT_CPU", "RLIMIT_DATA", "RLIMIT_FSIZE",
            "RLIMIT_LOCKS", "RLIMIT_MEMLOCK", "RLIMIT_MSGQUEUE", "RLIMIT_NICE", "RLIMIT_NOFILE",
            "RLIMIT_NPROC", "RLIMIT_RSS", "RLIMIT_RTPRIO", "RLIMIT_RTTIME", "RLIMIT_SIGPENDING",
            "RLIMIT_STACK")


@record(frozen=True, slots=True)
class Rlimit:
    type: str
    soft: int
    hard: int


@record(frozen=True, slots=True)
class User:
    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()
    umask: int | None = None


@record(frozen=True, slots=True)
class ProcessSpec:
    args: tuple[str, ...]
    env: tuple[str, ...] = ()
    cwd: str = "/"
    user: User = field(default_factory=User)
    terminal: bool = False
    no_new_privileges: bool = False
    capabilities: dict[str, Any] | None = None
    rlimits: tuple[Rlimit, ...] = ()
    oom_score_adj: int | None = None
    console_size: tuple[int, int] | None = None  # (height, width)

    def env_value(self, name: str) -> str | None:
        for item in reversed(self.env):
            key, sep, value = item.partition("=")
            if sep and key == name:
                return value
        return None


@record(frozen=True, slots=True)
class Namespace:
    type: str
    path: str | None = None


@record(frozen=True, slots=True)
class IDMapping:
    container_id: int
    host_id: int
    size: int


@record(frozen=True, slots=True)
class RuntimeConfig:
    raw: dict[str, Any]
    bundle: str
    oci_version: str
    root_path: str
    root_readonly: bool
    process: ProcessSpec | None
    hostname: str | None
    domainname: str | None
    mounts: tuple[dict[str, Any], ...]
    hooks: dict[str, list[dict[str, Any]]]
    annotations: dict[str, str]
    namespaces: tuple[Namespace, ...] = ()
    uid_mappings: tuple[IDMapping, ...] = ()
    gid_mappings: tuple[IDMapping, ...] = ()
    devices: tuple[dict[str, Any], ...] = ()
    masked_paths: tuple[str, ...] = ()
    readonly_paths: tuple[str, ...] = ()
    sysctl: dict[str, str] = field(default_factory=dict)
    rootfs_propagation: str | None = None
    cgroups_path: str | None = None
    resources: dict[str, Any] | None = None
    seccomp: dict[str, Any] | None = None
    time_offsets: dict[str, tuple[int, int]] = field(default_factory=dict)

    def has_namespace(self, ns_type: str) -> bool:
        return any(ns.type == ns_type for ns in self.namespaces)

    def namespace(self, ns_type: str) -> Namespace | None:
        return next((ns for ns in self.namespaces if ns.type == ns_type), None)


def load_config(bundle: str | os.PathLike[str]) -> RuntimeConfig:
    bundle = os.path.abspath(bundle)
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            doc = jsonio.loads(f.read())
    except FileNotFoundError as exc:
        raise InvalidDocument(f"bundle {bundle}: no config.json",
                              hint="pass the bundle directory with --bundle") from exc
    except (OSError, ValueError) as exc:
        raise InvalidDocument(f"{path}: cannot read JSON: {exc}") from exc
    except RecursionError as exc:
        raise InvalidDocument(f"{path}: cannot read JSON: nested too deeply") from exc
    return parse_config(doc, bundle)


def parse_config(doc: Any, bundle: str | os.PathLike[str]) -> RuntimeConfig:
    bundle = os.fspath(bundle)
    _require(isinstance(doc, dict), "", "must be a JSON object")
    check_types(doc, _CONFIG, "")
    version = doc.get("ociVersion")
    _require(isinstance(version, str) and version.startswith("1."), "ociVersion",
             "must be a 1.x runtime-spec version string")
    root = doc.get("root")
    _require(isinstance(root, dict) and isinstance(root.get("path"), str) and root["path"],
             "root.path", "must be a non-empty string")
    linux = doc.get("linux") or {}
    _require(isinstance(linux, dict), "linux", "must be an object")
    return RuntimeConfig(
        raw=doc,
        bundle=bundle,
        oci_version=version,
        # An absolute path replaces the bundle (os.path.join, as pathlib's "/").
        root_path=os.path.normpath(os.path.join(bundle, root["path"])),
        root_readonly=bool(root.get("readonly", False)),
        process=_parse_process(doc["process"], "process") if doc.get("process") else None,
        hostname=_opt_str(doc, "hostname"),
        domainname=_opt_str(doc, "domainname"),
        mounts=tuple(_parse_mounts(doc.get("mounts") or [])),
        hooks=_parse_hooks(doc.get("hooks") or {}),
        annotations=_str_map(doc.get("annotations") or {}, "annotations"),
        namespaces=tuple(_parse_namespaces(linux.get("namespaces") or [])),
        uid_mappings=tuple(_parse_idmaps(linux.get("uidMappings") or [], "linux.uidMappings")),
        gid_mappings=tuple(_parse_idmaps(linux.get("gidMappings") or [], "linux.gidMappings")),
        devices=tuple(linux.get("devices") or ()),
        masked_paths=tuple(_str_list(linux.get("maskedPaths") or [], "linux.maskedPaths")),
        readonly_paths=tuple(_str_list(linux.get("readonlyPaths") or [],
                                       "linux.readonlyPaths")),
        sysctl=_str_map(linux.get("sysctl") or {}, "linux.sysctl"),
        rootfs_propagation=_opt_str(linux, "rootfsPropagation"),
        cgroups_path=_opt_str(linux, "cgroupsPath"),
        resources=linux.get("resources"),
        seccomp=linux.get("seccomp"),
        time_offsets=_parse_time_offsets(linux.get("timeOffsets") or {}),
    )


def parse_process(proc: Any, where: str = "process") -> ProcessSpec:
    _require(isinstance(proc, dict), where, "must be an object")
    check_types(proc, ("o", _PROCESS[1], ()), where)  # exec's process.json may omit cwd
    return _parse_process(proc, where)


def _parse_process(proc: dict[str, Any], where: str) -> ProcessSpec:
    """parse_process of a section check_types has already been through."""
    args = proc.get("args")
    _require(isinstance(args, list) and args and all(isinstance(a, str) for a in args),
             f"{where}.args", "must be a non-empty list of strings")
    cwd = proc.get("cwd", "/")
    _require(isinstance(cwd, str) and cwd.startswith("/"), f"{where}.cwd",
             "must be an absolute path")
    user = proc.get("user") or {}
    _require(isinstance(user, dict), f"{where}.user", "must be an object")
    size = proc.get("consoleSize")
    return ProcessSpec(
        args=tuple(args),
        env=tuple(_str_list(proc.get("env") or [], f"{where}.env")),
        cwd=cwd,
        user=User(uid=_int(user.get("uid", 0), f"{where}.user.uid"),
                  gid=_int(user.get("gid", 0), f"{where}.user.gid"),
                  additional_gids=tuple(_int(g, f"{where}.user.additionalGids")
                                        for g in user.get("additionalGids") or ()),
                  umask=None if user.get("umask") is None
                  else _int(user["umask"], f"{where}.user.umask")),
        terminal=bool(proc.get("terminal", False)),
        no_new_privileges=bool(proc.get("noNewPrivileges", False)),
        capabilities=proc.get("capabilities"),
        rlimits=tuple(_parse_rlimits(proc.get("rlimits") or [], f"{where}.rlimits")),
        oom_score_adj=proc.get("oomScoreAdj"),
        console_size=(int(size["height"]), int(size["width"])) if size else None,
    )


def _parse_mounts(mounts: Any) -> list[dict[str, Any]]:
    _require(isinstance(mounts, list), "mounts", "must be a list")
    for i, m in enumerate(mounts):
        _require(isinstance(m, dict) and isinstance(m.get("destination"), str)
                 and m["destination"], f"mounts[{i}].destination", "must be a non-empty string")
        _require(isinstance(m.get("options", []), list), f"mounts[{i}].options",
                 "must be a list of strings")
    return mounts


def _parse_hooks(hooks: Any) -> dict[str, list[dict[str, Any]]]:
    _require(isinstance(hooks, dict), "hooks", "must be an object")
    out: dict[str, list[dict[str, Any]]] = {}
    for stage, entries in hooks.items():
        _require(isinstance(entries, list), f"hooks.{stage}", "must be a list")
        for i, hook in enumerate(entries):
            _require(isinstance(hook, dict) and isinstance(hook.get("path"), str)
                     and hook["path"].startswith("/"), f"hooks.{stage}[{i}].path",
                     "must be an absolute path")
        out[stage] = entries
    return out


def _parse_namespaces(items: Any) -> list[Namespace]:
    _require(isinstance(items, list), "linux.namespaces", "must be a list")
    seen: set[str] = set()
    out = []
    for i, ns in enumerate(items):
        where = f"linux.namespaces[{i}]"
        _require(isinstance(ns, dict) and ns.get("type") in NAMESPACE_TYPES, f"{where}.type",
                 f"must be one of {', '.join(NAMESPACE_TYPES)}")
        _require(ns["type"] not in seen, f"{where}.type", f"duplicate namespace {ns['type']}")
        seen.add(ns["type"])
        path = ns.get("path") or None
        _require(path is None or (isinstance(path, str) and path.startswith("/")),
                 f"{where}.path", "must be an absolute path")
        out.append(Namespace(ns["type"], path))
    return out


def _parse_idmaps(items: Any, where: str) -> list[IDMapping]:
    _require(isinstance(items, list), where, "must be a list")
    return [IDMapping(_int(m.get("containerID"), f"{where}[{i}].containerID"),
                      _int(m.get("hostID"), f"{where}[{i}].hostID"),
                      _int(m.get("size"), f"{where}[{i}].size"))
            for i, m in enumerate(items)]


def _parse_time_offsets(offsets: Any) -> dict[str, tuple[int, int]]:
    _require(isinstance(offsets, dict), "linux.timeOffsets", "must be an object")
    out = {}
    for clock, value in offsets.items():
        where = f"linux.timeOffsets.{clock}"
        _require(clock in ("monotonic", "boottime") and isinstance(value, dict), where,
                 "must be monotonic or boottime with secs/nanosecs")
        out[clock] = (_int(value.get("secs", 0), f"{where}.secs"),
                      _int(value.get("nanosecs", 0), f"{where}.nanosecs"))
    return out


def _parse_rlimits(items: Any, where: str) -> list[Rlimit]:
    _require(isinstance(items, list), where, "must be a list")
    out = []
    for i, r in enumerate(items):
        _require(isinstance(r, dict) and r.get("type") in _RLIMITS, f"{where}[{i}].type",
                 "must be an RLIMIT_* name")
        soft = _rlim(r.get("soft"), f"{where}[{i}].soft")
        hard = _rlim(r.get("hard"), f"{where}[{i}].hard")
        _require(hard == RLIM_INFINITY or soft != RLIM_INFINITY and soft <= hard,
                 f"{where}[{i}].soft", "must not be above hard")
        out.append(Rlimit(r["type"], soft, hard))
    return out


# resource.RLIM_INFINITY on Linux: what setrlimit() takes for "unlimited".
RLIM_INFINITY = -1


def _rlim(value: Any, where: str) -> int:
    """A uint64 rlimit value as resource.setrlimit takes it: 2^64-1 (runc's and the
    kernel's RLIM_INFINITY) is -1; it converts through a signed long long, so values
    from 2^63 up to that are unrepresentable (and a negative one would wrap around)."""
    value = _int(value, where)
    if value == 2**64 - 1:
        return RLIM_INFINITY
    _require(0 <= value < 2**63, where,
             "must be from 0 to 2^63-1, or 18446744073709551615 for unlimited")
    return value


def _require(cond: bool, where: str, what: str) -> None:
    if not cond:
        raise InvalidDocument(f"config.json: {where or '<root>'}: {what}",
                              hint="fix the bundle's config.json (runtime-spec config.md)")


def _int(value: Any, where: str) -> int:
    _require(isinstance(value, int) and not isinstance(value, bool), where, "must be an integer")
    return value


def _opt_str(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    _require(value is None or isinstance(value, str), key, "must be a string")
    return value or None


def _str_list(items: Any, where: str) -> list[str]:
    _require(isinstance(items, list) and all(isinstance(x, str) for x in items), where,
             "must be a list of strings")
    return items


def _str_map(items: Any, where: str) -> dict[str, str]:
    _require(isinstance(items, dict) and all(isinstance(v, str) for v in items.values()), where,
             "must map strings to strings")
    return items


# ---- the runtime-spec types (config-schema.json, config-linux.json, defs*.json) ----
#
# Checked up front, before anything is created, so a hostile config.json fails with one
# line naming the JSON path instead of a traceback from deep inside create. A table and
# a 40-line walker instead of jsonschema: that import alone would double the runtime's
# start-up time. Where the schema allows values the kernel or the runtime cannot take,
# the bound is tighter and says why.

_U16, _U32, _U64 = ("i", 0, 2**16 - 1), ("i", 0, 2**32 - 1), ("i", 0, 2**64 - 1)
_I32, _I64 = ("i", -2**31, 2**31 - 1), ("i", -2**63, 2**63 - 1)
_ID = ("i", 0, 2**32 - 2)  # uid_t/gid_t; 2^32-1 is (uid_t)-1: "leave unchanged" to setresuid
_MAJOR, _MINOR = ("i", 0, 4095), ("i", 0, 2**20 - 1)  # the kernel's 12/20-bit dev_t
_STRS = ("l", "s")


def _is_path(v: str) -> bool:  # a newline in a path would forge lines of its messages
    return v.isprintable()


_PATH = ("f", _is_path, "a path without control characters")
_MAP = ("m", "s")


def _obj(props: dict[str, Any], *required: str) -> tuple[str, dict[str, Any], tuple[str, ...]]:
    return ("o", props, required)


def _enum(*values: str) -> tuple[str, frozenset[str]]:
    return ("e", frozenset(values))


def _is_rlimit_name(v: str) -> bool:
    return v.startswith("RLIMIT_") and len(v) > 7 and v[7:].isalpha() and v[7:].isupper()


def _is_page_size(v: str) -> bool:
    """^[1-9][0-9]*[KMG]B$ (it becomes part of a cgroup file name)."""
    digits = v[:-2]
    return v[-2:] in ("KB", "MB", "GB") and digits.isascii() and digits.isdigit() \
        and digits[0] != "0"


def _is_cap_name(v: str) -> bool:  # unknown names only warn: keep them printable
    return v.startswith("CAP_") and v.isascii() and v[4:].replace("_", "A").isalnum()


def _is_cpu_list(v: str) -> bool:
    return v.isascii() and all(c in "0123456789, -" for c in v)


_IDMAP = _obj({"containerID": _U32, "hostID": _U32, "size": _U32},
              "containerID", "hostID", "size")
_HOOKS = ("l", _obj({"path": _PATH, "args": _STRS, "env": _STRS,
                     # schema: integer >= 1; select() takes at most ~68 years of seconds
                     "timeout": ("i", 1, 2**31 - 1)}, "path"))
_SECCOMP_ACTION = _enum("SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD",
                        "SCMP_ACT_TRAP", "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW",
                        "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY")
_BLKIO_DEV = {"major": _MAJOR, "minor": _MINOR}
_THROTTLE = ("l", _obj({**_BLKIO_DEV, "rate": _U64}, "major", "minor"))
_CGROUP_DEV_NUM = ("i", -1, 2**20 - 1)  # -1 (or absent) is "*"

_PROCESS = _obj({
    "args": _STRS, "commandLine": "s", "cwd": "s", "env": _STRS, "terminal": "b",
    "consoleSize": _obj({"height": ("i", 0, 65535), "width": ("i", 0, 65535)},  # winsize
                        "height", "width"),
    "user": _obj({"uid": _ID, "gid": _ID, "umask": ("i", 0, 0o777),
                  "additionalGids": ("l", _ID), "username": "s"}),
    "capabilities": _obj({k: ("l", ("f", _is_cap_name, "a CAP_* name"))
                          for k in ("bounding", "permitted", "effective", "inheritable",
                                    "ambient")}),
    "apparmorProfile": "s", "selinuxLabel": "s", "noNewPrivileges": "b",
    "oomScoreAdj": ("i", -1000, 1000),  # the kernel refuses anything else
    "ioPriority": _obj({"class": _enum("IOPRIO_CLASS_RT", "IOPRIO_CLASS_BE",
                                       "IOPRIO_CLASS_IDLE"), "priority": _I32}, "class"),
    "scheduler": _obj({"policy": _enum("SCHED_OTHER", "SCHED_FIFO", "SCHED_RR", "SCHED_BATCH",
                                       "SCHED_ISO", "SCHED_IDLE", "SCHED_DEADLINE"),
                       "nice": _I32, "priority": _I32,
                       "flags": ("l", _enum("SCHED_FLAG_RESET_ON_FORK", "SCHED_FLAG_RECLAIM",
                                            "SCHED_FLAG_DL_OVERRUN", "SCHED_FLAG_KEEP_POLICY",
                                            "SCHED_FLAG_KEEP_PARAMS",
                                            "SCHED_FLAG_UTIL_CLAMP_MIN",
                                            "SCHED_FLAG_UTIL_CLAMP_MAX")), "runtime": _U64,
                       "deadline": _U64, "period": _U64}, "policy"),
    "rlimits": ("l", _obj({"type": ("f", _is_rlimit_name, "an RLIMIT_* name"),
                           "soft": _U64, "hard": _U64}, "type", "soft", "hard")),
    "execCPUAffinity": _obj({"initial": ("f", _is_cpu_list, "a CPU list"),
                             "final": ("f", _is_cpu_list, "a CPU list")}),
}, "cwd")

_LINUX = _obj({
    "devices": ("l", _obj({"type": _enum("c", "b", "u", "p"), "path": _PATH,
                           "fileMode": ("i", 0, 0o777), "major": _MAJOR, "minor": _MINOR,
                           "uid": _ID, "gid": _ID}, "type", "path")),
    "netDevices": ("m", _obj({"name": "s"})),
    "uidMappings": ("l", _IDMAP), "gidMappings": ("l", _IDMAP),
    "namespaces": ("l", _obj({"type": _enum("mount", "pid", "network", "uts", "ipc", "user",
                                            "cgroup", "time"), "path": _PATH}, "type")),
    "resources": _obj({
        "unified": _MAP,
        "devices": ("l", _obj({"allow": "b", "type": _enum("a", "c", "b"),
                               "major": _CGROUP_DEV_NUM, "minor": _CGROUP_DEV_NUM,
                               "access": "s"}, "allow")),
        "pids": _obj({"limit": _I64}, "limit"),
        "blockIO": _obj({"weight": _U16, "leafWeight": _U16,
                         "weightDevice": ("l", _obj({**_BLKIO_DEV, "weight": _U16,
                                                     "leafWeight": _U16}, "major", "minor")),
                         "throttleReadBpsDevice": _THROTTLE, "throttleWriteBpsDevice": _THROTTLE,
                         "throttleReadIOPSDevice": _THROTTLE,
                         "throttleWriteIOPSDevice": _THROTTLE}),
        "cpu": _obj({"cpus": ("f", _is_cpu_list, "a CPU list"),
                     "mems": ("f", _is_cpu_list, "a node list"), "period": _U64,
                     "quota": _I64, "burst": _U64, "realtimePeriod": _U64,
                     "realtimeRuntime": _I64, "shares": _U64, "idle": _I64}),
        "hugepageLimits": ("l", _obj({"pageSize": ("f", _is_page_size, "a size like 2MB"),
                                      "limit": _U64}, "pageSize", "limit")),
        "memory": _obj({"kernel": _I64, "kernelTCP": _I64, "limit": _I64, "reservation": _I64,
                        "swap": _I64, "swappiness": _U64, "disableOOMKiller": "b",
                        "useHierarchy": "b", "checkBeforeUpdate": "b"}),
        "network": _obj({"classID": _U32,
                         "priorities": ("l", _obj({"name": "s", "priority": _U32},
                                                  "name", "priority"))}),
        "rdma": ("m", _obj({"hcaHandles": _U32, "hcaObjects": _U32})),
    }),
    "cgroupsPath": _PATH,
    # The schema's four values, plus the recursive forms runc and podman also pass.
    "rootfsPropagation": _enum("private", "shared", "slave", "unbindable", "rprivate",
                               "rshared", "rslave", "runbindable"),
    "seccomp": _obj({
        "defaultAction": _SECCOMP_ACTION, "defaultErrnoRet": _U32,
        "flags": ("l", _enum("SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
                             "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                             "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV")),
        "listenerPath": "s", "listenerMetadata": "s",
        "architectures": ("l", ("f", lambda v: v.startswith("SCMP_ARCH_"), "an SCMP_ARCH_*")),
        "syscalls": ("l", _obj({
            "names": ("l1", "s"), "action": _SECCOMP_ACTION, "errnoRet": _U32,
            "args": ("l", _obj({"index": _U32, "value": _U64, "valueTwo": _U64,
                                "op": _enum("SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE",
                                            "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT",
                                            "SCMP_CMP_MASKED_EQ")},
                               "index", "value", "op"))}, "names", "action"))}, "defaultAction"),
    "sysctl": _MAP, "maskedPaths": ("l", _PATH), "readonlyPaths": ("l", _PATH), "mountLabel": "s",
    "intelRdt": _obj({"closID": "s", "schemata": _STRS, "l3CacheSchema": "s",
                      "memBwSchema": ("f", lambda v: v.startswith("MB:") and "\n" not in v,
                                      "MB:<schema>"), "enableMonitoring": "b"}),
    "memoryPolicy": _obj({"mode": _enum("MPOL_DEFAULT", "MPOL_BIND", "MPOL_INTERLEAVE",
                                        "MPOL_WEIGHTED_INTERLEAVE", "MPOL_PREFERRED",
                                        "MPOL_PREFERRED_MANY", "MPOL_LOCAL"),
                          "nodes": "s",
                          "flags": ("l", _enum("MPOL_F_NUMA_BALANCING", "MPOL_F_RELATIVE_NODES",
                                               "MPOL_F_STATIC_NODES"))}),
    "personality": _obj({"domain": _enum("LINUX", "LINUX32"), "flags": _STRS}),
    "timeOffsets": _obj({k: _obj({"secs": _I64, "nanosecs": _U32})
                         for k in ("boottime", "monotonic")}),
})

_CONFIG = _obj({
    "ociVersion": "s",
    "hooks": _obj({stage: _HOOKS for stage in STAGES}),
    "annotations": _MAP, "hostname": "s", "domainname": "s",
    "mounts": ("l", _obj({"source": _PATH, "destination": _PATH, "options": _STRS, "type": "s",
                          "uidMappings": ("l", _IDMAP), "gidMappings": ("l", _IDMAP)},
                         "destination")),
    "root": _obj({"path": _PATH, "readonly": "b"}, "path"),
    "process": _PROCESS,
    "linux": _LINUX,
}, "ociVersion")

_KINDS = {"s": (str, "a string"), "b": (bool, "a boolean"), "l": (list, "a list"),
          "l1": (list, "a non-empty list"), "m": (dict, "an object"), "o": (dict, "an object")}


def check_types(value: Any, spec: Any, where: str) -> None:
    """Raise InvalidDocument naming the first value in ``value`` that does not have the
    type (and range) ``spec`` gives; fields the table does not name are not checked.
    Every create walks the whole config: paths and messages are formatted for a value
    that fails only."""
    kind = spec if isinstance(spec, str) else spec[0]
    if kind in _LEAVES:
        if not _leaf_ok(value, spec):
            _require(False, where, _leaf_problem(value, spec))
        return
    pytype, what = _KINDS[kind]
    if type(value) is not pytype or (kind == "l1" and not value):
        _require(False, where, f"must be {what}")
    if kind == "o":
        for key in spec[2]:
            if key not in value:
                _require(False, f"{where}.{key}".lstrip("."), "is required")
        for key, sub in spec[1].items():
            if key in value:
                check_types(value[key], sub, f"{where}.{key}".lstrip("."))
        return
    sub = spec[1]
    leaf = (sub if isinstance(sub, str) else sub[0]) in _LEAVES
    if kind == "m":
        for key, item in value.items():
            if "\0" in key:
                _require(False, where, "keys must not contain a NUL character")
            if not (leaf and _leaf_ok(item, sub)):
                check_types(item, sub, f"{where}.{key}")
        return
    for i, item in enumerate(value):
        if not (leaf and _leaf_ok(item, sub)):
            check_types(item, sub, f"{where}[{i}]")


_LEAVES = frozenset(("s", "b", "i", "e", "f"))


def _leaf_ok(value: Any, spec: Any) -> bool:
    if spec == "s":  # paths, names and arguments all end at a NUL in the kernel
        return type(value) is str and "\0" not in value
    if spec == "b":
        return type(value) is bool
    kind = spec[0]
    if kind == "i":
        return type(value) is int and spec[1] <= value <= spec[2]
    if kind == "e":
        return type(value) is str and value in spec[1]
    return type(value) is str and "\0" not in value and spec[1](value)  # "f"


def _leaf_problem(value: Any, spec: Any) -> str:
    kind = spec if isinstance(spec, str) else spec[0]
    if kind == "i":
        return f"must be an integer from {spec[1]} to {spec[2]}"
    if kind == "e":
        return f"must be one of {', '.join(sorted(spec[1]))}"
    if kind == "f":
        return f"must be {spec[2]}"
    pytype, what = _KINDS[kind]
    return f"must be {what}" if type(value) is not pytype else \
        "must not contain a NUL character"
