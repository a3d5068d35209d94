"""Container streams: attach (hijacked), logs (multiplexed or raw), resize."""

from __future__ import annotations

from ociimg.api.http import Routes

routes = Routes()
