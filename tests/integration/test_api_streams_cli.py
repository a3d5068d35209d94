"""docker's own CLI (20.10, API 1.41) through attach, logs and exec of `ociimg serve`:
`docker run` (attach before start), `-i` with stdin at EOF, `-t` on a real pty, `logs`
with its options, `exec` and its exit codes."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.apiserver import DOCKER_CLI, ApiServer
from tests.integration.streamclient import make_container

pytestmark = pytest.mark.integration


@pytest.fixture
def cli(api: ApiServer, api_busybox: str) -> ApiServer:
    """The server, with busybox in its store."""
    return api


def test_run_echo_exact_stdout_and_exit_codes(cli: ApiServer) -> None:
    out = cli.docker("run", "--rm", "busybox", "echo", "hi")
    assert (out.stdout, out.stderr) == ("hi\n", "")
    three = cli.docker("run", "--rm", "busybox", "sh", "-c", "echo e >&2; exit 3", check=False)
    assert (three.returncode, three.stdout, three.stderr) == (3, "", "e\n")


def test_run_interactive_with_stdin_at_eof(cli: ApiServer) -> None:
    data = "".join(f"line {i}\n" for i in range(20000))
    out = cli.docker("run", "-i", "--rm", "busybox", "cat", input=data, timeout=60)
    assert out.stdout == data
    wc = cli.docker("run", "-i", "--rm", "busybox", "wc", "-l", input=data)
    assert wc.stdout.strip() == "20000"


def _spawn_on_pty(api: ApiServer, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    master, slave = pty.openpty()
    proc = subprocess.Popen([DOCKER_CLI, *args], stdin=slave, stdout=slave, stderr=slave,
                            env=api.env(), start_new_session=True)
    os.close(slave)
    return proc, master


def _read_until(master: int, needle: bytes, timeout: float = 30) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"{needle!r} never came; got {seen!r}"
        if select.select([master], [], [], left)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    assert needle in seen, f"{needle!r} never came; got {seen!r}"
    return seen


def test_run_it_shell_typed_on_a_pty(cli: ApiServer) -> None:
    proc, master = _spawn_on_pty(cli, "run", "-it", "--rm", "busybox", "sh")
    try:
        _read_until(master, b"# ")
        os.write(master, b"echo $((6*7)); stty size\r")
        seen = _read_until(master, b"42")
        os.write(master, b"exit 4\r")
        assert proc.wait(timeout=60) == 4, seen
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()


def test_logs_follow_tail_timestamps_and_streams_apart(cli: ApiServer) -> None:
    cli.docker("run", "--name", "lg", "busybox", "sh", "-c",
               "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done")
    logs = cli.docker("logs", "lg")
    assert logs.stdout == "".join(f"out{i}\n" for i in range(1, 6))
    assert logs.stderr == "".join(f"err{i}\n" for i in range(1, 6))
    cli.docker("run", "--name", "tl", "busybox", "seq", "1", "5000")
    assert cli.docker("logs", "--tail", "2", "tl").stdout == "4999\n5000\n"
    assert cli.docker("logs", "--tail", "0", "tl").stdout == ""
    assert cli.docker("logs", "--tail", "all", "tl").stdout.count("\n") == 5000
    stamped = cli.docker("logs", "-t", "lg").stdout.splitlines()
    assert stamped[0].endswith("Z out1") and stamped[0][4] == "-" and len(stamped) == 5
    assert cli.docker("logs", "--until", "2000-01-01T00:00:00Z", "lg").stdout == ""
    assert cli.docker("logs", "--since", "2000-01-01T00:00:00Z", "lg").stdout == logs.stdout


def test_logs_follow_ends_when_the_container_stops(cli: ApiServer) -> None:
    cli.docker("run", "-d", "--name", "fl", "busybox", "sh", "-c",
               "echo first; read x; echo second")
    follow = subprocess.Popen([DOCKER_CLI, "logs", "-f", "fl"], env=cli.env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    from tests.waiting import wait_for_line
    wait_for_line(follow, "first")
    cli.docker("stop", "-t", "1", "fl")
    assert follow.wait(timeout=60) == 0


def test_exec_exit_codes_stdin_and_missing_command(cli: ApiServer, fixture_layout: Path
                                                   ) -> None:
    make_container(cli, fixture_layout, "sleep", "600", name="ex", start=True)
    assert cli.docker("exec", "ex", "echo", "hi").stdout == "hi\n"
    assert cli.docker("exec", "ex", "sh", "-c", "exit 5", check=False).returncode == 5
    out = cli.docker("exec", "-i", "ex", "cat", input="hi\n", timeout=30)
    assert out.stdout == "hi\n"  # stdin's EOF reached cat: no hang (trap 6)
    missing = cli.docker("exec", "ex", "nosuch", check=False)
    assert missing.returncode in (126, 127), missing
    assert "nosuch" in missing.stdout + missing.stderr


def test_exec_t_on_a_pty(cli: ApiServer, fixture_layout: Path) -> None:
    make_container(cli, fixture_layout, "sleep", "600", name="ext", start=True)
    proc, master = _spawn_on_pty(cli, "exec", "-it", "ext", "sh")
    try:
        _read_until(master, b"# ")
        os.write(master, b"tty; exit 6\r")
        _read_until(master, b"/dev/pts/")
        assert proc.wait(timeout=60) == 6
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()


def test_attach_to_a_running_container_and_detach(cli: ApiServer, fixture_layout: Path
                                                  ) -> None:
    make_container(cli, fixture_layout, "sh", name="at", tty=True,
                            interactive=True, start=True)
    proc, master = _spawn_on_pty(cli, "attach", "at")
    try:
        os.write(master, b"echo attached-$((1+1))\r")
        _read_until(master, b"attached-2")
        os.write(master, b"\x10\x11")  # ctrl-p ctrl-q: detached, it runs on
        _read_until(master, b"read escape sequence")
        # The CLI finds the keys itself and returns its EscapeError: exit status 1.
        assert proc.wait(timeout=30) == 1
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    assert cli.docker("exec", "at", "true").returncode == 0


def test_run_t_and_logs_of_a_tty_container_are_raw(cli: ApiServer) -> None:
    # input=b"": bytes out, no newline translation hiding the pty's \r\n
    out = cli.docker("run", "-t", "--name", "tt", "busybox", "sh", "-c", "echo hi; echo e >&2",
                     input=b"")
    assert (out.stdout, out.stderr) == (b"hi\r\ne\r\n", b"")
    assert cli.docker("logs", "tt", input=b"").stdout == b"hi\r\ne\r\n"


def test_docker_py_exec_run_logs_stream_and_attach(cli: ApiServer) -> None:
    client = cli.client()
    box = client.containers.run("busybox", ["sh", "-c", "echo started; read x; echo got $x"],
                                detach=True, stdin_open=True, name="py")
    code, output = box.exec_run(["sh", "-c", "echo out; echo err >&2; exit 2"])
    assert (code, output) == (2, b"out\nerr\n")
    code, (out, err) = box.exec_run(["sh", "-c", "echo out; echo err >&2"], demux=True)
    assert (code, out, err) == (0, b"out\n", b"err\n")
    stream = box.logs(stream=True, follow=True)
    assert next(stream) == b"started\n"
    sock = box.attach_socket(params={"stdin": 1, "stream": 1})
    sock._sock.sendall(b"line\n")
    assert b"".join(stream) == b"got line\n"  # follow ended with the container
    sock.close()
    assert box.wait()["StatusCode"] == 0
    assert box.attach(stdout=True, stderr=True, logs=True) == b"started\ngot line\n"
