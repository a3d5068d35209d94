"""What the Engine API interop tests share: a docker CLI on a pty, host-side HTTP, ports."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
import urllib.error
import urllib.request

from tests.integration.apiserver import DOCKER_CLI, ApiServer
from tests.integration.registry_server import free_port
from tests.waiting import wait_until

__all__ = ["PtyDocker", "free_port", "http_get", "web_command", "wait_for_http"]


def web_command(text: str, port: int = 80) -> list[str]:
    """busybox httpd in the foreground serving ``text`` as / (httpd is PID 1: exec)."""
    return ["sh", "-c", f"mkdir -p /www && echo {text} > /www/index.html && "
            f"exec httpd -f -p {port} -h /www"]


def http_get(url: str, timeout: float = 5) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
        return response.read().decode()


def wait_for_http(url: str, timeout: float = 30) -> str:
    """The body of the first answer ``url`` gives (the server may still be starting)."""
    got: list[str] = []

    def answers() -> bool:
        try:
            got.append(http_get(url, timeout=2))
        except (urllib.error.URLError, OSError):
            return False
        return True

    wait_until(answers, f"{url} never answered", timeout=timeout)
    return got[0]


class PtyDocker:
    """The docker CLI with a pty as its terminal (`-it` needs one), as a user types."""

    def __init__(self, api: ApiServer, *args: str) -> None:
        self.api = api
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen([DOCKER_CLI, *args], stdin=slave, stdout=slave,
                                     stderr=slave, env=api.env(), start_new_session=True)
        os.close(slave)
        self.seen = b""
        self.eof = False  # the terminal's other side is closed: docker has exited

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def expect(self, needle: bytes, timeout: float = 30) -> bytes:
        """Read the terminal until ``needle`` shows up; returns all read so far."""
        deadline = time.monotonic() + timeout
        while needle not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0 or self.eof:
                raise AssertionError(
                    f"{needle!r} never came on the terminal; got {self.seen!r} (docker "
                    f"exit {self.proc.poll()})\nserver log: {self.api.server_log()[-3000:]}")
            if self._readable(min(left, 0.5)):
                self._read()
        return self.seen

    def wait(self, timeout: float = 30) -> int:
        """docker's exit code, draining the terminal meanwhile."""
        deadline = time.monotonic() + timeout
        while not self.eof and time.monotonic() < deadline:
            if self._readable(0.2):
                self._read()
        try:
            return self.proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"docker did not exit; terminal: {self.seen!r}") from None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)

    def _readable(self, timeout: float) -> bool:
        return bool(select.select([self.master], [], [], timeout)[0])

    def _read(self) -> None:
        try:
            chunk = os.read(self.master, 4096)
        except OSError:  # EIO: the other side is closed
            chunk = b""
        self.seen += chunk
        self.eof = not chunk
