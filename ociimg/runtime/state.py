"""Container state on disk: ``<state root>/<id>/state.json`` plus ``exec.fifo``.

The file holds the runtime-spec state (ociVersion, id, status, pid, bundle, annotations)
and our private fields: the init's /proc starttime (so a recycled pid is never mistaken
for the container), the cgroup manager state and the creation time. The status is never
trusted from disk; it is derived (runc): init alive and exec.fifo present → created; alive
and fifo gone → running; dead (or a zombie, or another process on that pid) → stopped.
"""

from __future__ import annotations

import os

from ociimg.errors import AlreadyExists, ContainerError, ContainerNotFound
from ociimg.runtime import SPEC_VERSION, jsonio
from ociimg.runtime.records import asdict, field, record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ociimg.runtime.config import RuntimeConfig

_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.+-")


@record(slots=True)
class ContainerState:
    id: str
    bundle: str
    pid: int = 0
    pid_starttime: int = 0
    created: str = ""
    annotations: dict[str, str] = field(default_factory=dict)
    cgroup: dict[str, Any] | None = None
    config_hooks: dict[str, Any] = field(default_factory=dict)
    rootfs: str = ""
    owner: str = "root"
    # Without a mount ns of its own, where its mounts live (rootfs.shared_ns_record).
    shared_mounts: dict[str, Any] | None = None
    # Saved early (a runtime killed mid-way leaves what delete -f needs) and cleared when
    # create is done: until then the init is not past pivot_root, and `exec` would join
    # a mount ns whose root is still the host's.
    creating: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ContainerState:
        known = {k: v for k, v in doc.items() if k in cls.__record_fields__}
        return cls(**known)


# libcontainer's errors, word for word: callers match them ("does not exist" is
# containerd's "no such container"); the id goes to the hint.
NOT_EXIST = "container does not exist"
EXISTS = "container with given ID already exists"


def check_id(container_id: str) -> None:
    # [A-Za-z0-9][A-Za-z0-9_.+-]*, without re.
    if not container_id or not set(container_id) <= _ID_CHARS or container_id[0] in "_.+-" \
            or len(container_id) > 1024:
        raise ContainerError(f"invalid container id {container_id!r}",
                             hint="use letters, digits, '_', '.', '+' and '-'")


def state_dir(root: str | os.PathLike[str], container_id: str) -> str:
    check_id(container_id)
    return os.path.join(root, container_id)


def fifo_path(root: str | os.PathLike[str], container_id: str) -> str:
    return os.path.join(state_dir(root, container_id), "exec.fifo")


def make_state_dir(root: str | os.PathLike[str], container_id: str) -> str:
    path = state_dir(root, container_id)
    os.makedirs(root, mode=0o711, exist_ok=True)
    try:
        # Root only: it records the container's config (record_config). The init reaches
        # exec.fifo through an O_PATH fd, never through this directory.
        os.mkdir(path, 0o700)
    except FileExistsError as exc:
        raise AlreadyExists(EXISTS, hint=f"container {container_id} exists; delete it first: "
                                         f"ociimg-runtime delete {container_id}") from exc
    # runc: 0622 so an init that already dropped to a non-root user can still open it
    # for writing through its O_PATH fd.
    fifo = os.path.join(path, "exec.fifo")
    os.mkfifo(fifo, 0o622)
    os.chmod(fifo, 0o622)
    return path


def save_state(root: str | os.PathLike[str], state: ContainerState) -> None:
    write_atomic(os.path.join(state_dir(root, state.id), "state.json"),
                 jsonio.dumps(state.to_json(), indent=None).encode())


def record_config(root: str | os.PathLike[str], container_id: str, raw: dict[str, Any]) -> None:
    """The config create used, for exec: the bundle's config.json may change afterwards
    (other namespaces, no seccomp profile) and must not apply to a running container."""
    write_atomic(os.path.join(state_dir(root, container_id), "config.json"),
                 jsonio.dumps(raw, indent=None).encode(), mode=0o600)


def load_config(root: str | os.PathLike[str], state: ContainerState) -> RuntimeConfig:
    """The config create recorded (record_config), with the bundle's paths as they were."""
    from ociimg.runtime.config import parse_config
    path = os.path.join(state_dir(root, state.id), "config.json")
    try:
        with open(path, "rb") as f:
            doc = jsonio.loads(f.read())
    except FileNotFoundError as exc:
        raise ContainerError(f"container {state.id}: no recorded config in {path}",
                             hint="it was created by an older ociimg-runtime: recreate it") \
            from exc
    except ValueError as exc:
        raise ContainerError(f"container {state.id}: corrupt recorded config {path}") from exc
    return parse_config(doc, state.bundle)


