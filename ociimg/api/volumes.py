"""Volumes: list, inspect, create, remove, prune (ociimg's local named volumes).

The ``local`` driver without options is what ociimg's volumes are: a driver option
(``type=nfs``, ``o=bind``, ...) is refused, never dropped. Volume events go to the event
log (create, destroy).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from aiohttp import web

from ociimg.api.http import (
    ApiError,
    Routes,
    api_version,
    blocking,
    json_response,
    query_bool,
    query_filters,
    read_json,
    root_of,
)
from ociimg.api.system import volume_document
from ociimg.filters import labels_match

routes = Routes()

_LIST_FILTERS = frozenset({"name", "label", "dangling", "driver"})


def _store(root: Path) -> Any:
    from ociimg.containers.volumes import VolumeStore
    return VolumeStore(root)


def _get(root: Path, name: str) -> Any:
    """The volume, or dockerd's 404 (a name outside the grammar cannot exist)."""
    from ociimg.errors import InvalidArgument, NotFound
    try:
        return _store(root).get(name)
    except (NotFound, InvalidArgument):
        raise ApiError(404, f"get {_short(name)}: no such volume") from None


def _short(value: Any) -> str:
    text = repr(value)[1:-1] if isinstance(value, str) else str(value)
    return text if len(text) <= 64 else text[:64] + "..."


def _record_event(root: Path, action: str, name: str, **attrs: str) -> None:
    from ociimg.containers.eventlog import record_event
    record_event(root, "volume", action, name, driver="local", **attrs)


@routes.get("/volumes")
async def list_volumes(request: web.Request) -> web.Response:
    filters = query_filters(request, _LIST_FILTERS)
    return json_response({"Volumes": await blocking(_list, root_of(request), filters),
                          "Warnings": []})


def _list(root: Path, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
    store = _store(root)
    items = store.list()
    users = store.users() if items and "dangling" in filters else {}

    def keep(v: Any) -> bool:
        def any_of(key: str, ok: Any) -> bool:
            return key not in filters or any(ok(x) for x in filters[key])
        return (any_of("name", lambda x: x in v.name)
                and any_of("driver", lambda x: x == "local")
                and any_of("dangling", lambda x: (x.lower() in ("true", "1"))
                           == (v.name not in users))
                and labels_match(v.meta.get("labels") or {}, filters.get("label")))
    return [volume_document(v) for v in items if keep(v)]


@routes.get("/volumes/{name}")
async def inspect_volume(request: web.Request) -> web.Response:
    v = await blocking(_get, root_of(request), request.match_info["name"])
    return json_response(volume_document(v))


@routes.post("/volumes/create")
async def create_volume(request: web.Request) -> web.Response:
    body = await read_json(request, 1 << 20)
    if not isinstance(body, dict):
        raise ApiError(400, "volume create: the body must be a JSON object")
    name = body.get("Name") or ""
    if not isinstance(name, str):
        raise ApiError(400, "volume create: Name must be a string")
    driver = body.get("Driver") or "local"
    if driver != "local":
        raise ApiError(400, f"error looking up volume plugin {_short(driver)}: plugin "
                            f"\"{_short(driver)}\" not found")
    options = body.get("DriverOpts") or {}
    if options:
        keys = ", ".join(sorted(map(_short, options))) if isinstance(options, dict) else "?"
        raise ApiError(400, f"volume create: driver options are not supported by ociimg's "
                            f"local volumes: {keys}")
    labels = body.get("Labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                               for k, v in labels.items()):
        raise ApiError(400, "volume create: Labels must map strings to strings")
    v = await blocking(_create, root_of(request), name, labels)
    return json_response(volume_document(v), 201)


def _create(root: Path, name: str, labels: dict[str, str]) -> Any:
    from ociimg.containers.volumes import check_volume_name
    from ociimg.errors import InvalidArgument
    if name:
        try:
            check_volume_name(name)
        except InvalidArgument:
            raise ApiError(400, f"create {_short(name)}: \"{_short(name)}\" includes invalid "
                                "characters for a local volume name, only "
                                "\"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed") from None
    store = _store(root)
    with store.locked():
        # No name: a random one, still a named volume; an existing name is that volume
        # (dockerd answers the same for a second create).
        existed = bool(name) and any(v.name == name for v in store.list())
        v = store.create(name or secrets.token_hex(32), labels=labels, exist_ok=bool(name))
    if not existed:
        _record_event(root, "create", v.name)
    return v


@routes.delete("/volumes/{name}")
async def remove_volume(request: web.Request) -> web.Response:
    await blocking(_remove, root_of(request), request.match_info["name"],
                   query_bool(request, "force"))
    return web.Response(status=204)


def _remove(root: Path, name: str, force: bool) -> None:
    from ociimg.containers.volumes import VolumeInUse
    from ociimg.errors import InvalidArgument, NotFound
    store = _store(root)
    try:
        # force: a missing volume is no error (dockerd); one in use is still refused.
        store.remove(name)
    except (NotFound, InvalidArgument):
        if force:
            return
        raise ApiError(404, f"get {_short(name)}: no such volume") from None
    except VolumeInUse:
        users = store.users().get(name, [])
        raise ApiError(409, f"remove {name}: volume is in use - [{', '.join(users)}]") \
            from None
    _record_event(root, "destroy", name)


@routes.post("/volumes/prune")
async def prune_volumes(request: web.Request) -> web.Response:
    filters = query_filters(request, ("label", "label!", "all"))
    # API < 1.42 (docker 20.10's CLI): every unused volume; since: anonymous ones unless
    # all=true.
    named = api_version(request) < (1, 42) or any(
        v.lower() in ("true", "1") for v in filters.get("all", []))
    deleted, freed = await blocking(_prune, root_of(request), filters, named)
    return json_response({"VolumesDeleted": deleted, "SpaceReclaimed": freed})


def _prune(root: Path, filters: dict[str, list[str]], named: bool) -> tuple[list[str], int]:
    from ociimg.containers.volumes import VolumeInUse
    from ociimg.errors import NotFound
    from ociimg.fsutil import tree_size
    store = _store(root)
    users = store.users()
    deleted, freed = [], 0
    for v in store.list():
        labels = v.meta.get("labels") or {}
        if v.name in users or not (named or v.anonymous) \
                or not labels_match(labels, filters.get("label"), filters.get("label!")):
            continue
        size = tree_size(v.path)
        try:
            store.remove(v.name)  # checks use again, under the volumes lock
        except (VolumeInUse, NotFound):
            continue
        _record_event(root, "destroy", v.name)
        deleted.append(v.name)
        freed += size
    return deleted, freed
