"""Pull, push and login through `ociimg serve`, driven by the docker CLI 20.10 and docker-py
against Debian's docker-registry on loopback (plain HTTP, as dockerd treats 127.0.0.0/8)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import time

import docker.errors
import pytest

from tests.conftest import need
from tests.integration.apiserver import ApiServer
from tests.integration.registry_server import RegistryServer

pytestmark = pytest.mark.integration


def skopeo_inspect(ref: str, *creds: str) -> dict:
    need(shutil.which("skopeo") is not None, "skopeo missing: apt-get install skopeo")
    out = subprocess.run(["skopeo", "inspect", "--tls-verify=false", *creds, f"docker://{ref}"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return json.loads(out)


def runs(server: ApiServer, image: str) -> str:
    """The image, as stored by the pull, runs (through ociimg's own CLI: the container
    endpoints are another module's)."""
    return subprocess.run([sys.executable, "-m", "ociimg", "--root", str(server.root), "run",
                           "--rm", image, "echo", "ran"], env=server.env(), check=True,
                          capture_output=True, text=True, timeout=120).stdout


def test_docker_pull_shows_progress_then_lists(api: ApiServer,
                                               pushed_fixtures: dict[str, str]) -> None:
    ref = pushed_fixtures["multilayer"]
    out = api.docker("pull", ref).stdout
    lines = out.splitlines()
    assert lines[0] == "latest: Pulling from fixtures/multilayer"
    assert any(line.endswith(": Pull complete") for line in lines)
    digest = skopeo_inspect(ref)["Digest"]
    assert f"Digest: {digest}" in lines
    assert lines[-2:] == [f"Status: Downloaded newer image for {ref}", ref]
    listed = api.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert listed == [ref]
    assert runs(api, ref).strip().endswith("args=echo ran")
    cid = api.docker("run", "-d", ref, "echo", "ran").stdout.strip()
    assert api.docker("wait", cid).stdout.strip() == "0"
    again = api.docker("pull", ref).stdout
    assert f"Status: Image is up to date for {ref}" in again
    until = f"{time.time() + 0.5:.9f}"
    pulls = api.docker("events", "--since", "0", "--until", until, "--filter", "type=image",
                       "--format", "{{.Action}} {{.Actor.ID}}").stdout.splitlines()
    assert pulls == [f"pull {ref}", f"pull {ref}"]


def test_pull_stream_shape_for_docker_py(api: ApiServer,
                                         pushed_fixtures: dict[str, str]) -> None:
    ref = pushed_fixtures["busybox"]
    client = api.client()
    events = list(client.api.pull(ref.rsplit(":", 1)[0], tag="latest", stream=True,
                                  decode=True))
    assert events[0] == {"status": "Pulling from fixtures/busybox", "id": "latest"}
    statuses = [e.get("status") for e in events]
    assert "Pulling fs layer" in statuses and "Pull complete" in statuses
    downloading = [e for e in events if e.get("status") == "Downloading"]
    assert downloading and all(e["progressDetail"]["total"] > 0 for e in downloading)
    assert events[-1]["status"] == f"Status: Downloaded newer image for {ref}"
    image = client.images.pull(ref.rsplit(":", 1)[0], tag="latest")
    assert image.tags == [ref]


def test_pull_missing_image_is_an_http_error(api: ApiServer, registry: RegistryServer) -> None:
    ref = f"{registry.host}/fixtures/nosuch:1"
    result = api.docker("pull", ref, check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("Error response from daemon: ")
    assert "nosuch" in result.stderr
    assert api.docker("images", "-q").stdout.strip() == ""


def test_login_then_pull_private_and_wrong_password(
        api: ApiServer, auth_registry: RegistryServer, auth_pushed_busybox: str) -> None:
    anonymous = api.docker("pull", auth_pushed_busybox, check=False)
    assert anonymous.returncode == 1
    assert "pull access denied for" in anonymous.stderr
    assert "authentication required" in anonymous.stderr
    wrong = api.docker("login", "-u", auth_registry.username or "", "--password-stdin",
                       auth_registry.host, input="not-the-password\n", check=False)
    assert wrong.returncode == 1
    assert "wrong username or password" in wrong.stderr
    good = api.docker("login", "-u", auth_registry.username or "", "--password-stdin",
                      auth_registry.host, input=f"{auth_registry.password}\n")
    assert "Login Succeeded" in good.stdout
    # The CLI keeps the credentials in its own config and sends them as X-Registry-Auth.
    assert auth_registry.host in (api.home / "config.json").read_text()
    api.docker("pull", auth_pushed_busybox)
    assert api.docker("images", "-q").stdout.strip() != ""
    # Push with the same credentials; without them the registry refuses, in the stream.
    target = f"{auth_registry.host}/apiimg/private:1"
    api.docker("tag", auth_pushed_busybox, target)
    pushed = api.docker("push", target).stdout.splitlines()[-1].split()
    creds = f"--creds={auth_registry.username}:{auth_registry.password}"
    assert skopeo_inspect(target, creds)["Digest"] == pushed[2]
    api.docker("logout", auth_registry.host)
    refused = api.docker("push", target, check=False)
    assert refused.returncode == 1 and "authentication required" in refused.stderr
    # X-Registry-Auth in its other forms: "auth" (user:password, base64) as config.json
    # keeps it; a wrong password is refused, not ignored.
    client = api.client()
    repo, tag = auth_pushed_busybox.rsplit(":", 1)
    pair = base64.b64encode(f"{auth_registry.username}:{auth_registry.password}".encode())
    events = list(client.api.pull(repo, tag=tag, stream=True, decode=True,
                                  auth_config={"auth": pair.decode()}))
    assert events[-1]["status"] == f"Status: Image is up to date for {auth_pushed_busybox}"
    with pytest.raises(docker.errors.NotFound, match="pull access denied"):
        client.api.pull(repo, tag=tag, auth_config={"username": auth_registry.username,
                                                    "password": "wrong"})
    # docker-py's login goes through /auth too.
    assert client.login(auth_registry.username, auth_registry.password,
                        registry=auth_registry.host)["Status"] == "Login Succeeded"
    with pytest.raises(docker.errors.APIError, match="wrong username or password"):
        client.login(auth_registry.username, "wrong", registry=auth_registry.host,
                     reauth=True)


def test_tag_and_push_then_skopeo_sees_it(api: ApiServer, api_busybox: str,
                                          registry: RegistryServer) -> None:
    target = f"{registry.host}/apiimg/pushed:1"
    api.docker("tag", "busybox", target)
    out = api.docker("push", target).stdout.splitlines()
    assert out[0] == f"The push refers to repository [{registry.host}/apiimg/pushed]"
    assert any(line.endswith(": Pushed") for line in out)
    final = out[-1].split()
    assert final[0] == "1:" and final[1] == "digest:" and final[3] == "size:"
    assert skopeo_inspect(target)["Digest"] == final[2]
    again = api.docker("push", target).stdout
    assert ": Layer already exists" in again
    # docker-py: the aux object carries the digest.
    events = list(api.client().images.push(f"{registry.host}/apiimg/pushed", tag="1",
                                           stream=True, decode=True))
    aux = [e["aux"] for e in events if "aux" in e]
    assert aux == [{"Tag": "1", "Digest": final[2], "Size": int(final[4])}]


def test_push_of_an_absent_image_is_a_404(api: ApiServer, registry: RegistryServer) -> None:
    result = api.docker("push", f"{registry.host}/apiimg/absent:1", check=False)
    assert result.returncode == 1
    assert "An image does not exist locally with the tag: " \
           f"{registry.host}/apiimg/absent" in result.stderr


def test_pull_of_an_index_by_platform(api: ApiServer, pushed_fixtures: dict[str, str]) -> None:
    """A multi-platform index: the host's image by default, another with --platform
    (the name then stands for that platform's manifest, as in docker)."""
    import platform as host

    ref = pushed_fixtures["multiarch"]
    api.docker("pull", ref)
    arch = {"x86_64": "amd64", "aarch64": "arm64"}[host.machine()]
    assert api.docker("inspect", "-f", "{{.Os}}/{{.Architecture}}", ref).stdout.strip() == \
        f"linux/{arch}"
    other = "arm64" if arch == "amd64" else "amd64"
    client = api.client()
    image = client.images.pull(ref.rsplit(":", 1)[0], tag="latest", platform=f"linux/{other}")
    assert image.attrs["Architecture"] == other
    bad = api.docker("pull", "--platform", "nonsense", ref, check=False)
    assert bad.returncode == 1
