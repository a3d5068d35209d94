"""attach, logs and resize through `ociimg serve`: docker's CLI and docker-py as clients,
hand-made requests only for protocol edges (half-close timing, garbage, a client that
never reads)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.integration.apiserver import ApiServer
from tests.integration.streamclient import Hijack, demux, make_container, start, wait

pytestmark = pytest.mark.integration


def test_attach_before_start_loses_no_output(api: ApiServer, api_busybox: str,
                                             fixture_layout: Path) -> None:
    c = make_container(api, fixture_layout, "sh", "-c", "echo out; echo err >&2; exit 3")
    h = Hijack(api, f"/v1.41/containers/{c.id}/attach?stream=1&stdout=1&stderr=1")
    assert h.status == 101
    assert h.header("Content-Type") == "application/vnd.docker.raw-stream"
    assert h.header("Upgrade") == "tcp" and h.header("Transfer-Encoding") is None
    start(api, c)
    out, err = demux(h.read_all())
    assert (out, err) == (b"out\n", b"err\n")
    assert wait(api, c) == 3


def test_attach_multiplexed_type_from_1_42_and_raw_with_a_tty(
        api: ApiServer, api_busybox: str, fixture_layout: Path) -> None:
    c = make_container(api, fixture_layout, "echo", "hi")
    h = Hijack(api, f"/v1.43/containers/{c.id}/attach?stream=1&stdout=1", upgrade=False)
    assert h.status == 200
    assert h.header("Content-Type") == "application/vnd.docker.multiplexed-stream"
    start(api, c)
    assert demux(h.read_all()) == (b"hi\n", b"")
    t = make_container(api, fixture_layout, "echo", "tty", tty=True)
    h = Hijack(api, f"/v1.43/containers/{t.id}/attach?stream=1&stdout=1")
    assert h.header("Content-Type") == "application/vnd.docker.raw-stream"
    start(api, t)
    assert h.read_all() == b"tty\r\n"


def test_attach_stdin_half_close_keeps_output(api: ApiServer, api_busybox: str,
                                              fixture_layout: Path) -> None:
    """SHUT_WR closes the container's stdin, the output still arrives (traps 6, 7)."""
    c = make_container(api, fixture_layout, "sh", "-c", "cat; echo done",
                       interactive=True)
    h = Hijack(api, f"/containers/{c.id}/attach?stream=1&stdin=1&stdout=1&stderr=1")
    start(api, c)
    h.sock.sendall(b"data\n" * 1000)
    h.sock.shutdown(socket.SHUT_WR)
    out, _ = demux(h.read_all())
    assert out == b"data\n" * 1000 + b"done\n"
    assert wait(api, c) == 0


def test_attach_errors_before_the_hijack(api: ApiServer, api_busybox: str,
                                         fixture_layout: Path) -> None:
    h = Hijack(api, "/containers/nosuch/attach?stream=1&stdout=1")
    assert h.status == 404 and b"No such container: nosuch" in h.body()
    c = make_container(api, fixture_layout, "true")
    h = Hijack(api, f"/containers/{c.id}/attach?stream=1&detachKeys=ctrl-foo")
    assert h.status == 400 and b"Invalid detach keys" in h.body()


def test_attach_to_an_exited_container_follows_its_next_run(
        api: ApiServer, api_busybox: str, fixture_layout: Path) -> None:
    """docker start -a: attach, then start; only the new run's output, then the end."""
    c = make_container(api, fixture_layout, "sh", "-c", "echo run; exit 4")
    start(api, c)
    assert wait(api, c) == 4
    h = Hijack(api, f"/containers/{c.id}/attach?stream=1&stdout=1&stderr=1")
    start(api, c)
    assert demux(h.read_all()) == (b"run\n", b"")
    replay = Hijack(api, f"/containers/{c.id}/attach?logs=1&stdout=1")
    assert demux(replay.read_all()) == (b"run\nrun\n", b"")


