"""Containers: create, start, wait, inspect, list, stop, kill, restart, pause, remove,
top, stats, rename, prune — each mapped onto ContainerManager.

The containers are their monitors': create makes one whose stdio the monitor owns (its
log, its pty with Tty, its stdin kept open for attachers with OpenStdin), and start never
hands it anything of the server's, so a container outlives ``ociimg serve``.

Calls that may take long (stop's grace period, a wait, a restart) run on threads of their
own, never on the event loop nor the shared worker pool, which a few ``docker wait``s
would otherwise fill.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ociimg import errors
from ociimg.api.http import (
    ApiError,
    Routes,
    blocking,
    find_container,
    json_response,
    manager,
    own_thread,
    query_bool,
    query_filters,
    query_int,
    read_json,
    root_of,
    settle,
    standard_headers,
)
from ociimg.filters import labels_match

routes = Routes()

_ACTIVE = ("running", "paused", "restarting")
_STOPPED = ("exited", "stopped", "configured", "unknown", "creating")
_CREATE_BODY_LIMIT = 1 << 20


async def _container(request: web.Request) -> Any:
    return await blocking(find_container, request, request.match_info["name"])


def _not_modified() -> web.Response:
    return web.Response(status=304)


# Create -----------------------------------------------------------------------------------
@routes.post("/containers/create")
async def create(request: web.Request) -> web.StreamResponse:
    from ociimg.api.convert import create_request
    body = await read_json(request, _CREATE_BODY_LIMIT)
    name = request.query.get("name") or None
    platform = request.query.get("platform") or None
    try:
        req = await blocking(create_request, body, name)
        c = await blocking(_create, request, req, platform)
    except errors.InvalidDocument as exc:  # a value the bundle converter refused
        raise ApiError(400, _with_hint(exc)) from None
    return json_response({"Id": c.id, "Warnings": req.warnings}, 201)


def _create(request: web.Request, req: Any, platform: str | None) -> Any:
    from ociimg.api.convert import API_RECORD
    from ociimg.containers import store
    mgr = manager(request)
    if req.options.name:
        _check_name_free(mgr, req.options.name)
    image = _find_image(request, req.image, platform)
    from ociimg.events import NullProgress

    class Warnings(NullProgress):  # what create would print: the response's Warnings
        def log(self, message: str) -> None:
            req.warnings.append(message.removeprefix("warning: "))
    try:
        c = mgr.create(image, req.options, Warnings())
    except errors.AlreadyExists:
        if req.options.name:
            _check_name_free(mgr, req.options.name)
        raise
    record = {**req.record, "ImageID": f"sha256:{image.manifest.config.digest.hex}",
              "Config": _with_image_defaults(req.record["Config"], image.config.config)}
    store.write_json(c.path / API_RECORD, record)
    return c


def _with_image_defaults(config: dict[str, Any], image: Any) -> dict[str, Any]:
    """Config as dockerd shows it: the image's Env under the request's, its Cmd unless
    the request gives Cmd or an Entrypoint, its WorkingDir, User, ports and volumes."""
    image = image if isinstance(image, dict) else {}
    out = dict(config)
    env = {e.partition("=")[0]: e for e in image.get("Env") or [] if isinstance(e, str)}
    env.update({e.partition("=")[0]: e for e in config.get("Env") or []})
    out["Env"] = list(env.values())
    if config.get("Entrypoint") is None:
        out["Entrypoint"] = image.get("Entrypoint")
        if config.get("Cmd") is None:
            out["Cmd"] = image.get("Cmd")
    for key in ("WorkingDir", "User"):
        out[key] = config.get(key) or image.get(key) or ""
    for key in ("ExposedPorts", "Volumes"):
        merged = {**(image.get(key) or {}), **(config.get(key) or {})}
        out[key] = merged or None
    return out


def _check_name_free(mgr: Any, name: str) -> None:
    """dockerd's 409 text for a name in use; and a 409 for a name that is another
    container's short id or a longer prefix of its id."""
    for c in mgr.list():
        if c.name == name:
            raise ApiError(409, f'Conflict. The container name "/{name}" is already in use '
                                f'by container "{c.id}". You have to remove (or rename) that '
                                "container to be able to reuse that name.")
        # Lookups take a name before an id prefix: a name that is ``c``'s short id (12
        # characters, what ps shows and people paste) or more would take commands meant
        # for ``c``. Shorter hex-looking names ("c18", "cafe") stay allowed, as dockerd
        # allows them: one in a few thousand containers would refuse them by chance.
        if len(name) >= 12 and c.id.startswith(name):
            raise ApiError(409, f'Conflict. The container name "/{name}" is a prefix of the '
                                f'id of container "{c.id}": choose another name.')


