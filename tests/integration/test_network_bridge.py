"""`ociimg run` networking for real, as root: netavark bridges, published ports reached
from the host on 127.0.0.1, DNS between containers, the /etc files, and no veth, netns,
iptables rule or address lease left behind on any path out (rm, stop, exit, kill -9 of
the monitor or of the CLI)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import need
from tests.integration.cli_helpers import assert_one_line_error, ociimg, ociimg_background
from tests.integration.network_helpers import (
    host_state,
    netns_mounts,
    network_doc,
    udp_echo_binary,
)
from tests.waiting import wait_for_line, wait_until

pytestmark = pytest.mark.usefixtures("root", "netavark")

HTTPD = "mkdir -p /www; echo hello-$HOSTNAME > /www/index.html; exec httpd -f -p 80 -h /www"


@pytest.fixture
def netavark() -> None:
    need(os.access("/usr/lib/podman/netavark", os.X_OK), "netavark missing: apt-get install "
         "netavark aardvark-dns")


@pytest.fixture
def image(fixture_layout: Path) -> str:
    return f"oci:{fixture_layout}:busybox"


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - loopback only
        return r.read().decode()


def _wait_http(url: str) -> str:
    seen: list[str] = []

    def answered() -> bool:
        try:
            seen.append(_get(url))
        except OSError:
            return False
        return True
    wait_until(answered, f"{url} never answered")
    return seen[-1]


def _cid(root: Path, name: str) -> str:
    rows = json.loads(ociimg(root, "ps", "-a", "--json").stdout)
    return next(r["id"] for r in rows if r["name"] == name)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_published_tcp_and_udp_ports_reach_the_container_from_loopback(
        ociroot: Path, image: str, tmp_path: Path) -> None:
    echo = udp_echo_binary(tmp_path)
    tcp, udp = _free_port(), _free_port()
    ociimg(ociroot, "run", "-d", "--name", "web", "--hostname", "webhost",
           "-p", f"127.0.0.1:{tcp}:80", "-p", "80", "-p", f"127.0.0.1:{udp}:9999/udp",
           "-v", f"{echo}:/udpecho:ro", image, "sh", "-c", f"/udpecho 9999 & {HTTPD}")
    cid = _cid(ociroot, "web")
    try:
        assert _wait_http(f"http://127.0.0.1:{tcp}/index.html") == "hello-webhost\n"
        lines = ociimg(ociroot, "port", "web").stdout.splitlines()
        assert f"80/tcp -> 127.0.0.1:{tcp}" in lines
        assert f"9999/udp -> 127.0.0.1:{udp}" in lines
        # `-p 80`: a free host port chosen at create, on every host address.
        other = [line for line in lines if line.startswith("80/tcp -> 0.0.0.0:")]
        assert len(other) == 1
        random_port = int(other[0].rsplit(":", 1)[1])
        assert random_port != tcp
        assert _wait_http(f"http://127.0.0.1:{random_port}/index.html") == "hello-webhost\n"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(1)
            answer = b""
            for _ in range(20):  # the echo server may still be starting: UDP just drops
                s.sendto(b"ping", ("127.0.0.1", udp))
                try:
                    answer = s.recv(100)
                    break
                except TimeoutError:
                    continue
        assert answer == b"echo:ping"
        assert_one_line_error(ociimg(ociroot, "port", "web", "81", check=False), "81")
        # A second DNAT for the same port would shadow the first: refused, nothing kept.
        assert_one_line_error(ociimg(ociroot, "run", "--rm", "-p", f"{tcp}:80", image, "true",
                                     check=False), "already published")
        assert _get(f"http://127.0.0.1:{tcp}/index.html") == "hello-webhost\n"
    finally:
        ociimg(ociroot, "rm", "-f", "web")
    assert host_state([cid]) == {"netns": [], "attached": [], "locks": [], "leases": [],
                                 "rules": []}


def test_publish_all_publishes_the_exposed_ports(ociroot: Path, image: str) -> None:
    ociimg(ociroot, "run", "--name", "base", "--network", "none", image, "true")
    ociimg(ociroot, "commit", "-c", "EXPOSE 80/tcp", "base", "exposing:1")
    ociimg(ociroot, "run", "-d", "--name", "web", "-P", "exposing:1", "sh", "-c", HTTPD)
    try:
        (line,) = ociimg(ociroot, "port", "web").stdout.splitlines()
        assert line.startswith("80/tcp -> 0.0.0.0:")
        port = int(line.rsplit(":", 1)[1])
        assert _wait_http(f"http://127.0.0.1:{port}/index.html").startswith("hello-")
    finally:
        ociimg(ociroot, "rm", "-f", "web", "base")


def test_containers_on_a_user_network_find_each_other_by_name_and_alias(
        ociroot: Path, image: str) -> None:
    ociimg(ociroot, "network", "create", "appnet")
    doc = network_doc(ociroot, "appnet")
    ociimg(ociroot, "run", "-d", "--name", "srv", "--network", "appnet",
           "--network-alias", "db", image, "sh", "-c", HTTPD)
    cids = [_cid(ociroot, "srv")]
    try:
        out = ociimg(ociroot, "run", "--rm", "--network", "appnet", "--dns", "192.0.2.53",
                     image, "sh", "-c",
                     "for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://srv/index.html "
                     "&& break; sleep 0.2; done; ping -c1 -W2 db >/dev/null && echo ping-ok;"
                     " wget -qO- http://db/index.html; cat /etc/resolv.conf").stdout
        gateway = doc["subnets"][0]["gateway"]
        assert out.count("hello-") == 2 and "ping-ok" in out
        assert f"nameserver {gateway}" in out and "dns.podman" in out
        assert "192.0.2.53" not in out  # --dns is aardvark's upstream here, as in podman
        # The default network has no DNS: names of other containers do not resolve there.
        alone = ociimg(ociroot, "run", "--rm", image, "sh", "-c",
                       "wget -qO- -T 2 http://srv/index.html; echo rc=$?").stdout
        assert "hello-" not in alone
        listed = ociimg(ociroot, "network", "ls").stdout
        assert "appnet" in listed and doc["network_interface"] in listed
        inspected = json.loads(ociimg(ociroot, "network", "inspect", "appnet").stdout)[0]
        assert inspected["containers"] == {cids[0]: {"name": "srv"}}
        assert_one_line_error(ociimg(ociroot, "network", "rm", "appnet", check=False), "srv")
    finally:
        ociimg(ociroot, "rm", "-f", "srv")
    assert ociimg(ociroot, "network", "rm", "appnet").stdout.strip() == "appnet"
    assert host_state(cids, doc["network_interface"], doc["subnets"][0]["subnet"]) == {
        "netns": [], "attached": [], "locks": [], "leases": [], "rules": [],
        "bridge": False, "veths": 0}


def test_network_container_mode_shares_the_namespace_and_files(ociroot: Path,
                                                               image: str) -> None:
    ociimg(ociroot, "run", "-d", "--name", "web", "--hostname", "webhost", image, "sh", "-c",
           HTTPD)
    try:
        out = ociimg(ociroot, "run", "--rm", "--network", "container:web", image, "sh", "-c",
                     "for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://127.0.0.1/index.html"
                     " && break; sleep 0.2; done; cat /etc/hosts").stdout
        assert "hello-webhost" in out and "\twebhost web" in out
        assert_one_line_error(ociimg(ociroot, "run", "--network", "container:nosuch", image,
                                     "true", check=False), "nosuch")
    finally:
        ociimg(ociroot, "rm", "-f", "web")


@pytest.mark.parametrize("mode", ["bridge", "host", "none"])
def test_every_mode_gets_hosts_resolv_conf_hostname_and_HOSTNAME(
        ociroot: Path, image: str, mode: str) -> None:
    out = ociimg(ociroot, "run", "--rm", "--network", mode, "--name", "box", "--hostname",
                 "boxhost", "--add-host", "db.example:10.1.2.3", "--dns-search",
                 "corp.example", image, "sh", "-c",
                 "cat /etc/hosts; echo ===; cat /etc/resolv.conf; echo ===; "
                 "cat /etc/hostname; echo HOSTNAME=$HOSTNAME; grep -c ' /etc/hosts ' "
                 "/proc/self/mountinfo").stdout
    hosts, resolv, rest = out.split("===\n")
    assert hosts.startswith("127.0.0.1\tlocalhost")
    assert "10.1.2.3\tdb.example" in hosts and "boxhost box" in hosts
    assert "search corp.example" in resolv
    assert rest.splitlines()[:2] == ["boxhost", "HOSTNAME=boxhost"]
    assert rest.splitlines()[2] == "1"  # bind-mounted from the container dir
    if mode == "bridge":
        assert "10.87." in hosts and "host.containers.internal" in hosts
    for line in resolv.splitlines():
        if line.startswith("nameserver") and mode != "host":
            assert not line.split()[1].startswith("127."), resolv


def _serve(listener: socket.socket) -> None:
    """Accept and close at once: a client that got through sees EOF and exits 0."""
    import threading

    def loop() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.close()
    threading.Thread(target=loop, daemon=True).start()


def test_a_container_cannot_reach_host_loopback_services_unless_published(
        ociroot: Path, image: str) -> None:
    with socket.socket() as lo:
        lo.bind(("127.0.0.1", 0))
        lo.listen(8)
        _serve(lo)
        port = lo.getsockname()[1]
        ociimg(ociroot, "run", "-d", "--name", "box", image, "sleep", "300")
        try:
            gateway = json.loads(
                (ociroot / "networks" / "ociimg.json").read_text())["subnets"][0]["gateway"]
            with socket.socket() as gw:  # the control: a listener on the bridge is reachable
                gw.bind((gateway, 0))
                gw.listen(8)
                _serve(gw)
                open_port = gw.getsockname()[1]
                script = (f"nc -w 2 {gateway} {open_port} </dev/null && echo open-ok; "
                          f"nc -w 2 {gateway} {port} </dev/null && echo LOOPBACK-REACHED; "
                          f"nc -w 2 127.0.0.1 {port} </dev/null && echo LOOPBACK-REACHED;"
                          " true")
                out = ociimg(ociroot, "exec", "box", "sh", "-c", script, timeout=60).stdout
            assert "open-ok" in out
            assert "LOOPBACK-REACHED" not in out
        finally:
            ociimg(ociroot, "rm", "-f", "box")


def _monitor_pid(root: Path, cid: str) -> int:
    return int(json.loads((root / "containers" / cid / "monitor.json").read_text())["pid"])


def test_no_leaks_on_any_path_out(ociroot: Path, image: str) -> None:
    ociimg(ociroot, "network", "create", "leaknet")
    doc = network_doc(ociroot, "leaknet")
    bridge, subnet = doc["network_interface"], doc["subnets"][0]["subnet"]
    clean = {"netns": [], "attached": [], "locks": [], "leases": [], "rules": [],
             "bridge": False, "veths": 0}
    cids: list[str] = []
    net = ["--network", "leaknet"]
    mounts_before = netns_mounts()

    def run_d(name: str, *extra: str) -> str:
        ociimg(ociroot, "run", "-d", "--name", name, *net, *extra, image, "sleep", "300")
        cids.append(_cid(ociroot, name))
        return cids[-1]

    # 1. rm -f of a running container; 2. stop then rm; 3. the program exits by itself.
    a = run_d("a", "-p", f"127.0.0.1:{_free_port()}:80")
    up = host_state([a], bridge, subnet)
    assert up["netns"] == [a] and up["leases"] and up["rules"] and up["veths"] == 1
    ociimg(ociroot, "rm", "-f", "a")
    assert host_state(cids, bridge, subnet) == clean
    run_d("b")
    ociimg(ociroot, "stop", "-t", "1", "b")
    assert host_state(cids, bridge, subnet) == clean
    ociimg(ociroot, "rm", "b")
    ociimg(ociroot, "run", *net, "--name", "c", image, "true")
    cids.append(_cid(ociroot, "c"))
    assert host_state(cids, bridge, subnet) == clean
    # 4. kill -9 of the monitor: the next start anywhere reaps it; rm -f still works.
    d = run_d("d")
    monitor = _monitor_pid(ociroot, d)
    os.kill(monitor, signal.SIGKILL)
    wait_until(lambda: not _alive(monitor), "the monitor never died")
    ociimg(ociroot, "run", "--rm", *net, image, "true")  # its setup reaps d
    assert host_state([d], bridge, subnet) == {**clean, "bridge": False, "veths": 0}
    ociimg(ociroot, "rm", "-f", "d")
    # 5. kill -9 of the attached CLI: the monitor goes on and tears down at exit.
    proc = ociimg_background(ociroot, "run", "--name", "e", *net, image, "sh", "-c",
                             "echo up; sleep 300")
    wait_for_line(proc, "up")
    e = _cid(ociroot, "e")
    cids.append(e)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert host_state([e], bridge, subnet)["netns"] == [e]  # still running, still attached
    ociimg(ociroot, "stop", "-t", "0", "e")
    ociimg(ociroot, "rm", "e")
    # 6. network prune: nothing left to reap; the network goes once no container (even an
    # exited one, as podman counts them) names it.
    assert host_state(cids, bridge, subnet) == clean
    assert "leaknet" not in ociimg(ociroot, "network", "prune", "-f").stdout
    ociimg(ociroot, "rm", "c")
    assert "leaknet" in ociimg(ociroot, "network", "prune", "-f").stdout
    assert netns_mounts() == mounts_before
    assert subprocess.run(["pgrep", "-f", f"aardvark-dns.*{bridge}"], check=False,
                          capture_output=True).returncode != 0


def test_runc_joins_the_same_netns_and_port(ociroot: Path, image: str) -> None:
    need(shutil.which("runc") is not None, "runc missing: apt-get install runc")
    port = _free_port()
    ociimg(ociroot, "run", "-d", "--runtime", "runc", "--name", "web", "-p",
           f"127.0.0.1:{port}:80", image, "sh", "-c", HTTPD)
    cid = _cid(ociroot, "web")
    try:
        assert _wait_http(f"http://127.0.0.1:{port}/index.html").startswith("hello-")
        config = json.loads((ociroot / "containers" / cid / "config.json").read_text())
        (ns,) = [n for n in config["linux"]["namespaces"] if n["type"] == "network"]
        assert ns["path"] == f"/run/ociimg/netns/{cid}"
    finally:
        ociimg(ociroot, "rm", "-f", "web")
    assert host_state([cid]) == {"netns": [], "attached": [], "locks": [], "leases": [],
                                 "rules": []}


def test_connect_and_disconnect_a_running_container(ociroot: Path, image: str) -> None:
    for name in ("front", "back"):
        ociimg(ociroot, "network", "create", name)
    docs = {n: network_doc(ociroot, n) for n in ("front", "back")}
    ociimg(ociroot, "run", "-d", "--name", "db", "--network", "back", image, "sleep", "300")
    ociimg(ociroot, "run", "-d", "--name", "app", "--network", "front", image, "sleep", "300")
    cids = [_cid(ociroot, "db"), _cid(ociroot, "app")]
    try:
        probe = "ping -c1 -W2 db >/dev/null && echo reached-db; true"
        assert "reached-db" not in ociimg(ociroot, "exec", "app", "sh", "-c", probe).stdout
        ociimg(ociroot, "network", "connect", "--alias", "api", "back", "app")
        assert "reached-db" in ociimg(ociroot, "exec", "app", "sh", "-c", probe).stdout
        assert "reached-app" in ociimg(ociroot, "exec", "db", "sh", "-c",
                                       "ping -c1 -W2 api >/dev/null && echo reached-app"
                                       ).stdout
        ociimg(ociroot, "network", "disconnect", "back", "app")
        assert "reached-db" not in ociimg(ociroot, "exec", "app", "sh", "-c", probe).stdout
        assert "10.86." in ociimg(ociroot, "exec", "app", "cat", "/etc/hosts").stdout
        assert_one_line_error(ociimg(ociroot, "network", "disconnect", "front", "app",
                                     check=False), "last network")
    finally:
        ociimg(ociroot, "rm", "-f", "db", "app")
    for doc in docs.values():
        assert host_state(cids, doc["network_interface"], doc["subnets"][0]["subnet"]) == {
            "netns": [], "attached": [], "locks": [], "leases": [], "rules": [],
            "bridge": False, "veths": 0}


def test_internal_network_with_subnet_static_ip_and_mac(ociroot: Path, image: str) -> None:
    ociimg(ociroot, "network", "create", "--internal", "--subnet", "10.86.213.0/24", "inner")
    ociimg(ociroot, "run", "-d", "--name", "peer", "--network", "inner", image, "sleep", "300")
    cids = [_cid(ociroot, "peer")]
    try:
        out = ociimg(ociroot, "run", "--name", "probe", "--network", "inner", "--ip",
                     "10.86.213.77", "--mac-address", "02:42:0a:56:d5:4d", image, "sh", "-c",
                     "ip -4 -o addr show eth0; ip link show eth0; ip route; "
                     "ping -c1 -W2 peer >/dev/null && echo peer-ok").stdout
        cids.append(_cid(ociroot, "probe"))
        assert "inet 10.86.213.77/24" in out and "02:42:0a:56:d5:4d" in out
        assert "peer-ok" in out  # names resolve inside an internal network
        assert "default" not in out  # but there is no way out of it
        assert_one_line_error(ociimg(ociroot, "run", "--rm", "--network", "inner", "--ip",
                                     "10.86.214.5", image, "true", check=False), "10.86.214.5")
        assert_one_line_error(ociimg(ociroot, "run", "--rm", "--network", "inner", "--dns",
                                     "10.86.213.1", image, "true", check=False), "own DNS")
    finally:
        ociimg(ociroot, "rm", "-f", "peer", "probe")
    assert host_state(cids, subnet="10.86.213.0/24") == {
        "netns": [], "attached": [], "locks": [], "leases": [], "rules": []}


def test_kill_9_of_the_cli_in_the_middle_of_network_setup_leaks_nothing(
        ociroot: Path, image: str) -> None:
    ociimg(ociroot, "network", "create", "killnet")
    doc = network_doc(ociroot, "killnet")
    bridge, subnet = doc["network_interface"], doc["subnets"][0]["subnet"]
    attached = Path("/run/ociimg/net/attached")
    before = set(attached.glob("*.json")) if attached.is_dir() else set()
    proc = ociimg_background(ociroot, "run", "-d", "--name", "k", "--network", "killnet",
                             "-p", f"127.0.0.1:{_free_port()}:80", image, "sleep", "300")
    # The record appears first, before the netns, the lease and netavark: kill from there.
    wait_until(lambda: set(attached.glob("*.json")) - before, "no attachment record",
               proc=proc)
    proc.kill()
    proc.wait(timeout=10)
    cid = _cid(ociroot, "k")
    status = next(r["status"] for r in json.loads(ociimg(ociroot, "ps", "-a",
                                                         "--json").stdout))
    ociimg(ociroot, "network", "prune", "-f")  # reaps whatever the dead CLI held
    if status == "configured":  # killed before its monitor took over: prune alone cleans
        assert host_state([cid], bridge, subnet)["attached"] == []
        assert host_state([cid], bridge, subnet)["leases"] == []
    ociimg(ociroot, "rm", "-f", "k")
    assert host_state([cid], bridge, subnet) == {
        "netns": [], "attached": [], "locks": [], "leases": [], "rules": [],
        "bridge": False, "veths": 0}
