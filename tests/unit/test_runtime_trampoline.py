"""The exec trampoline (process.open_trampoline): a sealed memfd that execs what it is told
to, refuses to run for anyone else, and is used only where seccomp surely allows execveat."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ociimg.runtime import process
from tests.conftest import need

PROFILE = {"defaultAction": "SCMP_ACT_ERRNO",
           "syscalls": [{"names": ["execve", "execveat"], "action": "SCMP_ACT_ALLOW"}]}


@pytest.mark.parametrize(("profile", "allowed"), [
    (None, True),
    (PROFILE, True),
    ({"defaultAction": "SCMP_ACT_ALLOW"}, True),
    ({"defaultAction": "SCMP_ACT_ERRNO"}, False),
    ({"defaultAction": "SCMP_ACT_ALLOW",
      "syscalls": [{"names": ["execveat"], "action": "SCMP_ACT_KILL"}]}, False),
    ({"defaultAction": "SCMP_ACT_ERRNO",
      "syscalls": [{"names": ["execveat"], "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 4, "value": 0, "op": "SCMP_CMP_EQ"}]}]}, False),
])
def test_used_only_where_execveat_is_allowed(profile: dict | None, allowed: bool) -> None:
    assert process._allows_syscall(profile, "execveat") is allowed


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    need(os.uname().machine in process._TRAMPOLINES, "no trampoline for this architecture")
    fd = process.open_trampoline(PROFILE)
    assert fd is not None
    code = f"import os; os.execve({fd}, {argv!r}, {{'X': 'only-this'}})"
    try:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              pass_fds=(fd,), timeout=30)
    finally:
        os.close(fd)


def test_execs_path_with_argv_and_env() -> None:
    proc = _run([process.TRAMPOLINE_ARGV0, "/bin/sh", "name0", "-c",
                 'head -c 5 /proc/$$/cmdline; echo " $X $0 $1"', "zero", "one"])
    assert proc.returncode == 0 and proc.stdout == "name0 only-this zero one\n", proc


def test_failures_exit_like_a_shell(tmp_path: Path) -> None:
    missing = _run([process.TRAMPOLINE_ARGV0, "/no/such", "x"])
    assert missing.returncode == 127
    assert missing.stderr == "ociimg-runtime: exec /no/such: cannot execute\n"
    plain = tmp_path / "not-executable"
    plain.write_text("data")
    assert _run([process.TRAMPOLINE_ARGV0, str(plain), "x"]).returncode == 126


def test_refuses_to_run_for_anyone_else() -> None:
    """What a "#!/proc/self/exe" script in the container gets: nothing exec'd."""
    proc = _run(["/proc/self/exe", "/bin/true"])
    assert proc.returncode == 126 and "cannot execute" in proc.stderr


def test_memfd_is_sealed() -> None:
    need(os.uname().machine in process._TRAMPOLINES, "no trampoline for this architecture")
    fd = process.open_trampoline(None)
    try:
        with pytest.raises(PermissionError):
            os.write(fd, b"x")
        with pytest.raises(PermissionError):
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def _config(namespaces: list[dict], caps: list[str] | None = None) -> object:
    from ociimg.runtime.config import parse_config
    process_doc: dict = {"args": ["true"], "cwd": "/", "user": {"uid": 0, "gid": 0}}
    if caps is not None:
        process_doc["capabilities"] = {"bounding": caps, "effective": caps, "permitted": caps}
    return parse_config({"ociVersion": "1.2.0", "root": {"path": "rootfs"},
                         "process": process_doc, "linux": {"namespaces": namespaces}}, "/b")


@pytest.mark.parametrize(("namespaces", "caps", "traced"), [
    ([{"type": "pid"}, {"type": "mount"}], ["CAP_KILL"], False),
    ([{"type": "pid"}, {"type": "mount"}], ["CAP_KILL", "CAP_SYS_PTRACE"], True),
    ([{"type": "pid"}, {"type": "mount"}], None, True),  # root's capabilities, all of them
    ([{"type": "pid"}, {"type": "user"}], ["CAP_SYS_PTRACE"], False),  # only in its user ns
    ([{"type": "pid"}, {"type": "user", "path": "/proc/self/ns/user"}], ["CAP_SYS_PTRACE"],
     True),  # "joined" the host's own user ns
    ([{"type": "mount"}], ["CAP_KILL"], True),  # the host's pid ns
    ([{"type": "pid", "path": "/proc/self/ns/pid"}], ["CAP_KILL"], True),  # someone else's
])
def test_may_be_traced(namespaces: list[dict], caps: list[str] | None, traced: bool) -> None:
    assert process.may_be_traced(_config(namespaces, caps)) is traced


def test_sealed_interpreter_runs_a_job() -> None:
    """run_sealed: the job runs in an interpreter whose /proc/self/exe is the sealed copy,
    non-dumpable, with the inherited fd back to close-on-exec."""
    interpreter = process.sealed_interpreter()
    r, w = os.pipe()
    code = ("import fcntl, os, ctypes\n"
            "fd = os.open('/proc/self/exe', os.O_RDONLY)\n"
            "seals = fcntl.fcntl(fd, 1034)\n"
            "dumpable = ctypes.CDLL(None).prctl(3, 0, 0, 0, 0)\n"
            f"os.write({w}, f'{{seals}} {{dumpable}} {{os.get_inheritable({w})}}'.encode())\n"
            "os._exit(0)\n")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            process.run_sealed(interpreter, exec, (code,), [w])
        finally:
            os._exit(3)
    os.close(w)
    os.close(interpreter)
    with os.fdopen(r, "rb") as f:
        out = f.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, out
    seals, dumpable, inheritable = out.split()
    assert int(seals) & 0x8 and dumpable == "0" and inheritable == "False"


def test_sealed_where_the_trampoline_cannot_be_used() -> None:
    config = _config([{"type": "pid"}, {"type": "user"}], ["CAP_KILL"])
    has_trampoline = os.uname().machine in process._TRAMPOLINES
    assert process.needs_sealed(config) is not has_trampoline
    refusing = {"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["execveat"], "action": "SCMP_ACT_ERRNO"}]}
    from ociimg.runtime.records import replace
    assert process.needs_sealed(replace(config, seccomp=refusing))
