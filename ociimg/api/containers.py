"""Containers: create, start, wait, inspect, list, stop, kill, restart, pause, remove,
top, stats, rename, resize, logs, attach, archive, export, changes, prune."""

from __future__ import annotations

from ociimg.api.http import Routes

routes = Routes()
