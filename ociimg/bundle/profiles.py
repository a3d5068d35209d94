"""Default security profile data for containers: capabilities, masked paths, mounts, seccomp.

Data that ``ociimg.bundle`` writes into config.json; the runtime never reads it (it takes
whatever a bundle says, as runc does). The values follow what runc's ``specconv/example.go``,
Docker/moby and podman/containers-common hand a container by default, so an image behaves here
as it does there.
"""

from __future__ import annotations

import copy
import platform

from ociimg.runtime.capabilities import CAPABILITY_NAMES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# The 14 capabilities Docker grants by default (moby oci/caps/defaults.go); runc's example spec
# has fewer, but images are built and tested against Docker's set.
DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SYS_CHROOT",
    "CAP_MKNOD",
    "CAP_AUDIT_WRITE",
    "CAP_SETFCAP",
)

# Every capability the kernel defines, in bit order (linux/capability.h, 0..40).
ALL_CAPABILITIES: tuple[str, ...] = CAPABILITY_NAMES

# Paths that leak host information or allow host-wide effects; masked with /dev/null (files) or
# an empty read-only tmpfs (dirs) by the runtime (runc specconv/example.go, podman).
DEFAULT_MASKED_PATHS: tuple[str, ...] = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)

DEFAULT_READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)

# runtime-spec mount objects; order matters (/dev before /dev/pts, /dev/shm, /dev/mqueue).
DEFAULT_MOUNTS: tuple[dict[str, Any], ...] = (
    {"destination": "/proc", "type": "proc", "source": "proc", "options": []},
    {
        "destination": "/dev",
        "type": "tmpfs",
        "source": "tmpfs",
        "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
    },
    {
        # newinstance + ptmxmode: a private pts namespace (runtime-spec config-linux.md
        # "Default Devices"); gid=5 is the conventional tty group.
        "destination": "/dev/pts",
        "type": "devpts",
        "source": "devpts",
        "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
    },
    {
        "destination": "/dev/shm",
        "type": "tmpfs",
        "source": "shm",
        "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
    },
    {
        "destination": "/dev/mqueue",
        "type": "mqueue",
        "source": "mqueue",
        "options": ["nosuid", "noexec", "nodev"],
    },
    {
        "destination": "/sys",
        "type": "sysfs",
        "source": "sysfs",
        "options": ["nosuid", "noexec", "nodev", "ro"],
    },
    {
        "destination": "/sys/fs/cgroup",
        "type": "cgroup",
        "source": "cgroup",
        "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
    },
)

