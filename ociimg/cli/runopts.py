"""``ociimg run`` options with docker's syntax and meaning: -e/--env-file, -v/--mount/
--tmpfs/--volumes-from, --device, --ulimit, --sysctl, --pull, --cidfile, and docker's
exit codes (125 for ociimg's own errors, 126/127 when the command cannot be run)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ociimg.errors import ImageNotFound, InvalidArgument, OciimgError

if TYPE_CHECKING:
    from ociimg.bundle import BindMount
    from ociimg.bundle.runflags import TmpfsMount
    from ociimg.containers.volumes import VolumeMount
    from ociimg.events import Progress

OWN_ERROR = 125


@contextlib.contextmanager
def docker_exit_codes() -> Iterator[None]:
    """Errors of ociimg itself (a bad value, a missing image, a runtime that failed)
    exit 125; a command that is not found or not executable keeps 127/126 (docker run)."""
    try:
        yield
    except OciimgError as exc:
        if exc.exit_code not in (126, 127):
            exc.exit_code = OWN_ERROR
        raise
    except OSError as exc:
        err = OciimgError(str(exc))
        err.exit_code = OWN_ERROR
        raise err from exc


# Environment ---------------------------------------------------------------------------
def environment(items: list[str], env_files: list[Path],
                environ: Mapping[str, str] | None = None) -> list[str]:
    """``--env-file`` entries, then ``-e`` ones (docker's order: -e wins). ``VAR`` alone
    takes the host's value and is left out when the host has none."""
    environ = os.environ if environ is None else environ
    out: list[str] = []
    for path in env_files:
        out += _env_entries(read_env_file(path), environ, str(path))
    return out + _env_entries(items, environ, "-e")


def _env_entries(items: list[str], environ: Mapping[str, str], where: str) -> list[str]:
    out = []
    for item in items:
        name, eq, _ = item.partition("=")
        if not name:
            raise InvalidArgument(f"{where}: invalid environment variable {item!r}",
                                  hint="use NAME=VALUE or NAME")
        if eq:
            out.append(item)
        elif name in environ:
            out.append(f"{name}={environ[name]}")
    return out


_ENV_FILE_MAX = 1 << 20


def read_env_file(path: Path) -> list[str]:
    """docker's env-file format: NAME=VALUE or NAME per line, values verbatim (no quotes
    removed), ``#`` comments and blank lines skipped, leading blanks trimmed."""
    try:
        with open(path, "rb") as f:
            data = f.read(_ENV_FILE_MAX + 1)
    except OSError as exc:
        raise InvalidArgument(f"--env-file {path}: {exc.strerror}") from None
    if len(data) > _ENV_FILE_MAX:
        raise InvalidArgument(f"--env-file {path}: larger than {_ENV_FILE_MAX} bytes")
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise InvalidArgument(f"--env-file {path}: not UTF-8 text") from None
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.lstrip(" \t")
        if not line or line.startswith("#"):
            continue
        name, eq, _ = line.partition("=")
        if not name or any(c in name for c in " \t") or "\0" in line:
            raise InvalidArgument(f"--env-file {path}:{n}: invalid variable {name!r}",
                                  hint="write NAME=VALUE or NAME, one per line")
        out.append(line if eq else name)
    return out


# Mounts ----------------------------------------------------------------------------------
_PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")
_SELINUX = ("z", "Z")  # relabel requests: nothing to do without SELinux


def parse_volume_flag(text: str) -> BindMount | VolumeMount:
    """``-v``: ``/CTR`` (anonymous volume), ``NAME:/CTR[:OPTS]`` (named volume, made on first
    use) or ``/HOST:/CTR[:OPTS]`` (bind); OPTS from ro, rw, z, Z, nocopy, propagation."""
    from ociimg.bundle import BindMount
    from ociimg.containers.volumes import VolumeMount, check_volume_name
    parts = text.split(":")
    if len(parts) == 1:
        return VolumeMount(_destination(parts[0], text))
    if len(parts) > 3 or not parts[0]:
        raise InvalidArgument(f"invalid volume {text!r}",
                              hint="use [NAME|/HOST:]/CONTAINER[:ro|rw|z|Z|nocopy]")
    source, dest = parts[0], _destination(parts[1], text)
    opts = [o for o in parts[2].split(",") if o] if len(parts) == 3 else []
    readonly, nocopy, propagation = False, False, "rprivate"
    for opt in opts:
        if opt in ("ro", "rw"):
            readonly = opt == "ro"
        elif opt in _PROPAGATIONS:
            propagation = opt
        elif opt == "nocopy":
            nocopy = True
        elif opt not in _SELINUX:
            raise InvalidArgument(f"invalid volume option {opt!r} in {text!r}",
                                  hint="options: ro, rw, z, Z, nocopy, [r]private, [r]shared, "
                                       "[r]slave")
    if source.startswith(("/", "./", "../")) or source in (".", ".."):  # docker CLI's rule
        return BindMount(_host_path(source, create=True), dest, readonly, propagation)
    return VolumeMount(dest, check_volume_name(source), readonly, nocopy)


def _destination(path: str, text: str) -> str:
    if not path.startswith("/"):
        raise InvalidArgument(f"invalid volume {text!r}: the container path {path!r} is not "
                              "absolute", hint="use [NAME|/HOST:]/CONTAINER[:OPTIONS]")
    if "\0" in path:
        raise InvalidArgument(f"invalid mount destination {path!r}")
    return path


def _host_path(source: str, *, create: bool = False) -> str:
    """An absolute host path; ``-v`` makes a missing one a directory (docker), ``--mount``
    refuses it (docker too)."""
    host = Path(source).absolute()
    if create and not os.path.lexists(host):
        try:
            host.mkdir(mode=0o755, parents=True)
        except OSError as exc:
            raise InvalidArgument(f"bind source {host}: {exc.strerror}") from None
    if not host.exists():
        raise InvalidArgument(f"bind source {host} does not exist",
                              hint="create it first, or give a volume name instead")
    return str(host)


def parse_mount(text: str) -> BindMount | VolumeMount | TmpfsMount:
    """``--mount type=bind|volume|tmpfs,source=,target=,readonly,...`` (docker)."""
    from ociimg.bundle import BindMount
    from ociimg.bundle.runflags import TmpfsMount
    from ociimg.containers.volumes import VolumeMount, check_volume_name
    fields = _mount_fields(text)
    kind = fields.pop("type", "volume")
    target = fields.pop("target", None)
    if not target:
        raise InvalidArgument(f"--mount {text!r}: target is missing",
                              hint="add target=/path/in/container")
    target = _destination(target, text)
    source = fields.pop("source", "")
    readonly = _bool(fields.pop("readonly", "false"), text)
    if kind == "bind":
        prop = fields.pop("bind-propagation", "rprivate")
        if prop not in _PROPAGATIONS or not source:
            raise InvalidArgument(f"--mount {text!r}: a bind needs source= and a valid "
                                  "bind-propagation")
        mount: BindMount | VolumeMount | TmpfsMount = BindMount(
            _host_path(source), target, readonly, prop)
    elif kind == "volume":
        nocopy = _bool(fields.pop("volume-nocopy", "false"), text)
        mount = VolumeMount(target, check_volume_name(source) if source else None, readonly,
                            nocopy)
    elif kind == "tmpfs":
        if source:
            raise InvalidArgument(f"--mount {text!r}: a tmpfs has no source")
        opts = ["ro"] if readonly else []
        if "tmpfs-size" in fields:
            from ociimg.cli.options import parse_size
            opts.append(f"size={parse_size(fields.pop('tmpfs-size'))}")
        if "tmpfs-mode" in fields:
            opts.append(f"mode={fields.pop('tmpfs-mode')}")
        mount = TmpfsMount(target, tuple(opts))
    else:
        raise InvalidArgument(f"--mount {text!r}: unsupported type {kind!r}",
                              hint="use type=bind, volume or tmpfs")
    fields.pop("consistency", None)  # docker for mac's; no meaning on Linux
    if fields:
        raise InvalidArgument(f"--mount {text!r}: unknown or misplaced key "
                              f"{sorted(fields)[0]!r}")
    return mount


_MOUNT_KEYS = {"type": "type", "source": "source", "src": "source", "target": "target",
               "destination": "target", "dst": "target", "readonly": "readonly",
               "ro": "readonly", "bind-propagation": "bind-propagation",
               "volume-nocopy": "volume-nocopy", "tmpfs-size": "tmpfs-size",
               "tmpfs-mode": "tmpfs-mode", "consistency": "consistency"}


def _mount_fields(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in text.split(","):
        key, eq, value = item.partition("=")
        name = _MOUNT_KEYS.get(key.strip().lower())
        if name is None:
            raise InvalidArgument(f"--mount {text!r}: unknown key {key!r}",
                                  hint="keys: type, source, target, readonly, "
                                       "bind-propagation, volume-nocopy, tmpfs-size, tmpfs-mode")
        if name in out:
            raise InvalidArgument(f"--mount {text!r}: {key} given twice")
        out[name] = value if eq else ("true" if name in ("readonly", "volume-nocopy") else "")
    return out


def _bool(value: str, text: str) -> bool:
    low = value.lower()
    if low in ("1", "true"):
        return True
    if low in ("0", "false"):
        return False
    raise InvalidArgument(f"--mount {text!r}: {value!r} is not true or false")


def parse_volumes_from(text: str) -> tuple[str, bool | None]:
    """``CONTAINER[:ro|rw]``: its volumes and binds, with their modes unless given."""
    name, _, mode = text.partition(":")
    if not name or mode not in ("", "ro", "rw", "z", "Z"):
        raise InvalidArgument(f"invalid --volumes-from {text!r}", hint="use CONTAINER[:ro|rw]")
    return name, None if mode not in ("ro", "rw") else mode == "ro"


@dataclass
class MountFlags:
    binds: list[Any] = field(default_factory=list)
    volumes: list[Any] = field(default_factory=list)
    tmpfs: list[Any] = field(default_factory=list)


def mount_flags(volume: list[str], mount: list[str], tmpfs: list[str]) -> MountFlags:
    """-v, --mount and --tmpfs, sorted by kind for BundleOptions and CreateOptions."""
    from ociimg.bundle import BindMount
    from ociimg.bundle.runflags import TmpfsMount, parse_tmpfs
    out = MountFlags(tmpfs=[parse_tmpfs(t) for t in tmpfs])
    for m in [*map(parse_volume_flag, volume), *map(parse_mount, mount)]:
        if isinstance(m, BindMount):
            out.binds.append(m)
        elif isinstance(m, TmpfsMount):
            out.tmpfs.append(m)
        else:
            out.volumes.append(m)
    dests = [os.path.normpath(m.destination) for m in [*out.binds, *out.tmpfs, *out.volumes]]
    dup = next((d for d in dests if dests.count(d) > 1), None)
    if dup:
        raise InvalidArgument(f"duplicate mount point {dup}")
    return out


# Other run flags ---------------------------------------------------------------------
def parse_device(text: str) -> Any:
    """``--device HOST[:CONTAINER][:PERMS]`` (docker)."""
    from ociimg.bundle.runflags import host_device
    parts = text.split(":")
    if len(parts) == 2 and not parts[1].startswith("/"):
        return host_device(parts[0], None, parts[1])
    if len(parts) > 3 or not parts[0]:
        raise InvalidArgument(f"invalid --device {text!r}",
                              hint="use /dev/HOST[:/dev/CONTAINER][:rwm]")
    return host_device(parts[0], parts[1] if len(parts) > 1 else None,
                       parts[2] if len(parts) > 2 else "rwm")


def check_userns(mode: str | None) -> None:
    if mode not in (None, "", "host"):
        raise InvalidArgument(f"unsupported --userns {mode!r}",
                              hint="ociimg runs containers in the host's user namespace: "
                                   "--userns=host")


def check_stop_signal(name: str | None) -> str | None:
    import signal
    if name is None:
        return None
    text = name.upper()
    try:
        sig = signal.Signals(int(text)) if text.isdigit() else signal.Signals[
            text if text.startswith("SIG") else f"SIG{text}"]
    except (KeyError, ValueError):
        raise InvalidArgument(f"invalid --stop-signal {name!r}",
                              hint="use a signal name (SIGTERM, TERM) or number") from None
    return sig.name


def check_cidfile(path: Path | None) -> None:
    """docker refuses to overwrite an existing --cidfile (another container's?)."""
    if path is not None and os.path.lexists(path):
        raise InvalidArgument(f"container ID file found, make sure the other container "
                              f"isn't running or delete {path}")


def write_cidfile(path: Path | None, cid: str) -> None:
    if path is None:
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise InvalidArgument(f"--cidfile {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(cid)


def resolve_for_run(image: str, root: Path, *, policy: str, platform: Any,
                    pull_options: Any, progress: Progress) -> Any:
    """``--pull missing`` (default: pull if absent), ``always`` (pull first) or
    ``never`` (the store's or an error)."""
    from ociimg.commands.resolve import find_store_name, resolve_image
    if policy not in ("missing", "always", "never"):
        raise InvalidArgument(f"invalid --pull {policy!r}", hint="use always, missing or never")
    if policy != "missing" and not image.startswith(("oci:", "oci-archive:")):
        from ociimg.store import Store
        store = Store.open(root)
        if policy == "never" and find_store_name(store, image) is None:
            raise ImageNotFound(f"image {image} not found in the store",
                                hint="pull it first (ociimg pull), or run with --pull missing")
        if policy == "always":
            import dataclasses

            from ociimg.reference import Reference, parse_image_name
            from ociimg.registry import PullOptions, pull
            ref = parse_image_name(image)
            if not isinstance(ref, Reference):
                raise InvalidArgument(f"--pull always: {image} is not a registry reference")
            options = pull_options or PullOptions()
            if platform is not None:
                options = dataclasses.replace(options, platform=platform)
            pull(ref, store, options, progress)
    return resolve_image(image, root, platform=platform, pull_options=pull_options,
                         progress=progress)
