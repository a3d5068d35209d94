"""Networks through `ociimg serve` with docker's CLI 20.10 and docker-py: create, ls,
inspect, rm, prune, connect, disconnect on real bridges (netavark), two containers that
resolve each other by name, docker's predefined bridge/host/none (trap 21), and hostile
names and subnets; no veth, netns, lease or iptables rule left behind."""

from __future__ import annotations

import json
import os
import re
import subprocess
from urllib.parse import quote

import pytest

from tests.conftest import need
from tests.integration.apiserver import ApiServer
from tests.integration.cli_helpers import ociimg
from tests.integration.network_helpers import host_state, network_doc
from tests.integration.test_api_server import get, raw_request

pytestmark = pytest.mark.integration

CLEAN = {"netns": [], "attached": [], "locks": [], "leases": [], "rules": [],
         "bridge": False, "veths": 0}


@pytest.fixture(autouse=True)
def netavark() -> None:
    need(os.access("/usr/lib/podman/netavark", os.X_OK), "netavark missing: apt-get install "
         "netavark aardvark-dns")


def _inspect(api: ApiServer, name: str) -> dict:
    return json.loads(api.docker("network", "inspect", name).stdout)[0]


def _cid(api: ApiServer, name: str) -> str:
    rows = json.loads(ociimg(api.root, "ps", "-a", "--json").stdout)
    return next(r["id"] for r in rows if r["name"] == name)


def test_user_network_with_two_containers_that_resolve_each_other(
        api: ApiServer, api_busybox: str) -> None:
    net_id = api.docker("network", "create", "--label", "tier=back", "appnet").stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", net_id)
    doc = network_doc(api.root, "appnet")
    bridge, subnet = doc["network_interface"], doc["subnets"][0]["subnet"]
    cids: list[str] = []
    try:
        for name in ("a", "b", "c"):
            extra = ["--network", "appnet"] if name != "c" else []
            ociimg(api.root, "run", "-d", "--name", name, *extra, api_busybox, "sleep", "300")
            cids.append(_cid(api, name))
        seen = _inspect(api, "appnet")
        assert (seen["Name"], seen["Id"], seen["Driver"], seen["Scope"]) == (
            "appnet", net_id, "bridge", "local")
        assert seen["IPAM"]["Config"] == [{"Subnet": subnet,
                                           "Gateway": doc["subnets"][0]["gateway"]}]
        assert seen["Labels"] == {"tier": "back"} and not seen["Internal"]
        assert seen["Options"] == {}  # compose 1.29 compares them with its file's
        members = {v["Name"]: v for v in seen["Containers"].values()}
        assert sorted(members) == ["a", "b"] and set(seen["Containers"]) == set(cids[:2])
        prefix = subnet.rsplit(".", 1)[0] + "."
        assert all(m["IPv4Address"].startswith(prefix) and m["IPv4Address"].endswith("/24")
                   for m in members.values())
        assert "ok" in ociimg(api.root, "exec", "a", "sh", "-c",
                              "ping -c1 -W2 b >/dev/null && echo ok").stdout
        # In use: docker's refusal, nothing removed.
        refused = api.docker("network", "rm", "appnet", check=False)
        assert refused.returncode != 0 and "has active endpoints" in refused.stderr
        # connect c (running, on bridge) with an alias; a reaches it by that name.
        api.docker("network", "connect", "--alias", "cee", "appnet", "c")
        assert "c" in {v["Name"] for v in _inspect(api, "appnet")["Containers"].values()}
        # aardvark-dns reloads on SIGHUP, asynchronously: a few tries inside the container.
        assert "ok" in ociimg(api.root, "exec", "a", "sh", "-c",
                              "for i in 1 2 3 4 5 6 7 8 9 10; do ping -c1 -W1 cee >/dev/null "
                              "&& echo ok && break; sleep 0.3; done").stdout
        again = api.docker("network", "connect", "appnet", "c", check=False)
        assert again.returncode != 0 and "already exists in network appnet" in again.stderr
        api.docker("network", "disconnect", "appnet", "c")
        assert sorted(v["Name"] for v in _inspect(api, "appnet")["Containers"].values()) \
            == ["a", "b"]
        listed = api.docker("network", "ls", "--format", "{{.Name}} {{.Driver}}").stdout
        assert listed.split("\n")[:-1] == ["appnet bridge", "bridge bridge", "host host",
                                           "none null"] or sorted(listed.split("\n")[:-1]) \
            == ["appnet bridge", "bridge bridge", "host host", "none null"]
        for flt, want in (("name=app", ["appnet"]), ("type=custom", ["appnet"]),
                          ("label=tier=back", ["appnet"]), ("driver=null", ["none"]),
                          ("type=builtin", ["bridge", "host", "none"]),
                          (f"id={net_id[:10]}", ["appnet"]), ("dangling=true", [])):
            got = api.docker("network", "ls", "--format", "{{.Name}}", "--filter",
                             flt).stdout.split()
            assert sorted(got) == want, flt
    finally:
        ociimg(api.root, "rm", "-f", "a", "b", "c", check=False)
    api.docker("network", "rm", "appnet")
    assert "appnet" not in api.docker("network", "ls").stdout
    assert host_state(cids, bridge, subnet) == CLEAN


