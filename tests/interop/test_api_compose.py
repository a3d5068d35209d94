"""Debian's docker-compose 1.29 (Python, on python3-docker 5.0.3) against `ociimg serve`:
a web server and a client that reaches it by service name on the project's network;
`logs` shows both; a recreated service and a one-off `run` still find each other;
`down` leaves no container, network, veth, netns or rule behind; a foreground `up`
follows the containers' events and exits with the client's code."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import need
from tests.integration.apiserver import ApiServer
from tests.integration.network_helpers import host_state, netns_mounts, network_doc

COMPOSE = "/usr/bin/docker-compose"
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
    command: ["sh", "-c", "until wget -qO- http://web/; do sleep 0.1; done;
              echo client-done; exit CODE"]
"""
CLEAN = {"netns": [], "attached": [], "locks": [], "leases": [], "rules": [],
         "bridge": False, "veths": 0}


def project_dir(tmp_path: Path, client_exit: int = 0) -> Path:
    need(os.access(COMPOSE, os.X_OK), "docker-compose missing: apt-get install docker-compose")
    project = tmp_path / "project"
    project.mkdir()
    (project / "docker-compose.yml").write_text(COMPOSE_FILE.replace("CODE", str(client_exit)))
    return project


def compose(api: ApiServer, project: Path, name: str, *args: str,
            code: int = 0) -> subprocess.CompletedProcess[str]:
    """docker-compose -p NAME in ``project`` against the server; must exit ``code`` (it
    reports its progress on stderr, the containers' output on stdout)."""
    proc = subprocess.run([COMPOSE, "--ansi", "never", "-p", name, *args], cwd=project,
                          env=api.env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == code, (f"docker-compose {' '.join(args)} exited "
                                     f"{proc.returncode}\n{proc.stdout}\n{proc.stderr}\n"
                                     f"server log: {api.server_log()[-3000:]}")
    return proc


def test_two_services_by_name_logs_recreate_and_down_leaves_nothing(
        api: ApiServer, api_busybox: str, tmp_path: Path) -> None:
    project, name = project_dir(tmp_path), "apicompose"
    up = compose(api, project, name, "up", "-d").stderr
    assert f'Creating network "{name}_default"' in up, up
    # The client fetched the page from `web` by its service name, then exited 0.
    assert api.docker("wait", f"{name}_client_1", timeout=60).stdout.strip() == "0"
    logs = compose(api, project, name, "logs").stdout
    assert "client_1  | hello-compose" in logs and "client_1  | client-done" in logs, logs
    assert "response:200" in logs, logs  # httpd -v in web_1 logged the client's request
    web, client = (api.docker("inspect", "--format", "{{.Id}}", f"{name}_{s}_1")
                   .stdout.strip() for s in ("web", "client"))
    doc = network_doc(api.root, f"{name}_default")
    bridge, subnet = doc["network_interface"], doc["subnets"][0]["subnet"]
    running = host_state([web, client], bridge, subnet)
    assert running["netns"] == [web] and running["veths"] == 1, running
    # Recreating reads the old container and its image (ContainerConfig at API 1.41); a
    # one-off `run` of the client reaches the new web by name and is removed after.
    recreated = compose(api, project, name, "up", "-d", "--force-recreate", "-t", "1", "web").stderr
    assert f"Recreating {name}_web_1" in recreated, recreated
    new_web = api.docker("inspect", "--format", "{{.Id}}", f"{name}_web_1").stdout.strip()
    assert new_web != web
    ran = compose(api, project, name, "run", "--rm", "client")
    assert ran.stdout == "hello-compose\nclient-done\n", ran
    down = compose(api, project, name, "down", "-t", "1").stderr
    assert f"Removing network {name}_default" in down, down
    assert api.docker("ps", "-aq").stdout == ""
    assert f"{name}_default" not in api.docker("network", "ls", "--format",
                                               "{{.Name}}").stdout.split()
    cids = [web, new_web, client]
    assert host_state(cids, bridge, subnet) == CLEAN
    # (other tests on this machine may hold netns of their own meanwhile)
    assert [m for m in netns_mounts() if Path(m).name in cids] == []


def test_foreground_up_exits_with_the_clients_code(api: ApiServer, api_busybox: str,
                                                   tmp_path: Path) -> None:
    project, name = project_dir(tmp_path, client_exit=3), "apiabort"
    ran = compose(api, project, name, "up", "--abort-on-container-exit", "--exit-code-from",
                  "client", "-t", "1", code=3)
    out = ran.stdout + ran.stderr
    assert "client_1  | hello-compose" in out, out
    assert f"{name}_client_1 exited with code 3" in out, out
    states = api.docker("ps", "-a", "--format", "{{.Names}} {{.State}}").stdout.split("\n")
    assert sorted(states) == ["", f"{name}_client_1 exited", f"{name}_web_1 exited"], states
    compose(api, project, name, "down", "-t", "1")
    assert api.docker("ps", "-aq").stdout == ""
