"""`ociimg serve`'s container endpoints driven by Debian's docker CLI (20.10) and
docker-py: create, start, ps, inspect, stop, kill, restart, pause, top, stats, rename, rm,
prune, wait, and `docker run -d` with its exit codes."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

import pytest

from tests.integration.apiserver import ApiServer
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


def inspect(api: ApiServer, name: str) -> dict:
    return json.loads(api.docker("inspect", name).stdout)[0]


def state(api: ApiServer, name: str) -> str:
    return inspect(api, name)["State"]["Status"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_lifecycle_through_the_cli(api: ApiServer, api_busybox: str) -> None:
    cid = api.docker("create", "--name", "life", "-e", "GREETING=hi", "-l", "tier=web",
                     "busybox", "sh", "-c", "trap 'exit 42' USR1; sleep 300 & wait"
                     ).stdout.strip()
    assert len(cid) == 64
    doc = inspect(api, "life")
    assert doc["Id"] == cid and doc["Name"] == "/life"
    assert doc["State"]["Status"] == "created" and doc["State"]["Running"] is False
    assert doc["Config"]["Tty"] is False and doc["Config"]["Image"] == "busybox"
    assert "GREETING=hi" in doc["Config"]["Env"]
    assert any(e.startswith("PATH=") for e in doc["Config"]["Env"])  # the image's, as dockerd
    assert doc["Config"]["Labels"] == {"tier": "web"}
    assert doc["Path"] == "sh" and doc["Args"][0] == "-c"
    assert doc["Driver"] == "overlay2" and doc["Image"].startswith("sha256:")
    assert doc["Created"].endswith("Z") and "." in doc["Created"]
    ps = api.docker("ps", "-a", "--format", "{{.Names}} {{.Status}}").stdout
    assert "life Created" in ps
    assert "life" not in api.docker("ps", "--format", "{{.Names}}").stdout

    api.docker("start", "life")
    doc = inspect(api, "life")
    assert doc["State"]["Running"] is True and doc["State"]["Pid"] > 0
    assert doc["State"]["StartedAt"] != "0001-01-01T00:00:00Z"
    assert api.docker("ps", "--format", "{{.Names}} {{.Status}}").stdout.startswith("life Up")
    again = api.docker("start", "life")  # 304: the CLI says nothing's wrong
    assert again.returncode == 0

    top = api.docker("top", "life").stdout.splitlines()
    assert "PID" in top[0] and any("sleep 300" in line for line in top[1:])

    stats = json.loads(api.docker("stats", "--no-stream", "--format", "{{json .}}",
                                  "life").stdout)
    assert stats["Name"] == "life" and stats["PIDs"] == "2"
    assert stats["MemUsage"] != "0B / 0B"

    api.docker("pause", "life")
    assert state(api, "life") == "paused"
    assert "(Paused)" in api.docker("ps", "--format", "{{.Status}}").stdout
    api.docker("unpause", "life")
    assert state(api, "life") == "running"

    api.docker("kill", "-s", "USR1", "life")  # its trap exits 42
    wait_until(lambda: state(api, "life") == "exited", "SIGUSR1 ended it", timeout=30)
    assert inspect(api, "life")["State"]["ExitCode"] == 42

    api.docker("restart", "-t", "1", "life")
    assert state(api, "life") == "running"
    api.docker("stop", "-t", "1", "life")
    doc = inspect(api, "life")
    assert doc["State"]["Status"] == "exited" and doc["State"]["ExitCode"] == 137
    assert "Exited (137)" in api.docker("ps", "-a", "--format", "{{.Status}}").stdout
    assert api.docker("stop", "life").returncode == 0  # 304

    api.docker("rename", "life", "renamed")
    assert inspect(api, "renamed")["Name"] == "/renamed"
    api.docker("rm", "renamed")
    assert api.docker("ps", "-aq").stdout.strip() == ""
    gone = api.docker("inspect", "renamed", check=False)
    assert gone.returncode == 1 and "No such" in gone.stderr


def test_run_detached_publishes_a_port(api: ApiServer, api_busybox: str) -> None:
    port = free_port()
    api.docker("run", "-d", "--name", "web", "-p", f"127.0.0.1:{port}:80", "busybox",
               "sh", "-c", "echo hello-api > /tmp/index.html && httpd -f -p 80 -h /tmp")

    def fetch() -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html",
                                        timeout=5) as r:
                return r.read().decode()
        except OSError:
            return None
    wait_until(lambda: fetch() == "hello-api\n", "httpd answers on the published port",
               timeout=30)
    doc = inspect(api, "web")
    assert doc["NetworkSettings"]["Ports"] == {"80/tcp": [{"HostIp": "127.0.0.1",
                                                           "HostPort": str(port)}]}
    bridge = doc["NetworkSettings"]["Networks"]["bridge"]
    assert bridge["IPAddress"] and bridge["Gateway"] and bridge["MacAddress"]
    assert doc["HostConfig"]["NetworkMode"] == "default"  # what the CLI sent, as dockerd shows it
    ps = api.docker("ps", "--format", "{{.Ports}} {{.Networks}}").stdout
    assert f"127.0.0.1:{port}->80/tcp" in ps and "bridge" in ps
    netio = api.docker("stats", "--no-stream", "--format", "{{.NetIO}}", "web").stdout
    assert not netio.startswith("0B /"), netio  # the container's eth0, read in its netns
    rm = api.docker("rm", "web", check=False)  # running: refused
    assert rm.returncode != 0 and "You cannot remove a running container" in rm.stderr
    api.docker("rm", "-f", "web")
    assert fetch() is None


def test_run_detached_options(api: ApiServer, api_busybox: str) -> None:
    api.docker("run", "-d", "--name", "opts", "-e", "A=1", "-v", "data:/data",
               "--network", "none", "--restart", "on-failure:2", "busybox",
               "sh", "-c", "ip -o link > /data/links; echo $A > /data/a; sleep 300")
    doc = inspect(api, "opts")
    assert doc["HostConfig"]["RestartPolicy"] == {"Name": "on-failure",
                                                  "MaximumRetryCount": 2}
    assert doc["HostConfig"]["NetworkMode"] == "none"
    assert list(doc["NetworkSettings"]["Networks"]) == ["none"]
    assert [m for m in doc["Mounts"] if m["Type"] == "volume"][0]["Name"] == "data"
    data = api.root / "volumes" / "data" / "_data"
    wait_until(lambda: (data / "a").exists(), "the container wrote its volume", timeout=30)
    assert (data / "a").read_text() == "1\n"
    links = (data / "links").read_text()
    assert "lo:" in links and "eth0" not in links  # --network none: loopback only


def test_wait_and_exit_codes(api: ApiServer, api_busybox: str) -> None:
    api.docker("create", "--name", "w", "busybox", "sh", "-c", "exit 3")
    api.docker("start", "w")
    assert api.docker("wait", "w").stdout.strip() == "3"
    missing = api.docker("run", "-d", "busybox", "/no/such/program", check=False)
    assert missing.returncode == 127, missing.stderr
    denied = api.docker("run", "-d", "busybox", "/etc/passwd", check=False)
    assert denied.returncode == 126, denied.stderr
    bad = api.docker("run", "-d", "--ulimit", "nofile=10:5", "busybox", "true", check=False)
    assert bad.returncode == 125


def test_docker_py_wait_before_start(api: ApiServer, api_busybox: str) -> None:
    """The docker CLI's order for `run`: wait(next-exit) answered with headers first,
    then start; a fast container's exit is not missed; --rm's removed condition."""
    client = api.client()
    c = client.containers.create("busybox", ["sh", "-c", "exit 5"], name="fast")
    import threading
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(
        client.api.wait(c.id, condition="next-exit")))
    t.start()
    c.start()
    t.join(60)
    assert result == {"StatusCode": 5, "Error": None}
    c.remove()
    auto = client.containers.create("busybox", ["sh", "-c", "exit 7"], auto_remove=True)
    t = threading.Thread(target=lambda: result.update(
        client.api.wait(auto.id, condition="removed")))
    t.start()
    auto.start()
    t.join(60)
    assert result["StatusCode"] == 7
    assert client.containers.list(all=True) == []


def test_name_conflict_and_prune(api: ApiServer, api_busybox: str) -> None:
    first = api.docker("create", "--name", "dup", "busybox", "true").stdout.strip()
    second = api.docker("create", "--name", "dup", "busybox", "true", check=False)
    assert second.returncode != 0
    assert (f'Conflict. The container name "/dup" is already in use by container "{first}"'
            in second.stderr)
    api.docker("run", "-d", "--name", "keep", "--label", "k=1", "busybox", "sleep", "300")
    api.docker("create", "--name", "other", "--label", "k=2", "busybox", "true")
    out = api.docker("container", "prune", "-f", "--filter", "label=k=2").stdout
    assert "Total reclaimed space" in out
    names = set(api.docker("ps", "-a", "--format", "{{.Names}}").stdout.split())
    assert names == {"dup", "keep"}
    api.docker("container", "prune", "-f")
    assert set(api.docker("ps", "-a", "--format", "{{.Names}}").stdout.split()) == {"keep"}


def test_ps_filters(api: ApiServer, api_busybox: str) -> None:
    api.docker("run", "-d", "--name", "a1", "-l", "role=db", "busybox", "sleep", "300")
    api.docker("create", "--name", "b1", "busybox", "true")

    def names(*args: str) -> set[str]:
        return set(api.docker("ps", "-a", "--format", "{{.Names}}", *args).stdout.split())
    assert names("--filter", "label=role=db") == {"a1"}
    assert names("--filter", "status=created") == {"b1"}
    assert names("--filter", "name=b") == {"b1"}
    assert names("--filter", "ancestor=busybox") == {"a1", "b1"}
    api.docker("create", "--name", "c1", "--network", "none", "busybox", "true")
    assert names("--filter", "network=bridge") == {"a1", "b1"}
    assert names("--filter", "network=none") == {"c1"}
    assert api.docker("ps", "--filter", "bogus=1", check=False).returncode != 0
    client = api.client()
    assert [c.name for c in client.containers.list(filters={"label": "role=db"})] == ["a1"]
    assert len(client.containers.list(all=True, limit=1)) == 1


def test_missing_image_is_pulled_by_the_cli(api: ApiServer,
                                            pushed_fixtures: dict[str, str]) -> None:
    """create answers 404 "No such image" and never pulls itself; the CLI then pulls
    through /images/create (another module's endpoint) and creates again."""
    import docker.errors
    ref = pushed_fixtures["busybox"]
    with pytest.raises(docker.errors.ImageNotFound, match=f"No such image: {ref}"):
        api.client().containers.create(ref, ["true"])
    assert not any((api.root / "containers").glob("[0-9a-f]*"))
    made = api.docker("create", "--name", "pulled", ref, "true", check=False)
    assert f"Unable to find image '{ref}' locally" in made.stderr  # our 404, the CLI's pull
    if made.returncode != 0:  # until /images/create is served (h-apiimg's endpoint)
        assert "page not found" in made.stderr, made.stderr
        return
    api.docker("start", "pulled")
    assert api.docker("wait", "pulled").stdout.strip() == "0"


def test_tty_stdin_and_server_restart(api: ApiServer, api_busybox: str) -> None:
    """-dit: the monitor owns the pty and keeps stdin open (sh waits on it), so the
    container outlives a killed server; a restarted server lists and stops it."""
    api.docker("run", "-dit", "--name", "term", "busybox", "sh")
    doc = inspect(api, "term")
    assert (doc["Config"]["Tty"], doc["Config"]["OpenStdin"]) == (True, True)
    assert doc["State"]["Running"] is True
    pid = doc["State"]["Pid"]
    import signal
    api.stop(signal.SIGKILL)  # no chance to clean up: the container never needed it
    api.start()
    doc = inspect(api, "term")
    assert doc["State"]["Running"] is True and doc["State"]["Pid"] == pid
    assert api.docker("ps", "--format", "{{.Names}}").stdout.split() == ["term"]
    api.docker("kill", "-s", "9", "term")
    assert api.docker("wait", "term").stdout.strip() == "137"


def test_docker_py_inspect_stats_health(api: ApiServer, api_busybox: str) -> None:
    client = api.client()
    c = client.containers.run("busybox", ["sleep", "300"], detach=True, name="py",
                              labels={"app": "x"}, environment={"K": "v"},
                              healthcheck={"test": ["CMD", "true"], "interval": 10**9},
                              tty=True)
    c.reload()
    assert c.name == "py" and c.status == "running" and c.labels == {"app": "x"}
    assert c.attrs["Config"]["Tty"] is True and "K=v" in c.attrs["Config"]["Env"]
    assert c.attrs["State"]["Health"]["Status"] in ("starting", "healthy")
    one = c.stats(stream=False)
    assert one["memory_stats"]["usage"] > 0 and one["pids_stats"]["current"] == 1
    assert one["cpu_stats"]["online_cpus"] >= 1 and one["precpu_stats"]["system_cpu_usage"]
    stream = c.stats(stream=True, decode=True)
    first, second = next(stream), next(stream)
    assert second["preread"] == first["read"]
    assert second["cpu_stats"]["system_cpu_usage"] > first["cpu_stats"]["system_cpu_usage"]
    stream.close()
    top = c.top()
    assert "PID" in top["Titles"] and len(top["Processes"]) == 1
    c.kill(signal="SIGKILL")
    assert c.wait()["StatusCode"] == 137
    c.remove()


def test_user_network_aliases(api: ApiServer, api_busybox: str) -> None:
    """--network NAME --network-alias: the alias resolves from another container on that
    network, and inspect shows it (compose reads Aliases)."""
    import subprocess
    import sys

    from tests.integration.runtime_helpers import REPO
    subprocess.run([sys.executable, "-m", "ociimg", "--root", str(api.root), "network",
                    "create", "apinet"], check=True, capture_output=True, timeout=60,
                   env={**api.env(), "PYTHONPATH": REPO})
    try:
        api.docker("run", "-d", "--name", "srv", "--network", "apinet", "--network-alias",
                   "database", "busybox", "sleep", "300")
        net = inspect(api, "srv")["NetworkSettings"]["Networks"]["apinet"]
        assert "database" in net["Aliases"] and net["IPAddress"]
        api.docker("run", "-d", "--name", "cli", "--network", "apinet", "-v", "out:/out",
                   "busybox", "sh", "-c", "nslookup database > /out/r 2>&1; touch /out/done")
        out = api.root / "volumes" / "out" / "_data"
        wait_until(lambda: (out / "done").exists(), "the client looked the alias up",
                   timeout=60)
        assert net["IPAddress"] in (out / "r").read_text()
    finally:
        api.docker("rm", "-f", "srv", "cli", check=False)
        subprocess.run([sys.executable, "-m", "ociimg", "--root", str(api.root), "network",
                        "rm", "apinet"], capture_output=True, timeout=60,
                       env={**api.env(), "PYTHONPATH": REPO})


def test_wait_headers_come_before_start(api: ApiServer, api_busybox: str) -> None:
    """The Go CLI's `run` reads wait's 200 headers, then starts (trap 4): the headers
    must be flushed while the container is still only created, the body written at its
    exit. A raw request, to see the headers arrive before start is called."""
    client = api.client()
    c = client.containers.create("busybox", ["sh", "-c", "exit 9"])
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(30)
        sock.connect(str(api.socket))
        sock.sendall(f"POST /v1.41/containers/{c.id}/wait?condition=next-exit HTTP/1.1\r\n"
                     "Host: docker\r\nContent-Length: 0\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(4096)
        assert data.startswith(b"HTTP/1.1 200")
        assert client.api.inspect_container(c.id)["State"]["Status"] == "created"
        c.start()
        while b"StatusCode" not in data:
            chunk = sock.recv(4096)
            assert chunk, data
            data += chunk
    assert b'{"StatusCode": 9, "Error": null}' in data


def test_auto_remove_and_restart_count(api: ApiServer, api_busybox: str) -> None:
    api.docker("run", "-d", "--rm", "--name", "gone", "busybox", "true")
    wait_until(lambda: api.docker("ps", "-aq").stdout.strip() == "",
               "the --rm container removed by its monitor", timeout=30)
    api.docker("run", "-d", "--name", "again", "--restart", "on-failure:2", "busybox",
               "sh", "-c", "exit 3")
    wait_until(lambda: inspect(api, "again")["State"]["Status"] == "exited"
               and inspect(api, "again")["RestartCount"] == 2, "two restarts, then exited",
               timeout=60)
    assert inspect(api, "again")["State"]["ExitCode"] == 3


def test_create_warnings(api: ApiServer, api_busybox: str, tmp_path: Path) -> None:
    """What `ociimg run` would print as a warning is create's Warnings (the CLI shows
    them): here the image's runtime-reserved labels, left out of the annotations."""
    import subprocess
    import sys

    from tests.integration.runtime_helpers import REPO
    (tmp_path / "Containerfile").write_text("FROM busybox\nLABEL run.oci.keep_fds=1\n")
    subprocess.run([sys.executable, "-m", "ociimg", "--root", str(api.root), "build", "-t",
                    "labeled", str(tmp_path)], check=True, capture_output=True, timeout=300,
                   env={**api.env(), "PYTHONPATH": REPO})
    made = api.client().api.create_container("labeled", ["true"])
    assert any("run.oci.keep_fds" in w for w in made["Warnings"]), made
    out = api.docker("create", "labeled", "true")
    assert "run.oci.keep_fds" in out.stderr
