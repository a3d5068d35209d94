"""``ps`` rows as docker shows them: STATUS with uptime ("Up 3 seconds", "Exited (0) 2
minutes ago"), --filter, and --format's Go-template subset ({{.Field}}, {{json .}},
``table``)."""

from __future__ import annotations

import calendar
import json
import re
import time
from typing import Any

from ociimg.commands import filters as filters_mod
from ociimg.errors import InvalidArgument

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


def parse_filters(items: list[str]) -> dict[str, list[str]]:
    filters = filters_mod.parse_filters(items, FILTER_KEYS)
    for value in filters.get("status", []):
        if value not in STATUSES:
            raise InvalidArgument(f"invalid filter 'status={value}'",
                                  hint="status is one of " + ", ".join(STATUSES))
    return filters


def _image_matches(image: str, want: str) -> bool:
    if image == want:
        return True
    base = image.rsplit("/", 1)[-1]
    return want in (base, base.split(":")[0], image.split(":")[0]) and \
        (":" not in want or image.endswith(want))


def _one(key: str, value: str, row: dict[str, Any]) -> bool:
    if key == "name":
        return re.search(value, row["name"]) is not None if _valid_re(value) \
            else value in row["name"]
    if key == "status":
        return docker_state(row["status"]) == value
    if key == "label":
        return filters_mod.label_matches(row.get("labels") or {}, value)
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
    """docker's rule: values of one key OR'ed, keys AND'ed."""
    return all(any(_one(key, v, row) for v in values) for key, values in filters.items())


# --format --------------------------------------------------------------------------------
_FIELD = re.compile(r"\{\{\s*(json\s+\.|\.[A-Za-z]+)\s*\}\}")


def fields(row: dict[str, Any], no_trunc: bool) -> dict[str, str]:
    command = " ".join(row.get("command") or [])
    if not no_trunc and len(command) > 20:
        command = command[:19] + "…"
    labels = row.get("labels") or {}
    return {"ID": row["id"] if no_trunc else row["id"][:12], "Names": row["name"],
            "Image": row.get("image") or "", "Command": f'"{command}"',
            "CreatedAt": row.get("created") or "", "Status": row["statusText"],
            "State": docker_state(row["status"]), "RunningFor": row["runningFor"],
            "Labels": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
            "Size": row.get("sizeText", ""), "Ports": "", "Mounts": "", "Networks": ""}


def render(template: str, row: dict[str, Any], no_trunc: bool) -> str:
    values = fields(row, no_trunc)

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name.startswith("json"):
            return json.dumps(values, sort_keys=True)
        key = name[1:]
        if key not in values:
            raise InvalidArgument(f"--format: no field {key!r}",
                                  hint="fields: " + ", ".join(sorted(values)))
        return values[key]
    return _FIELD.sub(sub, template.replace("\\t", "\t").replace("\\n", "\n"))


def header(template: str) -> str:
    names = {"ID": "CONTAINER ID", "Names": "NAMES", "Image": "IMAGE", "Command": "COMMAND",
             "CreatedAt": "CREATED AT", "Status": "STATUS", "State": "STATE",
             "RunningFor": "CREATED", "Labels": "LABELS", "Size": "SIZE", "Ports": "PORTS",
             "Mounts": "MOUNTS", "Networks": "NETWORKS"}
    return _FIELD.sub(lambda m: names.get(m.group(1)[1:], m.group(1)[1:].upper()),
                      template.replace("\\t", "\t"))
