"""Process model: the runtime forks an intermediate child that enters the namespaces and
forks the container init (so the init is PID 1 of a new pid ns and is not a child of the
short-lived CLI). Parent and children talk over a SOCK_SEQPACKET pair, one JSON message
per packet (runc's sync pipe):

    (the intermediate joins its v1 cgroups and sets its rlimits itself, first)
    intermediate → parent: idmap     (new user ns) parent writes uid/gid maps → go
    intermediate → parent: pid       the init exists (lo is up in a new netns); the
                                     parent takes the init's pid from the kernel (the
                                     intermediate's only child), never from the message,
                                     then kills the intermediate. Unless the init was
                                     forked straight into the cgroup2 dir, the parent
                                     moves it there → placed (to the init)
    init → parent:         hooks     parent runs prestart/createRuntime hooks → go
    init → parent:         created   ready, blocked on exec.fifo
    any  → parent:         error     {kind, message, hint}

Every process that enters the container is non-dumpable from before it joins anything
until its execve, holds only the fds it was given on purpose and none of the runtime's
environment (CVE-2019-5736, CVE-2024-21626: see init.py).
"""

from __future__ import annotations

import _socket
import gc
import os
import resource
import sys

from ociimg.errors import ContainerError, ExecutableNotFound, NotExecutable, OciimgError
from ociimg.oskit import linux
from ociimg.oskit.linux import CLONE
from ociimg.runtime import jsonio, namespaces
from ociimg.runtime.config import Rlimit, RuntimeConfig
from ociimg.runtime.records import field, record

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from collections.abc import Callable
    from typing import Any


@record(slots=True)
class InitOptions:
    """What the init needs besides config.json."""
    container_id: str
    fifo_fd: int  # O_PATH fd of exec.fifo, opened by the parent (runc passes it the same way)
    no_pivot: bool = False
    preserve_fds: int = 0
    new_keyring: bool = True
    console_fd: int | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    # linux.seccomp compiled to BPF by the parent (seccomp.filter_program), or None
    seccomp_program: bytes | None = None
    cgroup_tasks: tuple[str, ...] = ()  # CgroupManager.self_join_files
    cgroup_v2_dir: str | None = None  # CgroupManager.v2_dir
    cgroup_placed: bool = True  # set in the init: False when the parent must move it


def send_msg(sock: socket.socket, msg: dict[str, Any]) -> None:
    sock.send(jsonio.dumps(msg).encode())


def recv_msg(sock: socket.socket) -> dict[str, Any] | None:
    """The next message, None at EOF. A packet that is not a JSON object (only a forgery
    can be: see execution.py) reads as {"type": "invalid"}, which nobody acts on."""
    data = sock.recv(65536)
    if not data:
        return None
    try:
        msg = jsonio.loads(data)
    except (ValueError, RecursionError):
        msg = None
    return msg if isinstance(msg, dict) else {"type": "invalid"}


def error_msg(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, OciimgError):
        return {"type": "error", "kind": type(exc).__name__, "message": exc.message,
                "hint": exc.hint}
    if isinstance(exc, OSError):
        where = f" {exc.filename}" if exc.filename else ""
        return {"type": "error", "kind": "OSError", "message": f"{exc.strerror}{where}",
                "hint": None}
    # No traceback module: after pivot_root nothing may be imported, and formatting a
    # traceback would read source files — the container's files by then.
    return {"type": "error", "kind": type(exc).__name__,
            "message": f"{type(exc).__name__}: {exc}", "hint": None}


def printable(value: object, limit: int = 2000) -> str:
    """Text from a child for the operator's terminal: a process inside may have forged it
    (execution.py), so no control characters (escape sequences) and a bounded length."""
    return "".join(c if c.isprintable() else "?" for c in str(value)[:limit])


def raise_from_msg(msg: dict[str, Any], container_id: str) -> None:
    cls = {"ExecutableNotFound": ExecutableNotFound,
           "NotExecutable": NotExecutable}.get(msg.get("kind") or "", ContainerError)
    hint = msg.get("hint")
    # runc's words before the init's reason (callers match the reason, e.g. "executable
    # file not found"); the container's id goes to the hint.
    raise cls(f"unable to start container process: {printable(msg.get('message'))}",
              hint=f"container {container_id}" + (f": {printable(hint)}" if hint else ""))


