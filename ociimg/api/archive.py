"""Container files: archive GET/PUT/HEAD (docker cp), export, changes (docker diff).

Everything maps onto ``ociimg cp``/``export``/``diff`` (:mod:`ociimg.commands.copying`,
:mod:`ociimg.commands.changes`), so the same safety holds: a container path is resolved
inside the container's root only (its symlinks never lead to the host), and a tar put
into a container goes through the layer applier confined to the target dir. Running and
stopped containers both work (a stopped one's snapshot is mounted for the request).

Tars leave as they are written, through a worker thread whose writes go to the response
(a slow or vanished client stops the walk, nothing is buffered whole). A tar coming in is
spooled first (bounded as /build's context), then checked against docker cp's rules
(``noOverwriteDirNonDir``) before anything is written.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import io
import json
import logging
import os
import posixpath
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from aiohttp import web

from ociimg.api.build import max_context, spool_body
from ociimg.api.http import (
    ApiError,
    ResponseWriter,
    Routes,
    blocking,
    find_container,
    json_response,
    own_thread,
    query_bool,
    root_of,
)
from ociimg.errors import InvalidDocument, UnsafeArchive

routes = Routes()
log = logging.getLogger("ociimg.api")

STAT_HEADER = "X-Docker-Container-Path-Stat"
WRITE_BUFFER = 1 << 20
# Go's os.FileMode type bits (what docker's stat header carries), by our file type.
_GO_TYPE = {stat.S_IFDIR: 1 << 31, stat.S_IFLNK: 1 << 27, stat.S_IFBLK: 1 << 26,
            stat.S_IFIFO: 1 << 25, stat.S_IFSOCK: 1 << 24, stat.S_IFCHR: (1 << 26) | (1 << 21)}
# docker diff's kinds: modified, added, deleted.
_KINDS = {"C": 0, "A": 1, "D": 2}


def go_file_mode(mode: int) -> int:
    """A st_mode as Go's os.FileMode: permission bits low, type and special bits high."""
    out = stat.S_IMODE(mode) & 0o777 | _GO_TYPE.get(stat.S_IFMT(mode), 0)
    if mode & stat.S_ISUID:
        out |= 1 << 23
    if mode & stat.S_ISGID:
        out |= 1 << 22
    if mode & stat.S_ISVTX:
        out |= 1 << 20
    return out


@contextlib.contextmanager
def container_rootfd(root: Path, container: Any) -> Iterator[int]:
    """An O_PATH fd of the container's merged filesystem for the duration."""
    from ociimg.commands.archive import opened
    from ociimg.commands.changes import container_root
    with container_root(root, container) as path:
        with opened(os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)) as rootfd:
            yield rootfd


@dataclass(frozen=True)
class Target:
    """Where a container path lives: ``path`` inside the tree ``fd`` (the container's
    root, or the source of the bind mount or volume the path is under, as the container
    sees it), ``prefix`` that tree's place in the container."""

    fd: int
    path: str
    prefix: str = "/"
    readonly: bool = False


@contextlib.contextmanager
def target(root: Path, container: Any, path: str) -> Iterator[Target]:
    """The tree ``path`` is in for the duration: a path under a container's volume or
    bind-mounted dir is looked up in that mount's source (the rootfs only holds its
    empty mount point), still resolved inside it only."""
    from ociimg.commands.archive import opened
    with container_rootfd(root, container) as rootfd:
        binds = _dir_binds(container)
        canonical = _canonical(rootfd, path) if binds else ""
        for dest, source, readonly in binds:
            if canonical != dest and not canonical.startswith(dest.rstrip("/") + "/"):
                continue
            # SRC/. and SRC/ keep their meaning (the dir's contents; must be a dir).
            tail = "/." if path.endswith("/.") else "/" if path.endswith("/") else ""
            rest = (canonical[len(dest):] or "/").rstrip("/") + tail or "/"
            with opened(os.open(source, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)) as fd:
                yield Target(fd, rest, dest, readonly)
            return
        yield Target(rootfd, path)


def _dir_binds(container: Any) -> list[tuple[str, str, bool]]:
    """(destination, source, read-only) of the container's bind mounts of dirs (its
    volumes too), the deepest destination first."""
    try:
        with open(container.path / "config.json", "rb") as f:
            mounts = json.load(f).get("mounts") or []
    except (OSError, ValueError):
        return []
    out = []
    for m in mounts:
        options = m.get("options") or []
        if not isinstance(m, dict) or not (m.get("type") == "bind" or "bind" in options
                                           or "rbind" in options):
            continue
        source, dest = str(m.get("source") or ""), str(m.get("destination") or "")
        if dest.startswith("/") and os.path.isdir(source):
            out.append((posixpath.normpath(dest), source, "ro" in options))
    return sorted(out, key=lambda b: -len(b[0]))