def _find_image(request: web.Request, text: str, platform: str | None) -> Any:
    """The image in the server's store (never pulled here: the CLI pulls through
    /images/create on our 404 and retries); by name, digest or image id."""
    from ociimg.containers.resolved import ResolvedImage
    from ociimg.spec import Platform
    from ociimg.store import Store
    from ociimg.transports import find_store_name
    store = Store.open(root_of(request))
    want = Platform.parse(platform) if platform else Platform.host()
    name = None
    if not text.startswith(("oci:", "oci-archive:", "docker-archive:", "dir:", "docker:")):
        try:
            name = find_store_name(store, text)
        except errors.OciimgError:
            name = None
        if name is None:
            name = _by_image_id(store, text, want)
    if name is None:
        shown = text if ("@" in text or ":" in text.rsplit("/", 1)[-1]) else f"{text}:latest"
        raise ApiError(404, f"No such image: {shown}")
    desc, manifest, config = store.image_for(name, want)
    return ResolvedImage(store, name, desc, manifest, config)


def _by_image_id(store: Any, text: str, want: Any) -> str | None:
    """A name of the image whose config digest (docker's image id) ``text`` is or starts."""
    hexpart = text.removeprefix("sha256:").lower()
    if len(hexpart) < 12 or not all(ch in "0123456789abcdef" for ch in hexpart):
        return None
    for name, _ in store.refs():
        try:
            _, manifest, _ = store.image_for(name, want)
        except errors.OciimgError:
            continue
        if manifest.config.digest.hex.startswith(hexpart):
            return name
    return None


# Start, stop, kill, restart, pause ----------------------------------------------------------
@routes.post("/containers/{name}/start")
async def start(request: web.Request) -> web.StreamResponse:
    c = await _container(request)
    mgr = manager(request)
    status = (await blocking(mgr.status, c)).status
    if status in ("running", "restarting"):
        return _not_modified()
    if status == "paused":
        raise ApiError(409, "cannot start a paused container, try unpause instead")
    from ociimg.containers.manager import ContainerRunning
    try:
        await own_thread(_start, mgr, c)
    except ContainerRunning:  # another client started it since the status above
        return _not_modified()
    return web.Response(status=204)


def _start(mgr: Any, c: Any) -> None:
    """Detached: the monitor owns its stdio. Errors keep the words the docker CLI turns
    into exit codes 127 and 126 (cli/command/container/run.go)."""
    try:
        mgr.start(c)
    except errors.ExecutableNotFound as exc:
        if "executable file not found" not in exc.message and \
                "no such file or directory" not in exc.message:
            exc.message += ": executable file not found in $PATH"
        raise ApiError(400, _with_hint(exc)) from None
    except errors.NotExecutable as exc:
        if "permission denied" not in exc.message and "is a directory" not in exc.message:
            exc.message += ": permission denied"
        raise ApiError(400, _with_hint(exc)) from None


def _with_hint(exc: errors.OciimgError) -> str:
    return f"{exc.message} ({exc.hint})" if exc.hint else exc.message


@routes.post("/containers/{name}/stop")
async def stop(request: web.Request) -> web.StreamResponse:
    c = await _container(request)
    timeout = _timeout(request)
    mgr = manager(request)
    if (await blocking(mgr.status, c)).status not in _ACTIVE:
        return _not_modified()
    await own_thread(mgr.stop, c, timeout)
    return web.Response(status=204)


def _timeout(request: web.Request) -> float | None:
    value = query_int(request, "t")
    if value is None:
        return None
    if value < 0:  # docker: -1 waits forever; we wait a day
        return 86400.0
    return float(min(value, 86400))


@routes.post("/containers/{name}/kill")
async def kill(request: web.Request) -> web.StreamResponse:
    from ociimg.containers.options import parse_signal
    c = await _container(request)
    text = request.query.get("signal") or "SIGKILL"
    try:
        sig = parse_signal(text)
    except errors.OciimgError:
        raise ApiError(400, f"Invalid signal: {text}") from None
    if not 0 < sig < 65:
        raise ApiError(400, f"Invalid signal: {text}")
    mgr = manager(request)
    if (await blocking(mgr.status, c)).status not in _ACTIVE:
        raise ApiError(409, f"Cannot kill container: {request.match_info['name']}: "
                            f"Container {c.id} is not running")
    await blocking(mgr.kill_by_user, c, sig)
    return web.Response(status=204)


