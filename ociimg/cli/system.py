"""``ociimg system df|prune|reset`` (commands/system.py)."""

from __future__ import annotations

import sys

import typer

from ociimg.cli.app import STATE, app
from ociimg.cli.options import JSON_OUT
from ociimg.cli.output import print_json, printable

system_app = typer.Typer(help="Disk usage, prune and reset of the whole root.",
                         no_args_is_help=True, rich_markup_mode=None,
                         context_settings={"help_option_names": ["-h", "--help"]})
app.add_typer(system_app, name="system", rich_help_panel="Other")


@system_app.callback()
def system_options(ctx: typer.Context) -> None:
    # df only reads; reset removes the root: neither may create it.
    if ctx.invoked_subcommand == "prune":
        from ociimg.cli.app import ensure_root
        ensure_root()


@system_app.command("df")
def df(json_out: bool = JSON_OUT) -> None:
    """Disk space used by images, containers, volumes and the build cache."""
    from ociimg.commands.listing import human_size
    from ociimg.commands.system import disk_usage
    rows = disk_usage(STATE.root)
    if json_out:
        print_json([{"Type": r.kind, "TotalCount": r.total, "Active": r.active,
                     "Size": r.size, "Reclaimable": r.reclaimable} for r in rows])
        return
    print(f"{'TYPE':16}{'TOTAL':8}{'ACTIVE':8}{'SIZE':12}RECLAIMABLE")
    for r in rows:
        share = f" ({r.reclaimable * 100 // r.size}%)" if r.size else ""
        print(f"{r.kind:16}{r.total:<8}{r.active:<8}{human_size(r.size):12}"
              f"{human_size(r.reclaimable)}{share}")


@system_app.command("prune")
def prune(
    all_: bool = typer.Option(False, "--all", "-a", help="Every image no container uses, "
                              "not only the dangling ones."),
    volumes: bool = typer.Option(False, "--volumes", help="Anonymous volumes no container "
                                 "uses too."),
    force: bool = typer.Option(False, "--force", "-f", help="Do not ask."),
) -> None:
    """Remove stopped containers, unused networks, dangling images and the build cache."""
    from ociimg.commands.listing import human_size
    from ociimg.commands.system import prune as prune_root
    what = ["all stopped containers", "all networks not used by a container",
            "all images without a container" if all_ else "all dangling images",
            "the build cache"] + (["all anonymous volumes not used by a container"]
                                  if volumes else [])
    _confirm(what, force)
    report = prune_root(STATE.root, all_images=all_, volumes=volumes)
    for title, items in (("Deleted Containers", report.containers),
                         ("Deleted Networks", report.networks),
                         ("Deleted Images", report.images),
                         ("Deleted Volumes", report.volumes)):
        if items:
            print(f"{title}:")
            for item in items:
                print(printable(item))
            print()
    print(f"Total reclaimed space: {human_size(report.bytes_freed)}")


@system_app.command("reset")
def reset(force: bool = typer.Option(False, "--force", "-f", help="Do not ask.")) -> None:
    """Stop and remove every container, image, volume, network and the build cache of
    the root, tear down their network attachments and mounts, and remove the root."""
    from ociimg.commands.system import reset as reset_root
    _confirm([f"all containers, images, volumes, networks and build cache in "
              f"{STATE.root}", "their network attachments and mounts"], force)
    report = reset_root(STATE.root)
    for warning in report.warnings:
        print(f"warning: {printable(warning)}", file=sys.stderr)
    print(f"Removed {len(report.containers)} containers and {printable(str(STATE.root))}")
    if report.networks or report.unmounted:
        print(f"Tore down {len(set(report.networks))} leftover network attachments, "
              f"unmounted {len(report.unmounted)} leftover mounts")


def _confirm(what: list[str], force: bool) -> None:
    """podman's prompt, answered on stdin (no answer, or end of input, is no)."""
    if force:
        return
    print("WARNING! This will remove:", file=sys.stderr)
    for line in what:
        print(f"        - {printable(line)}", file=sys.stderr)
    print("Are you sure you want to continue? [y/N] ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline()
    if answer.strip().lower() not in ("y", "yes"):
        print("ociimg: nothing removed", file=sys.stderr)
        raise typer.Exit(1)
