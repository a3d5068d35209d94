"""System: ping, version, info, events, disk usage."""

from __future__ import annotations

import os
import platform

from aiohttp import web

from ociimg.api.http import API_VERSION, MIN_API_VERSION, Routes, json_response, standard_headers

routes = Routes()


def _ping_headers() -> dict[str, str]:
    # Builder-Version 1: the legacy builder protocol (what /build speaks); a client with
    # BuildKit as default falls back to it.
    return {**standard_headers(), "Builder-Version": "1", "Cache-Control": "no-cache, no-store, "
            "must-revalidate", "Pragma": "no-cache"}


@routes.get("/_ping")
async def ping(request: web.Request) -> web.Response:
    return web.Response(text="OK", headers=_ping_headers())


@routes.head("/_ping")
async def ping_head(request: web.Request) -> web.Response:
    return web.Response(headers={**_ping_headers(), "Content-Type": "text/plain; charset=utf-8",
                                 "Content-Length": "0"})


@routes.get("/version")
async def version(request: web.Request) -> web.Response:
    from ociimg import __version__

    uname = os.uname()
    body = {
        "Platform": {"Name": "ociimg"},
        "Components": [{"Name": "Engine", "Version": __version__,
                        "Details": {"ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION,
                                    "Os": "linux", "Arch": _go_arch(), "KernelVersion":
                                    uname.release, "Experimental": "false"}}],
        "Version": __version__,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": f"python{platform.python_version()}",
        "Os": "linux",
        "Arch": _go_arch(),
        "KernelVersion": uname.release,
        "BuildTime": "",
    }
    return json_response(body)


def _go_arch() -> str:
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(
        machine, machine)