def spawn(config: RuntimeConfig, options: InitOptions,
          run_init: Callable[[RuntimeConfig, InitOptions, socket.socket], None]
          ) -> tuple[int, socket.socket]:
    """Fork the intermediate child; returns (its pid, the parent's end of the sync pair).
    Where needs_sealed says so, the child goes on in an interpreter started from a sealed
    copy of ours (run_sealed) before it joins anything."""
    interpreter = sealed_interpreter() if needs_sealed(config) else None
    parent_sock, child_sock = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    keep = {0, 1, 2, child_sock.fileno(), options.fifo_fd,
            *range(3, 3 + options.preserve_fds)}
    if options.console_fd is not None:
        keep.add(options.console_fd)
    if interpreter is not None:
        keep.add(interpreter)
    pid = -1
    try:
        pid = os.fork()
    finally:
        if interpreter is not None and pid != 0:
            os.close(interpreter)
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            enter_guarded(keep)
            if interpreter is not None:
                inherit = [child_sock.fileno(), options.fifo_fd]
                if options.console_fd is not None:
                    inherit.append(options.console_fd)
                run_sealed(interpreter, _intermediate_sealed,
                           (config, options, child_sock.fileno(), run_init), inherit)
        except BaseException as exc:  # noqa: BLE001 - report everything to the parent
            _report(child_sock, exc)
            os._exit(1)
        _intermediate_main(config, options, child_sock, run_init)
    child_sock.close()
    return pid, parent_sock


def _intermediate_main(config: RuntimeConfig, options: InitOptions, sock: socket.socket,
                       run_init: Callable[[RuntimeConfig, InitOptions, socket.socket], None]
                       ) -> None:
    code = 1
    try:
        _intermediate(config, options, sock, run_init)
        code = 0
    except BaseException as exc:  # noqa: BLE001 - report everything to the parent
        _report(sock, exc)
    finally:
        os._exit(code)


def _intermediate_sealed(config: RuntimeConfig, options: InitOptions, sock_fd: int,
                         run_init: Callable[[RuntimeConfig, InitOptions, socket.socket], None]
                         ) -> None:
    _intermediate_main(config, options, _socket.socket(fileno=sock_fd), run_init)


def enter_guarded(keep: set[int]) -> None:
    """First steps of a freshly forked process that will enter a container: non-dumpable
    (its /proc/<pid>/{exe,mem,fd,environ} and ptrace need CAP_SYS_PTRACE in the host's
    user ns; fork keeps it, execve of the container's program resets it), only the fds in
    ``keep``, none of the runtime's environment (the program gets exactly process.env)."""
    linux.set_dumpable(False)
    linux.set_pdeathsig(9)  # SIGKILL: wait_to_be_killed must not outlive the parent
    # The fds closed below may still belong to Python objects of the parent's: keep the
    # cyclic GC from finalising one later, which would close a reused fd number.
    gc.freeze()
    linux.close_fds_except(keep)
    linux.scrub_environ()


def wait_to_be_killed(sock: socket.socket) -> None:
    """Close our end of the sync socket (the parent reads EOF once the child's closes on
    its execve too) and stop until the parent, having read our child list (only_child),
    kills us. Not a read of the socket: that would take a message meant for the child."""
    sock.close()
    os.kill(os.getpid(), 19)  # SIGSTOP, without importing signal's enums
    os._exit(0)


def kill_quietly(pid: int) -> None:
    """SIGKILL a child of ours (not yet reaped: the pid cannot have been reused)."""
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass


