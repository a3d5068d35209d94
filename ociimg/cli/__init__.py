"""The ``ociimg`` command line: a thin shell over the stage libraries."""

from __future__ import annotations

import gc
import importlib
import os
import sys
from types import ModuleType
from typing import TYPE_CHECKING

from ociimg.cli.output import printable
from ociimg.errors import OciimgError

if TYPE_CHECKING:
    from collections.abc import Callable

    import typer

# The modules of ociimg/cli that define commands (importing one registers them on `app`).
COMMAND_MODULES = (
    "archive_cmds",
    "build",
    "changes",
    "containers",
    "imagelist",
    "images",
    "inspection",
    "lifecycle",
    "network",
    "registryreads",
    "serve",
    "shellcomp",
    "signing",
    "system",
    "unpack",
    "volumes",
)
# Where a command (or a command group) is defined, so that `ociimg NAME` imports typer,
# the app and that one module, not every command's options and imports
# (tests/integration/test_cli_startup.py holds the budgeted commands to it and checks
# this table). A command missing here still works: an unknown name imports every module,
# as do `--help`, a bare `ociimg` and shell completion.
_HOMES = {
    "archive_cmds": "save load tag",
    "build": "build",
    "changes": "diff commit export cp",
    "containers": "run ps stop rm exec logs runtime",
    "imagelist": "images",
    "images": "pull push copy inspect rmi gc fsck login logout",
    "inspection": "history ls cat du",
    "lifecycle": "attach start restart wait kill pause unpause rename top stats events "
                 "container",
    "network": "port network",
    "registryreads": "manifest digest list-tags delete sync referrers",
    "serve": "serve",
    "shellcomp": "completion",
    "signing": "sign verify key",
    "system": "system",
    "unpack": "unpack umount",
    "volumes": "volume",
}
COMMAND_HOMES = {name: module for module, names in _HOMES.items() for name in names.split()}
# Global options that take a value (app.main_options): skipped to find the command.
_VALUE_OPTIONS = ("--root",)


def _report(message: str, hint: str | None) -> None:
    # Messages echo input (names, paths, document fields): escaped, one line each.
    print(f"ociimg: error: {printable(message)}", file=sys.stderr)
    if hint:
        print(f"hint: {printable(hint)}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run one command. As the process entry point (``argv`` None: the console script,
    ``python -m ociimg``) it ends the process itself, see :func:`exit_now`."""
    args = sys.argv[1:] if argv is None else argv
    if args in (["--version"], ["-v"]):  # no typer, no app: the cheapest answer
        code = print_version()
    elif argv is None:
        # Start-up (typer, the command's modules, click's objects) allocates thousands of
        # objects and frees none: the collector's passes over them are waste (~5% of
        # `ociimg ps`). Afterwards they are frozen out of its sight, and it runs again for
        # what the command itself allocates.
        gc.disable()
        code = run_command(args, on_ready=_collect_from_now)
        exit_now(code)
    else:
        code = run_command(args)
    return code


def _collect_from_now() -> None:
    gc.freeze()
    gc.enable()


def print_version() -> int:
    # The package is loaded (this module is in it); naming it in an import would make the
    # layers contract see ociimg -> ociimg.library, which the package loads lazily.
    print(f"ociimg version {sys.modules['ociimg'].__version__}")
    return 0


def command_name(args: list[str]) -> str | None:
    """The subcommand ``args`` names, after the global options; None for none (help)."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return args[i + 1] if i + 1 < len(args) else None
        if not arg.startswith("-"):
            return arg
        i += 2 if arg in _VALUE_OPTIONS else 1
    return None


def register_commands(args: list[str] | None = None) -> str | None:
    """Import the module defining the command ``args`` names, or every command module
    (no ``args``, an unknown or no command, or a shell asking for completions); returns
    the name when it is a known command."""
    complete = args is None or "_OCIIMG_COMPLETE" in os.environ
    name = None if complete else command_name(args)  # type: ignore[arg-type]
    home = COMMAND_HOMES.get(name or "")
    for module in (home,) if home else COMMAND_MODULES:
        importlib.import_module(f"ociimg.cli.{module}")
    return name if home else None


