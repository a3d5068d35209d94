"""Exec: create, start (hijacked), resize, inspect."""

from __future__ import annotations

from ociimg.api.http import Routes

routes = Routes()
