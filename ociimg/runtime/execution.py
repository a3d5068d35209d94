"""``exec``: run another process in a running container (runc setns_init_linux.go).

The runtime forks a child that makes itself non-dumpable, closes every fd it was not
given on purpose and forgets the runtime's environment, joins the container's v1 cgroups
before it enters anything, opens every /proc/<init>/ns/* and setns()es into them — user
first, mount last — then forks again so the grandchild is inside the pid ns, and born in
the container's cgroup2 dir (clone3; where refused, the parent moves the child first).
The grandchild applies the process's user, capabilities, no_new_privs and seccomp
(prepared while the host fs was still visible) and execs.

What the parent learns over the sync socket after the grandchild exists may be forged:
the grandchild is visible inside the container, and a process there with CAP_SYS_PTRACE
can take its socket (pidfd_getfd). So the grandchild's pid comes from the kernel (the
child list of the first child, which the container cannot see), and the socket only ever
carries errors, warnings and, by closing on execve (CLOEXEC), "done".
"""

from __future__ import annotations

import _socket
import os
import select

from ociimg.errors import ContainerError
from ociimg.oskit import linux
from ociimg.runtime import (
    capabilities,
    hooks,
    init,
    namespaces,
    process,
    seccomp,
    state,
)
from ociimg.runtime.config import ProcessSpec, RuntimeConfig, User
from ociimg.runtime.container import cgroup_manager
from ociimg.runtime.lazylog import get_logger
from ociimg.runtime.records import record, replace

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from collections.abc import Callable, Sequence
    from typing import Any

log = get_logger(__name__)


@record(slots=True)
class ExecRequest:
    """One exec: the container's process with ``args`` and whatever else is given here
    (``env`` is added to its env), or ``process`` as a whole (runc exec --process); then
    how it is attached."""
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    cwd: str | None = None
    user: User | None = None
    terminal: bool = False
    no_new_privileges: bool = False
    process: ProcessSpec | None = None
    detach: bool = False  # return once it runs, without waiting for its exit
    pid_file: str | None = None
    console_socket: str | None = None  # with terminal: where the pty master goes
    preserve_fds: int = 0  # fds 3..3+N-1 of the caller go to the process
    ignore_paused: bool = False  # join a frozen container (runs once it is resumed)


def exec_in_container(root: str, container_id: str, request: ExecRequest) -> int:
    """Run ``request`` in the running container ``container_id`` of the state root
    ``root``; its exit code (0 when detached)."""
    cst = state.load_state(root, container_id)
    status = state.derive_status(root, cst)
    if status in ("stopped", "creating"):
        raise ContainerError(f"cannot exec in a {status} container",
                             hint=f"container {container_id} has status {status}")
    if not request.ignore_paused and (manager := cgroup_manager(cst)) is not None \
            and manager.is_frozen():
        # runc's words; the process would hang in the frozen cgroup until a resume.
        raise ContainerError("cannot exec in a paused container (use --ignore-paused to "
                             "override)", hint=f"resume it: ociimg-runtime resume {container_id}")
    # What create recorded, never the bundle's config.json as it is now (it may have been
    # edited since: other namespaces, no seccomp).
    config = state.load_config(root, cst)
    spec = request.process or process_spec(
        config, request.args, env=request.env, cwd=request.cwd, user=request.user,
        terminal=request.terminal, no_new_privileges=request.no_new_privileges)
    return exec_process(cst, config, spec, detach=request.detach, pid_file=request.pid_file,
                        console_socket=request.console_socket,
                        preserve_fds=request.preserve_fds)


def process_spec(config: RuntimeConfig, command: Sequence[str], *, env: Sequence[str] = (),
                 cwd: str | None = None, user: User | None = None, terminal: bool = False,
                 no_new_privileges: bool = False) -> ProcessSpec:
    """The container's process with another command (exec): its env extended, the rest
    replaced where given."""
    if not command:
        raise ContainerError("exec: no command given", hint="ociimg-runtime exec ID CMD...")
    base = config.process or ProcessSpec(args=("sh",))
    return replace(base, args=tuple(command), env=base.env + tuple(env),
                   cwd=cwd or base.cwd, user=user or base.user, terminal=terminal,
                   no_new_privileges=base.no_new_privileges or no_new_privileges)


@record(slots=True)
class _JoinPlan:
    """What the joining child needs, prepared by the parent before the fork."""
    config: RuntimeConfig
    spec: ProcessSpec
    ns_paths: dict[str, str]  # namespace type → /proc/<init>/ns/<type>
    join_files: tuple[str, ...]  # CgroupManager.self_join_files (v1)
    v2_dir: str | None  # CgroupManager.v2_dir
    preserve_fds: int
    seccomp_program: bytes | None  # seccomp.filter_program of config.seccomp


