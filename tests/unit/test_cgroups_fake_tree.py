"""cgroup drivers on a tempdir "fake tree" (youki's libcgroups tests), plus the pure
layout detection and the v1 → v2 value conversions."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ociimg.errors import ContainerError
from ociimg.runtime import cgroups
from ociimg.runtime.cgroups import common, detect, v1, v2

# ---------------------------------------------------------------- detection

HYBRID = """\
22 27 0:20 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

PURE_V2 = """\
25 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 25 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:8 - cgroup2 cgroup2 \
rw,nsdelegate,memory_recursiveprot
"""

PURE_V1 = """\
23 16 0:18 / /sys/fs/cgroup rw,nosuid,nodev,noexec shared:9 - tmpfs tmpfs rw,mode=755
24 23 0:19 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup \
rw,xattr,release_agent=/usr/lib/systemd/systemd-cgroups-agent,name=systemd
26 23 0:21 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup \
rw,cpuset,clone_children
27 23 0:22 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:12 - cgroup \
cgroup rw,cpuacct,cpu,clone_children
28 23 0:23 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup \
rw,memory,clone_children
35 27 0:29 / /foo rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,devices
36 23 0:29 / /sys/fs/cgroup/devices rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup \
rw,devices
"""

# Inside a container with a cgroup namespace-less bind of the host's hierarchy.
NESTED_V1 = """\
121 120 0:19 /docker/abc /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
124 120 0:22 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
125 120 0:23 /docker/abc /sys/fs/cgroup/net_cls,net_prio rw - cgroup cgroup rw,net_cls,net_prio
"""


def test_detect_hybrid_uses_v1_controllers_and_notes_unified() -> None:
    layout = detect.detect_layout(HYBRID)
    assert layout.mode == "hybrid"
    assert set(layout.v1) == {"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer",
                              "pids"}  # name=systemd is not a resource controller
    assert Path(layout.v1["memory"].mountpoint) == Path("/sys/fs/cgroup/memory")
    assert layout.unified is not None
    assert Path(layout.unified.mountpoint) == Path("/sys/fs/cgroup/unified")


def test_detect_pure_v2() -> None:
    layout = detect.detect_layout(PURE_V2)
    assert layout.mode == "v2"
    assert layout.v1 == {}
    assert layout.unified is not None
    assert Path(layout.unified.mountpoint) == Path("/sys/fs/cgroup")


def test_detect_pure_v1_with_combined_and_duplicate_mounts() -> None:
    layout = detect.detect_layout(PURE_V1)
    assert layout.mode == "v1"
    assert layout.unified is None
    assert layout.v1["cpu"] is layout.v1["cpuacct"]
    assert Path(layout.v1["cpu"].mountpoint) == Path("/sys/fs/cgroup/cpu,cpuacct")
    assert layout.v1["cpu"].controllers == {"cpu", "cpuacct"}  # clone_children dropped
    # devices is also bind-mounted at /foo: prefer the one under /sys/fs/cgroup.
    assert Path(layout.v1["devices"].mountpoint) == Path("/sys/fs/cgroup/devices")


def test_detect_nested_mount_roots_and_escapes() -> None:
    text = NESTED_V1 + "126 120 0:24 / /tmp/my\\040cg rw - cgroup2 cgroup2 rw\n"
    layout = detect.detect_layout(text)
    assert layout.mode == "hybrid"
    assert layout.v1["memory"].root == "/docker/abc"
    assert layout.unified is not None and Path(layout.unified.mountpoint) == Path("/tmp/my cg")
    own = detect.parse_proc_cgroup("4:memory:/docker/abc/sub\n0::/\n")
    assert detect.own_dir(layout.v1["memory"], own["memory"]) == "/sys/fs/cgroup/memory/sub"


def test_detect_without_cgroups_is_an_error() -> None:
    with pytest.raises(ContainerError, match="no cgroup filesystem"):
        detect.detect_layout("22 27 0:20 / /sys rw - sysfs sysfs rw\n")


