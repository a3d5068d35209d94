"""``ociimg run``/``ps``/``stop``/``rm``/``logs``: containers made from images.

A container is a directory ``ROOT/containers/<id>/``: a runtime-spec bundle
(config.json, rootfs/ = overlay of the image's snapshots with upper/ and work/ beside
it) plus ``meta.json`` (name, image, command) and, once it has exited, ``exit.json``.
The built-in runtime (ociimg.runtime) runs the bundle; its state lives in
``/run/ociimg/<id>``. A detached container gets a small monitor process (conmon's
job): it waits for the container, records the exit code and logs, and releases the
rootfs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ociimg.bundle import BundleOptions, to_runtime_config, write_bundle
from ociimg.commands.resolve import ResolvedImage, warn_unsafe_labels
from ociimg.commands.stdio import copy_output, relayed_stdio, release_stdio
from ociimg.errors import (
    AlreadyExists,
    ContainerError,
    ContainerNotFound,
    InvalidArgument,
    OciimgError,
)
from ociimg.events import NullProgress, Progress
from ociimg.fsutil import atomic_write, remove_tree
from ociimg.layers import overlay
from ociimg.layers.snapshots import SnapshotStore
from ociimg.oskit import linux
from ociimg.runtime import container as runtime
from ociimg.runtime.state import DEFAULT_STATE_ROOT
from ociimg.spec import chain_ids
from ociimg.store import locks
from ociimg.store.files import read_regular

RUNTIME_ROOT = os.environ.get("OCIIMG_RUNTIME_ROOT", DEFAULT_STATE_ROOT)


@dataclass
class RunOptions:
    name: str | None = None
    detach: bool = False
    remove: bool = False
    interactive: bool = False
    bundle: BundleOptions = field(default_factory=BundleOptions)


@dataclass(frozen=True)
class Container:
    id: str
    path: Path
    meta: dict[str, Any]

    @property
    def name(self) -> str:
        return self.meta.get("name") or self.id[:12]

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"


def containers_dir(root: Path) -> Path:
    return root / "containers"


# Creating --------------------------------------------------------------------------
def create_container(image: ResolvedImage, root: Path, options: RunOptions,
                     progress: Progress | None = None) -> Container:
    """Make the container's bundle (rootfs mounted); renamed into place only when whole."""
    progress = progress or NullProgress()
    with containers_locked(root, shared=True):
        return _create_container(image, root, options, progress)


@contextlib.contextmanager
def containers_locked(root: Path, *, shared: bool = False) -> Iterator[None]:
    """Creating a container holds this shared, ``gc`` exclusive (without waiting): until
    its meta.json is in place, nothing but this lock tells gc that the snapshots under the
    new rootfs are in use (an ``oci:`` image is not in the store to keep them)."""
    with locks.locked(containers_dir(root) / ".lock", shared=shared, blocking=shared):
        yield


def _create_container(image: ResolvedImage, root: Path, options: RunOptions,
                      progress: Progress) -> Container:
    cid = secrets.token_hex(32)
    final = containers_dir(root) / cid
    tmp = containers_dir(root) / f".tmp-{cid}"
    tmp.mkdir(parents=True, mode=0o700)
    try:
        if options.name:
            reserve_name(root, options.name, cid)
        _prepare_rootfs(image, root, tmp, progress)
        bundle_options = options.bundle
        if bundle_options.hostname is None:
            bundle_options = dataclasses.replace(bundle_options, hostname=cid[:12])
        config = to_runtime_config(image.config, bundle_options, tmp / "rootfs")
        warn_unsafe_labels(image, progress)
        write_bundle(tmp, config)
        meta = {"id": cid, "name": options.name, "image": image.name,
                "digest": str(image.descriptor.digest), "command": config["process"]["args"],
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "detach": options.detach,
                "snapshots": [str(d) for d in chain_ids(image.config.diff_ids)],
                "stopSignal": image.config.stop_signal or "SIGTERM"}
        atomic_write(tmp / "meta.json", json.dumps(meta, indent=2).encode())
        os.rename(tmp, final)
    except BaseException:
        _release_rootfs(tmp)
        remove_tree(tmp)
        if options.name:
            release_name(root, options.name, cid)
        raise
    return Container(cid, final, meta)


