"""linux.seccomp → libseccomp rules, without loading anything into the kernel."""

from __future__ import annotations

import errno

import pytest

from ociimg.bundle import profiles
from ociimg.errors import ContainerError
from ociimg.runtime import seccomp
from ociimg.runtime.seccomp import ArgCmp, Rule
from tests.conftest import need

ALLOW, ERRNO, KILL_PROCESS = 0x7FFF0000, 0x00050000, 0x80000000
FAKE_NRS = {"mkdir": 83, "mkdirat": 258, "unshare": 272, "personality": 135, "kill": 62,
            "socketcall": -101}


def fake_resolve(name: str) -> int:
    return FAKE_NRS.get(name, -1)


def build(obj: dict) -> seccomp.SeccompFilter:
    return seccomp.build_filter(obj, resolve=fake_resolve)


def libseccomp_available() -> bool:
    try:
        seccomp.linux.libseccomp()
        return True
    except OSError:
        return False


def test_actions_and_errno_datum() -> None:
    filt = build({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"},
        {"names": ["unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSPC},
        {"names": ["kill"], "action": "SCMP_ACT_KILL_PROCESS"},
    ]})
    assert filt.default_action == ALLOW
    assert filt.rules == (
        Rule("mkdir", 83, ERRNO | errno.EPERM),  # errnoRet defaults to EPERM
        Rule("mkdirat", 258, ERRNO | errno.EPERM),
        Rule("unshare", 272, ERRNO | errno.ENOSPC),
        Rule("kill", 62, KILL_PROCESS),
    )


@pytest.mark.parametrize("name,value", [
    ("SCMP_ACT_KILL", 0), ("SCMP_ACT_KILL_THREAD", 0), ("SCMP_ACT_TRAP", 0x30000),
    ("SCMP_ACT_LOG", 0x7FFC0000), ("SCMP_ACT_TRACE", 0x7FF00000 | errno.EPERM),
])
def test_action_values_match_libseccomp(name: str, value: int) -> None:
    assert build({"defaultAction": name}).default_action == value


def test_default_errno_ret() -> None:
    filt = build({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38})
    assert filt.default_action == ERRNO | 38


def test_unknown_syscalls_are_skipped_like_runc() -> None:
    filt = build({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "no_such_call", "socketcall"], "action": "SCMP_ACT_ERRNO"}]})
    assert [r.name for r in filt.rules] == ["mkdir", "socketcall"]  # pseudo-numbers kept
    assert filt.skipped == ("no_such_call",)


def test_rules_equal_to_the_default_are_dropped() -> None:
    filt = build({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"},  # EPERM == default EPERM
        {"names": ["unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
        {"names": ["kill"], "action": "SCMP_ACT_ALLOW"}]})
    assert [r.name for r in filt.rules] == ["unshare", "kill"]


def test_arguments_become_comparators() -> None:
    filt = build({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["kill"], "action": "SCMP_ACT_ALLOW", "args": [
            {"index": 0, "value": 1, "op": "SCMP_CMP_GT"},
            {"index": 1, "value": 0xFF, "valueTwo": 9, "op": "SCMP_CMP_MASKED_EQ"}]}]})
    assert filt.rules == (Rule("kill", 62, ALLOW, (ArgCmp(0, 6, 1, 0), ArgCmp(1, 7, 0xFF, 9))),)


@pytest.mark.parametrize("op,number", [
    ("SCMP_CMP_NE", 1), ("SCMP_CMP_LT", 2), ("SCMP_CMP_LE", 3), ("SCMP_CMP_EQ", 4),
    ("SCMP_CMP_GE", 5), ("SCMP_CMP_GT", 6), ("SCMP_CMP_MASKED_EQ", 7)])
def test_operator_numbers_match_enum_scmp_compare(op: str, number: int) -> None:
    filt = build({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["kill"], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": 2, "value": 5, "op": op}]}]})
    assert filt.rules[0].args == (ArgCmp(2, number, 5, 0),)


def test_same_argument_twice_becomes_separate_rules() -> None:
    # libseccomp refuses two comparisons of one argument in a rule (EINVAL); runc
    # then adds one rule per comparison.
    filt = build({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [
            {"index": 0, "value": 0, "op": "SCMP_CMP_EQ"},
            {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}]})
    assert [r.args for r in filt.rules] == [(ArgCmp(0, 4, 0),), (ArgCmp(0, 4, 8),)]


def test_architectures_and_flags() -> None:
    filt = build({"defaultAction": "SCMP_ACT_ALLOW",
                  "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64"],
                  "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"]})
    assert filt.architectures == ("x86_64", "x86", "aarch64")
    # NNP is always switched off in libseccomp: process.noNewPrivileges decides it.
    assert filt.attributes == ((seccomp.ATTR_CTL_NNP, 0), (seccomp.ATTR_CTL_LOG, 1),
                               (seccomp.ATTR_CTL_SSB, 1))


