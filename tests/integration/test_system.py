"""`ociimg system reset|df|prune` for real, as root, and read-only commands that must not
create a root: reset after running bridge containers (one with its monitor killed)
leaves no veth, netns, iptables rule, mount or cgroup of theirs, and no root."""

from __future__ import annotations

import json
import os
import secrets
import signal
from pathlib import Path

import pytest

from ociimg.commands.system import check_root
from ociimg.errors import InvalidArgument
from ociimg.network import netns
from tests.conftest import need
from tests.integration.cli_helpers import assert_one_line_error, ociimg
from tests.integration.network_helpers import NETNS, host_state, network_doc
from tests.waiting import wait_until

pytestmark = pytest.mark.usefixtures("root")


@pytest.fixture
def image(fixture_layout: Path) -> str:
    return f"oci:{fixture_layout}:busybox"


def _cids(root: Path) -> list[str]:
    return [r["id"] for r in json.loads(ociimg(root, "ps", "-a", "--json").stdout)]


def _cgroups(cids: list[str]) -> list[str]:
    """Cgroup directories, in every hierarchy, whose name holds one of ``cids``."""
    out = []
    for top, dirs, _files in os.walk("/sys/fs/cgroup"):
        out += [os.path.join(top, d) for d in dirs if any(c in d for c in cids)]
    return out


def _mounts(paths: list[str]) -> list[str]:
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [line.split()[4] for line in lines
            if any(line.split()[4].startswith(p) for p in paths)]


def _host_view(root: Path, cids: list[str], bridge: str, subnet: str) -> dict[str, object]:
    state = host_state(cids, bridge, subnet)
    state["cgroups"] = _cgroups(cids)
    state["mounts"] = _mounts([str(root), *(str(NETNS / c) for c in cids)])
    state["runtime"] = sorted(c for c in cids if os.path.exists(f"/run/ociimg/{c}"))
    return state


def test_reset_removes_running_bridge_containers_and_every_trace(ociroot: Path,
                                                                   image: str) -> None:
    need(os.access("/usr/lib/podman/netavark", os.X_OK), "netavark missing: apt-get install "
         "netavark aardvark-dns")
    orphan = secrets.token_hex(32)
    try:
        _reset_and_count(ociroot, image, orphan)
    finally:  # a failure must not leave running containers behind
        if ociroot.exists():
            ociimg(ociroot, "rm", "-f", "-a", check=False)
        netns.remove(orphan)


def _reset_and_count(ociroot: Path, image: str, orphan: str) -> None:
    ociimg(ociroot, "network", "create", "--subnet", "10.86.231.0/24", "resetnet")
    net = network_doc(ociroot, "resetnet")
    bridge, subnet = net["network_interface"], net["subnets"][0]["subnet"]
    for name in ("a", "b", "c"):
        ociimg(ociroot, "run", "-d", "--name", name, "--network", "resetnet",
               "-p", "127.0.0.1::80", image, "sleep", "1000")
    ociimg(ociroot, "run", "--name", "done", "--network", "none", image, "true")
    ociimg(ociroot, "volume", "create", "keepme")
    cids = _cids(ociroot)
    # A crashed monitor: its attachment's lock is free, its program still runs.
    a = next(r["id"] for r in json.loads(ociimg(ociroot, "ps", "--json").stdout)
             if r["name"] == "a")
    crashed = json.loads((ociroot / "containers" / a / "monitor.json").read_text())["pid"]
    assert "ociimg.containers.monitor" in Path(f"/proc/{crashed}/cmdline").read_text()
    os.kill(crashed, signal.SIGKILL)
    wait_until(lambda: not Path(f"/proc/{crashed}").exists() or
               Path(f"/proc/{crashed}/stat").read_text().rpartition(")")[2].split()[0] == "Z",
               "the monitor never died")
    # A netns file whose record is gone (a teardown cut short): a leftover, reaped too.
    netns.create(orphan)
    before = _host_view(ociroot, [*cids, orphan], bridge, subnet)
    assert before["veths"] == 3 and before["rules"]
    assert len(before["netns"]) == 4 and orphan in before["netns"]
    assert before["cgroups"] and before["mounts"] and len(before["runtime"]) >= 3

    refused = ociimg(ociroot, "system", "reset", input="n\n", check=False)
    assert refused.returncode == 1 and "Are you sure" in refused.stderr
    assert _cids(ociroot) == cids  # "no" removes nothing

    out = ociimg(ociroot, "system", "reset", "--force").stdout
    assert "Removed 4 containers" in out
    assert _host_view(ociroot, [*cids, orphan], bridge, subnet) == {
        "netns": [], "attached": [], "locks": [], "leases": [], "rules": [], "bridge": False,
        "veths": 0, "cgroups": [], "mounts": [], "runtime": []}
    assert not ociroot.exists()
    # Again: nothing left to do, still fine; and it made no root.
    ociimg(ociroot, "system", "reset", "-f")
    assert not ociroot.exists()


