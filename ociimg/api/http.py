"""What every endpoint module shares: versioned routes, the error mapping, query parsing,
and running the blocking library calls off the event loop.

dockerd serves each endpoint both unversioned (``/containers/json``) and under
``/v1.NN/`` ; :class:`Routes` registers both. Errors leave as dockerd's
``{"message": "..."}`` with the status a client branches on (docker-py turns 404 into
``NotFound``, the CLI prints the message as ``Error response from daemon: …``).
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Collection
from typing import Any, TypeVar

from aiohttp import web

from ociimg import errors

log = logging.getLogger("ociimg.api")

# The newest Engine API version we answer for, and the oldest a client may ask for
# (dockerd 24's range: Debian's docker 20.10 speaks 1.41, current CLIs negotiate down).
API_VERSION = "1.43"
MIN_API_VERSION = "1.24"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")


class ApiError(Exception):
    """An answer other than 2xx that is not an :class:`OciimgError` (a bad parameter, an
    endpoint we do not offer): ``status`` and dockerd's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Routes:
    """A route table whose paths are served unversioned and under ``/v{version}``."""

    def __init__(self) -> None:
        self.table: list[tuple[str, str, Handler]] = []

    def _add(self, method: str, path: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.table.append((method, path, handler))
            return handler
        return register

    def get(self, path: str) -> Callable[[Handler], Handler]:
        return self._add("GET", path)

    def head(self, path: str) -> Callable[[Handler], Handler]:
        return self._add("HEAD", path)

    def post(self, path: str) -> Callable[[Handler], Handler]:
        return self._add("POST", path)

    def put(self, path: str) -> Callable[[Handler], Handler]:
        return self._add("PUT", path)

    def delete(self, path: str) -> Callable[[Handler], Handler]:
        return self._add("DELETE", path)

    def install(self, app: web.Application) -> None:
        for method, path, handler in self.table:
            # GET routes answer HEAD too unless a module registers its own HEAD.
            app.router.add_route(method, path, handler)
            app.router.add_route(method, r"/v{api_version:[0-9]+\.[0-9]+}" + path, handler)


def status_of(exc: errors.OciimgError) -> int:
    """dockerd's status for one of our errors (errdefs: not found 404, conflict 409,
    invalid parameter 400, everything else 500)."""
    from ociimg.containers.volumes import VolumeInUse

    if isinstance(exc, errors.NotFound):
        return 404
    if isinstance(exc, errors.AlreadyExists | VolumeInUse):
        return 409
    if isinstance(exc, errors.InvalidReference | errors.InvalidArgument
                  | errors.BuildSyntaxError | errors.ContextEscape):
        return 400
    if isinstance(exc, errors.Unauthorized):
        return 401
    return 500


def error_body(message: str, hint: str | None = None) -> dict[str, str]:
    return {"message": f"{message} ({hint})" if hint else message}


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, content_type="application/json",
                        body=json.dumps(body, separators=(",", ":")).encode() + b"\n")


def api_version(request: web.Request) -> tuple[int, int]:
    """The version the client asked for (unversioned: ours), as (major, minor)."""
    text = request.match_info.get("api_version") or API_VERSION
    major, minor = text.split(".")
    return int(major), int(minor)


def _parse_version(text: str) -> tuple[int, int]:
    major, minor = text.split(".")
    return int(major), int(minor)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    asked = request.match_info.get("api_version")
    if asked and _parse_version(asked) > _parse_version(API_VERSION):
        return json_response(error_body(
            f"client version {asked} is too new. Maximum supported API version is "
            f"{API_VERSION}"), 400)
    if asked and _parse_version(asked) < _parse_version(MIN_API_VERSION):
        return json_response(error_body(
            f"client version {asked} is too old. Minimum supported API version is "
            f"{MIN_API_VERSION}, please upgrade your client to a newer version"), 400)
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status in (404, 405) and request.match_info.route.resource is None:
            return json_response(error_body("page not found"), 404)
        if exc.status >= 400 and exc.content_type != "application/json":
            return json_response(error_body(exc.reason), exc.status)
        raise
    except ApiError as exc:
        return json_response(error_body(exc.message), exc.status)
    except errors.OciimgError as exc:
        return json_response(error_body(exc.message, exc.hint), status_of(exc))
    except asyncio.CancelledError:
        raise
    except ConnectionResetError:
        # The client went away while its answer was being written: nothing to tell it,
        # and not the server's error (aiohttp would log a traceback for it).
        log.info("%s %s: the client went away", request.method, request.path)
        return web.Response(status=500)
    except Exception:
        log.exception("%s %s", request.method, request.path)
        return json_response(error_body("internal error in ociimg serve: see its log"), 500)


@web.middleware
async def header_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    if not response.prepared:
        response.headers.update(standard_headers())
    return response


