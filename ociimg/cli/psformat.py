"""``ps`` rows as docker shows them: STATUS with uptime ("Up 3 seconds", "Exited (0) 2
minutes ago"), --filter, and --format's Go-template subset ({{.Field}}, {{json .}},
``table``)."""

from __future__ import annotations

import json
import re
from typing import Any

from ociimg import filters as filters_mod
from ociimg.containers.listing import (  # noqa: F401  (re-exported)
    FILTER_KEYS,
    STATUSES,
    _epoch,
    docker_state,
    human_duration,
    matches,
    status_text,
)
from ociimg.errors import InvalidArgument


def parse_filters(items: list[str]) -> dict[str, list[str]]:
    filters = filters_mod.parse_filters(items, FILTER_KEYS)
    for value in filters.get("status", []):
        if value not in STATUSES:
            raise InvalidArgument(f"invalid filter 'status={value}'",
                                  hint="status is one of " + ", ".join(STATUSES))
    return filters


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
