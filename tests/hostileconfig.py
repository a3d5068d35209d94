"""Hostile config.json variants, generated from the vendored runtime-spec schema.

Every leaf the schema defines under the fields the runtime reads (ociVersion, root,
process, hostname, domainname, mounts, hooks, annotations, linux) gets values of the
wrong type, integers just outside and exactly at the ends of their range, huge numbers,
deep nesting, NUL bytes and wrong enum values. Lists are given one valid element first
(``SEEDS``) so that the hostile value sits in an otherwise valid document.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SCHEMAS = Path(__file__).resolve().parent / "schemas" / "runtime-spec"
READ_BY_RUNTIME = ("ociVersion", "root", "process", "hostname", "domainname", "mounts",
                   "hooks", "annotations", "linux")

# One valid element for each list (by its path, indexes as [0]) and each map.
SEEDS: dict[str, Any] = {
    "mounts": {"destination": "/mnt", "type": "tmpfs", "source": "tmpfs"},
    "mounts[0].uidMappings": {"containerID": 0, "hostID": 0, "size": 1},
    "mounts[0].gidMappings": {"containerID": 0, "hostID": 0, "size": 1},
    "process.rlimits": {"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 1024},
    "process.user.additionalGids": 0,
    "process.scheduler.flags": "SCHED_FLAG_RESET_ON_FORK",
    "linux.devices": {"type": "c", "path": "/dev/null2", "major": 1, "minor": 3},
    "linux.uidMappings": {"containerID": 0, "hostID": 0, "size": 1},
    "linux.gidMappings": {"containerID": 0, "hostID": 0, "size": 1},
    "linux.resources.devices": {"allow": False, "access": "rwm"},
    "linux.resources.hugepageLimits": {"pageSize": "2MB", "limit": 1 << 21},
    "linux.resources.network.priorities": {"name": "eth0", "priority": 1},
    "linux.resources.blockIO.weightDevice": {"major": 8, "minor": 0, "weight": 10},
    "linux.seccomp.syscalls[0].args": {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
    "linux.memoryPolicy.flags": "MPOL_F_STATIC_NODES",
    "linux.seccomp.flags": "SECCOMP_FILTER_FLAG_LOG",
    "linux.personality.flags": "x",
    "linux.intelRdt.schemata": "L3:0=f",
}
# Objects with required members, so that one hostile member is the only fault.
SEEDS.update({
    "process.consoleSize": {"height": 24, "width": 80},
    "process.scheduler": {"policy": "SCHED_OTHER"},
    "process.ioPriority": {"class": "IOPRIO_CLASS_BE"},
    "linux.resources.pids": {"limit": 100},
})
for _name in ("throttleReadBpsDevice", "throttleWriteBpsDevice", "throttleReadIOPSDevice",
              "throttleWriteIOPSDevice"):
    SEEDS[f"linux.resources.blockIO.{_name}"] = {"major": 8, "minor": 0, "rate": 1 << 20}
for _stage in ("prestart", "createRuntime", "createContainer", "startContainer",
               "poststart", "poststop"):
    SEEDS[f"hooks.{_stage}"] = {"path": "/bin/true"}


def _load(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / name).read_text())


def resolve(node: dict[str, Any], current: str) -> tuple[dict[str, Any], str]:
    """Follow $ref (``file#/a/b`` or ``#/a/b``) and merge allOf, until a concrete node."""
    while True:
        if "$ref" in node:
            target, _, pointer = node["$ref"].partition("#")
            current = target or current
            doc: Any = _load(current)
            for part in pointer.strip("/").split("/") if pointer.strip("/") else []:
                doc = doc[part]
            node = {**{k: v for k, v in node.items() if k != "$ref"}, **doc}
            continue
        if "allOf" in node:
            merged: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
            for sub in node["allOf"]:
                sub, _ = resolve(sub, current)
                merged["properties"].update(sub.get("properties", {}))
                merged["required"] += sub.get("required", [])
            node = merged
            continue
        if "anyOf" in node:
            node = node["anyOf"][0]
            continue
        return node, current


def leaves(node: dict[str, Any], current: str, path: str) -> Iterator[tuple[str, dict]]:
    """(JSON path, schema node) of every field below ``node``; lists as [0], maps as .k."""
    node, current = resolve(node, current)
    yield path, node
    kind = node.get("type")
    if kind == "array" and "items" in node:
        yield from leaves(node["items"], current, f"{path}[0]")
    elif "properties" in node:
        for key, sub in node["properties"].items():
            yield from leaves(sub, current, f"{path}.{key}" if path else key)
    if "patternProperties" in node or "additionalProperties" in node:
        sub = next(iter(node.get("patternProperties", {}).values()), None) \
            or node.get("additionalProperties")
        if isinstance(sub, dict):
            yield from leaves(sub, current, f"{path}.k")


def schema_leaves() -> list[tuple[str, dict]]:
    root = _load("config-schema.json")
    out = []
    for key in READ_BY_RUNTIME:
        out += list(leaves(root["properties"][key], "config-schema.json", key))
    return out


def hostile_values(node: dict[str, Any]) -> list[Any]:
    kind = node.get("type")
    values: list[Any] = [1.5, None, nested(60)]
    values += [v for k, v in (("string", "x"), ("boolean", True), ("array", []),
                              ("object", {})) if k != kind]
    if kind == "integer":
        lo, hi = node.get("minimum"), node.get("maximum")
        for bound in (lo, hi):
            if bound is not None:
                values += [bound, bound - 1 if bound == lo else bound + 1]
        values += [2**64, -2**64, 10**30, -1, 0]
    elif kind == "string":
        values += ["", "\x00", "../../../../x", "bogus\nline"]
        if "enum" in node or "pattern" in node:
            values.append("BOGUS")
    elif kind == "array":
        values += [[None], ["x", 1], [nested(60)]]
    return values


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def _split(path: str) -> list[str | int]:
    parts: list[str | int] = []
    for part in path.replace("[", ".[").split("."):
        if part.startswith("["):
            parts.append(int(part[1:-1]))
        elif part:
            parts.append(part)
    return parts


def set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    """Set ``path`` in ``doc``, creating objects and seeded lists on the way."""
    parts = _split(path)
    node: Any = doc
    walked = ""
    for i, part in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        walked = f"{walked}[{part}]" if isinstance(part, int) else \
            (f"{walked}.{part}" if walked else str(part))
        if isinstance(part, int):
            node = node[part]
            continue
        if part not in node or not isinstance(node[part], (dict, list)):
            node[part] = [] if isinstance(nxt, int) else copy.deepcopy(SEEDS.get(walked, {}))
        if isinstance(nxt, int) and not node[part]:
            node[part].append(copy.deepcopy(SEEDS.get(walked, {})))
        node = node[part]
    last = parts[-1]
    if isinstance(last, int):
        if not node:
            node.append(None)
        node[last] = value
    else:
        node[last] = value


def variants(base: dict[str, Any]) -> Iterator[tuple[str, Any, dict[str, Any]]]:
    """(path, value, config) for every hostile value of every leaf."""
    for path, node in schema_leaves():
        for value in hostile_values(node):
            doc = copy.deepcopy(base)
            set_path(doc, path, value)
            yield path, value, doc