def test_parse_proc_cgroup() -> None:
    text = ("9:name=systemd:/\n4:memory:/process_api/e8\n2:cpu,cpuacct:/a b\n0::/user.slice\n")
    assert detect.parse_proc_cgroup(text) == {
        "name=systemd": "/", "memory": "/process_api/e8", "cpu": "/a b", "cpuacct": "/a b",
        "": "/user.slice"}
    with pytest.raises(ContainerError, match="malformed"):
        detect.parse_proc_cgroup("malformed input")


# -------------------------------------------------------------- conversions

@pytest.mark.parametrize("shares,weight", [
    (0, 0), (None, 0), (1, 1), (2, 1), (262144, 10000), (300000, 10000),
    (1024, 100),  # the v1 default maps to the v2 default
    (102, 17), (512, 59), (2048, 174),
])
def test_shares_to_weight(shares: int | None, weight: int) -> None:
    assert common.shares_to_weight(shares) == weight


def test_shares_to_weight_is_monotonic_and_in_range() -> None:
    values = [common.shares_to_weight(s) for s in range(2, 262145, 97)]
    assert values == sorted(values)
    assert min(values) == 1 and max(values) <= 10000
    assert all(isinstance(v, int) for v in values)
    assert not any(math.isnan(v) for v in values)


# (memory+swap, memory) → v2 swap; the cases of runc's TestConvertMemorySwapToCgroupV2Value.
@pytest.mark.parametrize("memswap,memory,expected", [
    (0, 0, 0), (-1, 0, -1), (300, -1, 300), (-1, -1, -1), (-1, 1000, -1),
    (1000, 1000, 0), (500, 200, 300), (0, -1, -1), (None, None, 0),
])
def test_swap_to_v2(memswap: int | None, memory: int | None, expected: int) -> None:
    assert common.swap_to_v2(memswap, memory) == expected


@pytest.mark.parametrize("memswap,memory", [(-2, 0), (300, 400), (300, 0), (300, -300)])
def test_swap_to_v2_errors(memswap: int, memory: int) -> None:
    with pytest.raises(ContainerError):
        common.swap_to_v2(memswap, memory)


@pytest.mark.parametrize("weight,io", [(0, 0), (10, 1), (1000, 10000), (500, 4950)])
def test_blkio_weight_to_io_weight(weight: int, io: int) -> None:
    assert common.blkio_weight_to_io_weight(weight) == io


@pytest.mark.parametrize("quota,period,value", [
    (50000, 100000, "50000 100000"), (-1, 100000, "max 100000"), (None, 250000, "max 250000"),
    (20000, None, "20000"), (None, None, None), (0, 0, None)])
def test_cpu_max(quota: int | None, period: int | None, value: str | None) -> None:
    assert v2.cpu_max(quota, period) == value


@pytest.mark.parametrize("limit,value", [(None, "max"), (0, "max"), (-1, "max"), (64, "64")])
def test_pids_max(limit: int | None, value: str) -> None:
    assert v2.pids_max({"limit": limit}) == value


def test_device_rules_follow_spec_order_then_runc_defaults() -> None:
    rules = common.device_rules({"devices": [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rw"},
        {"allow": False, "type": "b", "major": 8, "access": "m"}]})
    lines = [(r.allow, r.line()) for r in rules]
    assert lines[:3] == [(False, "a *:* rwm"), (True, "c 10:229 rw"), (False, "b 8:* m")]
    assert (True, "c 1:3 rwm") in lines[3:] and (True, "c 136:* rwm") in lines[3:]
    with pytest.raises(ContainerError, match="invalid access"):
        common.device_rules({"devices": [{"allow": True, "access": "rwx"}]})
    with pytest.raises(ContainerError, match="invalid type"):
        common.device_rules({"devices": [{"allow": True, "type": "z", "access": "r"}]})


# ----------------------------------------------------------- path handling

@pytest.mark.parametrize("given,expected", [
    (None, "/ociimg/c1"), ("", "/ociimg/c1"), ("/a/b", "/a/b"), ("a//b/", "a/b"),
    ("/kubepods/pod1/c1", "/kubepods/pod1/c1")])
def test_cgroups_path(given: str | None, expected: str) -> None:
    assert cgroups.cgroups_path_for(given, "c1") == expected


@pytest.mark.parametrize("bad", ["/a/../../etc", "..", "/a/./b",
                                 "system.slice:docker:abc"])
