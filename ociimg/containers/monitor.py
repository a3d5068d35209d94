"""The container monitor (conmon's job): ``python -m ociimg.containers.monitor DIR REPORT
[STDIN STDOUT STDERR]``.

Spawned by ContainerManager.start, it detaches (setsid, fork: it is nobody's child, so it
outlives the CLI or server that started it), becomes the child subreaper, creates and
starts the container through its OCI runtime, and then holds the container's stdio: pipes
(or a pty) it copies into ``DIR/ctr.log`` (logfile.py), to the caller's fds when attached,
and to attach clients on ``DIR/attach`` (attach.py). It runs the health check
(health.py) and applies the restart policy. When the program exits for good it records
``exit.json``, deletes the runtime's state, unmounts the rootfs (and removes the container
if it was created with remove), and says so on REPORT.

REPORT is a pipe: one JSON line ``{"started": PID}`` or ``{"error": ..., "hint": ...}``,
then ``{"detached": true}`` if the caller typed the detach keys, and ``{"exited": CODE}``
at the end. ``DIR/monitor.json`` has the monitor's pid, which ``wait`` watches through a
pidfd; ``DIR/run.json`` the current run (start time, restart count).

This process may do what library code must not: signal handlers, fds 0-2, forks. It
imports little: its start is part of every ``ociimg run``.
"""

from __future__ import annotations

import os
import sys

from ociimg.containers import attach, logfile, stdio
from ociimg.containers.records import MONITOR_RECORD, RUN_RECORD, STOP_MARK
from ociimg.containers.runtimes import runtime_from_record
from ociimg.errors import ExecutableNotFound, OciimgError
from ociimg.runtime import jsonio

TYPE_CHECKING = False  # typing, pathlib and json cost ~15 ms of every `ociimg run`
if TYPE_CHECKING:
    from typing import Any

    from ociimg.containers.protocol import OciRuntime



