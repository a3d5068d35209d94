"""Seccomp: the runtime-spec ``linux.seccomp`` object → a libseccomp filter.

``build_filter()`` validates and translates the object into plain data (actions as
libseccomp values, syscall names resolved to numbers, argument comparators), so the
translation is unit-testable without loading anything; ``new_context()`` feeds it to
libseccomp, and ``filter_program()`` compiles it to BPF through a root-only cache (the
init loads either: init.load_seccomp). Behaviour follows runc (``libcontainer/seccomp``):

* a syscall name libseccomp does not know for this architecture is skipped;
* a rule whose action equals the default action is dropped (libseccomp refuses it);
* several comparisons on the same argument index cannot live in one libseccomp rule,
  so each becomes a rule of its own (they then match as "any of", as in runc);
* libseccomp must not set no_new_privs by itself (SCMP_FLTATR_CTL_NNP=0): whether it
  is set is the spec's ``process.noNewPrivileges``. Without it, loading needs
  CAP_SYS_ADMIN, which is why the init loads seccomp *before* dropping capabilities
  when noNewPrivileges is false, and as late as possible otherwise (runc
  ``libcontainer/standard_init_linux.go``).
"""

from __future__ import annotations

import errno
import os
import stat

from ociimg.errors import ContainerError
from ociimg.oskit import linux
from ociimg.runtime import jsonio
from ociimg.runtime.lazylog import get_logger
from ociimg.runtime.records import record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

log = get_logger(__name__)

# libseccomp's seccomp.h action values; ERRNO and TRACE carry a 16-bit datum.
ACTIONS: dict[str, int] = {
    "SCMP_ACT_KILL": 0x00000000,
    "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000,
    "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": 0x00050000,
    "SCMP_ACT_TRACE": 0x7FF00000,
    "SCMP_ACT_LOG": 0x7FFC0000,
    "SCMP_ACT_ALLOW": 0x7FFF0000,
    "SCMP_ACT_NOTIFY": 0x7FC00000,
}
_WITH_DATUM = {"SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"}

# enum scmp_compare
OPERATORS: dict[str, int] = {
    "SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7,
}

# runtime-spec architecture names → libseccomp's names for seccomp_arch_resolve_name.
ARCHITECTURES: dict[str, str] = {
    "SCMP_ARCH_X86": "x86", "SCMP_ARCH_X86_64": "x86_64", "SCMP_ARCH_X32": "x32",
    "SCMP_ARCH_ARM": "arm", "SCMP_ARCH_AARCH64": "aarch64",
    "SCMP_ARCH_MIPS": "mips", "SCMP_ARCH_MIPS64": "mips64", "SCMP_ARCH_MIPS64N32": "mips64n32",
    "SCMP_ARCH_MIPSEL": "mipsel", "SCMP_ARCH_MIPSEL64": "mipsel64",
    "SCMP_ARCH_MIPSEL64N32": "mipsel64n32", "SCMP_ARCH_PPC": "ppc", "SCMP_ARCH_PPC64": "ppc64",
    "SCMP_ARCH_PPC64LE": "ppc64le", "SCMP_ARCH_S390": "s390", "SCMP_ARCH_S390X": "s390x",
    "SCMP_ARCH_PARISC": "parisc", "SCMP_ARCH_PARISC64": "parisc64",
    "SCMP_ARCH_RISCV64": "riscv64", "SCMP_ARCH_LOONGARCH64": "loongarch64",
    "SCMP_ARCH_M68K": "m68k", "SCMP_ARCH_SH": "sh", "SCMP_ARCH_SHEB": "sheb",
}

# enum scmp_filter_attr
ATTR_CTL_NNP = 3
ATTR_CTL_TSYNC = 4
ATTR_CTL_LOG = 6
ATTR_CTL_SSB = 7
ATTR_CTL_OPTIMIZE = 8
ATTR_API_SYSRAWRC = 9
FLAGS: dict[str, int] = {
    "SECCOMP_FILTER_FLAG_TSYNC": ATTR_CTL_TSYNC,
    "SECCOMP_FILTER_FLAG_LOG": ATTR_CTL_LOG,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": ATTR_CTL_SSB,
}

_NR_SCMP_ERROR = -1
_U64_MAX = 2**64 - 1


@record(frozen=True, slots=True)
class ArgCmp:
    index: int
    op: int
    value: int
    value_two: int = 0