def test_input_sent_before_start_reaches_the_container(
        api: ApiServer, api_busybox: str, fixture_layout: Path) -> None:
    """Input (and its end) typed before the container starts waits for its monitor."""
    c = make_container(api, fixture_layout, "cat", interactive=True)
    h = Hijack(api, f"/containers/{c.id}/attach?stream=1&stdin=1&stdout=1")
    h.sock.sendall(b"early\n")
    h.sock.sendall(b"later\n")
    h.sock.shutdown(socket.SHUT_WR)
    start(api, c)
    assert demux(h.read_all()) == (b"early\nlater\n", b"")
    assert wait(api, c) == 0


def test_docker_py_attach_replay_arriving_with_the_head_is_not_lost(
        api: ApiServer, api_busybox: str, fixture_layout: Path) -> None:
    """docker-py reads the 101 through a buffered file and the stream from the raw
    socket: a replay sent before it read the head would vanish in that buffer."""
    c = make_container(api, fixture_layout, "sh", "-c", "echo one; echo two >&2")
    start(api, c)
    assert wait(api, c) == 0
    low = api.client().api
    for _ in range(10):
        assert low.attach(c.id, stdout=True, stderr=True, logs=True, demux=True) == \
            (b"one\n", b"two\n")


def test_websocket_attach(api: ApiServer, api_busybox: str, fixture_layout: Path) -> None:
    """/attach/ws (no client of docker's uses it: aiohttp's websocket client here):
    raw output in binary messages from 1.42, input from messages."""
    import asyncio

    import aiohttp

    c = make_container(api, fixture_layout, "sh", "-c", "read x; echo got $x; echo e >&2",
                       interactive=True, start=True)

    async def talk(version: str, stream: int = 1) -> list[tuple[str, bytes]]:
        conn = aiohttp.UnixConnector(path=str(api.socket))
        async with aiohttp.ClientSession(connector=conn) as session, session.ws_connect(
                f"http://docker/{version}/containers/{c.id}/attach/ws"
                f"?stream={stream}&stdin=1&stdout=1&stderr=1&logs=1") as ws:
            await ws.send_bytes(b"hello\n")
            got = []
            async for msg in ws:
                data = msg.data if isinstance(msg.data, bytes) else msg.data.encode()
                got.append((msg.type.name, data))
            return got

    got = asyncio.run(talk("v1.43"))
    assert {kind for kind, _ in got} == {"BINARY"}
    assert b"".join(data for _, data in got) in (b"got hello\ne\n", b"e\ngot hello\n")
    old = asyncio.run(talk("v1.41", stream=0))  # exited: the log replayed, as text
    assert {kind for kind, _ in old} == {"TEXT"}
    assert b"".join(data for _, data in old) in (b"got hello\ne\n", b"e\ngot hello\n")


def test_attach_follows_a_restarted_program_and_its_new_stdin(
        api: ApiServer, api_busybox: str, fixture_layout: Path) -> None:
    """The monitor drops its attach clients at the end of each run: the attach connects
    again for the next run of a restart policy, and input goes to the new stdin."""
    from ociimg.containers.policies import RestartPolicy
    c = make_container(api, fixture_layout, "sh", "-c", "read x; echo got $x; exit 1",
                       interactive=True, restart=RestartPolicy("on-failure", 1))
    h = Hijack(api, f"/containers/{c.id}/attach?stream=1&stdin=1&stdout=1")
    start(api, c)
    h.sock.sendall(b"one\n")
    seen = b""
    while b"got one\n" not in seen:  # the first run's answer, then its exit
        seen += h.sock.recv(65536)
    from ociimg.containers import ContainerManager
    from tests.waiting import wait_until
    mgr = ContainerManager(api.root)
    # Input typed while the first run dies goes to it (as with docker): wait for the next.
    wait_until(lambda: mgr.run_record(c).get("restartCount") == 1
               and mgr.status(c).status == "running", "the program's second run")
    h.sock.sendall(b"two\n")
    h.sock.shutdown(socket.SHUT_WR)
    assert demux(seen + h.read_all())[0] == b"got one\ngot two\n"
    assert wait(api, c) == 1