def test_cgroups_path_rejects_escapes_and_systemd_paths(bad: str) -> None:
    with pytest.raises(ContainerError):
        cgroups.cgroups_path_for(bad, "c1")


# ---------------------------------------------------------------- v2 tree

V2_ROOT_FILES = {"cgroup.controllers": "cpuset cpu io memory hugetlb pids rdma misc",
                 "cgroup.subtree_control": "", "cgroup.procs": ""}
V2_LEAF_FILES = {"cgroup.controllers": "", "cgroup.subtree_control": "", "cgroup.procs": "",
                 "cgroup.freeze": "0", "cgroup.kill": "", "memory.max": "max",
                 "memory.swap.max": "max", "memory.low": "0", "memory.high": "max",
                 "cpu.weight": "100", "cpu.max": "max 100000", "cpu.max.burst": "0",
                 "cpuset.cpus": "", "cpuset.mems": "", "pids.max": "max",
                 "hugetlb.2MB.max": "max", "io.weight": "default 100", "io.max": ""}


def make_files(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (directory / name).write_text(content)
    return directory


def v2_tree(tmp_path: Path, *levels: str) -> Path:
    """A fake cgroup2 mount with the given intermediate/leaf directories populated,
    as the kernel would populate them on mkdir."""
    root = make_files(tmp_path / "cg", V2_ROOT_FILES)
    current = root
    for i, level in enumerate(levels):
        current = make_files(current / level, V2_LEAF_FILES)
        if i < len(levels) - 1:
            # What the kernel shows once the parent enabled them for its children.
            (current / "cgroup.controllers").write_text(V2_ROOT_FILES["cgroup.controllers"])
    return root


def fake_v2(root: Path, path: str, resources: dict | None) -> cgroups.V2Manager:
    """A fake tree is not cgroup2: no BPF device program can attach to it."""
    return cgroups.V2Manager(root, path, resources, device_filter=False)


RESOURCES = {
    "memory": {"limit": 64 << 20, "reservation": 32 << 20, "swap": 96 << 20},
    "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"},
    "pids": {"limit": 32},
}


def read(path: Path) -> str:
    return path.read_text()


def test_v2_create_enables_controllers_up_the_tree_but_not_in_the_leaf(
        tmp_path: Path) -> None:
    root = v2_tree(tmp_path, "ociimg", "c1")
    manager = cgroups.create_manager(None, "c1", RESOURCES, root_override=root)
    assert isinstance(manager, cgroups.V2Manager)
    assert Path(manager.path) == root / "ociimg" / "c1"
    assert manager.device_filter is False  # root_override: a fake tree
    manager.apply(4194305)  # above any pid_max: never a real process
    expected = "+memory +cpu +cpuset +pids"
    assert read(root / "cgroup.subtree_control") == expected
    assert read(root / "ociimg" / "cgroup.subtree_control") == expected
    # No-internal-process rule: the leaf holds the processes, so nothing is enabled there.
    assert read(Path(manager.path) / "cgroup.subtree_control") == ""
    assert read(Path(manager.path) / "cgroup.procs") == "4194305"
    assert read(Path(manager.path) / "pids.max") == "max"  # placing writes no limit


@pytest.mark.parametrize("tree", ["v1", "v2"])
def test_placing_and_limiting_are_separate_steps(tmp_path: Path, tree: str) -> None:
    """runc's Apply(pid) then Set(resources): apply places and writes no limit, set
    writes the limits and places nothing (a systemd driver must place first)."""
    root = v2_tree(tmp_path, "ociimg", "c1") if tree == "v2" else v1_tree(tmp_path, "ociimg", "c1")
    manager = cgroups.create_manager(None, "c1", {"pids": {"limit": 32}}, root_override=root)
    pids_dir = Path(manager.path if tree == "v2" else manager.dirs["pids"])
    manager.apply()
    assert read(pids_dir / "pids.max") == "max"
    assert read(pids_dir / "cgroup.procs") == ""
    manager.set()
    assert read(pids_dir / "pids.max") == "32"
    assert read(pids_dir / "cgroup.procs") == ""
    manager.apply(4194305)  # above any pid_max: never a real process
    assert read(pids_dir / "cgroup.procs") == "4194305"


