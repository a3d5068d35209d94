"""The only ctypes module: thin, errno-checked wrappers over libc (and libseccomp).

Every failing call raises ``OSError(errno, "<syscall>: <strerror>", path)`` so the
message names the syscall, as crun and runc do. Signatures live in one table and
are applied once at import (pyudev's ``_ctypeslib`` pattern). Functions that the
stdlib already offers (``os.mknod``, ``os.setxattr``, ``os.setresuid``,
``resource.setrlimit``, ``os.unshare`` on 3.12+) are not duplicated here.
"""

from __future__ import annotations

import ctypes
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, func: Any, args: tuple[Any, ...]) -> int:
    if result == -1:
        err = ctypes.get_errno()
        path = None
        for a in args:
            if isinstance(a, bytes):
                path = a.decode(errors="replace")
                break
        raise OSError(err, f"{func.__name__}: {os.strerror(err)}", path)
    return result


_c_char_p = ctypes.c_char_p
_c_int = ctypes.c_int
_c_ulong = ctypes.c_ulong
_c_long = ctypes.c_long
_c_void_p = ctypes.c_void_p

# name: (argtypes, restype); each gets the errno check.
SIGNATURES: dict[str, tuple[list[Any], Any]] = {
    "mount": ([_c_char_p, _c_char_p, _c_char_p, _c_ulong, _c_char_p], _c_int),
    "umount2": ([_c_char_p, _c_int], _c_int),
    "unshare": ([_c_int], _c_int),
    "setns": ([_c_int, _c_int], _c_int),
    "prctl": ([_c_int, _c_ulong, _c_ulong, _c_ulong, _c_ulong], _c_int),
    "sethostname": ([_c_char_p, ctypes.c_size_t], _c_int),
    "fcntl": ([], _c_int),
    "clearenv": ([], _c_int),
    "setdomainname": ([_c_char_p, ctypes.c_size_t], _c_int),
    "syscall": ([], _c_long),
}

for _name, (_argtypes, _restype) in SIGNATURES.items():
    _f = getattr(libc, _name)
    if _argtypes:
        _f.argtypes = _argtypes
    _f.restype = _restype
    _f.errcheck = _check


def _b(path: str | os.PathLike[str] | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


class MS:
    """mount(2) flags. Plain ints in namespace classes, not IntFlag (enum)."""

    RDONLY = 1
    NOSUID = 2
    NODEV = 4
    NOEXEC = 8
    SYNCHRONOUS = 16
    REMOUNT = 32
    MANDLOCK = 64
    DIRSYNC = 128
    NOSYMFOLLOW = 256
    NOATIME = 1024
    NODIRATIME = 2048
    BIND = 4096
    MOVE = 8192
    REC = 16384
    SILENT = 32768
    UNBINDABLE = 1 << 17
    PRIVATE = 1 << 18
    SLAVE = 1 << 19
    SHARED = 1 << 20
    RELATIME = 1 << 21
    STRICTATIME = 1 << 24
    LAZYTIME = 1 << 25


class MNT:
    FORCE = 1
    DETACH = 2
    EXPIRE = 4
    UMOUNT_NOFOLLOW = 8


class CLONE:
    NEWTIME = 0x00000080
    NEWNS = 0x00020000
    NEWCGROUP = 0x02000000
    NEWUTS = 0x04000000
    NEWIPC = 0x08000000
    NEWUSER = 0x10000000
    NEWPID = 0x20000000
    NEWNET = 0x40000000


def mount(source: str | None, target: str | os.PathLike[str], fstype: str | None,
          flags: int = 0, data: str | None = None) -> None:
    libc.mount(_b(source), _b(target), _b(fstype), flags, None if data is None else data.encode())


def umount2(target: str | os.PathLike[str], flags: int = 0) -> None:
    libc.umount2(_b(target), flags)


def unshare(flags: int) -> None:
    libc.unshare(flags)


def setns(fd: int, nstype: int = 0) -> None:
    libc.setns(fd, nstype)


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return libc.prctl(option, arg2, arg3, arg4, arg5)


def sethostname(name: str) -> None:
    raw = name.encode()
    libc.sethostname(raw, len(raw))


def setdomainname(name: str) -> None:
    raw = name.encode()
    libc.setdomainname(raw, len(raw))


# ---------------------------------------------------------------------------
# Runtime core (lifecycle/rootfs helper): pivot_root, prctl options, mountinfo.
# ---------------------------------------------------------------------------

# pivot_root(2) has no glibc wrapper; numbers from the kernel's syscall tables.
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "ppc64le": 203, "s390x": 217, "riscv64": 41}

PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38


def pivot_root(new_root: str | os.PathLike[str], put_old: str | os.PathLike[str]) -> None:
    nr = _SYS_PIVOT_ROOT.get(os.uname().machine)
    if nr is None:
        raise OSError(38, f"pivot_root: unsupported architecture {os.uname().machine}")
    try:
        libc.syscall(ctypes.c_long(nr), ctypes.c_char_p(_b(new_root)), ctypes.c_char_p(_b(put_old)))
    except OSError as exc:
        # The generic check names "syscall"; say which one failed, as runc does.
        raise OSError(exc.errno, f"pivot_root: {os.strerror(exc.errno)}", os.fspath(new_root)) \
            from None


def set_no_new_privs() -> None:
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def set_child_subreaper() -> None:
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_pdeathsig(sig: int) -> None:
    prctl(PR_SET_PDEATHSIG, sig)


# keyctl(2) has no glibc wrapper (it lives in libkeyutils).
_SYS_KEYCTL = {"x86_64": 250, "aarch64": 219, "ppc64le": 283, "s390x": 280, "riscv64": 219}
KEYCTL_JOIN_SESSION_KEYRING = 1


def join_session_keyring(name: str) -> int:
    """Join (creating it if needed) the session keyring ``name``; returns its serial."""
    nr = _SYS_KEYCTL.get(os.uname().machine)
    if nr is None:
        raise OSError(38, f"keyctl: unsupported architecture {os.uname().machine}")
    try:
        return int(libc.syscall(ctypes.c_long(nr), ctypes.c_int(KEYCTL_JOIN_SESSION_KEYRING),
                                ctypes.c_char_p(name.encode())))
    except OSError as exc:
        raise OSError(exc.errno, f"keyctl: {os.strerror(exc.errno)}", name) from None


# clone3(2) with CLONE_INTO_CGROUP (Linux 5.7): the child is born in a cgroup v2
# directory. Moving a process there afterwards (a write to cgroup.procs) takes the global
# cgroup_threadgroup_rwsem for writing, which first waits for an RCU grace period
# (~5-20 ms on these hosts); a fork into the cgroup only takes its read side, which is
# what crun does too. Same syscall number on every architecture.
SYS_CLONE3 = 435
CLONE_INTO_CGROUP = 0x200000000
_SIGCHLD = 17  # the same on every Linux architecture ociimg supports


class _CloneArgs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size",
        "tls", "set_tid", "set_tid_size", "cgroup")]


def fork_into_cgroup(cgroup_fd: int, flags: int = 0) -> int:
    """os.fork(), except that the child starts in the cgroup v2 directory ``cgroup_fd``
    (and in the new namespaces of ``flags``, e.g. CLONE.NEWPID: unlike an unshare before
    a fork, a failed clone3 leaves no pid namespace behind whose first fork failed, which
    the kernel refuses every later fork into with ENOMEM); 0 in the child, its pid in the
    parent. CPython's fork hooks run around the syscall as
    in os.fork, and the call holds the GIL like os.fork does. Only for a single-threaded
    caller (the runtime's intermediate process): glibc's own fork bookkeeping does not run,
    so the child's thread data still names the parent's thread, which only raise()/abort()
    would read before the child execs."""
    args = _CloneArgs(flags=CLONE_INTO_CGROUP | flags, exit_signal=_SIGCHLD, cgroup=cgroup_fd)
    api = ctypes.pythonapi
    clone3 = ctypes.PyDLL(None, use_errno=True).syscall
    clone3.argtypes = [_c_long, _c_void_p, ctypes.c_size_t]
    clone3.restype = _c_long
    api.PyOS_BeforeFork()
    pid = clone3(SYS_CLONE3, ctypes.addressof(args), ctypes.sizeof(args))
    if pid == 0:
        api.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno()
    api.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(err, f"clone3: {os.strerror(err)}")
    return pid


# --- layers: openat2 (appended for ociimg.layers.paths) -----------------------
# openat2(2) with RESOLVE_IN_ROOT resolves a path as if the dirfd were "/": ".." and
# absolute symlinks are clamped to it, so a layer cannot make us write outside the
# rootfs (umoci uses filepath-securejoin for the same). Linux >= 5.6; the syscall
# number is the same on every architecture (unified syscall table).
SYS_OPENAT2 = 437


