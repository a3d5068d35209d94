"""The container init: every step between fork and execve, in runc's order
(runc's libcontainer/standard_init_linux.go and rootfs_linux.go).

It runs in the forked init process (PID 1 of the container's pid ns). Everything it will
need is imported and resolved *before* pivot_root: afterwards the host filesystem is gone
and the container's files must never be loaded into this privileged process, so sys.path
is emptied (a lazy import would read container-controlled code — CVE-2019-5736's lesson:
the container must never reach the runtime's interpreter or code). The init never re-execs
Python: it is non-dumpable from before it exists in any container namespace (its
/proc/<pid>/{exe,mem,fd,environ} stay closed to the container; process.enter_guarded), and
its execve goes through a sealed trampoline (process.open_trampoline), so that no
/proc/self/exe of the container's program ever names the host's interpreter.
"""

from __future__ import annotations

import errno
import os
import stat
import sys

from ociimg.errors import ContainerError, ExecutableNotFound, NotExecutable, OciimgError
from ociimg.oskit import linux
from ociimg.runtime import (
    capabilities,
    hooks,
    lazylog,
    lsm,
    mounts,
    rootfs,
    seccomp,
    state,
)
from ociimg.runtime.config import ProcessSpec, RuntimeConfig, User
from ociimg.runtime.lazylog import get_logger
from ociimg.runtime.process import (
    TRAMPOLINE_ARGV0,
    InitOptions,
    allows_syscalls,
    open_trampoline,
    recv_msg,
    send_msg,
)
from ociimg.runtime.records import field, record

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from typing import Any

log = get_logger(__name__)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@record(slots=True)
class SeccompFilter:
    """The process's seccomp filter until load_seccomp installs it (once): BPF compiled
    by the parent (seccomp.filter_program) or a libseccomp context."""
    program: bytes | None = None
    context: int | None = None


@record(slots=True)
class InitContext:
    config: RuntimeConfig
    options: InitOptions
    sock: socket.socket
    process: ProcessSpec
    rootfs: str
    host_pid: int = 0
    fifo_fd: int = -1
    seccomp: SeccompFilter = field(default_factory=SeccompFilter)
    cap_sets: Any = None
    trampoline: int | None = None  # process.open_trampoline
    apparmor_fd: int | None = None
    warnings: list[str] = field(default_factory=list)


def capture_warnings(sink: list[str]) -> None:
    """Warnings of the init's steps go to the runtime's log, not the container's stderr
    (runc logs them the same way); lazylog keeps logging out of the init."""
    lazylog.redirect(lambda _level, text: sink.append(text), "warning")


def run_init(config: RuntimeConfig, options: InitOptions, sock: socket.socket) -> None:
    if config.process is None:
        raise ContainerError("config.json has no process", hint="add a process section")
    ctx = InitContext(config, options, sock, config.process,
                      os.path.realpath(config.root_path), host_pid=int(os.readlink("/proc/self")))
    capture_warnings(ctx.warnings)
    console = None
    if ctx.process.terminal and options.console_fd is not None:
        # Imported only for a terminal (termios, tty, socket), and here: nothing may be
        # imported after pivot_root.
        from ociimg.runtime import console
    os.setsid()
    enter_cgroup_namespace(ctx)
    check_config(config)
    if options.new_keyring:
        join_own_keyring(options.container_id)
    prepare_rootfs(ctx)
    run_runtime_hooks(ctx)
    hooks.run_hooks(config.hooks, "createContainer", hook_state(ctx, "creating"))
    prepare_security(ctx)
    ctx.fifo_fd = options.fifo_fd
    enter_rootfs(ctx)
    forget_host_imports()
    if console is not None:
        console.setup_console(options.console_fd, ctx.process.console_size)
    finalize_rootfs(ctx)
    set_identity(ctx)
    protect_kernel_interfaces(ctx)
    # chdir before setuid, retried after it when root could not (runc finalizeNamespace):
    # a cwd on e.g. root-squashed NFS is only enterable as the container user. First try
    # before a filter is in: it may predate openat2 and kill on unknown syscalls.
    entered = try_chdir(ctx.process.cwd)
    if ctx.process.no_new_privileges:
        linux.set_no_new_privs()
    else:
        # Without no_new_privs the filter must go in while we still hold CAP_SYS_ADMIN,
        # i.e. before the capabilities are dropped (runc standard_init_linux.go).
        load_seccomp(ctx.seccomp)
    change_user(ctx.process.user, ctx.cap_sets)
    if not entered:
        change_dir(ctx.process.cwd)
    path = lookup_executable(ctx.process)
    wait_for_start(ctx)
    try:
        run_start_hooks(ctx)
        # With no_new_privs the filter goes in as late as possible: after it only the
        # fd clean-up and execve run (runc: "as late as possible"); unless
        # wait_for_start could load it earlier.
        load_seccomp(ctx.seccomp)
        close_fds(ctx.options.preserve_fds)
    except (OciimgError, OSError) as exc:
        fail_start(ctx, exc)
    execute(path, ctx.process, ctx.trampoline)


