"""Hostile container create and rename requests: each gets one JSON error with a client's
status, creates nothing (no container, no name, no half-made directory) and leaves the
server answering; the `api` fixture fails the test if the server logged a traceback."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.integration.apiserver import ApiServer

pytestmark = pytest.mark.integration


def request(api: ApiServer, method: str, path: str, body: bytes = b"",
            ) -> tuple[int, dict]:
    """One raw exchange (what no client library would send), read to EOF."""
    head = (f"{method} {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(60)
        sock.connect(str(api.socket))
        sock.sendall(head.encode() + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    payload = rest.partition(b"\r\n\r\n")[2]
    try:
        doc = json.loads(payload) if payload.strip() else {}
    except ValueError:
        doc = {"text": payload.decode(errors="replace")}  # /_ping's "OK"
    return int(status_line.split()[1]), doc


def create(api: ApiServer, doc: object, name: str = "") -> tuple[int, dict]:
    from urllib.parse import quote
    query = f"?name={quote(name, safe='')}" if name else ""
    return request(api, "POST", f"/v1.41/containers/create{query}", json.dumps(doc).encode())


def containers_on_disk(api: ApiServer) -> list[str]:
    base = api.root / "containers"
    names = base / ".names"
    made = [p.name for p in base.iterdir() if not p.name.startswith(".") or
            p.name.startswith(".tmp-")] if base.exists() else []
    return made + ([p.name for p in names.iterdir() if p.name != ".lock"] if names.exists()
                   else [])


def refused(api: ApiServer, doc: object, status: int, words: str, name: str = "") -> None:
    before = containers_on_disk(api)
    got, body = create(api, doc, name)
    assert (got, words in body.get("message", "")) == (status, True), (got, body)
    assert containers_on_disk(api) == before
    assert request(api, "GET", "/_ping")[0] == 200


BASE = {"Image": "busybox", "Cmd": ["true"]}


@pytest.mark.parametrize(("doc", "status", "words"), [
    ([1, 2], 400, "not an object"),
    ({"Image": 5}, 400, "Image"),
    ({**BASE, "Cmd": "x\0y"}, 400, "NUL"),
    ({**BASE, "Env": ["A=1\0B=2"]}, 400, "NUL"),
    ({**BASE, "Env": ["=x"]}, 400, "environment"),
    ({**BASE, "HostConfig": "x"}, 400, "HostConfig"),
    ({**BASE, "WorkingDir": "relative"}, 400, "absolute"),
    ({**BASE, "HostConfig": {"Binds": ["../../etc:/x"]}}, 400, "absolute"),
    ({**BASE, "HostConfig": {"Binds": ["/tmp:relative"]}}, 400, "not absolute"),
    ({**BASE, "HostConfig": {"Mounts": [{"Type": "bind", "Source": "/no/such/dir/here",
                                         "Target": "/x"}]}}, 400, "does not exist"),
    ({**BASE, "HostConfig": {"Mounts": [{"Type": "npipe", "Target": "/x"}]}}, 400, "npipe"),
    ({**BASE, "HostConfig": {"Mounts": [{"Type": "volume", "Source": "../up",
                                         "Target": "/x"}]}}, 400, "volume name"),
    ({**BASE, "HostConfig": {"Memory": 1 << 70}}, 400, "out of range"),
    ({**BASE, "HostConfig": {"Memory": -5}}, 400, "out of range"),
    ({**BASE, "HostConfig": {"Memory": 1}}, 400, "Minimum memory"),
    ({**BASE, "HostConfig": {"NanoCpus": 10**15}}, 400, "CPUs"),
    ({**BASE, "HostConfig": {"Ulimits": [{"Name": "nofile", "Soft": 1 << 70,
                                          "Hard": 1 << 70}]}}, 400, "ulimit"),
    ({**BASE, "HostConfig": {"Ulimits": [{"Name": "nofile", "Soft": 10, "Hard": 5}]}},
     400, "soft"),
    ({**BASE, "HostConfig": {"Ulimits": [{"Name": "bogus=1", "Soft": 1, "Hard": 1}]}},
     400, "ulimit"),
    ({**BASE, "HostConfig": {"SecurityOpt": ["apparmor=docker-default"]}}, 400,
     "security-opt"),
    ({**BASE, "HostConfig": {"SecurityOpt": ['seccomp={"defaultAction":"SCMP_ACT_ALLOW"}']}},
     400, "seccomp"),
    ({**BASE, "HostConfig": {"PidMode": "host"}}, 400, "PidMode"),
    ({**BASE, "HostConfig": {"IpcMode": "host"}}, 400, "IpcMode"),
    ({**BASE, "HostConfig": {"DeviceCgroupRules": ["c *:* rwm"]}}, 400, "DeviceCgroupRules"),
    ({**BASE, "HostConfig": {"LogConfig": {"Type": "syslog"}}}, 400, "logging driver"),
    ({**BASE, "HostConfig": {"Sysctls": {"kernel.core_pattern": "|/bin/sh"}}}, 400,
     "sysctl"),
    ({**BASE, "HostConfig": {"Tmpfs": {"/t": "size=1m,uid=0;rm"}}}, 400, "tmpfs"),
    ({**BASE, "HostConfig": {"PortBindings": {"80/tcp\n": [{"HostPort": "1"}]}}}, 400,
     "port"),
    ({**BASE, "HostConfig": {"PortBindings": {"80/tcp": [{"HostIp": "1.2.3.4:9",
                                                          "HostPort": "1"}]}}}, 400, "port"),
    ({**BASE, "HostConfig": {"AutoRemove": True, "RestartPolicy": {"Name": "always"}}},
     400, "AutoRemove"),
    ({**BASE, "HostConfig": {"RestartPolicy": {"Name": "sometimes"}}}, 400, "restart"),
    ({**BASE, "HostConfig": {"Devices": [{"PathOnHost": "/etc/passwd"}]}}, 400, "device"),
    ({**BASE, "HostConfig": {"NetworkMode": "no-such-net"}}, 404, "no-such-net"),
    ({**BASE, "HostConfig": {"ExtraHosts": ["evil\nhost:1.2.3.4"]}}, 400, "invalid name"),
    ({**BASE, "Healthcheck": {"Test": ["CMD"], "Interval": -1}}, 400, "Healthcheck"),
    ({"Image": "no-such-image"}, 404, "No such image: no-such-image:latest"),
    ({"Image": "oci:/etc"}, 404, "No such image"),
])
def test_hostile_create_is_refused(api: ApiServer, api_busybox: str, doc: object,
                                   status: int, words: str) -> None:
    refused(api, doc, status, words)


@pytest.mark.parametrize("name", ["a/b", "x\ny", "-lead", "../up", "a" * 300, "sp ace"])
def test_hostile_names(api: ApiServer, api_busybox: str, name: str) -> None:
    refused(api, BASE, 400, "Invalid container name", name)


def test_huge_and_deep_bodies(api: ApiServer, api_busybox: str) -> None:
    before = containers_on_disk(api)
    status, body = request(api, "POST", "/containers/create",
                           b'{"Image": "busybox", "Env": ["' + b"x" * (2 << 20) + b'"]}')
    assert status == 413 and "larger" in body["message"]
    status, body = request(api, "POST", "/containers/create", b"[" * 200_000)
    assert status == 400 and "JSON" in body["message"]
    status, body = request(api, "POST", "/containers/create", b'{"Image": ')
    assert status == 400
    assert containers_on_disk(api) == before
    assert request(api, "GET", "/_ping")[0] == 200


def test_own_netns_and_id_prefix_names(api: ApiServer, api_busybox: str) -> None:
    refused(api, {**BASE, "HostConfig": {"NetworkMode": "container:me"}}, 404,
            "such container: me", "me")
    status, made = create(api, {**BASE, "Cmd": ["sleep", "300"]}, "first")
    assert status == 201
    refused(api, BASE, 409, "prefix of the id", made["Id"][:12])
    status, body = create(api, BASE, "first")
    assert status == 409 and made["Id"] in body["message"]
    status, body = request(api, "POST", f"/containers/{made['Id']}/rename?name=a%2Fb")
    assert status == 400
    assert json.loads(api.docker("inspect", "first").stdout)[0]["Name"] == "/first"


def test_host_paths_as_docker_allows_them(api: ApiServer, api_busybox: str,
                                          tmp_path: Path) -> None:
    """Binds of any host path are root's to give (dockerd allows "/" too); a missing
    source of -v is made, a missing --mount source is an error."""
    made = tmp_path / "made" / "here"
    api.docker("create", "--name", "b", "-v", "/:/host:ro", "-v", f"{made}:/m", "busybox")
    assert made.is_dir()
    mounts = {m["Destination"]: m for m in json.loads(api.docker("inspect", "b").stdout)[0]
              ["Mounts"]}
    assert mounts["/host"]["Source"] == "/" and mounts["/host"]["RW"] is False
    bad = api.docker("create", "--mount", f"type=bind,src={tmp_path}/none,dst=/x",
                     "busybox", check=False)
    assert bad.returncode != 0 and "does not exist" in bad.stderr


@pytest.mark.parametrize("query", [
    "filters=" + "%5B" * 2000, "filters=%7B%22status%22%3A%5B%22bogus%22%5D%7D",
    "filters=%7B%22nope%22%3A%5B%221%22%5D%7D", "filters=5", "limit=x",
    "filters=%7B%22name%22%3A%5B%22%28%22%5D%7D",
], ids=["deep", "bad-status", "unknown-key", "not-a-map", "limit", "bad-regex"])
def test_hostile_list_queries(api: ApiServer, api_busybox: str, query: str) -> None:
    status, body = request(api, "GET", f"/containers/json?all=1&{query}")
    if "%28" in query:  # a name filter that is no regular expression: a substring
        assert (status, body) == (200, [])
    else:
        assert status == 400 and body["message"], body
    assert request(api, "GET", "/_ping")[0] == 200


def test_hostile_paths_and_parameters(api: ApiServer, api_busybox: str) -> None:
    status, made = create(api, {"Image": "busybox", "Cmd": ["sleep", "300"]}, "p")
    assert status == 201
    cid = made["Id"]
    for method, path, want in [
            ("POST", f"/containers/{cid}/kill?signal=SIGNOPE", 400),
            ("POST", f"/containers/{cid}/kill?signal=999", 400),
            ("POST", f"/containers/{cid}/wait?condition=sometime", 400),
            ("POST", f"/containers/{cid}/stop?t=x", 400),
            ("GET", f"/containers/{cid}/top?ps_args=%3B%20rm", 400),
            ("GET", f"/containers/{cid}/stats?stream=1&one-shot=1", 400),
            ("POST", "/containers/..%2F..%2Fetc/start", 404),
            ("DELETE", "/containers/%0A", 404),
            ("POST", f"/containers/{cid}/rename?name=", 400),
            ("POST", f"/containers/{cid}/kill", 409),  # created: not running
            ("POST", f"/containers/{cid}/pause", 409)]:
        status, body = request(api, method, path)
        assert (status, bool(body.get("message"))) == (want, True), (path, status, body)
    assert request(api, "GET", "/_ping")[0] == 200
    assert json.loads(api.docker("inspect", "p").stdout)[0]["State"]["Status"] == "created"
