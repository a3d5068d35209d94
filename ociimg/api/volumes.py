"""Volumes: list, inspect, create, remove, prune."""

from __future__ import annotations

from ociimg.api.http import Routes

routes = Routes()