def _canonical(rootfd: int, path: str) -> str:
    """``path`` as a clean container path: its longest existing part with symlinks
    resolved inside the root (the last one not followed), the rest appended as written."""
    from ociimg.commands.archive import opened
    from ociimg.commands.copying import open_in_container
    parts = [p for p in path.split("/") if p not in ("", ".")]
    top = os.readlink(f"/proc/self/fd/{rootfd}")
    for i in range(len(parts), -1, -1):
        try:
            fd = open_in_container(rootfd, "/" + "/".join(parts[:i]),
                                   follow_last=i < len(parts))
        except OSError:
            continue
        with opened(fd):
            real = os.readlink(f"/proc/self/fd/{fd}")
        rel = posixpath.relpath(real, top)
        if rel == ".." or rel.startswith("../"):
            return posixpath.normpath("/" + path)
        return posixpath.normpath(posixpath.join("/", rel, *parts[i:]))
    return posixpath.normpath("/" + path)


def _path_param(request: web.Request) -> str:
    path = request.query.get("path")
    if not path:
        raise ApiError(400, "path is required")
    if "\0" in path:
        raise ApiError(400, "path holds a NUL byte")
    return path


def _not_found(path: str, name: str) -> ApiError:
    return ApiError(404, f"Could not find the file {path} in container {name}")


def path_stat(where: Target, shown: str, name: str) -> dict[str, Any]:
    """docker's ContainerPathStat of the container path ``shown`` (its last symlink not
    followed; a ``SRC/.`` or ``SRC/`` path is the dir itself)."""
    from ociimg.commands.archive import opened
    from ociimg.commands.copying import SourceSpec, open_in_container
    spec = SourceSpec.parse(shown)
    try:
        pfd = open_in_container(where.fd, where.path, follow_last=spec.must_be_dir)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise _not_found(shown, name) from None
        raise ApiError(400, f"{shown}: {exc.strerror}") from None
    with opened(pfd):
        st = os.fstat(pfd)
        link = _link_target(where) if stat.S_ISLNK(st.st_mode) else ""
    clean = posixpath.normpath("/" + shown)
    return {"name": posixpath.basename(clean) or "/", "size": st.st_size,
            "mode": go_file_mode(st.st_mode),
            "mtime": datetime.fromtimestamp(st.st_mtime, UTC).isoformat().replace(
                "+00:00", "Z"),
            "linkTarget": link}


def _link_target(where: Target) -> str:
    """Where a symlink leads inside the container (an absolute container path), as
    docker's stat reports it; the link's own text when it leads nowhere."""
    from ociimg.commands.archive import opened
    from ociimg.commands.copying import open_in_container
    path = posixpath.normpath("/" + where.path)
    try:
        fd = open_in_container(where.fd, path, follow_last=True)
    except OSError:
        parent = open_in_container(where.fd, posixpath.dirname(path), follow_last=True)
        with opened(parent):
            text = os.readlink(posixpath.basename(path), dir_fd=parent)
        return posixpath.normpath(posixpath.join(where.prefix, posixpath.dirname(path)[1:],
                                                 text))
    with opened(fd):
        top = os.readlink(f"/proc/self/fd/{where.fd}")
        real = os.readlink(f"/proc/self/fd/{fd}")
    return posixpath.normpath(posixpath.join(where.prefix, posixpath.relpath(real, top)))


