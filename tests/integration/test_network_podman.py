"""The same `run` command lines under podman (runc, its netavark) and ociimg: the same
/etc/hosts entries, resolv.conf, hostname, exit codes and published-port reachability.

podman runs with its own --root/--runroot, cgroupfs and file events (no systemd here) and
low ulimits (this host cannot raise RLIMIT_NOFILE to podman's default); `run --rm` can
hang in podman 4.3 without systemd, so containers are removed explicitly."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need
from tests.integration.cli_helpers import ociimg
from tests.waiting import wait_until

pytestmark = pytest.mark.usefixtures("root")

SCRIPT = ("cat /etc/hosts; echo ===; cat /etc/resolv.conf; echo ===; cat /etc/hostname; "
          "echo; echo HOSTNAME=$HOSTNAME; exit 3")


@pytest.fixture
def podman() -> Iterator[list[str]]:
    tool = shutil.which("podman")
    need(tool is not None and shutil.which("runc") is not None, "podman/runc missing")
    need(os.access("/usr/lib/podman/netavark", os.X_OK), "netavark missing")
    short = Path(tempfile.mkdtemp(prefix="ociimg-pn-"))  # podman: runroot <= 50 chars
    conf = short / "containers.conf"
    conf.write_text('[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n')
    os.environ["CONTAINERS_CONF"] = str(conf)
    argv = [str(tool), "--root", str(short / "root"), "--runroot", str(short / "rr"),
            "--storage-driver", "vfs", "--runtime", "runc"]
    yield argv
    del os.environ["CONTAINERS_CONF"]
    for name in ("pn-bridge", "pn-host", "pn-web"):
        subprocess.run([*argv, "rm", "-f", name], capture_output=True, timeout=120,
                       check=False)
    shutil.rmtree(short, ignore_errors=True)


LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


def _shape(out: str, name: str) -> dict[str, object]:
    """What a program in the container can rely on: which address each name of interest
    resolves to (by kind), the resolver lines, the hostname."""
    hosts, resolv, rest = out.split("===\n")
    entries: dict[str, str] = {}
    for line in hosts.splitlines():
        ip, *names = line.split()
        for n in names:
            entries.setdefault(n, ip)
    own = entries.get("boxhost")

    def kind(ip: str | None) -> str | None:
        if ip is None or ip.startswith("127."):
            return ip and "loopback"
        if ip == own:
            return "own address"
        if ip.endswith(".1") and own and ip.rsplit(".", 2)[0] == own.rsplit(".", 2)[0]:
            return "gateway"
        return ip
    names = ("localhost", "db.example", "boxhost", name, "host.containers.internal")
    return {"hosts": {n: kind(entries.get(n)) for n in names},
            "resolv": sorted(line for line in resolv.splitlines() if line.strip()),
            "rest": [line.strip() for line in rest.splitlines() if line.strip()]}


@pytest.mark.parametrize("mode", ["bridge", "host"])
def test_etc_files_and_exit_code_match_podman(podman: list[str], ociroot: Path,
                                              fixture_layout: Path, mode: str) -> None:
    image = f"oci:{fixture_layout}:busybox"
    flags = ["--network", mode, "--hostname", "boxhost", "--add-host", "db.example:10.1.2.3",
             "--dns-search", "corp.example"]
    theirs = subprocess.run([*podman, "run", "--name", f"pn-{mode}", *flags, *LIMITS, image,
                             "sh", "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    ours = ociimg(ociroot, "run", "--rm", "--name", f"pn-{mode}", *flags, image, "sh", "-c",
                  SCRIPT, check=False)
    assert theirs.returncode == ours.returncode == 3, (theirs.stderr, ours.stderr)
    want, got = _shape(theirs.stdout, f"pn-{mode}"), _shape(ours.stdout, f"pn-{mode}")
    if mode == "host":
        # podman names the host's address host.containers.internal and gives the
        # hostname no line at all; ociimg maps it to 127.0.1.1 (Debian's convention).
        for n in ("boxhost", f"pn-{mode}", "host.containers.internal"):
            want["hosts"].pop(n)  # type: ignore[union-attr]
            got["hosts"].pop(n)  # type: ignore[union-attr]
    assert got == want


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):  # noqa: S310
            return True
    except OSError:
        return False


def test_published_port_reachability_matches_podman(podman: list[str], ociroot: Path,
                                                    fixture_layout: Path) -> None:
    image = f"oci:{fixture_layout}:busybox"
    serve = "mkdir /w; echo ok > /w/index.html; exec httpd -f -p 80 -h /w"
    results = {}
    for tool in ("podman", "ociimg"):
        port, unpublished = _free_port(), _free_port()
        args = ["run", "-d", "--name", "pn-web", "-p", f"127.0.0.1:{port}:80", image, "sh",
                "-c", serve]
        if tool == "podman":
            subprocess.run([*podman, *args[:2], *LIMITS, *args[2:]], check=True,
                           capture_output=True, timeout=300)
        else:
            ociimg(ociroot, *args)
        try:
            wait_until(lambda p=port: _answers(p), f"{tool}: port {port}")
            results[tool] = (_answers(port), _answers(unpublished))
        finally:
            if tool == "podman":
                subprocess.run([*podman, "rm", "-f", "pn-web"], capture_output=True,
                               timeout=120, check=False)
            else:
                ociimg(ociroot, "rm", "-f", "pn-web")
    assert results["ociimg"] == results["podman"] == (True, False)