def test_docker_predefined_networks_map_to_ociimg(api: ApiServer, api_busybox: str) -> None:
    ociimg(api.root, "run", "-d", "--name", "onbridge", api_busybox, "sleep", "300")
    ociimg(api.root, "run", "-d", "--name", "onhost", "--network", "host", api_busybox,
           "sleep", "300")
    cids = [_cid(api, "onbridge")]
    try:
        bridge = _inspect(api, "bridge")
        assert bridge["IPAM"]["Config"][0]["Subnet"] == "10.87.0.0/16"
        assert bridge["Options"] == {"com.docker.network.bridge.name": "ociimg0"}
        assert [v["Name"] for v in bridge["Containers"].values()] == ["onbridge"]
        assert _inspect(api, bridge["Id"][:12])["Name"] == "bridge"
        host = _inspect(api, "host")
        assert host["Driver"] == "host" and [v["Name"] for v in host["Containers"].values()] \
            == ["onhost"]
        assert _inspect(api, "none")["Driver"] == "null"
        for name in ("bridge", "host", "none"):
            proc = api.docker("network", "rm", name, check=False)
            assert f"{name} is a pre-defined network and cannot be removed" in proc.stderr
            proc = api.docker("network", "create", name, check=False)
            assert proc.returncode != 0 and "already exists" in proc.stderr
        proc = api.docker("network", "connect", "host", "onbridge", check=False)
        assert proc.returncode != 0 and "host network" in proc.stderr
    finally:
        ociimg(api.root, "rm", "-f", "onbridge", "onhost")
    assert host_state(cids) == {k: v for k, v in CLEAN.items() if k not in ("bridge", "veths")}


