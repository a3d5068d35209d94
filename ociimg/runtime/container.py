"""Container lifecycle (runtime-spec runtime.md): create, start, state, kill, delete, run,
list, ps. Each verb is a small function over the state directory; the in-container work is
in init.py, the fork protocol in process.py."""

from __future__ import annotations

import _signal as signal
import os
import select
import time

from ociimg.errors import ContainerError, OciimgError

# process, namespaces, config and cgroups are imported by the verbs that use them: state,
# start, kill and delete load no ctypes (ociimg/runtime/startup.py).
from ociimg.runtime import hooks, state
from ociimg.runtime.lazylog import get_logger
from ociimg.runtime.records import record
from ociimg.runtime.state import ContainerState

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from collections.abc import Callable
    from typing import Any

    from ociimg.runtime.cgroups import CgroupManager
    from ociimg.runtime.config import RuntimeConfig

log = get_logger(__name__)

# libcontainer's errors, word for word: containerd's shim and go-runc's users match them
# (checkKillError: "container not running" is a kill of a finished process, not a failure).
NOT_RUNNING = "container not running"
NOT_PAUSED = "container not paused"


@record(slots=True)
class CreateOptions:
    bundle: str | os.PathLike[str]
    pid_file: str | os.PathLike[str] | None = None
    console_socket: str | None = None
    no_pivot: bool = False
    preserve_fds: int = 0
    new_keyring: bool = True
    console: socket.socket | None = None  # an already connected console socket (run)


def cgroup_manager(cst: ContainerState) -> CgroupManager | None:
    """The manager of the container's cgroup; None when create recorded none (a runtime
    killed before it got that far)."""
    if not cst.cgroup:
        return None
    from ociimg.runtime import cgroups
    return cgroups.load_manager(cst.cgroup)


def create_container(root: str, container_id: str, options: CreateOptions) -> ContainerState:
    from ociimg.runtime.config import load_config
    return _create(root, container_id, options, load_config(options.bundle))


def _create(root: str, container_id: str, options: CreateOptions,
            config: RuntimeConfig) -> ContainerState:
    if config.process is None:
        raise ContainerError(f"container {container_id}: config.json has no process",
                             hint="add a process section to config.json")
    state_dir = state.make_state_dir(root, container_id)
    state.record_config(root, container_id, config.raw)
    cst = ContainerState(id=container_id, bundle=str(config.bundle),
                         created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                         annotations=dict(config.annotations), rootfs=str(config.root_path),
                         config_hooks=config.hooks, creating=True)
    try:
        _record_shared_mounts(config, cst)
        _spawn_init(root, config, cst, options, state_dir)
    except BaseException:
        _destroy(root, cst)
        raise
    cst.creating = False
    state.save_state(root, cst)
    if options.pid_file:
        state.write_atomic(options.pid_file, f"{cst.pid}".encode())  # conmon passes one
    return cst


def _record_shared_mounts(config: RuntimeConfig, cst: ContainerState) -> None:
    """Without a mount ns of its own the container's mounts outlive it; note where they
    will be so that delete (or a failed create) removes them (rootfs.py)."""
    from ociimg.runtime import rootfs
    if not rootfs.owns_mount_namespace(config.namespaces):
        cst.shared_mounts = rootfs.shared_ns_record(config.namespaces,
                                                    os.path.realpath(config.root_path))


def _spawn_init(root: str, config: RuntimeConfig, cst: ContainerState,
                options: CreateOptions, state_dir: str) -> None:
    console = options.console
    if config.process.terminal and console is None:
        if options.console_socket is None:
            raise ContainerError("process.terminal is set but no --console-socket was given",
                                 hint="pass --console-socket or set terminal to false")
        console = _connect_console(options.console_socket)
    # The init may run as a mapped uid that cannot traverse the state root: hand it an
    # O_PATH fd instead of a path.
    from ociimg.runtime import process
    program = None
    if config.seccomp is not None:
        # Compiled here, before the fork, through a root-only cache (seccomp.py): the init
        # only installs it, at the point runc's order says.
        from ociimg.runtime import seccomp
        program = seccomp.filter_program(config.seccomp, seccomp.default_cache_dir())
    if config.sysctl:
        from ociimg.runtime.init import check_sysctls
        check_sysctls(config)
    manager = _prepare_cgroup(root, config, cst)
    v2_dir = manager.v2_dir()
    fifo_fd = os.open(os.path.join(state_dir, "exec.fifo"), os.O_PATH | os.O_CLOEXEC)
    init_opts = process.InitOptions(
        container_id=cst.id, fifo_fd=fifo_fd, no_pivot=options.no_pivot,
        new_keyring=options.new_keyring,
        preserve_fds=options.preserve_fds + int(os.environ.get("LISTEN_FDS", "0") or 0),
        console_fd=console.fileno() if console else None, annotations=cst.annotations,
        seccomp_program=program,
        cgroup_tasks=tuple(manager.self_join_files()),
        cgroup_v2_dir=None if v2_dir is None else str(v2_dir))
    from ociimg.runtime.init import run_init
    pid1, sock = process.spawn(config, init_opts, run_init)
    os.close(fifo_fd)
    if console:
        console.close()
    try:
        _drive(root, config, cst, sock, pid1, manager)
    finally:
        sock.close()
        process.finish(pid1)