class Monitor:
    def __init__(self, path: str, report: int, caller: tuple[int, int, int] | None) -> None:
        self.path = path
        self.report = report
        self.caller = caller
        self.meta: dict[str, Any] = _read_json(os.path.join(path, "meta.json"))
        process = _read_json(os.path.join(path, "config.json")).get("process") or {}
        self.terminal = bool(process.get("terminal"))
        self.cid = self.meta["id"]
        self.runtime: OciRuntime = runtime_from_record(self.meta["runtime"])

    def send(self, doc: dict[str, Any]) -> None:
        try:
            os.write(self.report, jsonio.dumps(doc).encode() + b"\n")
        except OSError:  # the caller is gone: the container runs on
            pass

    def run(self) -> int:
        _write_json(os.path.join(self.path, MONITOR_RECORD), {"pid": os.getpid(),
                                                  "starttime": _starttime(os.getpid())})
        _unlink(os.path.join(self.path, "exit.json"))  # a new run: the old record goes
        _unlink(os.path.join(self.path, STOP_MARK))
        try:
            self.listener = attach.listen(self.path)
            self.log = os.open(os.path.join(self.path, logfile.LOG_NAME),
                               os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
                               | os.O_CLOEXEC, 0o600)
            _mount_rootfs(self.path, self.meta)
            pid, master, ends = self._launch(0)
        except Exception as exc:  # noqa: BLE001 - reported, never a silent dead monitor
            self._finish(None)
            self.send(_report_error(exc))
            return 1
        self.send({"started": pid})
        restarts = 0
        while True:
            started = _monotonic()
            code = self._hold(pid, master, ends)
            delay = _restart_delay(self.path, self.meta, code, restarts,
                                   _monotonic() - started)
            if delay is None:
                break
            restarts += 1
            if not self._restart(delay, restarts, code):
                break
            try:
                pid, master, ends = self._launch(restarts, code)
            except Exception:  # noqa: BLE001 - the exit record stands
                break
            # Only now: a `wait` that looks between the unlink and the new run record
            # would take this run's exit for the next one.
            _unlink(os.path.join(self.path, "exit.json"))
        self._finish(code)
        self.send({"exited": code})
        return 0

    def _launch(self, restarts: int, last_exit: int | None = None
                ) -> tuple[int, int | None, dict[str, int]]:
        import time
        ends = self._container_stdio()
        try:
            pid, master = self._create_and_start(ends)
        except BaseException:
            for key in ("stdin_w", "out_r", "err_r"):
                if key in ends:
                    _close(ends[key])
            raise
        # lastExitCode: the run before, for a `wait` that missed its exit record.
        _write_json(os.path.join(self.path, RUN_RECORD), {
            "startedAt": time.time(), "restartCount": restarts, "pid": pid,
            "lastExitCode": last_exit})
        _append_event(self.path, self.meta, "start")
        return pid, master, ends

    def _restart(self, delay: float, count: int, code: int) -> bool:
        """The exit recorded (it stays until the next run has started), the runtime's state
        gone, then the policy's back-off; False if a stop came meanwhile."""
        import time
        _write_json(os.path.join(self.path, "exit.json"), {
            "exitCode": code, "finished": _now(), "restarting": True, "restartCount": count})
        _append_event(self.path, self.meta, "die", exitCode=str(code))
        try:
            self.runtime.delete(self.cid, force=True)
        except OciimgError:
            pass
        time.sleep(delay)
        return not os.path.exists(os.path.join(self.path, STOP_MARK))

    def _container_stdio(self) -> dict[str, int]:
        """in/out/err: what the container gets; out_r/err_r: what the monitor copies
        from; stdin_w: where it feeds input (the caller's, or attach clients' for a
        detached interactive container, whose stdin stays open as docker's -di)."""
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        if self.terminal:
            return {"in": null, "out": null, "err": null}
        ends = {"null": null}
        ends["in"], stdin_w = os.pipe2(os.O_CLOEXEC)
        if self.meta.get("interactive"):
            ends["stdin_w"] = stdin_w
        else:  # at EOF at once; never the host's /dev/null, which root inside could chmod
            os.close(stdin_w)
        ends["out_r"], ends["out"] = os.pipe2(os.O_CLOEXEC)
        ends["err_r"], ends["err"] = os.pipe2(os.O_CLOEXEC)
        return ends

    def _create_and_start(self, ends: dict[str, int]) -> tuple[int, int | None]:
        console = master = sock_path = None
        if self.terminal:
            console, sock_path = _console_listener()
        own_stderr = os.dup(2)  # monitor.log, back on fd 2 once create has passed fds 0-2
        try:
            pid = self.runtime.create(self.cid, self.path, stdio=(ends["in"], ends["out"],
                                                                  ends["err"]),
                                      pid_file=os.path.join(self.path, "init.pid"),
                                      console_socket=sock_path)
            _release_own_stdio(own_stderr)  # the container holds the pipes' ends now
            for fd in {ends["in"], ends["out"], ends["err"]} - {ends.get("null")}:
                _close(fd)
            if console is not None:
                master = _accept_master(console)
            self.runtime.start(self.cid)
        except BaseException:
            if master is not None:
                os.close(master)
            raise
        finally:
            os.close(own_stderr)
            if console is not None:
                console.close()
                _remove_listener(sock_path)
        return pid, master

    def _hold(self, pid: int, master: int | None, ends: dict[str, int]) -> int:
        """Copy the output to the log (and the caller, and attach clients) until the
        program exits; its exit code."""
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:  # no pidfds (Linux < 5.3): copy until EOF, then waitpid
            pidfd = None
        interactive = bool(self.meta.get("interactive"))
        stdin = master if master is not None else ends.get("stdin_w")
        # Attached, the caller's stdin is the input; detached, attach clients'.
        hub = attach.Hub(self.log, self.caller, self.listener,
                         stdin if interactive and not self.caller else None, master)
        restore = None
        if master is not None:
            sources = {master: "stdout"}
            if self.caller:
                restore = _terminal_attach(self.caller, master, interactive,
                                           lambda: self._detach_caller(hub, restore))
        else:
            sources = {ends["out_r"]: "stdout", ends["err_r"]: "stderr"}
            if self.caller and "stdin_w" in ends:
                stdio.feed(self.caller[0], ends["stdin_w"])
        checker = None
        if self.meta.get("healthcheck"):
            from ociimg.containers.health import HealthChecker
            checker = HealthChecker(self.path, self.meta, self.runtime)
            checker.start()
        try:
            hub.pump(sources, pidfd)
        finally:
            if checker is not None:
                checker.stop()
            if restore is not None:
                restore()
            if pidfd is not None:
                os.close(pidfd)
            if "stdin_w" in ends and not self.caller:
                _close(ends["stdin_w"])
        _, status = os.waitpid(pid, 0)
        return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)

    def _detach_caller(self, hub: attach.Hub, restore: Any) -> None:
        """The caller typed the detach keys (ctrl-p ctrl-q): its terminal back, no more
        output to it (the log still gets it), and told so; the container runs on. Its fds
        stay open until the monitor ends: closing them here, while the main thread may
        be writing, could hand their numbers to another file."""
        if restore is not None:
            restore()
        hub.caller = None
        hub.set_input(hub.master)  # attach clients type into the pty from now on
        self.caller = None
        self.send({"detached": True})

    def _finish(self, code: int | None) -> None:
        """Exit record first (``ps`` never sees neither it nor the runtime's state), then
        the runtime's state, the network, the rootfs, and the container itself if it is
        auto-removed; all of it before the caller hears of the exit."""
        if code is not None:
            _write_json(os.path.join(self.path, "exit.json"), {
                "exitCode": code, "finished": _now()})
            _append_event(self.path, self.meta, "die", exitCode=str(code))
        if getattr(self, "listener", None) is not None:
            self.listener.close()
            _unlink(os.path.join(self.path, attach.ATTACH_NAME))
        try:
            self.runtime.delete(self.cid, force=True)
        except OciimgError:
            pass
        from ociimg.network import remove_mountpoints
        remove_mountpoints(self.path)  # type: ignore[arg-type]  # in the still mounted rootfs
        # The network's teardown (netavark: 100-200 ms of iptables and netlink calls) and
        # the rootfs's unmount and removal share nothing: side by side.
        network = _NetworkTeardown(self.cid)
        try:
            self._release_rootfs()
        finally:
            network.join()

    def _release_rootfs(self) -> None:
        from ociimg.containers.rootfs import release_rootfs, remove_rootfs
        release_rootfs(self.path)
        if self.meta.get("autoRemove"):
            from ociimg.containers.names import remove_container_files
            root = os.path.dirname(os.path.dirname(self.path))
            remove_rootfs(root, self.cid)
            remove_container_files(self.path, self.meta)
            from ociimg.containers.volumes import VolumeStore, anonymous_volumes
            if anonymous_volumes(self.meta):  # docker run --rm removes them too
                from pathlib import Path
                VolumeStore(Path(root)).remove_anonymous(anonymous_volumes(self.meta))


