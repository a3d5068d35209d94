"""Network definitions: ``<root>/networks/<name>.json``, netavark's Network document.

The default network (``DEFAULT_NAME``, what ``--network bridge`` means) is written on
first use. Its subnet and bridge avoid podman's (``podman``/``podman0``, 10.88.0.0/16,
user networks from 10.89.0.0/16 up) and docker's (172.17.0.0/16 and up), which run on
the same hosts: 10.87.0.0/16 on ``ociimg0``; user networks get /24s of 10.86.0.0/16 on
``ociimg1``, ``ociimg2``, ...
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ociimg.errors import AlreadyExists, InvalidArgument, NotFound

DEFAULT_NAME = "ociimg"
DEFAULT_BRIDGE = "ociimg0"
DEFAULT_SUBNET = "10.87.0.0/16"
USER_POOL = ipaddress.ip_network("10.86.0.0/16")
USER_PREFIX = 24
RESERVED = ("bridge", "host", "none", "default", "private", "container")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_MAX_DOC = 1 << 20


@dataclass(frozen=True)
class Network:
    doc: dict[str, Any]  # netavark's Network, as stored and as sent

    @property
    def name(self) -> str:
        return str(self.doc["name"])

    @property
    def bridge(self) -> str:
        return str(self.doc["network_interface"])

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.ip_network(self.doc["subnets"][0]["subnet"])

    @property
    def gateway(self) -> str:
        return str(self.doc["subnets"][0]["gateway"])

    @property
    def internal(self) -> bool:
        return bool(self.doc.get("internal"))

    @property
    def dns(self) -> bool:
        return bool(self.doc.get("dns_enabled"))


def check_name(name: str) -> None:
    """podman's network name grammar, [a-zA-Z0-9][a-zA-Z0-9_.-]*: the name is a file name
    under <root>/networks and in netavark's aardvark-dns directory."""
    if not name or len(name) > 128 or not name[0].isascii() or not name[0].isalnum() \
            or not set(name) <= _NAME_CHARS:
        raise InvalidArgument(f"invalid network name {name!r}",
                              hint="use letters, digits, '_', '.' and '-', starting with a "
                                   "letter or digit")


def networks_dir(root: Path) -> Path:
    return Path(root) / "networks"


def load(root: Path, name: str) -> Network:
    """The network ``name``; the default network is created on first use."""
    if name in ("bridge", DEFAULT_NAME):
        return _default(root)
    check_name(name)
    doc = _read(networks_dir(root) / f"{name}.json")
    if doc is None:
        raise NotFound(f"no such network: {name}",
                       hint=f"create it: ociimg network create {name}")
    return Network(doc)


def list_networks(root: Path) -> list[Network]:
    base = networks_dir(root)
    names = sorted(p.stem for p in base.glob("*.json")) if base.is_dir() else []
    out = [Network(doc) for n in names if (doc := _read(base / f"{n}.json"))]
    if not any(n.name == DEFAULT_NAME for n in out):
        out.insert(0, _default_network())
    return out


def create(root: Path, name: str, *, subnet: str | None = None, gateway: str | None = None,
           internal: bool = False, labels: dict[str, str] | None = None) -> Network:
    check_name(name)
    if name in RESERVED or name == DEFAULT_NAME:
        raise InvalidArgument(f"network name {name!r} is reserved",
                              hint="choose another name")
    from ociimg.store import locks
    base = networks_dir(root)
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    with locks.locked(base / ".lock"):
        if (base / f"{name}.json").exists():
            raise AlreadyExists(f"network {name} already exists",
                                hint=f"inspect it: ociimg network inspect {name}")
        taken = list_networks(root)
        net = _parse_subnet(subnet) if subnet else _free_subnet(taken)
        _check_overlap(net, taken)
        if subnet:
            _check_host_routes(net)
        gw = _parse_gateway(gateway, net) if gateway else str(next(net.hosts()))
        doc = _doc(name, _free_bridge(taken), net, gw, internal=internal, dns=True)
        doc["labels"] = dict(labels or {})
        _write(base / f"{name}.json", doc)
    return Network(doc)


def remove(root: Path, name: str) -> None:
    check_name(name)
    if name == DEFAULT_NAME:
        raise InvalidArgument(f"network {name} is the default network",
                              hint="it cannot be removed")
    try:
        os.unlink(networks_dir(root) / f"{name}.json")
    except FileNotFoundError:
        raise NotFound(f"no such network: {name}", hint="list them: ociimg network ls") \
            from None


def _default_network() -> Network:
    """Also what ``network ls`` shows before first use (it writes nothing): its id is
    fixed, like podman's default network's."""
    import hashlib
    net = ipaddress.ip_network(DEFAULT_SUBNET)
    doc = _doc(DEFAULT_NAME, DEFAULT_BRIDGE, net, str(next(net.hosts())), internal=False,
               dns=False)
    doc["id"] = hashlib.sha256(DEFAULT_NAME.encode()).hexdigest()
    return Network(doc)


