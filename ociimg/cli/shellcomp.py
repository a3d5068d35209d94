"""``ociimg completion bash|zsh|fish``: the shell's completion script. The script calls
``ociimg`` back with ``_OCIIMG_COMPLETE`` set, which click answers before any command runs
(commands, options, container and image names are not looked up: no store is opened)."""

from __future__ import annotations

import typer

from ociimg.cli.app import app
from ociimg.errors import InvalidArgument

SHELLS = ("bash", "zsh", "fish")


@app.command(rich_help_panel="Other")
def completion(shell: str = typer.Argument(..., help="bash, zsh or fish.")) -> None:
    """Print a shell completion script: `source <(ociimg completion bash)`, or save it as
    ~/.local/share/bash-completion/completions/ociimg (zsh: a _ociimg file on $fpath; fish:
    ~/.config/fish/completions/ociimg.fish)."""
    print(completion_script(shell))


def completion_script(shell: str) -> str:
    if shell not in SHELLS:
        raise InvalidArgument(f"unsupported shell {shell!r}", hint="use bash, zsh or fish")
    from typer._click.shell_completion import get_completion_class

    from ociimg.cli import typer_main
    register_shells()
    cls = get_completion_class(shell)
    assert cls is not None  # completion_init registered all three
    return str(cls(typer_main(), {}, "ociimg", "_OCIIMG_COMPLETE").source())


def register_shells() -> None:
    """typer's bash/zsh/fish classes (registered by typer only with add_completion)."""
    from typer._completion_classes import completion_init
    completion_init()