def test_network_prune_removes_only_unused_networks(api: ApiServer, api_busybox: str) -> None:
    for name, label in (("keep", "x=1"), ("drop1", "x=1"), ("drop2", "x=2")):
        api.docker("network", "create", "--label", label, name)
    ociimg(api.root, "run", "--name", "user", "--network", "keep", api_busybox, "true")
    # until: only networks made before then (a Go duration, as the CLI passes it on).
    out = api.docker("network", "prune", "-f", "--filter", "until=1h").stdout
    assert "drop" not in out
    out = api.docker("network", "prune", "-f", "--filter", "label=x=2").stdout
    assert "drop2" in out and "drop1" not in out
    out = api.docker("network", "prune", "-f").stdout
    assert "drop1" in out and "keep" not in out  # an exited container still names it
    names = api.docker("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert sorted(names) == ["bridge", "host", "keep", "none"]
    ociimg(api.root, "rm", "user")
    assert api.client().networks.prune()["NetworksDeleted"] == ["keep"]


def test_docker_py_networks(api: ApiServer, api_busybox: str) -> None:
    import docker
    client = api.client()
    net = client.networks.create("pynet", driver="bridge", labels={"a": "b"},
                                 ipam=docker.types.IPAMConfig(pool_configs=[
                                     docker.types.IPAMPool(subnet="10.86.201.0/24",
                                                           gateway="10.86.201.254")]))
    doc = network_doc(api.root, "pynet")
    cids: list[str] = []
    try:
        assert net.name == "pynet" and net.attrs["IPAM"]["Config"][0]["Gateway"] == \
            "10.86.201.254"
        assert [n.name for n in client.networks.list(names=["pynet"])] == ["pynet"]
        assert {n.name for n in client.networks.list()} >= {"bridge", "host", "none", "pynet"}
        ociimg(api.root, "run", "-d", "--name", "pyc", api_busybox, "sleep", "300")
        cids.append(_cid(api, "pyc"))
        net.connect("pyc", aliases=["pyalias"])
        net.reload()
        (member,) = net.attrs["Containers"].values()
        assert member["Name"] == "pyc" and member["IPv4Address"].startswith("10.86.201.")
        net.disconnect("pyc")
        net.reload()
        assert net.attrs["Containers"] == {}
        with pytest.raises(docker.errors.NotFound):
            client.networks.get("nonesuch")
        with pytest.raises(docker.errors.APIError) as err:
            net.connect("nonesuch")
        assert err.value.status_code == 404
    finally:
        ociimg(api.root, "rm", "-f", "pyc", check=False)
    net.remove()
    assert host_state(cids, doc["network_interface"], "10.86.201.0/24") == CLEAN


def _post(api: ApiServer, path: str, body: bytes) -> tuple[int, dict]:
    status, _, data = raw_request(api, f"POST {path} HTTP/1.1\r\nHost: d\r\nConnection: close"
                                       f"\r\nContent-Type: application/json\r\n"
                                       f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return status, json.loads(data) if data.strip() else {}


@pytest.mark.parametrize("name", ["../evil", "a/b", "x" * 300, "-lead", "sp ace", "nul\x00x",
                                  "..", ""])
def test_hostile_network_names_are_refused_and_nothing_is_made(api: ApiServer,
                                                               name: str) -> None:
    status, body = _post(api, "/v1.41/networks/create", json.dumps({"Name": name}).encode())
    assert status == 400 and body["message"]
    assert not (api.root / "networks").exists() or \
        sorted(p.name for p in (api.root / "networks").iterdir()) in ([], [".lock"])
    assert get(api, "/v1.41/networks/" + quote(name, safe=""))[0] == 404
    assert get(api, "/_ping")[0] == 200


@pytest.mark.parametrize("ipam,needle", [
    ({"Config": [{"Subnet": "0.0.0.0/0"}]}, "/8 to /30"),
    ({"Config": [{"Subnet": "0.0.0.0/1"}]}, "/8 to /30"),
    ({"Config": [{"Subnet": "127.0.0.0/24"}]}, "not usable"),
    ({"Config": [{"Subnet": "224.1.0.0/24"}]}, "not usable"),
    ({"Config": [{"Subnet": "fd00::/64"}]}, "IPv4"),
    ({"Config": [{"Subnet": "not-a-net"}]}, "invalid subnet"),
    ({"Config": [{"Subnet": "10.86.202.0/24", "Gateway": "10.86.203.1"}]}, "gateway"),
    ({"Config": [{"Subnet": "10.86.202.0/24", "IPRange": "10.86.202.0/25"}]}, "IPRange"),
    ({"Config": [{"Subnet": "10.86.202.0/24"}, {"Subnet": "10.86.204.0/24"}]}, "at most one"),
    ({"Driver": "dhcp"}, "plugin"),
])
def test_hostile_subnets_are_refused(api: ApiServer, ipam: dict, needle: str) -> None:
    status, body = _post(api, "/v1.41/networks/create",
                         json.dumps({"Name": "badnet", "IPAM": ipam}).encode())
    assert status == 400 and needle in body["message"], body
    assert "badnet" not in api.docker("network", "ls").stdout


def test_subnet_of_a_host_route_and_other_refusals(api: ApiServer) -> None:
    # The LAN of the default route's device (not a bridge of ours another test made).
    def ip(*args: str) -> list[str]:
        return subprocess.run(["ip", "-4", "-o", "route", "show", *args], check=True,
                              capture_output=True, text=True).stdout.splitlines()
    default = ip("default")
    need(bool(default), "the host has no default route")
    dev = default[0].split(" dev ")[1].split()[0]
    lan = [r.split()[0] for r in ip("scope", "link", "dev", dev)]
    need(bool(lan), f"{dev} has no link route to collide with")
    proc = api.docker("network", "create", "--subnet", lan[0], "lan", check=False)
    assert proc.returncode != 0 and "overlaps the host route" in proc.stderr
    proc = api.docker("network", "create", "-d", "macvlan", "mac", check=False)
    assert proc.returncode != 0 and 'plugin "macvlan" not found' in proc.stderr
    proc = api.docker("network", "create", "--ipv6", "six", check=False)
    assert proc.returncode != 0 and "EnableIPv6" in proc.stderr
    proc = api.docker("network", "create", "-o", "com.docker.network.bridge.name=br9", "opt",
                      check=False)
    assert proc.returncode != 0 and "not supported" in proc.stderr
    api.docker("network", "create", "dup")
    proc = api.docker("network", "create", "dup", check=False)
    assert proc.returncode != 0 and "network with name dup already exists" in proc.stderr
    status, body = _post(api, "/networks/create", b"{not json")
    assert status == 400 and "invalid JSON" in body["message"]
    status, body = _post(api, "/networks/dup/connect", b'{"Container": "nonesuch"}')
    assert status == 404 and body["message"] == "No such container: nonesuch"
    status, body = _post(api, "/networks/dup/connect",
                         b'{"Container": "x", "EndpointConfig": {"Aliases": ["a\\nb"]}}')
    assert status == 400
    assert sorted(api.docker("network", "ls", "--format", "{{.Name}}").stdout.split()) == [
        "bridge", "dup", "host", "none"]
    assert get(api, "/_ping")[0] == 200
