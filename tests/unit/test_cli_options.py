"""The CLI's value parsing and help output (no root, no network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ociimg.cli import main
from ociimg.cli.options import parse_pairs, parse_security_opts, parse_size
from ociimg.errors import OciimgError

COMMANDS = ["pull", "push", "copy", "images", "inspect", "rmi", "gc", "fsck", "login",
            "logout", "unpack", "umount", "run", "ps", "stop", "rm", "logs"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_working_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--help"]) == 0
    assert "Usage: ociimg " + command in capsys.readouterr().out


@pytest.mark.parametrize("text,expected", [
    ("65536", 65536), ("512m", 512 << 20), ("1g", 1 << 30), ("1.5k", 1536), ("64MB", 64 << 20),
])
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "-1m", "1t", "m"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(OciimgError):
        parse_size(text)


def test_parse_security_opts_and_pairs() -> None:
    assert parse_security_opts(["seccomp=unconfined"]) == {"seccomp": False}
    assert parse_security_opts(["no-new-privileges=false"]) == {"no_new_privileges": False}
    with pytest.raises(OciimgError, match="apparmor"):
        parse_security_opts(["apparmor=unconfined"])
    assert parse_pairs(["a=b", "c="]) == {"a": "b", "c": ""}
    with pytest.raises(OciimgError):
        parse_pairs(["novalue"])


def test_bad_input_is_one_line_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["--root", str(tmp_path), "pull", "Not/Valid"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ociimg: error: ") and "Traceback" not in err
    assert main(["--root", str(tmp_path), "inspect", "missing:1"]) == 1
    assert "hint: " in capsys.readouterr().err


def test_terminal_progress_renders(capsys: pytest.CaptureFixture[str]) -> None:
    """The TTY path (rich bars) is not taken under pytest; drive it directly."""
    from ociimg.cli.output import RichProgress

    with RichProgress() as progress:
        progress.start("sha256:ab", "blob sha256:ab", 10)
        progress.advance("sha256:ab", 10)
        progress.done("sha256:ab", "verified")
        progress.log("a log line")
    assert "a log line" in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["pull"], "Missing argument"),
    (["--bogus"], "No such option: --bogus"),
    (["pull", "--jobs", "0", "x"], "--jobs"),
])
def test_usage_errors_exit_125_with_a_message(argv: list[str], message: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """typer vendors click: its usage errors must end with click's message, not a
    traceback, and docker's 125 (not click's 2): the tool's own error, not a container's."""
    assert main(argv) == 125
    assert message in capsys.readouterr().err


def test_end_of_input_inside_a_command_is_a_one_line_error_not_an_interrupt(
        tmp_path, monkeypatch, capsys) -> None:
    # click reports any EOFError as Abort; a truncated stream must not read as Ctrl-C (130).
    import gzip

    from ociimg.cli import run_command
    from ociimg.commands import maintenance

    def truncated(*_args, **_kwargs):
        gzip.decompress(gzip.compress(b"x" * 1000)[:-12])

    monkeypatch.setattr(maintenance, "collect_garbage", truncated)
    assert run_command(["--root", str(tmp_path / "root"), "gc"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err[0].startswith("ociimg: error: unexpected end of input: "), err
    assert "interrupted" not in "\n".join(err)
