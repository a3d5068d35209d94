"""`ociimg run` network flags, network names and the /etc files: pure code, no root."""

from __future__ import annotations

from pathlib import Path

import pytest

from ociimg.cli.netopts import network_options, parse_add_host, parse_port
from ociimg.errors import InvalidArgument
from ociimg.network import PortMapping, config, etcfiles


@pytest.mark.parametrize(("text", "want"), [
    ("80", PortMapping(80, 0, "tcp", "")),
    ("8080:80", PortMapping(80, 8080, "tcp", "")),
    ("127.0.0.1:8080:80/udp", PortMapping(80, 8080, "udp", "127.0.0.1")),
    ("127.0.0.1::53/udp", PortMapping(53, 0, "udp", "127.0.0.1")),
])
def test_port_grammar(text: str, want: PortMapping) -> None:
    assert parse_port(text) == want


@pytest.mark.parametrize("text", ["", "x", "0", "70000", "80/sctp", "1.2.3:80:80",
                                  "999.1.1.1:80:80", "80:80:80:80", "8080-8090:80",
                                  "80/tcp\n", "-1"])
def test_bad_ports_are_refused(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_port(text)


def test_add_host_and_dns_values_are_checked() -> None:
    assert parse_add_host("db:10.0.0.5") == ("db", "10.0.0.5")
    for bad in ("db", "db:notanip", "bad name:1.2.3.4", "x\ny:1.2.3.4", ":1.2.3.4"):
        with pytest.raises(InvalidArgument):
            parse_add_host(bad)
    args = dict(publish=[], publish_all=False, dns_search=[], dns_option=[], add_host=[],
                network_alias=[], ip=None, mac_address=None, hostname=None)
    with pytest.raises(InvalidArgument):
        network_options("bridge", **{**args, "dns": ["nameserver 1.1.1.1"]})
    with pytest.raises(InvalidArgument):
        network_options("bridge", **{**args, "dns": [], "dns_option": ["a b"]})
    with pytest.raises(InvalidArgument):
        network_options("bridge", **{**args, "dns": [], "mac_address": "02:42"})


def test_network_modes() -> None:
    args = dict(publish=[], publish_all=False, dns=[], dns_search=[], dns_option=[],
                add_host=[], network_alias=[], ip=None, mac_address=None, hostname=None)
    assert network_options("bridge", **args).mode == "bridge"
    assert network_options("host", **args).mode == "host"
    assert network_options("none", **args).mode == "none"
    opts = network_options("container:web", **args)
    assert (opts.mode, opts.container) == ("container", "web")
    opts = network_options("a,b", **args)
    assert (opts.mode, opts.networks) == ("bridge", ["a", "b"])


@pytest.mark.parametrize("name", ["../x", "..", "a/b", "/etc/passwd", ".hidden", "a b",
                                  "x" * 200, "", "-rf", "a\nb", "é"])
def test_hostile_network_names_are_refused_everywhere(name: str, tmp_path: Path) -> None:
    args = dict(publish=[], publish_all=False, dns=[], dns_search=[], dns_option=[],
                add_host=[], network_alias=[], ip=None, mac_address=None, hostname=None)
    with pytest.raises(InvalidArgument):
        config.create(tmp_path, name)
    with pytest.raises(InvalidArgument):
        config.load(tmp_path, name)
    with pytest.raises(InvalidArgument):
        config.remove(tmp_path, name)
    if name and "," not in name:
        with pytest.raises(InvalidArgument):
            network_options(name, **args)
    assert sorted(p.name for p in tmp_path.rglob("*")) in ([], ["networks"])
    assert not (tmp_path / "networks").exists() or not any(
        (tmp_path / "networks").iterdir())


def test_reserved_names_and_duplicates(tmp_path: Path) -> None:
    for name in ("bridge", "host", "none", config.DEFAULT_NAME):
        with pytest.raises(InvalidArgument):
            config.create(tmp_path, name)
    a = config.create(tmp_path, "a", subnet="10.86.250.0/24")
    with pytest.raises(Exception, match="already exists"):
        config.create(tmp_path, "a")
    with pytest.raises(Exception, match="overlaps"):
        config.create(tmp_path, "b", subnet="10.86.250.128/25")
    b = config.create(tmp_path, "b")
    assert a.bridge != b.bridge and not a.subnet.overlaps(b.subnet)
    assert b.subnet.subnet_of(config.USER_POOL) and b.dns and not config.load(
        tmp_path, "bridge").dns


def test_default_network_avoids_podman_and_docker() -> None:
    import ipaddress
    net = ipaddress.ip_network(config.DEFAULT_SUBNET)
    for theirs in ("10.88.0.0/16", "10.89.0.0/16", "172.17.0.0/16", "10.90.0.0/15"):
        assert not net.overlaps(ipaddress.ip_network(theirs))
        assert not config.USER_POOL.overlaps(ipaddress.ip_network(theirs))
    assert config.DEFAULT_BRIDGE not in ("podman0", "docker0", "cni-podman0")


def test_resolv_conf_replaces_loopback_stubs(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    host = tmp_path / "resolv.conf"
    upstream = tmp_path / "upstream.conf"
    host.write_text("# stub\nnameserver 127.0.0.53\nsearch corp.example\noptions edns0\n")
    upstream.write_text("nameserver 192.0.2.53\nnameserver ::1\n")
    monkeypatch.setattr(etcfiles, "HOST_RESOLV", str(host))
    monkeypatch.setattr(etcfiles, "RESOLVED_UPSTREAMS", str(upstream))
    assert etcfiles.host_resolver() == (["192.0.2.53"], ["corp.example"], ["edns0"])
    assert etcfiles.host_resolver(keep_loopback=True)[0] == ["127.0.0.53"]
    upstream.unlink()
    servers, _, _ = etcfiles.host_resolver()
    assert servers == []  # never a public resolver the host did not choose
    text = etcfiles.resolv_conf(servers, ["corp.example"], [])
    assert "nameserver" not in text.replace("# no usable nameserver", "")


def test_hosts_file_shape() -> None:
    text = etcfiles.hosts("h1", "web", ["10.87.0.2"], [("db", "10.1.1.1")], "10.87.0.1")
    lines = text.splitlines()
    assert lines[0].startswith("127.0.0.1\tlocalhost") and lines[1].startswith("::1\t")
    assert "10.1.1.1\tdb" in lines and "10.87.0.2\th1 web" in lines
    assert lines[-1] == "10.87.0.1\thost.containers.internal"
    assert "127.0.1.1\th1" in etcfiles.hosts("h1", "h1", [], [], None)


@pytest.mark.parametrize("name", ["x\n6.6.6.6 evil", "a b", "a\tb", "", "x" * 65, "-x",
                                  "a#b", "é"])
def test_hostnames_that_could_forge_hosts_entries_are_refused(name: str,
                                                               tmp_path: Path) -> None:
    from ociimg.network import NetworkOptions, prepare
    with pytest.raises(InvalidArgument):
        prepare(tmp_path, tmp_path, "c" * 64, None, name, NetworkOptions(mode="none"), [],
                None)
    assert list(tmp_path.iterdir()) == []
    etcfiles.check_hostname("web-1.example_x")


def test_the_bundle_joins_a_netns_by_path_except_on_the_host(tmp_path: Path) -> None:
    from ociimg.bundle import BundleOptions, to_runtime_config
    from ociimg.spec import parse_config
    (tmp_path / "etc").mkdir()
    image = parse_config(b'{"architecture": "amd64", "os": "linux", "config": '
                         b'{"Cmd": ["x"]}, "rootfs": {"type": "layers", "diff_ids": []}}')

    def netns(**kw: object) -> list[dict[str, str]]:
        cfg = to_runtime_config(image, BundleOptions(**kw), tmp_path)  # type: ignore[arg-type]
        return [n for n in cfg["linux"]["namespaces"] if n["type"] == "network"]
    assert netns(netns_path="/run/ociimg/netns/abc") == [
        {"type": "network", "path": "/run/ociimg/netns/abc"}]
    assert netns() == [{"type": "network"}]
    assert netns(network="host", netns_path="/run/ociimg/netns/abc") == []


def test_listing_before_first_use_writes_nothing_and_is_stable(tmp_path: Path) -> None:
    first = [n.doc["id"] for n in config.list_networks(tmp_path)]
    assert first == [n.doc["id"] for n in config.list_networks(tmp_path)]
    assert list(tmp_path.iterdir()) == []
    assert config.load(tmp_path, "bridge").doc["id"] == first[0]  # now written
    assert (tmp_path / "networks" / "ociimg.json").exists()
