"""What a container must not see or do (as root, real kernel): masked and readonly /proc,
no mount/unshare, no escape through symlinked mount destinations, readonly rootfs, the
host's files and the runtime's code unreachable."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.integration.runtime_helpers import (
    base_config,
    make_bundle,
    mounts_under,
    runtime,
    write_config,
)


def run_sh(bundle: Path, state_root: Path, script: str, config: dict | None = None):
    config = config or base_config(["sh", "-c", script])
    config["process"]["args"] = ["sh", "-c", script]
    write_config(bundle, config)
    return runtime(state_root, "run", "-b", str(bundle), "c1")


def test_masked_paths_are_empty(runtime_env: tuple[Path, Path]) -> None:
    bundle, state_root = runtime_env
    proc = run_sh(bundle, state_root,
                  "for f in /proc/kcore /proc/keys /proc/timer_list; do "
                  "[ -e $f ] && echo $f $(wc -c < $f); done; ls /proc/acpi | wc -l")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split("\n")
    sized = [line.split() for line in lines if line.startswith("/proc/")]
    assert sized, "no masked file exists on this kernel"
    assert all(size == "0" for _, size in sized), sized
    assert lines[-2].strip() == "0"


def test_proc_sys_is_readonly(runtime_env: tuple[Path, Path]) -> None:
    bundle, state_root = runtime_env
    proc = run_sh(bundle, state_root,
                  "echo x > /proc/sys/kernel/domainname && echo WROTE; "
                  "echo 1 > /proc/sysrq-trigger && echo WROTE2; true")
    assert "WROTE" not in proc.stdout
    assert "Read-only file system" in proc.stderr


def test_mount_and_unshare_are_refused(runtime_env: tuple[Path, Path]) -> None:
    bundle, state_root = runtime_env
    proc = run_sh(bundle, state_root,
                  "mount -t tmpfs none /tmp && echo MOUNTED; "
                  "unshare -m true && echo UNSHARED; "
                  "grep CapEff /proc/self/status")
    assert "MOUNTED" not in proc.stdout and "UNSHARED" not in proc.stdout
    cap_eff = int(proc.stdout.split()[-1], 16)
    assert not cap_eff & (1 << 21), "CAP_SYS_ADMIN must be dropped"


def test_no_new_privs_and_seccomp_are_set(runtime_env: tuple[Path, Path]) -> None:
    bundle, state_root = runtime_env
    proc = run_sh(bundle, state_root, "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status")
    fields = dict(line.split(":") for line in proc.stdout.splitlines())
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["Seccomp"].strip() == "2"


def test_host_files_and_runtime_code_unreachable(runtime_env: tuple[Path, Path]) -> None:
    bundle, state_root = runtime_env
    import ociimg
    pkg = Path(ociimg.__file__).parent
    proc = run_sh(bundle, state_root,
                  f"ls {pkg} && echo SEEN-PKG; ls /work /usr/bin/python3 && echo SEEN-HOST; "
                  "ls /proc/1/root/ | tr '\\n' ' '; true")
    assert "SEEN-PKG" not in proc.stdout and "SEEN-HOST" not in proc.stdout
    root_listing = proc.stdout.splitlines()[-1].split()
    assert "bin" in root_listing and "work" not in root_listing


def test_program_inherits_only_stdio(runtime_env: tuple[Path, Path]) -> None:
    """No runtime fd (sync socket, fifo, state dir) survives into the program
    (CVE-2024-21626)."""
    bundle, state_root = runtime_env
    write_config(bundle, base_config(["sleep", "100"]))
    runtime(state_root, "run", "-d", "-b", str(bundle), "c1", check=True)
    proc = runtime(state_root, "exec", "c1", "ls", "/proc/1/fd", check=True)
    assert sorted(proc.stdout.split()) == ["0", "1", "2"]
    runtime(state_root, "delete", "-f", "c1", check=True)


def test_symlinked_mount_destination_stays_inside(runtime_env: tuple[Path, Path],
        tmp_path: Path) -> None:
    bundle, state_root = runtime_env
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "keep").write_text("host data")
    # An image-controlled symlink pointing at a host path: the mount must land inside.
    os.symlink(str(canary), bundle / "rootfs" / "escape")
    config = base_config(["sh", "-c", "echo in > /escape/file && ls /escape"])
    config["mounts"].append({"destination": "/escape", "type": "tmpfs", "source": "tmpfs",
                             "options": ["nosuid"]})
    write_config(bundle, config)
    proc = runtime(state_root, "run", "-b", str(bundle), "c1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["file"]
    assert sorted(os.listdir(canary)) == ["keep"]
    assert (canary / "keep").read_text() == "host data"


def test_dotdot_destination_cannot_climb_out(runtime_env: tuple[Path, Path],
        tmp_path: Path) -> None:
    bundle, state_root = runtime_env
    config = base_config(["sh", "-c", "ls /climb"])
    config["mounts"].append({"destination": "/../../../climb", "type": "tmpfs",
                             "source": "tmpfs"})
    write_config(bundle, config)
    proc = runtime(state_root, "run", "-b", str(bundle), "c1")
    assert proc.returncode == 0, proc.stderr
    assert (bundle / "rootfs" / "climb").is_dir()
    assert not Path("/climb").exists()


def test_mount_over_proc_subpath_is_refused(runtime_env: tuple[Path, Path]) -> None:
    bundle, state_root = runtime_env
    config = base_config(["true"])
    config["mounts"].append({"destination": "/proc/sys", "type": "bind", "source": "/tmp",
                             "options": ["rbind"]})
    write_config(bundle, config)
    proc = runtime(state_root, "run", "-b", str(bundle), "c1")
    assert proc.returncode != 0 and "/proc/sys" in proc.stderr
    assert not (state_root / "c1").exists()


def test_readonly_rootfs_and_readonly_bind(runtime_env: tuple[Path, Path], tmp_path: Path) -> None:
    bundle, state_root = runtime_env
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "data").write_text("hello")
    config = base_config(["sh", "-c", "cat /data/data; echo; touch /x || echo ROOT-RO; "
                                      "touch /data/y || echo BIND-RO"])
    config["root"]["readonly"] = True
    config["mounts"].append({"destination": "/data", "type": "bind", "source": str(shared),
                             "options": ["rbind", "ro"]})
    write_config(bundle, config)
    proc = runtime(state_root, "run", "-b", str(bundle), "c1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["hello", "ROOT-RO", "BIND-RO"]
    assert sorted(os.listdir(shared)) == ["data"]


def test_default_devices(runtime_env: tuple[Path, Path]) -> None:
    bundle, state_root = runtime_env
    proc = run_sh(bundle, state_root,
                  "for d in null zero full random urandom tty; do "
                  "stat -c '%n %t:%T %a' /dev/$d; done; readlink /dev/ptmx; readlink /dev/fd; "
                  "head -c 4 /dev/zero | wc -c")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:6] == ["/dev/null 1:3 666", "/dev/zero 1:5 666", "/dev/full 1:7 666",
                         "/dev/random 1:8 666", "/dev/urandom 1:9 666", "/dev/tty 5:0 666"]
    assert lines[6:8] == ["pts/ptmx", "/proc/self/fd"]
    assert lines[8].strip() == "4"


def test_fake_dev_null_refuses_masking(runtime_env: tuple[Path, Path], tmp_path: Path) -> None:
    """A /dev bind from an attacker-controlled dir with a regular file as null: masking
    must refuse rather than bind that file over /proc paths (CVE-2025-31133)."""
    bundle, state_root = runtime_env
    fake = tmp_path / "fakedev"
    fake.mkdir()
    (fake / "null").write_text("not a device")
    config = base_config(["true"])
    config["mounts"] = [m for m in config["mounts"] if not m["destination"].startswith("/dev")]
    config["mounts"].append({"destination": "/dev", "type": "bind", "source": str(fake),
                             "options": ["rbind"]})
    write_config(bundle, config)
    proc = runtime(state_root, "run", "-b", str(bundle), "c1")
    assert proc.returncode != 0 and "/dev/null" in proc.stderr
    assert (fake / "null").read_text() == "not a device"


def test_user_namespace_maps_root(root: None) -> None:
    # The mapped root (host uid 100000) must be able to reach the bundle: pytest's tmp
    # dirs are 0700, so use a world-traversable directory of our own.
    base = Path(tempfile.mkdtemp(prefix="ociimg-userns-"))
    try:
        os.chmod(base, 0o711)
        bundle = make_bundle(base, ["true"])
        os.chown(bundle / "rootfs", 100000, 100000)
        config = base_config(["sh", "-c", "id -u; cat /proc/self/uid_map"])
        config["linux"]["namespaces"].append({"type": "user"})
        config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        write_config(bundle, config)
        proc = runtime(base / "state", "run", "-b", str(bundle), "c1")
        assert proc.returncode == 0, proc.stderr
        out = proc.stdout.split()
        assert out[0] == "0" and out[1:4] == ["0", "100000", "65536"]
        assert mounts_under(base) == []
    finally:
        shutil.rmtree(base)


def test_sysctl_domainname_in_own_namespaces(runtime_env: tuple[Path, Path]) -> None:
    bundle, state_root = runtime_env
    config = base_config(["cat", "/proc/sys/net/ipv4/ip_forward",
                          "/proc/sys/kernel/domainname"])
    config["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
    config["domainname"] = "example.test"
    write_config(bundle, config)
    host_forward = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    proc = runtime(state_root, "run", "-b", str(bundle), "c1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", "example.test"]
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == host_forward


@pytest.mark.parametrize(("key", "message"), [
    ("kernel.core_pattern", "not namespaced"),
    ("vm.overcommit_memory", "not namespaced"),
    ("net.ipv4/../../kernel/core_pattern", "invalid key"),
])
def test_host_sysctls_are_refused(runtime_env: tuple[Path, Path], key: str, message: str) -> None:
    bundle, state_root = runtime_env
    before = Path("/proc/sys/kernel/core_pattern").read_text()
    config = base_config(["true"])
    config["linux"]["sysctl"] = {key: "|/tmp/evil"}
    write_config(bundle, config)
    proc = runtime(state_root, "run", "-b", str(bundle), "c1")
    assert proc.returncode != 0 and message in proc.stderr
    assert Path("/proc/sys/kernel/core_pattern").read_text() == before


def test_hostname_needs_uts_namespace(runtime_env: tuple[Path, Path]) -> None:
    bundle, state_root = runtime_env
    host = os.uname().nodename
    config = base_config(["true"])
    config["linux"]["namespaces"] = [n for n in config["linux"]["namespaces"]
                                     if n["type"] != "uts"]
    write_config(bundle, config)
    proc = runtime(state_root, "run", "-b", str(bundle), "c1")
    assert proc.returncode != 0 and "uts namespace" in proc.stderr
    assert os.uname().nodename == host


def test_joined_network_namespace(runtime_env: tuple[Path, Path]) -> None:
    """A namespace given by path is joined, not created: the container sees the host's
    interfaces when it joins the host netns."""
    bundle, state_root = runtime_env
    config = base_config(["sh", "-c", "ip -o link | wc -l"])
    for ns in config["linux"]["namespaces"]:
        if ns["type"] == "network":
            ns["path"] = f"/proc/{os.getpid()}/ns/net"
    write_config(bundle, config)
    proc = runtime(state_root, "run", "-b", str(bundle), "c1")
    assert proc.returncode == 0, proc.stderr
    host_links = len(os.listdir("/sys/class/net"))
    assert int(proc.stdout.strip()) == host_links


def test_time_namespace_offsets(runtime_env: tuple[Path, Path]) -> None:
    bundle, state_root = runtime_env
    config = base_config(["cat", "/proc/uptime"])
    config["linux"]["namespaces"].append({"type": "time"})
    config["linux"]["timeOffsets"] = {"boottime": {"secs": 10 * 86400, "nanosecs": 0}}
    write_config(bundle, config)
    host_uptime = float(Path("/proc/uptime").read_text().split()[0])
    proc = runtime(state_root, "run", "-b", str(bundle), "c1")
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout.split()[0]) >= host_uptime + 10 * 86400


@pytest.mark.parametrize("entry", ["sys", "dev"])
def test_relative_symlink_climbing_out_creates_nothing_outside(
        runtime_env: tuple[Path, Path], tmp_path: Path, entry: str) -> None:
    """rootfs/sys (or /dev) → ../../../canary: the mount points under it (sys/fs/cgroup,
    dev/pts, dev/shm, …) must be created inside the rootfs, never in the canary."""
    bundle, state_root = runtime_env
    canary = tmp_path / "canary"
    canary.mkdir()
    target = bundle / "rootfs" / entry
    if target.exists():
        target.rmdir()
    os.symlink(os.path.relpath(canary, target.parent), target)
    write_config(bundle, base_config(["true"]))
    proc = runtime(state_root, "run", "-b", str(bundle), "c1")
    assert proc.returncode == 0, proc.stderr
    assert os.listdir(canary) == []
    # The link was resolved as if rootfs were "/": the mount points went to rootfs/canary.
    assert (bundle / "rootfs" / "canary").is_dir()
