"""Lifecycle gaps closed for real, as root: `wait` on a container with a restart policy
returns at its next exit (docker), health checks are skipped while paused and killed past
their timeout, and an attach client typing into a container that never reads its stdin
does not stop the monitor copying the container's output."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from ociimg.containers import attach
from tests.integration.cli_helpers import ociimg
from tests.waiting import wait_until

pytestmark = pytest.mark.usefixtures("root")


@pytest.fixture
def image(fixture_layout: Path) -> str:
    return f"oci:{fixture_layout}:busybox"


def _inspect(root: Path, name: str) -> dict:
    return json.loads(ociimg(root, "container", "inspect", name).stdout)[0]


def _cid(root: Path, name: str) -> str:
    return str(_inspect(root, name)["Id"])


def test_wait_returns_at_the_next_exit_of_a_restarting_container(ociroot: Path,
                                                                 image: str) -> None:
    # Each run exits with its own number (the count lives in the container's rootfs).
    ociimg(ociroot, "run", "-d", "--name", "flap", "--network", "none", "--restart", "always",
           image, "sh", "-c", 'n=$(( $(cat /n 2>/dev/null || echo 0) + 1 )); echo $n > /n; '
           "sleep 0.3; exit $n")
    try:
        first = int(ociimg(ociroot, "wait", "flap", timeout=30).stdout)
        second = int(ociimg(ociroot, "wait", "flap", timeout=30).stdout)
        assert 1 <= first < second
        # It goes on restarting: wait did not wait for a final stop.
        wait_until(lambda: _inspect(ociroot, "flap")["RestartCount"] >= second, "restarted")
        ociimg(ociroot, "stop", "-t", "1", "flap")
        final = _inspect(ociroot, "flap")["State"]["ExitCode"]
        assert int(ociimg(ociroot, "wait", "flap", timeout=30).stdout) == final
    finally:
        ociimg(ociroot, "rm", "-f", "flap")


def test_a_health_check_past_its_timeout_is_killed(ociroot: Path, image: str) -> None:
    ociimg(ociroot, "run", "-d", "--name", "hung", "--network", "none",
           "--health-cmd", "exec sleep 100", "--health-interval", "200ms",
           "--health-timeout", "300ms", "--health-retries", "100", image, "sleep", "300")
    try:
        def timeouts() -> int:
            log = (_inspect(ociroot, "hung")["State"].get("Health") or {}).get("Log") or []
            return sum(e["Output"] == "Health check exceeded timeout" for e in log)
        wait_until(lambda: timeouts() >= 3, "three checks timed out")
        top = ociimg(ociroot, "top", "hung").stdout.splitlines()
        # Left alone, every timed-out check would still sleep in the container; at most
        # the one running now may.
        assert sum("sleep 100" in line for line in top) <= 1, top
    finally:
        ociimg(ociroot, "rm", "-f", "hung")


def test_health_checks_are_skipped_while_paused(ociroot: Path, image: str) -> None:
    ociimg(ociroot, "run", "-d", "--name", "nap", "--network", "none", "--health-cmd", "true",
           "--health-interval", "100ms", "--health-timeout", "500ms", image, "sleep", "300")
    try:
        def health() -> dict:
            return _inspect(ociroot, "nap")["State"].get("Health") or {}
        wait_until(lambda: health().get("Status") == "healthy", "healthy")
        ociimg(ociroot, "pause", "nap")
        before = health()
        # A window of many intervals: a check exec'd into the frozen container would hang
        # and time out (500 ms) within it. Absence needs a window, no event marks it.
        time.sleep(1.5)
        assert health() == before
        ociimg(ociroot, "unpause", "nap")
        wait_until(lambda: health()["Log"][-1]["End"] > before["Log"][-1]["End"],
                   "checks resumed")
        assert health()["Status"] == "healthy"
    finally:
        ociimg(ociroot, "rm", "-f", "nap")


def test_input_to_a_container_that_never_reads_does_not_stop_its_output(
        ociroot: Path, image: str) -> None:
    ociimg(ociroot, "run", "-di", "--name", "deaf", "--network", "none", image, "sh", "-c",
           "while :; do echo tick; sleep 0.05; done")
    try:
        sock = attach.connect(str(ociroot / "containers" / _cid(ociroot, "deaf")))
        sent = threading.Event()

        def send() -> None:  # 4 MiB: far past the pipe and the monitor's held input
            for _ in range(64):
                sock.sendall(b"0" + b"x" * 65536)
            sent.set()
        threading.Thread(target=send, daemon=True).start()
        wait_until(sent.is_set, "the monitor stopped taking input")

        def ticks() -> int:
            return ociimg(ociroot, "logs", "deaf").stdout.count("tick")
        now = ticks()
        wait_until(lambda: ticks() >= now + 5, "output kept flowing")
        sock.close()
    finally:
        ociimg(ociroot, "rm", "-f", "deaf")
