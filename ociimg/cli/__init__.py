"""The ``ociimg`` command line: a thin shell over the stage libraries."""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType

import typer

from ociimg.cli import (  # noqa: F401  (registers commands)
    archive_cmds,
    build,
    changes,
    containers,
    imagelist,
    images,
    inspection,
    lifecycle,
    network,
    registryreads,
    shellcomp,
    signing,
    system,
    unpack,
    volumes,
)
from ociimg.cli.app import STATE, app, hoist_global_options
from ociimg.cli.output import printable
from ociimg.errors import OciimgError


def _report(message: str, hint: str | None) -> None:
    # Messages echo input (names, paths, document fields): escaped, one line each.
    print(f"ociimg: error: {printable(message)}", file=sys.stderr)
    if hint:
        print(f"hint: {printable(hint)}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run one command. As the process entry point (``argv`` None: the console script,
    ``python -m ociimg``) it ends the process itself, see :func:`exit_now`."""
    code = run_command(argv)
    if argv is None:
        exit_now(code)
    return code


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
    command = typer_main()
    if "_OCIIMG_COMPLETE" in os.environ:  # a shell asks for completions (shellcomp.py)
        from ociimg.cli.shellcomp import register_shells
        register_shells()
    try:
        # With standalone_mode=False, click returns typer.Exit's code instead of raising.
        args = hoist_global_options(command, argv if argv is not None else sys.argv[1:])
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


def typer_main() -> typer.core.TyperGroup:
    import typer.main

    return typer.main.get_command(app)


if __name__ == "__main__":
    sys.exit(main())