def enter_cgroup_namespace(ctx: InitContext) -> None:
    """Make the container's cgroup ns once the init is in its cgroups (born there, or
    moved by the parent, which then says "placed"): a new cgroup namespace's root is the
    cgroup its creator is in (cgroup_namespaces(7)), so the container's /proc/self/cgroup
    and cgroup mounts start at its own cgroup."""
    if not ctx.options.cgroup_placed:
        msg = recv_msg(ctx.sock)
        if not msg or msg.get("type") != "placed":
            raise ContainerError("cgroup: the runtime did not move the init into the "
                                 "container's cgroup", hint="check the runtime log")
    ns = ctx.config.namespace("cgroup")
    if ns is not None and ns.path is None:
        linux.unshare(linux.CLONE.NEWCGROUP)


def execute(path: str, process: ProcessSpec, trampoline: int | None = None) -> None:
    """execve, through the trampoline when there is one (process.open_trampoline: then
    /proc/self/exe at the program's execve is not the host's interpreter); on failure say
    why on the container's stderr and exit like a shell (126 not executable, 127 not
    found): nobody else is listening any more."""
    env = env_dict(process.env)
    reset_signals()
    via = ""
    try:
        if trampoline is not None:
            via = " (through the runtime's exec trampoline)"
            os.execve(trampoline, [TRAMPOLINE_ARGV0, path, *process.args], env)
        os.execve(path, list(process.args), env)
    except OSError as exc:
        os.write(2, f"ociimg-runtime: exec {path}{via}: {exc.strerror}\n".encode())
        os._exit(127 if exc.errno == errno.ENOENT else 126)


def reset_signals() -> None:
    """The program starts with every signal at its default and none blocked, as under
    runc: an ignored signal stays ignored across execve, and this interpreter ignores
    SIGPIPE and SIGXFSZ (``yes | head`` in the container would get EPIPE instead of
    dying), as a caller may ignore SIGHUP (nohup) or block others. A seccomp profile that
    refuses rt_sigaction leaves them as they are rather than failing the start."""
    import _signal
    for sig in range(1, _signal.NSIG):
        try:
            if _signal.getsignal(sig) is _signal.SIG_IGN:
                _signal.signal(sig, _signal.SIG_DFL)
        except (OSError, ValueError):  # SIGKILL/SIGSTOP, glibc's reserved RT signals
            pass
    try:
        _signal.pthread_sigmask(_signal.SIG_SETMASK, ())
    except OSError:
        pass


def hook_state(ctx: InitContext, status: str) -> dict[str, Any]:
    return state.hook_doc(ctx.options.container_id, status, ctx.host_pid,
                          str(ctx.config.bundle), ctx.options.annotations)


def join_own_keyring(container_id: str) -> None:
    """A session keyring of the container's own, so it never shares (or reads) the
    runtime's (runc standard_init_linux.go, unless --no-new-keyring)."""
    try:
        linux.join_session_keyring(f"_ses.{container_id}")
    except OSError as exc:
        if exc.errno not in (errno.ENOSYS, errno.EPERM, errno.EACCES):
            raise
        # No keyrings here (kernel or an outer seccomp filter): nothing to share either.
        log.warning("no new session keyring: %s", exc.strerror)


