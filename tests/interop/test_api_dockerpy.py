"""docker-py (PyPI docker 7.1)'s high-level API against `ociimg serve`: what a Python
program using `docker.from_env()` does, each step checked by its result."""

from __future__ import annotations

import io
import re
from pathlib import Path

import docker.errors
import pytest

from tests.integration.apiserver import ApiServer
from tests.interop.api_helpers import free_port, wait_for_http, web_command


def test_run_detached_stream_logs_exec_run_and_remove(api: ApiServer,
                                                      api_busybox: str) -> None:
    client = api.client()
    container = client.containers.run(
        api_busybox, ["sh", "-c", "for i in 1 2 3; do echo line-$i; done; "
                      "while [ ! -e /tmp/go ]; do sleep 0.05; done; echo done"],
        detach=True, name="pyrun", labels={"suite": "dockerpy"}, environment={"A": "1"})
    try:
        assert container.name == "pyrun" and len(container.id) == 64
        stream = container.logs(stream=True, follow=True)
        seen = b""
        while b"line-3\n" not in seen:
            seen += next(stream)
        exit_code, output = container.exec_run(["sh", "-c", "echo A=$A; touch /tmp/go"])
        assert (exit_code, output) == (0, b"A=1\n")
        rest = b"".join(stream)  # ends when the container does
        assert (seen + rest).decode().splitlines() == ["line-1", "line-2", "line-3", "done"]
        assert container.wait(timeout=30)["StatusCode"] == 0
        container.reload()
        assert container.status == "exited"
        assert container.labels["suite"] == "dockerpy"
        listed = client.containers.list(all=True, filters={"label": "suite=dockerpy"})
        assert [c.id for c in listed] == [container.id]
    finally:
        container.remove(force=True)
    assert client.containers.list(all=True) == []


def test_exec_run_in_a_running_server_and_published_port(api: ApiServer,
                                                         api_busybox: str) -> None:
    client = api.client()
    port = free_port()
    web = client.containers.run(api_busybox, web_command("from-docker-py"), detach=True,
                                ports={"80/tcp": ("127.0.0.1", port)})
    try:
        assert wait_for_http(f"http://127.0.0.1:{port}/") == "from-docker-py\n"
        code, out = web.exec_run("cat /www/index.html")
        assert (code, out) == (0, b"from-docker-py\n")
        code, out = web.exec_run(["sh", "-c", "echo out; echo err >&2; exit 4"], demux=True)
        assert (code, out) == (4, (b"out\n", b"err\n"))
        code, out = web.exec_run("id -u", user="nobody")
        assert (code, out.strip()) == (0, b"65534")
        web.reload()
        assert web.ports["80/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": str(port)}]
        web.stop(timeout=1)
        web.reload()
        assert web.status == "exited"
    finally:
        web.remove(force=True)


def test_run_in_the_foreground_returns_its_output(api: ApiServer, api_busybox: str) -> None:
    client = api.client()
    both = ["sh", "-c", "echo hello; echo err >&2"]
    assert client.containers.run(api_busybox, both, remove=True) == b"hello\n"
    assert client.containers.run(api_busybox, both, remove=True, stdout=False,
                                 stderr=True) == b"err\n"
    with pytest.raises(docker.errors.ContainerError) as failed:
        client.containers.run(api_busybox, ["sh", "-c", "echo broken >&2; exit 3"],
                              remove=True)
    assert failed.value.exit_status == 3 and b"broken" in failed.value.stderr
    assert client.containers.list(all=True) == []  # remove=True removed both


def test_images_build_then_run_the_result(api: ApiServer, api_busybox: str,
                                          tmp_path: Path) -> None:
    client = api.client()
    (tmp_path / "note.txt").write_text("from the build context\n")
    (tmp_path / "Dockerfile").write_text(
        "FROM busybox\nARG GREETING\nCOPY note.txt /note.txt\n"
        "RUN echo $GREETING > /greeting\nLABEL org.example.built=yes\n"
        'CMD ["cat", "/note.txt", "/greeting"]\n')
    image, logs = client.images.build(path=str(tmp_path), tag="pybuilt:1",
                                      buildargs={"GREETING": "hi-from-buildargs"}, rm=True)
    lines = "".join(chunk.get("stream", "") for chunk in logs)
    assert "Step 1/6 : FROM busybox" in lines, lines
    assert "pybuilt:1" in image.tags
    assert image.labels["org.example.built"] == "yes"
    out = client.containers.run("pybuilt:1", remove=True)
    assert out == b"from the build context\nhi-from-buildargs\n"
    # a build from a file object (a Dockerfile alone) and a broken one
    image2, _ = client.images.build(fileobj=io.BytesIO(b"FROM busybox\nCMD [\"true\"]\n"),
                                    tag="pybuilt:2")
    assert image2.attrs["Config"]["Cmd"] == ["true"]
    with pytest.raises(docker.errors.BuildError) as failed:
        client.images.build(fileobj=io.BytesIO(b"FROM busybox\nRUN exit 7\n"), tag="broken")
    # dockerd: "The command '/bin/sh -c exit 7' returned a non-zero code: 7"
    assert re.search(r"\bcode:? 7\b", str(failed.value)), failed.value
    assert sorted(t for i in client.images.list() for t in i.tags) == [
        "busybox:latest", "pybuilt:1", "pybuilt:2"]


def test_networks_and_volumes(api: ApiServer, api_busybox: str) -> None:
    client = api.client()
    network = client.networks.create("pynet", labels={"suite": "dockerpy"})
    volume = client.volumes.create("pyvol", labels={"suite": "dockerpy"})
    try:
        assert [n.name for n in client.networks.list(names=["pynet"])] == ["pynet"]
        assert client.volumes.get("pyvol").attrs["Labels"] == {"suite": "dockerpy"}
        server = client.containers.run(api_busybox, web_command("net-page"), detach=True,
                                       name="pyweb", network="pynet")
        network.reload()
        assert [c.name for c in network.containers] == ["pyweb"]
        out = client.containers.run(
            api_busybox, ["sh", "-c", "until wget -qO- http://pyweb/ > /data/page; do "
                          "sleep 0.1; done; cat /data/page"],
            network="pynet", volumes={"pyvol": {"bind": "/data", "mode": "rw"}}, remove=True)
        assert out == b"net-page\n"
        again = client.containers.run(api_busybox, ["cat", "/data/page"], remove=True,
                                      volumes=["pyvol:/data:ro"])
        assert again == b"net-page\n"  # the volume kept what the first container wrote
        server.remove(force=True)
        network.reload()
        assert network.containers == []
    finally:
        for c in client.containers.list(all=True):
            c.remove(force=True)
        network.remove()
        volume.remove()
    assert client.networks.list(names=["pynet"]) == []
    assert [v.name for v in client.volumes.list()] == []
