"""Races between clients of one `ociimg serve`: concurrent creates and renames to one name
(exactly one wins); start and rm -f of one container at once (each a client's answer, no
hang, nothing left on disk or running)."""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.integration.apiserver import ApiServer
from tests.integration.test_api_containers_hostile import containers_on_disk, create, request

pytestmark = pytest.mark.integration

N = 8
ROUNDS = 10
MARK = str(100_000 + os.getpid())  # a sleep nobody else runs: an orphan of ours shows


def test_concurrent_creates_of_one_name_one_wins(api: ApiServer, api_busybox: str) -> None:
    doc = {"Image": "busybox", "Cmd": ["true"]}
    with ThreadPoolExecutor(N) as pool:
        answers = list(pool.map(lambda _: create(api, doc, "same"), range(N)))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [201] + [409] * (N - 1), answers
    ids = [c["Id"] for c in api.client().api.containers(all=True)]
    assert len(ids) == 1
    assert sorted(containers_on_disk(api)) == sorted([ids[0], "same"])


def test_concurrent_renames_to_one_name_one_wins(api: ApiServer, api_busybox: str) -> None:
    made = [create(api, {"Image": "busybox", "Cmd": ["true"]}, f"r{i}")[1]["Id"]
            for i in range(N)]
    with ThreadPoolExecutor(N) as pool:
        answers = list(pool.map(
            lambda cid: request(api, "POST", f"/containers/{cid}/rename?name=target"), made))
    assert sorted(status for status, _ in answers) == [204] + [409] * (N - 1), answers
    names = sorted(c["Names"][0] for c in api.client().api.containers(all=True))
    assert names.count("/target") == 1 and len(names) == N
    assert len(containers_on_disk(api)) == 2 * N  # one name link per container


def test_start_and_rm_of_one_container_at_once(api: ApiServer, api_busybox: str) -> None:
    for round_ in range(ROUNDS):
        status, body = create(api, {"Image": "busybox", "Cmd": ["sleep", MARK]}, f"x{round_}")
        assert status == 201, body
        cid = body["Id"]
        calls = [("POST", f"/containers/{cid}/start"), ("DELETE", f"/containers/{cid}?force=1"),
                 ("POST", f"/containers/{cid}/start"), ("GET", f"/containers/{cid}/json")]
        with ThreadPoolExecutor(len(calls)) as pool:
            answers = list(pool.map(lambda c: request(api, *c), calls))
        for (method, path), (status, body) in zip(calls, answers, strict=True):
            # Each one ran before or after the removal: a client's answer, never a 500.
            assert status < 500, (method, path, status, body)
        assert containers_on_disk(api) == [], containers_on_disk(api)
        assert not _running(MARK)


def _running(mark: str) -> bool:
    """A process of a container of ours outlived its removal."""
    found = subprocess.run(["pgrep", "-f", f"^sleep {mark}$"], capture_output=True,
                           check=False)
    return found.returncode == 0


def _attach_and_read(api: ApiServer, cid: str) -> int:
    """A hijacked attach read until the server ends it; its status."""
    import socket
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(60)
        sock.connect(str(api.socket))
        sock.sendall(f"POST /containers/{cid}/attach?stream=1&stdout=1&stderr=1&logs=1 "
                     "HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
                     "Content-Length: 0\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]) if data else 0


def test_attach_exec_and_rm_of_one_container_at_once(api: ApiServer, api_busybox: str) -> None:
    for round_ in range(ROUNDS):
        status, body = create(api, {"Image": "busybox", "Cmd": ["sleep", MARK]}, f"a{round_}")
        assert status == 201, body
        cid = body["Id"]
        assert request(api, "POST", f"/containers/{cid}/start")[0] == 204
        with ThreadPoolExecutor(4) as pool:
            attaches = [pool.submit(_attach_and_read, api, cid) for _ in range(2)]
            execs = pool.submit(request, api, "POST", f"/containers/{cid}/exec")
            removed = pool.submit(request, api, "DELETE", f"/containers/{cid}?force=1")
            assert removed.result()[0] == 204
            assert all(a.result() in (101, 200, 404, 409) for a in attaches)
            assert execs.result()[0] < 500
        assert containers_on_disk(api) == []
        assert not _running(MARK)