def prepare_rootfs(ctx: InitContext) -> None:
    """Mount propagation, rootfs bind, spec mounts in order, /dev (runc prepareRootfs)."""
    config = ctx.config
    if ctx.process.oom_score_adj is not None:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(ctx.process.oom_score_adj))
    if rootfs.owns_mount_namespace(config.namespaces):
        rootfs.set_setup_propagation(config.rootfs_propagation)
        rootfs.make_parent_private(ctx.rootfs)
        rootfs.bind_rootfs(ctx.rootfs)
    else:
        # The runtime's mount namespace (none listed: inherited, runtime-spec
        # config-linux.md) or one joined by path: / and its propagation are not ours;
        # the mounts go under a private bind of the rootfs that delete removes.
        rootfs.bind_rootfs_shared_ns(ctx.rootfs)
    ops = mounts.plan_mounts(config.mounts, config.bundle)
    if not any(op.destination == "/dev" for op in ops):
        rootfs.mount_dev_tmpfs(ctx.rootfs)
    cgroupns = bool(config.namespace("cgroup"))
    for op in ops:
        mounts.apply_mount(op, ctx.rootfs, cgroupns=cgroupns)
    if rootfs.needs_dev_setup(ops):
        rootfs.create_devices(ctx.rootfs, config.devices)
        rootfs.create_dev_links(ctx.rootfs)


def run_runtime_hooks(ctx: InitContext) -> None:
    """prestart/createRuntime hooks run in the runtime's namespaces, by the parent, after
    the mounts and before pivot_root (runtime-spec config.md)."""
    if ctx.config.hooks.get("prestart") or ctx.config.hooks.get("createRuntime"):
        send_msg(ctx.sock, {"type": "hooks"})
        msg = recv_msg(ctx.sock)
        if not msg or msg.get("type") != "go":
            raise ContainerError("runtime hooks failed; aborting")


def prepare_security(ctx: InitContext) -> None:
    """Resolve capabilities and build the seccomp filter (loads libseccomp) while the host
    fs is still visible: after pivot_root a library or /proc lookup would come from the
    container."""
    ctx.trampoline = open_trampoline(ctx.config.seccomp)
    ctx.apparmor_fd = lsm.open_apparmor_exec(_apparmor_profile(ctx.config))
    if ctx.process.capabilities is not None:
        ctx.cap_sets = capabilities.capability_sets(ctx.process.capabilities,
                                                    last_cap=capabilities.kernel_last_cap())
    if ctx.config.seccomp is not None:
        if ctx.options.seccomp_program is not None:
            ctx.seccomp.program = ctx.options.seccomp_program
        else:
            ctx.seccomp.context = seccomp.new_context(seccomp.build_filter(ctx.config.seccomp))


def enter_rootfs(ctx: InitContext) -> None:
    if not rootfs.owns_mount_namespace(ctx.config.namespaces):
        rootfs.chroot_root(ctx.rootfs)  # never pivot_root another namespace's processes
    elif ctx.options.no_pivot:
        rootfs.move_root(ctx.rootfs)
    else:
        rootfs.pivot_root(ctx.rootfs)
    propagation = ctx.config.rootfs_propagation
    if propagation and not rootfs.is_unbindable(propagation):
        rootfs.set_root_propagation(propagation)


def forget_host_imports() -> None:
    """After pivot_root the paths in sys.path name the container's files: no import may
    ever search them."""
    sys.path[:] = []
    sys.path_importer_cache.clear()


def finalize_rootfs(ctx: InitContext) -> None:
    if ctx.config.root_readonly:
        rootfs.remount_root_readonly()
    umask = ctx.process.user.umask
    os.umask(0o022 if umask is None else umask)


