"""`ociimg run --runtime`: the same container commands through the built-in runtime and
through Debian's runc, each keeping its state under the ociimg runtime root; and `run -it`
on a real pty."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need
from tests.integration.cli_helpers import assert_one_line_error, ociimg
from tests.integration.runtime_helpers import REPO, read_until_hangup

pytestmark = pytest.mark.usefixtures("root")

RUNC = "/usr/sbin/runc"


@pytest.fixture
def runtime_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "rt"
    monkeypatch.setenv("OCIIMG_RUNTIME_ROOT", str(root))
    yield root
    assert not [p for p in root.rglob("state.json")], "runtime state left behind"


@pytest.mark.parametrize("runtime", ["builtin", "runc", RUNC])
def test_run_exec_stop_rm_through_each_runtime(ociroot: Path, fixture_layout: Path,
                                              runtime_root: Path, runtime: str) -> None:
    if runtime != "builtin":
        need(os.access(RUNC, os.X_OK), "runc missing: apt-get install runc")
    image = f"oci:{fixture_layout}:busybox"
    run = ("run", "--runtime", runtime)
    proc = ociimg(ociroot, *run, "--rm", image, "sh", "-c", "echo $$; echo err >&2; exit 3",
                  check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "1\n", "err\n")
    # No host fd at all, /dev/null included: root inside could chmod it through
    # /proc/self/fd (the host's /dev/null, for every process of the host).
    kinds = "stat -L -c %F /proc/self/fd/0 /proc/self/fd/1 /proc/self/fd/2"
    assert ociimg(ociroot, *run, "--rm", image, "sh", "-c", kinds).stdout == "fifo\n" * 3
    cid = ociimg(ociroot, *run, "-d", image, "sh", "-c", f"{kinds}; sleep 300").stdout.strip()
    assert ociimg(ociroot, "exec", cid, "sh", "-c", kinds).stdout == "fifo\n" * 3
    ociimg(ociroot, "stop", "--time", "0", cid)
    assert ociimg(ociroot, "logs", cid).stdout == "fifo\n" * 3  # detached: its log
    ociimg(ociroot, "rm", cid)
    missing = ociimg(ociroot, *run, "--rm", image, "/no/such/program", check=False)
    assert missing.returncode == 127 and "/no/such/program" in missing.stderr
    cid = ociimg(ociroot, *run, "-d", "--name", "web", image, "sh", "-c",
                 "trap 'exit 7' TERM; echo started; while :; do sleep 0.1; done").stdout.strip()
    try:
        meta = json.loads((ociroot / "containers" / cid / "meta.json").read_text())
        state_root = Path(meta["runtime"]["root"])
        assert state_root.is_relative_to(runtime_root)
        assert (state_root / cid / "state.json").exists() if runtime != "builtin" \
            else (runtime_root / cid / "state.json").exists()
        proc = ociimg(ociroot, "exec", "-u", "nobody", "-e", "X=1", "web", "sh", "-c",
                      'echo "$X $(id -u) $$"; exit 5', check=False)
        assert proc.returncode == 5, proc.stderr
        x, uid, pid = proc.stdout.split()
        assert (x, uid) == ("1", "65534") and pid != "1"
        assert_one_line_error(ociimg(ociroot, "rm", "web", check=False), "running")
        ociimg(ociroot, "stop", "--time", "5", "web")
        row = json.loads(ociimg(ociroot, "ps", "-a", "--json").stdout)[0]
        assert (row["status"], row["exitCode"]) == ("exited", 7)
        assert ociimg(ociroot, "logs", "web").stdout == "started\n"
    finally:
        ociimg(ociroot, "rm", "-f", "web", check=False)
    assert json.loads(ociimg(ociroot, "ps", "-a", "--json").stdout) == []


def test_unknown_runtime_is_a_one_line_error(ociroot: Path, fixture_layout: Path,
                                             runtime_root: Path) -> None:
    assert_one_line_error(ociimg(ociroot, "run", "--runtime", "no-such-runtime-x",
                                 f"oci:{fixture_layout}:busybox", "true", check=False),
                          "no-such-runtime-x")
    assert json.loads(ociimg(ociroot, "ps", "-a", "--json").stdout) == []


@pytest.mark.parametrize("runtime", ["builtin", "runc"])
def test_run_it_on_a_terminal(ociroot: Path, fixture_layout: Path, runtime_root: Path,
                              runtime: str) -> None:
    if runtime != "builtin":
        need(os.access(RUNC, os.X_OK), "runc missing: apt-get install runc")
    master, slave = pty.openpty()
    env = {**os.environ, "OCIIMG_ROOT": str(ociroot), "PYTHONPATH": REPO}
    cli = subprocess.Popen(
        [sys.executable, "-m", "ociimg", "run", "--rm", "-it", "--runtime", runtime,
         f"oci:{fixture_layout}:busybox", "sh", "-c", "tty; read x; echo got $x; exit 4"],
        env=env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    os.write(master, b"hello\n")  # typed ahead, before the terminal is raw: kept
    try:
        out = read_until_hangup(master, time.monotonic() + 60)
        assert cli.wait(timeout=60) == 4
    finally:
        cli.kill()
    assert b"/dev/pts/" in out and b"got hello" in out, out


@pytest.mark.parametrize("runtime", [None, "runc"])
def test_pause_resume_kill_through_the_library(ociroot: Path, fixture_layout: Path,
                                               runtime_root: Path, runtime: str | None) -> None:
    if runtime is not None:
        need(os.access(RUNC, os.X_OK), "runc missing: apt-get install runc")
    from ociimg.bundle import BundleOptions
    from ociimg.commands.resolve import resolve_image
    from ociimg.containers import ContainerManager, CreateOptions
    manager = ContainerManager(ociroot, runtime_root=runtime_root)
    image = resolve_image(f"oci:{fixture_layout}:busybox", ociroot)
    c = manager.create(image, CreateOptions(bundle=BundleOptions(args=["sleep", "300"]),
                                            runtime=runtime))
    try:
        assert manager.status(c).status == "configured"
        pid = manager.start(c)
        assert manager.status(c).status == "running" and manager.status(c).pid == pid
        manager.pause(c)
        assert manager.status(c).status == "paused"
        assert manager.wait(c, timeout=0.2) is None
        manager.resume(c)
        assert manager.status(c).status == "running"
        manager.kill(c, 9)
        assert manager.wait(c, timeout=30) == 128 + 9
    finally:
        manager.remove(c, force=True)
