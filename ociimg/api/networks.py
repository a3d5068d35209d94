"""Networks: list, inspect, create, remove, connect, disconnect, prune.

docker's three predefined networks are there as clients expect them (testcontainers and
compose assume ``bridge``): ``bridge`` is ociimg's default network (``ociimg``, what
``--network bridge`` means to ``ociimg run``), ``host`` and ``none`` are the network
modes of those names. User networks are ociimg's bridge networks (ociimg/network/config.py),
with DNS by container name. Network and connect/disconnect events go to the event log.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from ociimg.api.http import (
    ApiError,
    Routes,
    blocking,
    json_response,
    query_filters,
    read_json,
    root_of,
)
from ociimg.filters import labels_match

routes = Routes()

PREDEFINED = ("bridge", "host", "none")
_LIST_FILTERS = frozenset({"name", "id", "driver", "label", "type", "scope", "dangling"})
_RUNNING = ("running", "paused", "restarting")


class _Net:
    """One network as the API sees it: a bridge network's definition, or host/none."""

    def __init__(self, name: str, doc: dict[str, Any] | None) -> None:
        self.name = name      # docker's name: "bridge" for the default network
        self.doc = doc        # the definition (None for host and none)

    @property
    def id(self) -> str:
        if self.doc is None:
            return hashlib.sha256(self.name.encode()).hexdigest()
        return str(self.doc["id"])

    @property
    def ours(self) -> str:
        """The name containers' records use."""
        return str(self.doc["name"]) if self.doc is not None else self.name

    @property
    def driver(self) -> str:
        return {"host": "host", "none": "null"}.get(self.name, "bridge")


def _all(root: Path) -> list[_Net]:
    from ociimg.network import config
    out = []
    for n in config.list_networks(root):
        name = "bridge" if n.name == config.DEFAULT_NAME else n.name
        out.append(_Net(name, n.doc))
    return out + [_Net("host", None), _Net("none", None)]


def _find(root: Path, key: str) -> _Net:
    """By name, full id or unique id prefix (dockerd's order); 404 with its text."""
    from ociimg.network import config
    nets = _all(root)
    if key == config.DEFAULT_NAME:
        key = "bridge"
    for match in ([n for n in nets if n.name == key], [n for n in nets if n.id == key],
                  [n for n in nets if key and n.id.startswith(key)]):
        if len(match) == 1:
            return match[0]
        if len(match) > 1:
            raise ApiError(400, f"network {key} is ambiguous ({len(match)} matches found "
                                "based on ID prefix)")
    raise ApiError(404, f"network {key} not found")


def _users(root: Path) -> dict[str, list[tuple[Any, dict[str, Any]]]]:
    """Our network name (or host/none) → (container, its network record), any state."""
    import ociimg.network as network
    from ociimg.containers import ContainerManager
    out: dict[str, list[tuple[Any, dict[str, Any]]]] = {}
    for c in ContainerManager(root).list():
        record = network.read_record(c.path) or {}
        names = record.get("networks") or ([record["mode"]] if record.get("mode") in
                                           ("host", "none") else [])
        for name in names:
            out.setdefault(str(name), []).append((c, record))
    return out