@pytest.mark.parametrize("obj,fragment", [
    ({"defaultAction": "SCMP_ACT_BOGUS"}, "defaultAction: unknown action"),
    ({}, "defaultAction: unknown action None"),
    ({"defaultAction": "SCMP_ACT_NOTIFY"}, "SCMP_ACT_NOTIFY is not supported"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": -1}, "errnoRet -1"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 70000}, "errnoRet 70000"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["kill"], "action": "x"}]},
     "syscalls[0].action: unknown action 'x'"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [], "action": "SCMP_ACT_LOG"}]},
     "syscalls[0].names"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"action": "SCMP_ACT_LOG"}]},
     "syscalls[0].names"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": "kill"}, ".syscalls: not a list"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["kill"], "action":
      "SCMP_ACT_LOG", "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]},
     "args[0]: index 6"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["kill"], "action":
      "SCMP_ACT_LOG", "args": [{"index": 0, "value": -1, "op": "SCMP_CMP_EQ"}]}]},
     "value -1"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["kill"], "action":
      "SCMP_ACT_LOG", "args": [{"index": 0, "value": 2**64, "op": "SCMP_CMP_EQ"}]}]},
     "is not an unsigned 64-bit"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["kill"], "action":
      "SCMP_ACT_LOG", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ISH"}]}]},
     "unknown op"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_Z80"]},
     "architectures[0]: unknown architecture"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_FAST"]},
     "flags[0]: unsupported flag"),
    ("not an object", "linux.seccomp: not an object"),
])
def test_invalid_objects_are_container_errors(obj: object, fragment: str) -> None:
    with pytest.raises(ContainerError) as info:
        build(obj)  # type: ignore[arg-type]
    assert fragment in str(info.value)
    assert str(info.value).startswith("linux.seccomp")
    assert info.value.hint


def test_real_resolver_knows_common_syscalls_and_rejects_junk() -> None:
    need(libseccomp_available(), "libseccomp.so.2 is not installed")
    filt = seccomp.build_filter({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdirat", "getpid", "definitely_not_a_syscall"],
         "action": "SCMP_ACT_ERRNO"}]})
    assert [r.name for r in filt.rules] == ["mkdirat", "getpid"]
    assert all(r.nr >= 0 for r in filt.rules)
    assert filt.skipped == ("definitely_not_a_syscall",)


def test_rendered_filter_holds_the_rules() -> None:
    # libseccomp builds the BPF program and prints it as pseudo-code: the rules are
    # really there, per architecture, without loading anything.
    need(libseccomp_available(), "libseccomp.so.2 is not installed")
    filt = seccomp.build_filter({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64"],
        "syscalls": [
            {"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "args": [
                {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"},
                {"index": 0, "value": 9, "op": "SCMP_CMP_EQ"}]}]})
    text = seccomp.render_filter(filt)
    assert 'filter for syscall "getpid"' in text
    assert "action ERRNO(13);" in text
    assert "== 8" in text and "== 9" in text
    assert "action ALLOW;" in text
    native = seccomp.linux.seccomp_arch_native()
    assert f"if ($arch == {native})" in text


def test_default_profile_translates() -> None:
    need(libseccomp_available(), "libseccomp.so.2 is not installed")
    profile = profiles.default_seccomp_profile()
    filt = seccomp.build_filter(profile)
    names = {r.name for r in filt.rules}
    assert filt.default_action == ERRNO | errno.EPERM
    assert {"read", "write", "openat", "execve", "clone"} <= names
    assert not names & {"mount", "umount2", "unshare", "setns", "keyctl", "add_key",
                        "request_key", "kexec_load", "init_module", "bpf", "reboot"}
    text = seccomp.render_filter(filt)
    assert "action ERRNO(1);" in text  # the default
