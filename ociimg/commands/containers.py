"""The container store's lock and listing, for ``gc`` and ``unpack`` (the container
commands themselves are ociimg.containers, driven by cli/containers.py)."""

from __future__ import annotations

from ociimg.containers.store import containers_locked, list_containers

__all__ = ["containers_locked", "list_containers"]