class _NetworkTeardown:
    """network.teardown of ``cid`` on a thread of its own (the monitor holds the
    attachment's lock); errors go to monitor.log, as the monitor's own do."""

    def __init__(self, cid: str) -> None:
        import threading
        self.cid = cid
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="network-teardown")
        self.thread.start()

    def _run(self) -> None:
        from ociimg.network import teardown
        try:
            teardown(self.cid, locked=True)
        except (OciimgError, OSError) as exc:
            self.error = exc

    def join(self) -> None:
        self.thread.join()
        if self.error is not None:
            print(f"network teardown: {self.error}", file=sys.stderr)  # monitor.log


def _console_listener() -> tuple[Any, str]:
    """A unix socket for the runtime's --console-socket: in a private directory (a short
    path: sun_path has 108 bytes)."""
    import socket
    import tempfile
    # Not in $TMPDIR, which may be long (a test's tmp_path): sun_path has 108 bytes.
    where = tempfile.mkdtemp(prefix="ociimg-console-", dir="/tmp")
    path = os.path.join(where, "sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(1)
    return sock, path


def _remove_listener(path: str) -> None:
    for remove, target in ((os.unlink, path), (os.rmdir, os.path.dirname(path))):
        try:
            remove(target)
        except OSError:
            pass


def _accept_master(listener: Any) -> int:
    from ociimg.runtime.console import receive_master
    listener.settimeout(30)
    conn, _ = listener.accept()
    try:
        return receive_master(conn)
    finally:
        conn.close()


def _terminal_attach(caller: tuple[int, int, int], master: int, interactive: bool,
                     detach: Any) -> Any:
    """Raw mode on the caller's terminal, its size on the pty (now and on SIGWINCH,
    which the CLI forwards here), stdin fed to the pty until the detach keys, which call
    ``detach``; returns the undo."""
    import signal
    import termios
    import tty

    from ociimg.runtime.console import _copy_winsize
    stdin = caller[0]
    saved = None
    if interactive and os.isatty(stdin):
        saved = termios.tcgetattr(stdin)
        _copy_winsize(stdin, master)
        signal.signal(signal.SIGWINCH, lambda *_: _copy_winsize(stdin, master))
        tty.setraw(stdin, termios.TCSANOW)  # TCSAFLUSH would drop what was typed ahead
    if interactive:
        import threading
        threading.Thread(target=_feed_until_detach, args=(stdin, master, detach),
                         daemon=True, name="ociimg-stdin").start()

    def restore() -> None:
        if saved is not None:
            try:
                termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
            except (OSError, termios.error):  # its terminal is gone (detached, then closed)
                pass
    return restore


def _feed_until_detach(src: int, master: int, detach: Any) -> None:
    scanner = attach.DetachScanner()
    while True:
        try:
            chunk = os.read(src, 1 << 16)
        except OSError:
            return
        if not chunk:
            return
        data, detached = scanner.feed(chunk)
        if data:
            stdio.write_all(master, data)
        if detached:
            detach()
            return


def _release_own_stdio(stderr: int) -> None:
    """The built-in runtime's create put the container's ends on fds 0-2: the monitor's
    copies go, so the output pipes reach EOF once the container's processes are gone."""
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(stderr, 2)
    os.close(null)


def _mount_rootfs(path: str, meta: dict[str, Any]) -> None:
    """A started-again container: its active snapshot back on rootfs/."""
    rootfs = os.path.join(path, "rootfs")
    if os.path.ismount(rootfs):
        return
    from pathlib import Path

    from ociimg.containers.rootfs import mount_snapshot
    mount_snapshot(Path(path).parent.parent, Path(path), meta.get("snapshotKey") or meta["id"])


def _restart_delay(path: str, meta: dict[str, Any], code: int, restarts: int,
                   ran: float) -> float | None:
    """Seconds to wait before the restart policy starts the program again; None: no
    restart (no policy, a stop, on-failure with code 0 or out of retries). Docker's
    back-off: 100 ms doubling, back to 100 ms after a run of 10 s or more."""
    policy = meta.get("restart") or {}
    name = policy.get("name", "no")
    if name == "no" or os.path.exists(os.path.join(path, STOP_MARK)):
        return None
    if name == "on-failure":
        if code == 0:
            return None
        limit = int(policy.get("maximumRetryCount") or 0)
        if limit and restarts >= limit:
            return None
    if ran >= 10:
        return 0.1
    return min(0.1 * (2 ** restarts), 60.0)


def _report_error(exc: Exception) -> dict[str, Any]:
    if isinstance(exc, OciimgError):
        return {"error": exc.message, "hint": exc.hint, "exitCode": exc.exit_code}
    return {"error": f"monitor: {exc}", "hint": "see the container's monitor.log"}


def _append_event(path: str, meta: dict[str, Any], action: str, **attrs: str) -> None:
    from ociimg.containers.eventlog import append_event
    append_event(os.path.dirname(os.path.dirname(path)), action, meta, **attrs)


def _now() -> str:
    import time
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _monotonic() -> float:
    import time
    return time.monotonic()


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _read_json(path: str) -> dict[str, Any]:
    with open(path, "rb") as f:
        doc = jsonio.loads(f.read())
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: not a JSON object")
    return doc


def _write_json(path: str, doc: dict[str, Any]) -> None:
    """Whole or not at all (the same file format as store.write_json)."""
    head, name = os.path.split(path)
    tmp = os.path.join(head, f".{name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(jsonio.dumps(doc))
    os.replace(tmp, path)


def _starttime(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return int(f.read().rpartition(b")")[2].split()[19])


def main(argv: list[str]) -> int:
    path, report = argv[0], int(argv[1])
    caller = tuple(int(x) for x in argv[2:5]) if len(argv) >= 5 else None
    os.setsid()
    if os.fork() != 0:  # the spawner reaps this one at once; the monitor is nobody's child
        os._exit(0)
    from ociimg.oskit import linux
    linux.set_child_subreaper()
    try:
        monitor = Monitor(path, report, caller)  # type: ignore[arg-type]
    except (OSError, ValueError, KeyError) as exc:
        os.write(report, jsonio.dumps({"error": f"monitor: {exc}"}).encode() + b"\n")
        return 1
    return monitor.run()


def error_from_report(doc: dict[str, Any], cid: str) -> OciimgError:
    """The monitor's start error as the kind docker's CLI picks from a runtime's words
    (cli/command/container/run.go): not found → 127, not executable → 126."""
    from ociimg.errors import ContainerError, NotExecutable
    message = doc.get("error") or f"container {cid[:12]}: the monitor failed to start it"
    cls: type[ContainerError] = ContainerError
    if doc.get("exitCode") == 127 or "executable file not found" in message or (
            "exec:" in message and "no such file or directory" in message):
        cls = ExecutableNotFound
    elif doc.get("exitCode") == 126 or ("exec:" in message and (
            "permission denied" in message or "is a directory" in message)):
        cls = NotExecutable
    return cls(message, hint=doc.get("hint"))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