def _connect_console(path: str) -> socket.socket:
    from ociimg.runtime.console import connect_console_socket
    return connect_console_socket(path)


def _drive(root: str, config: RuntimeConfig, cst: ContainerState, sock: socket.socket,
           pid1: int, manager: CgroupManager) -> None:
    """Parent side of the sync protocol (process.py docstring). The intermediate's "pid"
    and the init's "created" may come in either order; setup is done when both have."""
    from ociimg.runtime import namespaces, process
    created = reported = hooked = mapped = False
    while not (created and cst.pid):
        msg = _next_msg(sock, cst, pid1)
        kind = msg.get("type") if msg else None
        if kind is None:
            raise ContainerError(f"container {cst.id}: init exited during setup",
                                 hint="run with --debug and check the runtime log")
        # Each request is acted on once: a process sharing a joined pid ns could take the
        # init's socket (pidfd_getfd) and ask again (the host's hooks, say).
        if kind == "error":
            process.raise_from_msg(msg, cst.id)
        elif kind == "idmap" and not mapped and not reported:
            mapped = True
            namespaces.write_id_maps(pid1, config.uid_mappings, config.gid_mappings)
            process.send_msg(sock, {"type": "go"})
        elif kind == "pid" and not reported:
            _learn_init_pid(cst, pid1)
            if not cst.pid:  # not from the intermediate: it has forked the init by then
                continue
            reported = True
            # Its child list read, the intermediate has nothing left to do: killed now,
            # its exit (the teardown of a forked interpreter) overlaps the init's setup.
            process.kill_quietly(pid1)
            # Recorded before any hook runs: a runtime killed from here on leaves a
            # state that `delete -f` can kill the init by.
            state.save_state(root, cst)
            if not msg.get("placed", True):
                manager.add_v2(cst.pid)
                process.send_msg(sock, {"type": "placed"})
        elif kind == "hooks" and not hooked:
            hooked = True
            if not reported:  # else saved with the pid already
                _learn_init_pid(cst, pid1)
                state.save_state(root, cst)  # a runtime killed in a hook: delete -f finds it
            hook_doc = state.hook_state(cst, "creating")
            hooks.run_hooks(config.hooks, "prestart", hook_doc)
            hooks.run_hooks(config.hooks, "createRuntime", hook_doc)
            process.send_msg(sock, {"type": "go"})
        elif kind == "warnings" and isinstance(msg.get("messages"), list):
            for message in msg["messages"][:20]:
                log.warning("container %s: %s", cst.id, process.printable(message, 500))
        elif kind == "created":
            created = True


def _next_msg(sock: socket.socket, cst: ContainerState, pid1: int) -> dict[str, Any] | None:
    """The next message, or None once the init (before its pid is known: the
    intermediate) is gone. Not only EOF: a copy of the socket taken from inside would
    hold that off forever."""
    from ociimg.runtime import process
    while not select.select([sock], [], [], 0.1)[0]:
        if cst.pid:
            if not state.init_alive(cst):
                return None
        elif state.proc_state(pid1) in (None, "Z", "X"):
            return None
    return process.recv_msg(sock)


def _learn_init_pid(cst: ContainerState, pid1: int) -> None:
    """The init's pid from the kernel (the intermediate's one child), never from a
    message: a process sharing a joined pid ns could take the init's socket
    (pidfd_getfd) and name any pid, which kill and delete would then signal."""
    from ociimg.runtime import process
    if not cst.pid:
        cst.pid = process.only_child(pid1)
        cst.pid_starttime = (state.proc_starttime(cst.pid) or 0) if cst.pid else 0