def _default(root: Path) -> Network:
    path = networks_dir(root) / f"{DEFAULT_NAME}.json"
    doc = _read(path)
    if doc is not None:
        return Network(doc)
    network = _default_network()
    if Path(root).is_dir():  # a read (network inspect) of a root not yet made makes none
        _write(path, network.doc)
    return network


def _doc(name: str, bridge: str, net: ipaddress.IPv4Network, gateway: str, *,
         internal: bool, dns: bool) -> dict[str, Any]:
    return {"name": name, "id": secrets.token_hex(32), "driver": "bridge",
            "network_interface": bridge,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "subnets": [{"subnet": str(net), "gateway": gateway}],
            "ipv6_enabled": False, "internal": internal, "dns_enabled": dns,
            "ipam_options": {"driver": "host-local"}}


def _parse_subnet(text: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise InvalidArgument(f"invalid subnet {text!r}: {exc}",
                              hint="give an IPv4 network, e.g. 10.86.10.0/24") from None
    if net.version != 4 or not 8 <= net.prefixlen <= 30:
        raise InvalidArgument(f"subnet {text}: need an IPv4 network from /8 to /30",
                              hint="e.g. 10.86.10.0/24")
    if net.is_loopback or net.is_multicast or net.is_link_local or net.is_reserved \
            or net.overlaps(ipaddress.ip_network("0.0.0.0/8")):
        raise InvalidArgument(f"subnet {text} is not usable for containers",
                              hint="use a private range, e.g. 10.86.10.0/24")
    return net


def _parse_gateway(text: str, net: ipaddress.IPv4Network) -> str:
    try:
        gw = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidArgument(f"invalid gateway {text!r}", hint="give an IPv4 address") \
            from None
    if gw not in net or gw in (net.network_address, net.broadcast_address):
        raise InvalidArgument(f"gateway {gw} is not a host address of {net}",
                              hint="pick an address inside the subnet")
    return str(gw)


def _host_routes() -> list[ipaddress.IPv4Network]:
    """The host's IPv4 routes (/proc/net/route): a subnet there is in use by someone."""
    out = []
    try:
        with open("/proc/net/route") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return out
    for line in lines:
        fields = line.split()
        if len(fields) < 8 or fields[1] == "00000000":
            continue
        dest = ipaddress.IPv4Address(int(fields[1], 16).to_bytes(4, "little"))
        mask = ipaddress.IPv4Address(int(fields[7], 16).to_bytes(4, "little"))
        out.append(ipaddress.ip_network(f"{dest}/{mask}", strict=False))
    return out


def _check_overlap(net: ipaddress.IPv4Network, taken: list[Network]) -> None:
    for other in taken:
        if net.overlaps(other.subnet):
            raise AlreadyExists(f"subnet {net} overlaps network {other.name} ({other.subnet})",
                                hint="pick another --subnet")


def _check_host_routes(net: ipaddress.IPv4Network) -> None:
    """A subnet the host already routes (its LAN, a VPN) would cut it off from it."""
    for route in _host_routes():
        if net.overlaps(route):
            raise AlreadyExists(f"subnet {net} overlaps the host route {route}",
                                hint="pick another --subnet")


def _free_subnet(taken: list[Network]) -> ipaddress.IPv4Network:
    used = [n.subnet for n in taken] + _host_routes()
    for net in USER_POOL.subnets(new_prefix=USER_PREFIX):
        if not any(net.overlaps(u) for u in used):
            return net
    raise AlreadyExists(f"no free subnet left in {USER_POOL}",
                        hint="remove unused networks (ociimg network prune) or give --subnet")


def _free_bridge(taken: list[Network]) -> str:
    used = {n.bridge for n in taken}
    for i in range(1, 10000):
        name = f"ociimg{i}"
        if name not in used and not os.path.exists(f"/sys/class/net/{name}"):
            return name
    raise AlreadyExists("no free bridge name", hint="remove unused networks")


def _read(path: Path) -> dict[str, Any] | None:
    from ociimg.store.files import read_regular
    try:
        doc = json.loads(read_regular(path, _MAX_DOC, "network definition"))
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise InvalidArgument(f"network definition {path}: {exc}",
                              hint=f"remove the file {path}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("subnets"), list):
        raise InvalidArgument(f"network definition {path} is malformed",
                              hint=f"remove the file {path}")
    return doc


def _write(path: Path, doc: dict[str, Any]) -> None:
    from ociimg.fsutil import atomic_write
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(path, json.dumps(doc, indent=2).encode() + b"\n", mode=0o600)
