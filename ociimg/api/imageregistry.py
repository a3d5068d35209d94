"""Images and registries: pull (``images/create``), push, and ``/auth`` (``docker login``).

Pull and push run ociimg's registry client on a worker thread; its progress reports
become dockerd's JSON progress lines. The response starts with the first of them, so a
failure before any (no such image, wrong credentials, a bad manifest) is still an HTTP
error with dockerd's status, and a later one an in-stream ``errorDetail``.

Credentials come only from the request (``X-Registry-Auth``, as dockerd): the server's
own auth files are never used for a client. Loopback registries are spoken to in plain
HTTP (dockerd's default for 127.0.0.0/8), others as registries.conf says.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from aiohttp import web

from ociimg.api.http import (
    ApiError,
    Routes,
    blocking,
    error_body,
    own_thread,
    read_json,
    root_of,
)
from ociimg.api.imagedocs import progress_bar
from ociimg.containers.eventlog import record_event
from ociimg.errors import OciimgError, Unauthorized
from ociimg.reference import Reference, familiar_name, parse_reference
from ociimg.spec import INDEX_TYPES, Platform
from ociimg.store import Store

routes = Routes()
log = logging.getLogger("ociimg.api")

Emit = Callable[[dict[str, Any]], None]
_AUTH_HEADER_MAX = 64 << 10
_PROGRESS_INTERVAL = 0.1  # seconds between two "Downloading"/"Pushing" lines of one layer


# X-Registry-Auth ------------------------------------------------------------------------
def registry_auth(request: web.Request) -> dict[str, str] | None:
    """The base64url JSON of ``X-Registry-Auth`` ({username, password, serveraddress} or
    {identitytoken}); None when absent or empty. Garbage is a 400, never anonymous."""
    raw = request.headers.get("X-Registry-Auth", "").strip()
    if not raw:
        return None
    if len(raw) > _AUTH_HEADER_MAX:
        raise ApiError(400, "invalid X-Registry-Auth header: too long")
    try:
        doc = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        raise ApiError(400, "invalid X-Registry-Auth header: not base64url-encoded "
                       "JSON") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "invalid X-Registry-Auth header: not a JSON object")
    return {str(k): v for k, v in doc.items() if isinstance(v, str)}


@contextlib.contextmanager
def credentials_file(auth: dict[str, str] | None, domain: str) -> Iterator[Path]:
    """An auth file (0600, private dir) holding only the request's credentials for
    ``domain``; the registry client reads that file and no other."""
    entry: dict[str, str] = {}
    if auth and auth.get("identitytoken"):
        entry = {"identitytoken": auth["identitytoken"]}
    elif auth and auth.get("username"):
        pair = f"{auth['username']}:{auth.get('password', '')}"
        entry = {"auth": base64.b64encode(pair.encode()).decode()}
    elif auth and auth.get("auth"):  # user:password already encoded, as in config.json
        entry = {"auth": auth["auth"]}
    with tempfile.TemporaryDirectory(prefix="ociimg-api-auth-") as tmp:
        path = Path(tmp) / "auth.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"auths": {domain: entry}} if entry else {}, f)
        yield path


# The JSON stream -----------------------------------------------------------------------
async def stream_job(request: web.Request, job: Callable[[Emit], list[dict[str, Any]]]
                     ) -> web.StreamResponse:
    """Run ``job(emit)`` on a worker thread; what it emits, then what it returns, goes
    out as JSON lines, one whole object per write. The 200 goes out with the first."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    task = asyncio.ensure_future(own_thread(job, lambda obj: loop.call_soon_threadsafe(
        queue.put_nowait, obj)))
    # A client that went away leaves the job running; its outcome is still collected.
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    out = _JsonOut(request)
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                break
            await out.write(getter.result())
        while not queue.empty():
            await out.write(queue.get_nowait())
        exc = task.exception()
        if exc is None:
            for obj in task.result():
                await out.write(obj)
        elif out.response is None:
            raise exc
        else:
            await out.write(_error_line(exc))
        return await out.finish()
    except ConnectionResetError:
        log.info("%s %s: the client went away", request.method, request.path)
        return out.response or web.Response()


def _error_line(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, OciimgError):
        message = error_body(exc.message, exc.hint)["message"]
    elif isinstance(exc, ApiError):
        message = exc.message
    else:
        log.error("stream failed", exc_info=exc)
        message = "internal error in ociimg serve: see its log"
    return {"errorDetail": {"message": message}, "error": message}


class _JsonOut:
    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.response: web.StreamResponse | None = None

    async def write(self, obj: dict[str, Any]) -> None:
        if self.response is None:
            self.response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await self.response.prepare(self.request)
        await self.response.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")

    async def finish(self) -> web.StreamResponse:
        if self.response is None:
            self.response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await self.response.prepare(self.request)
        await self.response.write_eof()
        return self.response