def exec_process(cst: state.ContainerState, config: RuntimeConfig, spec: ProcessSpec, *,
                 detach: bool = False, pid_file: str | None = None,
                 console_socket: str | None = None, preserve_fds: int = 0) -> int:
    if not detach:
        linux.set_child_subreaper()
    console = ours = None
    if spec.terminal:
        # Imported here, before the fork: the process joins the container's mount ns
        # before it opens its pty, and no import may read the container's files.
        from ociimg.runtime import console as terminals
        if console_socket:
            console = terminals.connect_console_socket(console_socket)
        else:
            ours, console = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
    ns_paths = namespaces.process_namespace_paths(cst.pid, [ns.type for ns in config.namespaces])
    manager = cgroup_manager(cst)
    # The joining process is visible in the container from its fork into the pid ns to
    # its execve: where a process there may hold CAP_SYS_PTRACE (the config's, this
    # exec's, or one an earlier exec was given), or where its program will be exec'd
    # without the trampoline, it runs from a sealed copy of the interpreter
    # (process.needs_sealed, process.run_sealed).
    interpreter = None
    if process.needs_sealed(config, spec) or (
            not process.owns_user_ns(config) and manager is not None
            and any(map(process.holds_ptrace, manager.pids()))):
        if not _left_runtime(cst.pid, _identities(None)):
            # A created container's init still runs the host's interpreter (create found
            # no process that could trace it): this one could.
            raise ContainerError(f"exec in {cst.id}: a process that may hold "
                                 "CAP_SYS_PTRACE cannot join a container before it is "
                                 "started", hint="start the container first")
        interpreter = process.sealed_interpreter()
    parent_sock, child_sock = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    keep = {0, 1, 2, child_sock.fileno(), *range(3, 3 + preserve_fds)}
    if console is not None:
        keep.add(console.fileno())
    if interpreter is not None:
        keep.add(interpreter)
    # Compiled here, through create's root-only cache (seccomp.py): the child only loads
    # it, and libseccomp builds it only on a cache miss.
    program = (seccomp.filter_program(config.seccomp, seccomp.default_cache_dir())
               if config.seccomp is not None else None)
    plan = _JoinPlan(config=config, spec=spec, ns_paths=ns_paths,
                     join_files=tuple(manager.self_join_files()) if manager is not None else (),
                     v2_dir=manager.v2_dir() if manager is not None else None,
                     preserve_fds=preserve_fds, seccomp_program=program)
    pid1 = -1
    try:
        pid1 = os.fork()
    finally:
        if interpreter is not None and pid1 != 0:
            runtime_exes = _identities(interpreter)
            os.close(interpreter)
        else:
            runtime_exes = _identities(None)
    if pid1 == 0:  # pragma: no cover - child
        try:
            # Before anything of the container can see this process or its children
            # (CVE-2019-5736; runc's nsexec does the same).
            process.enter_guarded(keep)
            if interpreter is not None:
                inherit = [child_sock.fileno()] + ([console.fileno()] if console else [])
                process.run_sealed(interpreter, _child_sealed,
                                   (plan, child_sock.fileno(),
                                    console.fileno() if console else None), inherit)
        except BaseException as exc:  # noqa: BLE001
            process.send_msg(child_sock, process.error_msg(exc))
            os._exit(1)
        _child(plan, child_sock, console)
    child_sock.close()
    if console:
        console.close()
    try:
        pid = _drive_exec(cst, parent_sock, pid1, manager, runtime_exes)
    finally:
        parent_sock.close()
        process.finish(pid1)
    if pid_file:
        state.write_atomic(pid_file, str(pid).encode())
    if detach:
        return 0
    if ours is not None:
        master = terminals.receive_master(ours)
        ours.close()
        terminals.proxy_terminal(master, pid)
        os.close(master)
    _, status = os.waitpid(pid, 0)
    return hooks.exit_code(status)


def _child(plan: _JoinPlan, sock: socket.socket, console: socket.socket | None) -> None:
    """The first child, once guarded: v1 cgroups are joined by the child itself, as the
    container's intermediate does (no wait for an RCU grace period); its v2 cgroup comes
    with the fork of the process (clone3)."""
    try:
        process.join_cgroups_v1(plan.join_files)
        _join_and_exec(plan, sock, console)
    except BaseException as exc:  # noqa: BLE001
        process.send_msg(sock, process.error_msg(exc))
    os._exit(1)


def _child_sealed(plan: _JoinPlan, sock_fd: int, console_fd: int | None) -> None:
    console = _socket.socket(fileno=console_fd) if console_fd is not None else None
    _child(plan, _socket.socket(fileno=sock_fd), console)


def _identities(interpreter: int | None) -> set[tuple[int, int]]:
    """(st_dev, st_ino) of the binaries the runtime's own processes run from."""
    found = set()
    for st in (os.stat("/proc/self/exe"),
               *([os.fstat(interpreter)] if interpreter is not None else [])):
        found.add((st.st_dev, st.st_ino))
    return found