def test_v2_set_writes_converted_values(tmp_path: Path) -> None:
    root = v2_tree(tmp_path, "ociimg", "c1")
    manager = cgroups.create_manager(None, "c1", RESOURCES, root_override=root)
    manager.create()
    manager.set()
    leaf = Path(manager.path)
    assert read(leaf / "memory.max") == str(64 << 20)
    assert read(leaf / "memory.swap.max") == str(32 << 20)  # v2 swap = memsw - limit
    assert read(leaf / "memory.low") == str(32 << 20)
    assert read(leaf / "cpu.weight") == "100"
    assert read(leaf / "cpu.max") == "50000 100000"
    assert read(leaf / "cpuset.cpus") == "0"
    assert read(leaf / "cpuset.mems") == "0"
    assert read(leaf / "pids.max") == "32"


@pytest.mark.parametrize("memory,swap_file,max_file", [
    ({"limit": -1}, "max", "max"),              # unlimited memory → unlimited swap too
    ({"limit": 1000, "swap": 1000}, "0", "1000"),  # swap == limit → no swap
    ({"limit": 1000, "swap": -1}, "max", "1000"),
    ({"limit": 1000}, "untouched", "1000"),
])
def test_v2_memory_swap_semantics(tmp_path: Path, memory: dict, swap_file: str,
                                  max_file: str) -> None:
    root = v2_tree(tmp_path, "c")
    (root / "c" / "memory.swap.max").write_text("untouched")
    manager = fake_v2(root, "/c", {"memory": memory})
    manager.set()
    assert read(root / "c" / "memory.swap.max") == swap_file
    assert read(root / "c" / "memory.max") == max_file


def test_v2_pids_and_cpu_max_forms(tmp_path: Path) -> None:
    root = v2_tree(tmp_path, "c")
    manager = fake_v2(root, "c", {"pids": {"limit": 0},
                                            "cpu": {"quota": -1, "period": 200000}})
    manager.set()
    assert read(root / "c" / "pids.max") == "max"
    assert read(root / "c" / "cpu.max") == "max 200000"


def test_v2_hugetlb_io_and_unified(tmp_path: Path) -> None:
    root = v2_tree(tmp_path, "c")
    manager = fake_v2(root, "c", {
        "hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 21}],
        "blockIO": {"weight": 1000, "throttleReadBpsDevice": [
            {"major": 8, "minor": 0, "rate": 1048576}]},
        "unified": {"memory.high": "50M"}})
    manager.set()
    assert read(root / "c" / "hugetlb.2MB.max") == str(4 << 21)
    assert read(root / "c" / "io.max") == "8:0 rbps=1048576"
    assert read(root / "c" / "memory.high") == "50M"
    assert cgroups.v2.required_controllers(manager.resources) == ["hugetlb", "io", "memory"]


def test_v2_unified_keys_cannot_escape(tmp_path: Path) -> None:
    root = v2_tree(tmp_path, "c")
    canary = make_files(tmp_path / "outside", {"memory.high": "keep"})
    for key in ("../../outside/memory.high", "cgroup", ".hidden.x"):
        with pytest.raises(ContainerError, match="invalid file name"):
            fake_v2(root, "c", {"unified": {key: "1"}}).set()
    assert read(canary / "memory.high") == "keep"


def test_v2_missing_controller_is_named(tmp_path: Path) -> None:
    root = v2_tree(tmp_path, "c")
    (root / "cgroup.controllers").write_text("cpu io")
    manager = fake_v2(root, "c", {"memory": {"limit": 1 << 20}, "pids": {"limit": 5}})
    with pytest.raises(ContainerError) as info:
        manager.create()
    assert "memory, pids not available" in str(info.value)
    assert read(root / "cgroup.subtree_control") == ""


def test_v2_already_enabled_controllers_are_not_rewritten(tmp_path: Path) -> None:
    root = v2_tree(tmp_path, "c")
    (root / "cgroup.subtree_control").write_text("cpu memory pids")
    fake_v2(root, "c", {"memory": {"limit": 1 << 20}, "pids": {"limit": 5}}).create()
    assert read(root / "cgroup.subtree_control") == "cpu memory pids"