def _document(root: Path, net: _Net, users: dict[str, list[tuple[Any, dict[str, Any]]]]
              ) -> dict[str, Any]:
    from ociimg.containers import ContainerManager
    from ociimg.errors import OciimgError
    manager = ContainerManager(root)
    containers: dict[str, Any] = {}
    for c, record in users.get(net.ours, []):
        try:
            running = manager.status(c).status in _RUNNING
        except OciimgError:
            running = False
        if not running:  # dockerd lists endpoints, which only running containers have
            continue
        attached = next((a for a in record.get("attached") or []
                         if a.get("network") == net.ours), {})
        containers[c.id] = {
            "Name": c.name,
            "EndpointID": hashlib.sha256(f"{c.id}:{net.id}".encode()).hexdigest(),
            "MacAddress": attached.get("mac", ""), "IPv4Address": attached.get("address", ""),
            "IPv6Address": ""}
    doc = net.doc or {}
    subnets = doc.get("subnets") or []
    # Only the default network names its bridge, as dockerd's: compose 1.29 compares a
    # user network's Options with its file's and refuses to go on when they differ.
    options = {"com.docker.network.bridge.name": doc["network_interface"]} \
        if net.name == "bridge" and doc.get("network_interface") else {}
    return {"Name": net.name, "Id": net.id, "Created": doc.get("created") or
            "0001-01-01T00:00:00Z", "Scope": "local", "Driver": net.driver,
            "EnableIPv6": bool(doc.get("ipv6_enabled")),
            "IPAM": {"Driver": "default", "Options": None,
                     "Config": [{"Subnet": s.get("subnet"), "Gateway": s.get("gateway")}
                                for s in subnets if isinstance(s, dict)]},
            "Internal": bool(doc.get("internal")), "Attachable": False, "Ingress": False,
            "ConfigFrom": {"Network": ""}, "ConfigOnly": False, "Containers": containers,
            "Options": options, "Labels": dict(doc.get("labels") or {})}


def _record_event(root: Path, action: str, net: _Net, **attrs: str) -> None:
    from ociimg.containers.eventlog import record_event
    record_event(root, "network", action, net.id, **attrs, name=net.name, type=net.driver)


# --- list and inspect -----------------------------------------------------------------


@routes.get("/networks")
async def list_networks(request: web.Request) -> web.Response:
    filters = query_filters(request, _LIST_FILTERS)
    return json_response(await blocking(_list, root_of(request), filters))


