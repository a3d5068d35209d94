"""Hostile exec parameters: terminal sizes no terminal has are a 400, never a 500 (the
`api` fixture fails the test if the server logged a traceback)."""

from __future__ import annotations

import pytest

from tests.integration.apiserver import ApiServer
from tests.integration.test_api_containers_hostile import request

pytestmark = pytest.mark.integration


def test_exec_resize_out_of_range(api: ApiServer, api_busybox: str) -> None:
    client = api.client()
    client.containers.run("busybox", ["sleep", "3017"], detach=True, name="rs")
    exec_id = client.api.exec_create("rs", ["sleep", "3018"], tty=True)["Id"]
    client.api.exec_start(exec_id, detach=True, tty=True)
    assert request(api, "POST", f"/exec/{exec_id}/resize?h=40&w=100")[0] == 200
    for query in ("h=99999999999&w=1", "h=-1&w=80", "h=24&w=65536"):
        status, body = request(api, "POST", f"/exec/{exec_id}/resize?{query}")
        assert status == 400 and body["message"], (query, status, body)
    assert request(api, "POST", "/containers/rs/resize?h=99999999999&w=1")[0] == 400
    client.containers.get("rs").remove(force=True)