def _stat_header(doc: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode()


@routes.head("/containers/{name}/archive")
async def archive_head(request: web.Request) -> web.Response:
    path = _path_param(request)
    container = await blocking(find_container, request, request.match_info["name"])
    doc = await blocking(_stat_of, root_of(request), container, path)
    return web.Response(status=200, headers={STAT_HEADER: _stat_header(doc),
                                             "Content-Type": "application/json"})


def _stat_of(root: Path, container: Any, path: str) -> dict[str, Any]:
    with target(root, container, path) as where:
        return path_stat(where, path, container.name)


@routes.get("/containers/{name}/archive")
async def archive_get(request: web.Request) -> web.StreamResponse:
    path = _path_param(request)
    container = await blocking(find_container, request, request.match_info["name"])
    root = root_of(request)
    opened_root = await blocking(_enter, target(root, container, path))
    try:
        where = opened_root[1]
        doc = await blocking(path_stat, where, path, container.name)
        response = web.StreamResponse(headers={STAT_HEADER: _stat_header(doc),
                                               "Content-Type": "application/x-tar"})
        await _stream(request, response, _tar_of_path, where, path)
    finally:
        await blocking(opened_root[0].__exit__, None, None, None)
    return response


def _enter(manager: Any) -> tuple[Any, Any]:
    """Enter a context manager on a worker thread: (the manager, what it gave)."""
    return manager, manager.__enter__()


def _tar_of_path(out: BinaryIO, where: Target, shown: str) -> None:
    """docker's archive of ``shown``: the entry under its own name (a dir with all below
    it), or for ``SRC/.`` the dir as "." and its contents as "./NAME" (what the docker
    CLI rebases onto the destination)."""
    from ociimg.commands.archive import opened, write_tar
    from ociimg.commands.copying import SourceSpec, open_in_container
    spec = SourceSpec.parse(shown)
    pfd = open_in_container(where.fd, where.path, follow_last=spec.must_be_dir)
    with opened(pfd):
        name = "." if spec.contents_only else posixpath.basename(
            posixpath.normpath("/" + shown)) or "."
        write_tar(out, pfd, name)


@routes.get("/containers/{name}/export")
async def export(request: web.Request) -> web.StreamResponse:
    from ociimg.commands.copying import export_container
    container = await blocking(find_container, request, request.match_info["name"])
    response = web.StreamResponse(headers={"Content-Type": "application/x-tar"})
    await _stream(request, response, lambda out: export_container(root_of(request),
                                                                  container.id, out))
    return response


@routes.get("/containers/{name}/changes")
async def changes(request: web.Request) -> web.Response:
    from ociimg.commands.changes import container_changes
    container = await blocking(find_container, request, request.match_info["name"])
    found = await blocking(container_changes, root_of(request), container.id)
    return json_response([{"Path": path, "Kind": _KINDS[kind]} for kind, path in found])


@routes.put("/containers/{name}/archive")
async def archive_put(request: web.Request) -> web.Response:
    path = _path_param(request)
    container = await blocking(find_container, request, request.match_info["name"])
    root = Path(root_of(request))
    no_overwrite = query_bool(request, "noOverwriteDirNonDir")
    spool = await blocking(_spool_file, root)
    try:
        await spool_body(request, spool, max_context())
        await blocking(_put, root, container, path, spool, no_overwrite)
    finally:
        await blocking(_unlink, spool)
    return web.Response(status=200)


def _spool_file(root: Path) -> Path:
    base = root / "build-cache"
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, name = tempfile.mkstemp(dir=base, prefix=".api-put-")
    os.close(fd)
    os.unlink(name)  # spool_body creates it exclusively
    return Path(name)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _put(root: Path, container: Any, path: str, spool: Path, no_overwrite: bool) -> None:
    from ociimg.build.fetch import open_archive
    from ociimg.commands.archive import opened
    from ociimg.commands.copying import CopyOptions, copy_into_root, open_in_container
    with target(root, container, path) as where:
        if where.readonly:
            raise ApiError(400, "mounted volume is marked read-only")
        try:
            dirfd = open_in_container(where.fd, where.path, follow_last=True)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                raise _not_found(path, container.name) from None
            raise ApiError(400, f"{path}: {exc.strerror}") from None
        with opened(dirfd):
            if not stat.S_ISDIR(os.fstat(dirfd).st_mode):
                raise ApiError(400, "extraction point is not a directory")
            with open(spool, "rb") as raw:
                _check_entries(open_archive(raw), dirfd, no_overwrite)
        with open(spool, "rb") as raw:
            try:
                copy_into_root(where.fd, container.name, open_archive(raw), where.path,
                               CopyOptions())
            except (UnsafeArchive, InvalidDocument) as exc:  # the client's tar
                raise ApiError(400, exc.message) from None


def _check_entries(stream: BinaryIO, dirfd: int, no_overwrite: bool) -> None:
    """docker cp's rules, before anything is written: with ``no_overwrite`` an entry may
    not turn a dir into a non-dir or back; and no ``.wh.`` name (the applier would take it
    for a deletion, where docker writes a file of that name)."""
    from ociimg.commands.copying import open_in_container
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for info in tar:
                parts = [p for p in info.name.split("/") if p not in ("", ".")]
                if any(p.startswith(".wh.") for p in parts):
                    raise ApiError(400, f"{info.name}: names starting with .wh. cannot be "
                                        "copied into a container by ociimg")
                if not no_overwrite or not parts:
                    continue
                try:
                    fd = open_in_container(dirfd, "/".join(parts), follow_last=False)
                except OSError:
                    continue  # missing (or under a missing dir): nothing to overwrite
                is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
                os.close(fd)
                if is_dir and not info.isdir():
                    raise ApiError(400, f"cannot overwrite directory \"/{'/'.join(parts)}\" "
                                        f"with non-directory \"{info.name}\"")
                if info.isdir() and not is_dir:
                    raise ApiError(400, f"cannot overwrite non-directory "
                                        f"\"/{'/'.join(parts)}\" with directory "
                                        f"\"{info.name}\"")
    except tarfile.TarError as exc:
        raise ApiError(400, f"the archive is not a valid tar: {exc}") from None


# Streaming a tar written on a worker thread ---------------------------------------------
async def _stream(request: web.Request, response: web.StreamResponse, fill: Any,
                  *args: Any) -> None:
    """Send ``response``'s headers, then what ``fill(out, *args)`` writes to ``out``."""
    await response.prepare(request)
    raw = ResponseWriter(response, asyncio.get_running_loop())
    writer = io.BufferedWriter(raw, WRITE_BUFFER)

    def run() -> None:
        fill(writer, *args)
        writer.flush()

    try:
        # Its own thread: a client that stops reading holds this one, where a pool
        # worker held by each of a few such clients would leave every other request's
        # blocking() call waiting.
        await own_thread(run)
        await response.write_eof()
    except ConnectionResetError:
        log.info("%s %s: the client went away", request.method, request.path)
    except Exception as exc:  # after the 200: the tar is cut short, the error logged
        log.error("%s %s: %s", request.method, request.path, getattr(exc, "message", exc))
        if request.transport is not None:
            request.transport.close()
    finally:
        raw.discard()
