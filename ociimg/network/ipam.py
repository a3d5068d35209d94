"""Address leases of bridge networks: ``STATE_DIR/ipam/<bridge>.json``, one per bridge.

netavark does not allocate (its host-local IPAM takes the caller's ``static_ips``), so we
do, like podman's ipam.go. Leases are keyed by bridge, not by network name or root: the
bridge is the shared kernel object, and two stores on one host must never hand out the
same address on it. Every change happens under the bridge's flock.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ociimg.errors import ContainerError, InvalidArgument
from ociimg.network import STATE_DIR

_MAX = 8 << 20


def _dir() -> Path:
    return STATE_DIR / "ipam"


@contextlib.contextmanager
def _leases(bridge: str) -> Iterator[dict[str, Any]]:
    from ociimg.fsutil import atomic_write
    from ociimg.store import locks
    base = _dir()
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = base / f"{bridge}.json"
    with locks.locked(base / f".{bridge}.lock"):
        try:
            with open(path, "rb") as f:
                leases = json.loads(f.read(_MAX))
        except FileNotFoundError:
            leases = {}
        except ValueError:  # a torn file cannot happen (atomic writes); start over
            leases = {}
        before = dict(leases)
        yield leases
        if leases != before:
            atomic_write(path, json.dumps(leases).encode(), mode=0o600)


def allocate(bridge: str, subnet: str, gateway: str, cid: str,
             wanted: str | None = None) -> str:
    """A free address of ``subnet`` for ``cid`` (``wanted`` if given and free)."""
    net = ipaddress.ip_network(subnet)
    with _leases(bridge) as leases:
        if wanted is not None:
            ip = ipaddress.ip_address(wanted)
            if ip not in net or ip in (net.network_address, net.broadcast_address) \
                    or str(ip) == gateway:
                raise InvalidArgument(f"--ip {ip}: not a free host address of {net}",
                                      hint=f"pick one in {net} other than the gateway "
                                           f"{gateway}")
            if str(ip) in leases and leases[str(ip)] != cid:
                raise ContainerError(f"--ip {ip} is in use by another container",
                                     hint="pick another address or leave --ip out")
            leases[str(ip)] = cid
            return str(ip)
        for host in net.hosts():
            text = str(host)
            if text != gateway and text not in leases:
                leases[text] = cid
                return text
    raise ContainerError(f"no free address left in {subnet} ({bridge})",
                         hint="remove stopped containers, or use another network")


def release(cid: str, bridge: str | None = None) -> None:
    """Every lease ``cid`` holds, on every bridge (or on ``bridge``)."""
    base = _dir()
    if not base.is_dir():
        return
    for path in base.glob(f"{bridge}.json" if bridge else "*.json"):
        with _leases(path.stem) as leases:
            for ip in [ip for ip, owner in leases.items() if owner == cid]:
                del leases[ip]


def holders() -> set[str]:
    """Container ids holding a lease (for leak counts and tests)."""
    out: set[str] = set()
    base = _dir()
    for path in base.glob("*.json") if base.is_dir() else ():
        with contextlib.suppress(OSError, ValueError):
            out.update(json.loads(path.read_bytes()).values())
    return out


def lease_count() -> int:
    base = _dir()
    total = 0
    for path in base.glob("*.json") if base.is_dir() else ():
        with contextlib.suppress(OSError, ValueError):
            total += len(json.loads(path.read_bytes()))
    return total


__all__ = ["STATE_DIR", "allocate", "holders", "lease_count", "release"]
