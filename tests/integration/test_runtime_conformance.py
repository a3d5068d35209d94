"""runtime-spec conformance of ociimg-runtime on the real kernel (as root), where the OCI
runtime-tools suite found it differing from the spec: inherited and joined mount
namespaces, a hostname in a joined uts namespace, hook failure semantics, delete of a
created container, unbindable root propagation, resources and labels the host cannot
apply, and the error log."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from ociimg.oskit.mountinfo import parse_mountinfo, read_mountinfo
from tests.conftest import need
from tests.integration.forked import run_in_child
from tests.integration.runtime_helpers import (
    REPO,
    RUNTIME,
    base_config,
    mounts_under,
    runtime,
    state_of,
    write_config,
)

NAMESPACES = ("pid", "network", "ipc", "uts", "mount", "cgroup")


def wait_for(cond: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.05)


def namespaces(**paths: str | None) -> list[dict[str, str]]:
    """The base namespaces, with some dropped (None) or joined by path."""
    out = []
    for ns in NAMESPACES:
        if ns in paths and paths[ns] is None:
            continue
        out.append({"type": ns, "path": paths[ns]} if paths.get(ns) else {"type": ns})
    return out


def config_with(args: list[str], ns: list[dict[str, str]], **overrides: Any) -> dict:
    config = base_config(args, **overrides)
    config["linux"]["namespaces"] = ns
    return config


def root_propagation() -> str:
    """The optional fields (shared:N, master:N, unbindable) of this namespace's / mount."""
    root = [m for m in read_mountinfo() if m.mount_point == "/"][-1]
    return " ".join(root.optional)


def start_holder(flag: str) -> subprocess.Popen[bytes]:
    """A process in a new namespace of one type, whose /proc/<pid>/ns/* a config joins."""
    holder = subprocess.Popen(["unshare", flag, "sleep", "1000"])
    kind = {"--mount": "mnt", "--uts": "uts"}[flag]
    own = os.readlink(f"/proc/self/ns/{kind}")
    wait_for(lambda: os.readlink(f"/proc/{holder.pid}/ns/{kind}") != own)
    return holder


def holder_mounts_under(pid: int, path: Path) -> list[str]:
    return [m.mount_point for m in read_mountinfo(pid)
            if m.mount_point.startswith(str(path))]


def test_no_mount_namespace_is_inherited_and_its_mounts_removed(
        runtime_env: tuple[Path, Path]) -> None:
    """No "mount" in linux.namespaces: the container runs in the runtime's mount ns
    (runtime-spec: inherited), chrooted into its rootfs with its mounts, masked and
    readonly paths; the runtime's / keeps its propagation and delete removes every mount
    (runc 1.1.5 refuses masked paths here and leaves its mounts behind)."""
    bundle, state_root = runtime_env
    rootfs = bundle / "rootfs"
    write_config(bundle, config_with(
        ["sh", "-c", "echo timers=$(wc -c < /proc/timer_list) host=$(hostname) "
                     "mounts=$(grep -c . /proc/self/mountinfo) > /out; "
                     "touch /proc/sys/kernel/x 2>/dev/null || echo sys-readonly >> /out"],
        namespaces(mount=None)))

    def scenario() -> dict[str, Any]:
        from ociimg.oskit import linux
        from ociimg.oskit.linux import CLONE, MS
        # A mount ns of this test's own stands in for the host's: / private (nothing
        # reaches pytest's), then shared again, a peer group of its own to watch.
        linux.unshare(CLONE.NEWNS)
        linux.mount(None, "/", None, MS.PRIVATE | MS.REC)
        linux.mount(None, "/", None, MS.SHARED)
        before = root_propagation()
        runtime(state_root, "create", "-b", str(bundle), "c1", check=True)
        pid = state_of(state_root, "c1")["pid"]
        out = {"same_ns": os.readlink(f"/proc/{pid}/ns/mnt") == os.readlink("/proc/self/ns/mnt"),
               "root": os.readlink(f"/proc/{pid}/root"), "during": mounts_under(rootfs),
               "propagation": (before, root_propagation())}
        runtime(state_root, "start", "c1", check=True)
        wait_for(lambda: state_of(state_root, "c1")["status"] == "stopped")
        out["output"] = (rootfs / "out").read_text().split()
        runtime(state_root, "delete", "c1", check=True)
        # exec joins the init's root, not the namespace's / (the host's here)
        write_config(bundle, config_with(["sleep", "100"], namespaces(mount=None)))
        runtime(state_root, "run", "-d", "-b", str(bundle), "c2", check=True)
        out["exec"] = runtime(state_root, "exec", "c2", "sh", "-c",
                              "ls /; test -e /work && echo HOST").stdout.split()
        runtime(state_root, "delete", "--force", "c2", check=True)
        out["after"] = mounts_under(rootfs)
        return out

    status, result = run_in_child(scenario)
    assert status == 0, result
    got = result["ok"]
    assert got["same_ns"]
    assert got["root"] == str(rootfs)
    assert str(rootfs) in got["during"] and f"{rootfs}/proc" in got["during"]
    before, after = got["propagation"]
    assert before.startswith("shared:") and after == before
    assert got["output"][:2] == ["timers=0", "host=ociimg-test"], got["output"]
    assert "sys-readonly" in got["output"]
    assert got["after"] == []
    assert "bin" in got["exec"] and "HOST" not in got["exec"], got["exec"]
    (rootfs / "out").unlink()