class LayerProgress:
    """ociimg's Progress protocol as dockerd's per-layer lines (thread-safe: the pull
    and push workers report concurrently). ``header`` goes out before the first line."""

    def __init__(self, emit: Emit, header: dict[str, Any] | None, verbs: dict[str, str],
                 hidden: frozenset[str] = frozenset()) -> None:
        self._emit, self._header, self._verbs = emit, header, verbs
        self._hidden = hidden  # blobs docker does not list (an image's config)
        self._lock = threading.Lock()
        self._sent_header = False
        self._totals: dict[str, tuple[int, int | None, float]] = {}

    def head(self) -> None:
        with self._lock:
            self._head()

    def _head(self) -> None:
        if not self._sent_header and self._header is not None:
            self._emit(self._header)
        self._sent_header = True

    def _line(self, key: str, status: str, **extra: Any) -> None:
        self._head()
        if key in self._hidden:
            return
        self._emit({"status": status, "progressDetail": extra.pop("detail", {}),
                    "id": key.rsplit(":", 1)[-1][:12], **extra})

    def start(self, key: str, description: str, total: int | None) -> None:
        with self._lock:
            self._totals[key] = (0, total, 0.0)
            self._line(key, self._verbs["start"])

    def advance(self, key: str, amount: int) -> None:
        with self._lock:
            current, total, last = self._totals.get(key, (0, None, 0.0))
            current += amount
            now = time.monotonic()
            if now - last >= _PROGRESS_INTERVAL or (total and current >= total):
                last = now
                self._line(key, self._verbs["advance"], progress=progress_bar(current, total),
                           detail={"current": current, "total": total} if total else
                           {"current": current})
            self._totals[key] = (current, total, last)

    def done(self, key: str, message: str | None = None) -> None:
        with self._lock:
            if message in ("already present", "already exists"):
                self._line(key, self._verbs["exists"])
            elif message and message.startswith("mounted from "):
                self._line(key, "Mounted from " + message.removeprefix("mounted from "))
            else:
                for status in self._verbs["done"].split("|"):
                    self._line(key, status)

    def log(self, message: str) -> None:
        with self._lock:
            self._head()


_PULL_VERBS = {"start": "Pulling fs layer", "advance": "Downloading",
               "exists": "Already exists", "done": "Download complete|Pull complete"}
_PUSH_VERBS = {"start": "Preparing", "advance": "Pushing", "exists": "Layer already exists",
               "done": "Pushed"}


# Pull -----------------------------------------------------------------------------------
@routes.post("/images/create")
async def create(request: web.Request) -> web.StreamResponse:
    query = request.query
    if not query.get("fromImage"):
        if query.get("fromSrc") is not None:
            raise ApiError(501, "importing a root filesystem tarball (docker import) is not "
                           "supported by ociimg serve: build an image from it with a "
                           "Containerfile (FROM scratch, ADD rootfs.tar /)")
        raise ApiError(400, "fromImage or fromSrc is required")
    ref = pull_reference(query["fromImage"], query.get("tag", ""))
    platform = None
    if query.get("platform"):
        try:
            platform = Platform.parse(query["platform"])
        except OciimgError as exc:
            raise ApiError(400, exc.message) from None
    auth = registry_auth(request)
    root = root_of(request)
    return await stream_job(request, lambda emit: pull_image(root, ref, platform, auth, emit))


def pull_reference(image: str, tag: str) -> Reference:
    """dockerd's fromImage + tag: the tag is a tag, or a digest the CLI split off."""
    if len(image) + len(tag) > 1024:
        raise ApiError(400, "invalid reference format: repository name too long")
    text = image
    if tag:
        text = f"{image}@{tag}" if ":" in tag else f"{image}:{tag}"
    try:
        return parse_reference(text)
    except OciimgError as exc:
        raise ApiError(400, f"invalid reference format: {exc.message}") from None


