"""``ociimg unpack`` and ``ociimg umount``: images → runtime-spec bundles."""

from __future__ import annotations

from pathlib import Path

import typer

from ociimg.cli.app import STATE, app
from ociimg.cli.options import (
    ENV,
    HOSTNAME,
    INSECURE,
    JSON_OUT,
    PLATFORM,
    QUIET,
    USER,
    WORKDIR,
    parse_platform,
)
from ociimg.cli.output import print_json, printable, progress_for

# The stage libraries are imported inside the commands: every ociimg invocation imports
# this module to register them, and a pull must not pay for layers/bundle/runtime.


@app.command(rich_help_panel="Bundles", context_settings={"allow_interspersed_args": False})
def unpack(
    image: str = typer.Argument(..., help="Store name, oci:PATH[:TAG], or a registry "
                                "reference (pulled first)."),
    bundle: Path = typer.Argument(..., help="Bundle directory to create."),
    args: list[str] = typer.Argument(None, help="Command for the bundle (replaces Cmd)."),
    overlay: bool = typer.Option(False, "--overlay", help="Mount an overlay rootfs backed by "
                                 "the shared snapshots instead of a flattened copy."),
    platform: str = PLATFORM,
    entrypoint: str = typer.Option(None, "--entrypoint", help="Replace the image's "
                                   "Entrypoint ('' clears it)."),
    env: list[str] = ENV,
    workdir: str = WORKDIR,
    user: str = USER,
    hostname: str = HOSTNAME,
    tty: bool = typer.Option(False, "--tty", "-t", help="The process gets a terminal."),
    force: bool = typer.Option(False, "--force", help="Replace an existing bundle."),
    insecure: bool = INSECURE,
    print_config: bool = typer.Option(False, "--print-config",
                                      help="Print the generated config.json."),
    quiet: bool = QUIET,
    json_out: bool = JSON_OUT,
) -> None:
    """Write a runtime-spec bundle (config.json + rootfs/) for runc, crun or ociimg."""
    from ociimg.bundle import BundleOptions
    from ociimg.commands.resolve import resolve_image
    from ociimg.commands.unpack import UnpackOptions, unpack_image
    from ociimg.registry import PullOptions

    bundle_options = BundleOptions(
        args=list(args) if args else None,
        entrypoint=None if entrypoint is None else ([entrypoint] if entrypoint else []),
        env=list(env), cwd=workdir, user=user, hostname=hostname, terminal=tty)
    with progress_for(quiet, json_out) as progress:
        image_ = resolve_image(image, STATE.root, platform=parse_platform(platform),
                               pull_options=PullOptions(insecure=insecure), progress=progress)
        result = unpack_image(image_, bundle, STATE.root,
                              UnpackOptions(overlay=overlay, force=force, bundle=bundle_options),
                              progress)
    if print_config:
        print_json(result.config)
    elif json_out:
        print_json({"bundle": str(result.bundle), "rootfs": str(result.rootfs),
                    "image": image_.name, "digest": str(image_.descriptor.digest),
                    "overlay": result.overlay})
    elif not quiet:
        kind = "overlay" if overlay else "flattened"
        print(printable(f"{result.bundle}: bundle for {image_.name} ({kind} rootfs)"))


@app.command(rich_help_panel="Bundles")
def umount(bundle: Path = typer.Argument(..., help="Bundle made with unpack --overlay.")) -> None:
    """Release the overlay rootfs of a bundle made with `unpack --overlay`."""
    from ociimg.commands.unpack import umount_bundle

    umount_bundle(bundle, STATE.root)