def set_identity(ctx: InitContext) -> None:
    config = ctx.config
    if (config.hostname or config.domainname) and config.namespace("uts") is None:
        # Inherited, the uts namespace is the runtime's: the host's name would change. A
        # namespace joined by path was given for this container; its name is set.
        raise ContainerError("hostname/domainname need a uts namespace of the container "
                             "(new or joined by path)",
                             hint='add {"type": "uts"} to linux.namespaces')
    if config.hostname:
        linux.sethostname(config.hostname)
    if config.domainname:
        linux.setdomainname(config.domainname)
    lsm.apply_apparmor(ctx.apparmor_fd, _apparmor_profile(config))
    ctx.apparmor_fd = None
    rootfs.write_sysctl(config.sysctl)


def _apparmor_profile(config: RuntimeConfig) -> str | None:
    return (config.raw.get("process") or {}).get("apparmorProfile") or None


def check_config(config: RuntimeConfig) -> None:
    """Checks that need no privileges, done before anything is created."""
    lsm.check_labels(config.raw)


def check_sysctls(config: RuntimeConfig) -> None:
    """In the runtime's own process, before the init joins anything: as runc, a joined
    namespace scopes sysctls too, except the runtime's own (the host's) network one."""
    own = {ns.type: ns.path is None or (ns.type == "network" and not _same_netns(ns.path))
           for ns in config.namespaces}
    for key in config.sysctl:
        rootfs.check_sysctl(key, own)


def _same_netns(path: str) -> bool:
    try:
        joined, ours = os.stat(path), os.stat("/proc/self/ns/net")
    except OSError:
        return True  # cannot tell: refuse, as for the host's
    return (joined.st_dev, joined.st_ino) == (ours.st_dev, ours.st_ino)


def protect_kernel_interfaces(ctx: InitContext) -> None:
    # readonly first, then masked (runc standard_init_linux.go).
    for path in ctx.config.readonly_paths:
        rootfs.readonly_path(path)
    rootfs.mask_paths(ctx.config.masked_paths)
    # (r)unbindable only now: the self-binds of readonly paths and the /dev/null binds of
    # masked paths fail with EINVAL on an unbindable mount.
    propagation = ctx.config.rootfs_propagation
    if propagation and rootfs.is_unbindable(propagation):
        rootfs.set_root_propagation(propagation)


def load_seccomp(pending: SeccompFilter) -> None:
    program, pending.program = pending.program, None
    if program is not None:
        try:
            linux.seccomp_load_bpf(program)
        except OSError as exc:
            raise ContainerError(f"seccomp: load filter: {exc.strerror}",
                                 hint="set process.noNewPrivileges") from exc
        return
    if pending.context is None:
        return
    seccomp_ctx, pending.context = pending.context, None
    try:
        linux.seccomp_load(seccomp_ctx)
    except OSError as exc:
        raise ContainerError(f"seccomp: load filter: {exc.strerror}",
                             hint="set process.noNewPrivileges") from exc
    finally:
        linux.seccomp_release(seccomp_ctx)


def change_user(user: User, sets: Any) -> None:
    """runc finalizeNamespace: bounding → keepcaps → setgroups/setgid/setuid → clear
    keepcaps → capset (``sets``: capabilities.capability_sets, None to leave them).
    Inheritable stays as the config says (CVE-2022-29162)."""
    if sets is not None:
        capabilities.drop_bounding(sets)
        capabilities.prepare_setuid()
    # A gid or uid change sets "dumpable" to fs.suid_dumpable, which may be 1: from here on
    # this process has no more capabilities than the container's, so only non-dumpable
    # keeps its memory and the host's interpreter (/proc/<pid>/exe) out of the container's
    # reach. Set again after each change, leaving no window between them.
    os.setgroups(list(user.additional_gids))
    os.setresgid(user.gid, user.gid, user.gid)
    linux.set_dumpable(False)
    os.setresuid(user.uid, user.uid, user.uid)
    linux.set_dumpable(False)
    if sets is not None:
        capabilities.finish_setuid()
        capabilities.apply_capabilities(sets)


def try_chdir(cwd: str) -> bool:
    try:
        change_dir(cwd)
        return True
    except ContainerError:
        return False


