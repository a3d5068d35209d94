"""The `ociimg` command line end to end, as a user runs it: a real registry on loopback,
real overlay mounts, the built-in runtime. Each test checks what a person would see
(stdout, one-line errors, exit codes) and that nothing of ours is left mounted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.cli_helpers import assert_one_line_error, ociimg, ociimg_background
from tests.integration.runtime_helpers import mounts_under
from tests.waiting import wait_for_line

pytestmark = pytest.mark.usefixtures("root")


@pytest.fixture
def busybox(pushed_fixtures: dict[str, str]) -> str:
    return pushed_fixtures["busybox"]


def test_pull_then_images_and_inspect(ociroot: Path, busybox: str, fixture_layout: Path) -> None:
    out = json.loads(ociimg(ociroot, "pull", "--json", busybox).stdout)
    index = json.loads((fixture_layout / "index.json").read_text())
    expected = next(m["digest"] for m in index["manifests"]
                    if m["annotations"]["org.opencontainers.image.ref.name"] == "busybox")
    assert out["digest"] == expected  # the registry's digest, bytes kept as received
    names = [row["name"] for row in json.loads(ociimg(ociroot, "images", "--json").stdout)]
    assert busybox in names
    doc = json.loads(ociimg(ociroot, "inspect", "--json", busybox).stdout)
    assert doc["config"]["config"]["Cmd"] == ["/bin/sh"]
    assert len(doc["layers"]) == 1
    text = ociimg(ociroot, "inspect", busybox).stdout
    assert "Layers:       1" in text
    # A second pull downloads nothing and gives the same digest.
    again = json.loads(ociimg(ociroot, "pull", "--json", busybox).stdout)
    assert again["digest"] == expected
    assert "store is clean" in ociimg(ociroot, "fsck").stdout


def test_user_errors_are_one_line(ociroot: Path, registry, busybox: str) -> None:
    assert_one_line_error(ociimg(ociroot, "pull", f"{registry.host}/fixtures/busybox:nope",
                                 check=False), "nope")
    assert_one_line_error(ociimg(ociroot, "pull", f"{registry.host}/no/such/repo:1",
                                 check=False))
    assert_one_line_error(ociimg(ociroot, "pull", "Upper/Case", check=False), "Upper/Case")
    assert_one_line_error(ociimg(ociroot, "pull", "--retry-times", "1", "127.0.0.1:9/x:1",
                                 check=False), "127.0.0.1:9")
    assert_one_line_error(ociimg(ociroot, "inspect", "not-pulled:1", check=False), "not-pulled")
    assert_one_line_error(ociimg(ociroot, "run", "--memory", "lots", busybox, "true",
                                 check=False), "lots")
    # Nothing half-written: the store holds no blob and no tag for the failed pulls.
    assert json.loads(ociimg(ociroot, "images", "--json").stdout) == []


def test_unpack_bundle_runs_under_our_runtime(ociroot: Path, busybox: str,
                                             tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    ociimg(ociroot, "unpack", busybox, str(bundle), "echo", "hello")
    config = json.loads((bundle / "config.json").read_text())
    assert config["process"]["args"] == ["echo", "hello"]
    assert (bundle / "rootfs" / "bin" / "busybox").is_file()
    cid = f"t{os.getpid()}"
    proc = ociimg(ociroot, "runtime", "run", "--bundle", str(bundle), cid)
    assert proc.stdout == "hello\n"
    # An existing bundle is not overwritten without --force.
    assert_one_line_error(ociimg(ociroot, "unpack", busybox, str(bundle), check=False),
                          "--force")
    ociimg(ociroot, "unpack", "--force", busybox, str(bundle))


def test_unpack_overlay_and_umount(ociroot: Path, busybox: str, tmp_path: Path) -> None:
    bundle = tmp_path / "ovl"
    ociimg(ociroot, "unpack", "--overlay", busybox, str(bundle))
    assert mounts_under(bundle) == [str(bundle / "rootfs")]
    assert (bundle / "rootfs" / "bin" / "busybox").is_file()
    ociimg(ociroot, "umount", str(bundle))
    assert mounts_under(bundle) == []


def test_run_attached_exit_codes_and_isolation(ociroot: Path, busybox: str) -> None:
    ociimg(ociroot, "pull", "-q", busybox)
    assert ociimg(ociroot, "run", "--rm", busybox, "echo", "hi").stdout == "hi\n"
    proc = ociimg(ociroot, "run", "--rm", busybox, "sh", "-c", "exit 3", check=False)
    assert proc.returncode == 3
    proc = ociimg(ociroot, "run", "--rm", busybox, "sh", "-c", "echo $$")
    assert proc.stdout == "1\n"  # the program is PID 1 of its own pid namespace
    proc = ociimg(ociroot, "run", "--rm", "--hostname", "box", busybox, "hostname")
    assert proc.stdout == "box\n"
    missing = ociimg(ociroot, "run", "--rm", busybox, "/no/such/program", check=False)
    assert missing.returncode == 127
    assert "/no/such/program" in missing.stderr and "Traceback" not in missing.stderr
    proc = ociimg(ociroot, "run", "--rm", "-e", "GREETING=hey", "-w", "/tmp", busybox,
                  "sh", "-c", "echo $GREETING; pwd")
    assert proc.stdout == "hey\n/tmp\n"
    assert json.loads(ociimg(ociroot, "ps", "-a", "--json").stdout) == []


def test_run_detached_logs_stop_rm(ociroot: Path, busybox: str) -> None:
    # PID 1 of a pid namespace ignores signals it has no handler for: trap SIGTERM.
    cid = ociimg(ociroot, "run", "-d", "--name", "web", busybox, "sh", "-c",
                 "trap 'exit 7' TERM; echo started; while :; do sleep 0.1; done").stdout.strip()
    assert len(cid) == 64
    deadline = time.monotonic() + 10
    while "started" not in ociimg(ociroot, "logs", "web").stdout:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    rows = json.loads(ociimg(ociroot, "ps", "--json").stdout)
    assert [(r["name"], r["status"]) for r in rows] == [("web", "running")]
    assert_one_line_error(ociimg(ociroot, "run", "-d", "--name", "web", busybox, "true",
                                 check=False), "web")
    assert_one_line_error(ociimg(ociroot, "rm", "web", check=False), "running")
    ociimg(ociroot, "stop", "--time", "5", "web")
    deadline = time.monotonic() + 10
    while True:
        rows = json.loads(ociimg(ociroot, "ps", "-a", "--json").stdout)
        if rows[0]["status"] == "exited":
            break
        assert time.monotonic() < deadline, rows
        time.sleep(0.1)
    assert rows[0]["exitCode"] == 7  # the StopSignal reached the program's handler
    ociimg(ociroot, "rm", cid[:12])
    assert json.loads(ociimg(ociroot, "ps", "-a", "--json").stdout) == []


def test_stop_kills_a_program_that_ignores_sigterm(ociroot: Path, busybox: str) -> None:
    ociimg(ociroot, "run", "-d", "--name", "stubborn", busybox, "sleep", "300")
    ociimg(ociroot, "stop", "--time", "0.5", "stubborn")
    deadline = time.monotonic() + 10
    while (row := json.loads(ociimg(ociroot, "ps", "-a", "--json").stdout)[0])["status"] \
            != "exited":
        assert time.monotonic() < deadline, row
        time.sleep(0.1)
    assert row["exitCode"] == 128 + 9
    ociimg(ociroot, "rm", "stubborn")


def test_rmi_and_gc_free_space(ociroot: Path, busybox: str) -> None:
    ociimg(ociroot, "pull", "-q", busybox)
    ociimg(ociroot, "run", "--rm", busybox, "true")  # makes snapshots
    ociimg(ociroot, "rmi", "--no-prune", busybox)
    report = json.loads(ociimg(ociroot, "gc", "--json").stdout)
    assert report["removedBlobs"] >= 3 and report["bytesFreed"] > 0
    assert report["removedSnapshots"] == 1
    assert not list((ociroot / "store" / "blobs" / "sha256").iterdir())


def test_init_reaps_zombies_and_forwards_signals(ociroot: Path, busybox: str) -> None:
    # Without --init, an orphan zombie stays (the shell as PID 1 never waits for it);
    # catatonit as PID 1 reaps it. The orphan: a subshell whose child exits at once.
    # The orphan says its pid; the script then waits (bounded) for /proc/PID to go,
    # which only reaping does (a zombie keeps it): its stat line is the failure.
    script = ("(sh -c 'echo $$ > /tmp/orphan' &); "
              "n=0; until [ -s /tmp/orphan ] || [ $n = 1000 ]; do sleep 0.01; n=$((n+1)); done; "
              "pid=$(cat /tmp/orphan); "
              "n=0; while [ -e /proc/$pid ] && [ $n -lt 1000 ]; do sleep 0.01; n=$((n+1)); done; "
              "cat /proc/$pid/stat 2>/dev/null || echo reaped")
    proc = ociimg(ociroot, "run", "--rm", "--init", busybox, "sh", "-c", script)
    assert proc.stdout.strip() == "reaped", proc.stdout
    proc = ociimg(ociroot, "run", "--rm", "--init", busybox, "sh", "-c",
                  "echo $$; cat /proc/1/cmdline")
    pid, cmdline = proc.stdout.split("\n", 1)
    assert pid != "1" and cmdline.startswith("/run/ociimg-init")
    # SIGTERM reaches a program that is not PID 1 (catatonit forwards it): stop is quick.
    ociimg(ociroot, "run", "-d", "--init", "--name", "i", busybox, "sleep", "300")
    ociimg(ociroot, "stop", "--time", "30", "i")
    row = json.loads(ociimg(ociroot, "ps", "-a", "--json").stdout)[0]
    assert row["exitCode"] == 128 + 15, row
    ociimg(ociroot, "rm", "i")


def test_parallel_pulls_of_overlapping_images(ociroot: Path,
                                              pushed_fixtures: dict[str, str]) -> None:
    """Three `ociimg pull` processes at once, two of the same image and one sharing its
    base layer: all succeed and the store is consistent."""
    env = {**os.environ, "OCIIMG_ROOT": str(ociroot)}
    refs = [pushed_fixtures["busybox"], pushed_fixtures["multilayer"], pushed_fixtures["busybox"]]
    procs = [subprocess.Popen([sys.executable, "-m", "ociimg", "pull", "-q", ref], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for ref in refs]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    names = {row["name"] for row in json.loads(ociimg(ociroot, "images", "--json").stdout)}
    assert names == {pushed_fixtures["busybox"], pushed_fixtures["multilayer"]}
    assert "store is clean" in ociimg(ociroot, "fsck").stdout
    assert not list((ociroot / "store" / "ingest").glob("*/data"))


@pytest.mark.parametrize("overlay", [False, True])
def test_unpack_of_a_corrupt_layer_leaves_nothing(ociroot: Path, busybox: str, tmp_path: Path,
                                                  overlay: bool) -> None:
    doc = json.loads(ociimg(ociroot, "pull", "--json", busybox).stdout)
    manifest = json.loads(ociimg(ociroot, "inspect", "--json", doc["reference"]).stdout)
    layer = ociroot / "store" / "blobs" / "sha256" / manifest["layers"][0]["digest"][7:]
    layer.chmod(0o644)
    data = bytearray(layer.read_bytes())
    data[len(data) // 2] ^= 0xFF
    layer.write_bytes(bytes(data))
    dest = tmp_path / "out" / "bundle"
    args = ["unpack", *(["--overlay"] if overlay else []), busybox, str(dest)]
    assert_one_line_error(ociimg(ociroot, *args, check=False), "sha256:")
    assert not dest.exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []
    snapshots = ociroot / "snapshots"
    assert not snapshots.exists() or not [p for p in snapshots.iterdir()
                                          if not p.name.startswith(".locks")]
    # fsck names the corrupt blob; after --remove, a new pull repairs the image.
    assert manifest["layers"][0]["digest"] in ociimg(ociroot, "fsck", check=False).stdout
    ociimg(ociroot, "fsck", "--remove", check=False)
    ociimg(ociroot, "pull", "-q", busybox)
    ociimg(ociroot, "unpack", *(["--overlay"] if overlay else []), busybox, str(dest))
    if overlay:
        ociimg(ociroot, "umount", str(dest))


def test_resource_limits_reach_the_container(ociroot: Path, busybox: str) -> None:
    # Past --memory the kernel OOM-kills the program; ociimg reports 128+SIGKILL.
    proc = ociimg(ociroot, "run", "--rm", "--memory", "32m", busybox, "dd", "if=/dev/zero",
                  "of=/dev/null", "bs=128M", "count=1", check=False)
    assert proc.returncode == 137, proc.stderr
    # A fork bomb stops at --pids-limit: the shell cannot fork its 40 sleepers and dies
    # ("can't fork"), where the same script under a roomy limit gets them all.
    bomb = "n=0; while [ $n -lt 40 ]; do sleep 2 & n=$((n+1)); done; echo started"
    proc = ociimg(ociroot, "run", "--rm", "--pids-limit", "8", busybox, "sh", "-c", bomb,
                  check=False)
    assert proc.returncode != 0 and "started" not in proc.stdout, proc
    proc = ociimg(ociroot, "run", "--rm", "--pids-limit", "64", busybox, "sh", "-c", bomb)
    assert proc.stdout == "started\n"
    # --cpus 0.5 is a CFS quota of half the period.
    proc = ociimg(ociroot, "run", "--rm", "--cpus", "0.5", busybox, "sh", "-c",
                  "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us"
                  " 2>/dev/null || cat /sys/fs/cgroup/cpu.max")
    assert proc.stdout.split() == ["50000", "100000"]  # v1 quota+period, or v2 cpu.max


def test_detached_container_cannot_touch_its_host_log_file(ociroot: Path, busybox: str) -> None:
    # Its stdout/stderr are a pipe the monitor copies into the log: through /proc/self/fd
    # the container reaches the pipe, not the host file (which it could otherwise make a
    # setuid-root binary).
    ociimg(ociroot, "run", "-d", "--name", "sly", busybox, "sh", "-c",
           "chmod 4777 /proc/self/fd/1; chown 1:1 /proc/self/fd/2; : > /proc/self/fd/1; "
           "echo out; echo err >&2; exit 3")
    deadline = time.monotonic() + 10
    while (row := json.loads(ociimg(ociroot, "ps", "-a", "--json").stdout)[0])["status"] \
            != "exited":
        assert time.monotonic() < deadline, row
        time.sleep(0.1)
    assert row["exitCode"] == 3
    cid = row["id"]
    log = ociroot / "containers" / cid / "ctr.log"
    st = log.stat()
    assert (oct(st.st_mode & 0o7777), st.st_uid, st.st_gid) == ("0o600", 0, 0)
    logs = ociimg(ociroot, "logs", "sly")
    assert (logs.stdout, logs.stderr) == ("out\n", "err\n")
    ociimg(ociroot, "rm", "sly")


def test_attached_run_and_exec_never_hand_the_callers_files_to_the_container(
        ociroot: Path, fixture_layout: Path, tmp_path: Path) -> None:
    # `ociimg run IMAGE > file` and `ociimg exec ... > file`: the container writes into a
    # pipe the CLI copies, so it cannot chmod/chown the caller's file through /proc/self/fd.
    image = f"oci:{fixture_layout}:busybox"
    attack = "chmod 4777 /proc/self/fd/1 /proc/self/fd/2; chown 1:1 /proc/self/fd/1; " \
             "echo out; echo err >&2"
    env = {**os.environ, "OCIIMG_ROOT": str(ociroot)}
    out, err = tmp_path / "out", tmp_path / "err"

    def redirected(*args: str) -> int:
        with open(out, "wb") as o, open(err, "wb") as e:
            return subprocess.run([sys.executable, "-m", "ociimg", *args], env=env,
                                  stdout=o, stderr=e, stdin=subprocess.DEVNULL,
                                  timeout=60).returncode

    def untouched() -> None:
        for f in (out, err):
            st = f.stat()
            assert (oct(st.st_mode & 0o7777), st.st_uid) == ("0o644", 0), f
        assert (out.read_text(), err.read_text()) == ("out\n", "err\n")

    os.umask(0o022)
    assert redirected("run", "--rm", image, "sh", "-c", attack) == 0
    untouched()
    ociimg(ociroot, "run", "-d", "--name", "box", image, "sleep", "300")
    try:
        assert redirected("exec", "box", "sh", "-c", attack) == 0
        untouched()
    finally:
        ociimg(ociroot, "rm", "-f", "box", check=False)


def test_logs_follow_until_the_container_exits(ociroot: Path, busybox: str) -> None:
    # "two" comes only once the test saw "one" through --follow: it follows a running
    # container, then ends when the container exits.
    ociimg(ociroot, "run", "-d", "--name", "chatty", busybox, "sh", "-c",
           "echo one; until [ -e /tmp/go ]; do sleep 0.01; done; echo two; exit 4")
    follow = ociimg_background(ociroot, "logs", "--follow", "chatty")
    try:
        seen = wait_for_line(follow, "one")
        ociimg(ociroot, "exec", "chatty", "touch", "/tmp/go")
        rest, err = follow.communicate(timeout=30)
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.communicate()
    assert (seen + rest.decode(), follow.returncode) == ("one\ntwo\n", 0), err
    row = json.loads(ociimg(ociroot, "ps", "-a", "--json").stdout)[0]
    assert (row["status"], row["exitCode"]) == ("exited", 4)
    ociimg(ociroot, "rm", "chatty")


def test_gc_does_not_run_while_a_container_is_being_created(ociroot: Path,
                                                            fixture_layout: Path) -> None:
    # An oci: image is not in the store: until the new container's meta.json exists, only
    # the creation lock keeps gc from deleting the snapshots under its rootfs.
    from ociimg.containers.store import containers_locked
    ociimg(ociroot, "run", "--rm", f"oci:{fixture_layout}:busybox", "true")
    snapshots = [p for p in (ociroot / "snapshots").iterdir()
                 if not p.name.startswith(".") and p.name != "active"]  # committed ones
    assert snapshots
    with containers_locked(ociroot, shared=True):  # a `run` between prepare and rename
        assert_one_line_error(ociimg(ociroot, "gc", check=False), "held by another process")
        assert all(p.is_dir() for p in snapshots)
    out = ociimg(ociroot, "gc").stdout
    assert f"Deleted {len(snapshots)} snapshots" in out
    assert not any(p.exists() for p in snapshots)


def test_exec_runs_in_the_container(ociroot: Path, fixture_layout: Path) -> None:
    image = f"oci:{fixture_layout}:busybox"
    ociimg(ociroot, "run", "-d", "--name", "box", image, "sleep", "300")
    try:
        proc = ociimg(ociroot, "exec", "-e", "X=42", "-w", "/tmp", "-u", "nobody", "box",
                      "sh", "-c", 'echo "$X $(pwd) $(id -u) $$"; exit 7', check=False)
        assert proc.returncode == 7, proc.stderr
        x, cwd, uid, pid = proc.stdout.split()
        assert (x, cwd, uid) == ("42", "/tmp", "65534") and pid != "1"
        # Its pid namespace: PID 1 is the container's program.
        assert ociimg(ociroot, "exec", "box", "cat", "/proc/1/cmdline").stdout \
            .startswith("sleep\0")
        assert_one_line_error(ociimg(ociroot, "exec", "-u", "nosuchuser", "box", "true",
                                     check=False), "nosuchuser")
    finally:
        ociimg(ociroot, "rm", "-f", "box", check=False)
    assert_one_line_error(ociimg(ociroot, "exec", "box", "true", check=False),
                          "no such container")
    ociimg(ociroot, "run", "-d", "--name", "done", image, "true")
    deadline = time.monotonic() + 20
    while "Exited" not in ociimg(ociroot, "ps", "-a").stdout and time.monotonic() < deadline:
        time.sleep(0.1)
    assert_one_line_error(ociimg(ociroot, "exec", "done", "true", check=False), "not running")
    ociimg(ociroot, "rm", "done")
