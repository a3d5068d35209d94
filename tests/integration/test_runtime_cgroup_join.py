"""How the container's processes get into its cgroups (as root, real kernel).

The intermediate joins the v1 hierarchies itself (writing "0" to ``tasks``), and the
init is forked straight into the cgroup2 directory with clone3(CLONE_INTO_CGROUP); when
clone3 is refused (older kernels, a seccomp filter as Docker's default profile has, a
user ns) the parent moves the init and tells it so. Either way: every hierarchy holds the
init, and the cgroup namespace the init makes afterwards is rooted at its own cgroup.
Both paths on this host's layout, and the v2 path on a pure cgroup2 mount.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ociimg.oskit import linux
from ociimg.runtime.cgroups import detect
from ociimg.runtime.seccomp import ACTIONS
from tests.conftest import need
from tests.integration.cgroupns import reshape_cgroup_mounts
from tests.integration.forked import run_in_child
from tests.integration.runtime_helpers import base_config, runtime, write_config

ENOSYS_ACTION = ACTIONS["SCMP_ACT_ERRNO"] | errno.ENOSYS


def block_clone3() -> None:
    """preexec_fn: clone3 fails with ENOSYS from here on (Docker's default profile)."""
    ctx = linux.seccomp_init(ACTIONS["SCMP_ACT_ALLOW"])
    try:
        nr = linux.seccomp_syscall_resolve_name("clone3")
        linux.seccomp_rule_add_array(ctx, ENOSYS_ACTION, nr, [])
        linux.seccomp_load(ctx)
    finally:
        linux.seccomp_release(ctx)


def cgroup_lines(pid: int | str) -> dict[str, str]:
    """/proc/PID/cgroup as {controllers ("" for v2): path}."""
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    return {line.split(":", 2)[1]: line.split(":", 2)[2] for line in lines}


def check_placement(bundle: Path, state_root: Path,
                    preexec: Callable[[], None] | None) -> tuple[dict[str, str], str, str]:
    """Create a container, return (the init's /proc/PID/cgroup, the config's cgroup path,
    what the container itself reads from /proc/self/cgroup), deleting it afterwards."""
    config = base_config(["cat", "/proc/self/cgroup"])
    write_config(bundle, config)
    created = runtime(state_root, "create", "-b", str(bundle), "c1", preexec_fn=preexec)
    assert created.returncode == 0, created.stderr
    try:
        state = json.loads(runtime(state_root, "state", "c1", check=True).stdout)
        placed = cgroup_lines(state["pid"])
    finally:
        runtime(state_root, "delete", "-f", "c1")
    run = runtime(state_root, "run", "-b", str(bundle), "c2", preexec_fn=preexec)
    assert run.returncode == 0, run.stderr
    return placed, config["linux"]["cgroupsPath"], run.stdout


@pytest.mark.parametrize("clone3", ["allowed", "blocked"])
def test_init_is_in_every_hierarchy_and_its_cgroup_ns_starts_there(
        runtime_env: tuple[Path, Path], clone3: str) -> None:
    bundle, state_root = runtime_env
    layout = detect.read_host_layout()
    preexec = block_clone3 if clone3 == "blocked" else None
    if preexec is not None:  # the filter really makes clone3 fail, so the fallback runs
        probe = subprocess.run(
            [sys.executable, "-c", "import os\nfrom ociimg.oskit import linux\n"
             "try:\n    linux.fork_into_cgroup(os.open('/', os.O_RDONLY))\n"
             "except OSError as e:\n    print(e.errno)"],
            capture_output=True, text=True, preexec_fn=preexec, cwd=Path(__file__).parents[2])
        assert probe.stdout.strip() == str(errno.ENOSYS), probe.stderr
    placed, path, inside = check_placement(bundle, state_root, preexec)
    for controller in {",".join(sorted(m.controllers)) for m in layout.v1.values()}:
        key = next(k for k in placed if set(k.split(",")) == set(controller.split(",")))
        assert placed[key] == path, (controller, placed)
    if layout.unified is not None:
        assert placed[""] == path, placed
    # The container's cgroup ns is rooted at its own cgroup in every hierarchy it joined.
    seen = {line.split(":", 2)[1]: line.split(":", 2)[2] for line in inside.splitlines()}
    joined = [k for k, v in placed.items() if v == path]
    assert joined and all(seen[k] == "/" for k in joined), (seen, placed)


def test_pure_v2_host_places_the_init_by_clone3(runtime_env: tuple[Path, Path]) -> None:
    """A private mount ns where /sys/fs/cgroup is only cgroup2 (the host's unified
    hierarchy): the runtime drives v2, and the init starts in the container's cgroup."""
    bundle, state_root = runtime_env
    need(detect.read_host_layout().unified is not None, "no cgroup2 support to mount")

    def child() -> dict:
        reshape_cgroup_mounts("v2")
        placed, path, inside = check_placement(bundle, state_root, None)
        return {"placed": placed, "path": path, "inside": inside}

    status, result = run_in_child(child)
    assert os.waitstatus_to_exitcode(status) == 0, result
    out = result["ok"]
    # Membership is per process, not per mount ns: the v1 hierarchies still exist for
    # the kernel, but a v2 runtime leaves them alone.
    assert out["placed"][""] == out["path"]
    assert [k for k, v in out["placed"].items() if v == out["path"]] == [""]
    assert "0::/\n" in out["inside"]


@pytest.mark.parametrize("clone3", ["allowed", "blocked"])
def test_exec_joins_every_hierarchy(runtime_env: tuple[Path, Path], clone3: str) -> None:
    bundle, state_root = runtime_env
    config = base_config(["sleep", "60"])
    write_config(bundle, config)
    runtime(state_root, "run", "-d", "-b", str(bundle), "c1", check=True)
    try:
        init_pid = json.loads(runtime(state_root, "state", "c1", check=True).stdout)["pid"]
        joined = [k for k, v in cgroup_lines(init_pid).items()
                  if v == config["linux"]["cgroupsPath"]]
        proc = runtime(state_root, "exec", "c1", "cat", "/proc/self/cgroup",
                       preexec_fn=block_clone3 if clone3 == "blocked" else None)
    finally:
        runtime(state_root, "delete", "-f", "c1", check=True)
    assert proc.returncode == 0, proc.stderr
    # In the container's cgroup ns, a process in the container's cgroup reads "/".
    seen = {line.split(":", 2)[1]: line.split(":", 2)[2] for line in proc.stdout.splitlines()}
    assert "" in joined and all(seen[k] == "/" for k in joined), (seen, joined)
