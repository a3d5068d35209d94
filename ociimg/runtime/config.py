"""A typed, validated view of a bundle's config.json (runtime-spec config.md, config-linux.md).

Parsing is strict about the fields the runtime acts on and keeps the raw document for the
rest (hooks get the state, not the config). Errors name the JSON path, e.g.
``config.json: process.args: must be a non-empty list of strings``.
"""

from __future__ import annotations

import os

from ociimg.errors import InvalidDocument
from ociimg.runtime import jsonio
from ociimg.runtime.records import field, record

TYPE_CHECKING = False  # typing costs ~5 ms of every runtime start
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
    return parse_config(doc, bundle)


def parse_config(doc: Any, bundle: str | os.PathLike[str]) -> RuntimeConfig:
    bundle = os.fspath(bundle)
    _require(isinstance(doc, dict), "", "must be a JSON object")
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
        process=parse_process(doc["process"], "process") if doc.get("process") else None,
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
        out.append(Rlimit(r["type"], _int(r.get("soft"), f"{where}[{i}].soft"),
                          _int(r.get("hard"), f"{where}[{i}].hard")))
    return out


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
