"""Attacks on the runtime through the bundle (as root, real kernel), each compared with
runc 1.1.5: device access without linux.resources, mount destinations that resolve to
the root through an image symlink, and leaks after a create killed mid-way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.hostileconfig import variants
from tests.integration.runtime_helpers import (
    REPO,
    RUNTIME,
    base_config,
    leftover_cgroups,
    mounts_under,
    runtime,
    write_config,
)
from tests.treewalk import tree_manifest

# The node is made inside the container (CAP_MKNOD, "c *:* m" is allowed) on its /dev
# tmpfs, which is not nodev: only the device cgroup can refuse the open (EPERM).
OPEN_FUSE = ("mknod -m 666 /dev/probe c 10 229 && "
             "{ (exec 3<>/dev/probe) 2>/dev/null && echo OPEN || echo REFUSED; }")


@pytest.mark.parametrize("resources", ["absent", "empty", "memory-only"])
def test_devices_outside_the_default_list_are_refused(runtime_env: tuple[Path, Path],
                                                      resources: str) -> None:
    bundle, state_root = runtime_env
    config = base_config(["sh", "-c", OPEN_FUSE])
    if resources == "empty":
        config["linux"]["resources"] = {}
    elif resources == "memory-only":
        config["linux"]["resources"] = {"memory": {"reservation": 64 << 20}}
    write_config(bundle, config)
    proc = runtime(state_root, "run", "-b", str(bundle), "c1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["REFUSED"]


def test_device_allowed_by_a_rule_opens(runtime_env: tuple[Path, Path]) -> None:
    """The control for the test above: the same open succeeds once a rule allows 10:229,
    so REFUSED there came from the device cgroup."""
    bundle, state_root = runtime_env
    config = base_config(["sh", "-c", OPEN_FUSE])
    config["linux"]["resources"] = {"devices": [
        {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rw"}]}
    write_config(bundle, config)
    proc = runtime(state_root, "run", "-b", str(bundle), "c1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["OPEN"]


# ------------------------------------------------ create killed mid-way (item 9)

def wait_for(paths: list[Path], timeout: float = 30) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in paths:
            if path.exists():
                return path
        time.sleep(0.05)
    raise AssertionError(f"none of {paths} appeared")


def processes_in_cgroup(cgroups_path: str) -> list[int]:
    """Live pids whose /proc/<pid>/cgroup names the container's cgroup in any hierarchy
    (a zombie is dead: reparented to pid 1, it waits there to be reaped)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/cgroup").read_text()
            alive = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0] \
                not in ("Z", "X")
        except OSError:
            continue
        if alive and any(line.split(":", 2)[2].startswith(cgroups_path)
                         for line in text.splitlines()):
            found.append(int(entry))
    return found