def _prepare_cgroup(root: str, config: RuntimeConfig, cst: ContainerState) -> CgroupManager:
    """Create the container's cgroup and write its limits, before the fork: the parent's
    work between fork and the children's exit copies every page it touches (Python's
    refcounts write all over the heap). The processes join it themselves: the
    intermediate its v1 hierarchies (process.join_cgroups_v1), the init is forked into
    the cgroup2 dir (process._fork_init), so nothing waits for an RCU grace period.

    The cgroup is recorded in state.json before its first mkdir: a runtime killed at any
    later point (in a hook, say) leaves a state from which `delete -f` removes every
    directory create may have made."""
    from ociimg.runtime import cgroups
    manager = cgroups.create_manager(config.cgroups_path, cst.id, config.resources)
    if manager.pids():
        # Another container lives there; joining would let our delete kill it (runc
        # refuses a non-empty cgroup the same way).
        raise ContainerError(f"container {cst.id}: cgroup {manager.path} already has "
                             "processes", hint="set a unique linux.cgroupsPath")
    cst.cgroup = manager.to_state()
    state.save_state(root, cst)
    manager.apply()  # runc's order: Apply (the cgroup; the children place themselves),
    manager.set()    # then Set (the limits), both before the fork
    return manager


def start_container(root: str, container_id: str) -> None:
    cst = state.load_state(root, container_id)
    status = container_status(root, cst)
    if status != "created":
        raise ContainerError(_START_REFUSED.get(status, f"cannot start a {status} container"),
                             hint=f"container {container_id} has status {status}, not created: "
                                  "only a created container can be started")
    fifo = state.fifo_path(root, container_id)
    # Taken while the init is still blocked on the fifo, i.e. runs the runtime's binary.
    runtime_exe = state.proc_exe_identity(cst.pid)
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        data = _read_fifo(fd, cst)
        try:
            os.unlink(fifo)
        except FileNotFoundError:
            pass
        if not data:
            if state.init_alive(cst):  # a concurrent `start` took the byte
                raise ContainerError(f"container {container_id} was started by another start")
            raise ContainerError(f"container {container_id}: init exited before start")
        failure = _wait_for_exec(fd, cst, runtime_exe)
    finally:
        os.close(fd)
    if failure:
        raise ContainerError(f"container {container_id}: {failure}",
                             hint="the container was stopped; delete it")
    # runtime-spec: poststart hooks run after the user's program was executed; a failing
    # one is a warning and start still succeeds.
    hooks.run_hooks(cst.config_hooks, "poststart", state.hook_state(cst, "running"))


# runc's words (libcontainer's Start), which callers match.
_START_REFUSED = {"running": "cannot start an already running container",
                  "paused": "cannot start a container in the paused state",
                  "stopped": "cannot start a container that has stopped"}


def _read_fifo(fd: int, cst: ContainerState) -> bytes:
    # The init is blocked opening the fifo for writing; our open lets it through and it
    # writes one byte. Poll so an init that died meanwhile cannot hang `start`.
    while True:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            return os.read(fd, 1)
        if not state.init_alive(cst):
            return b""


_FAILURE_MAX = 4000  # what init.fail_start writes at most


def _wait_for_exec(fd: int, cst: ContainerState, runtime_exe: tuple[int, int] | None) -> str:
    """After its byte the init keeps the fifo open, close-on-exec, until its execve of the
    user's program (init.wait_for_start): EOF says the program runs now. Before that it
    may write why it failed (a startContainer hook) and die; that text is returned, ""
    once the program runs. A process inside that took a copy of the fifo (pidfd_getfd)
    may hold EOF off and write anything: the init's exec is also seen in its exe, text
    counts only if the init died (a program that ran and exited wrote none), and only so
    much of it is kept, printable."""
    message = b""
    eof = False
    while True:
        if eof:
            # Closed by the init's execve or its exit: which one, soon. Short: a program
            # like /bin/true is often already exiting (no exe, not yet a zombie) at the
            # first look, and every start waited for this sleep.
            time.sleep(0.0005)
        elif select.select([fd], [], [], 0.1)[0]:
            chunk = os.read(fd, 4096)
            message = (message + chunk)[:_FAILURE_MAX]
            eof = not chunk
        if not state.init_alive(cst):
            from ociimg.runtime.process import printable
            return printable(message.decode(errors="replace"), _FAILURE_MAX)
        exe = state.proc_exe_identity(cst.pid)
        if exe is not None and exe != runtime_exe:
            return ""  # the program runs


def container_state(root: str, container_id: str) -> dict[str, Any]:
    cst = state.load_state(root, container_id)
    return state.oci_state(root, cst, container_status(root, cst))


