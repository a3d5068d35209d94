"""Per-registry settings from containers' ``registries.conf`` (v2 TOML format), the file
skopeo, podman and buildah read, so one setting serves them all:

    [[registry]]
    location = "registry.internal:5000"
    insecure = true

Only ``insecure`` is used: such a registry is spoken to over plain HTTP or TLS without
certificate checks, as with ``--insecure``. Files read, later ones winning:
/etc/containers/registries.conf, ~/.config/containers/registries.conf, and
$CONTAINERS_REGISTRIES_CONF when set (which replaces both, as in containers/image).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from ociimg.errors import InvalidDocument

SYSTEM_FILE = Path("/etc/containers/registries.conf")


def config_files() -> list[Path]:
    override = os.environ.get("CONTAINERS_REGISTRIES_CONF")
    if override:
        return [Path(override)]
    home = Path(os.environ.get("HOME", "/root"))
    return [SYSTEM_FILE, home / ".config" / "containers" / "registries.conf"]


def insecure_registries(files: list[Path] | None = None) -> set[str]:
    """Locations marked ``insecure = true`` (host[:port], optionally with a path prefix)."""
    marked: dict[str, bool] = {}
    for path in config_files() if files is None else files:
        for entry in _registry_entries(path):
            location = entry.get("location") or entry.get("prefix")
            if isinstance(location, str) and isinstance(entry.get("insecure"), bool):
                marked[location.rstrip("/")] = entry["insecure"]
    return {loc for loc, insecure in marked.items() if insecure}


def is_insecure(domain: str, files: list[Path] | None = None) -> bool:
    """Whether ``domain`` (host[:port]) is marked insecure; a location with a path
    ("host/team") marks its host too, since TLS settings are per host."""
    return any(loc.split("/", 1)[0] == domain for loc in insecure_registries(files))


def _registry_entries(path: Path) -> list[dict]:  # type: ignore[type-arg]
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise InvalidDocument(f"{path}: cannot read ({exc.strerror})") from exc
    try:
        doc = tomllib.loads(data.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidDocument(f"{path}: not valid TOML ({exc})",
                              hint="fix or remove the file (containers-registries.conf(5))"
                              ) from exc
    entries = doc.get("registry", [])
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