def change_dir(cwd: str) -> None:
    """chdir to ``cwd`` resolved inside the root: no magic link (/proc/self/fd/N of an fd
    from the host, CVE-2024-21626) and no ".." past "/"; then check that the kernel agrees
    the result is under the root (runc's check)."""
    try:
        try:
            fd = _open_dir_in_root(cwd)
        except FileNotFoundError:
            _make_dirs_in_root(cwd)
            fd = _open_dir_in_root(cwd)
    except PermissionError as exc:
        raise ContainerError(f"chdir {cwd}: permission denied for the container user",
                             hint="fix process.cwd or its permissions") from exc
    except OSError as exc:
        raise ContainerError(f"chdir {cwd}: {exc.strerror}",
                             hint="process.cwd must be a directory inside the container "
                                  "(not through /proc magic links)") from exc
    try:
        os.fchdir(fd)
    except PermissionError as exc:
        raise ContainerError(f"chdir {cwd}: permission denied for the container user",
                             hint="fix process.cwd or its permissions") from exc
    finally:
        os.close(fd)
    check_cwd_inside_root(cwd)


_DIR_IN_ROOT = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


def _open_dir_in_root(path: str) -> int:
    """An O_PATH fd of ``path`` resolved with "/" as the root and no magic links
    (openat2; before Linux 5.6 a plain open, which check_cwd_inside_root backs up)."""
    root = os.open("/", _DIR_IN_ROOT)
    try:
        return linux.openat2(root, path.lstrip("/") or ".", _DIR_IN_ROOT, 0,
                             linux.RESOLVE.IN_ROOT | linux.RESOLVE.NO_MAGICLINKS)
    except OSError as exc:
        if exc.errno not in (errno.ENOSYS, errno.EPERM):  # EPERM: an older seccomp filter
            raise
    finally:
        os.close(root)
    return os.open("/" + path.lstrip("/"), _DIR_IN_ROOT)


def _make_dirs_in_root(path: str) -> None:
    """mkdir -p, each parent resolved as _open_dir_in_root does."""
    parts = [p for p in path.split("/") if p]
    for i in range(len(parts)):
        try:
            os.close(_open_dir_in_root("/".join(parts[:i + 1])))
            continue
        except FileNotFoundError:
            pass
        parent = _open_dir_in_root("/".join(parts[:i]))
        try:
            os.mkdir(parts[i], 0o755, dir_fd=parent)
        except FileExistsError:
            pass
        finally:
            os.close(parent)


def check_cwd_inside_root(cwd: str) -> None:
    """getcwd fails (glibc turns the kernel's "(unreachable)/..." into ENOENT) when the
    cwd is not under this process's root."""
    try:
        where = os.getcwd()
    except FileNotFoundError:
        where = ""
    if not where.startswith("/"):
        raise ContainerError(f"chdir {cwd}: the directory is outside the container's root",
                             hint="process.cwd must be a directory inside the container")


def lookup_executable(process: ProcessSpec) -> str:
    """LookPath before blocking so a missing program fails `create` (runc
    standard_init_linux.go), searching the container's PATH. Go's exec.LookPath texts:
    docker and podman map "not found"/"no such file" to 127, "permission denied" and
    "is a directory" to 126, from these words."""
    name = process.args[0]
    if "/" in name:
        problem = _not_executable(name)
        if problem is None:
            return name
        cls = ExecutableNotFound if problem.startswith("stat ") else NotExecutable
        raise cls(f'exec: "{name}": {problem}', hint="check process.args[0] in the container")
    search = process.env_value("PATH") or DEFAULT_PATH
    for d in search.split(":"):
        cand = os.path.join(d or ".", name)
        if _not_executable(cand) is None:
            return cand
    raise ExecutableNotFound(f'exec: "{name}": executable file not found in $PATH',  # runc
                             hint="check process.args[0] and PATH in the container")


