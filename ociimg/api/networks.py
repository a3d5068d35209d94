"""Networks: list, inspect, create, remove, connect, disconnect, prune."""

from __future__ import annotations

from ociimg.api.http import Routes

routes = Routes()
