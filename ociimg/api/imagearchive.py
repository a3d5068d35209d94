"""Images as tar archives: ``GET /images/get`` and ``/images/{name}/get`` (``docker
save``: a docker-archive streamed as it is written) and ``POST /images/load`` (``docker
load``: the body spooled to disk, bounded, then loaded all-or-nothing)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web

from ociimg.api.http import (
    ApiError,
    ResponseWriter,
    Routes,
    blocking,
    error_body,
    json_response,
    own_thread,
    root_of,
)
from ociimg.errors import OciimgError
from ociimg.reference import familiar_name
from ociimg.store import Store

routes = Routes()
log = logging.getLogger("ociimg.api")

# A load body is spooled to disk (the archive is read by offset): at most this much,
# and never past the last LOAD_RESERVE bytes of free space on the store's filesystem.
LOAD_LIMIT_ENV = "OCIIMG_API_LOAD_LIMIT"
LOAD_LIMIT = 64 << 30
LOAD_RESERVE = 256 << 20
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"\xfd7zXZ\x00", b"BZh")


# Save (get) and load -------------------------------------------------------------------
@routes.get("/images/get")
async def get_many(request: web.Request) -> web.StreamResponse:
    return await _save(request, request.query.getall("names", []))


@routes.get("/images/{name:.+}/get")
async def get_one(request: web.Request) -> web.StreamResponse:
    return await _save(request, [request.match_info["name"]])


def _save_items(root: Path, texts: list[str]) -> list[tuple[Any, Any, tuple[str, ...]]]:
    from ociimg.api.images import find_image

    if not texts:
        raise ApiError(400, "no image names given (names=...)")
    items = []
    for text in texts:
        found = find_image(root, text)
        name = found.name or found.group.first.name
        names = (familiar_name(found.name),) if found.name in found.group.tag_names else ()
        items.append((found.store, found.store.resolve(name), names))
    return items


async def _save(request: web.Request, texts: list[str]) -> web.StreamResponse:
    from ociimg.transports import write_docker

    root = root_of(request)
    items = await blocking(_save_items, root, texts)  # 404 before the 200
    response = web.StreamResponse(headers={"Content-Type": "application/x-tar"})
    await response.prepare(request)
    raw = ResponseWriter(response, asyncio.get_running_loop())
    writer = io.BufferedWriter(raw, 1 << 20)

    def write() -> None:
        # Layers are spooled beside the store (the response is not seekable), not in /tmp.
        write_docker(writer, items, None, Store.open(root).ingest_dir)  # type: ignore[arg-type]
        writer.flush()

    try:
        await own_thread(write)
    except (OciimgError, OSError) as exc:
        # The 200 is out: cut the connection, so the client sees a broken transfer and
        # never a tar that ends as if it were whole.
        log.warning("images/get %s: %s", ", ".join(t[:100] for t in texts), exc)
        if request.transport is not None:
            request.transport.abort()
        return response
    finally:
        raw.discard()  # what the buffer still holds after a failure goes nowhere
    await response.write_eof()
    return response


@routes.post("/images/load")
async def load(request: web.Request) -> web.StreamResponse:
    root = root_of(request)
    store = await blocking(Store.open, root)
    spool = await blocking(tempfile.NamedTemporaryFile, dir=store.ingest_dir, prefix=".load-")
    try:
        await _spool_body(request, spool, await blocking(_load_limit, store.ingest_dir))
        loaded = await own_thread(_load, root, Path(spool.name))
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
    """What docker-py's load looks for in the stream (trap 13): ``Loaded image: NAME``,
    or ``Loaded image ID: ID`` for an image the archive names not."""
    from ociimg.api.images import IndexSnapshot
    from ociimg.transports import load_archive

    loaded = load_archive(path, Store.open(root))
    store = IndexSnapshot.open(root)  # the names as they are now
    lines = []
    for name, _desc in loaded:
        if name.startswith("sha256:"):
            text = f"Loaded image ID: {_image_id(store, name)}\n"
        else:
            text = f"Loaded image: {familiar_name(name)}\n"
        lines.append(json.dumps({"stream": text}).encode() + b"\n")
    return lines


def _image_id(store: Store, name: str) -> str:
    try:
        return str(store.image_for(name)[1].config.digest)
    except OciimgError:  # an index without this host's image: its digest names it
        return name