def finish(pid: int) -> None:
    """Kill and reap a child of ours that may be stopped in wait_to_be_killed."""
    kill_quietly(pid)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def only_child(pid: int) -> int:
    """The one child of ``pid`` (a process of ours that stays until it is killed), read
    from the kernel; 0 while it has none."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children", "rb") as f:
            kids = f.read().split()
    except FileNotFoundError:
        return 0
    if len(kids) > 1:
        raise ContainerError(f"process {pid} has {len(kids)} children, expected one")
    return int(kids[0]) if kids else 0


def _report(sock: socket.socket, exc: BaseException) -> None:
    msg = error_msg(exc)
    try:
        send_msg(sock, msg)
    except OSError:
        # After "created" the parent is gone: the container's stderr is all that is left
        # (runc prints exec failures the same way).
        try:
            os.write(2, f"ociimg-runtime: {msg['message']}\n".encode())
        except OSError:
            pass


def _expect_go(sock: socket.socket) -> None:
    msg = recv_msg(sock)
    if not msg or msg.get("type") != "go":
        os._exit(1)


def _intermediate(config: RuntimeConfig, options: InitOptions, sock: socket.socket,
                  run_init: Callable[[RuntimeConfig, InitOptions, socket.socket], None]
                  ) -> None:
    # First, while still the host's root (before a user ns).
    join_cgroups_v1(options.cgroup_tasks)
    if config.process:
        set_rlimits(config.process.rlimits)
    joins = {ns.type: ns.path for ns in config.namespaces if ns.path}
    namespaces.join_namespaces(joins)
    if config.namespace("user") and not config.namespace("user").path:
        linux.unshare(CLONE.NEWUSER)
        send_msg(sock, {"type": "idmap"})
        _expect_go(sock)
    if config.has_namespace("user"):
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
        # Root of the user ns is another uid on the host: the kernel set "dumpable" back
        # to fs.suid_dumpable (1 would open this process and the init it forks to the
        # container's processes through /proc/<pid>); set it again, as after every
        # credential change until execve (init.change_user).
        linux.set_dumpable(False)
    flags = namespaces.new_namespace_flags(config.namespaces)
    linux.unshare(flags & ~CLONE.NEWPID)  # the pid ns comes with the init's fork
    if config.time_offsets:
        namespaces.write_time_offsets(config)
    host_pid, placed = _fork_init(options.cgroup_v2_dir, flags & CLONE.NEWPID)
    if host_pid == 0:
        code = 1
        options.cgroup_placed = placed
        try:
            run_init(config, options, sock)
        except BaseException as exc:  # noqa: BLE001
            _report(sock, exc)
        finally:
            os._exit(code)
    if config.namespace("network") and not config.namespace("network").path:
        # Here, while the init does its mounts on the other CPU: the kernel's work to
        # bring a device up is ~1-3 ms. The parent waits for "pid" before start.
        namespaces.bring_up_loopback()
    send_msg(sock, {"type": "pid", "placed": placed})
    wait_to_be_killed(sock)


def join_cgroups_v1(tasks_files: tuple[str, ...]) -> None:
    """Join the container's v1 cgroups from inside: "0" moves the calling thread, and
    this process has only one (CgroupManager.self_join_files says why that is fast)."""
    for path in tasks_files:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)
        except OSError as exc:
            raise ContainerError(f"cgroup: cannot join {os.path.dirname(path)}: "
                                 f"{exc.strerror}", hint="check the cgroup's limits "
                                 "(an empty cpuset refuses tasks) and that the runtime "
                                 "runs as root") from exc


def _fork_init(v2_dir: str | None, pid_ns: int) -> tuple[int, bool]:
    """Fork the init (into a new pid ns when ``pid_ns``), straight into the cgroup2
    directory where the kernel allows it; returns (pid or 0, whether it is in place).
    Any refusal (no clone3 before Linux 5.7 or under a seccomp filter, no write access
    from inside a user ns, a v2 dir with processes and controllers) leaves the move to
    the parent, as before clone3 existed."""
    if v2_dir is not None:
        try:
            fd = os.open(v2_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            fd = -1
        if fd >= 0:
            try:
                return linux.fork_into_cgroup(fd, pid_ns), True
            except OSError:
                pass
            finally:
                os.close(fd)
    if pid_ns:
        linux.unshare(pid_ns)
    return os.fork(), v2_dir is None


def set_rlimits(rlimits: tuple[Rlimit, ...]) -> None:
    """The intermediate's own limits, inherited by the init, set before it enters a user
    ns: inside one they could no longer be raised (runc sets them from its parent for the
    same reason; this process is still the host's root here, so the result is the same
    without a round trip to the parent)."""
    for r in rlimits:
        res = getattr(resource, r.type)
        try:
            resource.setrlimit(res, (r.soft, r.hard))
        except (ValueError, PermissionError) as exc:
            _, hard = resource.getrlimit(res)
            raise ContainerError(
                f"{r.type}: cannot set soft={r.soft} hard={r.hard}: "
                f"cannot raise hard limit above {hard} on this host",
                hint="lower process.rlimits in config.json (raising needs CAP_SYS_RESOURCE)",
            ) from exc


# --- the sealed interpreter (CVE-2019-5736 under CAP_SYS_PTRACE) ----------------------
# Non-dumpable keeps /proc/<pid>/{exe,mem,fd} of a process that enters the container
# closed to the container's processes, unless one of them holds CAP_SYS_PTRACE in the
# host's user ns (a container without a user ns of its own, given that capability, as
# `--cap-add SYS_PTRACE` does; or any process of a pid ns that is shared): it could then
# open /proc/<pid>/exe, i.e. the host's python, keep the fd and write the binary later.
# runc runs every init from a sealed memfd copy of itself for this. Here the process that
# will enter the container execs a sealed copy of the interpreter and goes on there
# (run_sealed), which costs an interpreter start: only where such a process may exist.
# (The libraries the interpreter maps stay reachable only through /proc/<pid>/map_files,
# which takes CAP_SYS_ADMIN in the host's user ns, i.e. a container that is root anyway.)
PTRACE_CAPABILITY = "CAP_SYS_PTRACE"
_CAP_SYS_PTRACE_BIT = 19


def needs_sealed(config: RuntimeConfig, *specs: Any) -> bool:
    """Whether a process entering this container must run from a sealed interpreter: a
    process there may trace it, or its program will be exec'd without the trampoline (a
    "#!/proc/self/exe" program would then run the interpreter it was exec'd from)."""
    return not trampoline_possible(config.seccomp) or may_be_traced(config, *specs)


