"""`ociimg run` network flags: -p/-P, --network, --dns*, --add-host, --network-alias,
--ip, --mac-address, parsed into ociimg.network.NetworkOptions."""

from __future__ import annotations

import typer

NETWORK = typer.Option("bridge", "--network", "--net",
                       help="bridge (default network), none, host, container:NAME, or "
                            "user network names (comma-separated).")
PUBLISH = typer.Option([], "--publish", "-p",
                       help="Publish [IP:][HOSTPORT:]CTRPORT[/tcp|udp] on the host.")
PUBLISH_ALL = typer.Option(False, "--publish-all", "-P",
                           help="Publish every EXPOSEd port on a free host port.")
DNS = typer.Option([], "--dns", help="Nameserver for /etc/resolv.conf.")
DNS_SEARCH = typer.Option([], "--dns-search", help="Search domain for /etc/resolv.conf.")
DNS_OPTION = typer.Option([], "--dns-option", help="Option for /etc/resolv.conf.")
ADD_HOST = typer.Option([], "--add-host", help="Add NAME:IP to /etc/hosts.")
NETWORK_ALIAS = typer.Option([], "--network-alias", help="Another DNS name on the network.")
IP = typer.Option(None, "--ip", help="IPv4 address on the (single) network.")
MAC_ADDRESS = typer.Option(None, "--mac-address", help="MAC address of eth0.")


def __getattr__(name: str) -> object:
    """The parsers (ociimg/network/options.py), loaded when used: importing the network
    package is not in every command's start-up budget."""
    if name in ("network_options", "parse_add_host", "parse_port"):
        from ociimg.network import options
        return getattr(options, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
