"""exec through `ociimg serve`: docker-py and docker's CLI as clients; the exit code
recorded before the stream closes (trap 22), half-close (trap 6), ttys, hostile input."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.integration.apiserver import ApiServer
from tests.integration.streamclient import Hijack, demux, make_container

pytestmark = pytest.mark.integration


@pytest.fixture
def running(api: ApiServer, api_busybox: str, fixture_layout: Path) -> Any:
    return make_container(api, fixture_layout, "sleep", "600", name="box", start=True)


def test_exec_run_output_and_exit_code(api: ApiServer, running: Any) -> None:
    low = api.client().api
    exe = low.exec_create(running.id, ["sh", "-c", "echo out; echo err >&2; exit 7"])
    out = low.exec_start(exe["Id"], demux=True)
    assert out == (b"out\n", b"err\n")
    doc = low.exec_inspect(exe["Id"])
    assert (doc["Running"], doc["ExitCode"], doc["ContainerID"]) == (False, 7, running.id)
    assert doc["ProcessConfig"]["entrypoint"] == "sh"


def test_exec_inspect_while_running_has_null_exit_code(api: ApiServer, running: Any) -> None:
    low = api.client().api
    exe = low.exec_create(running.id, ["sh", "-c", "read x"], stdin=True)
    h = Hijack(api, f"/exec/{exe['Id']}/start", body=b'{"Detach":false,"Tty":false}')
    assert h.status == 101
    doc = low.exec_inspect(exe["Id"])
    assert doc["Running"] is True and doc["ExitCode"] is None
    h.sock.shutdown(socket.SHUT_WR)
    assert h.read_all() == b""
    doc = low.exec_inspect(exe["Id"])  # right after the stream closed: recorded already
    assert doc["Running"] is False and doc["ExitCode"] == 1


def test_exec_stdin_half_close_reaches_cat(api: ApiServer, running: Any) -> None:
    low = api.client().api
    exe = low.exec_create(running.id, ["cat"], stdin=True)
    h = Hijack(api, f"/v1.41/exec/{exe['Id']}/start", body=b'{}')
    # 1 MiB through the pipe, binary but for ctrl-p (the detach keys' first)
    payload = bytes(b for b in range(256) if b != 0x10) * 4096

    def send() -> None:  # as docker's clients do: writing and reading side by side
        h.sock.sendall(payload)
        h.sock.shutdown(socket.SHUT_WR)
    sender = threading.Thread(target=send)
    sender.start()
    out, err = demux(h.read_all())
    sender.join()
    assert (len(out), len(err)) == (len(payload), 0)
    assert out == payload
    assert low.exec_inspect(exe["Id"])["ExitCode"] == 0


def test_exec_start_errors_before_the_hijack(api: ApiServer, running: Any) -> None:
    h = Hijack(api, "/exec/nosuch/start", body=b"{}")
    assert h.status == 404 and b"No such exec instance" in h.body()
    low = api.client().api
    exe = low.exec_create(running.id, ["true"])
    low.exec_start(exe["Id"])
    h = Hijack(api, f"/exec/{exe['Id']}/start", body=b"{}")
    assert h.status == 409 and b"has already run" in h.body()


def test_exec_tty_is_raw(api: ApiServer, running: Any) -> None:
    low = api.client().api
    exe = low.exec_create(running.id, ["sh", "-c", "tty; echo err >&2"], tty=True)
    out = low.exec_start(exe["Id"], tty=True)
    assert out.startswith(b"/dev/pts/") and out.endswith(b"err\r\n")
    assert low.exec_inspect(exe["Id"])["ExitCode"] == 0


def test_exec_detached(api: ApiServer, running: Any) -> None:
    low = api.client().api
    exe = low.exec_create(running.id, ["sh", "-c", "echo x > /tmp/detached"])
    low.exec_start(exe["Id"], detach=True)
    from tests.waiting import wait_until
    wait_until(lambda: low.exec_inspect(exe["Id"])["Running"] is False, "the exec ended")
    check = low.exec_create(running.id, ["cat", "/tmp/detached"])
    assert low.exec_start(check["Id"]) == b"x\n"


def test_exec_argv_of_100k_arguments(api: ApiServer, running: Any) -> None:
    low = api.client().api
    exe = low.exec_create(running.id, ["sh", "-c", 'echo "$#"', "sh"] + ["a"] * 100_000)
    assert low.exec_start(exe["Id"]) == b"100000\n"


def test_exec_on_a_stopped_container_is_409(api: ApiServer, api_busybox: str,
                                            fixture_layout: Path) -> None:
    c = make_container(api, fixture_layout, "true")
    body = json.dumps({"Cmd": ["true"]}).encode()
    h = Hijack(api, f"/containers/{c.id}/exec", body=body, upgrade=False)
    assert h.status == 409 and b"is not running" in h.body()
