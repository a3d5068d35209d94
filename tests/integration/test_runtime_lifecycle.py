"""ociimg-runtime lifecycle on the real kernel (as root): create/start/state/kill/delete,
run exit codes, create-time errors, hooks, pid files, surviving the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from ociimg.oskit.mountinfo import parse_mountinfo, read_mountinfo
from tests import ocischema
from tests.conftest import need
from tests.integration.runtime_helpers import (
    REPO,
    RUNTIME,
    base_config,
    read_until_hangup,
    runtime,
    state_of,
    write_config,
)
from tests.waiting import wait_for_line


def set_args(bundle: Path, args: list[str], **overrides: object) -> dict:
    config = base_config(args, **overrides)
    write_config(bundle, config)
    return config


def wait_for(cond, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.05)


def test_run_pid1_hostname_and_only_loopback(runtime_env: tuple[Path, Path]) -> None:
    bundle, state_root = runtime_env
    set_args(bundle, ["sh", "-c", "echo pid=$$; hostname; ip -o link | cut -d: -f2"])
    proc = runtime(state_root, "run", "--bundle", str(bundle), "c1")
    assert proc.returncode == 0, proc.stderr
    lines = [x.strip() for x in proc.stdout.splitlines()]
    assert lines == ["pid=1", "ociimg-test", "lo"]


def test_loopback_is_up_before_the_program_runs(runtime_env: tuple[Path, Path]) -> None:
    # lo is brought up by the intermediate while the init mounts; start must wait for it.
    bundle, state_root = runtime_env
    set_args(bundle, ["cat", "/sys/class/net/lo/flags"])
    proc = runtime(state_root, "run", "--bundle", str(bundle), "c1")
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.strip(), 16) & 0x1, proc.stdout  # IFF_UP


def test_own_mount_table_and_nothing_leaks_to_host(runtime_env: tuple[Path, Path]) -> None:
    bundle, state_root = runtime_env
    set_args(bundle, ["cat", "/proc/self/mountinfo"])
    proc = runtime(state_root, "run", "-b", str(bundle), "c1")
    assert proc.returncode == 0, proc.stderr
    points = [m.mount_point for m in parse_mountinfo(proc.stdout)]
    assert points[0] == "/"
    assert {"/proc", "/dev", "/dev/pts", "/sys"} <= set(points)
    # None of the host's other mounts (e.g. /work) is visible inside.
    host_points = {m.mount_point for m in read_mountinfo()}
    extra = {p for p in host_points
             if p != "/" and not p.startswith(("/proc", "/dev", "/sys", "/tmp", "/run"))}
    assert extra and not extra & set(points)


@pytest.mark.parametrize("code", [0, 3, 42])
def test_run_returns_exit_code(runtime_env: tuple[Path, Path], code: int) -> None:
    bundle, state_root = runtime_env
    set_args(bundle, ["sh", "-c", f"exit {code}"])
    assert runtime(state_root, "run", "-b", str(bundle), "c1").returncode == code


def test_run_killed_by_signal_returns_128_plus_n(runtime_env: tuple[Path, Path]) -> None:
    bundle, state_root = runtime_env
    set_args(bundle, ["sleep", "100"])
    proc = subprocess.Popen([*RUNTIME, "--root", str(state_root), "run", "-b", str(bundle),
                             "c1"], cwd=REPO)
    try:
        wait_for(lambda: (state_root / "c1" / "state.json").exists()
                 and state_of(state_root, "c1")["status"] == "running")
        runtime(state_root, "kill", "c1", "KILL", check=True)
        assert proc.wait(timeout=30) == 137
    finally:
        proc.kill()
        proc.wait()


def test_create_start_state_kill_delete(runtime_env: tuple[Path, Path], tmp_path: Path) -> None:
    bundle, state_root = runtime_env
    set_args(bundle, ["sh", "-c", "echo started > /tmp/marker; exec sleep 100"])
    pid_file = tmp_path / "pid"
    runtime(state_root, "create", "--bundle", str(bundle), "--pid-file", str(pid_file), "c1",
            check=True)
    st = state_of(state_root, "c1")
    assert st["status"] == "created"
    assert st["id"] == "c1" and st["bundle"] == str(bundle)
    assert int(pid_file.read_text()) == st["pid"]
    # Created: the program has not run yet.
    assert not (bundle / "rootfs" / "tmp" / "marker").exists()
    assert runtime(state_root, "start", "c1").returncode == 0
    wait_for(lambda: (bundle / "rootfs" / "tmp" / "marker").exists())
    assert state_of(state_root, "c1")["status"] == "running"
    second = runtime(state_root, "start", "c1")
    assert second.returncode != 0 and "not created" in second.stderr
    refused = runtime(state_root, "delete", "c1")
    assert refused.returncode != 0 and "running" in refused.stderr
    runtime(state_root, "kill", "c1", "KILL", check=True)
    wait_for(lambda: state_of(state_root, "c1")["status"] == "stopped")
    runtime(state_root, "delete", "c1", check=True)
    gone = runtime(state_root, "state", "c1")
    assert gone.returncode != 0 and "does not exist" in gone.stderr
    assert not os.path.exists(f"/proc/{st['pid']}") or \
        open(f"/proc/{st['pid']}/stat").read().split()[2] in ("Z", "X") or \
        int(open(f"/proc/{st['pid']}/stat").read().split()[21]) != 0


def test_force_delete_created_container_kills_it(runtime_env: tuple[Path, Path]) -> None:
    bundle, state_root = runtime_env
    set_args(bundle, ["sleep", "100"])
    runtime(state_root, "create", "-b", str(bundle), "c1", check=True)
    pid = state_of(state_root, "c1")["pid"]
    runtime(state_root, "delete", "--force", "c1", check=True)
    wait_for(lambda: _dead(pid))


def _dead(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_missing_executable_fails_at_create(runtime_env: tuple[Path, Path]) -> None:
    bundle, state_root = runtime_env
    set_args(bundle, ["no-such-program"])
    proc = runtime(state_root, "create", "-b", str(bundle), "c1")
    assert proc.returncode == 127
    assert "no-such-program" in proc.stderr and "not found" in proc.stderr
    assert not (state_root / "c1").exists()
    assert runtime(state_root, "run", "-b", str(bundle), "c2").returncode == 127


def test_duplicate_id_is_refused(runtime_env: tuple[Path, Path]) -> None:
    bundle, state_root = runtime_env
    set_args(bundle, ["sleep", "100"])
    runtime(state_root, "create", "-b", str(bundle), "c1", check=True)
    again = runtime(state_root, "create", "-b", str(bundle), "c1")
    assert again.returncode != 0 and "already exists" in again.stderr
    assert state_of(state_root, "c1")["status"] == "created"


def test_hooks_receive_state_on_stdin(runtime_env: tuple[Path, Path], tmp_path: Path) -> None:
    bundle, state_root = runtime_env
    out = tmp_path / "hooks"
    out.mkdir()

    def hook(name: str) -> dict:
        return {"path": "/bin/sh", "args": ["sh", "-c", f"cat > {out}/{name}"]}
    set_args(bundle, ["true"], hooks={
        "createRuntime": [hook("createRuntime")],
        "createContainer": [hook("createContainer")],
        "poststart": [hook("poststart")],
        "poststop": [hook("poststop")],
    })
    assert runtime(state_root, "run", "-b", str(bundle), "c1").returncode == 0
    for name in ("createRuntime", "createContainer", "poststart", "poststop"):
        doc = json.loads((out / name).read_text())
        assert doc["id"] == "c1" and doc["bundle"] == str(bundle), name
        assert doc["pid"] > 1 and doc["ociVersion"].startswith("1.")


def test_failing_create_hook_aborts_and_cleans_up(runtime_env: tuple[Path, Path]) -> None:
    bundle, state_root = runtime_env
    set_args(bundle, ["true"], hooks={"createRuntime": [{"path": "/bin/false"}]})
    proc = runtime(state_root, "create", "-b", str(bundle), "c1")
    assert proc.returncode != 0 and "createRuntime hook" in proc.stderr
    assert not (state_root / "c1").exists()


def test_runtime_killed_container_survives(runtime_env: tuple[Path, Path]) -> None:
    bundle, state_root = runtime_env
    set_args(bundle, ["sleep", "100"])
    proc = subprocess.Popen([*RUNTIME, "--root", str(state_root), "run", "-b", str(bundle),
                             "c1"], cwd=REPO)
    wait_for(lambda: (state_root / "c1" / "state.json").exists()
             and state_of(state_root, "c1")["status"] == "running")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    st = state_of(state_root, "c1")
    assert st["status"] == "running"
    runtime(state_root, "kill", "c1", "9", check=True)
    wait_for(lambda: state_of(state_root, "c1")["status"] == "stopped")
    runtime(state_root, "delete", "c1", check=True)


def test_rlimit_above_host_hard_limit_is_reported(runtime_env: tuple[Path, Path]) -> None:
    bundle, state_root = runtime_env
    import resource
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    config = base_config(["true"])
    config["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": hard * 4,
                                     "hard": hard * 4}]
    write_config(bundle, config)
    proc = runtime(state_root, "run", "-b", str(bundle), "c1")
    need(proc.returncode != 0, "this host may raise RLIMIT_NOFILE (has CAP_SYS_RESOURCE)")
    assert "RLIMIT_NOFILE" in proc.stderr and str(hard) in proc.stderr
    assert not (state_root / "c1").exists()


def test_rlimit_lowered_is_visible(runtime_env: tuple[Path, Path]) -> None:
    bundle, state_root = runtime_env
    config = base_config(["sh", "-c", "ulimit -n"])
    config["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 321, "hard": 512}]
    write_config(bundle, config)
    proc = runtime(state_root, "run", "-b", str(bundle), "c1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "321"


def test_user_cwd_env(runtime_env: tuple[Path, Path]) -> None:
    bundle, state_root = runtime_env
    config = base_config(["sh", "-c", "id -u; id -g; pwd; echo $FOO"])
    config["process"].update(user={"uid": 65534, "gid": 65534}, cwd="/tmp",
                             env=config["process"]["env"] + ["FOO=bar"])
    write_config(bundle, config)
    proc = runtime(state_root, "run", "-b", str(bundle), "c1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["65534", "65534", "/tmp", "bar"]


def test_list_and_ps(runtime_env: tuple[Path, Path]) -> None:
    bundle, state_root = runtime_env
    set_args(bundle, ["sleep", "100"])
    runtime(state_root, "create", "-b", str(bundle), "c1", check=True)
    items = json.loads(runtime(state_root, "list", "--format", "json", check=True).stdout)
    assert [(i["id"], i["status"]) for i in items] == [("c1", "created")]
    assert runtime(state_root, "list", "-q", check=True).stdout.split() == ["c1"]
    pids = json.loads(runtime(state_root, "ps", "--format", "json", "c1", check=True).stdout)
    assert state_of(state_root, "c1")["pid"] in pids


def test_unknown_container_and_bad_signal(runtime_env: tuple[Path, Path]) -> None:
    _, state_root = runtime_env
    proc = runtime(state_root, "kill", "nope", "KILL")
    assert proc.returncode != 0 and "does not exist" in proc.stderr
    assert runtime(state_root, "delete", "-f", "nope").returncode == 0
    bad = runtime(state_root, "kill", "nope", "SIGNOPE")
    assert bad.returncode != 0


def test_log_format_json(runtime_env: tuple[Path, Path], tmp_path: Path) -> None:
    _, state_root = runtime_env
    log = tmp_path / "log.json"
    subprocess.run([*RUNTIME, "--root", str(state_root), "--log", str(log), "--log-format",
                    "json", "state", "nope"], capture_output=True, cwd=REPO)
    entry = json.loads(log.read_text().splitlines()[-1])
    # runc's words, without the id (containerd shows the last error entry as it is)
    assert entry == {"level": "error", "msg": "container does not exist",
                     "time": entry["time"]}


def test_version_and_features() -> None:
    out = subprocess.run([*RUNTIME, "--version"], capture_output=True, text=True, check=True,
                         cwd=REPO).stdout
    assert "ociimg-runtime" in out and "spec" in out
    feats = json.loads(subprocess.run([*RUNTIME, "features"], capture_output=True, text=True,
                                      check=True, cwd=REPO).stdout)
    assert feats["ociVersionMin"].startswith("1.") and "linux" in feats
    assert "mount" in feats["linux"]["namespaces"]


def test_exec_joins_namespaces_and_returns_code(runtime_env: tuple[Path, Path]) -> None:
    bundle, state_root = runtime_env
    set_args(bundle, ["sleep", "100"])
    runtime(state_root, "run", "-d", "-b", str(bundle), "c1", check=True)
    proc = runtime(state_root, "exec", "c1", "sh", "-c",
                   "echo pid=$$; hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; "
                   "grep NoNewPrivs /proc/self/status; exit 7")
    assert proc.returncode == 7, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] != "pid=1" and lines[1] == "ociimg-test"
    assert lines[2].strip() == "sleep 100" and lines[3].split() == ["NoNewPrivs:", "1"]
    who = runtime(state_root, "exec", "--user", "65534:65534", "--cwd", "/tmp", "c1",
                  "sh", "-c", "id -u; pwd", check=True)
    assert who.stdout.split() == ["65534", "/tmp"]
    missing = runtime(state_root, "exec", "c1", "no-such-program")
    assert missing.returncode == 127 and "not found" in missing.stderr
    runtime(state_root, "delete", "-f", "c1", check=True)


def test_console_socket_receives_pty_master(runtime_env: tuple[Path, Path], tmp_path: Path) -> None:
    import socket
    import threading
    bundle, state_root = runtime_env
    config = base_config(["sh", "-c", "tty; exit 5"])
    config["process"]["terminal"] = True
    write_config(bundle, config)
    sock_path = str(tmp_path / "console.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path)
    server.listen(1)
    got: dict = {}

    def receive() -> None:
        conn, _ = server.accept()
        msg, fds, _, _ = socket.recv_fds(conn, 4096, 1)
        got["name"], got["fd"] = msg.decode(), fds[0]
        conn.close()
    thread = threading.Thread(target=receive)
    thread.start()
    runtime(state_root, "create", "-b", str(bundle), "--console-socket", sock_path, "c1",
            check=True)
    thread.join(timeout=30)
    server.close()
    assert got["name"].startswith("/dev/pts/")
    runtime(state_root, "start", "c1", check=True)
    out = b""
    while True:
        try:
            data = os.read(got["fd"], 4096)
        except OSError:  # EIO once the container side closed
            break
        if not data:
            break
        out += data
    os.close(got["fd"])
    assert got["name"].encode() in out
    wait_for(lambda: state_of(state_root, "c1")["status"] == "stopped")
    runtime(state_root, "delete", "c1", check=True)


def test_terminal_without_console_socket_is_refused_for_create(
        runtime_env: tuple[Path, Path]) -> None:
    bundle, state_root = runtime_env
    config = base_config(["true"])
    config["process"]["terminal"] = True
    write_config(bundle, config)
    proc = runtime(state_root, "create", "-b", str(bundle), "c1")
    assert proc.returncode != 0 and "--console-socket" in proc.stderr
    assert not (state_root / "c1").exists()


def _cgroup_dirs(cid: str) -> list[str]:
    found = []
    for ctrl in os.listdir("/sys/fs/cgroup"):
        base = Path("/sys/fs/cgroup") / ctrl
        if base.is_dir() and not base.is_symlink():
            found += [str(p) for p in base.glob(f"**/{cid}") if p.is_dir()]
    return found


def test_cgroup_limits_applied_and_removed(runtime_env: tuple[Path, Path]) -> None:
    bundle, state_root = runtime_env
    cid = f"cg-{os.getpid()}"
    config = base_config(["sh", "-c", "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || "
                                      "cat /sys/fs/cgroup/pids.max; cat /proc/self/cgroup"])
    config["linux"]["resources"] = {"pids": {"limit": 42}}
    write_config(bundle, config)
    proc = runtime(state_root, "run", "-b", str(bundle), cid)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == "42"
    assert _cgroup_dirs(cid) == []





def schema_validator(name: str) -> Any:
    return ocischema.validator("runtime-spec", name)


def test_state_output_matches_runtime_spec_schema(runtime_env: tuple[Path, Path]) -> None:
    bundle, state_root = runtime_env
    validator = schema_validator("state-schema.json")
    assert list(validator.iter_errors({"id": "x", "status": "paused"}))  # it can fail
    config = base_config(["sleep", "100"])
    config["annotations"] = {"org.example/key": "value"}
    write_config(bundle, config)
    runtime(state_root, "create", "-b", str(bundle), "c1", check=True)
    for expected in ("created", "running", "stopped"):
        doc = state_of(state_root, "c1")
        assert doc["status"] == expected
        assert not list(validator.iter_errors(doc)), doc
        assert doc["annotations"] == {"org.example/key": "value"}
        if expected == "created":
            runtime(state_root, "start", "c1", check=True)
        elif expected == "running":
            runtime(state_root, "kill", "c1", "KILL", check=True)
            wait_for(lambda: state_of(state_root, "c1")["status"] == "stopped")
    runtime(state_root, "delete", "c1", check=True)


def test_features_match_runtime_spec_schema() -> None:
    validator = schema_validator("features-schema.json")
    feats = json.loads(subprocess.run([*RUNTIME, "features"], capture_output=True, text=True,
                                      check=True, cwd=REPO).stdout)
    errors = list(validator.iter_errors(feats))
    assert not errors, [e.message for e in errors[:3]]


def test_run_with_terminal_proxies_a_pty(runtime_env: tuple[Path, Path]) -> None:
    import pty
    bundle, state_root = runtime_env
    config = base_config(["sh", "-c", "tty; stty size; exit 6"])
    config["process"]["terminal"] = True
    config["process"]["consoleSize"] = {"height": 33, "width": 111}
    write_config(bundle, config)
    master, slave = pty.openpty()
    proc = subprocess.Popen([*RUNTIME, "--root", str(state_root), "run", "-b", str(bundle),
                             "c1"], stdin=slave, stdout=slave, stderr=subprocess.PIPE,
                            cwd=REPO)
    os.close(slave)
    out = read_until_hangup(master)
    assert proc.wait(timeout=60) == 6, proc.stderr.read()
    text = out.decode(errors="replace")
    assert "/dev/pts/" in text


def test_run_forwards_sigterm(runtime_env: tuple[Path, Path]) -> None:
    bundle, state_root = runtime_env
    # "trapped" once sh's handler is in: the signal must not come before it.
    set_args(bundle, ["sh", "-c", "trap 'exit 9' TERM; echo trapped; "
                      "while true; do sleep 0.1; done"])
    proc = subprocess.Popen([*RUNTIME, "--root", str(state_root), "run", "-b", str(bundle),
                             "c1"], cwd=REPO, stdout=subprocess.PIPE)
    try:
        wait_for_line(proc, "trapped")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 9
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_no_pivot_runs_with_move_and_chroot(runtime_env: tuple[Path, Path]) -> None:
    bundle, state_root = runtime_env
    set_args(bundle, ["sh", "-c", "echo pid=$$; ls /"])
    proc = runtime(state_root, "run", "--no-pivot", "-b", str(bundle), "c1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == "pid=1" and "bin" in proc.stdout.split()


def test_init_warnings_go_to_the_runtime_log(runtime_env: tuple[Path, Path],
        tmp_path: Path) -> None:
    """An ambient cap missing from inheritable cannot be raised (runc only warns): the
    warning belongs in --log, never in the container's own output."""
    bundle, state_root = runtime_env
    config = base_config(["echo", "hi"])
    config["process"]["capabilities"]["ambient"] = ["CAP_KILL"]
    write_config(bundle, config)
    log = tmp_path / "runtime.log"
    proc = subprocess.run(
        [*RUNTIME, "--root", str(state_root), "--log", str(log), "--log-format", "json",
         "run", "-b", str(bundle), "c1"], capture_output=True, text=True, timeout=60,
        cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "hi\n" and proc.stderr == ""
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(e["level"] == "warning" and "CAP_KILL" in e["msg"] for e in entries)


def test_kill_all_signals_every_process(runtime_env: tuple[Path, Path]) -> None:
    bundle, state_root = runtime_env
    # PID 1 ignores TERM (no handler in a pid ns); its children do not.
    set_args(bundle, ["sh", "-c", "sleep 100 & sleep 100 & wait"])
    runtime(state_root, "run", "-d", "-b", str(bundle), "c1", check=True)
    wait_for(lambda: len(json.loads(runtime(state_root, "ps", "-f", "json", "c1",
                                            check=True).stdout)) == 3)
    pids = json.loads(runtime(state_root, "ps", "-f", "json", "c1", check=True).stdout)
    runtime(state_root, "kill", "--all", "c1", "KILL", check=True)
    wait_for(lambda: all(_dead(p) for p in pids))
    wait_for(lambda: state_of(state_root, "c1")["status"] == "stopped")
    runtime(state_root, "delete", "c1", check=True)


def test_hook_timeout_kills_the_hook(runtime_env: tuple[Path, Path], tmp_path: Path) -> None:
    bundle, state_root = runtime_env
    set_args(bundle, ["true"], hooks={"createRuntime": [
        {"path": "/bin/sh", "args": ["sh", "-c", "sleep 30"], "timeout": 1}]})
    proc = runtime(state_root, "run", "-b", str(bundle), "c1")
    assert proc.returncode != 0 and "killed by SIGKILL" in proc.stderr
    assert not (state_root / "c1").exists()


def test_stale_state_dir_is_removed_by_force_delete(runtime_env: tuple[Path, Path]) -> None:
    _, state_root = runtime_env
    (state_root / "c9").mkdir(parents=True)
    (state_root / "c9" / "exec.fifo").touch()
    assert runtime(state_root, "delete", "-f", "c9").returncode == 0
    assert not (state_root / "c9").exists()


def test_exec_tty_without_console_socket(runtime_env: tuple[Path, Path]) -> None:
    import pty
    bundle, state_root = runtime_env
    set_args(bundle, ["sleep", "100"])
    runtime(state_root, "run", "-d", "-b", str(bundle), "c1", check=True)
    master, slave = pty.openpty()
    proc = subprocess.Popen([*RUNTIME, "--root", str(state_root), "exec", "-t", "c1", "sh",
                             "-c", "tty; exit 4"], stdin=slave, stdout=slave,
                            stderr=subprocess.PIPE, cwd=REPO)
    os.close(slave)
    out = read_until_hangup(master)
    assert proc.wait(timeout=60) == 4, proc.stderr.read()
    assert b"/dev/pts/" in out
    runtime(state_root, "delete", "-f", "c1", check=True)


def test_missing_cwd_is_created(runtime_env: tuple[Path, Path]) -> None:
    bundle, state_root = runtime_env
    config = base_config(["pwd"])
    config["process"]["cwd"] = "/new/work/dir"
    write_config(bundle, config)
    proc = runtime(state_root, "run", "-b", str(bundle), "c1")
    assert proc.returncode == 0 and proc.stdout.strip() == "/new/work/dir", proc.stderr


def test_pause_resume_update(runtime_env: tuple[Path, Path], tmp_path: Path) -> None:
    bundle, state_root = runtime_env
    set_args(bundle, ["sleep", "100"])
    runtime(state_root, "run", "-d", "-b", str(bundle), "c1", check=True)
    runtime(state_root, "pause", "c1", check=True)
    assert state_of(state_root, "c1")["status"] == "paused"
    again = runtime(state_root, "pause", "c1")
    assert again.returncode != 0 and "not running" in again.stderr
    runtime(state_root, "resume", "c1", check=True)
    assert state_of(state_root, "c1")["status"] == "running"
    res = tmp_path / "resources.json"
    res.write_text(json.dumps({"pids": {"limit": 17}}))
    runtime(state_root, "update", "--resources", str(res), "c1", check=True)
    out = runtime(state_root, "exec", "c1", "sh", "-c",
                  "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || "
                  "cat /sys/fs/cgroup/pids.max", check=True)
    assert out.stdout.strip() == "17"
    runtime(state_root, "pause", "c1", check=True)
    # A paused container is still deleted cleanly with --force (thawed to die).
    runtime(state_root, "delete", "-f", "c1", check=True)


def test_preserve_fds_passes_extra_descriptors(runtime_env: tuple[Path, Path],
        tmp_path: Path) -> None:
    bundle, state_root = runtime_env
    secret = tmp_path / "passed"
    secret.write_text("through fd 3\n")
    set_args(bundle, ["sh", "-c", "cat <&3; ls /proc/self/fd | tr '\\n' ' '"])
    # The shell opens the file as fd 3 of the runtime (pytest's own fd 3 stays untouched).
    proc = subprocess.run(["sh", "-c", 'exec "$@" 3<"$0"', str(secret), *RUNTIME, "--root",
                           str(state_root), "run", "--preserve-fds", "1", "-b", str(bundle),
                           "c1"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "through fd 3"
    # 0-2, the preserved 3, and ls's own directory fd: nothing else leaked.
    assert len(lines[1].split()) == 5


@pytest.mark.parametrize("flag", [[], ["--no-new-keyring"]])
def test_container_gets_its_own_session_keyring(runtime_env: tuple[Path, Path],
        flag: list[str]) -> None:
    bundle, state_root = runtime_env
    set_args(bundle, ["sleep", "100"])
    cid = f"kr-{os.getpid()}-{len(flag)}"
    runtime(state_root, "create", *flag, "-b", str(bundle), cid, check=True)
    try:
        keys = Path("/proc/keys").read_text()
        assert (f"_ses.{cid}" in keys) == (not flag)
    finally:
        runtime(state_root, "delete", "-f", cid, check=True)


def test_program_that_cannot_be_executed(runtime_env: tuple[Path, Path]) -> None:
    """A file with x bits but no valid format passes the create-time lookup; execve then
    fails after start, and the reason still reaches stderr (exit 126, like a shell)."""
    bundle, state_root = runtime_env
    bad = bundle / "rootfs" / "bin" / "notreally"
    bad.write_bytes(b"\x00\x01garbage")
    bad.chmod(0o755)
    set_args(bundle, ["/bin/notreally"])
    proc = runtime(state_root, "run", "-b", str(bundle), "c1")
    assert proc.returncode == 126
    assert "exec /bin/notreally" in proc.stderr


def test_run_keep_leaves_the_stopped_container_for_delete(
        runtime_env: tuple[Path, Path]) -> None:
    bundle, state_root = runtime_env
    set_args(bundle, ["sh", "-c", "exit 3"])
    proc = runtime(state_root, "run", "--keep", "--bundle", str(bundle), "c1")
    assert proc.returncode == 3, proc.stderr
    assert state_of(state_root, "c1")["status"] == "stopped"
    runtime(state_root, "delete", "c1", check=True)
    assert not (state_root / "c1").exists()


def test_exec_in_container_is_a_library_call(runtime_env: tuple[Path, Path]) -> None:
    """The exec of `ociimg-runtime exec`, from Python with an ExecRequest (no CLI args)."""
    from ociimg.runtime.config import User
    from ociimg.runtime.execution import ExecRequest, exec_in_container
    from tests.integration.forked import run_in_child
    bundle, state_root = runtime_env
    set_args(bundle, ["sleep", "1000"])
    runtime(state_root, "run", "-d", "--bundle", str(bundle), "c1", check=True)
    request = ExecRequest(args=("sh", "-c", 'echo "$X $(id -u):$(id -g) $PWD" > out; exit 7'),
                          env=("X=lib",), cwd="/root", user=User(uid=0, gid=5))
    status, result = run_in_child(lambda: exec_in_container(str(state_root), "c1", request))
    assert result == {"ok": 7}, result
    assert (bundle / "rootfs" / "root" / "out").read_text() == "lib 0:5 /root\n"