@routes.post("/containers/{name}/restart")
async def restart(request: web.Request) -> web.StreamResponse:
    c = await _container(request)
    timeout = _timeout(request)
    mgr = manager(request)

    def run() -> None:
        mgr.stop(c, timeout)
        _start(mgr, mgr.get(c.id))
    await own_thread(run)
    return web.Response(status=204)


@routes.post("/containers/{name}/pause")
async def pause(request: web.Request) -> web.StreamResponse:
    c = await _container(request)
    mgr = manager(request)
    status = (await blocking(mgr.status, c)).status
    if status == "paused":
        raise ApiError(409, f"Container {c.id} is already paused")
    if status != "running":
        raise ApiError(409, f"Container {c.id} is not running")
    await blocking(mgr.pause, c)
    return web.Response(status=204)


@routes.post("/containers/{name}/unpause")
async def unpause(request: web.Request) -> web.StreamResponse:
    c = await _container(request)
    mgr = manager(request)
    if (await blocking(mgr.status, c)).status != "paused":
        raise ApiError(409, f"Container {c.id} is not paused")
    await blocking(mgr.resume, c)
    return web.Response(status=204)


# Remove, rename, prune --------------------------------------------------------------------
@routes.delete("/containers/{name}")
async def remove(request: web.Request) -> web.StreamResponse:
    c = await _container(request)
    force, volumes = query_bool(request, "force"), query_bool(request, "v")
    if query_bool(request, "link"):
        raise ApiError(400, "links are not supported by ociimg serve")
    mgr = manager(request)
    if not force and (await blocking(mgr.status, c)).status in _ACTIVE:
        raise ApiError(409, f"You cannot remove a running container {c.id}. Stop the "
                            "container before attempting removal or force remove")
    await own_thread(_remove, mgr, c, force, volumes)
    return web.Response(status=204)


def _remove(mgr: Any, c: Any, force: bool, volumes: bool) -> None:
    try:
        mgr.remove(c, force, volumes=volumes)
    except errors.ContainerNotFound:
        pass  # its monitor removed it meanwhile (AutoRemove)


@routes.post("/containers/{name}/rename")
async def rename(request: web.Request) -> web.StreamResponse:
    from ociimg.api.convert import _name
    c = await _container(request)
    new = _name(request.query.get("name") or "")
    if not new:
        raise ApiError(400, "Neither old nor new names may be empty")
    mgr = manager(request)

    def run() -> None:
        _check_name_free(mgr, new)
        mgr.rename(c, new)
    await blocking(run)
    return web.Response(status=204)


@routes.post("/containers/prune")
async def prune(request: web.Request) -> web.StreamResponse:
    filters = query_filters(request, ("until", "label", "label!"))
    until = _until(filters.get("until"))
    mgr = manager(request)

    def run() -> dict[str, Any]:
        from ociimg.containers.listing import writable_size
        deleted, reclaimed = [], 0
        for c in mgr.list():
            if mgr.status(c).status not in _STOPPED or c.meta.get("createdNs", 0) > until:
                continue
            if not labels_match(c.meta.get("labels") or {}, filters.get("label"),
                                filters.get("label!")):
                continue
            reclaimed += writable_size(mgr, c)
            try:
                mgr.remove(c)
            except errors.OciimgError:
                continue
            deleted.append(c.id)
        return {"ContainersDeleted": deleted or None, "SpaceReclaimed": reclaimed}
    return json_response(await own_thread(run))


def _until(values: list[str] | None) -> int:
    """filters until=: Unix seconds, an RFC 3339 time or a Go duration ago (10m) → ns."""
    if not values:
        return 1 << 63
    import re
    text = values[-1]
    units = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)", text)
    if parts and "".join(a + b for a, b in parts) == text:
        return int((time.time() - sum(float(a) * units[b] for a, b in parts)) * 1e9)
    try:
        return int(float(text) * 1e9)
    except ValueError:
        pass
    from ociimg.containers.logfile import parse_time
    try:
        return int(parse_time(text if text.endswith("Z") else text + "Z") * 1e9)
    except ValueError:
        raise ApiError(400, f"invalid filter 'until={text}'") from None