def container_status(root: str, cst: ContainerState) -> str:
    """created/running/stopped from the process and fifo; "paused" when its cgroup is
    frozen, a created container's too (runc pauses both)."""
    status = state.derive_status(root, cst)
    if status in ("running", "created") and (manager := cgroup_manager(cst)) is not None \
            and manager.is_frozen():
        return "paused"
    return status


def pause_container(root: str, container_id: str) -> None:
    cst = state.load_state(root, container_id)
    status = container_status(root, cst)
    if status not in ("running", "created"):
        raise ContainerError(NOT_RUNNING, hint=f"container {container_id} has status "
                                               f"{status}: only a running or created one "
                                               "can be paused")
    _require_manager(cst).freeze()


def resume_container(root: str, container_id: str) -> None:
    cst = state.load_state(root, container_id)
    status = container_status(root, cst)
    if status != "paused":
        raise ContainerError(NOT_PAUSED, hint=f"container {container_id} has status {status}")
    _require_manager(cst).thaw()


def update_container(root: str, container_id: str, resources: dict[str, Any]) -> None:
    """runc update: apply linux.resources to the running container's cgroup."""
    cst = state.load_state(root, container_id)
    if container_status(root, cst) == "stopped":
        raise ContainerError(NOT_RUNNING, hint=f"container {container_id} has stopped")
    _require_manager(cst).set(resources)


def container_events(root: str, container_id: str, stats_only: bool, interval: float,
                     emit: Callable[[dict[str, Any]], None]) -> None:
    """runc events: {"type": "stats", "id", "data"} once (``stats_only``) or every
    ``interval`` seconds until the container stops. (runc also reports OOM kills, from
    the memory controller's eventfd: not here.)"""
    cst = state.load_state(root, container_id)
    while True:
        if container_status(root, cst) == "stopped":
            if stats_only:  # runc's words
                raise ContainerError(f"container with id {container_id} is not running")
            return
        from ociimg.runtime import stats
        emit({"type": "stats", "id": container_id,
              "data": stats.collect(_require_manager(cst))})
        if stats_only:
            return
        time.sleep(interval)


def _require_manager(cst: ContainerState) -> CgroupManager:
    manager = cgroup_manager(cst)
    if manager is None:
        raise ContainerError(f"container {cst.id} has no cgroup",
                             hint="pause, resume and update need the cgroup manager")
    return manager


def kill_container(root: str, container_id: str, sig: int, all_processes: bool = False) -> None:
    """runc's kill: the init (created, running or paused: a paused one is thawed after
    SIGKILL, which a frozen task cannot receive), or with ``all_processes`` whatever is
    in the container's cgroup, none once it stopped (not an error)."""
    cst = state.load_state(root, container_id)
    status = container_status(root, cst)
    manager = cgroup_manager(cst)
    if all_processes and manager is not None:
        manager.kill(sig)
    elif status == "stopped":
        if all_processes:
            return
        raise ContainerError(NOT_RUNNING, hint=f"container {container_id} has stopped; "
                                               f"delete it: ociimg-runtime delete {container_id}")
    else:
        os.kill(cst.pid, sig)
    if sig == signal.SIGKILL and status == "paused" and manager is not None:
        manager.thaw()
    if sig == signal.SIGKILL and status != "stopped":
        # SIGKILL cannot be caught; waiting (briefly) for it to land makes `kill KILL`
        # then `delete` work without a race, now that delete refuses a container that is
        # not stopped yet (containerd and podman call them back to back).
        wait_exit(cst.pid, timeout=2.0)


def delete_container(root: str, container_id: str, force: bool = False) -> None:
    """runtime-spec runtime.md "delete": deleting a container that is not stopped MUST
    fail and have no effect, a *created* one included (runc kills and deletes it); with
    ``force`` it is killed first."""
    cst = state.load_state(root, container_id)
    status = container_status(root, cst)
    if status != "stopped" and not force:
        raise ContainerError(f"cannot delete container {container_id} that is not stopped: "
                             f"{status}", hint=f"kill it first or use: ociimg-runtime delete "
                                               f"--force {container_id}")
    _destroy(root, cst)
    if status != "stopped" or cst.pid:
        hooks.run_hooks(cst.config_hooks, "poststop", state.hook_state(cst, "stopped"))


def _destroy(root: str, cst: ContainerState) -> None:
    """Kill what is left, free the cgroup, remove the state dir. Mounts live in the
    container's mount ns and go with it; in a namespace it did not own they are
    detached here."""
    manager = cgroup_manager(cst)
    if cst.pid and state.init_alive(cst):
        os.kill(cst.pid, signal.SIGKILL)
        if manager is not None and manager.is_frozen():
            manager.thaw()  # a frozen task only dies once thawed
        wait_exit(cst.pid)
    if manager is not None:
        for pid in manager.pids():
            _kill_quietly(pid)
        if manager.is_frozen():
            manager.thaw()
        manager.destroy()
    if cst.shared_mounts:
        from ociimg.runtime import rootfs
        rootfs.release_shared_ns_mounts(cst.shared_mounts)
    state.remove_state(root, cst.id)