def test_joined_mount_namespace_is_used_not_re_rooted(runtime_env: tuple[Path, Path]) -> None:
    """A mount ns joined by path: the container is in it, its mounts are made there (not
    in the runtime's), the namespace's other processes keep their root (no pivot_root),
    and delete removes the mounts from that namespace."""
    bundle, state_root = runtime_env
    rootfs = bundle / "rootfs"

    def scenario() -> dict[str, Any]:
        from ociimg.oskit import linux
        from ociimg.oskit.linux import CLONE, MS
        linux.unshare(CLONE.NEWNS)
        linux.mount(None, "/", None, MS.PRIVATE | MS.REC)
        holder = start_holder("--mount")
        try:
            ns_path = f"/proc/{holder.pid}/ns/mnt"
            write_config(bundle, config_with(["sleep", "100"], namespaces(mount=ns_path)))
            runtime(state_root, "create", "-b", str(bundle), "c1", check=True)
            pid = state_of(state_root, "c1")["pid"]
            out = {"joined": os.readlink(f"/proc/{pid}/ns/mnt") == os.readlink(ns_path),
                   "holder_root": os.readlink(f"/proc/{holder.pid}/root"),
                   "in_holder": holder_mounts_under(holder.pid, rootfs),
                   "in_ours": mounts_under(rootfs)}
            runtime(state_root, "start", "c1", check=True)
            out["exec"] = runtime(state_root, "exec", "c1", "sh", "-c",
                                  "ls /; test -e /work && echo HOST").stdout.split()
            runtime(state_root, "delete", "--force", "c1", check=True)
            out["in_holder_after"] = holder_mounts_under(holder.pid, rootfs)
            return out
        finally:
            holder.kill()
            holder.wait()

    status, result = run_in_child(scenario)
    assert status == 0, result
    got = result["ok"]
    assert got["joined"]
    assert got["holder_root"] == "/"
    assert str(rootfs) in got["in_holder"] and got["in_ours"] == []
    assert got["in_holder_after"] == []
    assert "bin" in got["exec"] and "HOST" not in got["exec"], got["exec"]


def test_hostname_is_set_in_a_joined_uts_namespace(runtime_env: tuple[Path, Path]) -> None:
    bundle, state_root = runtime_env
    own = os.uname().nodename
    holder = start_holder("--uts")
    try:
        write_config(bundle, config_with(
            ["hostname"], namespaces(uts=f"/proc/{holder.pid}/ns/uts"), hostname="joined-uts"))
        proc = runtime(state_root, "run", "-b", str(bundle), "c1")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "joined-uts"
        seen = subprocess.run(["nsenter", "-t", str(holder.pid), "-u", "hostname"],
                              capture_output=True, text=True, check=True).stdout.strip()
        assert seen == "joined-uts"
        assert os.uname().nodename == own
    finally:
        holder.kill()
        holder.wait()


def test_hostname_without_uts_namespace_is_refused(runtime_env: tuple[Path, Path]) -> None:
    """Inherited, the uts ns is the runtime's: setting it would rename the host."""
    bundle, state_root = runtime_env
    own = os.uname().nodename
    write_config(bundle, config_with(["true"], namespaces(uts=None), hostname="renamed"))
    proc = runtime(state_root, "run", "-b", str(bundle), "c1")
    assert proc.returncode != 0 and "uts namespace" in proc.stderr
    assert os.uname().nodename == own