# Wait ---------------------------------------------------------------------------------------
_CONDITIONS = ("not-running", "next-exit", "removed")


@routes.post("/containers/{name}/wait")
async def wait(request: web.Request) -> web.StreamResponse:
    """The waiter is in place before the 200's headers go out (flushed at once): the
    docker CLI calls this before start and starts once it has the headers."""
    condition = request.query.get("condition") or "not-running"
    if condition not in _CONDITIONS:
        raise ApiError(400, f"invalid condition: {condition!r}")
    c = await _container(request)
    mgr = manager(request)
    cancel = threading.Event()
    loop = asyncio.get_running_loop()
    registered = loop.create_future()
    waiter = asyncio.ensure_future(own_thread(_wait_code, mgr, c, condition, cancel,
                                               lambda: loop.call_soon_threadsafe(
                                                   settle, registered, True)))
    waiter.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved
    await asyncio.wait([registered, waiter], return_when=asyncio.FIRST_COMPLETED)
    if waiter.done() and waiter.exception() is not None:
        raise waiter.exception()  # type: ignore[misc]
    response = web.StreamResponse(status=200, headers={**standard_headers(),
                                                       "Content-Type": "application/json"})
    await response.prepare(request)
    try:
        while not waiter.done():
            await asyncio.wait([waiter], timeout=1.0)
            if request.transport is None or request.transport.is_closing():
                cancel.set()  # the client left: so does the waiting thread
                return response
        try:
            code, error = waiter.result(), None
        except (errors.OciimgError, OSError) as exc:  # the 200 is out: in the body
            code, error = -1, {"Message": getattr(exc, "message", None) or str(exc)}
        await response.write(json.dumps({"StatusCode": code, "Error": error}).encode()
                             + b"\n")
        await response.write_eof()
    except (ConnectionResetError, asyncio.CancelledError):
        cancel.set()
        raise
    return response


class _Cancelled(Exception):
    pass


def _wait_code(mgr: Any, c: Any, condition: str, cancel: threading.Event,
               registered: Callable[[], None]) -> int:
    """The exit code ``condition`` waits for. A container not yet started is watched
    until it is (docker run waits first, then starts)."""
    status = mgr.status(c).status
    registered()
    while status in ("configured", "creating"):
        if condition == "not-running":
            return 0
        if cancel.wait(0.02):
            raise _Cancelled()
        if not c.path.exists():
            return _exit_from_events(mgr.root, c.id)
        status = mgr.status(c).status
    code: int | None = None
    if condition == "not-running" and status == "exited":
        code = mgr.status(c).exit_code or 0
    while code is None:
        try:
            code = mgr.wait(c, 0.5) if condition == "removed" else \
                mgr.wait_next_exit(c, 0.5)
        except errors.ContainerNotFound:  # AutoRemove: its monitor removed it
            code = _exit_from_events(mgr.root, c.id)
        if code is None and cancel.is_set():
            raise _Cancelled()
    while condition == "removed" and c.path.exists():
        if cancel.wait(0.05):
            raise _Cancelled()
    return code