_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def check_name(name: str) -> None:
    """Docker's container name grammar, [a-zA-Z0-9][a-zA-Z0-9_.-]*: a name is also a
    file name under containers/.names."""
    if not name or not name[0].isascii() or not name[0].isalnum() \
            or not set(name) <= _NAME_CHARS or len(name) > 255:
        raise InvalidArgument(f"invalid container name {name!r}",
                              hint="use letters, digits, '_', '.' and '-', starting with a "
                                   "letter or digit")


def reserve_name(root: Path, name: str, cid: str) -> None:
    """Take ``name`` for container ``cid``: a symlink containers/.names/NAME -> ID, made
    under a lock, so two concurrent ``run --name X`` cannot both get it. A link whose
    container no longer exists (removed, or its create crashed) is taken over."""
    check_name(name)
    names = containers_dir(root) / ".names"
    names.mkdir(parents=True, exist_ok=True, mode=0o700)
    link = names / name
    with locks.locked(names / ".lock"):  # names cannot start with '.'
        with contextlib.suppress(FileNotFoundError):
            owner = os.readlink(link)
            if _exists_or_creating(root, owner) or owner == cid:
                raise AlreadyExists(f"container name {name} is already in use by "
                                    f"{owner[:12]}", hint=f"remove it first: ociimg rm {name}")
            os.unlink(link)
        for c in list_containers(root):  # named before names were links
            if c.meta.get("name") == name:
                raise AlreadyExists(f"container name {name} is already in use by "
                                    f"{c.id[:12]}", hint=f"remove it first: ociimg rm {name}")
        os.symlink(cid, link)


def release_name(root: Path, name: str, cid: str) -> None:
    link = containers_dir(root) / ".names" / name
    with contextlib.suppress(OSError):
        if os.readlink(link) == cid:
            os.unlink(link)


def _exists_or_creating(root: Path, cid: str) -> bool:
    base = containers_dir(root)
    return (base / cid).is_dir() or (base / f".tmp-{cid}").is_dir()



def _prepare_rootfs(image: ResolvedImage, root: Path, bundle: Path, progress: Progress) -> None:
    """Overlay of the shared snapshots; a flattened copy where overlayfs is unavailable."""
    snapshots = SnapshotStore(root / "snapshots")
    lowers = snapshots.unpack_image(image.store, image.manifest, image.config, progress)
    overlay.mount_rootfs(lowers, bundle, progress, userxattr=snapshots.userxattr)


def _release_rootfs(bundle: Path) -> None:
    rootfs = bundle / "rootfs"
    if os.path.ismount(rootfs):
        overlay.umount(rootfs)


# Running ---------------------------------------------------------------------------
def run_attached(c: Container, options: RunOptions) -> int:
    """Run in the foreground; stdio passes through; returns the program's exit code."""
    if not options.interactive and not options.bundle.terminal:
        _stdin_from_devnull()
    try:
        with relayed_stdio(not options.bundle.terminal):
            code = runtime.run_container(RUNTIME_ROOT, c.id,
                                         runtime.CreateOptions(bundle=c.path))
    except OciimgError:
        _finish(c, None, options.remove)
        raise
    _finish(c, code, options.remove)
    return code


