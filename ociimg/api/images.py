"""Images: list, inspect, pull (images/create), push, tag, remove, history, get, load,
search, prune."""

from __future__ import annotations

from ociimg.api.http import Routes

routes = Routes()
