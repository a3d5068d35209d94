"""Images: list, inspect, tag, remove, history, search, prune; and how a request finds
an image (pull, push and /auth are in imageregistry, get and load in imagearchive).

Each handler maps onto the store and the commands the CLI uses (``images``,
``inspect``, ``history``, ``tag``, ``rmi``/``gc``); the shapes are imagedocs'. Names
are what a docker client sends: ``busybox``, ``busybox:latest``,
``docker.io/library/busybox``, an Id or Id prefix, ``name@digest`` — never a transport
(``oci:/path`` is not an image name here: the API reads the store only).
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import logging
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from ociimg.api import imagearchive, imageregistry
from ociimg.api.http import (
    ApiError,
    Routes,
    api_version,
    blocking,
    json_response,
    own_thread,
    query_bool,
    query_filters,
    root_of,
)
from ociimg.api.imagedocs import (
    ImageGroup,
    group_rows,
    image_history,
    image_inspect,
    image_summary,
    short_id,
)
from ociimg.containers.eventlog import record_event
from ociimg.errors import ImageNotFound, InvalidArgument, LockTimeout, OciimgError
from ociimg.reference import familiar_name
from ociimg.spec import INDEX_TYPES
from ociimg.store import Store

routes = Routes()
log = logging.getLogger("ociimg.api")

_ID_RE = re.compile(r"(?:sha256:)?[0-9a-f]{1,64}")
_NAME_MAX = 1024  # longer than any valid reference: refused before any lookup


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

    def image_for(self, name: str, platform: Any = None) -> Any:
        # A name tagged to one image manifest is that image, whatever its platform (as in
        # docker: `pull --platform linux/arm64` lists and inspects as arm64); an index
        # still stands for the host's image.
        if self.resolve(name).media_type not in INDEX_TYPES:
            platform = None
        return super().image_for(name, platform)


def image_table(root: Path) -> tuple[Store, dict[str, ImageGroup]]:
    store = IndexSnapshot.open(root)
    return store, group_rows(listed_rows(store))


_ROWS: dict[Path, tuple[bytes, list[Any]]] = {}
_ROWS_LOCK = threading.Lock()


def listed_rows(store: Store) -> list[Any]:
    """``ociimg images``' rows, reused while index.json holds the same bytes: a row
    derives from the index and from blobs, which never change under their digest.
    (Hashing the index costs far less than reading every image's manifest and config
    again; ``docker images`` is the call clients make most.)"""
    from ociimg.commands.listing import image_rows
    from ociimg.spec import MAX_MANIFEST_BYTES
    from ociimg.store.files import read_regular

    try:
        key = hashlib.sha256(read_regular(store.index_path, MAX_MANIFEST_BYTES)).digest()
    except FileNotFoundError:
        return []
    with _ROWS_LOCK:
        hit = _ROWS.get(store.path)
    if hit is not None and hit[0] == key:
        return hit[1]
    rows = image_rows(store)  # read after the key: never older than it
    with _ROWS_LOCK:
        _ROWS[store.path] = (key, rows)
    return rows


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
    from ociimg.commands.listing import filter_rows

    store = IndexSnapshot.open(root)
    rows = listed_rows(store)
    patterns = filters.pop("reference", [])
    if patterns:
        rows = [r for r in rows if not r.dangling and any(_reference_match(r.repository, r.tag, p)
                                                          for p in patterns)]
    for key in ("before", "since"):  # an Id or a name, as docker takes them
        filters[key] = [find_image(root, v).group.first.name for v in filters.get(key, [])]
    flat = [f"{key}={value}" for key, values in filters.items() for value in values]
    rows = filter_rows(rows, flat, store)
    groups = list(group_rows(rows).values())
    groups.sort(key=lambda g: (g.first.created or datetime.min.replace(tzinfo=UTC)),
                reverse=True)
    return groups


def _reference_match(repository: str, tag: str, pattern: str) -> bool:
    """docker's reference filter: the pattern against the familiar name and name:tag."""
    repo = familiar_name(repository)
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
    found.store.tag(str(ref), found.store.resolve(found.name or found.group.first.name))
    record_event(root, "image", "tag", found.group.image_id, name=familiar_name(str(ref)))


@routes.delete("/images/{name:.+}")
async def remove(request: web.Request) -> web.Response:
    force, noprune = query_bool(request, "force"), query_bool(request, "noprune")
    result = await own_thread(_remove, root_of(request), request.match_info["name"], force,
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
            out.append({"Untagged": familiar_name(name)})
            record_event(root, "image", "untag", group.image_id, name=familiar_name(name))
    if last:
        for row in group.rows:  # repo@digest and digest names of the image go with it
            if row.name not in untag:
                with contextlib.suppress(ImageNotFound):
                    found.store.untag(row.name)
        if not users:
            out.append({"Deleted": group.image_id})
            record_event(root, "image", "delete", group.image_id, name=group.image_id)
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

    try:
        with containers_locked(root):
            report = collect_garbage(root, [c.meta for c in list_containers(root)])
    except LockTimeout:
        # A container is being created (its snapshots are not recorded yet): the names
        # are gone already, the space is reclaimed by the next rmi, prune or `ociimg gc`.
        log.info("gc skipped: a container is being created")
        return 0
    for warning in report.warnings:
        log.warning("gc: %s", warning)
    return report.bytes_freed + report.snapshot_bytes_freed


@routes.post("/images/prune")
async def prune(request: web.Request) -> web.Response:
    filters = query_filters(request)
    deleted, freed = await own_thread(_prune, root_of(request), filters)
    return json_response({"ImagesDeleted": deleted or None, "SpaceReclaimed": freed})


def _prune(root: Path, filters: dict[str, list[str]]) -> tuple[list[dict[str, str]], int]:
    for key in filters:
        if key not in ("dangling", "until", "label", "label!"):
            raise ApiError(400, f"invalid filter '{key}'")
    dangling_only = filters.get("dangling", ["true"])[-1] in ("true", "1", "True")
    until = [_until(v) for v in filters.get("until", [])]
    from ociimg.containers.store import list_containers

    store, groups = image_table(root)
    containers = list_containers(root)
    used = {c.image for c in containers} | {c.meta.get("digest") for c in containers}
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
                deleted.append({"Untagged": familiar_name(row.name)})
        deleted.append({"Deleted": group.image_id})
    return deleted, collect(root) if deleted else 0


def _prune_matches(group: ImageGroup, until: list[datetime],
                   filters: dict[str, list[str]]) -> bool:
    created, labels = group.first.created, group.first.labels
    if until and (created is None or any(created >= u for u in until)):
        return False
    from ociimg.filters import label_matches

    return all(label_matches(labels, v) for v in filters.get("label", [])) and \
        not any(label_matches(labels, v) for v in filters.get("label!", []))


def _until(text: str) -> datetime:
    """docker's ``until``: Unix seconds, an RFC 3339 time, or a Go duration ago."""
    import time

    from ociimg.api.system import parse_api_time

    return datetime.fromtimestamp(parse_api_time(text, "until", time.time()) or 0, UTC)


# Search -------------------------------------------------------------------------------
@routes.get("/images/search")
async def search(request: web.Request) -> web.Response:
    raise ApiError(501, "search is not supported by ociimg serve: ociimg has no index to "
                   "search; browse the registry's web page, or list a repository's tags with "
                   "`ociimg list-tags REPO`")


for _module in (imageregistry, imagearchive):
    routes.table.extend(_module.routes.table)
