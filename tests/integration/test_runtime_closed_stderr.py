"""containerd's shim may hand the runtime a stderr pipe nobody reads any more and takes the
error from --log: a refused config must still reach the log, exit 1, and leave nothing
behind (a write to the broken stderr used to end in a traceback, exit 120 and no log entry,
so the CRI said only "unable to retrieve OCI runtime error")."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.integration.runtime_helpers import (
    REPO,
    RUNTIME,
    base_config,
    leftover_cgroups,
    make_bundle,
    mounts_under,
)

pytestmark = pytest.mark.usefixtures("root")


def test_a_refused_config_reaches_the_log_when_stderr_is_a_broken_pipe(tmp_path: Path) -> None:
    config = base_config(["true"])
    config["linux"]["sysctl"] = {"kernel.core_pattern": "|/tmp/pwned %p"}  # host-wide
    bundle = make_bundle(tmp_path, [], config)
    log = tmp_path / "log.json"
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([*RUNTIME, "--root", str(tmp_path / "state"), "--log", str(log),
                               "--log-format", "json", "create", "--bundle", str(bundle), "c1"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=write_end, timeout=60, cwd=REPO)
    finally:
        os.close(write_end)
    assert proc.returncode == 1
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert entries[-1]["level"] == "error"
    assert "kernel.core_pattern is not namespaced" in entries[-1]["msg"]
    assert not (tmp_path / "state" / "c1").exists()
    assert mounts_under(tmp_path) == []
    assert leftover_cgroups() == []
