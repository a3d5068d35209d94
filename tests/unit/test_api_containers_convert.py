"""api/convert.py: a create body as docker's CLI and compose send it → CreateOptions, field
by field; and what must be refused rather than dropped."""

from __future__ import annotations

from pathlib import Path

import pytest

from ociimg.api.convert import create_request
from ociimg.api.http import ApiError, status_of
from ociimg.bundle import BindMount
from ociimg.bundle.runflags import TmpfsMount
from ociimg.containers.volumes import VolumeMount
from ociimg.errors import OciimgError


def test_a_cli_body_maps_onto_create_options(tmp_path: Path) -> None:
    body = {
        "Image": "busybox", "Cmd": ["sh", "-c", "x"], "Entrypoint": [""], "Env": ["A=1"],
        "WorkingDir": "/w", "User": "1:2", "Labels": {"k": "v"}, "Tty": True,
        "OpenStdin": True, "Hostname": "h", "Domainname": "example.org",
        "StopSignal": "SIGINT", "StopTimeout": 3, "Volumes": {"/anon": {}, "/b": {}},
        "Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 2 * 10**9, "Retries": 5},
        "HostConfig": {
            "Binds": [f"{tmp_path}:/b:ro", "named:/n"], "NetworkMode": "default",
            "Mounts": [{"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 1024,
                                                                          "Mode": 0o1777}}],
            "PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}],
                             "53/udp": [{"HostIp": "", "HostPort": ""}]},
            "Dns": ["10.0.0.1"], "DnsSearch": ["example.org"], "DnsOptions": ["ndots:2"],
            "ExtraHosts": ["db:10.0.0.5"], "RestartPolicy": {"Name": "on-failure",
                                                            "MaximumRetryCount": 3},
            "CapAdd": ["NET_ADMIN"], "CapDrop": ["MKNOD"],
            "SecurityOpt": ["no-new-privileges:false", "label=disable"],
            "ReadonlyRootfs": True, "Tmpfs": {"/run": "size=1m"}, "ShmSize": 1 << 20,
            "Sysctls": {"net.ipv4.ip_forward": "1"},
            "Ulimits": [{"Name": "nofile", "Soft": 100, "Hard": 200}],
            "Devices": [{"PathOnHost": "/dev/null", "PathInContainer": "/dev/x",
                         "CgroupPermissions": "r"}],
            "GroupAdd": ["10"], "Memory": 64 << 20, "NanoCpus": 5 * 10**8, "PidsLimit": 50,
            "LogConfig": {"Type": "json-file", "Config": {}}, "VolumesFrom": ["other:ro"],
            "CpuShares": 512, "OomScoreAdj": 0, "UsernsMode": ""}}
    req = create_request(body, "/web")
    o, b = req.options, req.options.bundle
    assert (req.image, o.name, o.interactive, o.remove) == ("busybox", "web", True, False)
    assert (b.args, b.entrypoint, b.env, b.cwd, b.user) == (["sh", "-c", "x"], [], ["A=1"],
                                                           "/w", "1:2")
    assert (b.hostname, b.terminal, b.readonly_rootfs) == ("h.example.org", True, True)
    assert b.mounts == [BindMount(str(tmp_path), "/b", True)]
    assert o.volumes == [VolumeMount("/n", "named"), VolumeMount("/anon")]  # /b is a bind
    assert TmpfsMount("/t", ("size=1024", "mode=1777")) in b.tmpfs
    assert TmpfsMount("/run", ("size=1m",)) in b.tmpfs
    net = o.network
    assert (net.mode, net.networks, net.aliases) == ("bridge", [], [])
    assert {(p.container_port, p.host_port, p.protocol, p.host_ip) for p in net.ports} == \
        {(80, 8080, "tcp", "127.0.0.1"), (53, 0, "udp", "")}
    assert (net.dns, net.dns_search, net.dns_options, net.add_hosts) == \
        (["10.0.0.1"], ["example.org"], ["ndots:2"], [("db", "10.0.0.5")])
    assert (o.restart.name, o.restart.maximum_retry_count) == ("on-failure", 3)
    assert (b.cap_add, b.cap_drop, b.no_new_privileges) == (["NET_ADMIN"], ["MKNOD"], False)
    assert (b.shm_size, b.memory, b.cpus, b.pids_limit) == (1 << 20, 64 << 20, 0.5, 50)
    assert b.sysctls == {"net.ipv4.ip_forward": "1"} and b.group_add == ["10"]
    assert (b.ulimits[0].type, b.ulimits[0].soft, b.ulimits[0].hard) == \
        ("RLIMIT_NOFILE", 100, 200)
    assert (b.devices[0].path, b.devices[0].permissions) == ("/dev/x", "r")
    assert o.volumes_from == [("other", True)]
    assert (o.stop_signal, o.stop_timeout, o.labels) == ("SIGINT", 3.0, {"k": "v"})
    assert o.healthcheck.test == ["CMD-SHELL", "true"] and o.healthcheck.interval == 2.0
    assert o.healthcheck.retries == 5
    assert req.record["Config"]["Tty"] is True and req.record["HostConfig"]["Memory"] == 64 << 20