def _list(root: Path, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
    users = _users(root)
    docs = [_document(root, n, users) for n in _all(root)]
    return [d for d in docs if _list_match(filters, d)]


def _list_match(filters: dict[str, list[str]], doc: dict[str, Any]) -> bool:
    def any_of(key: str, ok: Any) -> bool:
        return key not in filters or any(ok(v) for v in filters[key])
    builtin = doc["Name"] in PREDEFINED
    return (any_of("name", lambda v: v in doc["Name"])
            and any_of("id", lambda v: doc["Id"].startswith(v))
            and any_of("driver", lambda v: v == doc["Driver"])
            and any_of("scope", lambda v: v == "local")
            and any_of("type", lambda v: v == ("builtin" if builtin else "custom"))
            and any_of("dangling", lambda v: (v.lower() in ("true", "1")) ==
                       (not builtin and not doc["Containers"]))
            and labels_match(doc["Labels"], filters.get("label")))


@routes.get("/networks/{id}")
async def inspect_network(request: web.Request) -> web.Response:
    key = request.match_info["id"]

    def run() -> dict[str, Any]:
        root = root_of(request)
        return _document(root, _find(root, key), _users(root))
    return json_response(await blocking(run))


# --- create and remove ----------------------------------------------------------------


@routes.post("/networks/create")
async def create_network(request: web.Request) -> web.Response:
    body = await read_json(request, 1 << 20)
    spec = _create_spec(body)
    root = root_of(request)
    doc = await blocking(_create, root, spec)
    return json_response({"Id": doc["id"], "Warning": ""}, 201)


def _create_spec(body: Any) -> dict[str, Any]:
    """The create body, checked: what ociimg's bridge networks cannot do is refused
    (400), never silently dropped."""
    if not isinstance(body, dict):
        raise ApiError(400, "network create: the body must be a JSON object")
    name = body.get("Name")
    if not isinstance(name, str) or not name:
        raise ApiError(400, "network create: Name is required")
    driver = body.get("Driver") or "bridge"
    if driver != "bridge":
        raise ApiError(400, f'plugin "{_short(driver)}" not found (ociimg networks use '
                            'the bridge driver)')
    for flag in ("EnableIPv6", "Ingress", "ConfigOnly"):
        if body.get(flag):
            raise ApiError(400, f"network create: {flag} is not supported by ociimg")
    if (body.get("ConfigFrom") or {}).get("Network"):
        raise ApiError(400, "network create: ConfigFrom is not supported by ociimg")
    if body.get("Options"):
        raise ApiError(400, "network create: driver options are not supported by ociimg: "
                            f"{', '.join(sorted(map(_short, body['Options'])))}")
    labels = body.get("Labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                               for k, v in labels.items()):
        raise ApiError(400, "network create: Labels must map strings to strings")
    subnet, gateway = _ipam(body.get("IPAM"))
    return {"name": name, "subnet": subnet, "gateway": gateway,
            "internal": bool(body.get("Internal")), "labels": labels}


def _ipam(ipam: Any) -> tuple[str | None, str | None]:
    if not ipam:
        return None, None
    if not isinstance(ipam, dict):
        raise ApiError(400, "network create: IPAM must be an object")
    if ipam.get("Driver") not in (None, "", "default"):
        raise ApiError(400, f'plugin "{_short(ipam["Driver"])}" not found (ociimg has '
                            'the default IPAM driver only)')
    if ipam.get("Options"):
        raise ApiError(400, "network create: IPAM options are not supported by ociimg")
    configs = ipam.get("Config") or []
    if not isinstance(configs, list) or len(configs) > 1:
        raise ApiError(400, "network create: at most one IPAM.Config (an IPv4 subnet)")
    if not configs:
        return None, None
    cfg = configs[0]
    if not isinstance(cfg, dict):
        raise ApiError(400, "network create: IPAM.Config entries must be objects")
    if cfg.get("IPRange") or cfg.get("AuxiliaryAddresses"):
        raise ApiError(400, "network create: IPRange and AuxiliaryAddresses are not "
                            "supported by ociimg")
    subnet, gateway = cfg.get("Subnet") or None, cfg.get("Gateway") or None
    if gateway and not subnet:
        raise ApiError(400, "network create: a Gateway needs a Subnet")
    if not all(v is None or (isinstance(v, str) and len(v) < 64) for v in (subnet, gateway)):
        raise ApiError(400, "network create: Subnet and Gateway must be short strings")
    return subnet, gateway


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 64 else text[:64] + "..."


def _create(root: Path, spec: dict[str, Any]) -> dict[str, Any]:
    from ociimg.network import config
    name = spec["name"]
    if name in (*PREDEFINED, config.DEFAULT_NAME) or any(n.name == name for n in _all(root)):
        raise ApiError(409, f"network with name {_short(name)} already exists")
    net = config.create(root, name, subnet=spec["subnet"], gateway=spec["gateway"],
                        internal=spec["internal"], labels=spec["labels"])
    _record_event(root, "create", _Net(net.name, net.doc))
    return net.doc


@routes.delete("/networks/{id}")
async def remove_network(request: web.Request) -> web.Response:
    await blocking(_remove, root_of(request), request.match_info["id"])
    return web.Response(status=204)


def _remove(root: Path, key: str) -> None:
    from ociimg.network import config
    net = _find(root, key)
    if net.name in PREDEFINED:
        raise ApiError(403, f"{net.name} is a pre-defined network and cannot be removed")
    if _users(root).get(net.ours):
        raise ApiError(403, f"error while removing network: network {net.name} id {net.id} "
                            "has active endpoints")
    config.remove(root, net.ours)
    _record_event(root, "destroy", net)


@routes.post("/networks/prune")
async def prune_networks(request: web.Request) -> web.Response:
    filters = query_filters(request, ("label", "label!", "until"))
    until = None
    if filters.get("until"):
        from ociimg.api.system import parse_api_time
        until = parse_api_time(filters["until"][0], "until", time.time())
    return json_response({"NetworksDeleted": await blocking(
        _prune, root_of(request), filters, until)})


def _prune(root: Path, filters: dict[str, list[str]], until: float | None) -> list[str]:
    import ociimg.network as network
    from ociimg.api.system import rfc3339
    from ociimg.network import config
    network.reap()  # what dead monitors left attached
    users = _users(root)
    gone = []
    for net in _all(root):
        doc = net.doc or {}
        labels = dict(doc.get("labels") or {})
        if net.name in PREDEFINED or users.get(net.ours) \
                or not labels_match(labels, filters.get("label"), filters.get("label!")):
            continue
        if until is not None:
            with contextlib.suppress(ValueError):
                if rfc3339(str(doc.get("created"))) > until:
                    continue
        config.remove(root, net.ours)
        _record_event(root, "destroy", net)
        gone.append(net.name)
    return gone


# --- connect and disconnect -----------------------------------------------------------


@routes.post("/networks/{id}/connect")
async def connect_network(request: web.Request) -> web.Response:
    body = await read_json(request, 1 << 20)
    if not isinstance(body, dict) or not isinstance(body.get("Container"), str):
        raise ApiError(400, "network connect: Container is required")
    endpoint = body.get("EndpointConfig") or {}
    if not isinstance(endpoint, dict):
        raise ApiError(400, "network connect: EndpointConfig must be an object")
    aliases = endpoint.get("Aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases) \
            or len(aliases) > 64:
        raise ApiError(400, "network connect: Aliases must be a list of names")
    ipam = endpoint.get("IPAMConfig") or {}
    if not isinstance(ipam, dict) or any(ipam.get(k) for k in ("IPv4Address", "IPv6Address",
                                                                "LinkLocalIPs")):
        raise ApiError(400, "network connect: a static address is not supported by ociimg "
                            "(give it at container create)")
    await blocking(_connect, root_of(request), request.match_info["id"], body["Container"],
                   aliases)
    return web.Response(status=200)


def _connect(root: Path, key: str, name: str, aliases: list[str]) -> None:
    import ociimg.network as network
    from ociimg.containers import ContainerManager
    from ociimg.errors import ContainerNotFound
    from ociimg.network import etcfiles
    for alias in aliases:
        etcfiles.check_hostname(alias)
    net = _find(root, key)
    manager = ContainerManager(root)
    try:
        c = manager.get(name)
    except ContainerNotFound:
        raise ApiError(404, f"No such container: {_short(name)}") from None
    if net.doc is None:
        raise ApiError(403, f"container cannot be disconnected from host network or "
                            f"connected to {net.name} network")
    record = network.read_record(c.path) or {}
    if net.ours in (record.get("networks") or []):
        raise ApiError(403, f"endpoint with name {c.name} already exists in network "
                            f"{net.name}")
    network.connect(root, c.path, c.id, net.ours, aliases,
                    running=manager.status(c).status in _RUNNING)
    _record_event(root, "connect", net, container=c.id)


@routes.post("/networks/{id}/disconnect")
async def disconnect_network(request: web.Request) -> web.Response:
    body = await read_json(request, 1 << 20)
    if not isinstance(body, dict) or not isinstance(body.get("Container"), str):
        raise ApiError(400, "network disconnect: Container is required")
    await blocking(_disconnect, root_of(request), request.match_info["id"],
                   body["Container"])
    return web.Response(status=200)


def _disconnect(root: Path, key: str, name: str) -> None:
    import ociimg.network as network
    from ociimg.containers import ContainerManager
    from ociimg.errors import ContainerNotFound
    net = _find(root, key)
    try:
        c = ContainerManager(root).get(name)
    except ContainerNotFound:
        raise ApiError(404, f"No such container: {_short(name)}") from None
    record = network.read_record(c.path) or {}
    if net.doc is None or net.ours not in (record.get("networks") or []):
        raise ApiError(403, f"container {c.id} is not connected to network {net.name}")
    network.disconnect(root, c.path, c.id, net.ours)
    _record_event(root, "disconnect", net, container=c.id)