def _hook(out: Path, text: str) -> dict[str, Any]:
    return {"path": "/bin/sh", "args": ["sh", "-c", f"echo {text} >> {out}"]}


def test_failing_poststart_hook_warns_and_the_rest_run(runtime_env: tuple[Path, Path],
                                                       tmp_path: Path) -> None:
    """runtime-spec: a poststart failure is logged as a warning; the remaining hooks and
    the lifecycle continue (start succeeds)."""
    bundle, state_root = runtime_env
    out = tmp_path / "hooks"
    write_config(bundle, base_config(["sleep", "100"], hooks={
        "poststart": [_hook(out, "one"), {"path": "/bin/false"}, _hook(out, "three")]}))
    runtime(state_root, "create", "-b", str(bundle), "c1", check=True)
    proc = runtime(state_root, "start", "c1")
    assert proc.returncode == 0, proc.stderr
    assert "warning" in proc.stderr and "poststart hook #1" in proc.stderr
    assert out.read_text().split() == ["one", "three"]
    assert state_of(state_root, "c1")["status"] == "running"


def test_failing_poststop_hook_warns_and_the_rest_run(runtime_env: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    bundle, state_root = runtime_env
    out = tmp_path / "hooks"
    write_config(bundle, base_config(["true"], hooks={
        "poststop": [{"path": "/bin/false"}, _hook(out, "two"), {"path": "/nonexistent"},
                     _hook(out, "four")]}))
    runtime(state_root, "create", "-b", str(bundle), "c1", check=True)
    runtime(state_root, "start", "c1", check=True)
    wait_for(lambda: state_of(state_root, "c1")["status"] == "stopped")
    proc = runtime(state_root, "delete", "c1")
    assert proc.returncode == 0, proc.stderr
    assert "poststop hook #0" in proc.stderr and "poststop hook #2" in proc.stderr
    assert out.read_text().split() == ["two", "four"]
    assert not (state_root / "c1").exists()


def test_failing_prestart_hook_fails_create_and_stops_the_rest(
        runtime_env: tuple[Path, Path], tmp_path: Path) -> None:
    bundle, state_root = runtime_env
    out = tmp_path / "hooks"
    write_config(bundle, base_config(["true"], hooks={
        "prestart": [{"path": "/bin/false"}, _hook(out, "never")]}))
    proc = runtime(state_root, "create", "-b", str(bundle), "c1")
    assert proc.returncode != 0 and "prestart hook #0" in proc.stderr
    assert not out.exists() and not (state_root / "c1").exists()


def test_bad_hook_timeout_is_refused_before_the_hook_runs(
        runtime_env: tuple[Path, Path], tmp_path: Path) -> None:
    bundle, state_root = runtime_env
    out = tmp_path / "hooks"
    hook = _hook(out, "ran") | {"timeout": 0}
    write_config(bundle, base_config(["true"], hooks={"createRuntime": [hook]}))
    proc = runtime(state_root, "create", "-b", str(bundle), "c1")
    assert proc.returncode != 0 and "hooks.createRuntime[0].timeout" in proc.stderr
    assert not out.exists()  # hooks run to completion inside the call: none ran


def test_delete_of_a_created_container_fails_without_effect(
        runtime_env: tuple[Path, Path]) -> None:
    """runtime-spec "delete": a container that is not stopped (created included) is not
    deleted; --force kills it first; kill KILL then delete works back to back."""
    bundle, state_root = runtime_env
    write_config(bundle, base_config(["sleep", "100"]))
    runtime(state_root, "create", "-b", str(bundle), "c1", check=True)
    refused = runtime(state_root, "delete", "c1")
    assert refused.returncode != 0 and "not stopped: created" in refused.stderr
    assert state_of(state_root, "c1")["status"] == "created"
    runtime(state_root, "kill", "c1", "KILL", check=True)
    runtime(state_root, "delete", "c1", check=True)  # no wait in between
    runtime(state_root, "create", "-b", str(bundle), "c2", check=True)
    pid = state_of(state_root, "c2")["pid"]
    runtime(state_root, "delete", "--force", "c2", check=True)
    assert runtime(state_root, "state", "c2").returncode != 0
    wait_for(lambda: not os.path.exists(f"/proc/{pid}")
             or open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] in "ZX")