DEFAULT_RLIMITS: tuple[dict[str, Any], ...] = (
    {"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024},
)


def default_mounts() -> list[dict[str, Any]]:
    """A fresh, mutable copy of DEFAULT_MOUNTS (callers append to and edit it)."""
    return copy.deepcopy(list(DEFAULT_MOUNTS))


# --- seccomp ------------------------------------------------------------------------------
#
# A default-deny allow-list in the style of moby's profiles/seccomp/default.json: everything a
# normal program needs is allowed; syscalls that reach across the container boundary (mount
# table, namespaces, kernel keyring, modules, kexec, bpf, perf, ptrace, clock setting, reboot)
# fall through to the default action, EPERM. Rules that moby makes conditional on a capability
# are included only where DEFAULT_CAPABILITIES grants that capability (chroot via
# CAP_SYS_CHROOT, audit netlink sockets via CAP_AUDIT_WRITE).

EPERM = 1
ENOSYS = 38

_FILES = (
    "access", "chdir", "chmod", "chown", "chown32", "close", "close_range", "copy_file_range",
    "creat", "dup", "dup2", "dup3", "faccessat", "faccessat2", "fadvise64", "fadvise64_64",
    "fallocate", "fchdir", "fchmod", "fchmodat", "fchmodat2", "fchown", "fchown32", "fchownat",
    "fcntl", "fcntl64", "fdatasync", "flock", "fstat", "fstat64", "fstatat64", "fstatfs",
    "fstatfs64", "fsync", "ftruncate", "ftruncate64", "futimesat", "getcwd", "getdents",
    "getdents64", "lchown", "lchown32", "link", "linkat", "_llseek", "lseek", "lstat", "lstat64",
    "mkdir", "mkdirat", "mknod", "mknodat", "newfstatat", "open", "openat", "openat2",
    "name_to_handle_at", "readahead", "readlink", "readlinkat", "rename", "renameat",
    "renameat2", "rmdir", "stat", "stat64", "statfs", "statfs64", "statx", "symlink",
    "symlinkat", "sync", "sync_file_range", "syncfs", "truncate", "truncate64", "umask",
    "unlink", "unlinkat", "utime", "utimensat", "utimensat_time64", "utimes",
)

_XATTRS = (
    "fgetxattr", "flistxattr", "fremovexattr", "fsetxattr", "getxattr", "lgetxattr",
    "listxattr", "llistxattr", "lremovexattr", "lsetxattr", "removexattr", "setxattr",
)

_IO = (
    "pread64", "preadv", "preadv2", "pwrite64", "pwritev", "pwritev2", "read", "readv",
    "sendfile", "sendfile64", "splice", "tee", "write", "writev",
    "io_cancel", "io_destroy", "io_getevents", "io_setup", "io_submit",
    "io_uring_enter", "io_uring_register", "io_uring_setup",
)

_POLLING = (
    "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait",
    "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2",
    "inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch", "fanotify_mark",
    "poll", "ppoll", "ppoll_time64", "pselect6", "pselect6_time64", "select", "_newselect",
    "pipe", "pipe2", "ioctl",
)

_MEMORY = (
    "brk", "get_mempolicy", "madvise", "mbind", "membarrier", "memfd_create", "memfd_secret",
    "mincore", "mlock", "mlock2", "mlockall", "mmap", "mmap2", "mprotect", "mremap", "msync",
    "munlock", "munlockall", "munmap", "pkey_alloc", "pkey_free", "pkey_mprotect",
    "remap_file_pages", "set_mempolicy", "set_mempolicy_home_node",
)

_PROCESSES = (
    "capget", "capset", "execve", "execveat", "exit", "exit_group", "fork", "vfork",
    "getpgid", "getpgrp", "getpid", "getppid", "getpriority", "getrlimit", "getrusage",
    "getsid", "gettid", "ugetrlimit", "prlimit64", "setrlimit", "setpgid", "setpriority",
    "setsid", "ioprio_get", "ioprio_set", "prctl", "get_robust_list",
    "set_robust_list", "get_thread_area", "set_thread_area", "set_tid_address", "rseq",
    "restart_syscall", "seccomp", "wait4", "waitid", "waitpid", "getcpu", "sysinfo", "uname",
    "times", "syscall", "pidfd_open", "pidfd_send_signal", "pidfd_getfd", "process_mrelease",
    "process_vm_readv", "process_vm_writev", "landlock_add_rule", "landlock_create_ruleset",
    "landlock_restrict_self", "futex", "futex_time64", "futex_waitv",
)

_SCHEDULER = (
    "sched_get_priority_max", "sched_get_priority_min", "sched_getaffinity", "sched_getattr",
    "sched_getparam", "sched_getscheduler", "sched_rr_get_interval",
    "sched_rr_get_interval_time64", "sched_setaffinity", "sched_setattr", "sched_setparam",
    "sched_setscheduler", "sched_yield",
)

_CREDENTIALS = (
    "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups",
    "getgroups32", "getresgid", "getresgid32", "getresuid", "getresuid32", "getuid",
    "getuid32", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32",
    "setgroups", "setgroups32", "setregid", "setregid32", "setresgid", "setresgid32",
    "setresuid", "setresuid32", "setreuid", "setreuid32", "setuid", "setuid32",
)

_SIGNALS = (
    "alarm", "kill", "pause", "rt_sigaction", "rt_sigpending", "rt_sigprocmask",
    "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait",
    "rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "sigaction", "sigaltstack", "signal",
    "signalfd", "signalfd4", "sigpending", "sigprocmask", "sigreturn", "sigsuspend", "tgkill",
    "tkill",
)

_TIME = (
    "adjtimex", "clock_adjtime", "clock_adjtime64", "clock_getres", "clock_getres_time64",
    "clock_gettime", "clock_gettime64", "clock_nanosleep", "clock_nanosleep_time64",
    "getitimer", "gettimeofday", "nanosleep", "setitimer", "time", "timer_create",
    "timer_delete", "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime",
    "timer_settime64", "timerfd", "timerfd_create", "timerfd_gettime", "timerfd_gettime64",
    "timerfd_settime", "timerfd_settime64",
)

_SOCKETS = (
    "accept", "accept4", "bind", "connect", "getpeername", "getsockname", "getsockopt",
    "listen", "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "send",
    "sendmmsg", "sendmsg", "sendto", "setsockopt", "shutdown", "socket", "socketcall",
    "socketpair",
)

_IPC = (
    "ipc", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive",
    "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64", "mq_unlink", "msgctl",
    "msgget", "msgrcv", "msgsnd", "semctl", "semget", "semop", "semtimedop",
    "semtimedop_time64", "shmat", "shmctl", "shmdt", "shmget",
)

# Granted through DEFAULT_CAPABILITIES (moby gates these on the capability).
_CAPABILITY_GRANTED = (
    "chroot",  # CAP_SYS_CHROOT
)

ALLOWED_SYSCALLS: tuple[str, ...] = tuple(sorted(set(
    _FILES + _XATTRS + _IO + _POLLING + _MEMORY + _PROCESSES + _SCHEDULER + _CREDENTIALS
    + _SIGNALS + _TIME + _SOCKETS + _IPC + _CAPABILITY_GRANTED
)))

# Never allowed by the default profile: each one reaches outside the container or the kernel's
# isolation. Kept as data so tests can check none of them slipped into ALLOWED_SYSCALLS.
# (personality, clone and clone3 are neither: they get argument-checked rules below.)
DENIED_SYSCALLS: tuple[str, ...] = (
    "mount", "umount", "umount2", "mount_setattr", "move_mount", "open_tree", "fsopen",
    "fsconfig", "fsmount", "fspick", "pivot_root", "unshare", "setns", "keyctl", "add_key",
    "request_key", "ptrace", "reboot", "kexec_load", "kexec_file_load", "init_module",
    "finit_module", "delete_module", "bpf", "perf_event_open", "open_by_handle_at", "acct",
    "swapon", "swapoff", "settimeofday", "clock_settime", "clock_settime64", "stime",
    "sethostname", "setdomainname", "syslog", "quotactl", "lookup_dcookie", "fanotify_init",
    "userfaultfd", "iopl", "ioperm", "kcmp", "vhangup", "vmsplice", "nfsservctl",
    "uselib",
)

# Syscalls a capability beyond the defaults unlocks (moby default.json "includes.caps"): when a
# caller adds the capability, the kernel's own check is the guard, so seccomp steps aside.
CAPABILITY_SYSCALLS: dict[str, tuple[str, ...]] = {
    "CAP_DAC_READ_SEARCH": ("open_by_handle_at",),
    "CAP_SYS_ADMIN": (
        "bpf", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick", "lookup_dcookie",
        "mount", "mount_setattr", "move_mount", "open_tree", "perf_event_open", "quotactl",
        "quotactl_fd", "setdomainname", "sethostname", "setns", "syslog", "umount",
        "umount2", "unshare",
    ),
    "CAP_SYS_BOOT": ("reboot",),
    "CAP_SYS_MODULE": ("delete_module", "finit_module", "init_module"),
    "CAP_SYS_PACCT": ("acct",),
    "CAP_SYS_PTRACE": ("kcmp", "process_madvise", "ptrace"),
    "CAP_SYS_RAWIO": ("ioperm", "iopl"),
    "CAP_SYS_TIME": ("clock_settime", "clock_settime64", "settimeofday", "stime"),
    "CAP_SYS_TTY_CONFIG": ("vhangup",),
    "CAP_SYSLOG": ("syslog",),
    "CAP_BPF": ("bpf",),
    "CAP_PERFMON": ("perf_event_open",),
}

# Per-architecture additions (moby default.json "includes.arches").
_ARCH_SYSCALLS: dict[str, tuple[str, ...]] = {
    "x86_64": ("arch_prctl", "modify_ldt"),
    "aarch64": (
        "arm_fadvise64_64", "arm_sync_file_range", "breakpoint", "cacheflush", "set_tls",
        "sync_file_range2",
    ),
}

# Native arch first, then the compat ABIs the kernel also accepts on that machine.
_ARCHITECTURES: dict[str, tuple[str, ...]] = {
    "x86_64": ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"),
    "aarch64": ("SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"),
}

# Image-spec (GOARCH) names and uname -m names both map onto the uname name.
_ARCH_ALIASES = {"amd64": "x86_64", "x86_64": "x86_64", "arm64": "aarch64", "aarch64": "aarch64"}

# personality(2) values glibc and common tools use: PER_LINUX, PER_LINUX32, UNAME26,
# UNAME26|PER_LINUX32, and 0xffffffff (query the current persona).
_PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

# CLONE_NEWNS|CLONE_NEWCGROUP|CLONE_NEWUTS|CLONE_NEWIPC|CLONE_NEWUSER|CLONE_NEWPID|CLONE_NEWNET
# (linux/sched.h); clone(2) is allowed only if none of these bits is set. Same mask as moby.
CLONE_NAMESPACE_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 \
    | 0x20000000 | 0x40000000


def normalize_arch(arch: str | None = None) -> str:
    """Map an image-spec or uname architecture name to uname form; None means this host."""
    name = arch or platform.machine()
    return _ARCH_ALIASES.get(name, name)


def _allow(names: list[str] | tuple[str, ...], args: list[dict[str, Any]] | None = None,
           ) -> dict[str, Any]:
    rule: dict[str, Any] = {"names": list(names), "action": "SCMP_ACT_ALLOW"}
    if args:
        rule["args"] = args
    return rule


def _personality_rules() -> list[dict[str, Any]]:
    return [
        _allow(["personality"], [{"index": 0, "value": value, "op": "SCMP_CMP_EQ"}])
        for value in _PERSONALITIES
    ]


def _clone_rules(machine: str) -> list[dict[str, Any]]:
    # s390 swaps clone's first two arguments (flags come second), as moby's profile notes.
    index = 1 if machine.startswith("s390") else 0
    no_namespaces = {"index": index, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0,
                     "op": "SCMP_CMP_MASKED_EQ"}
    return [
        _allow(["clone"], [no_namespaces]),
        # clone3 passes flags in a struct seccomp cannot inspect; ENOSYS makes glibc fall back
        # to clone(2), which the rule above can check (moby does the same).
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
    ]


def default_seccomp_profile(arch: str | None = None,
                            capabilities: tuple[str, ...] | list[str] = DEFAULT_CAPABILITIES,
                            ) -> dict[str, Any]:
    """The default runtime-spec ``linux.seccomp`` object for ``arch`` (default: this host).

    ``arch`` may be an image-spec name (amd64, arm64) or a uname one (x86_64, aarch64).
    An unknown architecture gets an empty ``architectures`` list, meaning the native ABI only.
    ``capabilities`` is the container's bounding set: syscalls gated on a capability beyond
    the defaults are allowed when it holds that capability, as moby's profile does.
    """
    machine = normalize_arch(arch)
    granted: set[str] = set(ALLOWED_SYSCALLS) | set(_ARCH_SYSCALLS.get(machine, ()))
    for cap in capabilities:
        granted |= set(CAPABILITY_SYSCALLS.get(cap, ()))
    syscalls = [_allow(sorted(granted)), *_personality_rules()]
    if "CAP_SYS_ADMIN" in capabilities:
        # With CAP_SYS_ADMIN creating namespaces is the point (moby allows clone and clone3).
        syscalls.append(_allow(["clone", "clone3"]))
    else:
        syscalls.extend(_clone_rules(machine))
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": list(_ARCHITECTURES.get(machine, ())),
        "syscalls": syscalls,
    }