def test_v2_freeze_kill_state_and_destroy(tmp_path: Path) -> None:
    root = v2_tree(tmp_path, "ociimg", "c1")
    manager = cgroups.create_manager("/ociimg/c1", "c1", None, root_override=root)
    manager.create()
    manager.freeze()
    assert read(Path(manager.path) / "cgroup.freeze") == "1"
    assert manager.is_frozen()
    manager.thaw()
    assert read(Path(manager.path) / "cgroup.freeze") == "0"
    assert not manager.is_frozen()
    manager.kill()
    assert read(Path(manager.path) / "cgroup.kill") == "1"
    state = manager.to_state()
    assert state == {"version": 2, "root": str(root), "path": "/ociimg/c1",
                     "device_filter": False}
    again = cgroups.load_manager(state)
    assert Path(again.path) == Path(manager.path)
    again.destroy()
    assert not Path(manager.path).exists()
    assert (root / "ociimg").is_dir()  # only the container's own cgroup is removed


def test_v2_relative_path_with_fake_root(tmp_path: Path) -> None:
    root = v2_tree(tmp_path, "mine")
    manager = cgroups.create_manager("mine", "c1", None, root_override=root)
    assert Path(manager.path) == root / "mine"


def test_v2_device_rules_warn_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = v2_tree(tmp_path, "c")
    v2._warned_devices = False
    devices = {"devices": [{"allow": False, "access": "rwm"}]}
    fake_v2(root, "c", devices).set()
    fake_v2(root, "c", devices).set()
    assert caplog.text.count("device rules are not enforced") == 1


# ---------------------------------------------------------------- v1 tree

V1_FILES = {
    "memory": {"memory.limit_in_bytes": "9223372036854771712",
               "memory.memsw.limit_in_bytes": "9223372036854771712",
               "memory.soft_limit_in_bytes": "9223372036854771712",
               "memory.swappiness": "60", "memory.oom_control": "oom_kill_disable 0"},
    "cpu,cpuacct": {"cpu.shares": "1024", "cpu.cfs_quota_us": "-1",
                    "cpu.cfs_period_us": "100000", "cpu.cfs_burst_us": "0"},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "pids": {"pids.max": "max"},
    "devices": {"devices.allow": "", "devices.deny": "", "devices.list": "a *:* rwm"},
    "freezer": {"freezer.state": "THAWED"},
}


def v1_tree(tmp_path: Path, *levels: str, without: tuple[str, ...] = ()) -> Path:
    root = tmp_path / "cg"
    for hierarchy, files in V1_FILES.items():
        files = {k: v for k, v in files.items() if k not in without}
        base = make_files(root / hierarchy, {"cgroup.procs": "", **files})
        if hierarchy == "cpuset":
            (base / "cpuset.cpus").write_text("0-1")
            (base / "cpuset.mems").write_text("0")
        current = base
        for level in levels:
            current = make_files(current / level, {"cgroup.procs": "", **files})
    return root


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, str]]:
    """Every cgroup file write of the v1 driver, in order: (dir name, file, value)."""
    log: list[tuple[str, str, str]] = []
    real = common.write_value

    def record(directory: str, name: str, value: str) -> None:
        path = Path(directory)
        log.append((path.parent.name if path.name == "c1" else path.name, name, value))
        real(directory, name, value)

    monkeypatch.setattr(v1, "write_value", record)
    return log


def test_v1_manager_layout_and_apply(tmp_path: Path) -> None:
    root = v1_tree(tmp_path, "ociimg", "c1")
    manager = cgroups.create_manager(None, "c1", None, root_override=root)
    assert isinstance(manager, cgroups.V1Manager)
    assert manager.dirs["cpu"] == manager.dirs["cpuacct"] == str(root / "cpu,cpuacct/ociimg/c1")
    assert Path(manager.path) == root / "memory/ociimg/c1"
    manager.apply(4194305)
    for hierarchy in V1_FILES:
        assert read(root / hierarchy / "ociimg/c1/cgroup.procs") == "4194305"
    assert manager.unified_dir is None


