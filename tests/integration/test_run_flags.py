"""`ociimg run` as docker scripts expect it: exit codes 125/126/127/the container's, attached
and detached, with the built-in runtime and runc; and docker's run flags seen from inside."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import need
from tests.integration.cli_helpers import ociimg
from tests.waiting import wait_until

RUNTIMES = [None, "runc"]


@pytest.fixture
def image(fixture_layout: Path) -> str:
    return f"oci:{fixture_layout}:busybox"


def _runtime_args(runtime: str | None) -> list[str]:
    if runtime is None:
        return []
    need(shutil.which(runtime) is not None, f"{runtime} missing: apt-get install {runtime}")
    return ["--runtime", runtime]


def _containers(root: Path) -> list[dict]:
    return json.loads(ociimg(root, "ps", "-a", "--json").stdout)


CASES = [  # (run arguments after the image, expected exit code)
    (["true"], 0),
    (["sh", "-c", "exit 1"], 1),
    (["sh", "-c", "exit 42"], 42),
    (["sh", "-c", "sh -c 'kill -9 $$'; exit $?"], 137),  # (PID 1 ignores its own)
    (["/etc/passwd"], 126),          # not executable
    (["/etc"], 126),                 # a directory
    (["/no/such/program"], 127),
    (["nosuchprogram"], 127),
]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_attached_exit_codes_are_dockers(ociroot: Path, image: str,
                                         runtime: str | None) -> None:
    rt = _runtime_args(runtime)
    for args, code in CASES:
        proc = ociimg(ociroot, "run", "--rm", *rt, image, *args, check=False)
        assert proc.returncode == code, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    # ociimg's own errors: 125, whatever the kind (usage, missing image, bad value)
    for args in (["run", "--bogus-flag", image, "true"],
                 ["run", "--cpus", "abc", image, "true"],
                 ["run", "--pull", "never", "no-such-image-h-vol:1", "true"],
                 ["run", "--tmpfs", "/x:size=1m,bogus", image, "true"],
                 ["run", "--memory", "lots", image, "true"],
                 ["run", "-v", "bad/name:/d", image, "true"],
                 ["run", "--ulimit", "nofile=1:2:3", image, "true"],
                 ["run", "--sysctl", "kernel.panic=1", image, "true"],
                 ["run", "--rm", *rt, "--ulimit", "nofile=1:99999999", image, "true"]):
        proc = ociimg(ociroot, *args, check=False)
        assert proc.returncode == 125, (args, proc.returncode, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert _containers(ociroot) == []  # --rm: nothing left, also after start errors


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_detached_exit_codes(ociroot: Path, image: str, runtime: str | None) -> None:
    rt = _runtime_args(runtime)
    for args, code in CASES:
        proc = ociimg(ociroot, "run", "-d", *rt, image, *args, check=False)
        if code in (126, 127):  # the start fails: run -d itself says so
            assert proc.returncode == code, (args, proc.stderr)
            continue
        assert proc.returncode == 0, proc.stderr
        cid = proc.stdout.strip()

        def exited(cid: str = cid) -> dict | None:
            rows = [r for r in _containers(ociroot) if r["id"] == cid]
            return rows[0] if rows and rows[0]["status"] == "exited" else None
        wait_until(exited, f"{args} to exit")
        assert exited()["exitCode"] == code, args
        ociimg(ociroot, "rm", cid)


def test_run_flags_seen_from_inside(ociroot: Path, image: str, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    envf = tmp_path / "env"
    envf.write_text("# comment\nFROM_FILE=a b\nHOST_ONLY\n")
    monkeypatch.setenv("HOST_ONLY", "host value")
    monkeypatch.setenv("PASSED", "passed on")
    monkeypatch.delenv("NOT_SET_H_VOL", raising=False)
    script = ("env | grep -E '^(FROM_FILE|HOST_ONLY|PASSED|NOT_SET_H_VOL)=' | sort; "
              "grep -E ' /(t|dev/shm) ' /proc/mounts; stat -c %a /t; "
              "ulimit -n; ulimit -Hn; id -G; cat /proc/sys/net/core/somaxconn")
    proc = ociimg(ociroot, "run", "--rm", "--env-file", str(envf), "-e", "PASSED",
                  "-e", "NOT_SET_H_VOL", "--tmpfs", "/t:size=2m,mode=1770,exec",
                  "--shm-size", "1m", "--ulimit", "nofile=100:200", "--group-add", "wheel",
                  "--group-add", "4242", "--sysctl", "net.core.somaxconn=77", "--userns=host",
                  image, "sh", "-c", script)
    lines = proc.stdout.splitlines()
    assert lines[:3] == ["FROM_FILE=a b", "HOST_ONLY=host value", "PASSED=passed on"]
    shm, t = sorted(line for line in lines if "tmpfs" in line)
    assert " /dev/shm " in shm and "size=1024k" in shm
    assert t.startswith("tmpfs /t tmpfs ") and "size=2048k" in t and "mode=1770" in t
    assert "noexec" not in t and "nosuid" in t  # exec overrides the default noexec
    assert lines[-5:] == ["1770", "100", "200", "0 10 4242", "77"]


def test_device_and_privileged(ociroot: Path, image: str) -> None:
    need(os.path.exists("/dev/fuse"), "no /dev/fuse on this host")
    probe = "head -c0 /dev/f && echo opened"
    out = ociimg(ociroot, "run", "--rm", "--device", "/dev/fuse:/dev/f:rw", image,
                 "sh", "-c", probe)
    assert out.stdout == "opened\n"
    denied = ociimg(ociroot, "run", "--rm", image, "sh", "-c", "mknod /dev/f c 10 229 && "
                    + probe, check=False)
    assert denied.returncode != 0 and "opened" not in denied.stdout  # device cgroup
    script = ("grep -E '^(CapEff|Seccomp):' /proc/self/status; "
              "grep ' /sys ' /proc/mounts; cat /proc/sys/kernel/ostype; ls /dev/fuse")
    plain = ociimg(ociroot, "run", "--rm", image, "sh", "-c", script, check=False).stdout
    priv = ociimg(ociroot, "run", "--rm", "--privileged", image, "sh", "-c", script).stdout
    assert "Seccomp:\t2" in plain and "Seccomp:\t0" in priv
    with open("/proc/self/status") as f:
        host_caps = next(line for line in f if line.startswith("CapBnd:")).split()[1]
    assert f"CapEff:\t{host_caps}" in priv  # every capability this host can hand out
    assert "sysfs ro," in plain and "sysfs rw," in priv
    assert "/dev/fuse" in priv and "/dev/fuse" not in plain


def test_cidfile_stop_signal_and_timeout(ociroot: Path, image: str, tmp_path: Path) -> None:
    cidfile = tmp_path / "cid"
    cid = ociimg(ociroot, "run", "-d", "--cidfile", str(cidfile), "--stop-signal", "USR1",
                 "--stop-timeout", "30", image, "sh", "-c",
                 "trap 'exit 9' USR1; echo up; while :; do sleep 0.1; done").stdout.strip()
    assert cidfile.read_text() == cid
    again = ociimg(ociroot, "run", "--cidfile", str(cidfile), image, "true", check=False)
    assert again.returncode == 125 and "ID file found" in again.stderr
    wait_until(lambda: "up" in ociimg(ociroot, "logs", cid).stdout, "the trap to be set")
    ociimg(ociroot, "stop", cid)  # USR1 (not TERM, which the trap lacks) and no kill
    row = next(r for r in _containers(ociroot) if r["id"] == cid)
    assert row["exitCode"] == 9
    ociimg(ociroot, "rm", cid)


def test_pull_policy_and_authfile(ociroot: Path, auth_pushed_busybox: str, auth_registry,
                                  tmp_path: Path) -> None:
    import base64
    ref = auth_pushed_busybox
    good, bad = tmp_path / "auth.json", tmp_path / "bad.json"
    for path, password in ((good, auth_registry.password), (bad, "stale")):
        token = base64.b64encode(f"{auth_registry.username}:{password}".encode()).decode()
        path.write_text(json.dumps({"auths": {auth_registry.host: {"auth": token}}}))
    never = ociimg(ociroot, "run", "--rm", "--pull", "never", ref, "true", check=False)
    assert never.returncode == 125 and "not found in the store" in never.stderr
    anonymous = ociimg(ociroot, "run", "--rm", "-q", ref, "true", check=False)
    assert anonymous.returncode == 125 and "Traceback" not in anonymous.stderr
    out = ociimg(ociroot, "run", "--rm", "-q", "--authfile", str(good), ref, "echo", "hi")
    assert out.stdout == "hi\n"
    assert ociimg(ociroot, "run", "--rm", "--pull", "never", ref, "true").returncode == 0
    # present now, but "always" asks the registry again: stale credentials fail it
    stale = ociimg(ociroot, "run", "--rm", "-q", "--pull", "always", "--authfile", str(bad),
                   ref, "true", check=False)
    assert stale.returncode == 125 and "wrong username or password" in stale.stderr
    ociimg(ociroot, "run", "--rm", "-q", "--pull", "always", "--authfile", str(good), ref,
           "true")
    bogus = ociimg(ociroot, "run", "--rm", "--pull", "sometimes", ref, "true", check=False)
    assert bogus.returncode == 125
