"""Seccomp filters loaded for real, each in a forked child (the test process stays clean)."""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

import pytest

from ociimg.bundle import profiles
from ociimg.errors import ContainerError
from ociimg.oskit import linux
from ociimg.runtime import capabilities, init, seccomp
from tests.conftest import need
from tests.integration.forked import run_in_child
from tests.integration.seccomp_helpers import errno_of, need_seccomp, probe_forbidden

BUSYBOX = Path("/usr/bin/busybox")


@pytest.fixture(autouse=True)
def _needs(root: None) -> None:
    need_seccomp()


def load(profile: dict) -> None:
    """Build and load ``profile`` into this process as ``ociimg-runtime exec`` does."""
    init.load_seccomp(init.SeccompFilter(
        context=seccomp.new_context(seccomp.build_filter(profile))))


def allow_but(*rules: dict) -> dict:
    return {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": list(rules)}


def test_errno_rule_blocks_mkdir(tmp_path: Path) -> None:
    target = tmp_path / "blocked"

    def child() -> dict:
        load(allow_but(
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}))
        return {"mkdir": errno_of(lambda: os.mkdir(target)), "pid": os.getpid()}

    status, result = run_in_child(child)
    assert os.waitstatus_to_exitcode(status) == 0, result
    assert result["ok"]["mkdir"] == errno.EPERM
    assert not target.exists()
    os.mkdir(target)  # the parent is not filtered


def test_errno_ret_is_honoured(tmp_path: Path) -> None:
    def child() -> int:
        load(allow_but(
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
             "errnoRet": errno.ENOSPC}))
        return errno_of(lambda: os.mkdir(tmp_path / "x"))

    status, result = run_in_child(child)
    assert result == {"ok": errno.ENOSPC}


@pytest.mark.parametrize("action", ["SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS"])
def test_kill_actions_kill_with_sigsys(action: str) -> None:
    def child() -> str:
        load(allow_but({"names": ["getppid"], "action": action}))
        os.getppid()
        return "survived"

    status, result = run_in_child(child)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS, (status, result)
    assert result is None


def test_argument_comparators(tmp_path: Path) -> None:
    existing = tmp_path / "existing"
    existing.write_text("data")
    created = tmp_path / "created"

    def child() -> dict:
        load(allow_but(
            {"names": ["kill"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 1, "value": signal.SIGUSR1, "op": "SCMP_CMP_EQ"}]},
            {"names": ["openat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES,
             "args": [{"index": 2, "value": os.O_CREAT, "valueTwo": os.O_CREAT,
                       "op": "SCMP_CMP_MASKED_EQ"}]}))
        return {
            "kill0": errno_of(lambda: os.kill(os.getpid(), 0)),
            # Unfiltered, SIGUSR1 would kill this child: the filter must stop it.
            "usr1": errno_of(lambda: os.kill(os.getpid(), signal.SIGUSR1)),
            "read": errno_of(lambda: existing.read_text()),
            "create": errno_of(lambda: created.write_text("x")),
        }

    status, result = run_in_child(child)
    assert result == {"ok": {"kill0": 0, "usr1": errno.EPERM, "read": 0,
                             "create": errno.EACCES}}, status
    assert not created.exists()


def test_load_without_no_new_privs_leaves_it_unset_and_needs_cap_sys_admin() -> None:
    def with_cap() -> bool:
        load(allow_but({"names": ["getppid"], "action": "SCMP_ACT_LOG"}))
        return seccomp.no_new_privs_set()

    status, result = run_in_child(with_cap)
    assert result == {"ok": False}  # libseccomp did not set no_new_privs behind our back

    def without_cap() -> str:
        eff, prm, inh = linux.capget()
        sys_admin = capabilities.CAPABILITIES["CAP_SYS_ADMIN"]
        linux.capset(eff & ~(1 << sys_admin), prm, inh)
        try:
            load(allow_but({"names": ["getppid"], "action": "SCMP_ACT_LOG"}))
        except ContainerError as exc:
            return f"{exc} | {exc.hint}"
        return "loaded"

    status, result = run_in_child(without_cap)
    assert "seccomp: load filter" in result["ok"]
    assert "noNewPrivileges" in result["ok"]


def test_default_profile_blocks_namespace_mount_and_keyring_calls(tmp_path: Path) -> None:
    need(BUSYBOX.is_file(), "busybox-static missing: apt-get install busybox-static")
    work = tmp_path / "work.txt"

    def control() -> dict:
        result = probe_forbidden(tmp_path / "m1")
        return result

    (tmp_path / "m1").mkdir()
    (tmp_path / "m2").mkdir()
    _, unfiltered = run_in_child(control)
    # Without the filter these are not refused with EPERM (add_key gets EFAULT/EINVAL
    # from its bogus arguments) — so EPERM below is the filter's doing.
    assert unfiltered["ok"]["unshare"] == 0 and unfiltered["ok"]["mount"] == 0
    assert unfiltered["ok"]["keyctl"] != errno.EPERM
    assert unfiltered["ok"]["add_key"] != errno.EPERM

    def child() -> dict:
        linux.set_no_new_privs()
        load(profiles.default_seccomp_profile())
        forbidden = probe_forbidden(tmp_path / "m2")
        work.write_text("hello")
        text = work.read_text()
        pid = os.fork()
        if pid == 0:
            os.execv(str(BUSYBOX), ["true"])
        _, status = os.waitpid(pid, 0)
        return {**forbidden, "io": text, "busybox_true": os.waitstatus_to_exitcode(status)}

    status, result = run_in_child(child)
    assert os.waitstatus_to_exitcode(status) == 0, result
    assert result["ok"] == {"unshare": errno.EPERM, "mount": errno.EPERM,
                            "keyctl": errno.EPERM, "add_key": errno.EPERM,
                            "io": "hello", "busybox_true": 0}
    assert not os.path.ismount(tmp_path / "m2")