def may_be_traced(config: RuntimeConfig, *specs: Any) -> bool:
    """Whether a process that can see one entering this container may hold CAP_SYS_PTRACE
    over the host's user ns: the container's pid ns is not its own (processes we know
    nothing of), or it has no user ns of its own and its process (or one of ``specs``, the
    ProcessSpecs of an exec) may be given the capability."""
    pid_ns = config.namespace("pid")
    if pid_ns is None or pid_ns.path:
        return True
    if owns_user_ns(config):
        return False  # its processes hold capabilities in that user ns only
    return any(_may_hold_ptrace(spec) for spec in (config.process, *specs) if spec)


def owns_user_ns(config: RuntimeConfig) -> bool:
    """Whether the container has a user ns that is not the host's (new, or joined)."""
    ns = config.namespace("user")
    if ns is None:
        return False
    if ns.path is None:
        return True
    try:
        joined, ours = os.stat(ns.path), os.stat("/proc/self/ns/user")
    except OSError:
        return False
    return (joined.st_dev, joined.st_ino) != (ours.st_dev, ours.st_ino)


def _may_hold_ptrace(spec: Any) -> bool:
    caps = spec.capabilities
    if caps is None:  # capabilities left as they are: root's, all of them
        return True
    return any(PTRACE_CAPABILITY in (caps.get(kind) or ())
               for kind in ("bounding", "effective", "permitted", "inheritable", "ambient"))


def holds_ptrace(pid: int) -> bool:
    """Whether CAP_SYS_PTRACE is in the bounding set of ``pid`` (so it has or may gain it)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"CapBnd:"):
                    return bool(int(line.split()[1], 16) >> _CAP_SYS_PTRACE_BIT & 1)
    except (OSError, ValueError):
        pass
    return False


def sealed_interpreter() -> int:
    """A sealed, close-on-exec memfd copy of the running interpreter's binary."""
    try:
        src = os.open("/proc/self/exe", os.O_RDONLY | os.O_CLOEXEC)
        try:
            fd = _executable_memfd("ociimg-python")
            try:
                size = os.fstat(src).st_size
                copied = 0
                while copied < size:
                    n = os.sendfile(fd, src, None, size - copied)
                    if n == 0:
                        break
                    copied += n
                linux.add_seals(fd, _SEALS)
            except BaseException:
                os.close(fd)
                raise
            return fd
        finally:
            os.close(src)
    except OSError as exc:
        raise ContainerError(f"cannot run from a sealed copy of the interpreter: "
                             f"{exc.strerror}", hint="a process of this container may hold "
                             "CAP_SYS_PTRACE; the runtime needs an executable memfd "
                             "(vm.memfd_noexec 0 or 1)") from exc


def _executable_memfd(name: str) -> int:
    flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
    try:
        return os.memfd_create(name, flags | _MFD_EXEC)
    except OSError as exc:
        if exc.errno != 22:  # EINVAL: a kernel before 6.3
            raise
    return os.memfd_create(name, flags)


