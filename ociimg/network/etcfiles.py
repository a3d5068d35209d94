"""/etc/hosts, /etc/resolv.conf and /etc/hostname of a container, as podman writes them.

Pure text builders plus the host's resolver configuration. A loopback nameserver of the
host (systemd-resolved's 127.0.0.53, a local dnsmasq) is unreachable from a container's
own network namespace, so it is replaced by the stub's real upstreams
(/run/systemd/resolve/resolv.conf). When nothing but loopback servers is known, the
container gets no nameserver at all rather than a public resolver the host never chose
(docker and podman fall back to 8.8.8.8: a query leak the user did not ask for).
"""

from __future__ import annotations

import ipaddress

HOST_RESOLV = "/etc/resolv.conf"
RESOLVED_UPSTREAMS = "/run/systemd/resolve/resolv.conf"
LOCALHOST_LINES = (
    "127.0.0.1\tlocalhost localhost.localdomain localhost4 localhost4.localdomain4\n"
    "::1\tlocalhost localhost.localdomain localhost6 localhost6.localdomain6\n")


def check_hostname(name: str) -> None:
    """A hostname goes into /etc/hosts and /etc/hostname verbatim: letters, digits, '-',
    '_' and '.' only (no line or field break can sneak an entry in), at most 64 bytes
    (the kernel's HOST_NAME_MAX)."""
    from ociimg.errors import InvalidArgument
    ok = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
    if not name or len(name) > 64 or not set(name) <= ok or name[0] in "-.":
        raise InvalidArgument(f"invalid hostname {name!r}",
                              hint="use letters, digits, '-', '_' and '.', at most 64")


def hosts(hostname: str, name: str | None, ips: list[str],
          add_hosts: list[tuple[str, str]], gateway: str | None = None) -> str:
    """localhost, ``--add-host`` entries, then the container itself on each of its
    addresses (on none/host: no address of its own, 127.0.1.1 like Debian's hosts file)."""
    text = LOCALHOST_LINES
    text += "".join(f"{ip}\t{host}\n" for host, ip in add_hosts)
    names = " ".join(dict.fromkeys(n for n in (hostname, name) if n))
    for ip in ips or ["127.0.1.1"]:
        text += f"{ip}\t{names}\n"
    if gateway:
        text += f"{gateway}\thost.containers.internal\n"
    return text


def parse_resolv(text: str) -> tuple[list[str], list[str], list[str]]:
    """nameserver, search and options entries of a resolv.conf."""
    servers: list[str] = []
    search: list[str] = []
    options: list[str] = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(fields) < 2:
            continue
        if fields[0] == "nameserver":
            servers.append(fields[1])
        elif fields[0] in ("search", "domain"):
            search = fields[1:]
        elif fields[0] == "options":
            options.extend(fields[1:])
    return servers, search, options


def _is_loopback(server: str) -> bool:
    try:
        return ipaddress.ip_address(server.partition("%")[0]).is_loopback
    except ValueError:
        return True  # not an address: unusable inside the container as well


def host_resolver(keep_loopback: bool = False) -> tuple[list[str], list[str], list[str]]:
    """The host's servers, search domains and options; loopback servers replaced by the
    systemd-resolved upstreams (or dropped) unless ``keep_loopback`` (host network)."""
    servers, search, options = parse_resolv(_read(HOST_RESOLV))
    if keep_loopback:
        return servers, search, options
    real = [s for s in servers if not _is_loopback(s)]
    if len(real) < len(servers):
        upstream, _, _ = parse_resolv(_read(RESOLVED_UPSTREAMS))
        real += [s for s in upstream if not _is_loopback(s) and s not in real]
    return real, search, options


def resolv_conf(servers: list[str], search: list[str], options: list[str]) -> str:
    text = ""
    if search:
        text += "search " + " ".join(search) + "\n"
    text += "".join(f"nameserver {s}\n" for s in servers)
    if not servers:
        text += "# no usable nameserver: the host has only loopback resolvers\n"
    if options:
        text += "options " + " ".join(options) + "\n"
    return text


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(1 << 16)
    except OSError:
        return ""
