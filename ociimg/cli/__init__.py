"""The ``ociimg`` command line: a thin shell over the stage libraries."""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType
from typing import TYPE_CHECKING

from ociimg.cli.output import printable
from ociimg.errors import OciimgError

if TYPE_CHECKING:
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
    else:
        code = run_command(args)
    if argv is None:
        exit_now(code)
    return code


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


def register_commands(args: list[str] | None = None) -> None:
    """Import the module defining the command ``args`` names, or every command module
    (no ``args``, an unknown or no command, or a shell asking for completions)."""
    complete = args is None or "_OCIIMG_COMPLETE" in os.environ
    home = None if complete else COMMAND_HOMES.get(command_name(args) or "")  # type: ignore[arg-type]
    for module in (home,) if home else COMMAND_MODULES:
        importlib.import_module(f"ociimg.cli.{module}")


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


def run_command(argv: list[str] | None = None) -> int:
    import typer

    from ociimg.cli.app import STATE, hoist_global_options

    args = argv if argv is not None else sys.argv[1:]
    command = typer_main(args)
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
    command without ``args``)."""
    import typer.main

    from ociimg.cli.app import app

    register_commands(args)
    return typer.main.get_command(app)


if __name__ == "__main__":
    sys.exit(main())