def remove_stale(root: str, container_id: str) -> None:
    path = state.state_dir(root, container_id)
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, "state.json")):
        state.remove_state(root, container_id)


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait_exit(pid: int, timeout: float = 10.0) -> None:
    """Wait for a process that need not be our child (pidfd polls readable on exit)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    deadline = time.monotonic() + timeout
    while state.proc_state(pid) not in (None, "Z", "X") and time.monotonic() < deadline:
        time.sleep(0.01)


def list_containers(root: str) -> list[dict[str, Any]]:
    out = []
    for cid in state.list_ids(root):
        try:
            out.append(container_state(root, cid))
        except OciimgError:
            continue
    return out


def container_pids(root: str, container_id: str) -> list[int]:
    cst = state.load_state(root, container_id)
    manager = cgroup_manager(cst)
    if manager is not None:
        return sorted(manager.pids())
    if not state.init_alive(cst):
        return []
    return sorted(_descendants(cst.pid))


def _descendants(pid: int) -> set[int]:
    """Without a cgroup: the init and its descendants, via /proc/<pid>/task/*/children."""
    found, todo = {pid}, [pid]
    while todo:
        current = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except FileNotFoundError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{current}/task/{tid}/children") as f:
                    kids = {int(x) for x in f.read().split()}
            except FileNotFoundError:
                continue
            todo.extend(kids - found)
            found |= kids
    return found


def run_container(root: str, container_id: str, options: CreateOptions,
                  detach: bool = False, keep: bool = False) -> int:
    """create + start; attached, wait for the init and return its exit code (128+N when
    killed by signal N), then delete it unless ``keep`` (runc run --keep). The CLI
    becomes a child subreaper so the init, whose parent (the intermediate child) exits
    early, is reparented to it and can be waited."""
    from ociimg.oskit import linux
    if not detach:
        linux.set_child_subreaper()
    from ociimg.runtime.config import load_config
    config = load_config(options.bundle)
    ours = None
    if config.process and config.process.terminal and options.console_socket is None \
            and not detach:
        import socket
        ours, options.console = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    cst = _create(root, container_id, options, config)
    master = None
    if ours is not None:
        from ociimg.runtime.console import receive_master
        options.console.close()
        master = receive_master(ours)
        ours.close()
    # Caught from before the start, as runc does: the program may be told to stop (and
    # its caller may act on its output) before start returns.
    forwarder = None if detach else _Forwarder(cst.pid)
    try:
        start_container(root, container_id)
    except BaseException:
        if forwarder is not None:
            forwarder.restore()
        try:
            delete_container(root, container_id, force=True)
        finally:
            # Whatever failed, never leave the init blocked on exec.fifo forever.
            if cst.pid and state.init_alive(cst):
                _kill_quietly(cst.pid)
        raise
    if forwarder is None:
        return 0
    forwarder.release()
    return _wait_and_delete(root, cst, master, keep, forwarder)


_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
              signal.SIGUSR2)


class _Forwarder:
    """run's signals to the container's init: held while it starts (a signal to the
    init before its execve would kill the runtime's code, not reach the program), sent
    on once it runs."""

    def __init__(self, pid: int) -> None:
        self.pid, self.pending, self.started = pid, [], False
        for sig in _FORWARDED:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.started:
            _signal_quietly(self.pid, signum)
        else:
            self.pending.append(signum)

    def release(self) -> None:
        self.started = True
        for signum in self.pending:
            _signal_quietly(self.pid, signum)
        self.pending.clear()

    def restore(self) -> None:
        for sig in _FORWARDED:
            signal.signal(sig, signal.SIG_DFL)


def _signal_quietly(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _wait_and_delete(root: str, cst: ContainerState, master: int | None,
                     keep: bool, forwarder: _Forwarder) -> int:
    try:
        if master is not None:
            from ociimg.runtime.console import proxy_terminal
            proxy_terminal(master, cst.pid)  # no pid ns of its own: others may hold it
            os.close(master)
        _, status = os.waitpid(cst.pid, 0)
        code = hooks.exit_code(status)
    finally:
        forwarder.restore()
        if not keep:
            delete_container(root, cst.id, force=True)
    return code
