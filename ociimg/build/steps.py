"""RUN: a container from :mod:`ociimg.containers` over the step's active snapshot.

The builder prepares the active snapshot; the container mounts it as its rootfs
(``CreateOptions.snapshot``) and leaves it when removed, so the step's change is the
snapshot's diff. The output (stdout and stderr together) goes to the progress log line
by line and the last lines are kept for the error of a failing step. Mount points the
runtime had to create (``/proc``, ``/dev``, ``--mount`` targets) are removed again when
they are still empty, so they never end up in the layer (BuildKit does the same).

Whatever happens (an error, Ctrl-C), the container is removed before this returns.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from ociimg.bundle import BindMount, BundleOptions
from ociimg.errors import BuildError, StepFailed
from ociimg.events import Progress
from ociimg.oskit.mountpoints import remove_mount_points
from ociimg.oskit.paths import resolve_in_root

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ociimg.containers import ResolvedImage
    from ociimg.layers.snapshots import SnapshotStore

TAIL_LINES = 20
TAIL_SHOWN = 5  # in the error's one line
# What the bundle's default mounts need as mount points.
RUNTIME_MOUNT_POINTS = ("/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys",
                        "/sys/fs/cgroup")


@dataclass
class RunRequest:
    argv: list[str]
    env: list[str]
    cwd: str
    user: str
    network: str = "private"
    mounts: list[BindMount] = field(default_factory=list)
    tmpfs: list[str] = field(default_factory=list)


def run_step(root: Path, snapshots: SnapshotStore, key: str, image: ResolvedImage,
             request: RunRequest, progress: Progress, label: str) -> None:
    """Run ``request`` in a container over active snapshot ``key``; StepFailed (with the
    exit code and the last lines of output) when it fails."""
    from ociimg.containers import ContainerManager, CreateOptions
    targets = _with_parents(list(RUNTIME_MOUNT_POINTS) + list(request.tmpfs) +
                            [m.destination for m in request.mounts])
    options = CreateOptions(snapshot=key, bundle=BundleOptions(
        args=request.argv, entrypoint=[], env=request.env, cwd=request.cwd or "/",
        user=request.user, network=request.network, mounts=list(request.mounts),
        tmpfs=list(request.tmpfs)))
    manager = ContainerManager(root)
    container = manager.create(image, options, progress)
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    try:
        # The rootfs is mounted from create to exit: what is missing now, the runtime
        # will make as a mount point.
        view = container.path / "rootfs"
        # Where each will be made: a symlinked parent (/var/run -> /run) is followed inside
        # the root, so the cleanup must look there, not under the link's name.
        missing = sorted({_in_root(view, t) for t in targets if _stat(view, t) is None})
        # The dirs that get a new mount point inside: their times, put back afterwards
        # so that creating and removing it leaves them unchanged for the differ.
        stamps = {p: st for p in {t.rpartition("/")[0] or "/" for t in missing}
                  if p not in missing and (st := _stat(view, p)) is not None}
        code = _run_attached(manager, container, progress, tail)
    finally:
        with contextlib.suppress(Exception):
            manager.remove(container, force=True)
    # Missing before the run means in no lower layer: the new mount points are in the
    # snapshot's own tree only (the upper dir, or the flattened copy), cleaned there.
    remove_mount_points(_own_tree(snapshots, key), missing,
                        {p: (st.st_atime_ns, st.st_mtime_ns) for p, st in stamps.items()})
    if code != 0:
        last = " | ".join(line for line in list(tail)[-TAIL_SHOWN:] if line.strip())
        raise StepFailed(f"{label}: exited with code {code}" +
                         (f" (last output: {last})" if last else ""), exit_code=code or 1,
                         hint="fix the command (its whole output is above), then build again")


def _run_attached(manager, container, progress: Progress, tail: deque[str]) -> int:  # type: ignore[no-untyped-def]
    import threading
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            manager.start(container, stdio=(null, write_fd, write_fd),
                          fork=threading.active_count() == 1)
        finally:
            os.close(write_fd)
            os.close(null)
        buf = b""
        while chunk := os.read(read_fd, 65536):
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                _emit(line, progress, tail)
        if buf:
            _emit(buf, progress, tail)
    finally:
        os.close(read_fd)
    code = manager.wait(container)
    return 1 if code is None else code


def _emit(line: bytes, progress: Progress, tail: deque[str]) -> None:
    text = line.decode("utf-8", "replace").rstrip("\r")
    tail.append(text)
    progress.log(text)


def _with_parents(paths: list[str]) -> list[str]:
    """Each path and its parents (the runtime makes missing parents of a mount point)."""
    out: set[str] = set()
    for path in paths:
        parts = [p for p in path.split("/") if p]
        out.update("/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1))
    return sorted(out)


def _own_tree(snapshots: SnapshotStore, key: str) -> Path:
    from ociimg.layers.active import BACKEND_COPY
    info = snapshots.active_info(key)
    return snapshots.active_dir(key) / ("fs" if info.backend == BACKEND_COPY else "upper")


def _in_root(view: Path, path: str) -> str:
    """``path`` (absolute, in the root) with the symlinks of its existing part resolved
    inside the root; the missing rest appended as written."""
    parts = [p for p in posixpath.normpath(path).split("/") if p]
    rootfd = os.open(view, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        top = os.readlink(f"/proc/self/fd/{rootfd}")
        for i in range(len(parts), 0, -1):
            try:
                fd = resolve_in_root(rootfd, "/".join(parts[:i]), flags=os.O_PATH)
            except OSError:
                continue
            try:
                real = os.readlink(f"/proc/self/fd/{fd}")
            finally:
                os.close(fd)
            rel = posixpath.relpath(real, top)
            if rel == ".." or rel.startswith("../"):  # not under the root: leave it as is
                return "/" + "/".join(parts)
            return posixpath.normpath("/" + posixpath.join(rel, *parts[i:]))
    finally:
        os.close(rootfd)
    return "/" + "/".join(parts)


def _stat(view: Path, path: str) -> os.stat_result | None:
    rootfd = os.open(view, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = resolve_in_root(rootfd, path, flags=os.O_PATH, follow_last=False)
    except OSError:
        return None
    finally:
        os.close(rootfd)
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def check_network(mode: str) -> str:
    if mode in ("default", "private", ""):
        return "private"
    if mode not in ("host", "none"):
        raise BuildError(f"--network={mode}: not supported by builds",
                         hint="use --network host (the host's network) or none")
    return mode
