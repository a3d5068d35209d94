"""OCI runtimes behind one protocol: the built-in one and any runc-compatible binary.

Each runtime keeps its state under a root of its own: the built-in runtime at
``runtime_root``, a binary at ``runtime_root/oci/<name>-<hash of its path>`` (runc's
``--root``), so two runtimes never read each other's state.

The built-in runtime's create/start/state/kill/delete run in this process: ``ociimg run``
then costs one interpreter start for the monitor instead of one more for a runtime binary
(~40 ms each). Its create forks, so it may only be called from a single-threaded process
(the monitor, monitor.py); exec spawns ``python -m ociimg.runtime exec`` like a binary.
"""

from __future__ import annotations

import os
import sys

from ociimg.errors import ContainerError, ContainerNotFound, InvalidArgument

TYPE_CHECKING = False  # the monitor imports this module: no typing, pathlib or json
if TYPE_CHECKING:
    from typing import Any

    from ociimg.containers.protocol import OciRuntime
    StrPath = str | os.PathLike[str]


def package_env() -> dict[str, str]:
    """The environment for a child interpreter that must import this same ociimg tree."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": here if not path else f"{here}{os.pathsep}{path}"}


class BuiltinRuntime:
    name = "builtin"

    def __init__(self, root: StrPath) -> None:
        self.root = os.fspath(root)

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "root": self.root}

    def create(self, cid: str, bundle: StrPath, *, stdio: tuple[int, int, int],
               pid_file: StrPath, console_socket: str | None = None) -> int:
        """The init inherits fds 0-2: they are set to ``stdio`` for good (the monitor's
        own stdio is the container's)."""
        import threading
        if threading.active_count() != 1:
            raise ContainerError("the built-in runtime's create forks: call it from a "
                                 "single-threaded process (the container monitor)")
        from ociimg.runtime import container
        for target, fd in enumerate(stdio):
            if fd != target:
                os.dup2(fd, target)
        cst = container.create_container(self.root, cid, container.CreateOptions(
            bundle=bundle, pid_file=pid_file, console_socket=console_socket))
        return cst.pid

    def start(self, cid: str) -> None:
        from ociimg.runtime import container
        container.start_container(self.root, cid)

    def state(self, cid: str) -> dict[str, Any] | None:
        from ociimg.runtime import container
        try:
            return container.container_state(self.root, cid)
        except ContainerNotFound:
            return None

    def kill(self, cid: str, sig: int, *, all_processes: bool = False) -> None:
        from ociimg.runtime import container
        container.kill_container(self.root, cid, sig, all_processes=all_processes)

    def delete(self, cid: str, *, force: bool = False) -> None:
        from ociimg.runtime import container
        try:
            container.delete_container(self.root, cid, force=force)
        except ContainerNotFound:
            pass

    def pause(self, cid: str) -> None:
        from ociimg.runtime import container
        container.pause_container(self.root, cid)

    def resume(self, cid: str) -> None:
        from ociimg.runtime import container
        container.resume_container(self.root, cid)

    def exec(self, cid: str, process: StrPath, *, stdio: tuple[int, int, int],
             pid_file: str | None = None) -> int:
        argv = [sys.executable, "-S", "-m", "ociimg.runtime", "--root", self.root,
                "exec", *_pid_file(pid_file), "--process", str(process), cid]
        return _run_attached(argv, stdio, package_env())


class RuncRuntime:
    """Any binary with runc's command line (runc, crun, youki, ociimg-runtime)."""

    def __init__(self, binary: StrPath, root: StrPath) -> None:
        self.binary = os.fspath(binary)
        self.name = os.path.basename(self.binary)
        self.root = os.fspath(root)

    def describe(self) -> dict[str, str]:
        return {"name": "oci", "path": self.binary, "root": self.root}

    def _argv(self, *args: str) -> list[str]:
        return [self.binary, "--root", self.root, *args]

    def _call(self, verb: str, cid: str, *args: str) -> str:
        import subprocess
        try:
            proc = subprocess.run(self._argv(verb, *args, cid), capture_output=True,
                                  stdin=subprocess.DEVNULL, timeout=120)
        except OSError as exc:
            raise ContainerError(f"{self.name} {verb} {cid[:12]}: {exc.strerror}",
                                 hint=f"is {self.binary} a runc-compatible runtime?") from exc
        if proc.returncode != 0:
            message = _last_line(proc.stderr.decode(errors="replace"))
            if "does not exist" in message or "not found" in message:
                raise ContainerNotFound(f"{self.name}: container {cid[:12]} does not exist")
            raise ContainerError(f"{self.name} {verb} {cid[:12]}: {message}")
        return proc.stdout.decode(errors="replace")

    def create(self, cid: str, bundle: StrPath, *, stdio: tuple[int, int, int],
               pid_file: StrPath, console_socket: str | None = None) -> int:
        import subprocess
        log = os.path.join(bundle, f"{self.name}.log")
        args = ["--log", str(log), "--log-format", "json", "create", "--bundle", str(bundle),
                "--pid-file", str(pid_file)]
        if console_socket:
            args += ["--console-socket", console_socket]
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        code = _run_attached(self._argv(*args, cid), stdio, None, cwd=bundle,
                             run=subprocess.run)
        if code != 0:
            raise ContainerError(f"{self.name} create {cid[:12]}: {_runc_error(log)}")
        with open(pid_file, "rb") as f:
            return int(f.read().strip())

    def start(self, cid: str) -> None:
        self._call("start", cid)

    def state(self, cid: str) -> dict[str, Any] | None:
        try:
            from ociimg.runtime import jsonio
            return jsonio.loads(self._call("state", cid))
        except (ContainerNotFound, ValueError):
            return None

    def kill(self, cid: str, sig: int, *, all_processes: bool = False) -> None:
        args = ["--all"] if all_processes else []
        import subprocess
        proc = subprocess.run(self._argv("kill", *args, cid, str(int(sig))),
                              capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
        if proc.returncode != 0:
            raise ContainerError(f"{self.name} kill {cid[:12]}: "
                                 f"{_last_line(proc.stderr.decode(errors='replace'))}")

    def delete(self, cid: str, *, force: bool = False) -> None:
        try:
            self._call("delete", cid, *(["--force"] if force else []))
        except ContainerNotFound:
            pass

    def pause(self, cid: str) -> None:
        self._call("pause", cid)

    def resume(self, cid: str) -> None:
        self._call("resume", cid)

    def exec(self, cid: str, process: StrPath, *, stdio: tuple[int, int, int],
             pid_file: str | None = None) -> int:
        return _run_attached(self._argv("exec", *_pid_file(pid_file), "--process",
                                        str(process), cid), stdio, None)


def _pid_file(path: str | None) -> list[str]:
    """runc's ``exec --pid-file``: the exec'd process's host pid, for a caller that may
    have to kill it (a health check past its timeout)."""
    return ["--pid-file", path] if path else []


def _run_attached(argv: list[str], stdio: tuple[int, int, int], env: dict[str, str] | None,
                  *, cwd: StrPath | None = None, run: Any = None) -> int:
    import subprocess
    try:
        proc = (run or subprocess.run)(argv, stdin=stdio[0], stdout=stdio[1], stderr=stdio[2],
                                       env=env, cwd=cwd, close_fds=True)
    except OSError as exc:
        raise ContainerError(f"cannot run {argv[0]}: {exc.strerror}",
                             hint="check --runtime") from exc
    return proc.returncode


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:500] if lines else "failed"


def _runc_error(log: StrPath) -> str:
    """The last error runc logged (``--log-format json``: one object per line)."""
    from ociimg.runtime import jsonio
    try:
        with open(log, "rb") as f:
            lines = f.read().decode(errors="replace").splitlines()[-50:]
    except OSError:
        return "failed"
    for line in reversed(lines):
        try:
            doc = jsonio.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("level") in ("error", "fatal"):
            return str(doc.get("msg", "failed"))[:500]
    return "failed"


def select_runtime(spec: str | None, runtime_root: StrPath) -> OciRuntime:
    """``--runtime``: none/"builtin"/"ociimg" for the built-in one, else a runc-compatible
    binary by name (looked up in PATH, then /usr/sbin and /usr/bin) or path."""
    if spec in (None, "", "builtin", "ociimg"):
        return BuiltinRuntime(runtime_root)
    binary = _find_binary(spec)
    import hashlib
    tag = hashlib.sha256(os.path.realpath(binary).encode()).hexdigest()[:12]
    return RuncRuntime(binary, os.path.join(runtime_root, "oci",
                                            f"{os.path.basename(binary)}-{tag}"))


def _find_binary(spec: str) -> str:
    import shutil
    if os.sep in spec:
        found = spec if os.path.isfile(spec) and os.access(spec, os.X_OK) else None
    else:
        found = shutil.which(spec) or shutil.which(spec, path="/usr/local/sbin:/usr/sbin:"
                                                             "/usr/bin:/sbin:/bin")
    if found is None:
        raise InvalidArgument(f"OCI runtime {spec!r} not found",
                              hint="give a runc-compatible binary by name or path, or "
                                   "leave --runtime out for the built-in runtime")
    return os.path.abspath(found)


def runtime_from_record(doc: dict[str, Any]) -> OciRuntime:
    """The runtime a container was created with (its meta.json "runtime")."""
    root = doc["root"]
    if doc.get("name") == "builtin":
        return BuiltinRuntime(root)
    return RuncRuntime(doc["path"], root)
