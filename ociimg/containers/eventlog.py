"""Container events (docker's ``events``): one JSON line each, appended to
``ROOT/containers/.events`` by the manager and the monitors.

A line is written with one O_APPEND write (under PIPE_BUF-sized for the kernel's append
atomicity in practice), so concurrent writers never interleave. The monitor writes it:
os, time and jsonio only.
"""

from __future__ import annotations

import os
import time

from ociimg.runtime import jsonio

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

EVENTS_NAME = ".events"
_MAX_EVENTS_SIZE = 16 << 20  # past this the file starts again (docker keeps 1000 in memory)


def events_path(root: str | os.PathLike[str]) -> str:
    return os.path.join(root, "containers", EVENTS_NAME)


def append_event(root: str | os.PathLike[str], action: str, meta: dict[str, Any],
                 **attrs: str) -> None:
    """Best effort: an event that cannot be written never fails the action. The
    container's labels are attributes too (docker's: ``events --filter label=``)."""
    ns = time.time_ns()
    labels = meta.get("labels") if isinstance(meta.get("labels"), dict) else {}
    append_record(root, {"Type": "container", "Action": action, "id": meta.get("id"),
                         "Actor": {"ID": meta.get("id"), "Attributes": {
                             **{str(k): str(v) for k, v in (labels or {}).items()},
                             "name": meta.get("name") or str(meta.get("id"))[:12],
                             "image": meta.get("image") or "", **attrs}},
                         "time": ns // 1_000_000_000, "timeNano": ns})


def record_event(root: str | os.PathLike[str], kind: str, action: str, actor: str,
                 **attrs: str) -> None:
    """An event of another ``Type`` (image, network, volume), best effort as the others."""
    ns = time.time_ns()
    os.makedirs(os.path.join(root, "containers"), mode=0o700, exist_ok=True)
    append_record(root, {"Type": kind, "Action": action,
                         "Actor": {"ID": actor, "Attributes": attrs},
                         "time": ns // 1_000_000_000, "timeNano": ns})


def append_record(root: str | os.PathLike[str], doc: dict[str, Any]) -> None:
    """Append one event document (any ``Type``: the API server records network and
    volume events here too); best effort, as :func:`append_event`."""
    path = events_path(root)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o600)
    except OSError:
        return
    try:
        if os.fstat(fd).st_size > _MAX_EVENTS_SIZE:
            os.ftruncate(fd, 0)
        os.write(fd, jsonio.dumps(doc).encode() + b"\n")
    except OSError:
        pass
    finally:
        os.close(fd)


def read_events(root: str | os.PathLike[str], *, follow: bool = False,
                poll: float = 0.2) -> Iterator[dict[str, Any]]:
    """The events in order; with ``follow``, new ones as they come (forever)."""
    path = events_path(root)
    while True:
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below
            break
        except FileNotFoundError:
            if not follow:
                return
            time.sleep(poll)
    with f:
        buf = b""
        while True:
            chunk = f.read(1 << 16)
            if chunk:
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    try:
                        doc = jsonio.loads(line)
                    except ValueError:
                        continue
                    if isinstance(doc, dict):
                        yield doc
                continue
            if not follow:
                return
            time.sleep(poll)
