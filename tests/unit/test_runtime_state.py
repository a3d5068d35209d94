"""Runtime state files and status derivation, and hook execution — no root needed."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from ociimg.errors import AlreadyExists, ContainerError, ContainerNotFound
from ociimg.runtime import hooks, state
from ociimg.runtime.state import ContainerState


def test_state_round_trip_and_listing(tmp_path: Path) -> None:
    state.make_state_dir(tmp_path, "c1")
    assert (tmp_path / "c1" / "exec.fifo").exists()
    assert oct((tmp_path / "c1" / "exec.fifo").stat().st_mode & 0o777) == "0o622"
    cst = ContainerState(id="c1", bundle="/b", pid=1234, pid_starttime=99,
                         annotations={"a": "b"}, cgroup={"kind": "v1"})
    state.save_state(tmp_path, cst)
    assert state.load_state(tmp_path, "c1") == cst
    assert state.list_ids(tmp_path) == ["c1"]
    with pytest.raises(AlreadyExists):
        state.make_state_dir(tmp_path, "c1")
    state.remove_state(tmp_path, "c1")
    with pytest.raises(ContainerNotFound):
        state.load_state(tmp_path, "c1")
    assert state.list_ids(tmp_path / "missing") == []


def test_unknown_fields_in_state_file_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "c1").mkdir()
    (tmp_path / "c1" / "state.json").write_text(json.dumps(
        {"id": "c1", "bundle": "/b", "future_field": 1}))
    assert state.load_state(tmp_path, "c1").bundle == "/b"
    (tmp_path / "c1" / "state.json").write_text("{broken")
    with pytest.raises(ContainerError, match="corrupt state"):
        state.load_state(tmp_path, "c1")


@pytest.mark.parametrize("bad", ["", "../x", "a/b", ".hidden", "a b", "x" * 1025, "abc\n",
                                 "-x", "+x", "_x", "é", "a:b"])
def test_container_ids_are_checked(bad: str) -> None:
    with pytest.raises(ContainerError, match="invalid container id"):
        state.check_id(bad)


@pytest.mark.parametrize("good", ["a", "C1", "web-1.2_x+y", "x" * 1024, "0"])
def test_valid_container_ids(good: str) -> None:
    state.check_id(good)


def test_status_is_derived_from_process_and_fifo(tmp_path: Path) -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        state.make_state_dir(tmp_path, "c1")
        cst = ContainerState(id="c1", bundle="/b", pid=child.pid,
                             pid_starttime=state.proc_starttime(child.pid) or 0)
        assert state.derive_status(tmp_path, cst) == "created"
        (tmp_path / "c1" / "exec.fifo").unlink()
        assert state.derive_status(tmp_path, cst) == "running"
        # Same pid, other start time: a recycled pid is not our container.
        recycled = ContainerState(id="c1", bundle="/b", pid=child.pid,
                                  pid_starttime=cst.pid_starttime + 1)
        assert state.derive_status(tmp_path, recycled) == "stopped"
        doc = state.oci_state(tmp_path, cst)
        assert doc["status"] == "running" and doc["pid"] == child.pid
    finally:
        child.kill()
        child.wait()
    assert state.derive_status(tmp_path, cst) == "stopped"
    assert state.oci_state(tmp_path, cst)["pid"] == 0


def test_zombie_counts_as_stopped(tmp_path: Path) -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        cst = ContainerState(id="z", bundle="/b", pid=pid, pid_starttime=0)
        cst.pid_starttime = state.proc_starttime(pid) or 0
        while state.proc_state(pid) not in ("Z", None):
            pass
        assert not state.init_alive(cst)
    finally:
        os.waitpid(pid, 0)


def test_hook_gets_state_on_stdin_and_args_env(tmp_path: Path) -> None:
    out = tmp_path / "out"
    script = f'cat > {out}; printf "\\n%s %s\\n" "$1" "$X" >> {out}'
    hook = {"path": "/bin/sh", "args": ["sh", "-c", script, "sh", "arg1"], "env": ["X=envval"]}
    hooks.run_hooks({"poststart": [hook]}, "poststart", {"id": "c1", "status": "running"})
    lines = out.read_text().splitlines()
    assert json.loads(lines[0]) == {"id": "c1", "status": "running"}
    assert lines[1] == "arg1 envval"


def test_failing_and_missing_hooks_raise() -> None:
    with pytest.raises(ContainerError, match="exit status 3"):
        hooks.run_hooks({"prestart": [{"path": "/bin/sh", "args": ["sh", "-c", "exit 3"]}]},
                        "prestart", {})
    with pytest.raises(ContainerError, match="exit status 127"):
        hooks.run_hooks({"prestart": [{"path": "/nonexistent/hook"}]}, "prestart", {})
    # A hook that ignores its stdin is fine.
    hooks.run_hooks({"prestart": [{"path": "/bin/true"}]}, "prestart", {"big": "x" * 200000})


def test_hook_timeout_kills() -> None:
    with pytest.raises(ContainerError, match="killed by SIGKILL"):
        hooks.run_hooks({"prestart": [{"path": "/bin/sleep", "args": ["sleep", "30"],
                                       "timeout": 1}]}, "prestart", {})
    with pytest.raises(ContainerError, match="timeout must be positive"):
        hooks.run_hooks({"prestart": [{"path": "/bin/true", "timeout": 0}]}, "prestart", {})


@pytest.mark.parametrize("stage", ["poststart", "poststop"])
def test_poststart_and_poststop_failures_warn_and_the_rest_run(
        stage: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """runtime-spec 1.2 config.md: "log a warning, but the remaining hooks and lifecycle
    continue as if the hook had succeeded"."""
    out = tmp_path / "out"
    ok = {"path": "/bin/sh", "args": ["sh", "-c", f"echo ran >> {out}"]}
    hooks.run_hooks({stage: [{"path": "/bin/false"}, ok, {"path": "/nonexistent"},
                             {"path": "/bin/true", "timeout": 0}, ok]}, stage, {})
    assert out.read_text() == "ran\nran\n"
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert [m.split(" ")[2].rstrip(":") for m in warned] == ["#0", "#2", "#3"], warned
