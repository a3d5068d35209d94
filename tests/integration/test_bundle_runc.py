"""Interop: runc runs bundles that ociimg.bundle wrote (as root, real kernel, no mocks).

Each test runs twice: under runc, and under ociimg's own runc-compatible runtime
(``python -m ociimg.runtime``), so a config we write is proven against both.

The rootfs is busybox-static with applet symlinks, used the way crun's tests use their ``init``
helper: each test asserts on what the container prints. After every run, nothing of ours may be
left in the host's mount table, the cgroup tree or runc's state directory.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ociimg.bundle import BundleOptions, profiles, to_runtime_config, write_bundle
from ociimg.spec import parse_config
from tests.conftest import need
from tests.integration.runtime_helpers import mounts_under

BUSYBOX = Path("/usr/bin/busybox")
APPLETS = ("sh", "echo", "true", "cat", "hostname", "id", "touch", "grep", "unshare", "wc")
CGROUP_V1_ROOT = Path("/sys/fs/cgroup")
_ids = itertools.count()


@pytest.fixture(params=["runc", "ociimg-runtime"])
def runc(request: pytest.FixtureRequest, root: None) -> list[str]:
    """The OCI runtime's command line: runc itself, then our runc-compatible built-in one."""
    need(BUSYBOX.is_file(), f"{BUSYBOX} missing: apt-get install busybox-static")
    if request.param == "ociimg-runtime":
        return [sys.executable, "-m", "ociimg.runtime"]
    path = shutil.which("runc")
    need(path is not None, "runc missing: apt-get install runc")
    return [str(path)]


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    """A bundle dir holding rootfs/ built from busybox-static, with a small user database."""
    rootfs = tmp_path / "bundle" / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "etc").mkdir()
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    for applet in APPLETS:
        os.symlink("busybox", rootfs / "bin" / applet)
    (rootfs / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n")
    (rootfs / "etc" / "group").write_text("root:x:0:\napp:x:1000:\naudio:x:29:app\n")
    return tmp_path / "bundle"


def image_config(config: dict[str, Any]) -> Any:
    doc = {"architecture": profiles.normalize_arch(None), "os": "linux", "config": config,
           "rootfs": {"type": "layers", "diff_ids": []}}
    # Image-spec names the architecture the Go way.
    doc["architecture"] = {"x86_64": "amd64", "aarch64": "arm64"}.get(doc["architecture"],
                                                                        doc["architecture"])
    return parse_config(json.dumps(doc).encode())


def _cgroup_dirs(cgroups_path: str) -> list[Path]:
    rel = cgroups_path.lstrip("/")
    return [d / rel for d in CGROUP_V1_ROOT.iterdir() if (d / rel).exists()]


def run_in_runc(runc: list[str], bundle: Path, config: dict[str, Any],
                ) -> subprocess.CompletedProcess[str]:
    """``runc run`` the bundle in the foreground; check it left nothing behind."""
    cid = f"ociimg-bt-{os.getpid()}-{next(_ids)}"
    config.setdefault("linux", {})["cgroupsPath"] = f"/{cid}"
    write_bundle(bundle, config)
    state = bundle.parent / "runc-state"
    before = mounts_under(bundle.parent)
    result = subprocess.run(
        [*runc, "--root", str(state), "run", "--bundle", str(bundle), cid],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, check=False)
    leftover = subprocess.run([*runc, "--root", str(state), "list", "-q"],
                              capture_output=True, text=True, check=False).stdout.split()
    if cid in leftover:
        subprocess.run([*runc, "--root", str(state), "delete", "--force", cid], check=False)
    assert cid not in leftover, "runc run left the container behind"
    assert mounts_under(bundle.parent) == before, "host mount table changed"
    assert _cgroup_dirs(f"/{cid}") == [], "container cgroup left behind"
    return result


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"runc exited {result.returncode}: {result.stderr.strip()}"
    return result.stdout


def _status(stdout: str) -> dict[str, str]:
    fields = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def _cap_mask(caps: tuple[str, ...] | list[str]) -> int:
    return sum(1 << profiles.ALL_CAPABILITIES.index(c) for c in caps)


def test_runc_runs_echo(runc: list[str], bundle_dir: Path) -> None:
    config = to_runtime_config(image_config({"Cmd": ["/bin/sh"]}),
                               BundleOptions(args=["/bin/echo", "hello"]), bundle_dir / "rootfs")
    assert _ok(run_in_runc(runc, bundle_dir, config)) == "hello\n"


def test_runc_root_process_gets_default_caps_and_filters(runc: list[str], bundle_dir: Path) -> None:
    config = to_runtime_config(
        image_config({"Entrypoint": ["/bin/cat"], "Cmd": ["/proc/self/status"]}),
        BundleOptions(hostname="ociimg-test"), bundle_dir / "rootfs")
    status = _status(_ok(run_in_runc(runc, bundle_dir, config)))
    want = _cap_mask(profiles.DEFAULT_CAPABILITIES)
    assert int(status["CapBnd"], 16) == want
    assert int(status["CapEff"], 16) == want and int(status["CapPrm"], 16) == want
    assert int(status["CapInh"], 16) == 0 and int(status["CapAmb"], 16) == 0
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"  # SECCOMP_MODE_FILTER: our profile is loaded


def test_runc_named_user_hostname_env_readonly_root(runc: list[str], bundle_dir: Path) -> None:
    script = ("id; hostname; echo HOME=$HOME; grep -E '^Cap(Eff|Bnd)' /proc/self/status; "
              "touch /probe 2>/dev/null && echo rootfs=rw || echo rootfs=ro")
    config = to_runtime_config(image_config({"User": "app", "Cmd": ["/bin/sh", "-c", script]}),
                               BundleOptions(hostname="box", readonly_rootfs=True),
                               bundle_dir / "rootfs")
    out = _ok(run_in_runc(runc, bundle_dir, config)).splitlines()
    assert out[0] == "uid=1000(app) gid=1000(app) groups=29(audio)"
    assert out[1] == "box"
    assert out[2] == "HOME=/home/app"
    status = _status("\n".join(out[3:5]))
    assert int(status["CapEff"], 16) == 0  # a non-root user holds no capabilities
    assert int(status["CapBnd"], 16) == _cap_mask(profiles.DEFAULT_CAPABILITIES)
    assert out[5] == "rootfs=ro"
    assert not (bundle_dir / "rootfs" / "probe").exists()


def test_runc_applies_resource_limits(runc: list[str], bundle_dir: Path) -> None:
    # Inside, the cgroup namespace makes the container's own cgroup the root of each
    # hierarchy, so the limit files sit directly under /sys/fs/cgroup/<controller>.
    need((CGROUP_V1_ROOT / "memory" / "cgroup.procs").exists()
         and (CGROUP_V1_ROOT / "pids" / "cgroup.procs").exists(),
         "needs cgroup v1 memory and pids controllers under /sys/fs/cgroup (runc treats this "
         "hybrid layout as v1)")
    memory = CGROUP_V1_ROOT / "memory" / "memory.limit_in_bytes"
    pids = CGROUP_V1_ROOT / "pids" / "pids.max"
    script = f"cat {memory} {pids}; ulimit -n"
    config = to_runtime_config(image_config({"Cmd": ["/bin/sh", "-c", script]}),
                               BundleOptions(memory=64 << 20, pids_limit=50, cpus=0.5),
                               bundle_dir / "rootfs")
    assert _ok(run_in_runc(runc, bundle_dir, config)).split() == [str(64 << 20), "50", "1024"]


def test_runc_masks_default_paths(runc: list[str], bundle_dir: Path) -> None:
    masked = [p for p in profiles.DEFAULT_MASKED_PATHS
              if p.startswith("/proc/") and os.path.isfile(p)]
    need(bool(masked), "no masked /proc file exists on this kernel")
    script = "; ".join(f"echo {p}=$(cat {p} 2>/dev/null | wc -c)" for p in masked)
    config = to_runtime_config(image_config({"Cmd": ["/bin/sh", "-c", script]}),
                               BundleOptions(), bundle_dir / "rootfs")
    out = _ok(run_in_runc(runc, bundle_dir, config)).split()
    assert out == [f"{p}=0" for p in masked]


def test_seccomp_profile_blocks_unshare_even_with_cap_sys_admin(runc: list[str],
                                                               bundle_dir: Path) -> None:
    # With CAP_SYS_ADMIN the kernel would allow unshare(CLONE_NEWNS); only the default profile
    # (built for the default capabilities) stands in the way, so this isolates seccomp.
    options = BundleOptions(args=["/bin/unshare", "-m", "/bin/echo", "inside"],
                            cap_add=["SYS_ADMIN"])
    image = image_config({})
    config = to_runtime_config(image, options, bundle_dir / "rootfs")
    config["linux"]["seccomp"] = profiles.default_seccomp_profile(image.platform.architecture)
    denied = run_in_runc(runc, bundle_dir, config)
    assert denied.returncode != 0 and "inside" not in denied.stdout
    assert "Operation not permitted" in denied.stderr
    # The capability-aware profile to_runtime_config writes lets the same call through.
    allowed = to_runtime_config(image, options, bundle_dir / "rootfs")
    assert _ok(run_in_runc(runc, bundle_dir, allowed)) == "inside\n"


def test_clone3_enosys_lets_processes_fork(runc: list[str], bundle_dir: Path) -> None:
    # clone3 returns ENOSYS under our profile; a shell pipeline still works because the libc
    # falls back to clone(2), which the profile allows without namespace flags.
    config = to_runtime_config(
        image_config({"Cmd": ["/bin/sh", "-c", "echo piped | cat | cat; (echo sub)"]}),
        BundleOptions(), bundle_dir / "rootfs")
    assert _ok(run_in_runc(runc, bundle_dir, config)) == "piped\nsub\n"


def _layout_config(layout: Path, tag: str) -> Any:
    from ociimg.spec import parse_manifest

    index = json.loads((layout / "index.json").read_text())
    desc = next(d for d in index["manifests"]
                if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag)
    blob = layout / "blobs" / "sha256"
    manifest = parse_manifest((blob / desc["digest"].split(":", 1)[1]).read_bytes(),
                              desc["mediaType"])
    return parse_config((blob / manifest.config.digest.hex).read_bytes())


def test_runc_runs_fixture_image_unpacked_by_umoci(runc: list[str], fixture_layout: Path,
                                                   tmp_path: Path) -> None:
    # The real busybox fixture: rootfs by umoci, config.json by us, run by runc.
    umoci = shutil.which("umoci")
    need(umoci is not None, "umoci missing: apt-get install umoci")
    bundle = tmp_path / "umoci-bundle"
    subprocess.run([str(umoci), "unpack", "--image", f"{fixture_layout}:busybox", str(bundle)],
                   check=True, capture_output=True, timeout=120)
    image = _layout_config(fixture_layout, "busybox")
    script = "id; echo PATH=$PATH; echo HOME=$HOME; pwd"
    config = to_runtime_config(image, BundleOptions(user="app", args=["/bin/sh", "-c", script]),
                               bundle / "rootfs")
    assert config["annotations"]["org.opencontainers.image.title"] == "busybox"
    out = _ok(run_in_runc(runc, bundle, config)).splitlines()
    assert out == ["uid=1000(app) gid=1000(app) groups=10(wheel),29(audio),50(staff)",
                   "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                   "HOME=/home/app", "/"]


@pytest.mark.parametrize("network", ["private", "host"])
def test_runc_network_modes(runc: list[str], bundle_dir: Path, network: str) -> None:
    config = to_runtime_config(image_config({"Cmd": ["/bin/sh", "-c", "ls /sys/class/net"]}),
                               BundleOptions(network=network), bundle_dir / "rootfs")
    seen = _ok(run_in_runc(runc, bundle_dir, config)).split()
    want = sorted(os.listdir("/sys/class/net")) if network == "host" else ["lo"]
    assert sorted(seen) == want


def test_runc_non_root_user_gets_added_caps_through_ambient(runc: list[str],
                                                           bundle_dir: Path) -> None:
    config = to_runtime_config(
        image_config({"User": "app", "Cmd": ["/bin/grep", "^Cap", "/proc/self/status"]}),
        BundleOptions(cap_add=["NET_BIND_SERVICE"]), bundle_dir / "rootfs")
    status = _status(_ok(run_in_runc(runc, bundle_dir, config)))
    bit = _cap_mask(["CAP_NET_BIND_SERVICE"])
    assert {k: int(v, 16) for k, v in status.items()} == {
        "CapInh": bit, "CapPrm": bit, "CapEff": bit, "CapAmb": bit,
        "CapBnd": _cap_mask(profiles.DEFAULT_CAPABILITIES)}
