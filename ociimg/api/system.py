"""System: ping, version, info, events, disk usage."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import os
import platform
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from ociimg.api.http import (
    API_VERSION,
    MIN_API_VERSION,
    ApiError,
    Routes,
    blocking,
    json_response,
    query_filters,
    root_of,
    standard_headers,
)
from ociimg.filters import labels_match
from ociimg.reference import familiar_name

routes = Routes()


def _ping_headers() -> dict[str, str]:
    # Builder-Version 1: the legacy builder protocol (what /build speaks); a client with
    # BuildKit as default falls back to it.
    return {**standard_headers(), "Builder-Version": "1", "Cache-Control": "no-cache, no-store, "
            "must-revalidate", "Pragma": "no-cache"}


@routes.get("/_ping")
async def ping(request: web.Request) -> web.Response:
    return web.Response(text="OK", headers=_ping_headers())


@routes.head("/_ping")
async def ping_head(request: web.Request) -> web.Response:
    return web.Response(headers={**_ping_headers(), "Content-Type": "text/plain; charset=utf-8",
                                 "Content-Length": "0"})


@routes.get("/version")
async def version(request: web.Request) -> web.Response:
    from ociimg import __version__

    uname = os.uname()
    body = {
        "Platform": {"Name": "ociimg"},
        "Components": [{"Name": "Engine", "Version": __version__,
                        "Details": {"ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION,
                                    "Os": "linux", "Arch": _go_arch(), "KernelVersion":
                                    uname.release, "Experimental": "false"}}],
        "Version": __version__,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": f"python{platform.python_version()}",
        "Os": "linux",
        "Arch": _go_arch(),
        "KernelVersion": uname.release,
        "BuildTime": "",
    }
    return json_response(body)


def _go_arch() -> str:
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(
        machine, machine)


# --- info -----------------------------------------------------------------------------


@routes.get("/info")
async def info(request: web.Request) -> web.Response:
    return json_response(await blocking(_info, root_of(request)))


def _info(root: Path) -> dict[str, Any]:
    from ociimg import __version__
    states = _container_states(root)
    cg = _cgroup_features()
    uname = os.uname()
    return {
        "ID": _server_id(root),
        "Containers": sum(states.values()),
        "ContainersRunning": states["running"],
        "ContainersPaused": states["paused"],
        "ContainersStopped": states["stopped"],
        "Images": _image_count(root),
        "Driver": "overlay2",
        "DriverStatus": [["Backing Filesystem", _fs_type(root)], ["Supports d_type", "true"],
                         ["Native Overlay Diff", "true"], ["userxattr", "false"]],
        "SystemStatus": None,
        "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "null"],
                    "Authorization": None, "Log": ["json-file"]},
        **cg,
        "KernelMemory": False, "KernelMemoryTCP": False,
        "IPv4Forwarding": _sysctl("net/ipv4/ip_forward"),
        "BridgeNfIptables": _sysctl("net/bridge/bridge-nf-call-iptables"),
        "BridgeNfIp6tables": _sysctl("net/bridge/bridge-nf-call-ip6tables"),
        "Debug": False, "NFd": _count_fds(), "NGoroutines": threading.active_count(),
        "SystemTime": datetime.datetime.now(datetime.UTC).isoformat(),
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "NEventsListener": _LISTENERS[0],
        "KernelVersion": uname.release,
        "OperatingSystem": _os_name(),
        "OSVersion": _os_release().get("VERSION_ID", ""),
        "OSType": "linux",
        "Architecture": uname.machine,
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {
            "AllowNondistributableArtifactsCIDRs": [],
            "AllowNondistributableArtifactsHostnames": [],
            # Plain HTTP is what ociimg speaks to loopback registries (docker's default too).
            "InsecureRegistryCIDRs": ["127.0.0.0/8"],
            "IndexConfigs": {"docker.io": {"Name": "docker.io", "Mirrors": [], "Secure": True,
                                           "Official": True}},
            "Mirrors": []},
        "NCPU": len(os.sched_getaffinity(0)),
        "MemTotal": _mem_total(),
        "GenericResources": None,
        "DockerRootDir": str(root),
        "HttpProxy": "", "HttpsProxy": "", "NoProxy": "",
        "Name": socket.gethostname(),
        "Labels": [],
        "ExperimentalBuild": False,
        "ServerVersion": __version__,
        "Runtimes": {"ociimg": {"path": "ociimg-runtime"}},
        "DefaultRuntime": "ociimg",
        "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive",
                  "ControlAvailable": False, "Error": "", "RemoteManagers": None},
        # Containers are their monitors': they outlive a stopped server (dockerd's
        # live-restore, always on here).
        "LiveRestoreEnabled": True,
        "Isolation": "",
        "InitBinary": "",
        "ContainerdCommit": {"ID": "", "Expected": ""},
        "RuncCommit": {"ID": "", "Expected": ""},
        "InitCommit": {"ID": "", "Expected": ""},
        "SecurityOptions": ["name=seccomp,profile=default"],
        # Empty: the CLI then derives its warnings from the booleans above, which say
        # what this host really lacks.
        "Warnings": [],
    }


def _container_states(root: Path) -> dict[str, int]:
    from ociimg.containers import ContainerManager
    from ociimg.errors import OciimgError
    out = {"running": 0, "paused": 0, "stopped": 0}
    manager = ContainerManager(root)
    for c in manager.list():
        try:
            status = manager.status(c).status
        except OciimgError:
            status = "unknown"
        key = {"running": "running", "restarting": "running", "paused": "paused"}.get(
            status, "stopped")
        out[key] += 1
    return out


def _image_count(root: Path) -> int:
    from ociimg.store import Store
    if not (root / "store" / "index.json").is_file():
        return 0
    return len({d.digest for _n, d in Store(root / "store").refs()})


def _server_id(root: Path) -> str:
    """Stable per host and root, written nowhere (dockerd keeps a random one on disk)."""
    try:
        machine = Path("/etc/machine-id").read_text().strip()
    except OSError:
        machine = socket.gethostname()
    return str(uuid.UUID(hashlib.sha256(f"{machine}:{root}".encode()).hexdigest()[:32]))


def _cgroup_features() -> dict[str, Any]:
    """What the host's cgroups let the runtime limit (dockerd's sysinfo booleans)."""
    from ociimg.runtime.cgroups.detect import read_host_layout
    layout = read_host_layout()
    if layout.mode == "v2":
        assert layout.unified is not None
        base = layout.unified.mountpoint
        try:
            have = set(Path(base, "cgroup.controllers").read_text().split())
        except OSError:
            have = set()
        memory, cpu = "memory" in have, "cpu" in have
        return {"CgroupVersion": "2", "MemoryLimit": memory, "SwapLimit": memory,
                "OomKillDisable": False, "CpuCfsPeriod": cpu, "CpuCfsQuota": cpu,
                "CPUShares": cpu, "CPUSet": "cpuset" in have, "PidsLimit": "pids" in have}

    def has(controller: str, name: str) -> bool:
        mount = layout.v1.get(controller)
        return mount is not None and os.path.exists(os.path.join(mount.mountpoint, name))
    return {"CgroupVersion": "1", "MemoryLimit": has("memory", "memory.limit_in_bytes"),
            "SwapLimit": has("memory", "memory.memsw.limit_in_bytes"),
            "OomKillDisable": has("memory", "memory.oom_control"),
            "CpuCfsPeriod": has("cpu", "cpu.cfs_period_us"),
            "CpuCfsQuota": has("cpu", "cpu.cfs_quota_us"),
            "CPUShares": has("cpu", "cpu.shares"), "CPUSet": has("cpuset", "cpuset.cpus"),
            "PidsLimit": has("pids", "pids.max")}


def _sysctl(name: str) -> bool:
    try:
        return Path("/proc/sys", name).read_text().strip() == "1"
    except OSError:
        return False


def _os_release() -> dict[str, str]:
    out = {}
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, eq, value = line.partition("=")
        if eq:
            out[key.strip()] = value.strip().strip('"')
    return out


def _os_name() -> str:
    return _os_release().get("PRETTY_NAME", "Linux")


def _mem_total() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _count_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


def _fs_type(root: Path) -> str:
    """The filesystem the root is on (the longest mount point above it)."""
    from ociimg.oskit.mountinfo import read_mountinfo
    best, fstype = "", "unknown"
    target = str(root)
    for m in read_mountinfo():
        point = m.mount_point
        if (target == point or target.startswith(point.rstrip("/") + "/")) \
                and len(point) >= len(best):
            best, fstype = point, m.fstype
    return {"ext4": "extfs", "ext3": "extfs", "ext2": "extfs"}.get(fstype, fstype)


# --- events ---------------------------------------------------------------------------

# dockerd's event filter keys; the swarm ones (node, service, secret, config) never match.
_EVENT_FILTERS = frozenset({"type", "event", "container", "image", "label", "network",
                            "volume", "daemon", "plugin", "scope", "node", "service",
                            "secret", "config"})
_EVENT_TYPES = frozenset({"container", "image", "volume", "network", "daemon", "plugin",
                          "node", "service", "secret", "config", "builder"})
_FOLLOW_TICK = 0.25     # how often a follower looks at the log's size (an fstat)
_CHUNK = 1 << 16
_MAX_LINE = 1 << 20     # a longer "line" is garbage: dropped, never buffered whole
_LISTENERS = [0]        # open event streams of this server process (info's NEventsListener)


@routes.get("/events")
async def events(request: web.Request) -> web.StreamResponse:
    now = time.time()
    since = parse_api_time(request.query.get("since"), "since", now)
    until = parse_api_time(request.query.get("until"), "until", now)
    if since is not None and until is not None and since > until:
        raise ApiError(400, f"`since` time ({request.query['since'][:40]}) cannot be after "
                            f"`until` time ({request.query['until'][:40]})")
    filters = query_filters(request)
    for key, values in filters.items():
        if key not in _EVENT_FILTERS:
            raise ApiError(400, f"invalid filter '{key}'")
        if key == "type" and (bad := [v for v in values if v not in _EVENT_TYPES]):
            raise ApiError(400, f"Invalid filter 'type={bad[0]}'")
    from ociimg.containers.eventlog import events_path
    path = events_path(root_of(request))
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)  # the CLI waits for the headers before anything else

    def gone() -> bool:
        return request.transport is None or request.transport.is_closing()

    async def send(doc: dict[str, Any]) -> None:
        # write() waits while the client's socket is full: a client that never reads
        # holds the server to a socket buffer's worth, not the whole log.
        await response.write(json.dumps(_legacy(doc), separators=(",", ":")).encode()
                             + b"\n")

    # No since and no until: only what happens from now on (dockerd); else the log
    # from since (or its start) up to until.
    _LISTENERS[0] += 1
    try:
        await _follow(path, from_end=since is None and until is None, since=since,
                      until=until, match=lambda ev: _event_matches(filters, ev),
                      send=send, gone=gone)
        await response.write_eof()
    except ConnectionError:  # the client went away: its stream ends here
        pass
    finally:
        _LISTENERS[0] -= 1
    return response


_GO_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                   "h": 3600.0}


def parse_api_time(text: str | None, name: str, now: float) -> float | None:
    """dockerd's timestamps (timetypes.GetTimestamp): Unix seconds with an optional
    fraction (the CLI's form), RFC 3339, or a Go duration before ``now`` ("24h")."""
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        if len(text) < 64 and _GO_DURATION.fullmatch(text):
            value = now - sum(float(n) * _DURATION_UNITS[u] for n, u in
                              re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text))
        else:
            try:
                value = rfc3339(text)
            except ValueError:
                raise ApiError(400, f"invalid value for {name}: {text[:100]!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ApiError(400, f"invalid value for {name}: {text[:100]!r}")
    return value


def rfc3339(text: str) -> float:
    """Seconds of an RFC 3339 time (nanoseconds and offsets allowed; no zone: UTC)."""
    stamp = datetime.datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", text))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.UTC)
    return stamp.timestamp()


async def _follow(path: str, *, from_end: bool, since: float | None, until: float | None,
                  match: Callable[[dict[str, Any]], bool],
                  send: Callable[[dict[str, Any]], Any], gone: Callable[[], bool]) -> None:
    """Replay the event log, then follow it (when until is unset or still ahead).
    The log is appended to by the monitors and truncated when large: a size below our
    offset means it started again."""
    fd = await blocking(_open_log, path)
    # From the end: of the log as it is now; one made later is new from its start.
    offset, buf = os.fstat(fd).st_size if fd is not None and from_end else 0, b""
    try:
        while True:
            if fd is None:
                fd = await blocking(_open_log, path)
            size = os.fstat(fd).st_size if fd is not None else 0  # metadata of an open fd
            if size < offset:
                offset, buf = 0, b""
            if fd is not None and size > offset:
                chunk = await blocking(os.pread, fd, _CHUNK, offset)
                offset += len(chunk)
                *lines, buf = (buf + chunk).split(b"\n")
                if len(buf) > _MAX_LINE:
                    buf = b""
                for line in lines:
                    ev = _parse_event(line)
                    if ev is None:
                        continue
                    t = ev["timeNano"] / 1e9
                    if (since is not None and t < since) or (until is not None and t > until):
                        continue
                    if match(ev):
                        await send(ev)
                continue
            if (until is not None and time.time() >= until) or gone():
                return
            await asyncio.sleep(_FOLLOW_TICK)
    finally:
        if fd is not None:
            os.close(fd)


def _open_log(path: str) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None


def _parse_event(line: bytes) -> dict[str, Any] | None:
    try:
        ev = json.loads(line)
    except ValueError:
        return None
    if not isinstance(ev, dict) or not isinstance(ev.get("Actor"), dict):
        return None
    attrs = ev["Actor"].get("Attributes")
    if not isinstance(attrs, dict):
        return None
    ev["Actor"]["Attributes"] = {str(k): str(v) for k, v in attrs.items()}
    if not isinstance(ev.get("timeNano"), int):
        return None
    ev.setdefault("Type", "container")
    ev["Action"] = str(ev.get("Action") or "")
    return ev


def _legacy(ev: dict[str, Any]) -> dict[str, Any]:
    """docker's message: the pre-1.22 status/id/from beside Type/Action/Actor (compose
    1.29 skips events without status)."""
    actor = ev["Actor"]
    out: dict[str, Any] = {}
    if ev["Type"] == "container":
        if "image" in actor["Attributes"]:  # as the user names it: busybox:latest
            actor["Attributes"]["image"] = familiar_name(actor["Attributes"]["image"])
        out = {"status": ev["Action"], "id": actor.get("ID"),
               "from": actor["Attributes"].get("image", "")}
    elif ev["Type"] == "image":
        out = {"status": ev["Action"], "id": actor.get("ID")}
    return {**out, "Type": ev["Type"], "Action": ev["Action"],
            "Actor": {"ID": actor.get("ID") or "", "Attributes": actor["Attributes"]},
            "scope": "local", "time": ev["timeNano"] // 1_000_000_000,
            "timeNano": ev["timeNano"]}


def _event_matches(filters: dict[str, list[str]], ev: dict[str, Any]) -> bool:
    """dockerd's events filter (daemon/events/filter.go): each given key must match."""
    attrs = ev["Actor"]["Attributes"]
    actor_id = str(ev["Actor"].get("ID") or "")
    kind = ev["Type"]

    def exact(key: str, *values: str) -> bool:
        return key not in filters or any(v in filters[key] for v in values)

    def fuzzy(key: str, *values: str) -> bool:
        return key not in filters or any(v.startswith(f) for f in filters[key]
                                         for v in values if v)

    action = ev["Action"]
    image = familiar_name(attrs.get("name" if kind == "image" else "image", ""))
    return (exact("event", action, action.partition(":")[0]) and exact("type", kind)
            and exact("scope", "local") and exact("daemon")
            and all(fuzzy(k, actor_id, attrs.get("name", "")) if kind == k else k not in
                    filters for k in ("container", "network", "volume"))
            and exact("image", actor_id, image, _strip_tag(actor_id), _strip_tag(image),
                      attrs.get("image", ""))
            and ("plugin" not in filters) and labels_match(attrs, filters.get("label")))


def _strip_tag(name: str) -> str:
    base = name.partition("@")[0]
    colon = base.rfind(":")
    return base[:colon] if colon > base.rfind("/") else base


# --- system/df ------------------------------------------------------------------------


@routes.get("/system/df")
async def system_df(request: web.Request) -> web.Response:
    return json_response(await blocking(_disk_usage, root_of(request)))


def _disk_usage(root: Path) -> dict[str, Any]:
    """docker's shape around commands.system.disk_usage's totals: per-item lists the CLI
    sums (their sizes are the same measurements, item by item)."""
    from ociimg.commands.system import disk_usage
    from ociimg.containers import ContainerManager
    images_row = disk_usage(root)[0]
    manager = ContainerManager(root)
    containers = manager.list()
    return {"LayersSize": images_row.size,
            "Images": _df_images(root, containers),
            "Containers": [_df_container(manager, c) for c in containers],
            "Volumes": _df_volumes(root),
            "BuildCache": _df_build_cache(root),
            "BuilderSize": 0}


def _df_images(root: Path, containers: list[Any]) -> list[dict[str, Any]]:
    """Per image: its blobs and unpacked snapshots; SharedSize what other images hold
    too (the CLI's reclaimable: LayersSize less what used images hold alone)."""
    from ociimg.commands.maintenance import image_chain_ids
    from ociimg.fsutil import tree_size
    from ociimg.layers.snapshots import SnapshotStore
    from ociimg.store import Store
    if not (root / "store" / "index.json").is_file():
        return []
    store = Store(root / "store")
    snapshots = SnapshotStore(root / "snapshots")
    by_top: dict[str, tuple[Any, list[str]]] = {}
    for name, desc in store.refs():
        by_top.setdefault(str(desc.digest), (desc, []))[1].append(name)
    parts: dict[str, dict[str, int]] = {}  # image → {blob digest or chain id: bytes}
    config_of: dict[str, str] = {}
    for top, (desc, names) in by_top.items():
        walked = list(store.walk(desc, on_error=lambda _d, _e: None))
        own = {str(d.digest): d.size for d in walked if store.has_blob(d.digest)}
        for chain in image_chain_ids(store, [], [(names[0], desc)]):
            path = snapshots.path / chain.hex
            if path.is_dir():
                own[f"chain:{chain}"] = tree_size(path)
        parts[top] = own
        config_of[top] = next((str(d.digest) for d in walked if "config" in d.media_type),
                              top)
    holders: dict[str, int] = {}
    for own in parts.values():
        for key in own:
            holders[key] = holders.get(key, 0) + 1
    out = []
    for top, (_desc, names) in by_top.items():
        own = parts[top]
        used = sum(1 for c in containers if c.meta.get("image") in names
                   or c.meta.get("digest") == top)
        tags = [familiar_name(n) for n in names if not n.startswith("sha256:") and "@" not in n]
        digests = [familiar_name(n) for n in names if "@" in n]
        size = sum(own.values())
        out.append({"Id": config_of[top], "ParentId": "", "RepoTags": tags,
                    "RepoDigests": digests, "Created": _image_created(store, config_of[top]),
                    "Size": size, "VirtualSize": size,
                    "SharedSize": sum(s for k, s in own.items() if holders[k] > 1),
                    "Labels": {}, "Containers": used})
    return out


def _image_created(store: Any, config: str) -> int:
    """The config's ``created`` in seconds (0: none, or not a time)."""
    from ociimg.errors import OciimgError
    from ociimg.spec import MAX_CONFIG_BYTES
    try:
        created = json.loads(store.read_blob(config, limit=MAX_CONFIG_BYTES)).get("created")
        return int(rfc3339(str(created))) if created else 0
    except (OciimgError, OSError, ValueError, AttributeError):
        return 0


def _df_container(manager: Any, c: Any) -> dict[str, Any]:
    from ociimg.errors import OciimgError
    from ociimg.fsutil import tree_size
    from ociimg.layers.snapshots import SnapshotStore
    try:
        status = manager.status(c).status
    except OciimgError:
        status = "unknown"
    state = {"configured": "created", "creating": "created", "stopped": "exited",
             "unknown": "dead"}.get(status, status)
    upper = SnapshotStore(manager.root / "snapshots").active_dir(c.snapshot_key)
    return {"Id": c.id, "Names": ["/" + c.name], "Image": familiar_name(c.meta.get("image") or ""),
            "ImageID": c.meta.get("digest") or "",
            "Command": " ".join(c.meta.get("command") or []),
            "Created": int(_created(c.meta.get("created"))), "State": state, "Status": state,
            "SizeRw": tree_size(upper) + tree_size(c.path / "log.jsonl"), "SizeRootFs": 0,
            "Labels": c.meta.get("labels") or {}, "Mounts": []}


def _created(stamp: Any) -> float:
    from ociimg.containers.logfile import parse_time
    try:
        return parse_time(str(stamp))
    except ValueError:
        return 0.0


def _df_volumes(root: Path) -> list[dict[str, Any]]:
    from ociimg.containers.volumes import VolumeStore
    from ociimg.fsutil import tree_size
    store = VolumeStore(root)
    items = store.list()
    users = store.users() if items else {}
    return [{**volume_document(v), "UsageData": {"Size": tree_size(v.path),
                                                  "RefCount": len(users.get(v.name, []))}}
            for v in items]


def volume_document(v: Any) -> dict[str, Any]:
    """A volume as docker shows it (inspect, list, df)."""
    return {"Name": v.name, "Driver": "local", "Mountpoint": str(v.data),
            "CreatedAt": v.meta.get("created"), "Labels": v.meta.get("labels") or {},
            "Scope": "local", "Options": {}}


def _df_build_cache(root: Path) -> list[dict[str, Any]]:
    from ociimg.build.cache import CACHE_DIR
    base = root / CACHE_DIR
    out = []
    for path in sorted(base.rglob("*.json")) if base.is_dir() else []:
        try:
            st = path.stat()
        except OSError:
            continue
        stamp = datetime.datetime.fromtimestamp(st.st_mtime, datetime.UTC).isoformat()
        out.append({"ID": path.stem[:25], "Parent": "", "Type": "regular",
                    "Description": "build step cache", "InUse": False, "Shared": False,
                    "Size": st.st_size, "CreatedAt": stamp, "LastUsedAt": stamp,
                    "UsageCount": 1})
    return out