@pytest.mark.parametrize("stage", ["prestart", "createRuntime", "createContainer"])
def test_create_killed_in_a_hook_leaves_nothing_after_delete_force(
        runtime_env: tuple[Path, Path], tmp_path: Path, stage: str) -> None:
    """kill -9 of `create` while a hook runs, then `delete -f`: no cgroup dir in any
    hierarchy, no state dir and no process of the container may remain (runc 1.1.5
    leaves none either)."""
    bundle, state_root = runtime_env
    pid_file = tmp_path / "hook.pid"
    # createContainer runs in the container's mount namespace: it marks the rootfs too.
    script = f"echo $$ > {pid_file} 2>/dev/null; echo $$ > /hook-ran 2>/dev/null; " \
             "exec sleep 60"
    config = base_config(["sleep", "3600"])
    config["hooks"] = {stage: [{"path": "/bin/sh", "args": ["sh", "-c", script]}]}
    write_config(bundle, config)
    cgroups_path = config["linux"]["cgroupsPath"]
    create = subprocess.Popen([*RUNTIME, "--root", str(state_root), "create", "-b",
                               str(bundle), "c1"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    hook_pid = 0
    try:
        marker = wait_for([pid_file, bundle / "rootfs" / "hook-ran"])
        hook_pid = int(marker.read_text())
        assert leftover_cgroups() != []  # the cgroup exists while the hook runs
        create.kill()
        create.wait()
        init_pid = 0
        state_file = state_root / "c1" / "state.json"
        if state_file.exists():
            init_pid = json.loads(state_file.read_text()).get("pid", 0)
        proc = runtime(state_root, "delete", "-f", "c1")
        assert proc.returncode == 0, proc.stderr
        assert leftover_cgroups() == []
        assert not (state_root / "c1").exists()
        assert processes_in_cgroup(cgroups_path) == []
        if init_pid:
            stat = Path(f"/proc/{init_pid}/stat")
            assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    finally:
        if create.poll() is None:
            create.kill()
            create.wait()
        if hook_pid and stage != "createContainer":
            # prestart/createRuntime hooks run in the runtime's cgroup: the test's own
            # orphan, not the container's.
            try:
                os.kill(hook_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# ------------------------------------- mount destinations resolved through symlinks

def host_volume(tmp_path: Path) -> tuple[Path, dict]:
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "keep").write_text("host data")
    return volume, tree_manifest(volume)


@pytest.mark.parametrize(("entry", "link"), [("vol", "/"), ("vol", "../.."), ("vol", "/tmp/..")])
def test_volume_on_a_symlink_to_the_root_is_refused(runtime_env: tuple[Path, Path],
                                                   tmp_path: Path, entry: str, link: str
                                                   ) -> None:
    """`-v HOST:/vol` where the image has /vol -> /: the bind used to cover the whole
    rootfs, and /dev setup then wrote device nodes and links into HOST."""
    bundle, state_root = runtime_env
    volume, before = host_volume(tmp_path)
    os.symlink(link, bundle / "rootfs" / entry)
    config = base_config(["true"])
    config["mounts"].append({"destination": "/vol", "type": "bind", "source": str(volume),
                             "options": ["rbind"]})
    write_config(bundle, config)
    proc = runtime(state_root, "run", "-b", str(bundle), "c1")
    assert proc.returncode == 1
    assert proc.stderr.startswith("ociimg-runtime: error: ")
    assert "resolves to / through a symlink" in proc.stderr
    assert tree_manifest(volume) == before
    assert not (state_root / "c1").exists()


def test_dev_symlinked_onto_a_volume_gets_no_device_nodes(runtime_env: tuple[Path, Path],
                                                          tmp_path: Path) -> None:
    """The image's /dev -> /vol and `-v HOST:/vol`: the /dev tmpfs lands under the
    volume's mount, so /dev resolves into HOST. runc 1.1.5 writes null, zero, … there;
    the runtime must refuse instead."""
    bundle, state_root = runtime_env
    volume, before = host_volume(tmp_path)
    rootfs = bundle / "rootfs"
    (rootfs / "dev").rmdir()
    (rootfs / "vol").mkdir()
    os.symlink("/vol", rootfs / "dev")
    config = base_config(["true"])
    config["mounts"].append({"destination": "/vol", "type": "bind", "source": str(volume),
                             "options": ["rbind"]})
    write_config(bundle, config)
    proc = runtime(state_root, "run", "-b", str(bundle), "c1")
    assert proc.returncode == 1
    assert "refusing to create device nodes" in proc.stderr
    assert tree_manifest(volume) == before


def test_linux_devices_never_land_in_a_volume_under_dev(runtime_env: tuple[Path, Path],
                                                        tmp_path: Path) -> None:
    bundle, state_root = runtime_env
    volume, before = host_volume(tmp_path)
    config = base_config(["true"])
    config["mounts"].append({"destination": "/dev/vol", "type": "bind",
                             "source": str(volume), "options": ["rbind"]})
    config["linux"]["devices"] = [{"path": "/dev/vol/null2", "type": "c", "major": 1,
                                   "minor": 3}]
    write_config(bundle, config)
    proc = runtime(state_root, "run", "-b", str(bundle), "c1")
    assert proc.returncode == 1
    assert "its directory is another mount" in proc.stderr
    assert tree_manifest(volume) == before


def test_devices_in_subdirectories_of_dev_still_work(runtime_env: tuple[Path, Path]) -> None:
    bundle, state_root = runtime_env
    config = base_config(["sh", "-c", "stat -c '%n %t:%T %a' /dev/net/null2"])
    config["linux"]["devices"] = [{"path": "/dev/net/null2", "type": "c", "major": 1,
                                   "minor": 3, "fileMode": 0o640}]
    write_config(bundle, config)
    proc = runtime(state_root, "run", "-b", str(bundle), "c1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["/dev/net/null2", "1:3", "640"]


# ------------------------------------------------------ hostile config.json (item 8)

def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int = 1) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ociimg-runtime: error: ")]
    assert len(errors) == 1, proc.stderr
    after = lines[lines.index(errors[0]) + 1:]
    assert all(line.startswith("hint: ") for line in after), proc.stderr


REPORTED = [
    ("hooks", {"prestart": [{"path": "/bin/true", "timeout": 10**30}]}),
    ("process.consoleSize", {"height": "24", "width": 80}),
    ("linux.resources", {"pids": {"limit": "100"}}),
    ("linux.devices", [{"type": "c", "path": "/dev/x", "major": "1", "minor": 3}]),
    ("linux.devices", [{"type": "c", "path": "/dev/x", "major": 2**70, "minor": 3}]),
    ("linux.resources", "x"),
    ("process.rlimits", [{"type": "RLIMIT_NOFILE", "soft": -5, "hard": 1024}]),
    ("process.rlimits", [{"type": "RLIMIT_NOFILE", "soft": 2**63, "hard": 2**64 - 2}]),
    ("process.user", {"uid": 2**32 - 1, "gid": 0}),
    ("linux.resources", {"hugepageLimits": [{"pageSize": "../../../cgroup.procs", "limit": 1}]}),
    ("linux.resources", {"devices": [{"allow": True, "type": "c", "major": 2**40}]}),
    ("linux.seccomp", {"defaultAction": "SCMP_ACT_ALLOW",
                       "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                                     "errnoRet": -1}]}),
]


@pytest.mark.parametrize(("path", "value"), REPORTED, ids=[p for p, _ in REPORTED])
@pytest.mark.parametrize("verb", ["create", "run"])
def test_hostile_config_is_one_line_and_creates_nothing(runtime_env: tuple[Path, Path],
                                                        verb: str, path: str, value: object
                                                        ) -> None:
    bundle, state_root = runtime_env
    config = base_config(["true"])
    node = config
    *parents, last = path.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    write_config(bundle, config)
    proc = runtime(state_root, verb, "-b", str(bundle), "c1")
    assert_one_line_error(proc)
    assert f": {path}" in proc.stderr.splitlines()[0]
    assert not (state_root / "c1").exists()
    assert leftover_cgroups() == []


def test_deeply_nested_config_is_one_line(runtime_env: tuple[Path, Path]) -> None:
    bundle, state_root = runtime_env
    (bundle / "config.json").write_text("[" * 100000 + "]" * 100000)
    proc = runtime(state_root, "run", "-b", str(bundle), "c1")
    assert_one_line_error(proc)
    assert not (state_root / "c1").exists()


def accepted_variants() -> list[tuple[str, object, dict]]:
    """The generated hostile variants parse_config accepts (tests/unit checks they are
    schema-valid), every 8th: the ones that reach the kernel."""
    from ociimg.errors import InvalidDocument
    from ociimg.runtime.config import parse_config

    out = []
    for path, value, doc in variants(base_config(["true"])):
        try:
            parse_config(doc, "/bundle")
        except InvalidDocument:
            continue
        out.append((path, value, doc))
    return out[::8]


@pytest.mark.parametrize(("path", "value", "config"), accepted_variants(),
                         ids=lambda v: repr(v)[:40] if not isinstance(v, dict) else "")
def test_accepted_hostile_values_run_or_fail_in_one_line(runtime_env: tuple[Path, Path],
                                                          path: str, value: object,
                                                          config: dict) -> None:
    bundle, state_root = runtime_env
    write_config(bundle, config)
    proc = runtime(state_root, "run", "-b", str(bundle), "c1")
    # The container's own exit status (its syscalls may fail under a hostile seccomp
    # profile) comes without a word on stderr; the runtime's failures come with one line.
    assert "Traceback" not in proc.stderr, proc.stderr
    if "ociimg-runtime: error: " in proc.stderr:
        assert_one_line_error(proc, proc.returncode)
        assert proc.returncode in (1, 127)
    else:
        assert all(line.startswith("ociimg-runtime: warning: ")
                   for line in proc.stderr.splitlines()), proc.stderr
    assert not (state_root / "c1").exists()
    assert leftover_cgroups() == []


# ------------------------------------------- the same through `ociimg run -v` (item 7)

def image_with_layer(layout: Path, base_tag: str, tag: str, files: dict) -> str:
    """Tag ``tag`` in the OCI layout: ``base_tag``'s image plus one layer of ``files``."""
    import hashlib

    from ociimg import spec
    from ociimg.digest import Digest
    from ociimg.store import Store
    from tests.layerimage import image_from_layout, tar_of

    store = Store(layout)
    manifest, _ = image_from_layout(store, base_tag)
    manifest_doc = json.loads(store.read_blob(
        next(d for t, d in store.refs() if t == base_tag).digest))
    config_doc = json.loads(store.read_blob(manifest.config.digest))
    layer = tar_of(files)
    layer_digest = store.put_blob(layer)
    config_doc["rootfs"]["diff_ids"].append(f"sha256:{hashlib.sha256(layer).hexdigest()}")
    config_raw = json.dumps(config_doc).encode()
    manifest_doc["config"]["digest"] = str(store.put_blob(config_raw))
    manifest_doc["config"]["size"] = len(config_raw)
    manifest_doc["layers"].append({"mediaType": spec.OCI_LAYER, "digest": str(layer_digest),
                                   "size": len(layer)})
    manifest_raw = json.dumps(manifest_doc).encode()
    digest = store.put_blob(manifest_raw)
    store.tag(tag, spec.Descriptor(spec.OCI_MANIFEST, Digest.parse(str(digest)),
                                   len(manifest_raw)))
    return f"oci:{layout}:{tag}"


def test_ociimg_run_volume_on_an_image_symlink_to_root(root: None, tmp_path: Path,
                                                      fixture_layout: Path) -> None:
    """`ociimg run -v HOST:/vol IMAGE` where IMAGE has /vol -> /: refused in one line;
    HOST is left exactly as it was (runc mounts it over the rootfs and fills HOST/dev)."""
    import shutil
    import sys

    layout = tmp_path / "layout"
    shutil.copytree(fixture_layout, layout)
    image = image_with_layer(layout, "busybox", "vol-root", {"vol": "->/"})
    volume, before = host_volume(tmp_path)
    env = {**os.environ, "OCIIMG_ROOT": str(tmp_path / "ociroot")}
    proc = subprocess.run([sys.executable, "-m", "ociimg", "run", "--rm", "-v",
                           f"{volume}:/vol", image, "true"], env=env, text=True,
                          capture_output=True, timeout=120, cwd=REPO)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "resolves to / through a symlink" in proc.stderr, proc.stderr
    assert tree_manifest(volume) == before
    ps = subprocess.run([sys.executable, "-m", "ociimg", "ps", "-a", "-q"], env=env,
                        text=True, capture_output=True, timeout=60, cwd=REPO)
    assert ps.stdout.split() == []
    assert mounts_under(tmp_path) == []
