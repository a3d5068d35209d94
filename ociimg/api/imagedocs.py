"""The image documents of the Engine API, shaped from the store's images: the list
summary, inspect, history, and dockerd's progress lines for pull and push.

Pure functions over values the store already gives (image rows, configs, manifests):
no I/O, so the shapes are checked without a server. Names are shown in docker's
familiar form (``docker.io/library/busybox:latest`` → ``busybox:latest``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ociimg import spec
from ociimg.commands.listing import ImageRow, human_size
from ociimg.reference import familiar_name

_NO_TIME = "0001-01-01T00:00:00Z"


def short_id(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


@dataclass
class ImageGroup:
    """One image (one config digest, docker's Id) and the stored names that point at it."""

    image_id: str
    rows: list[ImageRow] = field(default_factory=list)

    @property
    def first(self) -> ImageRow:
        return self.rows[0]

    @property
    def tag_names(self) -> list[str]:
        """Stored names that are tags (not a bare digest, not repo@digest)."""
        return [r.name for r in self.rows if not r.dangling and r.tag != "<none>"]

    def repo_tags(self) -> list[str]:
        return [familiar_name(n) for n in self.tag_names]

    def repo_digests(self) -> list[str]:
        out: list[str] = []
        for row in self.rows:
            if row.dangling:
                continue
            text = f"{familiar_name(row.repository)}@{row.digest}"
            if text not in out:
                out.append(text)
        return out


def group_rows(rows: list[ImageRow]) -> dict[str, ImageGroup]:
    """Rows (one per stored name) grouped by image Id, in the rows' order; artifacts and
    images of another platform (no Id here) are not docker images and are left out."""
    groups: dict[str, ImageGroup] = {}
    for row in rows:
        if row.image_id is None:
            continue
        key = str(row.image_id)
        groups.setdefault(key, ImageGroup(key)).rows.append(row)
    return groups


def unix_time(when: datetime | None) -> int:
    return int(when.timestamp()) if when else 0


def image_summary(group: ImageGroup, version: tuple[int, int]) -> dict[str, Any]:
    row = group.first
    doc: dict[str, Any] = {
        "Id": group.image_id, "ParentId": "", "RepoTags": group.repo_tags(),
        "RepoDigests": group.repo_digests(), "Created": unix_time(row.created),
        "Size": row.size, "SharedSize": -1, "Labels": dict(row.labels), "Containers": -1,
    }
    if version < (1, 43):
        doc["VirtualSize"] = row.size
    return doc


def container_config(config: dict[str, Any]) -> dict[str, Any]:
    """An OCI/docker image config's ``config`` object with docker's full set of fields
    (what docker-py and compose read: Env, Cmd, Volumes, Labels, ...)."""
    return {
        "Hostname": "", "Domainname": "", "User": config.get("User", ""),
        "AttachStdin": False, "AttachStdout": False, "AttachStderr": False,
        "ExposedPorts": config.get("ExposedPorts"), "Tty": False, "OpenStdin": False,
        "StdinOnce": False, "Env": config.get("Env"), "Cmd": config.get("Cmd"),
        "Healthcheck": config.get("Healthcheck"), "ArgsEscaped": config.get("ArgsEscaped"),
        "Image": "", "Volumes": config.get("Volumes"),
        "WorkingDir": config.get("WorkingDir", ""), "Entrypoint": config.get("Entrypoint"),
        "OnBuild": config.get("OnBuild"), "Labels": config.get("Labels"),
        "StopSignal": config.get("StopSignal"), "Shell": config.get("Shell"),
    }


def image_inspect(group: ImageGroup, config: spec.ImageConfig,
                  version: tuple[int, int]) -> dict[str, Any]:
    doc = config.to_json()
    inner = doc.get("config") if isinstance(doc.get("config"), dict) else {}
    row = group.first
    out: dict[str, Any] = {
        "Id": group.image_id, "RepoTags": group.repo_tags(),
        "RepoDigests": group.repo_digests(), "Parent": "", "Comment": _history_comment(doc),
        "Created": doc.get("created") if isinstance(doc.get("created"), str) else _NO_TIME,
        "DockerVersion": "", "Author": doc.get("author", "") or "",
        "Config": container_config(inner),  # type: ignore[arg-type]
        "Architecture": config.platform.architecture, "Os": config.platform.os,
        "Size": row.size,
        "GraphDriver": {"Name": "overlay2", "Data": {}},
        "RootFS": {"Type": "layers", "Layers": [str(d) for d in config.diff_ids]},
        "Metadata": {"LastTagTime": _NO_TIME},
    }
    if config.platform.variant:
        out["Variant"] = config.platform.variant
    if version < (1, 45):
        # Compose 1.29 reads ContainerConfig.Volumes and fails without it (trap 16).
        out["Container"] = ""
        out["ContainerConfig"] = container_config(inner)  # type: ignore[arg-type]
    if version < (1, 43):
        out["VirtualSize"] = row.size
    return out


def _history_comment(doc: dict[str, Any]) -> str:
    history = doc.get("history")
    if isinstance(history, list) and history and isinstance(history[-1], dict):
        comment = history[-1].get("comment")
        return comment if isinstance(comment, str) else ""
    return ""


def image_history(group: ImageGroup, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``history_rows`` (newest first) as docker's history entries: the newest carries
    the image's Id and tags, older steps ``<missing>`` (no image of their own here)."""
    out = []
    for i, row in enumerate(rows):
        size = row["uncompressedSize"] if row["uncompressedSize"] is not None else row["size"]
        out.append({"Id": group.image_id if i == 0 else "<missing>",
                    "Created": unix_time(_parse_time(row["created"])),
                    "CreatedBy": row["createdBy"],
                    "Tags": group.repo_tags() if i == 0 else None,
                    "Size": size, "Comment": row["comment"]})
    return out


def _parse_time(text: str) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def progress_bar(current: int, total: int | None) -> str:
    """The ``progress`` text of docker's JSON messages (jsonmessage.JSONProgress)."""
    if not total or total <= 0:
        return f"{human_size(current):>8}"
    width = 50
    filled = min(width, current * width // total)
    bar = "=" * filled + (">" + " " * (width - filled - 1) if filled < width else "")
    return f"[{bar}] {human_size(current):>8}/{human_size(total)}"

