"""``ociimg volume create|ls|inspect|rm|prune``: named volumes (containers/volumes.py)."""

from __future__ import annotations

from typing import Any

import typer

from ociimg.cli.app import STATE, app, group_options
from ociimg.cli.options import JSON_OUT, parse_pairs
from ociimg.cli.output import print_json, printable

volume_app = typer.Typer(help="Manage named volumes.", no_args_is_help=True,
                         context_settings={"help_option_names": ["-h", "--help"]})
app.add_typer(volume_app, name="volume", rich_help_panel="Containers")


def _store() -> Any:
    from ociimg.containers.volumes import VolumeStore
    return VolumeStore(STATE.root)


volume_app.callback()(group_options)


@volume_app.command("create")
def create(
    name: str = typer.Argument(None, help="Volume name (default: a random id)."),
    label: list[str] = typer.Option([], "--label", help="KEY=VALUE metadata."),
) -> None:
    """Create a volume (an existing one of that name is kept, as docker does)."""
    import secrets
    store = _store()
    with store.locked():  # no name: a random one, still a named volume (docker)
        v = store.create(name or secrets.token_hex(32), labels=parse_pairs(label, "--label"),
                         exist_ok=name is not None)
    print(v.name)


@volume_app.command("ls")
def ls(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only names."),
    json_out: bool = JSON_OUT,
) -> None:
    """List volumes."""
    volumes = _store().list()
    if json_out:
        print_json([v.as_dict() for v in volumes])
        return
    if not quiet:
        print(f"{'DRIVER':10}VOLUME NAME")
    for v in volumes:
        print(v.name if quiet else f"{'local':10}{v.name}")


@volume_app.command("inspect")
def inspect(names: list[str] = typer.Argument(..., help="Volume names.")) -> None:
    """Show volumes as JSON (docker's fields)."""
    store = _store()
    print_json([store.get(n).as_dict() for n in names])


@volume_app.command("rm")
def rm(
    names: list[str] = typer.Argument(..., help="Volume names."),
    force: bool = typer.Option(False, "--force", "-f", help="Even if a container uses it."),
) -> None:
    """Remove volumes no container uses."""
    store = _store()
    for n in names:
        store.remove(n, force=force)
        print(printable(n))


@volume_app.command("prune")
def prune(
    all_: bool = typer.Option(False, "--all", "-a", help="Named volumes too."),
    force: bool = typer.Option(False, "--force", "-f", help="Accepted for docker scripts."),
) -> None:
    """Remove the anonymous volumes no container uses (with --all, named ones too)."""
    for n in _store().prune(named=all_):
        print(n)
