"""ContainerManager: create, start, wait, logs, exec, stop, kill, pause, resume, remove.

Library code, callable from any thread of any process (a CLI, a server): it installs no
signal handler, never touches fds 0-2, never forks. The container's process is started and
held by its monitor (monitor.py), a process of its own, so it outlives its caller; stdio
is passed in as fds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ociimg.containers import store
from ociimg.containers.eventlog import append_event
from ociimg.containers.monitorproc import (
    dup_above_stdio,
    launch_monitor,
    read_report,
    same_process,
    wait_monitor,
)
from ociimg.containers.options import parse_signal
from ociimg.containers.policies import Healthcheck, RestartPolicy
from ociimg.containers.records import HEALTH_RECORD, MONITOR_RECORD, RUN_RECORD, STOP_MARK
from ociimg.containers.runtimes import runtime_from_record, select_runtime
from ociimg.containers.store import Container
from ociimg.errors import ContainerError, ContainerNotFound, OciimgError
from ociimg.events import NullProgress
from ociimg.runtime import DEFAULT_STATE_ROOT

# `ps`, `inspect` and `wait` read records: the bundle converter, the image store, the
# rootfs, volume and attach machinery load where a container is made or started (the
# CLI's start-up budget, tests/integration/test_cli_startup.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from ociimg.bundle import BundleOptions
    from ociimg.containers.logfile import Record
    from ociimg.containers.protocol import OciRuntime
    from ociimg.containers.resolved import ResolvedImage
    from ociimg.containers.volumes import VolumeMount
    from ociimg.events import Progress
    from ociimg.network import NetworkOptions

DEFAULT_RUNTIME_ROOT = Path(DEFAULT_STATE_ROOT)
ACTIVE = ("creating", "created", "running", "paused", "restarting")


def _bundle_options() -> BundleOptions:
    from ociimg.bundle import BundleOptions

    return BundleOptions()


@dataclass
class CreateOptions:
    name: str | None = None
    bundle: BundleOptions = field(default_factory=_bundle_options)
    remove: bool = False           # removed by its monitor once it exits (run --rm)
    interactive: bool = False      # an attached start feeds the caller's stdin to it
    runtime: str | None = None     # None: the built-in runtime; else a runc-compatible binary
    # An active snapshot someone else prepared (a build step's) to mount as the rootfs;
    # it is not the container's: rm leaves it to its owner.
    snapshot: str | None = None
    # Named/anonymous volumes (containers/volumes.py) and docker's stop settings.
    volumes: list[VolumeMount] = field(default_factory=list)
    volumes_from: list[tuple[str, bool | None]] = field(default_factory=list)  # (name, ro)
    stop_signal: str | None = None  # overrides the image's StopSignal
    stop_timeout: float | None = None  # default of `stop` for this container
    # None keeps the bundle's mode (none/host) for library callers; the CLI
    # passes NetworkOptions() (bridge, docker's default).
    network: NetworkOptions | None = None
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    healthcheck: Healthcheck | None = None   # None: the image's HEALTHCHECK, if any
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ContainerStatus:
    status: str                    # configured|creating|created|running|paused|stopped|exited
    pid: int | None = None
    exit_code: int | None = None
    finished: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status}
        if self.pid is not None:
            out["pid"] = self.pid
        if self.exit_code is not None:
            out.update(exitCode=self.exit_code, finished=self.finished)
        return out


class ContainerManager:
    def __init__(self, root: Path, *, runtime_root: Path | None = None) -> None:
        self.root = Path(root)
        self.runtime_root = Path(runtime_root or DEFAULT_RUNTIME_ROOT)
        self._reports: dict[str, int] = {}  # attached starts: the monitor's report pipe

    # Creating ------------------------------------------------------------------------
    def create(self, image: ResolvedImage, options: CreateOptions,
               progress: Progress | None = None) -> Container:
        """The container's bundle with its rootfs mounted; in place only when whole."""
        from ociimg.containers.creating import create_container
        progress = progress or NullProgress()
        runtime = select_runtime(options.runtime, self.runtime_root)
        with store.containers_locked(self.root, shared=True):
            return create_container(self, image, options, runtime, progress)

    # Running -------------------------------------------------------------------------
    def start(self, c: Container, *, stdio: tuple[int, int, int] | None = None,
              fork: bool = False) -> int:
        """Start ``c`` under a new monitor; returns the container's pid. Detached (no
        ``stdio``) its output goes to its log; attached, the monitor copies it to these fds
        (and the caller's stdin in, for an interactive container): ``wait`` then.

        The monitor is a new interpreter (``python -S -m ociimg.containers.monitor``);
        with ``fork``, a single-threaded caller (the CLI) forks it instead, which saves
        that interpreter's start (~40 ms of every ``ociimg run``). A caller with threads
        always spawns: forking a threaded interpreter can deadlock the child."""
        import ociimg.network as network
        net_lock = network.setup(c.path, c.id, self.root)  # the monitor holds it from now
        report_r, report_w = os.pipe2(os.O_CLOEXEC)
        passed = [report_w] + [dup_above_stdio(fd) for fd in stdio or ()]
        if net_lock is not None:
            passed.append(net_lock)  # after the stdio fds: the monitor's argv keeps its shape
        try:
            launch_monitor(c, passed, fork=fork)
        finally:
            for fd in passed:
                os.close(fd)
        try:
            doc = read_report(report_r, None)
        except BaseException:
            os.close(report_r)
            raise
        if "started" not in doc:
            os.close(report_r)
            network.teardown(c.id)  # a monitor that died before its own teardown
            if not doc:
                raise ContainerError(f"container {c.name}: its monitor died",
                                     hint=f"see {c.path / 'monitor.log'}")
            from ociimg.containers.monitor import error_from_report
            raise error_from_report(doc, c.id)
        if stdio is None:
            os.close(report_r)
        else:
            self._reports[c.id] = report_r
        return int(doc["started"])

    def wait(self, c: Container, timeout: float | None = None) -> int | None:
        """The exit code once the program has exited and its monitor is done (exit record
        written, rootfs released); None if ``timeout`` seconds pass first, or, for an
        attached start, when the caller detached (ctrl-p ctrl-q on its terminal)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        report = self._reports.pop(c.id, None)
        if report is not None:
            doc = read_report(report, deadline, until=("exited", "detached"))
            if doc is None:
                self._reports[c.id] = report
                return None
            os.close(report)
            if "exited" in doc:
                return int(doc["exited"])
            if "detached" in doc:  # the caller typed the detach keys; it runs on
                return None
        elif not wait_monitor(c, deadline):
            return None
        while True:
            record = store.exit_record(c)
            if record is not None:
                return int(record["exitCode"])
            if not c.path.exists():
                raise ContainerNotFound(f"container {c.name} was removed when it exited")
            st = self.status(c).status
            if st == "configured":
                raise ContainerError(f"container {c.name} was never started",
                                     hint="start it first (ContainerManager.start)")
            if st not in ACTIVE:
                raise ContainerError(f"container {c.name} exited without an exit record",
                                     hint=f"its monitor was killed; see "
                                          f"{c.path / 'monitor.log'}")
            # No monitor (it was killed): the program may still run; look again soon.
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def wait_next_exit(self, c: Container, timeout: float | None = None) -> int | None:
        """docker wait: the exit code of the program's next exit, also when its restart
        policy starts it again (``wait`` waits for the last one); None on ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        seen = self._runs_seen(c)
        while True:
            record = store.exit_record(c) or {}
            run = self.run_record(c)
            if record.get("restarting") and int(record.get("restartCount", 0)) > seen:
                return int(record["exitCode"])
            if int(run.get("restartCount", 0)) > seen and run.get("lastExitCode") is not None:
                return int(run["lastExitCode"])  # restarted before we looked
            step = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
            if step <= 0:
                return None
            if wait_monitor(c, time.monotonic() + step):  # it ended for good
                return self.wait(c, None if deadline is None else
                                 max(0.0, deadline - time.monotonic()))

    def _runs_seen(self, c: Container) -> int:
        """The restart count of the run a wait starts in: a back-off between runs counts
        as the run before's (its exit already happened)."""
        record = store.exit_record(c) or {}
        seen = int(self.run_record(c).get("restartCount", 0))
        if record.get("restarting"):
            seen = max(seen, int(record.get("restartCount", 0)))
        return seen

    def monitor_pid(self, c: Container) -> int | None:
        doc = store.read_json(c.path / MONITOR_RECORD, "monitor.json")
        return int(doc["pid"]) if doc and same_process(doc) else None

    def exec(self, c: Container, argv: list[str], *, env: list[str] | None = None,
             cwd: str | None = None, user: str | None = None, tty: bool = False,
             interactive: bool = False, stdio: tuple[int, int, int] = (0, 1, 2)) -> int:
        """Run ``argv`` in the running container; its exit code. Without a tty it gets
        pipes copied to and from ``stdio`` (stdin only when ``interactive``); with one,
        the runtime gives it a pty and copies that to ``stdio``."""
        from ociimg.containers.execs import run_exec
        st = self.status(c).status
        if st != "running":
            raise ContainerError(f"container {c.name} is {st}, not running",
                                 hint="exec needs a running container (ociimg run -d ...)")
        return run_exec(c, self.runtime(c), argv, env=env or [], cwd=cwd, user=user, tty=tty,
                        interactive=interactive, stdio=stdio)

    # Managing ------------------------------------------------------------------------
    def runtime(self, c: Container) -> OciRuntime:
        doc = c.meta.get("runtime") or {"name": "builtin", "root": str(self.runtime_root)}
        return runtime_from_record(doc)

    def get(self, name_or_id: str) -> Container:
        return store.find_container(self.root, name_or_id)

    def list(self) -> list[Container]:
        return store.list_containers(self.root)

    def status(self, c: Container) -> ContainerStatus:
        st = self.runtime(c).state(c.id)
        if st and st.get("status") != "stopped":
            return ContainerStatus(st["status"], pid=st.get("pid"))
        record = store.exit_record(c)
        if record is not None:
            if record.get("restarting") and self.monitor_pid(c):
                return ContainerStatus("restarting", exit_code=record.get("exitCode"),
                                       finished=record.get("finished"))
            return ContainerStatus("exited", exit_code=record.get("exitCode"),
                                   finished=record.get("finished"))
        if st:
            return ContainerStatus("stopped")
        return ContainerStatus("configured" if not (c.path / MONITOR_RECORD).exists()
                               else "unknown")

    def kill(self, c: Container, sig: int = signal.SIGKILL, *,
             all_processes: bool = False) -> None:
        self.runtime(c).kill(c.id, sig, all_processes=all_processes)

    def kill_by_user(self, c: Container, sig: int = signal.SIGKILL) -> None:
        """``ociimg kill``: like kill, and its restart policy no longer applies (docker)."""
        st = self.status(c).status
        if st not in ("running", "paused", "restarting"):
            raise ContainerError(f"container {c.name} is {st}, not running",
                                 hint=f"start it first: ociimg start {c.name}")
        self._mark_stopped(c)
        if st != "restarting":
            self.kill(c, sig)
        append_event(self.root, "kill", c.meta, signal=str(int(sig)))

    def pause(self, c: Container) -> None:
        self.runtime(c).pause(c.id)
        append_event(self.root, "pause", c.meta)

    def resume(self, c: Container) -> None:
        self.runtime(c).resume(c.id)
        append_event(self.root, "unpause", c.meta)

    def _mark_stopped(self, c: Container) -> None:
        with contextlib.suppress(OSError):
            (c.path / STOP_MARK).touch()

    def run_record(self, c: Container) -> dict[str, Any]:
        """The current (or last) run: startedAt (Unix seconds), restartCount, pid."""
        return store.read_json(c.path / RUN_RECORD, "run.json") or {}

    def health(self, c: Container) -> dict[str, Any] | None:
        """The health check's state (docker's State.Health), None without a check."""
        if not c.meta.get("healthcheck"):
            return None
        return store.read_json(c.path / HEALTH_RECORD, "health.json") or \
            {"Status": "starting", "FailingStreak": 0, "Log": []}

    def rename(self, c: Container, new: str) -> Container:
        """A new name (docker rename): taken first, then the meta, then the old one freed."""
        store.reserve_name(self.root, new, c.id)
        meta = dict(c.meta, name=new)
        try:
            store.write_json(c.path / "meta.json", meta)
        except BaseException:
            store.release_name(self.root, new, c.id)
            raise
        if c.meta.get("name"):
            store.release_name(self.root, c.meta["name"], c.id)
        append_event(self.root, "rename", meta, oldName=c.name)
        return Container(c.id, c.path, meta)

    def attach(self, c: Container, stdio: tuple[int, int, int], *, stdin: bool = True,
               detach_keys: bytes | None = None, size: tuple[int, int] | None = None,
               on_connect: Callable[[Any], None] | None = None) -> int | None:
        """Copy the running container's output to ``stdio`` (its input from stdio[0] when
        ``stdin`` and it was created interactive) until it exits: its exit code; None if
        the detach keys were typed (default ctrl-p ctrl-q)."""
        from ociimg.containers.attach import DETACH_KEYS, attach_client
        st = self.status(c).status
        if st not in ("running", "paused"):
            raise ContainerError(f"container {c.name} is {st}, not running",
                                 hint=f"start it first: ociimg start {c.name}")
        try:
            done = attach_client(str(c.path), stdio, detach_keys=detach_keys or DETACH_KEYS,
                                 size=size, stdin=stdin and bool(c.meta.get("interactive")),
                                 on_connect=on_connect)
        except OSError as exc:
            raise ContainerError(f"container {c.name}: cannot attach ({exc.strerror})",
                                 hint="its monitor is gone or predates attach; "
                                      f"restart it: ociimg restart {c.name}") from exc
        if not done:
            return None
        return self.wait(c)

    def top(self, c: Container) -> list[int]:
        """The pids (host's view) of every process in the container's cgroup."""
        from ociimg.containers.cgroupstats import cgroup_pids
        return cgroup_pids(self._running_pid(c))

    def usage(self, c: Container) -> Any:
        """CPU time, memory and pids from the container's cgroup (cgroupstats.Usage)."""
        from ociimg.containers.cgroupstats import usage
        return usage(self._running_pid(c))

    def _running_pid(self, c: Container) -> int:
        st = self.status(c)
        if st.status not in ("running", "paused") or not st.pid:
            raise ContainerError(f"container {c.name} is {st.status}, not running",
                                 hint=f"start it first: ociimg start {c.name}")
        return int(st.pid)

    def stop(self, c: Container, timeout: float | None = None) -> None:
        """StopSignal, then SIGKILL to every process after ``timeout`` seconds (docker
        stop; None: its --stop-timeout, else 10); returns once its monitor has recorded
        the exit. Its restart policy no longer applies."""
        if timeout is None:
            timeout = float(c.meta.get("stopTimeout") or 10.0)
        self._mark_stopped(c)
        st = self.status(c).status
        if st == "restarting":  # the monitor sees the mark after its back-off
            self._wait_quietly(c, timeout + 60.0)
            append_event(self.root, "stop", c.meta)
        elif st in ACTIVE:
            self._stop(c, st, timeout)
        self._teardown_network(c)

    def _stop(self, c: Container, st: str, timeout: float) -> None:
        if st == "paused":
            with contextlib.suppress(OciimgError):
                self.resume(c)
        with contextlib.suppress(OciimgError):
            self.kill(c, parse_signal(c.meta.get("stopSignal", "SIGTERM")))
        if self._wait_quietly(c, timeout):
            return
        with contextlib.suppress(OciimgError):
            self.kill(c, signal.SIGKILL, all_processes=True)
        if not self._wait_quietly(c, 10.0):
            raise ContainerError(f"container {c.name} did not stop after SIGKILL")
        append_event(self.root, "stop", c.meta)

    def _teardown_network(self, c: Container) -> None:
        """Its monitor tears the network down when the program exits; this covers a
        monitor that was killed first. Never while the container still runs."""
        import ociimg.network as network
        if self.status(c).status not in ACTIVE:
            network.teardown(c.id, cdir=c.path)

    def _wait_quietly(self, c: Container, timeout: float) -> bool:
        try:
            return self.wait(c, timeout) is not None
        except OciimgError:
            return self.status(c).status not in ACTIVE

    def remove(self, c: Container, force: bool = False, *, volumes: bool = False) -> None:
        """With ``volumes`` (rm -v), its anonymous volumes go too."""
        from ociimg.containers.rootfs import release_rootfs, remove_rootfs
        from ociimg.containers.volumes import VolumeStore, anonymous_volumes
        st = self.status(c).status
        if st in ACTIVE:
            if not force:
                raise ContainerError(f"container {c.name} is {st}",
                                     hint=f"stop it first (ociimg stop {c.name}) or use rm -f")
            self.stop(c, timeout=0)
        with contextlib.suppress(OciimgError):
            self.runtime(c).delete(c.id, force=True)
        self._teardown_network(c)
        release_rootfs(c.path)
        if "snapshotKey" not in c.meta:
            remove_rootfs(self.root, c.snapshot_key)
        with contextlib.suppress(FileNotFoundError):
            store.remove_dir(c)
        report = self._reports.pop(c.id, None)
        if report is not None:
            os.close(report)
        if volumes:
            VolumeStore(self.root).remove_anonymous(anonymous_volumes(c.meta))
        append_event(self.root, "destroy", c.meta)

    def logs(self, c: Container, *, follow: bool = False) -> Iterator[bytes]:
        """What the container wrote, stdout and stderr together, in order."""
        for rec in self.log_records(c, follow=follow):
            yield rec.data

    def log_records(self, c: Container, *, follow: bool = False, since: float | None = None,
                    until: float | None = None, tail: int | None = None) -> Iterator[Record]:
        """The container's output records (logfile.Record: stamp, stream, data) — of
        every run, attached or not; with ``follow``, until it stops."""
        from ociimg.containers.logfile import read_log

        def running() -> bool:
            return self.status(c).status in ACTIVE
        yield from read_log(str(c.path), running=running if follow else None, since=since,
                            until=until, tail=tail)