def _exit_from_events(root: Any, cid: str) -> int:
    """The exit code of a container that is gone: its last ``die`` event's."""
    from ociimg.containers.eventlog import events_path
    try:
        with open(events_path(root), "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - (1 << 20)))
            tail = f.read()
    except OSError:
        return 0
    for line in reversed(tail.split(b"\n")):
        if cid.encode() not in line or b'"die"' not in line:
            continue
        try:
            doc = json.loads(line)
            if doc.get("Action") == "die" and doc.get("id") == cid:
                return int(doc["Actor"]["Attributes"].get("exitCode", 0))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return 0


# List and inspect -----------------------------------------------------------------------------
_LIST_FILTERS = ("id", "name", "label", "status", "ancestor", "exited", "network", "volume",
                 "health", "before", "since", "is-task")


@routes.get("/containers/json")
async def list_containers(request: web.Request) -> web.StreamResponse:
    filters = query_filters(request, _LIST_FILTERS)
    from ociimg.containers.listing import STATUSES
    for value in filters.get("status", []):
        if value not in STATUSES:
            raise ApiError(400, f"Invalid filter 'status={value}'")
    show_all = query_bool(request, "all")
    limit = query_int(request, "limit") or 0
    size = query_bool(request, "size")
    mgr = manager(request)
    return json_response(await blocking(_list, mgr, filters, show_all, limit, size))


def _list(mgr: Any, filters: dict[str, list[str]], show_all: bool, limit: int,
          size: bool) -> list[dict[str, Any]]:
    from ociimg.api.convert import list_doc
    from ociimg.containers.listing import matches, ps_row, writable_size
    basic = {k: v for k, v in filters.items() if k not in ("network", "volume", "before",
                                                           "since", "is-task")}
    out = []
    cs = sorted(mgr.list(), key=lambda c: c.meta.get("createdNs", 0), reverse=True)
    cs = _before_since(mgr, cs, filters)
    for c in cs:
        try:
            row = ps_row(mgr, c)
        except (errors.OciimgError, OSError):  # removed while we looked
            continue
        shown = show_all or limit > 0 or row["status"] in _ACTIVE or "status" in filters
        if not shown or not matches(basic, row):
            continue
        doc = list_doc(c, row)
        if not _other_filters(doc, filters):
            continue
        if size:
            doc.update(SizeRw=writable_size(mgr, c), SizeRootFs=0)
        out.append(doc)
        if limit > 0 and len(out) >= limit:
            break
    return out


def _before_since(mgr: Any, cs: list[Any], filters: dict[str, list[str]]) -> list[Any]:
    for key in ("before", "since"):
        for value in filters.get(key, []):
            ref = mgr.get(value)
            stamp = ref.meta.get("createdNs", 0)
            cs = [c for c in cs if (c.meta.get("createdNs", 0) < stamp if key == "before"
                                    else c.meta.get("createdNs", 0) > stamp)]
    return cs


def _other_filters(doc: dict[str, Any], filters: dict[str, list[str]]) -> bool:
    nets = filters.get("network")
    if nets:
        have = set(doc["NetworkSettings"]["Networks"])
        ids = {n.get("NetworkID") for n in doc["NetworkSettings"]["Networks"].values()}
        if not any(n in have or n in ids for n in nets):
            return False
    vols = filters.get("volume")
    if vols:
        have = {m["Name"] for m in doc["Mounts"]} | {m["Destination"] for m in doc["Mounts"]}
        if not any(v in have for v in vols):
            return False
    return True


@routes.get("/containers/{name}/json")
async def inspect(request: web.Request) -> web.StreamResponse:
    from ociimg.api.convert import inspect_doc
    c = await _container(request)
    from ociimg.containers.listing import writable_size
    doc = await blocking(inspect_doc, manager(request), c)
    if query_bool(request, "size"):
        doc.update(SizeRw=await blocking(writable_size, manager(request), c), SizeRootFs=0)
    return json_response(doc)


# Top and stats --------------------------------------------------------------------------------
@routes.get("/containers/{name}/top")
async def top(request: web.Request) -> web.StreamResponse:
    c = await _container(request)
    args = (request.query.get("ps_args") or "-ef").split()
    if len(args) > 16 or any(len(a) > 64 or not all(ch.isalnum() or ch in "-,=_+:" for ch in a)
                             for a in args):
        raise ApiError(400, "invalid ps_args: letters, digits and - , = _ + : only")
    mgr = manager(request)
    status = (await blocking(mgr.status, c)).status
    if status not in ("running", "paused"):
        raise ApiError(409, f"Container {c.id} is not running")
    return json_response(await blocking(_top, mgr, c, args))


def _top(mgr: Any, c: Any, args: list[str]) -> dict[str, Any]:
    """docker's way: ps over the host with the given options, the rows whose PID is one
    of the container's processes kept."""
    import subprocess
    pids = set(mgr.top(c))
    proc = subprocess.run(["ps", *args], capture_output=True, text=True, errors="replace",
                          check=False, timeout=30)
    if proc.returncode != 0:
        raise ApiError(500, f"ps: {proc.stderr.strip()[:200] or 'failed'}")
    lines = proc.stdout.splitlines()
    if not lines:
        raise ApiError(500, "ps printed nothing")
    titles = lines[0].split()
    if "PID" not in titles:
        raise ApiError(500, f"Couldn't find PID field in ps output: {lines[0][:200]}")
    at = titles.index("PID")
    rows = []
    for line in lines[1:]:
        fields = line.split(None, len(titles) - 1)
        if len(fields) > at and fields[at].isdigit() and int(fields[at]) in pids:
            rows.append(fields)
    return {"Titles": titles, "Processes": rows}


@routes.get("/containers/{name}/stats")
async def stats(request: web.Request) -> web.StreamResponse:
    c = await _container(request)
    stream = query_bool(request, "stream", True)
    one_shot = query_bool(request, "one-shot")
    if one_shot and stream:
        raise ApiError(400, "cannot have stream=true and one-shot=true")
    mgr = manager(request)
    previous = await blocking(_sample, mgr, c)
    if not stream:
        if not one_shot and previous["running"]:
            await asyncio.sleep(0.5)  # a second sample: the CLI's CPU % needs precpu
            current = await blocking(_sample, mgr, c)
        else:
            current, previous = previous, _empty_sample()
        return json_response(_stats_doc(c, current, previous))
    response = web.StreamResponse(status=200, headers={**standard_headers(),
                                                       "Content-Type": "application/json"})
    await response.prepare(request)
    empty = _empty_sample()
    try:
        await response.write(json.dumps(_stats_doc(c, previous, empty)).encode() + b"\n")
        while previous["running"]:
            await asyncio.sleep(1.0)
            current = await blocking(_sample, mgr, c)
            await response.write(json.dumps(_stats_doc(c, current, previous)).encode()
                                 + b"\n")
            previous = current
        await response.write_eof()
    except ConnectionResetError:
        pass
    return response


def _empty_sample() -> dict[str, Any]:
    return {"running": False, "read": None, "cpu": 0, "system": 0, "memory": 0,
            "limit": 0, "pids": 0, "networks": {}}


def _sample(mgr: Any, c: Any) -> dict[str, Any]:
    st = mgr.status(c)
    if st.status not in ("running", "paused") or not st.pid:
        return {**_empty_sample(), "read": time.time()}
    try:
        u = mgr.usage(c)
    except (errors.OciimgError, OSError):
        return {**_empty_sample(), "read": time.time()}
    return {"running": True, "read": time.time(), "cpu": u.cpu_ns, "system": _system_ns(),
            "memory": u.memory, "limit": u.memory_limit, "pids": u.pids,
            "networks": _net_dev(int(st.pid))}


def _system_ns() -> int:
    """The host's total CPU time in ns (docker's system_cpu_usage, from /proc/stat)."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = f.readline().split()[1:8]
    return sum(int(x) for x in fields) * (10**9 // os.sysconf("SC_CLK_TCK"))


def _net_dev(pid: int) -> dict[str, Any]:
    """Per-interface counters of the container's netns (/proc/PID/net/dev), lo left out."""
    out: dict[str, Any] = {}
    try:
        with open(f"/proc/{pid}/net/dev", encoding="ascii", errors="replace") as f:
            lines = f.readlines()[2:]
    except OSError:
        return out
    for line in lines:
        name, _, rest = line.partition(":")
        name, v = name.strip(), rest.split()
        if name == "lo" or len(v) < 16:
            continue
        n = [int(x) if x.isdigit() else 0 for x in v]
        out[name] = {"rx_bytes": n[0], "rx_packets": n[1], "rx_errors": n[2],
                     "rx_dropped": n[3], "tx_bytes": n[8], "tx_packets": n[9],
                     "tx_errors": n[10], "tx_dropped": n[11]}
    return out


def _stats_doc(c: Any, now: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    from ociimg.api.convert import ZERO_TIME, rfc3339
    cpus = os.cpu_count() or 1

    def cpu(s: dict[str, Any]) -> dict[str, Any]:
        return {"cpu_usage": {"total_usage": s["cpu"], "usage_in_kernelmode": 0,
                              "usage_in_usermode": 0},
                "system_cpu_usage": s["system"], "online_cpus": cpus if s["read"] else 0,
                "throttling_data": {"periods": 0, "throttled_periods": 0,
                                    "throttled_time": 0}}
    return {"id": c.id, "name": f"/{c.name}",
            "read": rfc3339(now["read"]) if now["read"] else ZERO_TIME,
            "preread": rfc3339(before["read"]) if before["read"] else ZERO_TIME,
            "pids_stats": {"current": now["pids"]} if now["running"] else {},
            "blkio_stats": {"io_service_bytes_recursive": None},
            "num_procs": 0, "storage_stats": {},
            "cpu_stats": cpu(now), "precpu_stats": cpu(before),
            "memory_stats": {"usage": now["memory"], "limit": now["limit"], "stats": {}}
            if now["running"] else {},
            "networks": now["networks"] or None}