def test_v1_cpuset_copies_parents_before_tasks_join(tmp_path: Path) -> None:
    root = v1_tree(tmp_path, "ociimg", "c1")
    cgroups.create_manager(None, "c1", None, root_override=root).apply(4194305)
    for level in ("cpuset/ociimg", "cpuset/ociimg/c1"):
        assert read(root / level / "cpuset.cpus") == "0-1"
        assert read(root / level / "cpuset.mems") == "0"


def test_v1_set_writes_limits(tmp_path: Path, writes: list) -> None:
    root = v1_tree(tmp_path, "ociimg", "c1")
    resources = {**RESOURCES, "memory": {"limit": 64 << 20, "swap": 96 << 20,
                                         "reservation": 32 << 20, "swappiness": 0}}
    manager = cgroups.create_manager(None, "c1", resources, root_override=root)
    manager.create()
    manager.set()
    mem, cpu = root / "memory/ociimg/c1", root / "cpu,cpuacct/ociimg/c1"
    assert read(mem / "memory.limit_in_bytes") == str(64 << 20)
    assert read(mem / "memory.memsw.limit_in_bytes") == str(96 << 20)
    assert read(mem / "memory.soft_limit_in_bytes") == str(32 << 20)
    assert read(mem / "memory.swappiness") == "0"
    assert read(cpu / "cpu.shares") == "1024"
    assert read(cpu / "cpu.cfs_quota_us") == "50000"
    assert read(cpu / "cpu.cfs_period_us") == "100000"
    assert read(root / "cpuset/ociimg/c1/cpuset.cpus") == "0"
    assert read(root / "pids/ociimg/c1/pids.max") == "32"
    # The limit shrinks from "unlimited": limit first, so memsw >= limit at every step.
    mem_writes = [w[1] for w in writes if w[0] == "ociimg" and w[1].startswith("memory.")]
    assert mem_writes[:2] == ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]
    # cfs period before quota (runc).
    cpu_writes = [w[1] for w in writes if w[1].startswith("cpu.cfs")]
    assert cpu_writes == ["cpu.cfs_period_us", "cpu.cfs_quota_us"]


def test_v1_memsw_written_first_when_growing(tmp_path: Path, writes: list) -> None:
    root = v1_tree(tmp_path, "c1")
    (root / "memory/c1/memory.limit_in_bytes").write_text(str(16 << 20))
    (root / "memory/c1/memory.memsw.limit_in_bytes").write_text(str(16 << 20))
    manager = cgroups.create_manager("/c1", "c1", {"memory": {"limit": 64 << 20,
                                                              "swap": 128 << 20}},
                                     root_override=root)
    manager.set()
    assert [w[1] for w in writes if w[1].startswith("memory.")] == \
        ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]


def test_v1_unlimited_memory_and_missing_swap_accounting(tmp_path: Path) -> None:
    root = v1_tree(tmp_path, "c1", without=("memory.memsw.limit_in_bytes",))
    manager = cgroups.create_manager("/c1", "c1", {"memory": {"limit": 1 << 30,
                                                              "swap": 2 << 30}},
                                     root_override=root)
    manager.set()  # no memsw file: swap is ignored with a warning, the limit still applies
    assert read(root / "memory/c1/memory.limit_in_bytes") == str(1 << 30)
    root2 = v1_tree(tmp_path / "b", "c1")
    cgroups.create_manager("/c1", "c1", {"memory": {"limit": -1}},
                           root_override=root2).set()
    assert read(root2 / "memory/c1/memory.memsw.limit_in_bytes") == "-1"
    assert read(root2 / "memory/c1/memory.limit_in_bytes") == "-1"


def test_v1_devices_deny_all_then_rules_in_order(tmp_path: Path, writes: list) -> None:
    root = v1_tree(tmp_path, "c1")
    manager = cgroups.create_manager("/c1", "c1", {"devices": [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rwm"},
        {"allow": False, "type": "c", "major": 1, "minor": 9, "access": "w"}]},
        root_override=root)
    manager.set()
    dev = [(name, value) for d, name, value in writes if name.startswith("devices.")]
    assert dev[:4] == [("devices.deny", "a"), ("devices.deny", "a *:* rwm"),
                       ("devices.allow", "c 10:229 rwm"), ("devices.deny", "c 1:9 w")]
    assert ("devices.allow", "c 1:3 rwm") in dev[4:]
    assert len(dev) == 4 + len(common.DEFAULT_DEVICE_RULES)