def exec_in(c: Container, command: list[str], *, env: list[str], cwd: str | None = None,
            user: str | None = None, tty: bool = False, interactive: bool = False) -> int:
    """Run ``command`` in the running container ``c`` (the runtime's exec: its namespaces,
    cgroups, capabilities and seccomp profile); returns its exit code."""
    status = status_of(c)["status"]
    if status != "running":
        raise ContainerError(f"container {c.name} is {status}, not running",
                             hint="exec needs a running container (ociimg run -d ...)")
    from ociimg.runtime import execution, state
    from ociimg.runtime.config import User
    from ociimg.users import resolve_user
    cst = state.load_state(RUNTIME_ROOT, c.id)
    # What create recorded, not the bundle's config.json as it is now.
    config = state.load_config(RUNTIME_ROOT, cst)
    who = None
    if user:  # names resolved in the container's own /etc/passwd and /etc/group
        found = resolve_user(user, c.rootfs)
        who = User(uid=found.uid, gid=found.gid, additional_gids=found.additional_gids)
    spec = execution.process_spec(config, command, env=env, cwd=cwd, user=who, terminal=tty)
    if not interactive and not tty:
        _stdin_from_devnull()
    with relayed_stdio(not tty):
        return execution.exec_process(cst, config, spec)


def _stdin_from_devnull() -> None:
    fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(fd, 0)
    os.close(fd)