def _not_executable(path: str) -> str | None:
    """Why ``path`` cannot be exec'ed, in Go's words (findExecutable), or None."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"stat {path}: {os.strerror(exc.errno or 2).lower()}"
    if stat.S_ISDIR(st.st_mode):
        return "is a directory"
    if not os.access(path, os.X_OK):
        return "permission denied"
    return None


def wait_for_start(ctx: InitContext) -> None:
    """Report "created", then block opening exec.fifo for writing until `start` opens it
    for reading (runc's create/start split). The fifo is reopened through the O_PATH fd
    taken before pivot_root."""
    fds = open_proc_self_fd()  # before "created": a failure is create's
    try:
        if ctx.warnings:
            send_msg(ctx.sock, {"type": "warnings", "messages": ctx.warnings[-20:]})
        send_msg(ctx.sock, {"type": "created"})
        ctx.sock.close()
        if _filter_before_start(ctx):
            # Installing a filter costs the kernel ~0.5-1.5 ms (it evaluates the filter
            # for every syscall number): done now, while the container waits for
            # `start`, not inside `start`'s wait for our execve.
            load_seccomp(ctx.seccomp)
        fd = os.open(str(ctx.fifo_fd), os.O_WRONLY | os.O_CLOEXEC, dir_fd=fds)
    finally:
        os.close(fds)
    os.close(ctx.fifo_fd)
    os.write(fd, b"0")
    # Kept open, close-on-exec: `start` waits for the EOF our execve (or death) makes,
    # so poststart hooks run after the program was executed (runtime-spec config.md).
    ctx.fifo_fd = fd


def _filter_before_start(ctx: InitContext) -> bool:
    """Whether the filter not yet loaded (no_new_privs) may go in before the wait for
    `start`: no startContainer hook (it must not run under the container's filter) and
    a profile that surely allows what runs until execve besides the fd clean-up: the
    fifo's openat, write and close."""
    return not ctx.config.hooks.get("startContainer") and \
        allows_syscalls(ctx.config.seccomp, "openat", "write", "close")


def run_start_hooks(ctx: InitContext) -> None:
    """startContainer hooks; a failure is an error of `start` (runtime-spec)."""
    hooks.run_hooks(ctx.config.hooks, "startContainer", hook_state(ctx, "created"),
                    ctx.trampoline)


def fail_start(ctx: InitContext, exc: BaseException) -> None:
    """What failed between start and the execve is `start`'s error: its text goes to
    `start` through the fifo (which reads until our execve closes it), and we die without
    saying it again on the container's stderr. Without the fifo, the error is raised."""
    text = exc.message if isinstance(exc, OciimgError) else str(exc)
    try:
        os.write(ctx.fifo_fd, (text or type(exc).__name__).encode(errors="replace")[:4000])
    except OSError:
        raise exc from None
    os._exit(1)


def open_proc_self_fd() -> int:
    """/proc/self/fd, checked to be procfs: after pivot_root the path is the container's,
    and an image without a proc mount there can plant files named like fds (the fifo's
    reopening would write to one of them, and the program would run before `start`;
    runc refuses the same way)."""
    fd = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if linux.fs_type(fd) != linux.PROC_SUPER_MAGIC:
            raise ContainerError("/proc/self/fd is not on procfs",
                                 hint="mount proc on /proc in config.json")
    except BaseException:
        os.close(fd)
        raise
    return fd


def close_fds(preserve: int) -> None:
    """Mark every fd above stdio close-on-exec except the preserved ones: the program
    gets stdio and what --preserve-fds names (fds leaked into the runtime were closed
    before anything was joined: process.enter_guarded)."""
    keep = range(3, 3 + preserve)
    try:
        linux.cloexec_from(3)
        fds = list(keep)
    except OSError:  # before Linux 5.11, or refused by the filter: list them
        listing = open_proc_self_fd()
        try:
            fds = [int(n) for n in os.listdir(listing)]
        finally:
            os.close(listing)
    for fd in fds:
        if fd < 3:
            continue
        try:
            os.set_inheritable(fd, fd in keep)
        except OSError:
            pass


def env_dict(env: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in env:
        key, sep, value = item.partition("=")
        if sep:
            out[key] = value
    return out
