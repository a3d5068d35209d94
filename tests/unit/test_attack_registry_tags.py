"""A hostile registry's tag list: pages that never end with fresh URLs, each near the
4 MiB page cap, must not grow the listing without bound (10,000 pages of ~400k tags)."""

from __future__ import annotations

import json

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from ociimg.errors import RegistryError
from ociimg.registry.client import MAX_TAGS
from tests.unit.test_inspection_registry import client_for


def test_endless_pages_of_fresh_tags_are_cut_off(httpserver: HTTPServer) -> None:
    per_page = 300_000

    def handler(request: Request) -> Response:
        k = int(request.args.get("page", "0"))
        page = [f"t{k}-{i}" for i in range(per_page)]
        # Endless in spirit; 8 pages here so that a listing without the cap returns.
        link = {"Link": f'</v2/app/tags/list?page={k + 1}>; rel="next"'} if k < 8 else {}
        return Response(json.dumps({"name": "app", "tags": page}), 200, link,
                        content_type="application/json")

    httpserver.expect_request("/v2/app/tags/list").respond_with_handler(handler)
    client = client_for(httpserver)
    try:
        with pytest.raises(RegistryError, match="more than"):
            client.list_tags("app")
    finally:
        client.close()
    assert len(httpserver.log) <= MAX_TAGS // per_page + 1
