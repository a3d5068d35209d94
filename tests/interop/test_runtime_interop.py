"""ociimg-runtime against the other tools: a bundle made by umoci runs under us, a bundle
we run also runs under runc (same output), and podman drives us as its OCI runtime."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.conftest import need
from tests.integration.runtime_helpers import (
    base_config,
    make_bundle,
    make_rootfs,
    mounts_under,
    runtime,
    write_config,
)

SCRIPT = "echo pid=$$; hostname; ls /; exit 3"


def _tool(name: str) -> str:
    path = shutil.which(name)
    need(path is not None, f"{name} not installed")
    return path


def test_umoci_bundle_runs_under_ociimg(root: None, tmp_path: Path) -> None:
    umoci = _tool("umoci")
    layout, bundle = tmp_path / "layout", tmp_path / "bundle"
    subprocess.run([umoci, "init", "--layout", str(layout)], check=True)
    subprocess.run([umoci, "new", "--image", f"{layout}:t"], check=True)
    subprocess.run([umoci, "unpack", "--image", f"{layout}:t", str(bundle)], check=True,
                   capture_output=True)
    make_rootfs(tmp_path / "payload")
    shutil.copytree(tmp_path / "payload", bundle / "rootfs", symlinks=True, dirs_exist_ok=True)
    config = json.loads((bundle / "config.json").read_text())
    config["process"].update(terminal=False, args=["sh", "-c", SCRIPT])
    write_config(bundle, config)
    proc = runtime(tmp_path / "state", "run", "-b", str(bundle), "u1")
    assert proc.returncode == 3, proc.stderr
    lines = proc.stdout.split()
    assert lines[0] == "pid=1" and "bin" in lines and "proc" in lines
    assert mounts_under(tmp_path) == []


def test_same_bundle_under_runc_and_ociimg(root: None, tmp_path: Path) -> None:
    runc = _tool("runc")
    bundle = make_bundle(tmp_path, ["true"])
    config = base_config(["sh", "-c", SCRIPT + "; "])
    config["process"]["args"] = ["sh", "-c", SCRIPT]
    write_config(bundle, config)
    ours = runtime(tmp_path / "state", "run", "-b", str(bundle), "o1")
    theirs = subprocess.run([runc, "--root", str(tmp_path / "runc"), "run", "-b", str(bundle),
                             "r1"], capture_output=True, text=True, timeout=60)
    assert theirs.returncode == ours.returncode == 3, (ours.stderr, theirs.stderr)
    assert ours.stdout == theirs.stdout
    assert mounts_under(tmp_path) == []


def _podman(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    podman = _tool("podman")
    conf = tmp_path / "containers.conf"
    conf.write_text('[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n')
    env = dict(os.environ, CONTAINERS_CONF=str(conf))
    # The entry point sits beside the interpreter (venv, pyenv) or on PATH (/usr/local/bin).
    runtime_bin = Path(sys.executable).parent / "ociimg-runtime"
    if not runtime_bin.exists():
        runtime_bin = Path(shutil.which("ociimg-runtime") or "/nonexistent")
    need(runtime_bin.exists(), "ociimg-runtime entry point not installed (pip install -e .)")
    return [podman, "--root", str(tmp_path / "root"), "--runroot", str(tmp_path / "runroot"),
            "--storage-driver", "vfs", "--runtime", str(runtime_bin)], env


def test_podman_uses_ociimg_runtime(root: None, tmp_path: Path, fixture_layout: Path) -> None:
    # podman refuses a runroot path longer than 50 characters: use a short one.
    short = Path(tempfile.mkdtemp(prefix="ociimg-pm-"))
    podman, env = _podman(short)
    image = f"oci:{fixture_layout}:busybox"
    # This host cannot raise RLIMIT_NOFILE (no CAP_SYS_RESOURCE); podman's default asks
    # for 1048576, so request what the host allows.
    limits = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
    try:
        run = subprocess.run([*podman, "run", "--name", "p1", "--pids-limit", "50", *limits,
                              image, "sh", "-c", "echo pid=$$; cat /sys/fs/cgroup/pids/pids.max"
                              " 2>/dev/null || cat /sys/fs/cgroup/pids.max; exit 3"],
                             capture_output=True, text=True, timeout=300, env=env)
        assert run.returncode == 3, run.stderr
        assert run.stdout.split() == ["pid=1", "50"]
        subprocess.run([*podman, "run", "-d", "--name", "p2", *limits, image, "sleep", "100"],
                       capture_output=True, text=True, timeout=120, check=True, env=env)
        ex = subprocess.run([*podman, "exec", "p2", "cat", "/proc/1/cmdline"],
                            capture_output=True, text=True, timeout=60, env=env)
        assert ex.returncode == 0, ex.stderr
        assert ex.stdout.replace("\0", " ").strip() == "sleep 100"
        subprocess.run([*podman, "kill", "p2"], capture_output=True, timeout=60, check=True,
                       env=env)
    finally:
        subprocess.run([*podman, "rm", "-f", "p1", "p2"], capture_output=True, timeout=120, env=env)
    assert mounts_under(short) == []
    shutil.rmtree(short, ignore_errors=True)
