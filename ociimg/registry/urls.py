"""URLs a registry client builds and is sent: hosts, origins, redirects, proxies.

Server-given URLs (a redirect, an upload Location, a token realm) are data: a bad
port or IPv6 literal is a RegistryError naming it, never a ValueError from urllib.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from urllib.parse import urljoin, urlsplit

from ociimg.errors import RegistryError

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def is_loopback(host: str) -> bool:
    """``host`` may carry a port and IPv6 brackets: "127.0.0.1:5000", "[::1]:5000"."""
    try:
        name = split_host(host)[0]
    except RegistryError:
        return False
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def split_host(host: str) -> tuple[str, int | None]:
    """"[::1]:5000" → ("::1", 5000); "example.com" → ("example.com", None); a bare
    IPv6 address ("::1", as origin() gives it) has no port. RegistryError for a port
    that is not one ("h:99999", "h:-1", "[::1")."""
    if host.count(":") > 1 and not host.startswith("["):
        return host.lower(), None
    try:
        parts = urlsplit(f"//{host}")
        return (parts.hostname or host).lower(), parts.port
    except ValueError as exc:
        raise RegistryError(f"invalid registry address {host[:100]!r}: {exc}") from exc


def scheme_for(host: str, insecure: bool = False) -> str:
    return "http" if insecure or is_loopback(host) else "https"


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL; RegistryError for a URL that names no
    valid one ("http://[::1/x", "http://h:99999/", "http://h:-1/")."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise RegistryError(f"invalid URL {url[:100]!r}: {exc}") from exc
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, (parts.hostname or "").lower(), port or default


def check_url(url: str, what: str) -> str:
    """A server-given URL (a redirect, an upload Location, a token realm) that we may
    send a request to: http(s), a host, a valid port."""
    try:
        scheme, host, _port = origin(url)
    except RegistryError as exc:
        raise RegistryError(f"{what}: {exc.message}") from exc
    if scheme not in ("http", "https") or not host:
        raise RegistryError(f"{what}: unsupported URL {url[:100]!r}")
    return url


def resolve_url(base: str, reference: str, what: str) -> str:
    """``reference`` (a Location header) resolved against ``base``, then checked."""
    try:
        target = urljoin(base, reference)
    except ValueError as exc:
        raise RegistryError(f"{what}: invalid URL {reference[:100]!r}: {exc}") from exc
    return check_url(target, what)


def proxies_for(url: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The proxy for ``url`` from HTTPS_PROXY/HTTP_PROXY/NO_PROXY; never for loopback."""
    env = os.environ if environ is None else environ
    scheme, host, port = origin(url)
    if is_loopback(host):
        return {}
    no_proxy = env.get("NO_PROXY", env.get("no_proxy", ""))
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return {}
        name, _, entry_port = entry.partition(":")
        name = name.lstrip(".").lstrip("*").lstrip(".")
        if (host == name or host.endswith("." + name)) and entry_port in ("", str(port)):
            return {}
    key = "HTTPS_PROXY" if scheme == "https" else "HTTP_PROXY"
    proxy = env.get(key) or env.get(key.lower())
    return {scheme: proxy} if proxy else {}
