"""cgroup drivers on this host's real hierarchies.

v1 (this host is hybrid: the resource controllers are v1): limits visible in the
files, OOM kill, a bounded fork bomb stopped by pids.max, device rules, freezer,
destroy leaving nothing. v2: the unified hierarchy (here /sys/fs/cgroup/unified has
no memory/cpu/pids controllers, they are bound to v1; hugetlb may be there) — what
v2 can do without them: join, list, freeze, cgroup.kill, destroy, and hugetlb limits
when that controller is available.

Tests use relative cgroup paths, so on v1 each cgroup nests below the test
process's own cgroup of each hierarchy; every test checks nothing is left.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ociimg.errors import ContainerError
from ociimg.runtime import cgroups
from ociimg.runtime.cgroups import detect
from ociimg.runtime.cgroups.common import CgroupManager
from tests.conftest import need
from tests.integration.cgroupns import reshape_cgroup_mounts
from tests.integration.forked import run_in_child

PREFIX = "ociimg-test-"


def host_layout() -> detect.CgroupLayout:
    return detect.read_host_layout()


def leftovers(names: set[str]) -> list[str]:
    """Cgroups named in ``names`` still present in any hierarchy, below the roots or our
    own cgroups (only this test's names: other test runs may be going on meanwhile)."""
    layout = host_layout()
    own = detect.read_own_cgroups()
    bases: set[Path] = set()
    for controller, mount in layout.v1.items():
        bases.update({Path(mount.mountpoint), Path(detect.own_dir(mount, own.get(controller)))})
    if layout.unified is not None:
        bases.update({Path(layout.unified.mountpoint),
                      Path(detect.own_dir(layout.unified, own.get("")))})
    return sorted(str(p) for base in bases for p in base.glob(PREFIX + "*")
                  if p.name in names)


class Tracker:
    def __init__(self) -> None:
        self.managers: list[CgroupManager] = []
        self.procs: list[subprocess.Popen] = []
        self.extra_dirs: list[Path] = []
        self.names: set[str] = set()

    def new_name(self) -> str:
        name = PREFIX + secrets.token_hex(4)
        self.names.add(name)
        return name

    def manager(self, resources: dict | None, path: str | None = None) -> CgroupManager:
        m = cgroups.create_manager(path or self.new_name(), "test", resources)
        self.managers.append(m)
        return m

    def python(self, code: str) -> subprocess.Popen:
        """A Python child that waits for one line on stdin before running ``code``."""
        proc = subprocess.Popen([sys.executable, "-c", "import sys\nsys.stdin.readline()\n"
                                 + code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True)
        self.procs.append(proc)
        return proc

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for m in self.managers:
            m.destroy()
        for d in reversed(self.extra_dirs):
            if d.is_dir():
                d.rmdir()


@pytest.fixture
def track(root: None) -> Iterator[Tracker]:
    tracker = Tracker()
    try:
        yield tracker
    finally:
        tracker.cleanup()
    assert leftovers(tracker.names) == [], "a test cgroup was left behind"


@pytest.fixture
def v1(track: Tracker) -> Tracker:
    layout = host_layout()
    need(layout.mode != "v2", "cgroup v1 hierarchies (this host is pure cgroup v2)")
    need({"memory", "pids", "cpu", "devices", "freezer", "cpuset"} <= set(layout.v1),
         "a v1 controller (memory/pids/cpu/devices/freezer/cpuset) is not mounted")
    return track


def start(proc: subprocess.Popen) -> None:
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()


def test_v1_limits_are_visible_and_destroy_kills_and_removes(v1: Tracker) -> None:
    m = v1.manager({"memory": {"limit": 256 << 20, "reservation": 128 << 20},
                    "cpu": {"shares": 512, "quota": 50000, "period": 100000},
                    "pids": {"limit": 64}})
    proc = v1.python("import time\ntime.sleep(60)")
    m.apply(proc.pid)  # runc's Apply: creates and joins
    m.set()  # runc's Set: the limits
    assert isinstance(m, cgroups.V1Manager)
    assert (Path(m.dirs["memory"]) / "memory.limit_in_bytes").read_text().strip() == str(256 << 20)
    assert (Path(m.dirs["memory"]) / "memory.soft_limit_in_bytes").read_text().strip() == \
        str(128 << 20)
    assert (Path(m.dirs["cpu"]) / "cpu.cfs_quota_us").read_text().strip() == "50000"
    assert (Path(m.dirs["cpu"]) / "cpu.cfs_period_us").read_text().strip() == "100000"
    assert (Path(m.dirs["cpu"]) / "cpu.shares").read_text().strip() == "512"
    assert (Path(m.dirs["pids"]) / "pids.max").read_text().strip() == "64"
    assert m.pids() == [proc.pid]
    own = Path(f"/proc/{proc.pid}/cgroup").read_text()
    pids_root = host_layout().v1["pids"].mountpoint
    assert f"pids:/{os.path.relpath(m.dirs['pids'], pids_root)}" in own
    saved = json.loads(json.dumps(m.to_state()))
    cgroups.load_manager(saved).destroy()
    assert proc.wait(timeout=10) == -signal.SIGKILL
    assert not any(os.path.exists(d) for d in m.dirs.values())


def test_v1_memory_limit_oom_kills_the_hog(v1: Tracker) -> None:
    m = v1.manager({"memory": {"limit": 32 << 20, "swap": 32 << 20}})
    hog = v1.python('data = b"x" * (256 << 20)\nprint("survived", flush=True)')
    m.apply(hog.pid)
    m.set()
    start(hog)
    out, _ = hog.communicate(timeout=60)
    assert hog.returncode == -signal.SIGKILL
    assert "survived" not in out
    # The cgroup's OOM killer did it (not the host's): usage peaked at the limit and
    # the per-cgroup oom_kill counter moved (Linux >= 4.13).
    peak = int((Path(m.dirs["memory"]) / "memory.max_usage_in_bytes").read_text())
    assert peak <= 32 << 20
    oom = (Path(m.dirs["memory"]) / "memory.oom_control").read_text()
    need("oom_kill " in oom, "kernel without the per-cgroup oom_kill counter")
    assert int(oom.split("oom_kill ")[1].split()[0]) >= 1


FORK_BOMB = """
import os
r, w = os.pipe()
made, failure = 0, None
for _ in range(200):
    try:
        pid = os.fork()
    except OSError as exc:
        failure = exc.errno
        break
    if pid == 0:
        os.close(w)
        os.read(r, 1)
        os._exit(0)
    made += 1
os.close(w)
print(made, failure, flush=True)
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
"""


def test_v1_pids_max_stops_a_fork_bomb(v1: Tracker) -> None:
    m = v1.manager({"pids": {"limit": 10}})
    bomb = v1.python(FORK_BOMB)
    m.apply(bomb.pid)
    m.set()
    start(bomb)
    out, _ = bomb.communicate(timeout=60)
    made, failure = out.split()
    assert int(made) < 10  # the bomb itself is one of the 10 tasks
    assert failure == str(11)  # EAGAIN from fork
    events = (Path(m.dirs["pids"]) / "pids.events").read_text()
    assert int(events.split("max ")[1].split()[0]) >= 1
    assert bomb.returncode == 0


def need_openable_kmsg() -> None:
    """The device the device-rule tests deny must be openable outside the cgroup."""
    kmsg = Path("/dev/kmsg")
    need(kmsg.exists(), "no /dev/kmsg to test a denied device with")
    try:
        os.close(os.open(kmsg, os.O_RDONLY | os.O_NONBLOCK))
    except OSError as exc:
        need(False, f"cannot open /dev/kmsg even outside the cgroup: {exc}")


def test_v1_device_rules_are_enforced(v1: Tracker) -> None:
    need_openable_kmsg()
    m = v1.manager({"devices": [{"allow": False, "access": "rwm"}]})
    probe = v1.python(DEVICE_PROBE)
    m.apply(probe.pid)
    m.set()
    start(probe)
    out, _ = probe.communicate(timeout=30)
    assert json.loads(out) == [0, 0, 1]  # default devices allowed, kmsg: EPERM
    assert "c 1:11" not in (Path(m.dirs["devices"]) / "devices.list").read_text()


def test_v1_freeze_and_thaw(v1: Tracker) -> None:
    m = v1.manager(None)
    proc = v1.python("import time\ntime.sleep(60)")
    m.apply(proc.pid)
    m.freeze()
    assert (Path(m.dirs["freezer"]) / "freezer.state").read_text().strip() == "FROZEN"
    assert m.is_frozen()
    m.thaw()
    assert not m.is_frozen()
    assert (Path(m.dirs["freezer"]) / "freezer.state").read_text().strip() == "THAWED"
    m.kill(signal.SIGTERM)
    assert proc.wait(timeout=10) == -signal.SIGTERM


def test_v1_absolute_path_copies_cpuset_through_new_parents(v1: Tracker) -> None:
    parent = v1.new_name()
    m = v1.manager({"cpu": {"cpus": "0"}}, path=f"/{parent}/ctr")
    assert isinstance(m, cgroups.V1Manager)
    for d in [*dict.fromkeys(m.dirs.values()), m.unified_dir]:
        if d is not None:
            v1.extra_dirs.append(Path(d).parent)  # the new parent: removed after the manager
    m.create()
    m.set()
    cpuset_root = Path(host_layout().v1["cpuset"].mountpoint)
    assert Path(m.dirs["cpuset"]) == cpuset_root / parent / "ctr"
    root_cpus = (cpuset_root / "cpuset.cpus").read_text().strip()
    assert (cpuset_root / parent / "cpuset.cpus").read_text().strip() == root_cpus
    assert (cpuset_root / parent / "cpuset.mems").read_text().strip() == \
        (cpuset_root / "cpuset.mems").read_text().strip()
    assert (Path(m.dirs["cpuset"]) / "cpuset.cpus").read_text().strip() == "0"


def test_hybrid_also_joins_the_unified_hierarchy(v1: Tracker) -> None:
    layout = host_layout()
    need(layout.mode == "hybrid", f"a hybrid cgroup host (this one is {layout.mode})")
    m = v1.manager(None)
    assert isinstance(m, cgroups.V1Manager) and m.unified_dir is not None
    proc = v1.python("import time\ntime.sleep(60)")
    m.apply(proc.pid)
    assert layout.unified is not None
    rel = "/" + str(Path(m.unified_dir).relative_to(layout.unified.mountpoint))
    assert f"0::{rel}\n" in Path(f"/proc/{proc.pid}/cgroup").read_text()
    m.destroy()
    assert not Path(m.unified_dir).exists()


# ------------------------------------------------------------------------ v2

@pytest.fixture
def unified(track: Tracker) -> tuple[Tracker, Path]:
    layout = host_layout()
    need(layout.unified is not None, "no cgroup2 hierarchy mounted")
    assert layout.unified is not None
    root = Path(layout.unified.mountpoint)
    need((root / "cgroup.subtree_control").exists(), f"{root} is not a cgroup2 root")
    return track, root


def v2_manager(track: Tracker, root: Path, resources: dict | None) -> cgroups.V2Manager:
    m = cgroups.V2Manager(root, track.new_name(), resources)
    track.managers.append(m)
    return m


def test_v2_join_freeze_kill_destroy(unified: tuple[Tracker, Path]) -> None:
    track, root = unified
    m = v2_manager(track, root, None)
    proc = track.python("import time\ntime.sleep(60)")
    m.apply(proc.pid)
    assert m.pids() == [proc.pid]
    m.freeze()
    assert "frozen 1" in (Path(m.path) / "cgroup.events").read_text()
    assert m.is_frozen()
    m.thaw()
    assert not m.is_frozen()
    assert "frozen 0" in (Path(m.path) / "cgroup.events").read_text()
    need((Path(m.path) / "cgroup.kill").exists(), "kernel without cgroup.kill (< 5.14)")
    m.kill()
    assert proc.wait(timeout=10) == -signal.SIGKILL
    m.destroy()
    assert not Path(m.path).exists()


DEVICE_PROBE = (
    "import os, json\n"
    "def try_open(p):\n"
    "    try:\n"
    "        os.close(os.open(p, os.O_RDONLY | os.O_NONBLOCK)); return 0\n"
    "    except OSError as e:\n"
    "        return e.errno\n"
    "print(json.dumps([try_open('/dev/null'), try_open('/dev/full'),"
    " try_open('/dev/kmsg')]), flush=True)")


def test_v2_device_rules_enforced_by_the_bpf_program(unified: tuple[Tracker, Path]) -> None:
    track, root = unified
    need_openable_kmsg()
    m = v2_manager(track, root, {"devices": [{"allow": False, "access": "rwm"}]})
    probe = track.python(DEVICE_PROBE)
    m.apply(probe.pid)
    m.set()  # loads and attaches the program
    start(probe)
    out, _ = probe.communicate(timeout=30)
    assert json.loads(out) == [0, 0, 1]  # default devices allowed; kmsg: EPERM
    m.destroy()


def test_v2_hugetlb_limit_enables_the_controller_in_the_parent(
        unified: tuple[Tracker, Path]) -> None:
    track, root = unified
    available = (root / "cgroup.controllers").read_text().split()
    need("hugetlb" in available, f"hugetlb not available on cgroup2 here ({available})")
    need(Path("/sys/kernel/mm/hugepages/hugepages-2048kB").is_dir(), "no 2MB huge pages")
    was_enabled = "hugetlb" in (root / "cgroup.subtree_control").read_text().split()
    try:
        m = v2_manager(track, root, {"hugepageLimits": [{"pageSize": "2MB",
                                                          "limit": 4 << 21}]})
        m.create()
        assert "hugetlb" in (root / "cgroup.subtree_control").read_text().split()
        m.set()
        assert (Path(m.path) / "hugetlb.2MB.max").read_text().strip() == str(4 << 21)
        m.destroy()
    finally:
        if not was_enabled:  # leave the host's root cgroup as we found it
            (root / "cgroup.subtree_control").write_text("-hugetlb")


def test_v2_memory_limits_apply_or_are_refused_where_memory_is_bound_elsewhere(
        unified: tuple[Tracker, Path]) -> None:
    """Where the memory controller sits decides the outcome, so one test covers both host
    shapes (and never skips): bound to v1 (hybrid), a v2 memory limit is refused with one
    clear error; on cgroup2, memory and pids limits apply and stop a fork bomb."""
    track, root = unified
    available = (root / "cgroup.controllers").read_text().split()
    if "memory" not in available:
        m = v2_manager(track, root, {"memory": {"limit": 1 << 30}})
        with pytest.raises(ContainerError, match="memory not available"):
            m.create()
        return
    need("pids" in available, f"the pids controller on cgroup2 ({available})")
    m = v2_manager(track, root, {"pids": {"limit": 10}, "memory": {"limit": 32 << 20}})
    bomb = track.python(FORK_BOMB)
    m.apply(bomb.pid)
    m.set()
    assert (Path(m.path) / "memory.max").read_text().strip() == str(32 << 20)
    start(bomb)
    out, _ = bomb.communicate(timeout=60)
    made, failure = out.split()
    assert int(made) < 10 and failure == "11"


# ------------------------------------------- other layouts in a private mount ns


def test_pure_v2_layout_detected_and_driven(track: Tracker) -> None:
    """The brief's "mount a cgroup2 fs in the test": a private mount ns whose only
    cgroup mount is cgroup2 at /sys/fs/cgroup (the same hierarchy as the host's
    unified one), so detection says v2 and the V2 driver runs end to end."""
    need(host_layout().unified is not None, "no cgroup2 support to mount")
    name = track.new_name()

    def child() -> dict:
        reshape_cgroup_mounts("v2")
        layout = detect.read_host_layout()
        m = cgroups.create_manager(name, "test", None)
        sleeper = subprocess.Popen(["sleep", "60"])
        try:
            m.apply(sleeper.pid)
            joined = m.pids() == [sleeper.pid]
            m.freeze()
            frozen = "frozen 1" in (Path(m.path) / "cgroup.events").read_text()
            m.thaw()
            m.kill()
            code = sleeper.wait(timeout=10)
        finally:
            if sleeper.poll() is None:
                sleeper.kill()
                sleeper.wait()
            m.destroy()
        return {"mode": layout.mode, "manager": type(m).__name__, "path": str(m.path),
                "joined": joined, "frozen": frozen, "code": code, "gone": not Path(m.path).exists()}

    status, result = run_in_child(child)
    assert os.waitstatus_to_exitcode(status) == 0, result
    assert result["ok"] == {"mode": "v2", "manager": "V2Manager",
                            "path": f"/sys/fs/cgroup/{name}", "joined": True,
                            "frozen": True, "code": -signal.SIGKILL, "gone": True}


def test_pure_v1_layout_detected(track: Tracker) -> None:
    layout = host_layout()
    need(layout.mode == "hybrid",
         f"reshaping needs a hybrid cgroup host (this one is {layout.mode})")

    def child() -> dict:
        reshape_cgroup_mounts("v1")
        layout = detect.read_host_layout()
        m = cgroups.create_manager("x", "test", None)
        return {"mode": layout.mode, "unified": getattr(m, "unified_dir", "?") is None}

    status, result = run_in_child(child)
    assert result == {"ok": {"mode": "v1", "unified": True}}, status


# ---------------------------------------------- devices without linux.resources

OPEN_PROBE = (
    "import os, sys\n"
    "try:\n"
    "    os.close(os.open(sys.argv[1], os.O_RDWR | os.O_NONBLOCK)); print(0, flush=True)\n"
    "except OSError as e:\n"
    "    print(e.errno, flush=True)\n")


@pytest.mark.parametrize("resources", [None, {}, {"pids": {"limit": 100}}])
@pytest.mark.parametrize("mode", ["v1", "v2"])
def test_default_device_rules_without_device_resources(track: Tracker, tmp_path: Path,
                                                       mode: str, resources: dict | None
                                                       ) -> None:
    """No linux.resources (or none for devices): the cgroup still denies every device but
    runc's default list. The probe opens a node of /dev/fuse's numbers (10:229) that the
    test made mode 0666 on a fresh tmpfs: the same open works outside the cgroup, so the
    EPERM inside can only come from the device cgroup (DAC and nodev give EACCES)."""
    layout = host_layout()
    if mode == "v1":
        need(layout.mode != "v2", "cgroup v1 hierarchies (this host is pure cgroup v2)")
        need("devices" in layout.v1, "the v1 devices controller is not mounted")
    else:
        need(layout.unified is not None, "no cgroup2 support to mount")
        if resources:
            resources = {}  # the pids controller is bound to v1 on a hybrid host
    name = track.new_name()
    nodes = tmp_path / "nodes"
    nodes.mkdir()

    def child() -> dict:
        if mode == "v2":
            reshape_cgroup_mounts("v2")
        else:
            from ociimg.oskit import linux
            linux.unshare(linux.CLONE.NEWNS)
            linux.mount(None, "/", None, linux.MS.REC | linux.MS.PRIVATE)
        from ociimg.oskit import linux
        linux.mount("tmpfs", str(nodes), "tmpfs", 0, "mode=755")
        node = nodes / "fuse"
        os.mknod(node, 0o666 | 0o020000, os.makedev(10, 229))
        os.chmod(node, 0o666)
        null = nodes / "null"
        os.mknod(null, 0o666 | 0o020000, os.makedev(1, 3))
        os.chmod(null, 0o666)
        outside = subprocess.run([sys.executable, "-c", OPEN_PROBE, str(node)],
                                 capture_output=True, text=True).stdout.strip()
        m = cgroups.create_manager(name, "test", resources)
        results = {}
        try:
            for path in (node, null):
                probe = subprocess.Popen(
                    [sys.executable, "-c", "import sys\nsys.stdin.readline()\n" + OPEN_PROBE,
                     str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                m.apply(probe.pid)
                m.set()
                out, _ = probe.communicate("go\n", timeout=30)
                results[path.name] = out.strip()
        finally:
            m.destroy()
            linux.umount2(str(nodes), linux.MNT.DETACH)
        return {"outside": outside, **results, "manager": type(m).__name__}

    status, result = run_in_child(child)
    assert os.waitstatus_to_exitcode(status) == 0, result
    manager = "V2Manager" if mode == "v2" or layout.mode == "v2" else "V1Manager"
    assert result["ok"] == {"outside": "0", "fuse": str(1), "null": "0",
                            "manager": manager}
