"""The container monitor (conmon's job): ``python -m ociimg.containers.monitor DIR REPORT
[STDIN STDOUT STDERR]``.

Spawned by ContainerManager.start, it detaches (setsid, fork: it is nobody's child, so it
outlives the CLI or server that started it), becomes the child subreaper, creates and
starts the container through its OCI runtime, and then holds the container's stdio: pipes
(or a pty) it copies to the caller's fds when attached, into ``DIR/log`` when detached.
When the program exits it records ``exit.json``, deletes the runtime's state, unmounts the
rootfs (and removes the container if it was created with remove), and says so on REPORT.

REPORT is a pipe: one JSON line ``{"started": PID}`` or ``{"error": ..., "hint": ...}``,
then ``{"exited": CODE}`` at the end. ``DIR/monitor.json`` has the monitor's pid, which
``wait`` watches through a pidfd.

This process may do what library code must not: signal handlers, fds 0-2, forks. It
imports little: its start is part of every ``ociimg run``.
"""

from __future__ import annotations

import os
import sys

from ociimg.containers import stdio
from ociimg.containers.runtimes import runtime_from_record
from ociimg.errors import ExecutableNotFound, OciimgError
from ociimg.runtime import jsonio

TYPE_CHECKING = False  # typing, pathlib and json cost ~15 ms of every `ociimg run`
if TYPE_CHECKING:
    from typing import Any

    from ociimg.containers.protocol import OciRuntime

MONITOR_RECORD = "monitor.json"


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
        ends = self._container_stdio()
        try:
            pid, master = self._create_and_start(ends)
        except OciimgError as exc:
            self._finish(None)
            self.send({"error": exc.message, "hint": exc.hint, "exitCode": exc.exit_code})
            return 1
        self.send({"started": pid})
        code = self._hold(pid, master, ends)
        self._finish(code)
        self.send({"exited": code})
        return 0

    def _container_stdio(self) -> dict[str, int]:
        """in/out/err: what the container gets; out_r/err_r: what the monitor copies
        from; stdin_w: where it feeds the caller's stdin (interactive only)."""
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        if self.terminal:
            return {"in": null, "out": null, "err": null}
        ends = {"null": null}
        ends["in"], stdin_w = os.pipe2(os.O_CLOEXEC)
        if self.caller is not None and self.meta.get("interactive"):
            ends["stdin_w"] = stdin_w
        else:  # at EOF at once; never the host's /dev/null, which root inside could chmod
            os.close(stdin_w)
        ends["out_r"], ends["out"] = os.pipe2(os.O_CLOEXEC)
        if self.caller is not None:
            ends["err_r"], ends["err"] = os.pipe2(os.O_CLOEXEC)
        else:  # one pipe for both: the log keeps their order
            ends["err"] = ends["out"]
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
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:  # no pidfds (Linux < 5.3): copy until EOF, then waitpid
            pidfd = None
        log = None
        if self.caller is None:
            log = os.open(os.path.join(self.path, "log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND
                          | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        out = self.caller[1] if self.caller else log
        if master is not None:
            pairs = [(master, out)]
            restore = _terminal_attach(self.caller, master, bool(self.meta.get("interactive"))) \
                if self.caller else None
        else:
            pairs = [(ends["out_r"], out)]
            if "err_r" in ends:
                pairs.append((ends["err_r"], self.caller[2]))
            restore = None
            if "stdin_w" in ends:
                stdio.feed(self.caller[0], ends["stdin_w"])
        try:
            stdio.copy_until_exit(pairs, pidfd)
        finally:
            if restore is not None:
                restore()
            if pidfd is not None:
                os.close(pidfd)
            if log is not None:
                os.close(log)
        _, status = os.waitpid(pid, 0)
        return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)

    def _finish(self, code: int | None) -> None:
        """Exit record first (``ps`` never sees neither it nor the runtime's state), then
        the runtime's state, the rootfs, and the container itself if it is auto-removed."""
        if code is not None:
            import time
            _write_json(os.path.join(self.path, "exit.json"), {
                "exitCode": code,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        try:
            self.runtime.delete(self.cid, force=True)
        except OciimgError:
            pass
        from ociimg.network import teardown
        try:
            teardown(self.cid, locked=True, cdir=self.path)  # it holds the lock
        except (OciimgError, OSError) as exc:
            print(f"network teardown: {exc}", file=sys.stderr)  # monitor.log
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


def _console_listener() -> tuple[Any, str]:
    """A unix socket for the runtime's --console-socket: in a private directory (a short
    path: sun_path has 108 bytes)."""
    import socket
    import tempfile
    where = tempfile.mkdtemp(prefix="ociimg-console-")
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


def _terminal_attach(caller: tuple[int, int, int], master: int, interactive: bool) -> Any:
    """Raw mode on the caller's terminal, its size on the pty (now and on SIGWINCH,
    which the CLI forwards here), stdin fed to the pty; returns the undo."""
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
        stdio.feed(stdin, master, close_dst=False)

    def restore() -> None:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
    return restore


def _release_own_stdio(stderr: int) -> None:
    """The built-in runtime's create put the container's ends on fds 0-2: the monitor's
    copies go, so the output pipes reach EOF once the container's processes are gone."""
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(stderr, 2)
    os.close(null)


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