def exit_now(code: int) -> None:
    """Flush and leave without the interpreter's teardown: unloading the ~600 modules a
    pull imports (pydantic through typer, requests) costs ~60 ms and does nothing we
    need. Every store write is already fsynced and closed; non-daemon threads are done
    (pools are joined inside the commands); logging and stdio are flushed here."""
    if "logging" in sys.modules:  # not imported just to shut it down (4 ms)
        sys.modules["logging"].shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`ociimg images | head`)
            pass
    os._exit(code)


def run_command(argv: list[str] | None = None, *,
                on_ready: Callable[[], None] | None = None) -> int:
    """Run one command, its errors reported as one line; ``on_ready`` is called once the
    command is built, before it runs."""
    import typer

    from ociimg.cli.app import STATE, hoist_global_options

    args = argv if argv is not None else sys.argv[1:]
    command = typer_main(args)
    if on_ready is not None:
        on_ready()
    if "_OCIIMG_COMPLETE" in os.environ:  # a shell asks for completions (shellcomp.py)
        from ociimg.cli.shellcomp import register_shells
        register_shells()
    try:
        # With standalone_mode=False, click returns typer.Exit's code instead of raising.
        args = hoist_global_options(command, args)
        result = command.main(args=args, prog_name="ociimg", standalone_mode=False)
    except OciimgError as exc:
        if STATE.debug:
            raise
        _report(exc.message, exc.hint)
        return exc.exit_code
    except OSError as exc:
        if STATE.debug:
            raise
        from ociimg.cli.oserrors import describe
        _report(*describe(exc))
        return 1
    except typer.Exit as exc:
        return exc.exit_code
    except click_exceptions().ClickException as exc:
        exc.show()
        # docker's CLI: a bad flag or value is the tool's own error, 125 (not click's 2),
        # so scripts tell it from a container's exit code.
        return 125 if isinstance(exc, click_exceptions().UsageError) else exc.exit_code
    except typer.Abort as exc:
        # click turns an EOFError from anywhere into Abort: truncated input (a gzip stream
        # that ends early, say) is bad input, not a user's Ctrl-C.
        if isinstance(exc.__context__, EOFError):
            _report(f"unexpected end of input: {exc.__context__ or 'no more data'}",
                    "the file or stream is truncated; fetch or write it again")
            return 1
        print("ociimg: interrupted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("ociimg: interrupted", file=sys.stderr)
        return 130
    return result if isinstance(result, int) else 0


def click_exceptions() -> ModuleType:
    """The click that typer raises usage errors from: typer >= 0.2x vendors click as
    ``typer._click`` (whose exceptions the real click's classes do not catch: usage
    errors ended in tracebacks); older typer uses click itself."""
    try:
        return importlib.import_module("typer._click.exceptions")
    except ImportError:
        return importlib.import_module("click.exceptions")


def typer_main(args: list[str] | None = None) -> typer.core.TyperGroup:
    """The app as a click group, with the commands ``args`` needs registered (every
    command without ``args``). For a known command, a group of that one command (or
    command group): typer builds a click command from each function's signature
    (inspect, every option), ~1 ms a command, and a module registers several (`ps`
    comes with `run`'s 60 options)."""
    import copy

    import typer.main

    from ociimg.cli.app import app

    only = register_commands(args)
    if only is None:
        return typer.main.get_command(app)
    view = copy.copy(app)  # the app itself keeps every command (tests call main() again)
    view.registered_commands = [c for c in app.registered_commands
                                if typer_command_name(c) == only]
    view.registered_groups = [g for g in app.registered_groups if g.name == only]
    return typer.main.get_command(view)


def typer_command_name(info: typer.models.CommandInfo) -> str:
    from typer.main import get_command_name

    return info.name or get_command_name(info.callback.__name__)  # type: ignore[union-attr]


if __name__ == "__main__":
    sys.exit(main())
