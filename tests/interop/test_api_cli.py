"""Issue 14's "done when", driven through Debian's docker CLI 20.10 (API 1.41) pointed at
`ociimg serve`: each test is a user's scenario across endpoints, checked by its result
(what the container printed, what the host reaches, what the registry holds), not by
the server's answers alone."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.integration.apiserver import DOCKER_CLI, ApiServer
from tests.integration.cli_helpers import ociimg
from tests.integration.registry_server import RegistryServer
from tests.interop.api_helpers import (
    PtyDocker,
    free_port,
    http_get,
    wait_for_http,
    web_command,
)
from tests.waiting import wait_for_line, wait_until


def status(api: ApiServer, name: str) -> str:
    """docker ps -a's STATUS of ``name`` ("" when it is not listed)."""
    out = api.docker("ps", "-a", "--format", "{{.Names}} {{.Status}}").stdout
    return next((line.split(" ", 1)[1] for line in out.splitlines()
                 if line.split(" ", 1)[0] == name), "")


def fetch_inside(api: ApiServer, name: str, url: str) -> str:
    """What busybox wget in container ``name`` gets from ``url`` (retried while the server
    there starts)."""
    got: list[str] = []

    def fetched() -> bool:
        proc = api.docker("exec", name, "wget", "-qO-", url, check=False)
        got.append(proc.stdout if proc.returncode == 0 else "")
        return proc.returncode == 0

    wait_until(fetched, f"{name} never fetched {url}")
    return got[-1]


def test_run_it_shell_on_a_terminal(api: ApiServer, api_busybox: str) -> None:
    term = PtyDocker(api, "run", "--rm", "-it", api_busybox, "sh")
    try:
        term.expect(b"# ")  # the shell's prompt: docker's terminal is raw by now
        term.send("echo $((6*7))\r")
        term.expect(b"42\r\n")  # computed by the shell: the typed line shows 6*7
        term.send("tty; exit 3\r")
        term.expect(b"/dev/pts/")
        assert term.wait() == 3, term.seen
    finally:
        term.close()
    assert api.docker("ps", "-aq").stdout == ""  # --rm removed it


def test_web_server_published_port_ps_exec_cp_stop_rm(api: ApiServer, api_busybox: str,
                                                      tmp_path: Path) -> None:
    port = free_port()
    cid = api.docker("run", "-d", "-p", f"127.0.0.1:{port}:80", "--name", "web", api_busybox,
                     *web_command("hello-from-web")).stdout.strip()
    assert len(cid) == 64
    url = f"http://127.0.0.1:{port}"
    assert wait_for_http(f"{url}/") == "hello-from-web\n"
    line = api.docker("ps", "--format", "{{.ID}} {{.Names}} {{.Status}} {{.Ports}}").stdout
    assert line.split(" ", 3)[:3] == [cid[:12], "web", "Up"], line
    assert f"127.0.0.1:{port}->80/tcp" in line
    # docker exec -it: a shell inside the running server, on a terminal
    term = PtyDocker(api, "exec", "-it", "web", "sh")
    try:
        term.expect(b"# ")
        term.send("cat /www/index.html; tty; exit 5\r")
        term.expect(b"hello-from-web")
        term.expect(b"/dev/pts/")
        assert term.wait() == 5, term.seen
    finally:
        term.close()
    # docker cp both ways: a file copied in is served, one copied out has the content
    page = tmp_path / "copied.html"
    page.write_text("copied-in\n")
    api.docker("cp", str(page), "web:/www/copied.html")
    assert wait_for_http(f"{url}/copied.html") == "copied-in\n"
    api.docker("cp", "web:/www/index.html", str(tmp_path / "out.html"))
    assert (tmp_path / "out.html").read_text() == "hello-from-web\n"
    # stop: httpd is PID 1 without a SIGTERM handler, so -t 1 ends in SIGKILL, as dockerd
    api.docker("stop", "-t", "1", "web")
    assert status(api, "web").startswith("Exited (137)")
    assert api.docker("ps", "-q").stdout == ""
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    refused = api.docker("rm", "nosuch", check=False)
    assert refused.returncode != 0 and "No such container: nosuch" in refused.stderr
    api.docker("rm", "web")
    assert api.docker("ps", "-aq").stdout == ""
    assert not (api.root / "containers" / cid).exists()


