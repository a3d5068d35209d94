"""Container lifecycle through the CLI, as docker users drive it: -dit/-di with attach and
detach keys, start/restart/wait/kill/pause/top/stats/rename, restart policies, health
checks, ps/logs/events as docker shows them. Real containers (built-in runtime, overlay
rootfs) from the busybox fixture; nothing may stay mounted afterwards."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from tests.integration.cli_helpers import assert_one_line_error, ociimg, ociimg_background
from tests.integration.runtime_helpers import REPO
from tests.waiting import wait_for_line, wait_until

pytestmark = pytest.mark.usefixtures("root")


@pytest.fixture
def image(fixture_layout: Path) -> str:
    return f"oci:{fixture_layout}:busybox"


def _status(root: Path, name: str) -> str:
    return ociimg(root, "ps", "-a", "--filter", f"name=^{name}$", "--format",
                  "{{.Status}}").stdout.strip()


def _inspect(root: Path, name: str) -> dict:
    return json.loads(ociimg(root, "container", "inspect", name).stdout)[0]


def _cli(root: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "ociimg", "--root", str(root), *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": REPO}


def test_dit_with_a_long_tmpdir_and_a_failed_run_leaves_no_container(
        ociroot: Path, image: str, tmp_path: Path) -> None:
    # sun_path has 108 bytes: the console socket once went under $TMPDIR, and the monitor
    # died with the container left "unknown", holding its name.
    long_tmp = tmp_path / ("t" * 100)
    long_tmp.mkdir()
    env = {**_env(), "TMPDIR": str(long_tmp)}
    proc = subprocess.run(_cli(ociroot, "run", "-dit", "--name", "box", image, "sh"), env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert _status(ociroot, "box").startswith("Up")
    assert _inspect(ociroot, "box")["Config"]["Tty"] is True
    ociimg(ociroot, "rm", "-f", "box")
    # A run that cannot start: no container is left, and the name is free again.
    for flags in (["-d"], []):
        failed = ociimg(ociroot, "run", *flags, "--name", "again", image, "/no/such", check=False)
        assert_one_line_error(failed, "/no/such")
        assert ociimg(ociroot, "ps", "-a", "-q").stdout == ""
    ociimg(ociroot, "run", "--name", "again", image, "true")


def test_di_keeps_stdin_open_and_attach_feeds_it(ociroot: Path, image: str) -> None:
    ociimg(ociroot, "run", "-di", "--name", "cat", image, "sh", "-c",
           "read line; echo got $line; echo err >&2; exit 3")
    assert _status(ociroot, "cat").startswith("Up")  # stdin open: read waits
    attached = ociimg(ociroot, "attach", "cat", input="hello\n", check=False)
    assert (attached.returncode, attached.stdout, attached.stderr) == (3, "got hello\n", "err\n")
    logs = ociimg(ociroot, "logs", "cat")
    assert (logs.stdout, logs.stderr) == ("got hello\n", "err\n")


def _read_until(fd: int, needle: bytes, timeout: float = 30.0) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"{needle!r} never came; got {seen!r}"
        if select.select([fd], [], [], left)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    assert needle in seen, seen
    return seen


def _type(master: int, keys: bytes, expect: bytes) -> None:
    """``keys`` typed on the terminal, then its output read until ``expect`` shows."""
    os.write(master, keys)
    _read_until(master, expect)


def _set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _on_pty(root: Path, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    """``ociimg ARGS`` on a new 30x100 terminal: (the process, the terminal's master)."""
    master, slave = pty.openpty()
    _set_size(master, 30, 100)
    proc = subprocess.Popen(_cli(root, *args), stdin=slave, stdout=slave,
                            stderr=slave, env=_env(), start_new_session=True)
    os.close(slave)
    return proc, master


def test_dit_attach_detach_keys_then_attach_again(ociroot: Path, image: str) -> None:
    ociimg(ociroot, "run", "-dit", "--name", "shell", image, "sh")
    proc, master = _on_pty(ociroot, "attach", "shell")
    try:
        _type(master, b"echo one-$((40+2))\r", b"one-42")
        os.write(master, b"\x10\x11")  # ctrl-p ctrl-q
        assert proc.wait(timeout=30) == 0
    finally:
        os.close(master)
    assert _status(ociroot, "shell").startswith("Up")
    proc, master = _on_pty(ociroot, "attach", "shell")
    try:
        _type(master, b"stty size\r", b"30 100")  # our terminal's size, given on attach
        _set_size(master, 40, 120)
        proc.send_signal(signal.SIGWINCH)  # what the kernel sends a terminal's foreground
        _type(master, b"stty size\r", b"40 120")
        _type(master, b"echo two; exit 4\r", b"two")
        assert proc.wait(timeout=30) == 4
    finally:
        os.close(master)
    assert _status(ociroot, "shell").startswith("Exited (4)")
    assert b"one-42" in ociimg(ociroot, "logs", "shell").stdout.encode()


def test_run_it_detaches_with_ctrl_p_ctrl_q(ociroot: Path, image: str) -> None:
    proc, master = _on_pty(ociroot, "run", "-it", "--name", "fg", image, "sh")
    try:
        _type(master, b"echo in-$((6*7))\r", b"in-42")
        _type(master, b"\x10\x11", b"detached from fg")
        assert proc.wait(timeout=30) == 0
    finally:
        os.close(master)
    assert _status(ociroot, "fg").startswith("Up")  # it runs on, its output in the log
    assert "in-42" in ociimg(ociroot, "logs", "fg").stdout
    attached = ociimg(ociroot, "attach", "fg", input="exit 6\n", check=False)
    assert attached.returncode == 6


def test_start_restart_wait_kill_pause_rename(ociroot: Path, image: str) -> None:
    ociimg(ociroot, "run", "--name", "once", image, "sh", "-c", "echo ran; exit 5",
           check=False)
    started = ociimg(ociroot, "start", "-a", "once", check=False)
    assert (started.returncode, started.stdout) == (5, "ran\n")
    assert ociimg(ociroot, "logs", "once").stdout == "ran\nran\n"  # attached runs logged too
    ociimg(ociroot, "run", "-d", "--name", "sleeper", image, "sleep", "300")
    ociimg(ociroot, "pause", "sleeper")
    assert _status(ociroot, "sleeper").endswith("(Paused)")
    assert "sleeper" in ociimg(ociroot, "ps", "--format", "{{.Names}}").stdout  # listed
    assert_one_line_error(ociimg(ociroot, "pause", "sleeper", check=False),
                          "cannot pause container sleeper: it is paused, not running")
    ociimg(ociroot, "unpause", "sleeper")
    assert_one_line_error(ociimg(ociroot, "unpause", "sleeper", check=False),
                          "cannot unpause container sleeper: it is running, not paused")
    top = ociimg(ociroot, "top", "sleeper").stdout.splitlines()
    assert top[0].split()[:2] == ["USER", "PID"] and "sleep 300" in top[1]
    stats = json.loads(ociimg(ociroot, "stats", "--no-stream", "--json", "sleeper").stdout)
    assert stats[0]["pids"] == 1 and 0 < stats[0]["memUsage"] <= stats[0]["memLimit"]
    ociimg(ociroot, "rename", "sleeper", "napper")
    assert_one_line_error(ociimg(ociroot, "top", "sleeper", check=False), "no such container")
    ociimg(ociroot, "restart", "-t", "1", "napper")
    assert _status(ociroot, "napper").startswith("Up")
    ociimg(ociroot, "kill", "-s", "KILL", "napper")
    waited = ociimg(ociroot, "wait", "napper", "once")
    assert waited.stdout.split() == ["137", "5"]
    assert_one_line_error(ociimg(ociroot, "kill", "-s", "NOPE", "once", check=False),
                          "invalid signal")


def test_restart_policies_and_stop(ociroot: Path, image: str) -> None:
    ociimg(ociroot, "run", "-d", "--name", "flaky", "--restart", "on-failure:2", image,
           "sh", "-c", "echo try; exit 1")
    wait_until(lambda: _status(ociroot, "flaky").startswith("Exited (1)"), "retries done")
    assert _inspect(ociroot, "flaky")["RestartCount"] == 2
    assert ociimg(ociroot, "logs", "flaky").stdout == "try\n" * 3
    ociimg(ociroot, "run", "-d", "--name", "forever", "--restart", "always", image,
           "sh", "-c", "sleep 0.2")
    wait_until(lambda: _inspect(ociroot, "forever")["RestartCount"] >= 2, "restarted")
    ociimg(ociroot, "stop", "-t", "1", "forever")
    count = _inspect(ociroot, "forever")["RestartCount"]
    assert _status(ociroot, "forever").startswith("Exited")
    assert _inspect(ociroot, "forever")["HostConfig"]["RestartPolicy"]["Name"] == "always"
    time.sleep(0.5)  # a stopped container stays stopped
    assert _inspect(ociroot, "forever")["RestartCount"] == count
    assert_one_line_error(ociimg(ociroot, "run", "--rm", "--restart", "always", image, "true",
                                 check=False), "--restart and --rm")


def test_health_checks(ociroot: Path, image: str) -> None:
    ociimg(ociroot, "run", "-d", "--name", "doc", "--health-cmd", "test -e /tmp/ok",
           "--health-interval", "100ms", "--health-retries", "2", image, "sleep", "300")
    wait_until(lambda: _status(ociroot, "doc").endswith("(unhealthy)"), "unhealthy")
    health = _inspect(ociroot, "doc")["State"]["Health"]
    assert health["FailingStreak"] >= 2 and health["Log"][-1]["ExitCode"] == 1
    ociimg(ociroot, "exec", "doc", "touch", "/tmp/ok")
    wait_until(lambda: _status(ociroot, "doc").endswith("(healthy)"), "healthy")
    assert ociimg(ociroot, "ps", "-q", "--filter", "health=healthy").stdout.strip()
    ociimg(ociroot, "rm", "-f", "doc")


def test_ps_logs_events_and_bulk_removal(ociroot: Path, image: str) -> None:
    ociimg(ociroot, "run", "--name", "old", "-l", "tier=db", image, "sh", "-c",
           "echo a; echo b >&2; echo c", check=False)
    ociimg(ociroot, "run", "-d", "--name", "new", image, "sleep", "300")
    rows = ociimg(ociroot, "ps", "-a", "--format", "{{.Names}}|{{.Status}}").stdout.split("\n")
    assert rows[0].startswith("new|Up ") and rows[1].startswith("old|Exited (0) ")
    assert rows[1].endswith(" ago")
    assert ociimg(ociroot, "ps", "-q").stdout.strip() == _inspect(ociroot, "new")["Id"][:12]
    assert ociimg(ociroot, "ps", "-aq", "--no-trunc", "-f", "label=tier=db").stdout.strip() \
        == _inspect(ociroot, "old")["Id"]
    assert ociimg(ociroot, "ps", "-aq", "-f", "status=exited", "-f", "ancestor=busybox"
                  ).stdout.strip() == _inspect(ociroot, "old")["Id"][:12]
    table = ociimg(ociroot, "ps", "-a", "-s").stdout.splitlines()
    assert table[0].split()[-2:] == ["NAMES", "SIZE"]
    logs = ociimg(ociroot, "logs", "old")
    assert (logs.stdout, logs.stderr) == ("a\nc\n", "b\n")
    ociimg(ociroot, "run", "--name", "lines", image, "sh", "-c", "echo 1; echo 2; printf 3")
    assert ociimg(ociroot, "logs", "--tail", "2", "lines").stdout == "2\n3"
    ociimg(ociroot, "rm", "lines")
    stamped = ociimg(ociroot, "logs", "-t", "old").stdout.splitlines()
    assert stamped[0].endswith("Z a") and stamped[0][:4].isdigit()
    assert ociimg(ociroot, "logs", "--since", "2099-01-01T00:00:00Z", "old").stdout == ""
    events = [json.loads(line) for line in ociimg(
        ociroot, "events", "--since", "1h", "--until", "0s", "--json",
        "--filter", "container=old").stdout.splitlines()]
    assert [e["Action"] for e in events] == ["create", "start", "die"]
    old_id = _inspect(ociroot, "old")["Id"]
    assert ociimg(ociroot, "container", "prune").stdout.split() == [old_id]
    ociimg(ociroot, "stop", "-a", "-t", "1")
    ociimg(ociroot, "rm", "-a")
    assert ociimg(ociroot, "ps", "-aq").stdout == ""
    actions = [json.loads(line)["Action"] for line in ociimg(
        ociroot, "events", "--since", "1h", "--until", "0s", "--json",
        "--filter", "container=new").stdout.splitlines()]
    assert actions[-2:] == ["stop", "destroy"]


def test_events_follow_new_events(ociroot: Path, image: str) -> None:
    ociimg(ociroot, "run", "--name", "before", image, "true")
    follower = ociimg_background(ociroot, "events", "--json", "--filter", "event=die")
    try:
        ociimg(ociroot, "run", "--name", "after", image, "sh", "-c", "exit 9", check=False)
        line = wait_for_line(follower, '"die"')
    finally:
        follower.kill()
        follower.wait()
    event = json.loads(line)
    attrs = event["Actor"]["Attributes"]
    assert (attrs["name"], attrs["exitCode"]) == ("after", "9")  # "before" is the past
