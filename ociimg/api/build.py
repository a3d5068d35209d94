"""Build: /build with a tar context, streaming the legacy builder's JSON progress, and /commit."""

from __future__ import annotations

from ociimg.api.http import Routes

routes = Routes()