def run_detached(c: Container, options: RunOptions) -> None:
    """Start the container under a monitor process that outlives this CLI."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the monitor
        os.close(r)
        code = 1
        try:
            code = _monitor(c, options, w)
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as pipe:
        report = pipe.read().decode(errors="replace")
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    if not report.startswith("started"):
        message, _, hint = report.partition("\n")
        raise ContainerError(message or f"container {c.id[:12]}: monitor failed to start it",
                             hint=hint or f"see: ociimg logs {c.id[:12]}")


def _monitor(c: Container, options: RunOptions, report_fd: int) -> int:
    os.setsid()
    if os.fork() != 0:  # double fork: the monitor is not a child of the CLI
        return 0
    # The container gets the write end of a pipe, never the log file (commands/stdio.py):
    # only the monitor writes the file.
    log = os.open(c.path / "log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
                  | os.O_CLOEXEC, 0o600)
    output, into_pipe = os.pipe2(os.O_CLOEXEC)
    _stdin_from_devnull()
    os.dup2(into_pipe, 1)
    os.dup2(into_pipe, 2)
    os.close(into_pipe)
    linux.set_child_subreaper()
    try:
        cst = runtime.create_container(RUNTIME_ROOT, c.id, runtime.CreateOptions(bundle=c.path))
        runtime.start_container(RUNTIME_ROOT, c.id)
    except OciimgError as exc:
        os.write(report_fd, f"{exc.message}\n{exc.hint or ''}".encode())
        os.close(report_fd)
        release_stdio()
        copy_output(output, log, None)
        _finish(c, None, options.remove)
        return 1
    os.write(report_fd, b"started")
    os.close(report_fd)
    release_stdio()
    code = copy_output(output, log, cst.pid)
    # Record the exit before the runtime state goes, so `ps` never sees neither.
    _finish(c, code, options.remove)
    with contextlib.suppress(OciimgError):
        runtime.delete_container(RUNTIME_ROOT, c.id, force=True)
    return 0


def _finish(c: Container, code: int | None, remove: bool) -> None:
    """After the container's process ended: record the exit, release or remove."""
    if remove:
        remove_container_dir(c)
        return
    if code is not None:
        atomic_write(c.path / "exit.json", json.dumps({
            "exitCode": code,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode())
    _release_rootfs(c.path)


# Managing --------------------------------------------------------------------------
def list_containers(root: Path) -> list[Container]:
    out = []
    base = containers_dir(root)
    if not base.is_dir():
        return out
    for d in sorted(base.iterdir()):
        meta_path = d / "meta.json"
        if d.name.startswith(".") or not meta_path.exists():
            continue
        with contextlib.suppress(OciimgError, OSError, ValueError):
            meta = json.loads(read_regular(meta_path, 1 << 20, f"container {d.name} meta.json"))
            out.append(Container(d.name, d, meta))
    return sorted(out, key=lambda c: c.meta.get("created", ""))


def find_container(root: Path, key: str) -> Container:
    """By name, full id, or a unique id prefix."""
    items = list_containers(root)
    for c in items:
        if c.meta.get("name") == key or c.id == key:
            return c
    matches = [c for c in items if c.id.startswith(key)] if len(key) >= 3 else []
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ContainerNotFound(f"container {key}: ambiguous id prefix",
                                hint="give more characters of the id")
    raise ContainerNotFound(f"no such container: {key}", hint="list them with: ociimg ps -a")


def status_of(c: Container) -> dict[str, Any]:
    try:
        st = runtime.container_state(RUNTIME_ROOT, c.id)
    except ContainerNotFound:
        st = None
    if st and st["status"] != "stopped":
        return {"status": st["status"], "pid": st.get("pid")}
    exit_path = c.path / "exit.json"
    if exit_path.exists():
        doc = json.loads(exit_path.read_text())
        return {"status": "exited", "exitCode": doc["exitCode"], "finished": doc["finished"]}
    return {"status": "stopped" if st else "unknown"}


def stop_container(c: Container, timeout: float = 10.0) -> None:
    """StopSignal, then SIGKILL to every process after ``timeout`` seconds (docker stop)."""
    if status_of(c)["status"] not in ("running", "created", "creating"):
        return
    sig = signal.Signals[_signal_name(c.meta.get("stopSignal", "SIGTERM"))]
    with contextlib.suppress(OciimgError):
        runtime.kill_container(RUNTIME_ROOT, c.id, sig)
    if _wait_stopped(c, timeout):
        return
    with contextlib.suppress(OciimgError):
        runtime.kill_container(RUNTIME_ROOT, c.id, signal.SIGKILL, all_processes=True)
    if not _wait_stopped(c, 10.0):
        raise ContainerError(f"container {c.name} did not stop after SIGKILL")


def _signal_name(text: str) -> str:
    text = text.upper()
    if text.isdigit():
        return signal.Signals(int(text)).name
    return text if text.startswith("SIG") else f"SIG{text}"


def _wait_stopped(c: Container, timeout: float) -> bool:
    """Until the process is gone and, for a detached container, its monitor has
    recorded the exit code (a moment later)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if status_of(c)["status"] not in ("running", "created", "creating"):
            _wait_for_exit_record(c)
            return True
        time.sleep(0.05)
    return False


def _wait_for_exit_record(c: Container, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while c.meta.get("detach") and not (c.path / "exit.json").exists() \
            and time.monotonic() < deadline:
        time.sleep(0.05)


def remove_container(c: Container, force: bool = False) -> None:
    status = status_of(c)["status"]
    if status in ("running", "created", "creating"):
        if not force:
            raise ContainerError(f"container {c.name} is {status}",
                                 hint=f"stop it first (ociimg stop {c.name}) or use rm -f")
        stop_container(c, timeout=0)
    remove_container_dir(c)


def remove_container_dir(c: Container) -> None:
    with contextlib.suppress(ContainerNotFound):
        runtime.delete_container(RUNTIME_ROOT, c.id, force=True)
    _release_rootfs(c.path)
    remove_tree(c.path)
    if c.meta.get("name"):
        release_name(c.path.parent.parent, c.meta["name"], c.id)


def read_logs(c: Container, follow: bool = False) -> None:
    log = c.path / "log"
    if not log.exists():
        raise ContainerError(f"container {c.name} has no logs",
                             hint="only detached containers (run -d) keep logs")
    with open(log, "rb") as f:
        while True:
            running = follow and status_of(c)["status"] in ("running", "created", "creating")
            # Read after the status check: what the program wrote before it exited is shown.
            while chunk := f.read(1 << 16):
                sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            if not running:
                return
            time.sleep(0.2)