# gc off as in bin/ociimg-runtime: a short-lived process, and no collections during imports.
_BOOT = ("import gc,sys;gc.disable();sys.path[:0]=[sys.argv[1]];"
         "from ociimg.runtime.process import resume;resume(int(sys.argv[2]))")
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_sealed(interpreter: int, func: Callable[..., None], args: tuple[Any, ...],
               inherit: list[int]) -> None:
    """Exec the sealed ``interpreter`` (-I -S, no environment) and call ``func(*args)``
    there; ``inherit`` are the fds (close-on-exec here) that it needs, close-on-exec again
    once it runs. Call it first in a child made by enter_guarded, before it joins any
    namespace: the new interpreter is dumpable until resume() says otherwise, which
    nothing of a container can see yet, and its memory belongs to the user ns it execs
    in (non-dumpable protects it only from processes without CAP_SYS_PTRACE there: the
    host's, never the container's)."""
    import pickle
    data = pickle.dumps((func, args, inherit))
    job = os.memfd_create("ociimg-job", 0)
    view = memoryview(data)
    while view:
        view = view[os.write(job, view):]
    os.lseek(job, 0, os.SEEK_SET)
    for fd in (job, *inherit):
        os.set_inheritable(fd, True)
    os.execve(interpreter, [sys.executable or "python3", "-I", "-S", "-c", _BOOT,
                            _PACKAGE_ROOT, str(job)], {})


def resume(job: int) -> None:
    """The sealed interpreter's entry point (run_sealed)."""
    linux.set_dumpable(False)  # execve made this process dumpable again
    linux.set_pdeathsig(9)
    import pickle
    with os.fdopen(job, "rb") as f:
        func, args, inherit = pickle.loads(f.read())
    for fd in inherit:
        os.set_inheritable(fd, False)
    func(*args)
    os._exit(1)


# --- the exec trampoline (CVE-2019-5736 through "#!/proc/self/exe") -------------------
# At the container program's execve, /proc/self/exe is still the runtime's interpreter:
# a script whose interpreter line is /proc/self/exe (or a binfmt chain ending there) makes
# the kernel run the host's python inside the container, where the program's own ELF
# interpreter (the image's ld.so) then holds it as /proc/self/exe, keeps an fd and writes
# the host binary once it is not busy. runc runs from a sealed memfd copy of itself for
# this; a copy of python would cost a whole interpreter start per container. Instead the
# last execve goes through a tiny static program in a sealed memfd: what /proc/self/exe
# names at the container's execve is that private, unwritable copy. It takes
# argv = [TRAMPOLINE_ARGV0, path, argv...] and runs execve(path, argv, envp); refused, it
# says "ociimg-runtime: exec PATH: cannot execute" and exits 127 (ENOENT) or 126. Run by
# anything else (argv[0] not ours), it does the same without exec'ing.
TRAMPOLINE_ARGV0 = "ociimg-x"  # compared as 8 bytes
_TRAMPOLINE_PREFIX = b"ociimg-runtime: exec "
_TRAMPOLINE_SUFFIX = b": cannot execute\n"