def test_v1_requested_but_unmounted_controller_is_an_error(tmp_path: Path) -> None:
    root = v1_tree(tmp_path, "c1")
    manager = cgroups.create_manager("/c1", "c1", {"hugepageLimits": [
        {"pageSize": "2MB", "limit": 1 << 21}]}, root_override=root)
    with pytest.raises(ContainerError, match="hugetlb is not mounted"):
        manager.set()
    with pytest.raises(ContainerError, match="needs cgroup v2"):
        manager.set({"unified": {"memory.high": "1M"}})


def test_v1_freeze_state_load_and_destroy(tmp_path: Path) -> None:
    root = v1_tree(tmp_path, "ociimg", "c1")
    manager = cgroups.create_manager(None, "c1", None, root_override=root)
    manager.create()
    manager.freeze()
    assert read(root / "freezer/ociimg/c1/freezer.state") == "FROZEN"
    assert manager.is_frozen()
    manager.thaw()
    assert read(root / "freezer/ociimg/c1/freezer.state") == "THAWED"
    assert not manager.is_frozen()
    state = manager.to_state()
    assert state["version"] == 1
    assert state["paths"]["memory"] == str(root / "memory/ociimg/c1")
    again = cgroups.load_manager(state)
    assert isinstance(again, cgroups.V1Manager) and again.dirs == manager.dirs
    again.destroy()
    for hierarchy in V1_FILES:
        assert not (root / hierarchy / "ociimg/c1").exists()
        assert (root / hierarchy / "ociimg").is_dir()


def test_v1_relative_path_hybrid_tree(tmp_path: Path) -> None:
    root = v1_tree(tmp_path, "mine")
    make_files(root / "unified", V2_ROOT_FILES)
    make_files(root / "unified" / "mine", V2_LEAF_FILES)
    manager = cgroups.create_manager("mine", "c1", None, root_override=root)
    assert isinstance(manager, cgroups.V1Manager)
    assert Path(manager.dirs["pids"]) == root / "pids/mine"
    assert Path(manager.unified_dir) == root / "unified/mine"
    manager.apply(4194305)
    assert read(root / "unified/mine/cgroup.procs") == "4194305"


def test_v1_dirs_outside_their_hierarchy_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ContainerError, match="outside"):
        cgroups.V1Manager.from_dirs({"memory": tmp_path / "elsewhere"},
                                    {"memory": tmp_path / "memory"})


def test_load_manager_rejects_garbage() -> None:
    for state in ({}, {"version": 3}, {"version": 1, "paths": None}):
        with pytest.raises(ContainerError):
            cgroups.load_manager(state)


# ----------------------------------------------- v2 device filter (eBPF program)