def test_containers_outlive_a_killed_server_and_a_new_one_sees_them(
        api: ApiServer, api_busybox: str) -> None:
    port = free_port()
    cid = api.docker("run", "-d", "-p", f"127.0.0.1:{port}:80", "--name", "web", api_busybox,
                     *web_command("still-here")).stdout.strip()
    url = f"http://127.0.0.1:{port}/"
    assert wait_for_http(url) == "still-here\n"
    assert api.stop(signal.SIGKILL) == -signal.SIGKILL
    assert http_get(url) == "still-here\n"  # the monitor, not the server, runs it
    # the same container through ociimg's own CLI while no server runs
    assert ociimg(api.root, "ps", "--format", "{{.ID}} {{.Names}}").stdout.split() == [
        cid[:12], "web"]
    api.start()  # on the killed server's stale socket
    assert status(api, "web").startswith("Up")
    assert api.docker("exec", "web", "cat", "/www/index.html").stdout == "still-here\n"
    api.docker("stop", "-t", "1", "web")
    assert status(api, "web").startswith("Exited (137)")
    api.docker("rm", "web")
    assert ociimg(api.root, "ps", "-a", "-q").stdout == ""


def test_logs_follow_until_the_container_exits(api: ApiServer, api_busybox: str) -> None:
    api.docker("run", "-d", "--name", "talker", api_busybox, "sh", "-c",
               "echo first; echo to-stderr >&2; while [ ! -e /tmp/go ]; do sleep 0.05; "
               "done; echo second; exit 2")
    follow = subprocess.Popen([DOCKER_CLI, "logs", "-f", "talker"], env=api.env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out = wait_for_line(follow, "first")
        assert follow.poll() is None  # still following: the container runs on
        api.docker("exec", "talker", "touch", "/tmp/go")
        out += wait_for_line(follow, "second")
        assert follow.wait(timeout=30) == 0  # logs -f ends when the container does
        assert follow.stderr is not None
        assert follow.stderr.read() == b"to-stderr\n"  # its own stream, not stdout
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    assert out.splitlines() == ["first", "second"], out
    assert api.docker("wait", "talker").stdout.strip() == "2"
    logs = api.docker("logs", "--tail", "1", "talker")
    assert (logs.stdout, logs.stderr) == ("second\n", "")


def test_build_then_images_run_save_load(api: ApiServer, api_busybox: str,
                                         tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "hello.txt").write_text("hello from the context\n")
    (ctx / "ignored.txt").write_text("must not be sent\n")
    (ctx / ".dockerignore").write_text("ignored.txt\n")
    (ctx / "Dockerfile").write_text(
        "FROM busybox\nARG WHO=nobody\nCOPY . /ctx/\nRUN echo built-by-$WHO > /built\n"
        'CMD ["sh", "-c", "cat /ctx/hello.txt /built; ls /ctx"]\n')
    built = api.docker("build", "-t", "x", "--build-arg", "WHO=docker", ".", cwd=ctx)
    assert "Successfully tagged x:latest" in built.stdout, built.stdout
    tags = api.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert sorted(tags) == ["busybox:latest", "x:latest"]
    expected = "hello from the context\nbuilt-by-docker\nDockerfile\nhello.txt\n"
    assert api.docker("run", "--rm", "x").stdout == expected
    # docker save | docker load, through the server both ways
    saved = api.docker("save", "x", input=b"")
    assert isinstance(saved.stdout, bytes) and len(saved.stdout) > 10_000
    image_id = api.docker("inspect", "--format", "{{.Id}}", "x").stdout.strip()
    api.docker("rmi", "x")
    assert api.docker("images", "-q", "x").stdout == ""
    loaded = api.docker("load", input=saved.stdout)
    assert b"Loaded image: x:latest" in loaded.stdout
    assert api.docker("inspect", "--format", "{{.Id}}", "x").stdout.strip() == image_id
    assert api.docker("run", "--rm", "x").stdout == expected


def test_push_then_pull_from_a_local_registry(api: ApiServer, api_busybox: str,
                                              registry: RegistryServer,
                                              pushed_fixtures: dict[str, str]) -> None:
    ref = f"{registry.host}/apicli/busybox:1"
    api.docker("tag", api_busybox, ref)
    pushed = api.docker("push", ref)
    assert "1: digest: sha256:" in pushed.stdout, pushed.stdout
    digest = pushed.stdout.split("digest: ")[1].split()[0]
    request = urllib.request.Request(
        f"{registry.url}/v2/apicli/busybox/manifests/1", method="HEAD",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json, "
                           "application/vnd.oci.image.manifest.v1+json"})
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        assert response.headers["Docker-Content-Digest"] == digest
    api.docker("rmi", ref)
    pulled = api.docker("pull", ref)
    assert f"Digest: {digest}" in pulled.stdout, pulled.stdout
    assert api.docker("run", "--rm", ref, "echo", "ran-pulled").stdout == "ran-pulled\n"
    # an image pushed by skopeo, not by us: pulled and run by name
    other = pushed_fixtures["busybox-zstd"]
    api.docker("pull", other)
    assert api.docker("run", "--rm", other, "echo", "zstd-ok").stdout == "zstd-ok\n"
    missing = api.docker("pull", f"{registry.host}/apicli/nosuch:1", check=False)
    assert missing.returncode == 1 and "not found" in missing.stderr.lower(), missing.stderr


