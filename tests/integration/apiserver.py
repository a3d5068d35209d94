"""Running `ociimg serve` for a test and driving it with docker's own clients: the docker CLI
(Debian's docker.io, /usr/bin/docker: the client CI has), docker-py and docker-compose."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.runtime_helpers import REPO
from tests.waiting import wait_until

# Debian's CLI (API 1.41): the client CI installs. DOCKER_CLI overrides it (a newer CLI
# negotiates down to our API version).
DOCKER_CLI = os.environ.get("DOCKER_CLI", "/usr/bin/docker")


@dataclass
class ApiServer:
    root: Path
    socket: Path
    home: Path  # DOCKER_CONFIG for the CLI: never the invoking user's ~/.docker
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(default_factory=Path)

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.url, "DOCKER_CONFIG": str(self.home),
                "DOCKER_BUILDKIT": "0", "COMPOSE_DOCKER_CLI_BUILD": "0",
                "OCIIMG_ROOT": str(self.root), "PYTHONPATH": REPO, **extra}

    def docker(self, *args: str, check: bool = True, timeout: float = 120,
               input: str | bytes | None = None, cwd: Path | None = None,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """The docker CLI against this server; with ``check`` it must exit 0."""
        text = not isinstance(input, bytes)
        proc = subprocess.run([DOCKER_CLI, *args], env=self.env(**(env or {})),
                              capture_output=True, timeout=timeout, input=input, cwd=cwd,
                              text=text)
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {proc.returncode}\n"
                                 f"stdout: {proc.stdout!r}\nstderr: {proc.stderr!r}\n"
                                 f"server log: {self.server_log()[-3000:]}")
        return proc

    def client(self, **kwargs: Any) -> Any:
        """A docker-py client (PyPI ``docker``) on this server."""
        import docker

        return docker.DockerClient(base_url=self.url, timeout=120, **kwargs)

    def server_log(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ociimg", "--root", str(self.root), "serve", "-H",
                 self.url], env={**os.environ, "PYTHONPATH": REPO}, stdout=out, stderr=out,
                stdin=subprocess.DEVNULL)
        wait_until(self.answers, f"ociimg serve listening on {self.socket}", timeout=30,
                   proc=self.proc)

    def answers(self) -> bool:
        with socket.socket(socket.AF_UNIX) as sock:
            try:
                sock.connect(str(self.socket))
            except OSError:
                return False
        return True

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Stop the server; returns its exit code."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("ociimg serve did not stop within 30 s of "
                                 f"{signal.Signals(sig).name}") from None

    def load_image(self, layout: Path, tag: str = "busybox",
                   name: str = "docker.io/library/busybox:latest") -> str:
        """Put an image of an OCI layout into the server's store under ``name``."""
        subprocess.run([sys.executable, "-m", "ociimg", "--root", str(self.root), "copy",
                        f"oci:{layout}:{tag}", f"oci:{self.root}/store:{name}"],
                       env={**os.environ, "PYTHONPATH": REPO}, check=True,
                       capture_output=True, timeout=120)
        return name


def start_server(tmp_path: Path, root: Path) -> ApiServer:
    # AF_UNIX paths are limited to 108 bytes: pytest's tmp_path can be longer.
    sockdir = Path(subprocess.check_output(["mktemp", "-d", "/tmp/ociimg-api.XXXXXX"],
                                           text=True).strip())
    home = tmp_path / "docker-config"
    home.mkdir(exist_ok=True)
    server = ApiServer(root=root, socket=sockdir / "docker.sock", home=home,
                       log=tmp_path / "serve.log")
    try:
        server.start()
    except BaseException:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
        shutil.rmtree(sockdir, ignore_errors=True)
        raise
    return server


def stop_server(server: ApiServer) -> None:
    """Stop the server, remove what containers it left, and check it never tracebacked."""
    if server.proc is not None and server.proc.poll() is None:
        server.stop()
    subprocess.run([sys.executable, "-m", "ociimg", "--root", str(server.root), "rm", "-f",
                    "-a"], env={**os.environ, "PYTHONPATH": REPO}, capture_output=True,
                   timeout=120, check=False)
    shutil.rmtree(server.socket.parent, ignore_errors=True)
    log = server.server_log()
    assert "Traceback" not in log, f"ociimg serve logged a traceback:\n{log[-5000:]}"
