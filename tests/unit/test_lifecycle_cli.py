"""The CLI's global surface: --version, shell completion, global options after the
subcommand, read-only commands that create nothing, OSErrors as a message and a hint."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ociimg.cli import typer_main
from ociimg.cli.app import hoist_global_options
from ociimg.cli.oserrors import describe

REPO = str(Path(__file__).resolve().parents[2])


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ociimg", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": REPO,
                                                      **(env or {})})


def test_version() -> None:
    from ociimg import __version__
    for flag in ("--version", "-v"):
        proc = _cli(flag)
        assert (proc.returncode, proc.stdout) == (0, f"ociimg version {__version__}\n")


@pytest.mark.parametrize(("argv", "expected"), [
    (["ps", "--root", "/r", "-a"], ["--root", "/r", "ps", "-a"]),
    (["ps", "--root=/r", "--debug"], ["--root=/r", "--debug", "ps"]),
    (["logs", "c1", "--debug", "-f"], ["--debug", "logs", "c1", "-f"]),
    (["container", "inspect", "x", "--root", "/r"], ["--root", "/r", "container", "inspect",
                                                      "x"]),
    # the container's own arguments are never taken
    (["run", "--rm", "--root", "/r", "img", "sh", "--debug", "--root", "x"],
     ["--root", "/r", "run", "--rm", "img", "sh", "--debug", "--root", "x"]),
    (["run", "--name", "--debug", "img"], ["run", "--name", "--debug", "img"]),  # a value
    (["exec", "c", "ls", "--debug"], ["exec", "c", "ls", "--debug"]),
    (["ps", "--", "--debug"], ["ps", "--", "--debug"]),
    (["runtime", "--root", "/s", "state", "x"], ["runtime", "--root", "/s", "state", "x"]),
    (["--root", "/r", "ps"], ["--root", "/r", "ps"]),
    (["nosuch", "--debug"], ["nosuch", "--debug"]),
    ([], []),
])
def test_global_options_after_the_subcommand(argv: list[str], expected: list[str]) -> None:
    assert hoist_global_options(typer_main(), argv) == expected


def test_read_only_commands_create_no_root(tmp_path: Path) -> None:
    root = tmp_path / "nothing-here"
    for args in (["ps", "-a"], ["images"], ["logs", "x"], ["events", "--since", "1h",
                                                           "--until", "0s"],
                 ["container", "inspect", "x"], ["wait", "x"], ["top", "x"],
                 ["volume", "ls"], ["volume", "inspect", "x"], ["network", "ls"],
                 ["network", "inspect", "x"]):
        proc = _cli(*args, "--root", str(root))
        assert "Traceback" not in proc.stderr, proc.stderr
        assert not root.exists(), args
    assert _cli("ps", "--root", str(root)).stdout.split()[:2] == ["CONTAINER", "ID"]
    for args in (["container", "prune"], ["volume", "prune"], ["network", "prune"]):
        _cli(*args, "--root", str(root))
        assert root.is_dir(), args  # the groups' writes make it
        shutil.rmtree(root)


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_and_answers(shell: str) -> None:
    script = _cli("completion", shell)
    assert script.returncode == 0 and "_OCIIMG_COMPLETE" in script.stdout
    env = {"_OCIIMG_COMPLETE": f"complete_{shell}"}
    if shell == "bash":
        env.update(COMP_WORDS="ociimg unpa", COMP_CWORD="1")
    else:
        env.update(_TYPER_COMPLETE_ARGS="ociimg unpa", _TYPER_COMPLETE_FISH_ACTION="get-args")
    answer = _cli(env=env)
    assert "unpause" in answer.stdout and "unpack" in answer.stdout, answer
    assert _cli("completion", "tcsh").returncode != 0


@pytest.mark.parametrize(("exc", "message", "hint"), [
    (OSError(errno.EINVAL, "umount2: Invalid argument", "/b/rootfs"), "/b/rootfs: not mounted",
     "unmounted already"),
    (OSError(errno.EEXIST, "File exists", "/x"), "/x: already exists", "remove it first"),
    (OSError(errno.ENOTDIR, "Not a directory", "/f/x"), "/f/x: a part of the path is not",
     "each part"),
    (OSError(errno.EEXIST, "File exists", "/d/.tmp-1234abcd", "/d/out"), "/d: already exists",
     "remove"),
    (OSError(errno.ENOSPC, "mkdir: No space left on device"), "mkdir: no space", "free space"),
    (OSError(errno.ENOTDIR, "Not a directory", "/f/.ociimg-archive-unscwwur"),
     "/f: a part of the path", "each part"),
    (OSError(errno.ENOENT, "No such file or directory", "/nonexist/.x.tar.yt748rvx"),
     "/nonexist: no such file", "check the path"),
    (OSError(errno.EISDIR, "Is a directory", 3), "is a directory", "give a file"),
    (OSError(errno.EIO, "Input/output error", "/y"), "/y: input/output error", None),
])
def test_os_errors_read_as_messages(exc: OSError, message: str, hint: str | None) -> None:
    got_message, got_hint = describe(exc)
    assert got_message.startswith(message) and "Errno" not in got_message
    assert ".tmp-" not in got_message
    assert (hint is None and got_hint is None) or (hint and got_hint and hint in got_hint)