class RESOLVE:
    NO_XDEV = 0x01
    NO_MAGICLINKS = 0x02
    NO_SYMLINKS = 0x04
    BENEATH = 0x08
    IN_ROOT = 0x10
    CACHED = 0x20


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str | os.PathLike[str], flags: int, mode: int = 0,
            resolve: int = 0) -> int:
    how = _OpenHow(flags, mode, resolve)
    try:
        return int(libc.syscall(SYS_OPENAT2, _c_int(dirfd), _b(path), ctypes.byref(how),
                                ctypes.c_size_t(ctypes.sizeof(how))))
    except OSError as exc:
        raise OSError(exc.errno, f"openat2: {os.strerror(exc.errno)}", os.fspath(path)) from None


# ---------------------------------------------------------------------------
# Security helper: capabilities (capget/capset, capability prctls) and libseccomp.
# ---------------------------------------------------------------------------

PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_GET_KEEPCAPS = 7
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_IS_SET = 1
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_LOWER = 3
PR_CAP_AMBIENT_CLEAR_ALL = 4

# capset(2) version 3 carries 64-bit sets as two 32-bit halves (linux/capability.h).
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


for _name in ("capget", "capset"):
    _f = getattr(libc, _name)
    _f.argtypes = [ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapData)]
    _f.restype = _c_int
    _f.errcheck = _check


def capget(pid: int = 0) -> tuple[int, int, int]:
    """(effective, permitted, inheritable) of ``pid`` (0 = this thread) as 64-bit masks."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, pid)
    data = (_CapData * 2)()
    libc.capget(ctypes.byref(header), data)
    eff, prm, inh = (getattr(data[0], f) | (getattr(data[1], f) << 32)
                     for f in ("effective", "permitted", "inheritable"))
    return eff, prm, inh


def capset(effective: int, permitted: int, inheritable: int) -> None:
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    libc.capset(ctypes.byref(header), data)


# libseccomp (LGPL, Debian's libseccomp2) is loaded on first use so that importing
# this module never requires it. Its calls return -errno instead of setting errno,
# hence a checker of its own.
class ScmpArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


def _check_scmp(result: int, func: Any, args: tuple[Any, ...]) -> int:
    if result < 0:
        raise OSError(-result, f"{func.__name__}: {os.strerror(-result)}")
    return result


def _check_scmp_ctx(result: int | None, func: Any, args: tuple[Any, ...]) -> int:
    if not result:
        raise OSError(22, f"{func.__name__}: {os.strerror(22)}")
    return result


_u32 = ctypes.c_uint32
# name: (argtypes, restype, checker or None when the result is a value, not a status)
SECCOMP_SIGNATURES: dict[str, tuple[list[Any], Any, Any]] = {
    "seccomp_init": ([_u32], _c_void_p, _check_scmp_ctx),
    "seccomp_release": ([_c_void_p], None, None),
    "seccomp_arch_add": ([_c_void_p, _u32], _c_int, _check_scmp),
    "seccomp_arch_native": ([], _u32, None),
    "seccomp_arch_resolve_name": ([_c_char_p], _u32, None),
    "seccomp_attr_set": ([_c_void_p, _c_int, _u32], _c_int, _check_scmp),
    "seccomp_syscall_resolve_name": ([_c_char_p], _c_int, None),
    "seccomp_rule_add_array": ([_c_void_p, _u32, _c_int, ctypes.c_uint,
                                ctypes.POINTER(ScmpArgCmp)], _c_int, _check_scmp),
    "seccomp_load": ([_c_void_p], _c_int, _check_scmp),
    "seccomp_export_pfc": ([_c_void_p, _c_int], _c_int, _check_scmp),
    "seccomp_export_bpf": ([_c_void_p, _c_int], _c_int, _check_scmp),
}

_seccomp_lib: ctypes.CDLL | None = None


def libseccomp() -> ctypes.CDLL:
    """The loaded libseccomp.so.2 with signatures applied (OSError ENOENT-like if absent)."""
    global _seccomp_lib
    if _seccomp_lib is None:
        try:
            lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
        except OSError as exc:
            raise OSError(2, f"libseccomp.so.2: {exc}") from None
        for name, (argtypes, restype, checker) in SECCOMP_SIGNATURES.items():
            f = getattr(lib, name)
            f.argtypes = argtypes
            f.restype = restype
            if checker is not None:
                f.errcheck = checker
        _seccomp_lib = lib
    return _seccomp_lib


def seccomp_init(default_action: int) -> int:
    return libseccomp().seccomp_init(default_action)


def seccomp_release(ctx: int) -> None:
    libseccomp().seccomp_release(ctx)


def seccomp_arch_add(ctx: int, arch_token: int) -> None:
    libseccomp().seccomp_arch_add(ctx, arch_token)


def seccomp_arch_native() -> int:
    return int(libseccomp().seccomp_arch_native())


def seccomp_arch_resolve_name(name: str) -> int:
    """The libseccomp token for an arch name ("x86_64"), or 0 when unknown."""
    return int(libseccomp().seccomp_arch_resolve_name(name.encode()))


def seccomp_attr_set(ctx: int, attr: int, value: int) -> None:
    libseccomp().seccomp_attr_set(ctx, attr, value)


def seccomp_syscall_resolve_name(name: str) -> int:
    """Native syscall number; a negative pseudo-number for syscalls of other arches;
    -1 (__NR_SCMP_ERROR) when libseccomp does not know the name."""
    return int(libseccomp().seccomp_syscall_resolve_name(name.encode()))


def seccomp_rule_add_array(ctx: int, action: int, syscall_nr: int,
                           args: list[tuple[int, int, int, int]]) -> None:
    array = (ScmpArgCmp * max(len(args), 1))(*[ScmpArgCmp(*a) for a in args])
    libseccomp().seccomp_rule_add_array(ctx, action, syscall_nr, len(args), array)


def seccomp_load(ctx: int) -> None:
    libseccomp().seccomp_load(ctx)


def seccomp_export_pfc(ctx: int, fd: int) -> None:
    libseccomp().seccomp_export_pfc(ctx, fd)


def seccomp_export_bpf(ctx: int, fd: int) -> None:
    """Write the filter libseccomp would load, as struct sock_filter[], to ``fd``."""
    libseccomp().seccomp_export_bpf(ctx, fd)


class _ScmpVersion(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


def seccomp_version() -> str:
    """libseccomp's runtime version, e.g. "2.5.4"."""
    lib = libseccomp()
    lib.seccomp_version.restype = ctypes.POINTER(_ScmpVersion)
    v = lib.seccomp_version().contents
    return f"{v.major}.{v.minor}.{v.micro}"


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2


