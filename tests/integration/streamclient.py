"""Helpers of the API stream tests: containers made through the library in the server's
root, and a hand-made hijacking client (for what no real client sends: half-closes at
chosen moments, garbage, a client that never reads)."""

from __future__ import annotations

import socket
import struct
from pathlib import Path
from typing import Any

from tests.integration.apiserver import ApiServer


def make_container(api: ApiServer, layout: Path, *argv: str, tty: bool = False,
                   interactive: bool = False, remove: bool = False,
                   name: str | None = None, start: bool = False, **options: Any) -> Any:
    """A container of busybox in the server's root (created, and started if asked) by
    the container library, as the API's create makes them."""
    from ociimg.bundle import BundleOptions
    from ociimg.commands.resolve import resolve_image
    from ociimg.containers import ContainerManager, CreateOptions
    mgr = ContainerManager(api.root)
    image = resolve_image(f"oci:{layout}:busybox", api.root)
    c = mgr.create(image, CreateOptions(
        name=name, bundle=BundleOptions(args=list(argv), terminal=tty),
        interactive=interactive, remove=remove, **options))
    if start:
        mgr.start(c)
    return c


def start(api: ApiServer, c: Any) -> None:
    from ociimg.containers import ContainerManager
    ContainerManager(api.root).start(c)


def wait(api: ApiServer, c: Any, timeout: float = 60) -> int | None:
    from ociimg.containers import ContainerManager
    return ContainerManager(api.root).wait(c, timeout)


class Hijack:
    """POST ``path`` with the upgrade headers; ``head`` is the response's status line
    and headers; then the raw socket."""

    def __init__(self, api: ApiServer, path: str, body: bytes = b"",
                 upgrade: bool = True, extra: bytes = b"") -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(60)
        self.sock.connect(str(api.socket))
        head = f"POST {path} HTTP/1.1\r\nHost: docker\r\n"
        if upgrade:
            head += "Connection: Upgrade\r\nUpgrade: tcp\r\n"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.sock.sendall(head.encode() + b"\r\n" + body + extra)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(1)
            if not chunk:
                break
            data += chunk
        self.head, _, self.rest = data.partition(b"\r\n\r\n")

    @property
    def status(self) -> int:
        return int(self.head.split()[1])

    def header(self, name: str) -> str | None:
        for line in self.head.decode().split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None

    def read_all(self) -> bytes:
        data = self.rest
        while chunk := self.sock.recv(65536):
            data += chunk
        return data

    def body(self) -> bytes:
        """An error answer's body (it has a Content-Length: the connection stays open)."""
        size = int(self.header("Content-Length") or 0)
        data = self.rest
        while len(data) < size:
            data += self.sock.recv(65536)
        return data

    def close(self) -> None:
        self.sock.close()


def demux(data: bytes) -> tuple[bytes, bytes]:
    """stdcopy frames → (stdout, stderr); fails on anything that is not a whole frame."""
    out = {1: b"", 2: b""}
    while data:
        assert len(data) >= 8, f"a cut frame header: {data!r}"
        stream, size = struct.unpack(">BxxxI", data[:8])
        assert stream in (1, 2), f"bad stream byte {stream} in {data[:40]!r}"
        out[stream] += data[8:8 + size]
        assert len(data) >= 8 + size, "a cut frame"
        data = data[8 + size:]
    return out[1], out[2]