def _drive_exec(cst: state.ContainerState, sock: socket.socket, pid1: int,
                manager: Any, runtime_exes: set[tuple[int, int]]) -> int:
    pid = 0
    while True:
        if pid and not select.select([sock], [], [], 0.05)[0]:
            if _left_runtime(pid, runtime_exes):
                # A copy of the socket taken from inside keeps it open past the execve.
                return pid
            continue
        msg = process.recv_msg(sock)
        if msg is None:  # the sync socket closed on a successful execve
            if not pid:
                raise ContainerError(f"exec in {cst.id}: process setup failed")
            return pid
        kind = msg.get("type")
        if kind == "error":
            if pid and _runs_program(pid, runtime_exes):
                continue  # forged on a stolen socket: the process went on to its execve
            process.raise_from_msg(msg, cst.id)
        elif kind == "place" and not pid:
            # Sent before the grandchild exists (only the first child holds the socket
            # then); moving pid1 is harmless even if the message were not its.
            if manager is not None:
                manager.add_v2(pid1)
            process.send_msg(sock, {"type": "go"})
        elif kind == "forked" and not pid:
            # No message's content is trusted: the pid is the first child's only child
            # (the first child stays stopped until exec_process kills it).
            pid = process.only_child(pid1)
        elif kind == "warnings" and isinstance(msg.get("messages"), list):
            for message in msg["messages"][:20]:
                log.warning("exec in %s: %s", cst.id, process.printable(message, 500))


def _runs_program(pid: int, runtime_exes: set[tuple[int, int]]) -> bool:
    """After an error from the process: wait until it is gone (the error was its own: it
    exits right after sending one) or runs another binary (it exec'd: the error was not
    its own)."""
    while (exe := state.proc_exe_identity(pid)) in runtime_exes:
        select.select([], [], [], 0.005)
    return exe is not None


def _left_runtime(pid: int, runtime_exes: set[tuple[int, int]]) -> bool:
    """Whether ``pid`` no longer runs one of the runtime's binaries (it exec'd, or it is
    gone)."""
    return state.proc_exe_identity(pid) not in runtime_exes


def _join_and_exec(plan: _JoinPlan, sock: socket.socket,
                   console: socket.socket | None) -> None:
    config, spec = plan.config, plan.spec
    # Opened now: after joining the mount ns the host's cgroup tree is out of reach.
    v2_fd = os.open(plan.v2_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) \
        if plan.v2_dir is not None else None
    cap_sets = (capabilities.capability_sets(spec.capabilities,
                                             last_cap=capabilities.kernel_last_cap())
                if spec.capabilities is not None else None)
    pending = init.SeccompFilter(program=plan.seccomp_program)
    if plan.seccomp_program is None and config.seccomp is not None:
        # Flags only libseccomp's load sets (seccomp.filter_program): its context, built
        # while libseccomp is still the host's.
        pending.context = seccomp.new_context(seccomp.build_filter(config.seccomp))
    trampoline = process.open_trampoline(config.seccomp)
    attach_pty = None
    if spec.terminal and console is not None:
        # Imported before the container's namespaces are joined: no import may read the
        # container's files (a sealed interpreter has not imported it yet).
        from ociimg.runtime.console import attach_pty
    namespaces.join_namespaces(plan.ns_paths)
    init.forget_host_imports()
    pid = _fork_in_cgroup(v2_fd, sock)
    if pid:
        process.send_msg(sock, {"type": "forked"})
        process.wait_to_be_killed(sock)
    try:
        _exec_inside(spec, cap_sets, pending, console, sock, plan.preserve_fds, trampoline,
                     attach_pty)
    except BaseException as exc:  # noqa: BLE001
        process.send_msg(sock, process.error_msg(exc))
        os._exit(exc.exit_code if isinstance(exc, ContainerError) and exc.exit_code in (126, 127)
                 else 1)


def _fork_in_cgroup(v2_fd: int | None, sock: socket.socket) -> int:
    """Fork the process to exec, born in the container's cgroup2 dir; if the kernel
    refuses (process._fork_init lists why), the parent moves this process first."""
    if v2_fd is not None:
        try:
            return linux.fork_into_cgroup(v2_fd)
        except OSError:
            process.send_msg(sock, {"type": "place"})
            if (process.recv_msg(sock) or {}).get("type") != "go":
                os._exit(1)
        finally:
            os.close(v2_fd)
    return os.fork()


def _exec_inside(spec: ProcessSpec, cap_sets: Any, pending: init.SeccompFilter,
                 console: socket.socket | None, sock: socket.socket,
                 preserve_fds: int, trampoline: int | None,
                 attach_pty: Callable[[socket.socket, tuple[int, int] | None], None] | None
                 ) -> None:
    warnings: list[str] = []
    init.capture_warnings(warnings)
    linux.set_dumpable(False)  # inherited from the first child; said again, as it matters
    os.setsid()
    if attach_pty is not None and console is not None:
        attach_pty(console, spec.console_size)
    entered = init.try_chdir(spec.cwd)  # before a filter, as in init.run_init
    if spec.no_new_privileges:
        linux.set_no_new_privs()
    else:
        init.load_seccomp(pending)
    init.change_user(spec.user, cap_sets)
    if not entered:
        init.change_dir(spec.cwd)
    path = init.lookup_executable(spec)
    if warnings:
        process.send_msg(sock, {"type": "warnings", "messages": warnings[-20:]})
    init.load_seccomp(pending)
    init.close_fds(preserve_fds)
    init.execute(path, spec, trampoline)
