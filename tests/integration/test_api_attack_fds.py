"""Clients that hold more connections open than the server has file descriptors: it stops
accepting while they do (one line in its log each time, no traceback) and serves again once
they let go."""

from __future__ import annotations

import socket
import subprocess

import pytest

from tests.integration.apiserver import ApiServer
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


def test_out_of_descriptors_then_serving_again(api: ApiServer) -> None:
    assert api.proc is not None
    subprocess.run(["prlimit", f"--pid={api.proc.pid}", "--nofile=64:64"], check=True)
    held = []
    try:
        for _ in range(100):  # past the limit: the listen backlog takes the rest
            sock = socket.socket(socket.AF_UNIX)
            held.append(sock)
            sock.connect(str(api.socket))
        wait_until(lambda: "cannot accept connections" in api.server_log(),
                   "the server ran out of descriptors")
    finally:
        for sock in held:
            sock.close()
    wait_until(api.answers, "ociimg serve accepting again")
    assert api.docker("version", "--format", "{{.Server.APIVersion}}").stdout.strip()
