"""Probes for the seccomp tests: is seccomp usable here, and which of the calls a default
profile forbids does this process get refused (errno per call)."""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ociimg.oskit import linux
from tests.conftest import need

KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING = 0, -3


def errno_of(call: Callable[[], Any]) -> int:
    """0 when ``call`` succeeds, else the errno it failed with."""
    try:
        call()
        return 0
    except OSError as exc:
        return exc.errno or -1


def libseccomp_ok() -> bool:
    try:
        linux.libseccomp()
        return True
    except OSError:
        return False


def need_seccomp() -> None:
    """Skip (strict mode: fail) without libseccomp or a kernel with seccomp."""
    need(libseccomp_ok(), "libseccomp.so.2 missing: apt-get install libseccomp2")
    need("Seccomp:" in Path("/proc/self/status").read_text(), "kernel without seccomp")


def syscall_by_name(name: str, *args: int) -> int:
    nr = linux.seccomp_syscall_resolve_name(name)
    return int(linux.libc.syscall(ctypes.c_long(nr), *(ctypes.c_long(a) for a in args)))


def probe_forbidden(tmp_path: Path) -> dict[str, int]:
    """The errno of each call a default profile refuses (0: allowed), made in this process."""
    return {
        "unshare": errno_of(lambda: linux.unshare(linux.CLONE.NEWNS)),
        "mount": errno_of(lambda: linux.mount("none", tmp_path, "tmpfs")),
        "keyctl": errno_of(lambda: syscall_by_name("keyctl", KEYCTL_GET_KEYRING_ID,
                                                   KEY_SPEC_SESSION_KEYRING, 0)),
        "add_key": errno_of(lambda: syscall_by_name("add_key", 0, 0, 0, 0, 0)),
    }