@record(frozen=True, slots=True)
class Rule:
    """One seccomp_rule_add_array call."""

    name: str
    nr: int
    action: int
    args: tuple[ArgCmp, ...] = ()


@record(frozen=True, slots=True)
class SeccompFilter:
    default_action: int
    architectures: tuple[str, ...]  # libseccomp names, e.g. "x86_64"
    attributes: tuple[tuple[int, int], ...]  # (scmp_filter_attr, value)
    rules: tuple[Rule, ...]
    skipped: tuple[str, ...]  # syscall names unknown on this architecture


def _fail(where: str, what: str, hint: str) -> ContainerError:
    return ContainerError(f"linux.seccomp{where}: {what}", hint=hint)


def parse_action(name: object, errno_ret: object, where: str) -> int:
    if not isinstance(name, str) or name not in ACTIONS:
        raise _fail(where, f"unknown action {name!r}",
                    "use one of " + ", ".join(sorted(ACTIONS)))
    if name == "SCMP_ACT_NOTIFY":
        raise _fail(where, "SCMP_ACT_NOTIFY is not supported by ociimg",
                    "use SCMP_ACT_ERRNO or SCMP_ACT_LOG instead")
    value = ACTIONS[name]
    if name in _WITH_DATUM:
        ret = errno.EPERM if errno_ret is None else errno_ret
        if not isinstance(ret, int) or isinstance(ret, bool) or not 0 <= ret <= 0xFFFF:
            raise _fail(where, f"errnoRet {errno_ret!r} is not an errno number",
                        "give a small positive integer such as 1 (EPERM)")
        value |= ret
    return value


def parse_args(args: object, where: str) -> tuple[ArgCmp, ...]:
    if args is None:
        return ()
    if not isinstance(args, list):
        raise _fail(where, "args is not a list", "give [{index, value, op}, ...]")
    result = []
    for i, arg in enumerate(args):
        at = f"{where}.args[{i}]"
        if not isinstance(arg, dict):
            raise _fail(at, "not an object", "give {index, value, valueTwo, op}")
        index, op = arg.get("index"), arg.get("op")
        value, value_two = arg.get("value", 0), arg.get("valueTwo", 0)
        if not isinstance(index, int) or not 0 <= index <= 5:
            raise _fail(at, f"index {index!r} is not 0..5", "syscalls take at most 6 arguments")
        if op not in OPERATORS:
            raise _fail(at, f"unknown op {op!r}", "use one of " + ", ".join(OPERATORS))
        for label, v in (("value", value), ("valueTwo", value_two)):
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= _U64_MAX:
                raise _fail(at, f"{label} {v!r} is not an unsigned 64-bit integer",
                            "give a number between 0 and 2^64-1")
        result.append(ArgCmp(index, OPERATORS[op], value, value_two))
    return tuple(result)


def split_by_index(args: tuple[ArgCmp, ...]) -> list[tuple[ArgCmp, ...]]:
    """libseccomp rejects two comparisons of one argument in a rule; runc then adds
    one rule per comparison. Otherwise all comparisons form one rule ("and")."""
    indexes = [a.index for a in args]
    if len(indexes) == len(set(indexes)):
        return [args]
    return [(a,) for a in args]


def parse_architectures(arches: object) -> tuple[str, ...]:
    if arches is None:
        return ()
    if not isinstance(arches, list):
        raise _fail(".architectures", "not a list", 'give e.g. ["SCMP_ARCH_X86_64"]')
    result = []
    for i, arch in enumerate(arches):
        if arch not in ARCHITECTURES:
            raise _fail(f".architectures[{i}]", f"unknown architecture {arch!r}",
                        "use SCMP_ARCH_* names from the runtime-spec")
        result.append(ARCHITECTURES[arch])
    return tuple(result)


def parse_flags(flags: object) -> tuple[tuple[int, int], ...]:
    # Never let libseccomp set no_new_privs on its own (runc does the same).
    attrs = [(ATTR_CTL_NNP, 0)]
    for i, flag in enumerate(flags or []):
        if flag not in FLAGS:
            raise _fail(f".flags[{i}]", f"unsupported flag {flag!r}",
                        "supported: " + ", ".join(FLAGS))
        attrs.append((FLAGS[flag], 1))
    return tuple(attrs)


