"""Build: /build with a tar context, streaming the legacy builder's JSON progress, and /commit.

``POST /build``: the parameters are checked and the context tar (any compression) is
spooled to a private work dir under the root, bounded (``OCIIMG_API_MAX_CONTEXT`` bytes,
default 8 GiB: 413 past it, the spool removed); then the build runs in a child process
(:mod:`ociimg.api.buildjob`) whose JSON lines are relayed as they come. A client that goes
away mid-build gets its build cancelled as ``ociimg build`` is on Ctrl-C (SIGINT to the
child): no step container, snapshot or mount stays, nothing is tagged. The work dir goes
on every exit path.

``POST /commit``: ``docker commit`` onto :func:`ociimg.commands.changes.commit_container`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import ClientPayloadError, web
from aiohttp.http_exceptions import PayloadEncodingError

from ociimg.api.http import (
    ApiError,
    Routes,
    blocking,
    find_container,
    json_response,
    query_bool,
    read_json,
    root_of,
)
from ociimg.errors import OciimgError

routes = Routes()
log = logging.getLogger("ociimg.api")

MAX_CONTEXT_ENV = "OCIIMG_API_MAX_CONTEXT"
DEFAULT_MAX_CONTEXT = 8 << 30
SPOOL_CHUNK = 1 << 20
# How often a build with no output checks that its client is still there.
DISCONNECT_POLL = 1.0
# What dockerd's networkmode values mean for RUN: its default network is ours (private).
NETWORK_MODES = {"": "private", "default": "private", "bridge": "private", "host": "host",
                 "none": "none"}


def max_context() -> int:
    try:
        return int(os.environ.get(MAX_CONTEXT_ENV, DEFAULT_MAX_CONTEXT))
    except ValueError:
        return DEFAULT_MAX_CONTEXT


# /build ------------------------------------------------------------------------------
@routes.post("/build")
async def build(request: web.Request) -> web.StreamResponse:
    job = _build_job(request)
    auths = _registry_config(request)
    root = Path(root_of(request))
    work = await blocking(_make_workdir, root)
    try:
        await spool_body(request, work / "context.tar", max_context())
        job.update(root=str(root), work=str(work), max_bytes=max_context(),
                   server_pid=os.getpid())
        await blocking(_write_job, work, job, auths)
        return await _run_job(request, work, auths is not None, job["cachefrom"] and
                              not job["quiet"])
    finally:
        await asyncio.shield(blocking(_remove, work))


def _build_job(request: web.Request) -> dict[str, Any]:
    """Every parameter checked before the 200 (after it, only in-stream errors)."""
    from ociimg.reference import parse_reference
    from ociimg.spec import Platform

    q = request.query
    if q.get("remote"):
        raise ApiError(400, "remote build contexts are not supported by ociimg serve: "
                            "send the context as a tar")
    tags = q.getall("t", [])
    for tag in tags:
        parse_reference(tag)  # InvalidReference: 400
    network = q.get("networkmode", "")
    if network not in NETWORK_MODES:
        raise ApiError(400, f"networkmode {network!r} is not supported by builds "
                            "(default, bridge, host or none)")
    platform = q.get("platform") or None
    if platform:
        try:
            Platform.parse(platform)
        except OciimgError as exc:
            raise ApiError(400, f"platform: {exc.message}") from None
    dockerfile = q.get("dockerfile") or None
    if dockerfile is not None and "\0" in dockerfile:
        raise ApiError(400, "dockerfile: the name holds a NUL byte")
    return {"tags": tags, "buildargs": _json_map(q, "buildargs"), "target": q.get("target") or None,
            "nocache": query_bool(request, "nocache"), "pull": query_bool(request, "pull"),
            "quiet": query_bool(request, "q"), "squash": query_bool(request, "squash"),
            "labels": _json_map(q, "labels"), "network": NETWORK_MODES[network],
            "platform": platform, "dockerfile": dockerfile,
            "cachefrom": bool(q.get("cachefrom") and q.get("cachefrom") not in ("[]", "null"))}


def _json_map(query: Any, name: str) -> dict[str, str]:
    """buildargs/labels: a JSON object of strings (a null build arg is left unset)."""
    raw = query.get(name)
    if not raw:
        return {}
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        raise ApiError(400, f"{name}: invalid JSON {raw[:200]!r}") from None
    if not isinstance(doc, dict) or not all(isinstance(k, str) and (v is None or isinstance(
            v, str)) for k, v in doc.items()):
        raise ApiError(400, f"{name}: expected a JSON object of strings")
    return {k: v for k, v in doc.items() if v is not None}


def _registry_config(request: web.Request) -> dict[str, Any] | None:
    """X-Registry-Config: base64 JSON, registry → {username, password, auth,
    identitytoken}; for the FROM pulls of this build only."""
    raw = request.headers.get("X-Registry-Config")
    if not raw:
        return None
    try:
        doc = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        raise ApiError(400, "X-Registry-Config: not base64 JSON") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "X-Registry-Config: expected a JSON object")
    keep = ("username", "password", "auth", "identitytoken")
    return {str(k): {f: v[f] for f in keep if isinstance(v.get(f), str) and v[f]}
            for k, v in doc.items() if isinstance(v, dict)}


def _make_workdir(root: Path) -> Path:
    base = root / "build-cache"
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    return Path(tempfile.mkdtemp(dir=base, prefix=".api-"))


def _remove(path: Path) -> None:
    from ociimg.fsutil import remove_tree
    with contextlib.suppress(FileNotFoundError):
        remove_tree(path)


async def spool_body(request: web.Request, dest: Path, limit: int) -> None:
    """The body to ``dest``, at most ``limit`` bytes (413 past it)."""
    too_big = ApiError(413, f"the build context is larger than {limit} bytes (the limit "
                            f"of ociimg serve: {MAX_CONTEXT_ENV})")
    if request.content_length is not None and request.content_length > limit:
        raise too_big
    out = await blocking(open, dest, "xb")
    try:
        size, buf = 0, bytearray()
        while chunk := await _read_body(request):
            size += len(chunk)
            if size > limit:
                raise too_big
            buf += chunk
            if len(buf) >= SPOOL_CHUNK:
                await blocking(out.write, bytes(buf))
                buf.clear()
        await blocking(out.write, bytes(buf))
    finally:
        await blocking(out.close)


async def _read_body(request: web.Request) -> bytes:
    """The body's next bytes; a body cut short (the client went away mid-upload) is an
    error, never taken as the whole (a tar cut at an entry boundary looks complete)."""
    try:
        return await request.content.readany()
    except (PayloadEncodingError, ClientPayloadError, ConnectionResetError):
        log.info("%s %s: the request body ended early", request.method, request.path)
        raise ApiError(400, "the request body ended early") from None


def _write_job(work: Path, job: dict[str, Any], auths: dict[str, Any] | None) -> None:
    (work / "job.json").write_text(json.dumps(job))
    if auths is not None:
        fd = os.open(work / "auth.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"auths": auths}, f)


async def _run_job(request: web.Request, work: Path, with_auth: bool,
                   warn_cachefrom: bool) -> web.StreamResponse:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH"))
        if p)}
    if with_auth:
        env["REGISTRY_AUTH_FILE"] = str(work / "auth.json")
    stderr = await blocking(open, work / "stderr", "wb")
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ociimg.api.buildjob", str(work / "job.json"),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=stderr,
            env=env, limit=4 << 20)
    finally:
        stderr.close()
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    try:
        await response.prepare(request)
        if warn_cachefrom:
            await response.write(_line({"stream": "warning: cachefrom is ignored by ociimg "
                                                  "serve (its step cache is local)\n"}))
        errored = await _relay(request, response, proc)
        code = await proc.wait()
        if code != 0 and not errored:
            await response.write(_line(await blocking(_failure, work, code)))
        await blocking(_remove, work)  # gone before the client sees the end
        await response.write_eof()
    except ConnectionResetError:
        if proc.returncode is None:
            log.info("build: the client went away; the build is cancelled")
    finally:
        await _stop(proc)
    return response


async def _relay(request: web.Request, response: web.StreamResponse,
                 proc: asyncio.subprocess.Process) -> bool:
    """The child's lines to the client as they come; whether one was an error. Raises
    ConnectionResetError when the client is gone (even while the build prints nothing)."""
    assert proc.stdout is not None
    errored = False
    while True:
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), DISCONNECT_POLL)
        except TimeoutError:
            if request.transport is None or request.transport.is_closing():
                raise ConnectionResetError("the client closed the connection") from None
            continue
        if not line:
            return errored
        errored = errored or line.startswith(b'{"errorDetail"')
        await response.write(line)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """A build still running is interrupted (its own Ctrl-C cleanup runs) and waited for."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    await asyncio.shield(proc.wait())


