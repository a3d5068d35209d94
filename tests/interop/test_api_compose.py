"""Debian's docker-compose 1.29 (Python, on python3-docker 5.0.3) against `ociimg serve`:
a web server and a client that reaches it by service name on the project's network;
`logs` shows both; `down` leaves no container, network, veth, netns or rule behind."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import need
from tests.integration.apiserver import ApiServer
from tests.integration.network_helpers import host_state, netns_mounts, network_doc

COMPOSE = "/usr/bin/docker-compose"
PROJECT = "apicompose"
COMPOSE_FILE = """\
version: "3.8"
services:
  web:
    image: busybox
    command: ["sh", "-c", "mkdir -p /www && echo hello-compose > /www/index.html &&
              exec httpd -f -v -p 80 -h /www"]
  client:
    image: busybox
    depends_on: [web]
    command: ["sh", "-c", "until wget -qO- http://web/; do sleep 0.1; done; echo client-done"]
"""


def compose(api: ApiServer, project: Path, *args: str) -> str:
    """docker-compose in ``project`` against the server; must exit 0; stdout + stderr
    (compose reports its progress on stderr)."""
    proc = subprocess.run([COMPOSE, "--ansi", "never", "-p", PROJECT, *args], cwd=project,
                          env=api.env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (f"docker-compose {' '.join(args)} exited "
                                  f"{proc.returncode}\n{proc.stdout}\n{proc.stderr}\n"
                                  f"server log: {api.server_log()[-3000:]}")
    return proc.stdout + proc.stderr


def test_two_services_by_name_logs_and_down_leaves_nothing(api: ApiServer, api_busybox: str,
                                                           tmp_path: Path) -> None:
    need(os.access(COMPOSE, os.X_OK), "docker-compose missing: apt-get install docker-compose")
    project = tmp_path / "project"
    project.mkdir()
    (project / "docker-compose.yml").write_text(COMPOSE_FILE)
    mounts_before = netns_mounts()
    up = compose(api, project, "up", "-d")
    assert f'Creating network "{PROJECT}_default"' in up, up
    # The client fetched the page from `web` by its service name, then exited 0.
    assert api.docker("wait", f"{PROJECT}_client_1", timeout=60).stdout.strip() == "0"
    logs = compose(api, project, "logs", "--no-color")
    assert "client_1  | hello-compose" in logs and "client_1  | client-done" in logs, logs
    assert "response:200" in logs, logs  # httpd -v in web_1 logged the client's request
    web, client = (api.docker("inspect", "--format", "{{.Id}}", f"{PROJECT}_{s}_1")
                   .stdout.strip() for s in ("web", "client"))
    doc = network_doc(api.root, f"{PROJECT}_default")
    bridge, subnet = doc["network_interface"], doc["subnets"][0]["subnet"]
    running = host_state([web, client], bridge, subnet)
    assert running["netns"] == [web] and running["veths"] == 1, running
    down = compose(api, project, "down", "-t", "1")
    assert f"Removing network {PROJECT}_default" in down, down
    assert api.docker("ps", "-aq").stdout == ""
    assert f"{PROJECT}_default" not in api.docker("network", "ls", "--format",
                                                  "{{.Name}}").stdout.split()
    assert host_state([web, client], bridge, subnet) == {
        "netns": [], "attached": [], "locks": [], "leases": [], "rules": [],
        "bridge": False, "veths": 0}
    assert netns_mounts() == mounts_before
