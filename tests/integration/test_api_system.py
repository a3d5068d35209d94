"""`ociimg serve`'s system endpoints with docker's own clients: `docker info` (no error,
no warning the host does not deserve), `docker events` (replay with --since/--until,
follow, filters, the legacy fields compose needs), `docker system df`; and hostile event
requests (malformed or huge filters, a client that never reads)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.apiserver import DOCKER_CLI, ApiServer
from tests.integration.cli_helpers import ociimg
from tests.integration.test_api_server import get, raw_request
from tests.waiting import wait_for_line, wait_until

pytestmark = pytest.mark.integration


def _cgroup_version() -> str:
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    v1 = any(" - cgroup " in m for m in mounts)
    return "1" if v1 else "2"


def test_docker_info_prints_our_facts_without_errors_or_warnings(api: ApiServer) -> None:
    proc = api.docker("info")
    assert proc.stderr.strip() == "", proc.stderr  # no WARNING lines, no ERROR lines
    out = proc.stdout
    for line in (" Storage Driver: overlay2", " Cgroup Driver: cgroupfs",
                 f" Cgroup Version: {_cgroup_version()}", " Default Runtime: ociimg",
                 f" Docker Root Dir: {api.root}", " OSType: linux", "  127.0.0.0/8",
                 f" Name: {socket.gethostname()}", "   Profile: default"):
        assert line + "\n" in out, (line, out)
    info = api.client().info()
    assert info["NCPU"] == len(os.sched_getaffinity(0)) and info["MemTotal"] > 0
    assert info["RegistryConfig"]["InsecureRegistryCIDRs"] == ["127.0.0.0/8"]
    assert info["IndexServerAddress"] == "https://index.docker.io/v1/"
    assert (info["Containers"], info["Images"]) == (0, 0)


def test_info_counts_containers_by_state_and_images(api: ApiServer, api_busybox: str) -> None:
    ociimg(api.root, "run", "-d", "--name", "up", api_busybox, "sleep", "300")
    ociimg(api.root, "run", "--name", "done", api_busybox, "true")
    out = api.docker("info", "--format", "{{.Containers}} {{.ContainersRunning}} "
                     "{{.ContainersPaused}} {{.ContainersStopped}} {{.Images}}").stdout
    assert out.split() == ["2", "1", "0", "1", "1"]


def _events(api: ApiServer, *args: str) -> list[dict]:
    out = api.docker("events", *args, "--format", "{{json .}}", timeout=60).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_events_replay_with_since_until_and_filters(api: ApiServer, api_busybox: str) -> None:
    start = time.time()
    ociimg(api.root, "run", "--name", "ev", "--label", "app=web", api_busybox, "sh", "-c",
           "exit 3", check=False)
    ociimg(api.root, "rm", "ev")
    end = time.time() + 0.5
    window = ["--since", f"{start:.9f}", "--until", f"{end:.9f}"]
    events = _events(api, *window)
    assert [e["Action"] for e in events] == ["create", "start", "die", "destroy"]
    for e in events:  # the legacy fields beside the new ones (trap 15: compose needs them)
        assert e["status"] == e["Action"] and e["id"] == e["Actor"]["ID"]
        assert e["from"] == "busybox:latest" and e["Type"] == "container"
        assert e["scope"] == "local" and e["time"] == e["timeNano"] // 10**9
        assert e["Actor"]["Attributes"]["name"] == "ev"
        assert e["Actor"]["Attributes"]["app"] == "web"
        assert start <= e["timeNano"] / 1e9 <= end
    assert events[2]["Actor"]["Attributes"]["exitCode"] == "3"
    assert [e["Action"] for e in _events(api, *window, "--filter", "event=die")] == ["die"]
    assert len(_events(api, *window, "--filter", "container=ev")) == 4
    assert len(_events(api, *window, "--filter", f"container={events[0]['id'][:12]}")) == 4
    assert len(_events(api, *window, "--filter", "label=app=web", "--filter",
                       "image=busybox")) == 4
    assert _events(api, *window, "--filter", "label=app=db") == []
    assert _events(api, *window, "--filter", "type=network") == []
    assert _events(api, *window, "--filter", "container=other") == []
    # --until before anything happened: nothing, and the stream ends by itself.
    assert _events(api, "--since", f"{start - 60:.0f}", "--until", f"{start - 30:.0f}") == []
    # docker-py: the same stream, decoded.
    got = list(api.client().events(since=int(start), until=int(end) + 1, decode=True,
                                   filters={"event": ["create", "destroy"]}))
    assert [e["status"] for e in got] == ["create", "destroy"]


def test_events_follow_new_ones_and_end_at_until(api: ApiServer, api_busybox: str) -> None:
    follower = subprocess.Popen([DOCKER_CLI, "events", "--filter", "type=container"],
                                env=api.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # The stream's headers arrive at once; nothing from before it started.
        ociimg(api.root, "run", "--name", "live", api_busybox, "true")
        seen = wait_for_line(follower, " container die ")
        assert " container create " in seen and "exitCode=0" in seen and "name=live" in seen
        assert api.client().info()["NEventsListener"] == 1
    finally:
        follower.send_signal(signal.SIGTERM)
        follower.wait(timeout=30)
    # The client went away without a word: its stream ends on the server too.
    wait_until(lambda: api.client().info()["NEventsListener"] == 0, "the stream lingers")
    # An until in the future: followed, then the server ends the stream itself.
    until = time.time() + 2
    t0 = time.monotonic()
    proc = api.docker("events", "--until", f"{until:.3f}", timeout=30)
    assert proc.returncode == 0 and 1.0 < time.monotonic() - t0 < 10
    assert get(api, "/_ping")[0] == 200


def test_network_and_volume_actions_are_events(api: ApiServer) -> None:
    start = time.time()
    api.docker("network", "create", "evnet")
    api.docker("volume", "create", "evvol")
    api.docker("network", "rm", "evnet")
    api.docker("volume", "rm", "evvol")
    window = ["--since", f"{start:.9f}", "--until", f"{time.time() + 0.5:.9f}"]
    net = _events(api, *window, "--filter", "type=network")
    assert [(e["Action"], e["Actor"]["Attributes"]["name"]) for e in net] == [
        ("create", "evnet"), ("destroy", "evnet")]
    vol = _events(api, *window, "--filter", "volume=evvol")
    assert [(e["Type"], e["Action"], e["Actor"]["ID"]) for e in vol] == [
        ("volume", "create", "evvol"), ("volume", "destroy", "evvol")]


def test_image_tag_untag_delete_are_events(api: ApiServer, api_busybox: str) -> None:
    start = time.time()
    image_id = api.docker("inspect", "--format", "{{.Id}}", api_busybox).stdout.strip()
    api.docker("tag", api_busybox, "evimg:1")
    api.docker("rmi", "evimg:1")
    api.docker("rmi", "-f", api_busybox)
    window = ["--since", f"{start:.9f}", "--until", f"{time.time() + 0.5:.9f}"]
    events = _events(api, *window, "--filter", "type=image")
    assert [(e["Action"], e["status"], e["Actor"]["ID"], e["Actor"]["Attributes"]["name"])
            for e in events] == [
        ("tag", "tag", image_id, "evimg:1"), ("untag", "untag", image_id, "evimg:1"),
        ("untag", "untag", image_id, "busybox:latest"),
        ("delete", "delete", image_id, image_id)]
    assert _events(api, *window, "--filter", "image=evimg:1")  # docker's image= filter


@pytest.mark.parametrize("query,needle", [
    ("filters=%7Bnot-json", "invalid filter"),
    ("filters=%5B1%2C2%5D", "invalid filter"),
    ("filters=%7B%22colour%22%3A%5B%22x%22%5D%7D", "invalid filter 'colour'"),
    ("filters=%7B%22type%22%3A%5B%22spaceship%22%5D%7D", "Invalid filter 'type=spaceship'"),
    ("since=yesterday-ish", "invalid value for since"),
    ("until=nan", "invalid value for until"),
    ("since=200&until=100", "cannot be after `until` time (100)"),
])
def test_events_refuses_bad_parameters_with_json_errors(api: ApiServer, query: str,
                                                         needle: str) -> None:
    status, headers, body = get(api, f"/v1.41/events?{query}")
    assert status == 400 and headers["content-type"].startswith("application/json")
    assert needle in json.loads(body)["message"]


def test_events_huge_filters_get_a_clean_error(api: ApiServer) -> None:
    huge = "%5B%22" + "a" * 200_000 + "%22%5D"
    status, _, _ = get(api, f"/events?filters=%7B%22label%22%3A{huge}%7D")
    assert 400 <= status < 500
    status, _, body = get(api, "/events?since=0&until=1&filters=" + "%7B%22label%22%3A%5B"
                          + "%2C".join(["%22k%3Dv%22"] * 500) + "%5D%7D")
    assert status == 200 and body.strip() in (b"", b"0")  # chunked, empty: nothing matched
    assert get(api, "/_ping")[0] == 200


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_client_that_never_reads_holds_the_server_to_bounded_memory(
        api: ApiServer) -> None:
    # 60 MiB of past events (as the monitors write them), replayed to a reader that
    # reads nothing: the server must wait on the socket, not buffer the log.
    log = api.root / "containers" / ".events"
    log.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"Type": "container", "Action": "start", "id": "a" * 64,
                       "Actor": {"ID": "a" * 64, "Attributes": {"name": "x", "pad": "p" * 400}},
                       "time": 1, "timeNano": 1_000_000_000}).encode() + b"\n"
    with open(log, "wb") as f:
        f.write(line * ((60 << 20) // len(line)))
    assert api.proc is not None
    before = _rss_kib(api.proc.pid)
    sock = socket.socket(socket.AF_UNIX)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(str(api.socket))
    try:
        sock.sendall(b"GET /v1.41/events?since=0 HTTP/1.1\r\nHost: d\r\n\r\n")
        wait_until(lambda: sock.recv(1, socket.MSG_PEEK), "the stream never started")
        # It has sent what the socket holds and waits there: pings still answer, and its
        # memory stays flat however long it waits (sampled over 100 round trips).
        samples = []
        for _ in range(100):
            assert get(api, "/_ping")[0] == 200
            samples.append(_rss_kib(api.proc.pid))
        assert max(samples) - before < 20 << 10, (before, max(samples))  # 60 MiB log
    finally:
        sock.close()
    # The abandoned stream ends; the server lives on.
    wait_until(lambda: api.client().info()["NEventsListener"] == 0, "the stream lingers")
    status, _, body = raw_request(api, b"GET /_ping HTTP/1.0\r\n\r\n")
    assert (status, body) == (200, b"OK")


def test_system_df_in_dockers_shape(api: ApiServer, api_busybox: str) -> None:
    ociimg(api.root, "run", "--name", "wrote", api_busybox, "sh", "-c",
           "head -c 300000 /dev/zero > /big")
    api.docker("volume", "create", "dfvol")
    out = api.docker("system", "df").stdout.splitlines()
    rows = {line.split()[0]: line.split() for line in out[1:]}
    assert rows["Images"][1:3] == ["1", "1"]
    assert rows["Containers"][1:3] == ["1", "0"]
    assert rows["Local"][2:4] == ["1", "0"]
    df = api.client().df()
    assert df["LayersSize"] > 0 and df["Images"][0]["RepoTags"] == ["busybox:latest"]
    assert df["Images"][0]["Containers"] == 1 and df["Images"][0]["Created"] > 0
    (c,) = df["Containers"]
    assert c["Names"] == ["/wrote"] and c["State"] == "exited" and c["SizeRw"] >= 300000
    (v,) = df["Volumes"]
    assert v["Name"] == "dfvol" and v["UsageData"]["RefCount"] == 0
    assert df["BuildCache"] == []
    verbose = api.docker("system", "df", "-v").stdout
    assert "dfvol" in verbose and "wrote" in verbose