def _x86_64_trampoline() -> bytes:
    import struct
    c = bytearray()

    def emit(hexcode: str) -> int:
        c.extend(bytes.fromhex(hexcode))
        return len(c)

    emit("488b442408")                     # mov rax,[rsp+8]         argv[0]
    emit("48b9" + TRAMPOLINE_ARGV0.encode().hex())  # mov rcx,imm64
    emit("483908")                         # cmp [rax],rcx
    not_ours = emit("7500") - 1            # jne fail
    emit("488b7c2410")                     # mov rdi,[rsp+16]        argv[1]: the program
    emit("488d742418")                     # lea rsi,[rsp+24]        &argv[2]: its argv
    emit("488b0424")                       # mov rax,[rsp]           argc
    emit("488d54c410")                     # lea rdx,[rsp+rax*8+16]  envp
    emit("b83b000000")                     # mov eax,59              execve
    fail = emit("0f05")                    # syscall
    c[not_ours] = fail - (not_ours + 1)
    emit("89c3")                           # mov ebx,eax             -errno
    emit("b801000000bf02000000")           # mov eax,1; mov edi,2    write(2, prefix)
    prefix_at = emit("488d3500000000") - 4  # lea rsi,[rip+prefix]
    emit("ba" + struct.pack("<I", len(_TRAMPOLINE_PREFIX)).hex())
    emit("0f05")
    emit("488b742410")                     # mov rsi,[rsp+16]        write(2, argv[1])
    emit("31d2")                           # xor edx,edx
    emit("4885f6")                         # test rsi,rsi
    no_path = emit("7400") - 1             # jz suffix
    loop = emit("803c1600")                # cmp byte [rsi+rdx],0    strlen
    loop -= 4
    at_end = emit("7400") - 1              # je write
    emit("48ffc2")                         # inc rdx
    write = emit("eb00")                   # jmp loop
    c[write - 1] = (loop - write) & 0xFF
    c[at_end] = write - (at_end + 1)
    emit("b801000000bf02000000")           # mov eax,1; mov edi,2
    suffix = emit("0f05")
    c[no_path] = suffix - (no_path + 1)
    emit("b801000000bf02000000")           # write(2, suffix)
    suffix_at = emit("488d3500000000") - 4
    emit("ba" + struct.pack("<I", len(_TRAMPOLINE_SUFFIX)).hex())
    emit("0f05")
    emit("bf7e000000")                     # mov edi,126
    emit("83fbfe")                         # cmp ebx,-2 (ENOENT)
    emit("7502")                           # jne exit
    emit("ffc7")                           # inc edi
    emit("b8e7000000")                     # mov eax,231             exit_group
    emit("0f05")
    struct.pack_into("<i", c, prefix_at, len(c) - (prefix_at + 4))
    c.extend(_TRAMPOLINE_PREFIX)
    struct.pack_into("<i", c, suffix_at, len(c) - (suffix_at + 4))
    c.extend(_TRAMPOLINE_SUFFIX)
    return _static_elf(62, bytes(c))  # EM_X86_64


def _static_elf(machine: int, code: bytes, base: int = 0x10000000) -> bytes:
    """ELF64 LE executable: one R+X PT_LOAD of the whole file, a non-executable stack."""
    import struct
    head = 64 + 2 * 56
    size = head + len(code)
    ehdr = struct.pack("<4s5B7xHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 0, 2, machine, 1,
                       base + head, 64, 0, 0, 64, 56, 2, 64, 0, 0)
    load = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, size, size, 0x1000)
    stack = struct.pack("<IIQQQQQQ", 0x6474E551, 6, 0, 0, 0, 0, 0, 16)  # PT_GNU_STACK RW
    return ehdr + load + stack + code


_TRAMPOLINES = {"x86_64": _x86_64_trampoline}
_MFD_EXEC = 0x10  # Linux 6.3: say so, or vm.memfd_noexec=1 makes the memfd non-executable
_SEALS = linux.F_SEAL_SEAL | linux.F_SEAL_SHRINK | linux.F_SEAL_GROW | linux.F_SEAL_WRITE


def open_trampoline(seccomp: dict[str, Any] | None) -> int | None:
    """A sealed, close-on-exec memfd holding the trampoline for this architecture, or
    None where there is none, the kernel refuses executable memfds, or the container's
    seccomp profile might refuse execveat (then the program is exec'd directly)."""
    build = _TRAMPOLINES.get(os.uname().machine)
    if build is None or not trampoline_possible(seccomp):
        return None
    try:
        fd = _executable_memfd("ociimg-exec")
    except OSError:
        return None
    try:
        os.write(fd, build())
        linux.add_seals(fd, _SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd


def trampoline_possible(seccomp: dict[str, Any] | None) -> bool:
    """Whether open_trampoline can give a trampoline here: an architecture with one, and
    a profile that surely allows execveat. (A kernel that refuses executable memfds,
    vm.memfd_noexec=2, leaves neither a trampoline nor a sealed interpreter.)"""
    return os.uname().machine in _TRAMPOLINES and _allows_syscall(seccomp, "execveat")


def allows_syscalls(seccomp: dict[str, Any] | None, *names: str) -> bool:
    """Whether the profile surely allows each of ``names`` whatever their arguments."""
    return all(_allows_syscall(seccomp, name) for name in names)


def _allows_syscall(seccomp: dict[str, Any] | None, name: str) -> bool:
    """Whether the profile surely allows ``name`` whatever its arguments."""
    if seccomp is None:
        return True
    allow = ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG")
    rules = [r for r in seccomp.get("syscalls") or () if name in (r.get("names") or ())]
    if not rules:
        return seccomp.get("defaultAction") in allow
    return all(r.get("action") in allow for r in rules) and \
        any(not r.get("args") for r in rules)
