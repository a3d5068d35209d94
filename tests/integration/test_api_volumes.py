"""Volumes through `ociimg serve` with docker's CLI 20.10 and docker-py: create (named,
generated, labelled), ls with filters, inspect, rm (409 while in use), prune; hostile names
and driver options refused with nothing made."""

from __future__ import annotations

import json
import re
from urllib.parse import quote

import pytest

from tests.integration.apiserver import ApiServer
from tests.integration.cli_helpers import ociimg
from tests.integration.test_api_networks import _post
from tests.integration.test_api_server import get

pytestmark = pytest.mark.integration


def _names(api: ApiServer, *args: str) -> list[str]:
    return sorted(api.docker("volume", "ls", "--format", "{{.Name}}", *args).stdout.split())


def test_volume_lifecycle_with_the_docker_cli(api: ApiServer, api_busybox: str) -> None:
    assert api.docker("volume", "create", "--label", "k=v", "data").stdout.strip() == "data"
    generated = api.docker("volume", "create").stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", generated)
    assert api.docker("volume", "create", "data").stdout.strip() == "data"  # the same one
    (doc,) = json.loads(api.docker("volume", "inspect", "data").stdout)
    assert doc["Driver"] == "local" and doc["Scope"] == "local"
    assert doc["Labels"] == {"k": "v"} and doc["Options"] == {}
    assert doc["Mountpoint"] == str(api.root / "volumes" / "data" / "_data")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", doc["CreatedAt"])
    ociimg(api.root, "run", "-d", "--name", "user", "-v", "data:/data", api_busybox, "sh",
           "-c", "echo kept > /data/f; sleep 300")
    cid = json.loads(ociimg(api.root, "ps", "--json").stdout)[0]["id"]
    assert _names(api) == sorted(["data", generated])
    assert _names(api, "--filter", "dangling=true") == [generated]
    assert _names(api, "--filter", "dangling=false") == ["data"]
    assert _names(api, "--filter", "label=k=v") == ["data"]
    assert _names(api, "--filter", "name=dat") == ["data"]
    assert _names(api, "--filter", "driver=local") == sorted(["data", generated])
    proc = api.docker("volume", "rm", "data", check=False)
    assert proc.returncode != 0 and f"remove data: volume is in use - [{cid}]" in proc.stderr
    proc = api.docker("volume", "rm", "-f", "data", check=False)  # force: still in use
    assert proc.returncode != 0 and "volume is in use" in proc.stderr
    # API 1.41 (CLI 20.10): prune takes every unused volume; from 1.42 named ones need -a.
    client_api = api.docker("version", "--format", "{{.Client.APIVersion}}").stdout.strip()
    named = ["-a"] if tuple(map(int, client_api.split("."))) >= (1, 42) else []
    out = api.docker("volume", "prune", "-f", *named).stdout
    assert generated in out and "data" not in out.split()
    ociimg(api.root, "rm", "-f", "user")
    assert (api.root / "volumes" / "data" / "_data" / "f").read_text() == "kept\n"
    assert api.docker("volume", "rm", "data").stdout.strip() == "data"
    assert _names(api) == []
    proc = api.docker("volume", "rm", "data", check=False)
    assert proc.returncode != 0 and "no such volume" in proc.stderr.lower()
    api.docker("volume", "rm", "-f", "data")  # force: a missing volume is no error
    proc = api.docker("volume", "inspect", "data", check=False)
    assert proc.returncode != 0 and "no such volume" in proc.stderr.lower()


def test_docker_py_volumes(api: ApiServer) -> None:
    import docker
    client = api.client()
    v = client.volumes.create("pyvol", labels={"app": "x"})
    assert v.name == "pyvol" and v.attrs["Labels"] == {"app": "x"}
    client.volumes.create("other")
    assert [x.name for x in client.volumes.list(filters={"label": "app=x"})] == ["pyvol"]
    assert client.volumes.get("pyvol").attrs["Mountpoint"].endswith("/pyvol/_data")
    with pytest.raises(docker.errors.NotFound):
        client.volumes.get("missing")
    # docker-py speaks 1.43 here: prune takes the anonymous ones only unless all=true.
    assert client.volumes.prune()["VolumesDeleted"] in (None, [])
    got = client.volumes.prune(filters={"label": "app=x", "all": "true"})
    assert got["VolumesDeleted"] == ["pyvol"] and got["SpaceReclaimed"] >= 0
    v = client.volumes.get("other")
    v.remove()
    assert client.volumes.list() == []


@pytest.mark.parametrize("name", ["../evil", "a/b", "x" * 300, "-lead", "nul\x00x", "..",
                                  ".hidden", "sp ace"])
def test_hostile_volume_names_are_refused_and_nothing_is_made(api: ApiServer,
                                                              name: str) -> None:
    status, body = _post(api, "/v1.41/volumes/create", json.dumps({"Name": name}).encode())
    assert status == 400 and "invalid characters" in body["message"]
    base = api.root / "volumes"
    assert not base.exists() or sorted(p.name for p in base.iterdir()) in ([], [".lock"])
    assert get(api, "/v1.41/volumes/" + quote(name, safe=""))[0] == 404
    assert (api.root.parent / "evil").exists() is False
    assert get(api, "/_ping")[0] == 200


@pytest.mark.parametrize("body,needle", [
    ({"Name": "v", "Driver": "nfs"}, 'plugin "nfs" not found'),
    ({"Name": "v", "DriverOpts": {"type": "nfs", "o": "addr=1.2.3.4", "device": ":/x"}},
     "driver options are not supported"),
    ({"Name": "v", "DriverOpts": {"o": "bind", "device": "/etc"}}, "not supported"),
    ({"Name": "v", "Labels": {"k": 1}}, "Labels"),
    ({"Name": 7}, "Name must be a string"),
    ([1, 2], "JSON object"),
])
def test_unsupported_volume_options_are_refused(api: ApiServer, body: object,
                                                needle: str) -> None:
    status, answer = _post(api, "/volumes/create", json.dumps(body).encode())
    assert status == 400 and needle in answer["message"], answer
    assert _names(api) == []
    status, answer = _post(api, "/volumes/prune?filters=%7B%22colour%22%3A%5B%22x%22%5D%7D",
                           b"")
    assert status == 400 and "Invalid filter 'colour'" in answer["message"]
