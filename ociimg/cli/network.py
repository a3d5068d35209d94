"""Network commands: network create/ls/inspect/rm/prune/connect/disconnect, and port."""

from __future__ import annotations

from typing import Any

import typer

from ociimg.cli.app import STATE, app, group_options
from ociimg.cli.options import JSON_OUT
from ociimg.cli.output import print_json, printable

network_app = typer.Typer(name="network", help="Manage bridge networks.",
                          no_args_is_help=True, rich_markup_mode=None)
app.add_typer(network_app, name="network", rich_help_panel="Containers")


network_app.callback()(group_options)


@network_app.command("create")
def create(
    name: str = typer.Argument(..., help="Network name."),
    subnet: str = typer.Option(None, "--subnet", help="IPv4 subnet, e.g. 10.86.5.0/24 "
                               "(default: the next free /24 of 10.86.0.0/16)."),
    gateway: str = typer.Option(None, "--gateway", help="Gateway address in the subnet."),
    internal: bool = typer.Option(False, "--internal", help="No route out of the network."),
    label: list[str] = typer.Option([], "--label", help="KEY=VALUE label."),
) -> None:
    """Create a bridge network with DNS by container name (aardvark-dns)."""
    from ociimg.cli.options import parse_pairs
    from ociimg.network import config
    net = config.create(STATE.root, name, subnet=subnet, gateway=gateway, internal=internal,
                        labels=parse_pairs(label, "--label"))
    print(net.name)


@network_app.command("ls")
def ls(json_out: bool = JSON_OUT,
       quiet: bool = typer.Option(False, "--quiet", "-q", help="Names only.")) -> None:
    """List networks."""
    from ociimg.network import config
    nets = config.list_networks(STATE.root)
    if json_out:
        print_json([n.doc for n in nets])
        return
    if quiet:
        for n in nets:
            print(n.name)
        return
    print(f"{'NETWORK ID':14}{'NAME':24}{'DRIVER':10}{'SUBNET':20}INTERFACE")
    for n in nets:
        print(f"{n.doc['id'][:12]:14}{printable(n.name):24}{'bridge':10}{str(n.subnet):20}"
              f"{n.bridge}")


@network_app.command("inspect")
def inspect(names: list[str] = typer.Argument(..., help="Network names.")) -> None:
    """Show networks as JSON, with the containers attached to them."""
    from ociimg.network import config
    out = []
    users = _users()
    for name in names:
        doc = dict(config.load(STATE.root, name).doc)
        doc["containers"] = {c.id: {"name": c.name} for c in users.get(doc["name"], [])}
        out.append(doc)
    print_json(out)


@network_app.command("rm")
def rm(names: list[str] = typer.Argument(..., help="Network names."),
       force: bool = typer.Option(False, "--force", "-f",
                                  help="Remove the containers using it first.")) -> None:
    """Remove networks (refused while containers use them, unless --force)."""
    from ociimg.errors import ContainerError
    from ociimg.network import config
    users = _users()
    for name in names:
        config.check_name(name)
        using = users.get(name, [])
        if using and not force:
            raise ContainerError(f"network {name} is used by container "
                                 f"{', '.join(c.name for c in using)}",
                                 hint=f"remove them first or use: ociimg network rm -f {name}")
        manager = _manager()
        for c in using:
            manager.remove(c, force=True)
        config.remove(STATE.root, name)
        print(name)


@network_app.command("prune")
def prune(force: bool = typer.Option(False, "--force", "-f",
                                     help="Do not ask (accepted for docker's scripts).")) -> None:
    """Remove networks no container uses, and tear down what dead containers left."""
    import ociimg.network as network
    from ociimg.network import config
    network.reap()
    users = _users()
    for n in config.list_networks(STATE.root):
        if n.name != config.DEFAULT_NAME and n.name not in users:
            config.remove(STATE.root, n.name)
            print(n.name)


@app.command(rich_help_panel="Containers")
def port(name: str = typer.Argument(..., help="Container name or id."),
         private: str = typer.Argument(None, help="PORT[/PROTO] to show alone.")) -> None:
    """List a container's published ports (CTRPORT/PROTO -> HOSTIP:HOSTPORT)."""
    import ociimg.network as network
    from ociimg.errors import NotFound
    c = _manager().get(name)
    ports = network.published(c.path)
    if private:
        number, _, proto = private.partition("/")
        ports = [p for p in ports
                 if str(p.container_port) == number and p.protocol == (proto or "tcp")]
        if not ports:
            raise NotFound(f"container {c.name} does not publish {private}",
                           hint=f"list its ports: ociimg port {c.name}")
        for p in ports:
            print(f"{p.host_ip or '0.0.0.0'}:{p.host_port}")
        return
    for p in ports:
        print(p)


def _manager() -> Any:
    from ociimg.cli.containers import _manager as manager
    return manager()


def _users() -> dict[str, list[Any]]:
    """Network name → the containers of this root attached to it (any state)."""
    import ociimg.network as network
    out: dict[str, list[Any]] = {}
    for c in _manager().list():
        record = network.read_record(c.path) or {}
        for name in record.get("networks") or []:
            out.setdefault(name, []).append(c)
    return out


@network_app.command("connect")
def connect(network: str = typer.Argument(..., help="Network name."),
            container: str = typer.Argument(..., help="Container name or id."),
            alias: list[str] = typer.Option([], "--alias", help="Another DNS name there.")
            ) -> None:
    """Attach a container to another network (at once if it runs)."""
    import ociimg.network as net
    from ociimg.cli.netopts import network_options
    manager = _manager()
    c = manager.get(container)
    aliases = network_options("bridge", [], False, [], [], [], [], alias, None, None,
                              None).aliases  # the same checks as run --network-alias
    net.connect(STATE.root, c.path, c.id, network, aliases,
                running=manager.status(c).status in ("running", "paused"))


@network_app.command("disconnect")
def disconnect(network: str = typer.Argument(..., help="Network name."),
               container: str = typer.Argument(..., help="Container name or id.")) -> None:
    """Detach a container from one of its networks."""
    import ociimg.network as net
    c = _manager().get(container)
    net.disconnect(STATE.root, c.path, c.id, network)