def seccomp_load_bpf(program: bytes) -> None:
    """Install a classic-BPF seccomp filter (struct sock_filter[], 8 bytes each) with
    prctl(PR_SET_SECCOMP): what seccomp_load does for a filter without TSYNC/LOG/SPEC_ALLOW
    flags. Needs no_new_privs or CAP_SYS_ADMIN, like seccomp_load."""
    if not program or len(program) % 8 or len(program) // 8 > 0xFFFF:
        raise OSError(22, "seccomp: BPF program of a bad size")
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.addressof(buf))
    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog))


# bpf(2) for cgroup v2 device filters (still the security section): a
# BPF_PROG_TYPE_CGROUP_DEVICE program attached to a cgroup decides every device
# open/mknod of its processes (cgroup v2 has no devices.allow; runc#2167).
_SYS_BPF = {"x86_64": 321, "aarch64": 280, "ppc64le": 361, "s390x": 351, "riscv64": 280}
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2


class _BpfProgLoadAttr(ctypes.Structure):
    _fields_ = [("prog_type", ctypes.c_uint32), ("insn_cnt", ctypes.c_uint32),
                ("insns", ctypes.c_uint64), ("license", ctypes.c_uint64),
                ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32),
                ("log_buf", ctypes.c_uint64), ("kern_version", ctypes.c_uint32),
                ("prog_flags", ctypes.c_uint32), ("prog_name", ctypes.c_char * 16),
                ("prog_ifindex", ctypes.c_uint32), ("expected_attach_type", ctypes.c_uint32)]


class _BpfAttachAttr(ctypes.Structure):
    _fields_ = [("target_fd", ctypes.c_uint32), ("attach_bpf_fd", ctypes.c_uint32),
                ("attach_type", ctypes.c_uint32), ("attach_flags", ctypes.c_uint32),
                ("replace_bpf_fd", ctypes.c_uint32)]


def _bpf(cmd: int, attr: ctypes.Structure, name: str) -> int:
    nr = _SYS_BPF.get(os.uname().machine)
    if nr is None:
        raise OSError(38, f"{name}: unsupported architecture {os.uname().machine}")
    try:
        return int(libc.syscall(ctypes.c_long(nr), ctypes.c_long(cmd), ctypes.byref(attr),
                                ctypes.c_uint(ctypes.sizeof(attr))))
    except OSError as exc:
        raise OSError(exc.errno, f"{name}: {os.strerror(exc.errno)}") from None