def test_unbindable_root_propagation(runtime_env: tuple[Path, Path]) -> None:
    """rootfsPropagation unbindable: the rootfs bind must not fail with EINVAL (it does
    in runc 1.1.5); the container's / ends up unbindable."""
    bundle, state_root = runtime_env
    for value in ("unbindable", "runbindable"):
        config = base_config(["cat", "/proc/self/mountinfo"])
        config["linux"]["rootfsPropagation"] = value
        write_config(bundle, config)
        proc = runtime(state_root, "run", "-b", str(bundle), "c1")
        assert proc.returncode == 0, proc.stderr
        root = next(m for m in parse_mountinfo(proc.stdout) if m.mount_point == "/")
        assert "unbindable" in root.optional, root


def _mounted_v1(controller: str) -> bool:
    return any(m.fstype == "cgroup" and controller in m.super_options.split(",")
               for m in read_mountinfo())


def test_network_resources_applied_or_refused(runtime_env: tuple[Path, Path]) -> None:
    """linux.resources.network is never dropped silently: written to net_cls/net_prio
    where they are mounted, else create fails with one clear line."""
    bundle, state_root = runtime_env
    config = base_config(["cat", "/sys/fs/cgroup/net_cls/net_cls.classid"])
    config["linux"]["resources"] = {"network": {"classID": 1048577,
                                                "priorities": [{"name": "lo", "priority": 7}]}}
    write_config(bundle, config)
    proc = runtime(state_root, "run", "-b", str(bundle), "c1")
    if _mounted_v1("net_cls") and _mounted_v1("net_prio"):
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "1048577"
    else:
        assert proc.returncode != 0
        assert "net_cls" in proc.stderr.splitlines()[0]
        assert proc.stderr.startswith("ociimg-runtime: error: ")
    assert not (state_root / "c1").exists()


def test_labels_the_host_cannot_apply_are_refused(runtime_env: tuple[Path, Path]) -> None:
    from ociimg.runtime import lsm
    need(not lsm.apparmor_enabled(), "AppArmor is enabled here: the refusal needs a host "
                                     "without it")
    bundle, state_root = runtime_env
    cases = [("process", "apparmorProfile", "acme_secure_profile", "AppArmor"),
             ("process", "selinuxLabel", "system_u:system_r:container_t:s0", "SELinux"),
             ("linux", "mountLabel", "system_u:object_r:container_file_t:s0", "SELinux")]
    for section, key, value, word in cases:
        config = base_config(["true"])
        config[section][key] = value
        write_config(bundle, config)
        proc = runtime(state_root, "run", "-b", str(bundle), "c1")
        assert proc.returncode != 0, key
        assert word in proc.stderr and key in proc.stderr, proc.stderr
        assert not (state_root / "c1").exists()


def test_failures_write_one_error_line_and_a_json_log_entry(
        runtime_env: tuple[Path, Path], tmp_path: Path) -> None:
    bundle, state_root = runtime_env
    log = tmp_path / "log.json"
    write_config(bundle, base_config(["sleep", "100"]))
    base = [*RUNTIME, "--root", str(state_root), "--log", str(log), "--log-format", "json"]
    runtime(state_root, "create", "-b", str(bundle), "c1", check=True)
    failures = [
        (["delete", "c1"], "not stopped"),
        (["state", "nope"], "does not exist"),
        (["start", "nope"], "does not exist"),
        (["frobnicate"], "unknown command"),
        (["create", "-b", str(tmp_path / "missing"), "c2"], "no config.json"),
    ]
    for args, text in failures:
        proc = subprocess.run([*base, *args], capture_output=True, text=True, cwd=REPO)
        assert proc.returncode != 0, args
        errors = [line for line in proc.stderr.splitlines() if not line.startswith("hint: ")]
        assert len(errors) == 1 and errors[0].startswith("ociimg-runtime: error: ")
        assert text in errors[0], proc.stderr
        entry = json.loads(log.read_text().splitlines()[-1])
        assert entry["level"] == "error" and text in entry["msg"], entry
        assert set(entry) == {"level", "msg", "time"}
    assert len(log.read_text().splitlines()) == len(failures)
    runtime(state_root, "delete", "--force", "c1", check=True)