def test_network_modes_and_endpoints() -> None:
    def net(mode: str, endpoints: dict | None = None) -> object:
        body = {"Image": "x", "HostConfig": {"NetworkMode": mode}}
        if endpoints is not None:
            body["NetworkingConfig"] = {"EndpointsConfig": endpoints}
        return create_request(body, None).options.network
    assert net("none").mode == "none" and net("host").mode == "host"
    joined = net("container:web")
    assert (joined.mode, joined.container) == ("container", "web")
    user = net("backend", {"backend": {"Aliases": ["db", "store"],
                                       "IPAMConfig": {"IPv4Address": "10.9.0.7"}}})
    assert (user.networks, user.aliases, user.ip) == (["backend"], ["db", "store"], "10.9.0.7")
    # compose sets aliases on the default network too: no DNS there, so they are dropped
    assert net("bridge", {"bridge": {"Aliases": ["web"]}}).aliases == []
    with pytest.raises(ApiError, match="NetworkMode"):
        net("bridge", {"other": {}})
    with pytest.raises(ApiError):
        create_request({"Image": "x", "HostConfig": {"AutoRemove": True,
                                                     "RestartPolicy": {"Name": "always"}}},
                       None)


@pytest.mark.parametrize("host", [
    {"PidMode": "host"}, {"UTSMode": "host"}, {"CgroupnsMode": "host"},
    {"UsernsMode": "keep-id"}, {"Runtime": "kata"}, {"CpusetCpus": "0"},
    {"SecurityOpt": ["seccomp=/x.json"]}, {"SecurityOpt": ["apparmor=custom"]},
    {"SecurityOpt": ["systempaths=unconfined"]}, {"MaskedPaths": ["/x"]},
    {"Links": ["a:b"]}, {"OomScoreAdj": -1000}, {"Privileged": "yes"},
    {"CapAdd": "NET_ADMIN\0"}, {"LogConfig": {"Type": "none"}},
])
def test_what_would_change_isolation_is_refused(host: dict) -> None:
    with pytest.raises((ApiError, OciimgError)) as info:
        create_request({"Image": "x", "HostConfig": host}, None)
    exc = info.value
    assert (exc.status if isinstance(exc, ApiError) else status_of(exc)) == 400


def test_publish_all_takes_the_bodys_exposed_ports() -> None:
    body = {"Image": "x", "ExposedPorts": {"8080/tcp": {}, "80/tcp": {}},
            "HostConfig": {"PublishAllPorts": True,
                           "PortBindings": {"80/tcp": [{"HostPort": "8000"}]}}}
    ports = create_request(body, None).options.network.ports
    assert sorted((p.container_port, p.host_port) for p in ports) == [(80, 8000), (8080, 0)]
    body["HostConfig"]["PublishAllPorts"] = False
    assert len(create_request(body, None).options.network.ports) == 1
