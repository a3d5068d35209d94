"""Start Debian's docker-registry (distribution 2.8) on 127.0.0.1 for tests and benchmarks.

Used by tests/integration/conftest.py and bench/. Independent of ociimg: the registry is
a reference server, and fixtures are pushed to it with skopeo, so a pull test never
relies on our own push.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

DOCKER_REGISTRY = "/usr/bin/docker-registry"
START_TIMEOUT = 20.0


class RegistryStartError(RuntimeError):
    """docker-registry did not come up; the message carries the tail of its log."""


@dataclass
class RegistryServer:
    """A running docker-registry. ``host`` is "127.0.0.1:PORT" (what goes in a reference)."""

    host: str
    url: str
    root: Path
    process: subprocess.Popen[bytes]
    username: str | None = None
    password: str | None = None
    log_path: Path = field(default_factory=Path)

    @property
    def auth(self) -> tuple[str, str] | None:
        return (self.username, self.password) if self.username and self.password else None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def available() -> bool:
    return os.access(DOCKER_REGISTRY, os.X_OK)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def htpasswd_line(username: str, password: str) -> str:
    """One bcrypt htpasswd entry: distribution's htpasswd auth accepts only bcrypt."""
    try:
        import bcrypt
    except ImportError:
        htpasswd = shutil.which("htpasswd")
        if not htpasswd:
            raise RegistryStartError(
                "no bcrypt: pip install bcrypt (test extra) or apt-get install apache2-utils"
            ) from None
        out = subprocess.run([htpasswd, "-nbB", username, password], check=True,
                             capture_output=True, text=True).stdout
        return out.strip()
    # Cost 4 is Go bcrypt's minimum: every request re-checks the hash, keep it cheap.
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    return f"{username}:{hashed}"


def write_config(root: Path, port: int, htpasswd: Path | None) -> Path:
    # JSON is YAML: no yaml dependency needed for the registry's config file.
    config: dict = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(root / "data")},
                    "delete": {"enabled": True},
                    "maintenance": {"uploadpurging": {"enabled": False}}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)},
    }
    if htpasswd is not None:
        config["auth"] = {"htpasswd": {"realm": "ociimg-test", "path": str(htpasswd)}}
    path = root / "config.yml"
    path.write_text(json.dumps(config, indent=2))
    return path


def wait_ready(server: RegistryServer, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RegistryStartError(f"docker-registry exited with {server.process.returncode}:"
                                     f"\n{server.log_tail()}")
        try:
            resp = requests.get(f"{server.url}/v2/", timeout=1)
            if resp.status_code in (200, 401):
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    server.stop()
    raise RegistryStartError(f"docker-registry on {server.host} not ready after {timeout}s:"
                             f"\n{server.log_tail()}")


def start_registry(root: Path, auth: bool = False, attempts: int = 3) -> RegistryServer:
    """Start docker-registry with storage under ``root``; with ``auth``, htpasswd Basic auth
    with a generated user and password. Retries on a port lost to a race."""
    if not available():
        raise RegistryStartError(f"{DOCKER_REGISTRY} missing: apt-get install docker-registry")
    root.mkdir(parents=True, exist_ok=True)
    username = password = None
    htpasswd = None
    if auth:
        username, password = "tester", secrets.token_urlsafe(12)
        htpasswd = root / "htpasswd"
        htpasswd.write_text(htpasswd_line(username, password) + "\n")
    # REGISTRY_* variables override the config file: drop any inherited ones.
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    for attempt in range(attempts):
        port = free_port()
        config = write_config(root, port, htpasswd)
        log_path = root / "registry.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen([DOCKER_REGISTRY, "serve", str(config)], stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        server = RegistryServer(f"127.0.0.1:{port}", f"http://127.0.0.1:{port}", root, proc,
                                username, password, log_path)
        try:
            wait_ready(server)
            return server
        except RegistryStartError:
            server.stop()
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


# Pushing fixtures with skopeo (a reference client, independent of ociimg) ------------
POLICY = {"default": [{"type": "insecureAcceptAnything"}]}


def skopeo_copy(src: str, dest: str, work: Path, all_images: bool = False,
                dest_creds: str | None = None) -> None:
    policy = work / "skopeo-policy.json"
    if not policy.exists():
        policy.write_text(json.dumps(POLICY))
    # --preserve-digests: skopeo would otherwise gzip the uncompressed busybox-plain layer.
    cmd = ["skopeo", "--policy", str(policy), "copy", "--quiet", "--preserve-digests",
           "--dest-tls-verify=false", "--src-tls-verify=false"]
    if all_images:
        cmd.append("--all")
    if dest_creds:
        cmd += ["--dest-creds", dest_creds]
    result = subprocess.run(cmd + [src, dest], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"skopeo copy {src} {dest} failed: {result.stderr.strip()}")


def layout_to_dir_transport(layout: Path, tag: str, dest: Path) -> Path:
    """Re-express one tagged image of an OCI layout in skopeo's ``dir:`` format.

    containers/image's oci: transport only lists OCI-typed index entries, so a Docker v2
    manifest in a layout is invisible to it; ``dir:`` keeps the manifest bytes as they are.
    """
    index = json.loads((layout / "index.json").read_bytes())
    desc = next(d for d in index["manifests"]
                if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag)
    blobs = layout / "blobs" / "sha256"
    manifest_bytes = (blobs / desc["digest"].split(":", 1)[1]).read_bytes()
    manifest = json.loads(manifest_bytes)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "manifest.json").write_bytes(manifest_bytes)
    (dest / "version").write_text("Directory Transport Version: 1.1\n")
    for blob in [manifest["config"], *manifest["layers"]]:
        hexdigest = blob["digest"].split(":", 1)[1]
        shutil.copyfile(blobs / hexdigest, dest / hexdigest)
    return dest


def push_layout(layout: Path, tags: list[str], server: RegistryServer, repo_prefix: str,
                work: Path) -> dict[str, str]:
    """Push tagged images of ``layout`` to ``server`` as HOST/PREFIX/TAG:latest.

    Returns tag → reference string. Indexes are pushed whole (``--all``).
    """
    index = json.loads((layout / "index.json").read_bytes())
    types = {d["annotations"]["org.opencontainers.image.ref.name"]: d["mediaType"]
             for d in index["manifests"] if "org.opencontainers.image.ref.name"
             in d.get("annotations", {})}
    creds = f"{server.username}:{server.password}" if server.auth else None
    refs = {}
    for tag in tags:
        ref = f"{server.host}/{repo_prefix}/{tag}:latest"
        media_type = types[tag]
        if media_type.startswith("application/vnd.oci."):
            src = f"oci:{layout}:{tag}"
        else:
            src = f"dir:{layout_to_dir_transport(layout, tag, work / f'dir-{tag}')}"
        skopeo_copy(src, f"docker://{ref}", work, all_images="index" in media_type,
                    dest_creds=creds)
        refs[tag] = ref
    return refs