def bpf_load_cgroup_device_prog(insns: bytes, name: str = "ociimg_dev") -> int:
    """Load a cgroup device program (8-byte struct bpf_insn each); returns its fd.

    On a verifier rejection the OSError message carries the verifier log."""
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(b"Apache-2.0")
    attr = _BpfProgLoadAttr(prog_type=BPF_PROG_TYPE_CGROUP_DEVICE, insn_cnt=len(insns) // 8,
                            insns=ctypes.addressof(code), license=ctypes.addressof(lic),
                            prog_name=name.encode()[:15])
    try:
        return _bpf(BPF_PROG_LOAD, attr, "bpf(BPF_PROG_LOAD)")
    except OSError as exc:
        log = ctypes.create_string_buffer(65536)
        attr.log_level, attr.log_size, attr.log_buf = 1, len(log), ctypes.addressof(log)
        try:
            return _bpf(BPF_PROG_LOAD, attr, "bpf(BPF_PROG_LOAD)")
        except OSError:
            text = log.value.decode(errors="replace").strip().splitlines()[-3:]
            raise OSError(exc.errno, f"{exc.strerror}: {' | '.join(text)}") from None


def bpf_attach_cgroup_device_prog(cgroup_fd: int, prog_fd: int) -> None:
    attr = _BpfAttachAttr(target_fd=cgroup_fd, attach_bpf_fd=prog_fd,
                          attach_type=BPF_CGROUP_DEVICE, attach_flags=BPF_F_ALLOW_MULTI)
    _bpf(BPF_PROG_ATTACH, attr, "bpf(BPF_PROG_ATTACH)")


# ---------------------------------------------------------------------------
# Entering a container (CVE-2019-5736 class): what a process inside may see of a process
# that joins it, from /proc, until that process execs the container's program.
# ---------------------------------------------------------------------------

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3


def set_dumpable(dumpable: bool) -> None:
    """Non-dumpable: /proc/<pid>/{exe,fd,environ,mem,maps,...} and ptrace need
    CAP_SYS_PTRACE in the user ns the memory belongs to (the host's, for the runtime), and
    the files are owned by that ns's root. execve resets it to the default."""
    prctl(PR_SET_DUMPABLE, 1 if dumpable else 0)


def is_dumpable() -> bool:
    return prctl(PR_GET_DUMPABLE) == 1


def scrub_environ() -> None:
    """Forget the runtime's own environment in a process about to enter a container:
    libc's environ, and the bytes /proc/<pid>/environ reads (the initial stack's env
    area, fields env_start/env_end of /proc/self/stat), zeroed. (os.environ's copy stays
    in the heap, behind non-dumpable like the rest of the memory; clearing it costs more
    than everything else here.)"""
    libc.clearenv()
    fd = os.open("/proc/self/stat", os.O_RDONLY | os.O_CLOEXEC)
    try:
        stat = os.read(fd, 4096)
    finally:
        os.close(fd)
    fields = stat[stat.rindex(b")") + 2:].split()
    # stat(5): env_start and env_end are fields 50 and 51; [0] above is field 3.
    start, end = int(fields[47]), int(fields[48])
    if 0 < start < end:
        ctypes.memset(start, 0, end - start)


F_ADD_SEALS = 1033
F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE = 1, 2, 4, 8


def add_seals(fd: int, seals: int) -> None:
    """fcntl(F_ADD_SEALS) on a memfd (here, not through the fcntl module, which the
    commands that seal need for nothing else)."""
    libc.fcntl(_c_int(fd), _c_int(F_ADD_SEALS), _c_int(seals))


PROC_SUPER_MAGIC = 0x9FA0


def fs_type(fd: int) -> int:
    """f_type of fstatfs(fd): which filesystem the file is on."""
    buf = ctypes.create_string_buffer(256)  # struct statfs (120 bytes on 64-bit)
    if libc.fstatfs(_c_int(fd), buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"fstatfs: {os.strerror(err)}")
    return ctypes.c_long.from_buffer(buf).value


SYS_close_range = 436  # the same number on every architecture
CLOSE_RANGE_CLOEXEC = 4


def cloexec_from(first: int) -> None:
    """Mark every fd from ``first`` up close-on-exec, without /proc (close_range(2),
    Linux 5.11)."""
    libc.syscall(_c_long(SYS_close_range), ctypes.c_uint(first), ctypes.c_uint(0xFFFFFFFF),
                 ctypes.c_uint(CLOSE_RANGE_CLOEXEC))


def close_fds_except(keep: set[int]) -> None:
    """Close every fd but ``keep`` (CVE-2024-21626: an fd the caller leaked into the
    runtime is a way back to the host, e.g. a cwd of /proc/self/fd/N)."""
    low = 0
    for fd in sorted(keep | {-1}):
        if fd < 0:
            continue
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 20)