def _failure(work: Path, code: int) -> dict[str, Any]:
    """The child died without its own error line (a crash): its last stderr line."""
    try:
        lines = (work / "stderr").read_text(errors="replace").strip().splitlines()
    except OSError:
        lines = []
    if lines:
        log.error("build: the build process exited %d: %s", code, lines[-1])
    message = f"build failed: {lines[-1] if lines else f'exit code {code}'}"
    return {"errorDetail": {"message": message}, "error": message}


def _line(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


# /commit -----------------------------------------------------------------------------
@routes.post("/commit")
async def commit(request: web.Request) -> web.Response:
    from ociimg.commands.changes import CommitOptions, commit_container

    q = request.query
    name = q.get("container") or ""
    if not name:
        raise ApiError(400, "commit: the container parameter is required")
    container = await blocking(find_container, request, name)
    body = await read_json(request) or {}  # the docker CLI sends null
    if not isinstance(body, dict):
        raise ApiError(400, "commit: the body must be a JSON object (a container config)")
    repo, tag = q.get("repo") or "", q.get("tag") or ""
    image = (f"{repo}:{tag}" if tag else repo) or None
    changes = tuple(line for text in q.getall("changes", []) for line in text.splitlines()
                    if line.strip())
    options = CommitOptions(name=image, message=q.get("comment") or "",
                            author=q.get("author") or "",
                            changes=changes + _config_changes(body),
                            pause=query_bool(request, "pause", True))
    result = await blocking(commit_container, Path(root_of(request)), container.id, options)
    manifest = await blocking(_config_digest, Path(root_of(request)), result.descriptor)
    return json_response({"Id": manifest}, 201)


def _config_changes(body: dict[str, Any]) -> tuple[str, ...]:
    """The request body (a container config) as the Dockerfile instructions commit's
    --change takes: only the fields an image config keeps."""
    out: list[str] = []
    if isinstance(body.get("Cmd"), list):
        out.append("CMD " + json.dumps(body["Cmd"]))
    if isinstance(body.get("Entrypoint"), list):
        out.append("ENTRYPOINT " + json.dumps(body["Entrypoint"]))
    for item in body.get("Env") or []:
        if isinstance(item, str) and "=" in item:
            key, _, value = item.partition("=")
            out.append(f"ENV {key}={json.dumps(value)}")
    for key, value in (body.get("Labels") or {}).items():
        out.append(f"LABEL {json.dumps(str(key))}={json.dumps(str(value))}")
    for port in body.get("ExposedPorts") or {}:
        out.append(f"EXPOSE {port}")
    for volume in body.get("Volumes") or {}:
        out.append("VOLUME " + json.dumps([volume]))
    for field, keyword in (("WorkingDir", "WORKDIR"), ("User", "USER"),
                           ("StopSignal", "STOPSIGNAL")):
        if isinstance(body.get(field), str) and body[field]:
            out.append(f"{keyword} {body[field]}")
    return tuple(out)


def _config_digest(root: Path, descriptor: Any) -> str:
    from ociimg.spec import Manifest
    from ociimg.store import Store
    manifest = Store.open(root).read_manifest(descriptor)
    assert isinstance(manifest, Manifest)
    return str(manifest.config.digest)