def test_poststart_hooks_run_after_the_program_was_executed(
        runtime_env: tuple[Path, Path], tmp_path: Path) -> None:
    """runtime-spec config.md: poststart hooks are invoked after the user-specified
    process is executed. A slow startContainer hook holds the init before its execve:
    start must wait for the execve, so the poststart hook sees the program (sleep), not
    the runtime's init, behind the state's pid."""
    bundle, state_root = runtime_env
    out = tmp_path / "comm"
    pid_of_state = "sed 's/.*\"pid\": *\\([0-9]*\\).*/\\1/'"
    seen = {"path": "/bin/sh",
            "args": ["sh", "-c", f"pid=$({pid_of_state}); cat /proc/$pid/comm > {out}"]}
    write_config(bundle, base_config(["sleep", "100"], hooks={
        "startContainer": [{"path": "/bin/sleep", "args": ["sleep", "0.5"]}],
        "poststart": [seen]}))
    runtime(state_root, "create", "-b", str(bundle), "c1", check=True)
    runtime(state_root, "start", "c1", check=True)
    assert out.read_text().strip() == "sleep"


def test_failing_start_container_hook_fails_start(runtime_env: tuple[Path, Path],
                                                  tmp_path: Path) -> None:
    """runtime-spec: a startContainer failure is an error (of start) that stops the
    container; the poststart hooks do not run."""
    bundle, state_root = runtime_env
    out = tmp_path / "hooks"
    write_config(bundle, base_config(["sleep", "100"], hooks={
        "startContainer": [{"path": "/bin/false"}], "poststart": [_hook(out, "never")]}))
    runtime(state_root, "create", "-b", str(bundle), "c1", check=True)
    proc = runtime(state_root, "start", "c1")
    assert proc.returncode != 0 and "startContainer hook #0" in proc.stderr, proc.stderr
    wait_for(lambda: state_of(state_root, "c1")["status"] == "stopped")
    assert not out.exists()
    runtime(state_root, "delete", "c1", check=True)


def test_failing_start_container_hook_is_reported_once(runtime_env: tuple[Path, Path]) -> None:
    # `run`: the init's stderr is the caller's too; only `start` reports the failure.
    bundle, state_root = runtime_env
    write_config(bundle, base_config(["true"], hooks={
        "startContainer": [{"path": "/bin/false"}]}))
    proc = runtime(state_root, "run", "-b", str(bundle), "c1")
    assert proc.returncode != 0
    said = [line for line in proc.stderr.splitlines() if "startContainer hook #0" in line]
    assert len(said) == 1, proc.stderr
    assert not (state_root / "c1").exists()


def test_failed_create_without_mount_namespace_leaves_no_mounts(
        runtime_env: tuple[Path, Path]) -> None:
    """The init fails after its mounts (a createContainer hook): create's clean-up
    detaches them from the namespace the container shared."""
    bundle, state_root = runtime_env
    rootfs = bundle / "rootfs"
    write_config(bundle, config_with(["true"], namespaces(mount=None),
                                     hooks={"createContainer": [{"path": "/bin/false"}]}))

    def scenario() -> dict[str, Any]:
        from ociimg.oskit import linux
        from ociimg.oskit.linux import CLONE, MS
        linux.unshare(CLONE.NEWNS)
        linux.mount(None, "/", None, MS.PRIVATE | MS.REC)
        proc = runtime(state_root, "create", "-b", str(bundle), "c1")
        return {"rc": proc.returncode, "stderr": proc.stderr, "left": mounts_under(rootfs)}

    status, result = run_in_child(scenario)
    assert status == 0, result
    got = result["ok"]
    assert got["rc"] != 0 and "createContainer hook #0" in got["stderr"], got
    assert got["left"] == []
    assert not (state_root / "c1").exists()


def test_delete_from_another_mount_namespace_says_the_mounts_stay(
        runtime_env: tuple[Path, Path]) -> None:
    """The mounts of a container without its own mount ns live where `create` ran; a
    delete from elsewhere cannot reach them and says so instead of pretending."""
    bundle, state_root = runtime_env
    write_config(bundle, config_with(["sleep", "100"], namespaces(mount=None)))

    def create_elsewhere() -> int:
        from ociimg.oskit import linux
        from ociimg.oskit.linux import CLONE, MS
        linux.unshare(CLONE.NEWNS)
        linux.mount(None, "/", None, MS.PRIVATE | MS.REC)
        return runtime(state_root, "create", "-b", str(bundle), "c1").returncode

    status, result = run_in_child(create_elsewhere)
    assert status == 0 and result == {"ok": 0}, result
    proc = runtime(state_root, "delete", "--force", "c1")
    assert proc.returncode == 0, proc.stderr
    assert "stay in the mount namespace" in proc.stderr
    assert mounts_under(bundle) == []  # nothing ever reached this namespace
