"""Images: list, inspect, tag, remove, history, get, load, search, prune (pull, push and
/auth are in imageregistry).

Each handler maps onto the store and the commands the CLI uses (``images``,
``inspect``, ``history``, ``tag``, ``rmi``/``gc``, ``save``, ``load``); the shapes are
imagedocs'. Names are what a docker client sends: ``busybox``, ``busybox:latest``,
``docker.io/library/busybox``, an Id or Id prefix, ``name@digest`` — never a transport
(``oci:/path`` is not an image name here: the API reads the store only).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import io
import logging
import os
import re
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from ociimg.api import imageregistry
from ociimg.api.http import (
    ApiError,
    Routes,
    api_version,
    blocking,
    error_body,
    json_response,
    query_bool,
    query_filters,
    root_of,
)
from ociimg.api.imagedocs import (
    ImageGroup,
    familiar,
    group_rows,
    image_history,
    image_inspect,
    image_summary,
    short_id,
)
from ociimg.errors import ImageNotFound, InvalidArgument, OciimgError
from ociimg.store import Store

routes = Routes()
log = logging.getLogger("ociimg.api")

_ID_RE = re.compile(r"(?:sha256:)?[0-9a-f]{1,64}")
_NAME_MAX = 1024  # longer than any valid reference: refused before any lookup
# A load body is spooled to disk (the archive is read by offset): at most this much,
# and never past the last LOAD_RESERVE bytes of free space on the store's filesystem.
LOAD_LIMIT_ENV = "OCIIMG_API_LOAD_LIMIT"
LOAD_LIMIT = 64 << 30
LOAD_RESERVE = 256 << 20
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"\xfd7zXZ\x00", b"BZh")


# Finding images ---------------------------------------------------------------------
@dataclass
class Found:
    store: Store
    groups: dict[str, ImageGroup]
    group: ImageGroup
    name: str | None  # the stored name the client named; None when named by Id


class IndexSnapshot(Store):
    """The store with its index read once per request: one consistent list of names,
    and a listing of N names parses index.json once instead of once per name (each
    ``image_for`` resolves its name through ``refs``)."""

    _refs: list[tuple[str, Any]] | None = None

    def refs(self) -> list[tuple[str, Any]]:
        if self._refs is None:
            self._refs = super().refs()
        return self._refs


def image_table(root: Path) -> tuple[Store, dict[str, ImageGroup]]:
    from ociimg.commands.listing import image_rows

    store = IndexSnapshot.open(root)
    return store, group_rows(image_rows(store))


def find_image(root: Path, text: str) -> Found:
    """The image ``text`` names, as dockerd looks it up: a full Id, a name, an Id prefix.
    404 ``No such image: TEXT`` (the CLI's run pulls on exactly that)."""
    store, groups = image_table(root)
    if len(text) > _NAME_MAX or not text:
        raise no_such_image(text)
    bare = text.removeprefix("sha256:")
    if _ID_RE.fullmatch(text) and len(bare) == 64 and f"sha256:{bare}" in groups:
        return Found(store, groups, groups[f"sha256:{bare}"], None)
    name = _stored_name(store, text)
    if name is not None:
        for group in groups.values():
            if any(r.name == name for r in group.rows):
                return Found(store, groups, group, None if _ID_RE.fullmatch(text) else name)
    if _ID_RE.fullmatch(text):
        matches = [g for key, g in groups.items() if key.removeprefix("sha256:").startswith(bare)]
        if len(matches) == 1:
            return Found(store, groups, matches[0], None)
    raise no_such_image(text)


def _stored_name(store: Store, text: str) -> str | None:
    from ociimg.transports import find_store_name

    try:
        return find_store_name(store, text)
    except OciimgError:  # not a reference at all: no such image
        return None


def no_such_image(text: str) -> ApiError:
    return ApiError(404, f"No such image: {text[:200]}")


def _version(request: web.Request) -> tuple[int, int]:
    return api_version(request)


# List, inspect, history ---------------------------------------------------------------
@routes.get("/images/json")
async def list_images(request: web.Request) -> web.Response:
    filters = query_filters(request)
    version = _version(request)
    groups = await blocking(_list, root_of(request), filters)
    return json_response([image_summary(g, version) for g in groups])


def _list(root: Path, filters: dict[str, list[str]]) -> list[ImageGroup]:
    from ociimg.commands.listing import filter_rows, image_rows

    store = IndexSnapshot.open(root)
    rows = image_rows(store)
    patterns = filters.pop("reference", [])
    if patterns:
        rows = [r for r in rows if not r.dangling and any(_reference_match(r.repository, r.tag, p)
                                                          for p in patterns)]
    flat = [f"{key}={value}" for key, values in filters.items() for value in values]
    rows = filter_rows(rows, flat, store)
    groups = list(group_rows(rows).values())
    groups.sort(key=lambda g: (g.first.created or datetime.min.replace(tzinfo=UTC)),
                reverse=True)
    return groups


def _reference_match(repository: str, tag: str, pattern: str) -> bool:
    """docker's reference filter: the pattern against the familiar name and name:tag."""
    repo = familiar(repository)
    return any(fnmatch.fnmatchcase(n, pattern) for n in (repo, f"{repo}:{tag}", repository,
                                                         f"{repository}:{tag}"))


@routes.get("/images/{name:.+}/json")
async def inspect_image(request: web.Request) -> web.Response:
    version = _version(request)
    doc = await blocking(_inspect, root_of(request), request.match_info["name"], version)
    return json_response(doc)


def _inspect(root: Path, text: str, version: tuple[int, int]) -> dict[str, Any]:
    found = find_image(root, text)
    _desc, _manifest, config = found.store.image_for(found.group.first.name)
    return image_inspect(found.group, config, version)


@routes.get("/images/{name:.+}/history")
async def history(request: web.Request) -> web.Response:
    return json_response(await blocking(_history, root_of(request), request.match_info["name"]))


def _history(root: Path, text: str) -> list[dict[str, Any]]:
    from ociimg.commands.history import history_rows
    from ociimg.commands.listing import uncompressed_size

    found = find_image(root, text)
    _desc, manifest, config = found.store.image_for(found.group.first.name)
    sizes: dict[str, int | None] = {str(d.digest): uncompressed_size(found.store, d)
                                    for d in manifest.layers}
    return image_history(found.group, history_rows(manifest, config, sizes))


# Tag, remove, prune -------------------------------------------------------------------
@routes.post("/images/{name:.+}/tag")
async def tag(request: web.Request) -> web.Response:
    repo, tag_ = request.query.get("repo", ""), request.query.get("tag", "")
    if not repo:
        raise ApiError(400, "repository name must have at least one component")
    await blocking(_tag, root_of(request), request.match_info["name"], repo, tag_)
    return web.Response(status=201)


def _tag(root: Path, text: str, repo: str, tag_: str) -> None:
    from ociimg.reference import parse_reference

    target = f"{repo}:{tag_}" if tag_ else repo
    ref = parse_reference(target)  # InvalidReference: 400
    if ref.digest is not None:
        raise InvalidArgument(f"refusing to create a tag with a digest reference: {target[:200]}")
    found = find_image(root, text)
    found.store.tag(str(ref), found.store.resolve(found.group.first.name))


@routes.delete("/images/{name:.+}")
async def remove(request: web.Request) -> web.Response:
    force, noprune = query_bool(request, "force"), query_bool(request, "noprune")
    result = await blocking(_remove, root_of(request), request.match_info["name"], force,
                            noprune)
    return json_response(result)


def _remove(root: Path, text: str, force: bool, noprune: bool) -> list[dict[str, str]]:
    found = find_image(root, text)
    group, users = found.group, _users(root, found)
    tags = group.tag_names
    if found.name is not None and found.name in tags:
        untag = [found.name]
        last = len(tags) == 1
        if last and users and not force:
            raise ApiError(409, f"conflict: unable to remove repository reference "
                           f"\"{text[:200]}\" (must force) - container {users[0][:12]} is "
                           f"using its referenced image {short_id(group.image_id)}")
    else:
        if len(tags) > 1 and not force:
            raise ApiError(409, f"conflict: unable to delete {short_id(group.image_id)} (must "
                           "be forced) - image is referenced in multiple repositories")
        if users and not force:
            raise ApiError(409, f"conflict: unable to delete {short_id(group.image_id)} (must "
                           f"be forced) - image is being used by stopped container "
                           f"{users[0][:12]}")
        untag, last = [r.name for r in group.rows], True
    out: list[dict[str, str]] = []
    for name in untag:
        found.store.untag(name)
        if name in tags:
            out.append({"Untagged": familiar(name)})
    if last:
        for row in group.rows:  # repo@digest and digest names of the image go with it
            if row.name not in untag:
                with contextlib.suppress(ImageNotFound):
                    found.store.untag(row.name)
        if not users:
            out.append({"Deleted": group.image_id})
        if not noprune:
            collect(root)
    return out


def _users(root: Path, found: Found) -> list[str]:
    """Ids of the containers made from the image (by its names or manifest digests)."""
    from ociimg.containers.store import list_containers

    names = {r.name for r in found.group.rows}
    digests = {str(r.digest) for r in found.group.rows}
    with contextlib.suppress(OciimgError):
        digests.add(str(found.store.image_for(found.group.first.name)[0].digest))
    return [c.id for c in list_containers(root)
            if c.image in names or c.meta.get("digest") in digests]


def collect(root: Path) -> int:
    """``ociimg gc`` (blobs and snapshots nothing uses); returns the bytes freed."""
    from ociimg.commands.maintenance import collect_garbage
    from ociimg.containers.store import containers_locked, list_containers

    with containers_locked(root):
        report = collect_garbage(root, [c.meta for c in list_containers(root)])
    for warning in report.warnings:
        log.warning("gc: %s", warning)
    return report.bytes_freed + report.snapshot_bytes_freed


@routes.post("/images/prune")
async def prune(request: web.Request) -> web.Response:
    filters = query_filters(request)
    deleted, freed = await blocking(_prune, root_of(request), filters)
    return json_response({"ImagesDeleted": deleted or None, "SpaceReclaimed": freed})


def _prune(root: Path, filters: dict[str, list[str]]) -> tuple[list[dict[str, str]], int]:
    for key in filters:
        if key not in ("dangling", "until", "label", "label!"):
            raise ApiError(400, f"invalid filter '{key}'")
    dangling_only = filters.get("dangling", ["true"])[-1] in ("true", "1", "True")
    until = [_until(v) for v in filters.get("until", [])]
    store, groups = image_table(root)
    from ociimg.containers.store import list_containers

    used = {c.image for c in list_containers(root)} | {c.meta.get("digest")
                                                         for c in list_containers(root)}
    deleted: list[dict[str, str]] = []
    for group in groups.values():
        if dangling_only and group.tag_names:
            continue
        if any(r.name in used or str(r.digest) in used for r in group.rows):
            continue
        if not _prune_matches(group, until, filters):
            continue
        for row in group.rows:
            store.untag(row.name)
            if row.name in group.tag_names:
                deleted.append({"Untagged": familiar(row.name)})
        deleted.append({"Deleted": group.image_id})
    return deleted, collect(root) if deleted else 0


def _prune_matches(group: ImageGroup, until: list[datetime],
                   filters: dict[str, list[str]]) -> bool:
    created, labels = group.first.created, group.first.labels
    if until and (created is None or any(created >= u for u in until)):
        return False
    for text in filters.get("label", []):
        key, eq, value = text.partition("=")
        if key not in labels or (eq and labels[key] != value):
            return False
    for text in filters.get("label!", []):
        key, eq, value = text.partition("=")
        if key in labels and (not eq or labels[key] == value):
            return False
    return True


def _until(text: str) -> datetime:
    """docker's ``until``: unix seconds, an RFC 3339 time, or a Go duration ago."""
    now = datetime.now(UTC)
    with contextlib.suppress(ValueError):
        return datetime.fromtimestamp(float(text), UTC)
    with contextlib.suppress(ValueError):
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return when if when.tzinfo else when.replace(tzinfo=UTC)
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(h|m|s)", text)
    if match:
        unit = {"h": 3600, "m": 60, "s": 1}[match.group(2)]
        return now - timedelta(seconds=float(match.group(1)) * unit)
    raise ApiError(400, f"invalid until filter {text[:100]!r}: give unix seconds, an RFC "
                   "3339 time or a duration such as 24h")


# Search -------------------------------------------------------------------------------
@routes.get("/images/search")
async def search(request: web.Request) -> web.Response:
    raise ApiError(501, "search is not supported by ociimg serve: ociimg has no index to "
                   "search; browse the registry's web page, or list a repository's tags with "
                   "`ociimg list-tags REPO`")


# Save (get) and load -------------------------------------------------------------------
@routes.get("/images/get")
async def get_many(request: web.Request) -> web.StreamResponse:
    return await _save(request, request.query.getall("names", []))


@routes.get("/images/{name:.+}/get")
async def get_one(request: web.Request) -> web.StreamResponse:
    return await _save(request, [request.match_info["name"]])


def _save_items(root: Path, texts: list[str]) -> list[tuple[Any, Any, tuple[str, ...]]]:
    if not texts:
        raise ApiError(400, "no image names given (names=...)")
    items = []
    for text in texts:
        found = find_image(root, text)
        name = found.name or found.group.first.name
        names = (familiar(found.name),) if found.name in found.group.tag_names else ()
        items.append((found.store, found.store.resolve(name), names))
    return items


async def _save(request: web.Request, texts: list[str]) -> web.StreamResponse:
    from ociimg.transports import write_docker

    root = root_of(request)
    items = await blocking(_save_items, root, texts)  # 404 before the 200
    response = web.StreamResponse(headers={"Content-Type": "application/x-tar"})
    await response.prepare(request)
    writer = io.BufferedWriter(_LoopWriter(response, asyncio.get_running_loop()), 1 << 20)

    def write() -> None:
        # Layers are spooled beside the store (the response is not seekable), not in /tmp.
        write_docker(writer, items, None, Store.open(root).ingest_dir)  # type: ignore[arg-type]
        writer.flush()

    try:
        await blocking(write)
    except (OciimgError, OSError) as exc:
        # The 200 is out: cut the connection, so the client sees a broken transfer and
        # never a tar that ends as if it were whole.
        log.warning("images/get %s: %s", ", ".join(t[:100] for t in texts), exc)
        if request.transport is not None:
            request.transport.abort()
        return response
    await response.write_eof()
    return response


class _LoopWriter(io.RawIOBase):
    """A file a worker thread writes into the HTTP response (one chunk at a time, with
    the connection's back-pressure)."""

    def __init__(self, response: web.StreamResponse, loop: asyncio.AbstractEventLoop) -> None:
        self._response, self._loop = response, loop

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        asyncio.run_coroutine_threadsafe(self._response.write(chunk), self._loop).result()
        return len(chunk)


@routes.post("/images/load")
async def load(request: web.Request) -> web.StreamResponse:
    root = root_of(request)
    store = await blocking(Store.open, root)
    spool = await blocking(tempfile.NamedTemporaryFile, dir=store.ingest_dir, prefix=".load-")
    try:
        await _spool_body(request, spool, await blocking(_load_limit, store.ingest_dir))
        loaded = await blocking(_load, root, Path(spool.name))
    except ApiError as exc:
        # Refused before the body's end: close rather than read the rest (2 GB of zeros).
        response = json_response(error_body(exc.message), exc.status)
        response.force_close()
        return response
    finally:
        await blocking(spool.close)
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    for line in loaded:
        await response.write(line)
    await response.write_eof()
    return response


def _load_limit(path: Path) -> int:
    limit = int(os.environ.get(LOAD_LIMIT_ENV) or LOAD_LIMIT)
    return max(0, min(limit, shutil.disk_usage(path).free - LOAD_RESERVE))


async def _spool_body(request: web.Request, spool: Any, limit: int) -> None:
    """The request body into ``spool``, refused past ``limit`` bytes and, from its first
    block, when it is not a tar (2 GB of zeros is stopped after 512 bytes)."""
    written, head = 0, b""
    async for chunk in request.content.iter_chunked(1 << 20):
        if len(head) < tarfile.BLOCKSIZE:
            head += chunk[:tarfile.BLOCKSIZE - len(head)]
            if len(head) == tarfile.BLOCKSIZE:
                _check_tar_header(head)
        written += len(chunk)
        if written > limit:
            raise ApiError(413, f"load: the archive is larger than {limit} bytes (the limit "
                           f"is ${LOAD_LIMIT_ENV}, and free space on the store's disk)")
        await blocking(spool.write, chunk)
    if len(head) < tarfile.BLOCKSIZE:
        raise ApiError(400, "load: the request body is not a tar archive (too short)")
    await blocking(spool.flush)


def _check_tar_header(block: bytes) -> None:
    if block.startswith(_COMPRESSED_MAGIC):  # `docker save | gzip`: the archive reads it
        return
    try:
        tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.EOFHeaderError:
        raise ApiError(400, "load: the archive is empty") from None
    except tarfile.HeaderError as exc:
        raise ApiError(400, f"load: the request body is not a tar archive ({exc})") from None


def _load(root: Path, path: Path) -> list[bytes]:
    import json

    from ociimg.transports import load_archive

    store = Store.open(root)
    lines = []
    for name, _desc in load_archive(path, store):
        if name.startswith("sha256:"):
            image_id = str(store.image_for(name)[1].config.digest)
            text = f"Loaded image ID: {image_id}\n"
        else:
            text = f"Loaded image: {familiar(name)}\n"
        lines.append(json.dumps({"stream": text}).encode() + b"\n")
    return lines


routes.table.extend(imageregistry.routes.table)