@pytest.mark.parametrize("planted", ["notes.txt", ".bashrc", "etc"])
def test_reset_refuses_a_directory_that_is_not_an_ociimg_root(tmp_path: Path,
                                                               planted: str) -> None:
    root = tmp_path / "home"
    (root / "store").mkdir(parents=True)
    (root / planted).write_text("mine")
    assert_one_line_error(ociimg(root, "system", "reset", "-f", check=False),
                          "not an ociimg root", repr(planted))
    assert (root / planted).read_text() == "mine" and (root / "store").is_dir()
    # "/" itself is refused by the same check (called alone: never a real reset of "/").
    with pytest.raises(InvalidArgument, match="not an ociimg root"):
        check_root(Path("/"))


def test_reset_leaves_other_roots_running(tmp_path: Path, image: str) -> None:
    mine, other = tmp_path / "mine", tmp_path / "other"
    ociimg(other, "run", "-d", "--name", "keep", "--network", "none", image, "sleep", "1000")
    ociimg(mine, "run", "-d", "--name", "go", "--network", "none", image, "sleep", "1000")
    try:
        ociimg(mine, "system", "reset", "--force")
        assert not mine.exists()
        rows = json.loads(ociimg(other, "ps", "--json").stdout)
        assert [r["name"] for r in rows] == ["keep"]
    finally:
        ociimg(other, "rm", "-f", "keep")


def test_df_and_prune(ociroot: Path, image: str) -> None:
    ociimg(ociroot, "copy", image, f"oci:{ociroot}/store:kept:1")
    ociimg(ociroot, "copy", image.replace(":busybox", ":multilayer"),
           f"oci:{ociroot}/store:spare:1")
    ociimg(ociroot, "tag", "kept:1", "kept:2")  # one image, two names: counted once
    ociimg(ociroot, "run", "-d", "--name", "up", "--network", "none", "kept:1", "sleep", "1000")
    ociimg(ociroot, "run", "--name", "gone", "--network", "none", "kept:1", "sh", "-c",
           "head -c 300000 /dev/zero > /big")
    ociimg(ociroot, "volume", "create", "named")
    ociimg(ociroot, "run", "--name", "anon", "--network", "none", "-v", "/data", "kept:1",
           "true")
    ociimg(ociroot, "rm", "anon")  # its anonymous volume stays (no -v)
    ociimg(ociroot, "network", "create", "--subnet", "10.86.232.0/24", "idle")
    try:
        rows = {r["Type"]: r for r in json.loads(ociimg(ociroot, "system", "df",
                                                        "--json").stdout)}
        assert rows["Containers"]["TotalCount"] == 2 and rows["Containers"]["Active"] == 1
        assert rows["Containers"]["Reclaimable"] >= 300000  # the exited one's /big
        assert rows["Images"]["TotalCount"] == 2 and rows["Images"]["Active"] == 1
        assert rows["Images"]["Size"] > 0
        assert rows["Local Volumes"]["TotalCount"] == 2
        table = ociimg(ociroot, "system", "df").stdout.splitlines()
        assert table[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]

        assert ociimg(ociroot, "system", "prune", check=False, input="").returncode == 1
        out = ociimg(ociroot, "system", "prune", "-a", "--volumes", "-f").stdout
        assert "Deleted Containers:" in out and "idle" in out and "spare:1" in out
        assert [r["name"] for r in json.loads(ociimg(ociroot, "ps", "-a", "--json").stdout)] \
            == ["up"]
        names = ociimg(ociroot, "images", "--format", "{{.Repository}}:{{.Tag}}").stdout
        assert "spare" not in names and "kept:1" in names and "kept:2" in names
        assert ociimg(ociroot, "volume", "ls", "-q").stdout.split() == ["named"]
        assert "idle" not in ociimg(ociroot, "network", "ls", "-q").stdout
    finally:
        ociimg(ociroot, "rm", "-f", "up")


@pytest.mark.parametrize("argv", [
    ["inspect", "busybox"], ["history", "busybox"], ["ls", "busybox"],
    ["manifest", "busybox"], ["digest", "busybox"], ["volume", "ls"],
    ["volume", "inspect", "vol1"], ["network", "ls"], ["network", "inspect", "bridge"],
    ["images"], ["ps", "-a"], ["system", "df"], ["system", "reset", "--force"],
])
def test_read_only_commands_create_no_root(tmp_path: Path, argv: list[str]) -> None:
    missing = tmp_path / "no" / "such" / "root"
    proc = ociimg(missing, *argv, check=False)
    assert "Traceback" not in proc.stderr
    if proc.returncode:
        assert_one_line_error(proc)
    assert not (tmp_path / "no").exists(), argv
