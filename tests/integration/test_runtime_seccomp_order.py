"""Where the init installs a no_new_privs seccomp filter (init.wait_for_start): while the
container waits for `start` (not inside start's wait for the execve) when nothing that
runs before the execve could notice, else as late as before: right before it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.runtime_helpers import base_config, make_bundle, runtime, state_of
from tests.waiting import blocked_opening_fifo, wait_until


def _seccomp_mode(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Seccomp:"):
                return int(line.split()[1])
    raise AssertionError("no Seccomp line")


def _write_only_to_stdout(config: dict[str, Any]) -> None:
    """The default profile, but write allowed only on fd 1: not surely allowed."""
    profile = config["linux"]["seccomp"]
    for rule in profile["syscalls"]:
        rule["names"] = [n for n in rule["names"] if n != "write"]
    profile["syscalls"] = [r for r in profile["syscalls"] if r["names"]]
    profile["syscalls"].append({"names": ["write"], "action": "SCMP_ACT_ALLOW",
                                "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]})


@pytest.mark.parametrize("case", ["plain", "start-hook", "write-with-args"])
def test_filter_before_start_only_where_nothing_notices(tmp_path: Path, case: str) -> None:
    config = base_config(["/bin/true"])
    assert config["process"]["noNewPrivileges"] and config["linux"]["seccomp"]
    if case == "start-hook":  # runs in the init: must not run under the container's filter
        config["hooks"] = {"startContainer": [{"path": "/bin/true"}]}
    elif case == "write-with-args":
        _write_only_to_stdout(config)
    bundle = make_bundle(tmp_path, [], config)
    root = tmp_path / "state"
    runtime(root, "create", "--bundle", str(bundle), "c1", check=True)
    try:
        pid = state_of(root, "c1")["pid"]
        # Blocked in exec.fifo's open: past any filter it loads before `start`.
        wait_until(lambda: blocked_opening_fifo(pid), "the init never waited for start")
        assert _seccomp_mode(pid) == (2 if case == "plain" else 0)
        runtime(root, "start", "c1", check=True)
        deadline = time.monotonic() + 20
        while state_of(root, "c1")["status"] != "stopped":
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        runtime(root, "delete", "--force", "c1", check=True)


def test_a_filter_that_fails_to_load_after_start_fails_start(tmp_path: Path) -> None:
    # Loaded late (write restricted by args), a filter over the kernel's 4096-instruction
    # limit fails after `start` released the init: `start` must say so, not succeed.
    config = base_config(["/bin/true"])
    _write_only_to_stdout(config)
    config["linux"]["seccomp"]["syscalls"] += [
        {"names": ["write"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 1000 + i, "op": "SCMP_CMP_EQ"}]} for i in range(3000)]
    bundle = make_bundle(tmp_path, [], config)
    root = tmp_path / "state"
    runtime(root, "create", "--bundle", str(bundle), "c1", check=True)
    try:
        proc = runtime(root, "start", "c1")
        assert proc.returncode == 1 and "seccomp" in proc.stderr, proc.stderr
        assert state_of(root, "c1")["status"] == "stopped"
    finally:
        runtime(root, "delete", "--force", "c1", check=True)
