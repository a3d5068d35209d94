"""Container files: archive GET/PUT/HEAD (docker cp), export, changes (docker diff)."""

from __future__ import annotations

from ociimg.api.http import Routes

routes = Routes()
