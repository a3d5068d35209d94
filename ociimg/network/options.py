"""docker run's network option values (-p, --network, --dns*, --add-host, --ip,
--mac-address) parsed into NetworkOptions; shared by ``ociimg run`` and ``ociimg serve``."""

from __future__ import annotations

import re
from typing import Any

from ociimg.errors import InvalidArgument

_PORT_RE = re.compile(r"^(?:(?:(?P<ip>[0-9.]+):)?(?P<host>\d*):)?(?P<ctr>\d+)"
                      r"(?:/(?P<proto>[a-z]+))?$")
_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_DNS_NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,252})$")


def parse_port(text: str) -> Any:
    """One -p value: [IP:][HOSTPORT:]CTRPORT[/tcp|udp] (IPv4; no ranges)."""
    from ociimg.network import PortMapping
    m = _PORT_RE.fullmatch(text)
    if not m:
        raise InvalidArgument(f"invalid -p {text!r}",
                              hint="write [IP:][HOSTPORT:]CTRPORT[/tcp|udp], e.g. "
                                   "127.0.0.1:8080:80")
    proto = m["proto"] or "tcp"
    if proto not in ("tcp", "udp"):
        raise InvalidArgument(f"-p {text}: protocol {proto!r} is not tcp or udp",
                              hint="use /tcp or /udp")
    ctr = _port(m["ctr"], text, allow_zero=False)
    host = _port(m["host"], text) if m["host"] else 0
    ip = m["ip"] or ""
    if ip:
        _address(ip, f"-p {text}")
    return PortMapping(ctr, host, proto, ip)


def _port(value: str, text: str, allow_zero: bool = True) -> int:
    port = int(value)
    if port > 65535 or (port == 0 and not allow_zero):
        raise InvalidArgument(f"-p {text}: port {value} is out of range",
                              hint="ports are 1-65535")
    return port


def _address(text: str, where: str) -> str:
    import ipaddress
    try:
        # Python takes any text after '%' as an IPv6 scope (newlines too) and str() gives
        # it back, straight into /etc/hosts or resolv.conf: refused, as Go's ParseIP
        # (docker) refuses a zone.
        if "%" in text:
            raise ValueError(text)
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise InvalidArgument(f"{where}: {text!r} is not an IP address",
                              hint="give a numeric address, e.g. 10.0.0.1") from None


def _dns_name(text: str, where: str) -> str:
    if not _DNS_NAME_RE.fullmatch(text):
        raise InvalidArgument(f"{where}: invalid name {text!r}",
                              hint="use letters, digits, '.', '_' and '-'")
    return text


def parse_add_host(text: str) -> tuple[str, str]:
    name, sep, ip = text.partition(":")
    if not sep:
        raise InvalidArgument(f"--add-host {text!r} is not NAME:IP",
                              hint="e.g. --add-host db:10.0.0.5")
    return _dns_name(name, "--add-host"), _address(ip, f"--add-host {text}")


def network_options(network: str, publish: list[str], publish_all: bool, dns: list[str],
                    dns_search: list[str], dns_option: list[str], add_host: list[str],
                    network_alias: list[str], ip: str | None, mac_address: str | None,
                    hostname: str | None) -> Any:
    """The NetworkOptions for `ociimg run`'s flags."""
    from ociimg.network import NetworkOptions
    from ociimg.network.config import check_name
    mode, container, networks = "bridge", None, []
    if network in ("none", "host"):
        mode = network
    elif network.startswith("container:"):
        mode, container = "container", network.partition(":")[2]
        if not container:
            raise InvalidArgument("--network container: needs a container name",
                                  hint="e.g. --network container:web")
    elif network not in ("bridge", "default", ""):
        networks = [n for n in network.split(",") if n]
        for n in networks:
            check_name(n)
    if ip is not None:
        ip = _address(ip, "--ip")
    if mac_address is not None and not _MAC_RE.fullmatch(mac_address):
        raise InvalidArgument(f"--mac-address {mac_address!r} is not a MAC address",
                              hint="e.g. 02:42:ac:11:00:02")
    for option in dns_option:
        if not option or any(c.isspace() for c in option):
            raise InvalidArgument(f"--dns-option {option!r}", hint="e.g. ndots:2")
    return NetworkOptions(
        mode=mode, networks=networks, container=container,
        aliases=[_dns_name(a, "--network-alias") for a in network_alias],
        ports=[parse_port(p) for p in publish], publish_all=publish_all,
        dns=[_address(d, "--dns") for d in dns],
        dns_search=[_dns_name(d, "--dns-search") for d in dns_search],
        dns_options=list(dns_option), add_hosts=[parse_add_host(h) for h in add_host],
        hostname=hostname, mac=mac_address, ip=ip)
