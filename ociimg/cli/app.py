"""The typer app and the options every command shares."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


# Commands that only read: they never create the root (a typo in --root, or a first
# `ociimg ps` on a fresh machine, must not leave an empty store behind).
READ_ONLY = frozenset({"images", "ps", "inspect", "logs", "events", "top", "stats", "wait",
                       "completion", "version", "port", "history", "diff", "attach",
                       "ls", "cat", "du", "manifest", "digest", "list-tags", "referrers"})


def _version(value: bool) -> None:
    if value:
        from ociimg.cli import print_version

        print_version()
        raise typer.Exit(0)


@app.callback()
def main_options(
    ctx: typer.Context,
    root: Path = typer.Option(None, "--root", help="Where ociimg keeps everything "
                              "(default $OCIIMG_ROOT, else /var/lib/ociimg as root)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
    version: bool = typer.Option(False, "--version", "-v", is_eager=True, callback=_version,
                                 help="Print the version and exit."),
) -> None:
    STATE.root = (root or default_root()).absolute()
    STATE.debug = debug
    if ctx.invoked_subcommand not in READ_ONLY and ctx.invoked_subcommand not in GROUPS:
        ensure_root()


# Command groups decide in their own callback (``container inspect`` only reads).
GROUPS = frozenset({"container", "system", "volume", "network"})


def group_options(ctx: typer.Context) -> None:
    """The callback of a command group whose reads (``volume ls``) must not create the
    root while its writes (``volume rm``) need it."""
    if ctx.invoked_subcommand not in READ_ONLY:
        ensure_root()


def ensure_root() -> None:
    """Every command that writes below the root goes through here first, also those that
    never open the store (run of an oci: layout makes containers/ and snapshots/)."""
    with contextlib.suppress(OSError):  # a root we cannot create fails where it is used
        make_private(STATE.root)


GLOBAL_FLAGS = ("--debug",)
GLOBAL_VALUES = ("--root",)


def hoist_global_options(group: Any, argv: list[str]) -> list[str]:
    """``ociimg ps --root X`` as ``ociimg --root X ps``: the global options given after
    the subcommand move before it. Only where they are options of ours: never after
    ``--``, never in a command's own arguments (``run IMAGE sh --debug`` is the
    container's), never for ``runtime`` (the runc-compatible CLI has its own --root)."""
    head: list[str] = []
    i = 0
    while i < len(argv) and argv[i].startswith("-"):  # the group's own options
        i += 2 if argv[i] in GLOBAL_VALUES else 1
    if i >= len(argv):
        return argv
    command = getattr(group, "commands", {}).get(argv[i])
    if command is None or argv[i] == "runtime":
        return argv
    rest, moved = _scan(command, argv[i + 1:])
    head = argv[:i] + moved + [argv[i]]
    return head + rest


def _scan(command: Any, args: list[str]) -> tuple[list[str], list[str]]:
    """(what stays, what moves) for the arguments of ``command``."""
    takes_value = {o for p in command.params if not getattr(p, "is_flag", True)
                   and getattr(p, "param_type_name", "") == "option"
                   for o in (*p.opts, *p.secondary_opts)}
    own = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
    interspersed = command.context_settings.get("allow_interspersed_args", True)
    stay: list[str] = []
    moved: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name = arg.split("=", 1)[0]
        if arg == "--":
            return stay + args[i:], moved
        if name in (*GLOBAL_FLAGS, *GLOBAL_VALUES) and name not in own:
            step = 2 if arg in GLOBAL_VALUES else 1
            moved += args[i:i + step]
            i += step
            continue
        if not arg.startswith("-") or arg == "-":
            sub = getattr(command, "commands", {}).get(arg)
            if sub is not None:  # a sub-group's command (container inspect ...)
                rest, more = _scan(sub, args[i + 1:])
                return stay + [arg] + rest, moved + more
            if not interspersed:
                return stay + args[i:], moved
        stay.append(arg)
        i += 2 if arg in takes_value else 1
        if arg in takes_value and i - 1 < len(args):
            stay.append(args[i - 1])
    return stay, moved
