"""The typer app and the options every command shares."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import typer

from ociimg.rootdir import default_root, make_private

app = typer.Typer(
    name="ociimg",
    help="Container images from registry to running process: pull, inspect, unpack, run, push.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts hold [OPTIONAL] parts, not rich markup
    context_settings={"help_option_names": ["-h", "--help"]},
)


@dataclass
class Globals:
    root: Path
    debug: bool = False


STATE = Globals(root=Path("/var/lib/ociimg"))


def _version(value: bool) -> None:
    if value:
        from ociimg.cli import print_version

        print_version()
        raise typer.Exit(0)


@app.callback()
def main_options(
    root: Path = typer.Option(None, "--root", help="Where ociimg keeps everything "
                              "(default $OCIIMG_ROOT, else /var/lib/ociimg as root)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_version,
                                 help="Print ociimg's version and exit."),
) -> None:
    STATE.root = (root or default_root()).absolute()
    STATE.debug = debug
    # Every command that writes below the root goes through here first, also those that
    # never open the store (run of an oci: layout makes containers/ and snapshots/).
    with contextlib.suppress(OSError):  # a root we cannot create fails where it is used
        make_private(STATE.root)
