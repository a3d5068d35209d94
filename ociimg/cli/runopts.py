"""``ociimg run`` options with docker's syntax and meaning: -e/--env-file, -v/--mount/
--tmpfs/--volumes-from, --device, --ulimit, --sysctl, --pull, --cidfile, and docker's
exit codes (125 for ociimg's own errors, 126/127 when the command cannot be run)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ociimg.containers.options import (  # noqa: F401  (re-exported: run's flags)
    MountFlags,
    check_stop_signal,
    check_userns,
    parse_device,
    parse_mount,
    parse_volume_flag,
    parse_volumes_from,
)
from ociimg.errors import ImageNotFound, InvalidArgument, OciimgError

if TYPE_CHECKING:
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