def load_state(root: str | os.PathLike[str], container_id: str) -> ContainerState:
    path = os.path.join(state_dir(root, container_id), "state.json")
    try:
        with open(path, "rb") as f:
            return ContainerState.from_json(jsonio.loads(f.read()))
    except FileNotFoundError as exc:
        raise ContainerNotFound(NOT_EXIST, hint=f"no container {container_id} in {root}; "
                                                "list them with: ociimg-runtime list") from exc
    except ValueError as exc:
        raise ContainerError(f"container {container_id}: corrupt state file {path}",
                             hint=f"remove it: ociimg-runtime delete -f {container_id}") from exc


def list_ids(root: str | os.PathLike[str]) -> list[str]:
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    return [n for n in names if os.path.exists(os.path.join(root, n, "state.json"))]


def remove_state(root: str | os.PathLike[str], container_id: str) -> None:
    _remove_dir(state_dir(root, container_id))


# Not fsutil's atomic_write/remove_tree, which import tempfile and shutil: a state dir is
# small, flat and written only by the runtime, and these are enough.
def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    """Write a temp file beside ``path`` and rename it over: readers never see a torn
    state. No fsync (runc's saveState doesn't either): runtime state lives in /run and
    describes processes that a machine crash ends anyway; two fsyncs were ~2.5 ms of
    every ``run`` on a disk-backed /run."""
    head, name = os.path.split(os.fspath(path))
    tmp = os.path.join(head, f".{name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _remove_dir(path: str) -> None:
    """Remove a state dir (files, fifos, sub-dirs); symlinks are unlinked, never followed."""
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return
    except NotADirectoryError:
        os.unlink(path)
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            _remove_dir(entry.path)
        else:
            _unlink_quietly(entry.path)
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass


def proc_starttime(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (after the parenthesised comm), None when gone."""
    stat = _read_stat(pid)
    return None if stat is None else int(stat[19])


def proc_state(pid: int) -> str | None:
    stat = _read_stat(pid)
    return None if stat is None else stat[0]


def proc_exe_identity(pid: int) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the binary ``pid`` runs, None when gone: an execve shows as a
    change of it, whatever a process inside says."""
    try:
        st = os.stat(f"/proc/{pid}/exe")
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _read_stat(pid: int) -> list[str] | None:
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return raw[raw.rindex(")") + 2:].split()


def init_alive(state: ContainerState) -> bool:
    stat = _read_stat(state.pid)
    if stat is None or stat[0] in ("Z", "X"):
        return False
    return int(stat[19]) == state.pid_starttime


def derive_status(root: str | os.PathLike[str], state: ContainerState) -> str:
    if not init_alive(state):
        return "stopped"
    if state.creating:
        return "creating"
    if os.path.exists(fifo_path(root, state.id)):
        return "created"
    return "running"


def oci_state(root: str | os.PathLike[str], state: ContainerState,
              status: str | None = None) -> dict[str, Any]:
    """The runtime-spec state object (runtime.md "State"), as `state` prints it."""
    status = status or derive_status(root, state)
    doc: dict[str, Any] = {"ociVersion": SPEC_VERSION, "id": state.id, "status": status,
                           "bundle": state.bundle}
    if status != "stopped":
        doc["pid"] = state.pid
    else:
        doc["pid"] = 0
    doc["rootfs"] = state.rootfs
    doc["created"] = state.created
    doc["owner"] = state.owner
    if state.annotations:
        doc["annotations"] = state.annotations
    return doc


def hook_state(state: ContainerState, status: str) -> dict[str, Any]:
    return hook_doc(state.id, status, state.pid, state.bundle, state.annotations)


def hook_doc(container_id: str, status: str, pid: int, bundle: str,
             annotations: dict[str, str]) -> dict[str, Any]:
    """The state a hook reads on its stdin (runtime-spec config.md "Hooks")."""
    doc: dict[str, Any] = {"ociVersion": SPEC_VERSION, "id": container_id, "status": status,
                           "pid": pid, "bundle": bundle}
    if annotations:
        doc["annotations"] = annotations
    return doc
