"""ociimg-runtime's own command-line parser: the runc grammar that podman/conmon,
containerd's shim and CRI-O use (global options, command, options and positionals in any
order, ``--opt=value``, ``--`` ends options, exec's command taken verbatim)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ociimg.runtime.cli import UsageError, main, parse_args, usage


def test_conmon_create_line() -> None:
    # What conmon passes (libpod/oci_conmon_linux.go + conmon's runtime args).
    args = parse_args(["--root", "/run/r", "--log", "/l", "--log-format", "json", "create",
                       "--bundle", "/b", "--pid-file", "/p", "--console-socket", "/s",
                       "--no-new-keyring", "cid"])
    assert (args.root, args.log, args.log_format, args.verb) == ("/run/r", "/l", "json",
                                                                 "create")
    assert (args.bundle, args.pid_file, args.console_socket, args.id) == ("/b", "/p", "/s",
                                                                         "cid")
    assert args.no_new_keyring and not args.no_pivot and args.preserve_fds == 0


def test_defaults_and_attached_values() -> None:
    args = parse_args(["run", "c1", "--bundle=/x", "-d", "--preserve-fds=2"])
    assert (args.id, args.bundle, args.detach, args.preserve_fds) == ("c1", "/x", True, 2)
    assert parse_args(["create", "c2"]).bundle == "."


def test_kill_optional_signal_and_all() -> None:
    assert parse_args(["kill", "c"]).signal == "SIGTERM"
    args = parse_args(["kill", "-a", "c", "KILL"])
    assert (args.id, args.signal, args.all) == ("c", "KILL", True)


def test_double_dash_ends_options() -> None:
    assert parse_args(["delete", "--", "-odd-id"]).id == "-odd-id"


def test_exec_command_is_taken_verbatim() -> None:
    args = parse_args(["exec", "-t", "-e", "A=1", "-e", "B=2", "c", "sh", "-c", "x -- y", "--"])
    assert (args.id, args.tty, args.env) == ("c", True, ["A=1", "B=2"])
    assert args.command == ["sh", "-c", "x -- y", "--"]
    assert parse_args(["exec", "c", "--", "ls", "-l"]).command == ["ls", "-l"]
    assert parse_args(["exec", "-p", "/proc.json", "-d", "c"]).command == []


@pytest.mark.parametrize("argv, message", [
    (["bogus"], "unknown command"),
    (["start"], "missing ID"),
    (["delete", "a", "b"], "unexpected argument 'b'"),
    (["create", "--nope", "c"], "unknown option --nope"),
    (["create", "--preserve-fds", "x", "c"], "not a number"),
    (["create", "c", "--bundle"], "--bundle needs a value"),
    (["list", "-f", "yaml"], "must be one of table, json"),
    (["--log-format", "xml", "list"], "must be one of text, json"),
    (["delete", "--force=yes", "c"], "takes no value"),
    (["update", "c"], "--resources is required"),
])
def test_usage_errors(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_args(argv)


def test_main_reports_usage_errors_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["start"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ociimg-runtime: error: ociimg-runtime start: missing ID\n")
    assert "Traceback" not in err


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "commands:" in out and "exec" in out and "--root" in out
    assert main(["exec", "--help"]) == 0
    assert "ID COMMAND [ARG...]" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert "spec: " in capsys.readouterr().out
    assert main([]) == 2


def test_every_command_has_help() -> None:
    from ociimg.runtime.cli import COMMANDS
    for verb in COMMANDS:
        assert usage(verb).startswith(f"usage: ociimg-runtime {verb}")


def test_systemd_cgroup_is_refused_as_its_help_says(capsys: pytest.CaptureFixture[str],
                                                    tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from ociimg.runtime import cli
    # main would route every later test's log records to this test's stderr
    monkeypatch.setattr(cli, "route_logging", lambda log: None)
    assert "not supported, refused" in usage()
    assert main(["--root", str(tmp_path), "--systemd-cgroup", "state", "c1"]) == 1
    err = capsys.readouterr().err
    assert "systemd cgroup manager is not supported" in err and "hint: " in err


def test_version_is_the_package_version_and_the_spec(capsys: pytest.CaptureFixture[str]) -> None:
    from ociimg import __version__
    from ociimg.runtime import SPEC_VERSION
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.split() == ["ociimg-runtime", "version", __version__,
                                               "spec:", SPEC_VERSION]


def test_usage_error_reaches_the_log_past_every_global_value(tmp_path: Path) -> None:
    log = tmp_path / "log.json"
    assert main(["--root", str(tmp_path), "--rootless", "auto", "--criu", "x", "--log",
                 str(log), "--log-format", "json", "start"]) == 2
    entry = json.loads(log.read_text())
    assert entry["level"] == "error" and "missing ID" in entry["msg"]


@pytest.mark.parametrize(("msg", "field"), [
    ("nope", "nope"),                                  # one safe word: bare, as logrus
    ("container not running", '"container not running"'),
    ('exec: "x": not found', '"exec: \\"x\\": not found"'),  # a quote cannot end the field
    ("a\\b\nc\x01\u2028", '"a\\\\b\\nc\\x01\\u2028"'),       # Go's %q escapes
])
def test_text_log_quotes_msg_as_logrus(tmp_path: Path, msg: str, field: str) -> None:
    from ociimg.runtime.cli import _Log
    log = tmp_path / "log"
    _Log(str(log), "text", False).write("error", msg)
    assert log.read_text().split(" level=error msg=", 1)[1] == field + "\n"


def test_events_interval_takes_go_durations() -> None:
    from ociimg.errors import InvalidArgument
    from ociimg.runtime.cli import parse_interval
    assert [parse_interval(t) for t in ("5s", "500ms", "1m", "1.5s")] == [5, 0.5, 60, 1.5]
    for bad in ("5", "0s", "-1s", "xs", "5ns"):
        with pytest.raises(InvalidArgument):
            parse_interval(bad)
    args = parse_args(["events", "--stats", "--interval", "1s", "c1"])
    assert (args.verb, args.stats, args.interval, args.id) == ("events", True, "1s", "c1")