def pull_image(root: Path, ref: Reference, platform: Platform | None,
               auth: dict[str, str] | None, emit: Emit) -> list[dict[str, Any]]:
    from ociimg.registry import PullOptions, pull

    store = Store.open(root)
    before = _digest_of(store, str(ref))
    header = {"status": f"Pulling from {ref.path}", "id": ref.tag or str(ref.digest)}
    progress = LayerProgress(emit, header, _PULL_VERBS)
    with credentials_file(auth, ref.domain) as auth_file:
        try:
            result = pull(ref, store, PullOptions(platform=platform, auth_file=auth_file),
                          progress)
        except Unauthorized as exc:
            # dockerd's text and status: a 401 would make the CLI prompt for a login.
            raise ApiError(404, f"pull access denied for {familiar_name(ref.name)}, repository "
                           f"does not exist or may require 'docker login': {exc.message}"
                           ) from None
    progress.head()
    if platform is not None and result.descriptor.media_type in INDEX_TYPES and result.images:
        # A name stands for one platform's image in docker: the one asked for, not the
        # host's (which may not even be pulled) that an index would resolve to here.
        store.tag(str(ref), result.images[0][0])
    digest = result.descriptor.digest
    record_event(root, "image", "pull", familiar_name(str(ref)), name=familiar_name(ref.name))
    after = _digest_of(store, str(ref))
    status = "Image is up to date for" if before == after else "Downloaded newer image for"
    return [{"status": f"Digest: {digest}"},
            {"status": f"Status: {status} {familiar_name(str(ref))}"}]


def _digest_of(store: Store, name: str) -> Any:
    try:
        return dict(store.refs())[name].digest
    except KeyError:
        return None


# Push -----------------------------------------------------------------------------------
@routes.post("/images/{name:.+}/push")
async def push(request: web.Request) -> web.StreamResponse:
    auth = registry_auth(request)
    root = root_of(request)
    targets = await blocking(push_targets, root, request.match_info["name"],
                             request.query.get("tag", ""))
    return await stream_job(request, lambda emit: push_images(root, targets, auth, emit))


def push_targets(root: Path, name: str, tag: str) -> list[Reference]:
    """The stored names to push: name:tag, or every tag of the repository ``name``."""
    if len(name) + len(tag) > 1024:
        raise ApiError(400, "invalid reference format: repository name too long")
    try:
        ref = parse_reference(f"{name}:{tag}" if tag else name)
    except OciimgError as exc:
        raise ApiError(400, f"invalid reference format: {exc.message}") from None
    names = {n for n, _d in Store.open(root).refs()}
    if tag or ref.digest is not None:
        found = [ref] if str(ref) in names else []
    else:
        found = sorted((parse_reference(n) for n in names
                        if n.startswith(f"{ref.name}:") and "@" not in n), key=str)
    if not found:
        raise ApiError(404, f"An image does not exist locally with the tag: "
                       f"{familiar_name(ref.name)}")
    return found


def push_images(root: Path, targets: list[Reference], auth: dict[str, str] | None,
                emit: Emit) -> list[dict[str, Any]]:
    from ociimg.registry import PushOptions
    from ociimg.registry import push as registry_push

    store = Store.open(root)
    emit({"status": f"The push refers to repository [{familiar_name(targets[0].name)}]"})
    for ref in targets:
        progress = LayerProgress(emit, None, _PUSH_VERBS, _configs(store, str(ref)))
        with credentials_file(auth, ref.domain) as auth_file:
            digest = registry_push(store, str(ref), ref, PushOptions(auth_file=auth_file),
                                   progress)
        size = store.blob_path(digest).stat().st_size
        record_event(root, "image", "push", familiar_name(str(ref)),
                     name=familiar_name(ref.name))
        emit({"status": f"{ref.tag}: digest: {digest} size: {size}", "progressDetail": {}})
        emit({"progressDetail": {}, "aux": {"Tag": ref.tag, "Digest": str(digest),
                                            "Size": size}})
    return []


def _configs(store: Store, name: str) -> frozenset[str]:
    try:
        return frozenset({str(store.image_for(name)[1].config.digest)})
    except OciimgError:  # an artifact or another platform: every blob is listed
        return frozenset()


# Login ----------------------------------------------------------------------------------
@routes.post("/auth")
async def auth(request: web.Request) -> web.Response:
    from ociimg.api.http import json_response

    body = await read_json(request, 64 << 10)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid JSON in request body: expected an object")
    fields = {k: body.get(k) if isinstance(body.get(k), str) else "" for k in
              ("username", "password", "serveraddress", "identitytoken")}
    await own_thread(check_login, fields)
    return json_response({"Status": "Login Succeeded", "IdentityToken": ""})


def check_login(fields: dict[str, str]) -> None:
    """The registry's token or Basic flow with these credentials (ociimg login's check)."""
    from ociimg.registry.auth import Credentials, normalize_auth_key, verify_credentials
    from ociimg.registry.registries import is_insecure
    from ociimg.registry.transport import TransportOptions

    registry = normalize_auth_key(fields["serveraddress"] or "docker.io").split("/", 1)[0]
    creds = Credentials(fields["username"], fields["password"],
                        fields["identitytoken"] or None)
    try:
        verify_credentials(registry, creds, TransportOptions(insecure=is_insecure(registry)))
    except Unauthorized as exc:
        raise ApiError(401, exc.message) from None