def build_filter(seccomp: dict,
                 resolve: Callable[[str], int] = linux.seccomp_syscall_resolve_name
                 ) -> SeccompFilter:
    """Validate ``linux.seccomp`` and translate it to rules (no kernel calls)."""
    if not isinstance(seccomp, dict):
        raise _fail("", "not an object", "give {defaultAction, syscalls, ...}")
    default = parse_action(seccomp.get("defaultAction"), seccomp.get("defaultErrnoRet"),
                           ".defaultAction")
    rules: list[Rule] = []
    skipped: list[str] = []
    syscalls = seccomp.get("syscalls") or []
    if not isinstance(syscalls, list):
        raise _fail(".syscalls", "not a list", "give [{names, action}, ...]")
    for i, entry in enumerate(syscalls):
        where = f".syscalls[{i}]"
        if not isinstance(entry, dict):
            raise _fail(where, "not an object", "give {names, action, args}")
        names = entry.get("names")
        if not isinstance(names, list) or not names or \
                not all(isinstance(n, str) and n for n in names):
            raise _fail(f"{where}.names", "not a non-empty list of syscall names",
                        'give e.g. ["mkdir", "mkdirat"]')
        action = parse_action(entry.get("action"), entry.get("errnoRet"), f"{where}.action")
        groups = split_by_index(parse_args(entry.get("args"), where))
        if action == default:
            continue
        for name in names:
            nr = resolve(name)
            if nr == _NR_SCMP_ERROR:
                if name not in skipped:
                    skipped.append(name)
                continue
            rules.extend(Rule(name, nr, action, group) for group in groups)
    if skipped:
        log.debug("seccomp: skipping syscalls unknown on this architecture: %s", skipped)
    return SeccompFilter(default, parse_architectures(seccomp.get("architectures")),
                         parse_flags(seccomp.get("flags")), tuple(rules), tuple(skipped))


def _add_architectures(ctx: int, arches: tuple[str, ...]) -> None:
    for arch in arches:
        token = linux.seccomp_arch_resolve_name(arch)
        if token == 0:
            log.warning("seccomp: libseccomp does not know architecture %s; skipped", arch)
            continue
        try:
            linux.seccomp_arch_add(ctx, token)
        except OSError as exc:
            if exc.errno != errno.EEXIST:  # the native arch is always present
                raise ContainerError(f"seccomp: add architecture {arch}: {exc}",
                                     hint="check linux.seccomp.architectures") from exc


def _add_rule(ctx: int, rule: Rule) -> None:
    try:
        linux.seccomp_rule_add_array(
            ctx, rule.action, rule.nr,
            [(a.index, a.op, a.value, a.value_two) for a in rule.args])
    except OSError as exc:
        raise ContainerError(f"seccomp: add rule for {rule.name}: {exc}",
                             hint="check that syscall's action and args in "
                                  "linux.seccomp.syscalls") from exc


def new_context(filt: SeccompFilter) -> int:
    """A libseccomp context holding the whole filter; the caller releases it."""
    ctx = linux.seccomp_init(filt.default_action)
    try:
        # libseccomp >= 2.5 reports kernel failures as ECANCELED unless asked for the
        # raw errno; older versions don't know the attribute, which is fine.
        try:
            linux.seccomp_attr_set(ctx, ATTR_API_SYSRAWRC, 1)
        except OSError:
            pass
        # Syscalls in a binary tree instead of a linear chain (libseccomp >= 2.5; same
        # verdicts): the kernel emulates the filter for every syscall number when it
        # installs it (the seccomp action cache), so Docker's default profile loads in
        # ~0.9 ms instead of ~1.5, and each filtered syscall runs fewer instructions.
        try:
            linux.seccomp_attr_set(ctx, ATTR_CTL_OPTIMIZE, 2)
        except OSError:
            pass
        for attr, value in filt.attributes:
            linux.seccomp_attr_set(ctx, attr, value)
        _add_architectures(ctx, filt.architectures)
        for rule in filt.rules:
            _add_rule(ctx, rule)
    except BaseException:
        linux.seccomp_release(ctx)
        raise
    return ctx


# The compiled filter cache: building the default profile through libseccomp costs ~5-11
# ms of every start, and the exported BPF of the same JSON on the same libseccomp and arch
# is the same program. One root-only dir for every state root (--root is per caller; the
# state root itself must be empty once its containers are deleted), on /run's tmpfs so a
# reboot or a libseccomp upgrade (part of the key) starts it afresh.
CACHE_DIR = "/run/ociimg-seccomp-cache"
_CACHE_MAGIC = b"ociimg-seccomp-bpf-1\n"
_MAX_PROGRAM = 0xFFFF * 8