def run_program(program: list, dev: str, access: str, major: int, minor: int) -> int:
    """Interpret the instructions we emit, on struct bpf_cgroup_dev_ctx."""
    from ociimg.runtime.cgroups import ebpf

    ctx = ((ebpf._access_mask(access) << 16) | ebpf._TYPES[dev], major, minor)
    regs, pc, mask64 = [0] * 11, 0, 2**64 - 1
    for _ in range(10_000):
        op, dst, src, off, imm = program[pc]
        pc += 1
        imm64 = imm & mask64  # immediates are sign-extended to 64 bits
        if op == ebpf.LDX_MEM_W:
            assert src == 1 and off % 4 == 0
            regs[dst] = ctx[off // 4]
        elif op == ebpf.MOV64_X:
            regs[dst] = regs[src]
        elif op == ebpf.MOV64_K:
            regs[dst] = imm64
        elif op == ebpf.AND64_K:
            regs[dst] &= imm64
        elif op == ebpf.RSH64_K:
            regs[dst] >>= imm
        elif op == ebpf.JEQ_K:
            pc += off if regs[dst] == imm64 else 0
        elif op == ebpf.JNE_K:
            pc += off if regs[dst] != imm64 else 0
        elif op == ebpf.JSET_K:
            pc += off if regs[dst] & imm64 else 0
        elif op == ebpf.EXIT:
            return regs[0]
        else:
            raise AssertionError(f"unexpected opcode {op:#x}")
    raise AssertionError("program did not exit")


def verdicts(resources: dict, cases: list[tuple[str, str, int, int]]) -> list[int]:
    from ociimg.runtime.cgroups import ebpf

    program = ebpf.compile_device_program(common.device_rules(resources))
    assert len(ebpf.encode(program)) == 8 * len(program)
    return [run_program(program, *case) for case in cases]


def test_device_program_defaults() -> None:
    cases = [("c", "rw", 1, 3), ("c", "m", 1, 3), ("c", "r", 1, 11), ("b", "m", 7, 0),
             ("b", "r", 7, 0), ("c", "rw", 136, 5), ("c", "rwm", 10, 200), ("c", "m", 99, 1),
             ("c", "w", 5, 2), ("b", "rw", 8, 0)]
    assert verdicts({}, cases) == [1, 1, 0, 1, 0, 1, 1, 1, 1, 0]


def test_device_program_spec_rules_and_later_rules_win() -> None:
    allow_fuse = {"devices": [{"allow": False, "access": "rwm"},
                              {"allow": True, "type": "c", "major": 10, "minor": 229,
                               "access": "rw"}]}
    assert verdicts(allow_fuse, [("c", "rw", 10, 229), ("c", "r", 10, 228)]) == [1, 0]
    blacklist = {"devices": [{"allow": True, "access": "rwm"},
                             {"allow": False, "type": "c", "major": 1, "minor": 9,
                              "access": "w"}]}
    # Runc's defaults come after the spec's rules and re-allow 1:9 rwm, as with runc.
    assert verdicts(blacklist, [("c", "r", 1, 9), ("c", "w", 1, 9)]) == [1, 1]
    from ociimg.runtime.cgroups import ebpf

    rules = [common.DeviceRule(True, "a", -1, -1, "rwm"),
             common.DeviceRule(False, "c", 1, 9, "w")]
    program = ebpf.compile_device_program(rules)
    assert [run_program(program, "c", a, 1, 9) for a in ("r", "w", "rw", "m")] == [1, 0, 0, 1]
    assert run_program(program, "b", "rw", 8, 0) == 1
    flip = [common.DeviceRule(False, "a", -1, -1, "rwm"),
            common.DeviceRule(True, "c", 1, 9, "rwm"),
            common.DeviceRule(False, "c", 1, 9, "rwm")]
    assert run_program(ebpf.compile_device_program(flip), "c", "r", 1, 9) == 0
    assert run_program(ebpf.compile_device_program(flip[:1] + flip[2:] + flip[1:2]),
                       "c", "r", 1, 9) == 1


def test_v2_fake_tree_never_attaches_a_device_program(tmp_path: Path) -> None:
    root = v2_tree(tmp_path, "c")
    manager = cgroups.create_manager("/c", "c", {"devices": []}, root_override=root)
    manager.set()  # would fail with EBADF if it tried to attach to a plain directory


def test_v2_has_no_kernel_memory_limit(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # kmem does not exist on cgroup v2 (runc#2270): warn, write nothing for it.
    root = v2_tree(tmp_path, "c")
    before = {p.name: read(p) for p in (root / "c").iterdir()}
    fake_v2(root, "c", {"memory": {"kernel": 1 << 20, "kernelTCP": 1 << 20}}).set()
    assert {p.name: read(p) for p in (root / "c").iterdir()} == before
    assert "memory.kernel" in caplog.text and "memory.kernelTCP" in caplog.text


def test_v1_update_without_devices_leaves_device_rules_alone(tmp_path: Path,
                                                             writes: list) -> None:
    root = v1_tree(tmp_path, "c1")
    manager = cgroups.create_manager("/c1", "c1", {"pids": {"limit": 5}}, root_override=root)
    manager.set()  # creation-time resources: devices reset to deny-all + defaults
    assert ("devices", "devices.deny", "a") in writes
    writes.clear()
    manager.set({"pids": {"limit": 9}})  # an update (runc update): no deny-all window
    assert writes == [("pids", "pids.max", "9")]
    manager.set({"devices": [{"allow": False, "type": "c", "major": 1, "minor": 9,
                              "access": "w"}]})
    assert writes[1] == ("devices", "devices.deny", "a")