def test_network_create_two_containers_resolve_each_other(api: ApiServer,
                                                          api_busybox: str) -> None:
    net = "apicli-net"
    api.docker("network", "create", net)
    try:
        for name in ("alpha", "beta"):
            api.docker("run", "-d", "--network", net, "--name", name, api_busybox,
                       *web_command(f"page-of-{name}"))
        ips = {name: json.loads(api.docker("inspect", name).stdout)[0]["NetworkSettings"][
            "Networks"][net]["IPAddress"] for name in ("alpha", "beta")}
        assert ips["alpha"] and ips["beta"] and ips["alpha"] != ips["beta"]
        for me, other in (("alpha", "beta"), ("beta", "alpha")):
            assert fetch_inside(api, me, f"http://{other}/") == f"page-of-{other}\n"
            ping = api.docker("exec", me, "ping", "-c", "1", other).stdout
            assert f"({ips[other]})" in ping  # the name resolves to the other's address
        listed = api.docker("network", "ls", "--format", "{{.Name}}").stdout.split()
        assert net in listed
        api.docker("rm", "-f", "alpha", "beta")
    finally:
        api.docker("rm", "-f", "alpha", "beta", check=False)
        api.docker("network", "rm", net, check=False)
    assert net not in api.docker("network", "ls", "--format", "{{.Name}}").stdout.split()


def test_volume_create_use_and_remove(api: ApiServer, api_busybox: str) -> None:
    api.docker("volume", "create", "apicli-vol")
    api.docker("run", "--rm", "-v", "apicli-vol:/data", api_busybox, "sh", "-c",
               "echo kept > /data/f")
    out = api.docker("run", "--rm", "-v", "apicli-vol:/data:ro", api_busybox, "sh", "-c",
                     "cat /data/f; touch /data/g 2>&1 || echo ro-ok", check=False)
    assert out.stdout.splitlines()[0] == "kept" and out.stdout.endswith("ro-ok\n"), out
    mountpoint = json.loads(api.docker("volume", "inspect", "apicli-vol").stdout)[0][
        "Mountpoint"]
    assert (Path(mountpoint) / "f").read_text() == "kept\n"
    assert "apicli-vol" in api.docker("volume", "ls", "-q").stdout.split()
    api.docker("volume", "rm", "apicli-vol")
    assert "apicli-vol" not in api.docker("volume", "ls", "-q").stdout.split()
    assert not Path(mountpoint).exists()