def default_cache_dir() -> str | None:
    """CACHE_DIR for root (it must be root's alone); no cache for anyone else."""
    return CACHE_DIR if os.geteuid() == 0 and os.path.isdir("/run") else None


def filter_program(seccomp: dict, cache_dir: str | None) -> bytes | None:
    """``linux.seccomp`` as a classic-BPF program (what seccomp_load would install), from
    the cache when a verified entry exists, else built with libseccomp (and cached). None
    when the filter has flags (TSYNC, LOG, SPEC_ALLOW) that only libseccomp's load sets:
    the init then builds and loads it through libseccomp."""
    if not isinstance(seccomp, dict) or seccomp.get("flags"):
        return None
    key = cache_key(seccomp)
    if cache_dir is not None:
        try:
            program = read_cached(cache_dir, key)
        except (OSError, ValueError):
            program = None
        if program is not None:
            return program
    ctx = new_context(build_filter(seccomp))
    try:
        program = export_bpf(ctx)
    finally:
        linux.seccomp_release(ctx)
    if cache_dir is not None:
        try:
            store_cached(cache_dir, key, program)
        except OSError:
            pass  # a cache that cannot be written only costs the next start
    return program


def cache_key(seccomp: dict) -> str:
    """sha256 of the JSON (canonical), libseccomp's version, the machine, and this module
    (its translation rules are part of the result)."""
    own = os.stat(__file__)
    h = _sha256(_CACHE_MAGIC)
    h.update(f"{linux.seccomp_version()}|{os.uname().machine}|{own.st_size}|"
             f"{own.st_mtime_ns}|".encode())
    h.update(jsonio.dumps(seccomp, sort_keys=True, separators=(",", ":")).encode())
    return h.hexdigest()


def _sha256(data: bytes) -> object:
    try:
        from _sha256 import sha256  # not hashlib: it loads OpenSSL
    except ImportError:  # pragma: no cover - Python 3.12 renamed it
        from hashlib import sha256
    return sha256(data)


def export_bpf(ctx: int) -> bytes:
    fd = os.memfd_create("ociimg-seccomp", os.MFD_CLOEXEC)
    try:
        linux.seccomp_export_bpf(ctx, fd)
        size = os.lseek(fd, 0, os.SEEK_END)
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)


def _open_cache_dir(cache_dir: str, create: bool) -> int | None:
    """An fd of the cache dir if it is a real directory owned by us and closed to everyone
    else (0700); anything else is ignored, never trusted or repaired."""
    if create:
        try:
            os.mkdir(cache_dir, 0o700)
        except FileExistsError:
            pass
    try:
        fd = os.open(cache_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) & 0o077:
        os.close(fd)
        return None
    return fd


def read_cached(cache_dir: str, key: str) -> bytes | None:
    """A cached program, only from a regular 0600 file of ours whose digest matches."""
    dfd = _open_cache_dir(cache_dir, create=False)
    if dfd is None:
        return None
    try:
        fd = os.open(key, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
    except OSError:  # absent, or a symlink (ELOOP)
        return None
    finally:
        os.close(dfd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or \
                stat.S_IMODE(st.st_mode) & 0o077 or \
                st.st_size > len(_CACHE_MAGIC) + 32 + _MAX_PROGRAM:
            return None
        data = os.pread(fd, st.st_size, 0)
    finally:
        os.close(fd)
    head = len(_CACHE_MAGIC)
    program = data[head + 32:]
    if not data.startswith(_CACHE_MAGIC) or not program or len(program) % 8 or \
            _sha256(program).digest() != data[head:head + 32]:
        return None
    return program


def store_cached(cache_dir: str, key: str, program: bytes) -> None:
    """Write beside, rename into place: readers see a whole entry or none."""
    dfd = _open_cache_dir(cache_dir, create=True)
    if dfd is None:
        return
    tmp = f".{key}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=dfd)
        try:
            data = _CACHE_MAGIC + _sha256(program).digest() + program
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.rename(tmp, key, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dfd)
        except OSError:
            pass
        raise
    finally:
        os.close(dfd)


def no_new_privs_set() -> bool:
    return bool(linux.prctl(linux.PR_GET_NO_NEW_PRIVS))


__all__ = ["ACTIONS", "ARCHITECTURES", "OPERATORS", "ArgCmp", "Rule", "SeccompFilter",
           "build_filter", "filter_program", "new_context"]
