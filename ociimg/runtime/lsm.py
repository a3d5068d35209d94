"""Linux security modules: process.apparmorProfile, process.selinuxLabel and
linux.mountLabel. A label the host cannot apply is refused, never silently dropped (runc
refuses an AppArmor profile without AppArmor the same way): a container that asked for
confinement must not run unconfined while everyone believes otherwise.

AppArmor is applied as runc does (libcontainer/apparmor): "exec PROFILE" written to the
init's attr/apparmor/exec, so the transition happens at its execve. The file is opened
before pivot_root, from the host's /proc: after it, /proc would be the container's
(CVE-2019-16884). SELinux labels are not implemented: refused on every host.
"""

from __future__ import annotations

import os

from ociimg.errors import ContainerError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def apparmor_enabled() -> bool:
    """runc apparmor.IsEnabled: the securityfs dir exists and the module says Y."""
    if not os.path.isdir("/sys/kernel/security/apparmor"):
        return False
    try:
        with open("/sys/module/apparmor/parameters/enabled", "rb") as f:
            return f.read(1) == b"Y"
    except OSError:
        return False


def selinux_enabled() -> bool:
    return os.path.exists("/sys/fs/selinux/enforce")


def check_labels(raw: dict[str, Any]) -> None:
    """Refuse the labels of a config that this host (or this runtime) cannot apply."""
    process = raw.get("process") or {}
    linux = raw.get("linux") or {}
    if process.get("apparmorProfile") and not apparmor_enabled():
        raise ContainerError(f"process.apparmorProfile {process['apparmorProfile']!r}: "
                             "AppArmor is not enabled on this host",
                             hint="remove process.apparmorProfile or enable AppArmor")
    for where, label in (("process.selinuxLabel", process.get("selinuxLabel")),
                         ("linux.mountLabel", linux.get("mountLabel"))):
        if label:
            why = ("ociimg-runtime does not apply SELinux labels" if selinux_enabled()
                   else "SELinux is not enabled on this host")
            raise ContainerError(f"{where} {label!r}: {why}",
                                 hint=f"remove {where} from config.json")


def open_apparmor_exec(profile: str | None) -> int | None:
    """An fd of this process's AppArmor exec attribute, opened now (before pivot_root);
    None without a profile."""
    if not profile:
        return None
    for path in ("/proc/thread-self/attr/apparmor/exec", "/proc/thread-self/attr/exec"):
        try:
            return os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
    raise ContainerError(f"apparmor profile {profile!r}: no attr/exec in /proc")


def apply_apparmor(fd: int | None, profile: str | None) -> None:
    """Ask for the profile at the next execve (the container's program)."""
    if fd is None or not profile:
        return
    try:
        os.write(fd, f"exec {profile}".encode())
    except OSError as exc:
        raise ContainerError(f"apparmor profile {profile!r}: {exc.strerror}",
                             hint="check the profile is loaded (aa-status)") from exc
    finally:
        os.close(fd)
