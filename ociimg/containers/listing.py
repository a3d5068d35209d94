"""Containers as ``ps`` lists them: one row per container (its status, docker's STATUS
wording such as "Up 3 seconds" or "Exited (0) 2 minutes ago") and docker's filters over
those rows. Shared by ``ociimg ps`` (cli/psformat.py) and ``ociimg serve``'s
``GET /containers/json``."""

from __future__ import annotations

import calendar
import contextlib
import os
import re
import time
from typing import Any

from ociimg.filters import labels_match

FILTER_KEYS = ("name", "status", "label", "ancestor", "id", "exited", "health")
STATUSES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")


def human_duration(seconds: float) -> str:
    """docker's units.HumanDuration."""
    if seconds < 1:
        return "Less than a second"
    if int(seconds) == 1:
        return "1 second"
    if seconds < 60:
        return f"{int(seconds)} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def _epoch(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        return calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def docker_state(status: str) -> str:
    """Our status word → docker's State (configured is docker's created)."""
    return {"configured": "created", "creating": "created", "stopped": "exited",
            "unknown": "dead"}.get(status, status)


def status_text(row: dict[str, Any], now: float | None = None) -> str:
    now = time.time() if now is None else now
    state = docker_state(row["status"])
    health = row.get("health")
    if state in ("running", "paused"):
        started = row.get("startedAt")
        text = "Up " + human_duration(now - started) if started else "Up"
        if state == "paused":
            text += " (Paused)"
        elif health:
            text += {"starting": " (health: starting)"}.get(health, f" ({health})")
        return text
    finished = _epoch(row.get("finished"))
    ago = f" {human_duration(now - finished)} ago" if finished else ""
    if state == "restarting":
        return f"Restarting ({row.get('exitCode', 0)}){ago}"
    if state == "exited":
        return f"Exited ({row.get('exitCode', 0)}){ago}"
    return state.capitalize()


def _image_matches(image: str, want: str) -> bool:
    if image == want:
        return True
    base = image.rsplit("/", 1)[-1]
    return want in (base, base.split(":")[0], image.split(":")[0]) and \
        (":" not in want or image.endswith(want))


def _one(key: str, value: str, row: dict[str, Any]) -> bool:
    if key == "name":  # docker matches "/NAME" too: `name=^/web$` is a common idiom
        return any(re.search(value, n) is not None if _valid_re(value) else value in n
                   for n in (row["name"], "/" + row["name"]))
    if key == "status":
        return docker_state(row["status"]) == value
    if key == "ancestor":
        return _image_matches(row.get("image") or "", value) or \
            (row.get("digest") or "").removeprefix("sha256:").startswith(
                value.removeprefix("sha256:"))
    if key == "id":
        return row["id"].startswith(value)
    if key == "exited":
        return docker_state(row["status"]) == "exited" and str(row.get("exitCode")) == value
    if key == "health":
        return (row.get("health") or "none") == value
    return False


def _valid_re(text: str) -> bool:
    try:
        re.compile(text)
    except re.error:
        return False
    return True


def matches(filters: dict[str, list[str]], row: dict[str, Any]) -> bool:
    """docker's rule: values of one key OR'ed, keys AND'ed; but every label= must hold
    (compose lists a service's containers by two labels)."""
    return labels_match(row.get("labels") or {}, filters.get("label")) and all(
        any(_one(key, v, row) for v in values) for key, values in filters.items()
        if key != "label")


def ps_row(manager: Any, c: Any) -> dict[str, Any]:
    """What ps shows and filters on for container ``c``: id, name, image, digest, command,
    created, labels, startedAt, restartCount, health, status (pid, exitCode, finished),
    runningFor and statusText."""
    st = manager.status(c).as_dict()
    run_record = manager.run_record(c)
    health = manager.health(c)
    row = {"id": c.id, "name": c.name, "image": c.meta.get("image"),
           "digest": c.meta.get("digest"), "command": c.meta.get("command"),
           "created": c.meta.get("created"), "labels": c.meta.get("labels") or {},
           "startedAt": run_record.get("startedAt"),
           "restartCount": run_record.get("restartCount", 0),
           "health": health["Status"] if health else None, **st}
    created = _epoch(row["created"])
    row["runningFor"] = human_duration(time.time() - created) + " ago" if created else ""
    row["statusText"] = status_text(row)
    return row


def writable_size(manager: Any, c: Any) -> int:
    """Bytes in a container's writable layer (its active snapshot's upper dir): what
    removing it frees, `ps -s`'s and the API's SizeRw."""
    from ociimg.errors import OciimgError
    from ociimg.layers.snapshots import SnapshotStore
    try:
        top = SnapshotStore(manager.root / "snapshots").active_dir(c.snapshot_key)
    except OciimgError:
        return 0
    total = 0
    for base, _, files in os.walk(top / "upper" if (top / "upper").is_dir() else top):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(base, f)).st_size
    return total