def standard_headers() -> dict[str, str]:
    from ociimg import __version__
    return {"Api-Version": API_VERSION, "Docker-Experimental": "false", "Ostype": "linux",
            "Server": f"ociimg/{__version__} (linux)"}


async def blocking(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run a library call (disk, processes, registries) on a worker thread."""
    return await asyncio.get_running_loop().run_in_executor(
        None, functools.partial(fn, *args, **kwargs))


async def own_thread(fn: Callable[..., T], /, *args: Any) -> T:
    """``fn(*args)`` on a thread of its own: for what may take minutes (a pull, a save,
    a gc), which would otherwise hold one of the few pool workers every ``blocking``
    call of every other request waits for."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def run() -> None:
        try:
            outcome: tuple[Any, BaseException | None] = (fn(*args), None)
        except BaseException as exc:  # handed to the awaiting handler
            outcome = (None, exc)
        try:
            loop.call_soon_threadsafe(settle, future, *outcome)
        except RuntimeError:  # the server stopped meanwhile: nobody waits for it
            log.info("a job ended after the server stopped: %s", outcome[1] or "done")

    threading.Thread(target=run, name="ociimg-api-job", daemon=True).start()
    return await future


def settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None = None) -> None:
    """Complete ``future`` (on the loop's thread) unless its awaiter went away."""
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


def query_bool(request: web.Request, name: str, default: bool = False) -> bool:
    """A boolean query parameter as dockerd reads them: absent → default; "", "0", "false",
    "False" → false; anything else true."""
    value = request.query.get(name)
    if value is None:
        return default
    return value not in ("", "0", "false", "False", "FALSE", "no")


def query_int(request: web.Request, name: str, default: int | None = None) -> int | None:
    value = request.query.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ApiError(400, f"invalid value for {name}: {value!r}") from None


def query_filters(request: web.Request,
                  allowed: Collection[str] | None = None) -> dict[str, list[str]]:
    """The ``filters`` parameter: ``{"name": ["a"]}`` or the old ``{"name": {"a": true}}``;
    a key outside ``allowed`` is dockerd's 400 "Invalid filter"."""
    raw = request.query.get("filters")
    if not raw:
        return {}
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, f"invalid filter {raw[:100]!r}") from None
    if not isinstance(doc, dict):
        raise ApiError(400, f"invalid filter {raw!r}")
    out: dict[str, list[str]] = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            out[str(key)] = [str(k) for k, v in value.items() if v]
        elif isinstance(value, list):
            out[str(key)] = [str(v) for v in value]
        else:
            raise ApiError(400, f"invalid filter {raw!r}")
    for key in out:
        if allowed is not None and key not in allowed:
            raise ApiError(400, f"Invalid filter '{key}'")
    return out


async def read_json(request: web.Request, limit: int = 4 << 20) -> Any:
    """The request body as JSON (empty → {}), at most ``limit`` bytes."""
    body = b""
    while len(body) <= limit:  # read(n) returns what has arrived, not n bytes
        chunk = await request.content.read(limit + 1 - len(body))
        if not chunk:
            break
        body += chunk
    if len(body) > limit:
        raise ApiError(413, f"request body larger than {limit} bytes")
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
        raise ApiError(400, f"invalid JSON in request body: {exc}") from None


ROOT = web.AppKey("root", object)


def root_of(request: web.Request) -> Any:
    """The ociimg root (a Path) this server serves."""
    return request.app[ROOT]


def manager(request: web.Request) -> Any:
    """The container manager of this server's root (cheap: it holds paths only)."""
    from ociimg.containers import ContainerManager

    return ContainerManager(root_of(request))


def find_container(request: web.Request, name: str) -> Any:
    """A container by name, id or id prefix; 404 with dockerd's text (clients match it)."""
    try:
        return manager(request).get(name)
    except errors.ContainerNotFound:
        raise ApiError(404, f"No such container: {name}") from None


class ResponseWriter(io.RawIOBase):
    """A file a worker thread writes into an HTTP response (one chunk at a time, with the
    connection's back-pressure). After :meth:`discard` writes go nowhere: a BufferedWriter's
    finalizer flushes what it holds on whichever thread frees it, the event loop's
    included, where waiting for the loop would wedge the whole server."""

    def __init__(self, response: web.StreamResponse, loop: asyncio.AbstractEventLoop) -> None:
        self._response, self._loop = response, loop
        self._discarding = False

    def writable(self) -> bool:
        return True

    def discard(self) -> None:
        self._discarding = True

    def write(self, data: Any) -> int:
        if self._discarding:
            return len(data)
        chunk = bytes(data)
        asyncio.run_coroutine_threadsafe(self._response.write(chunk), self._loop).result()
        return len(chunk)
