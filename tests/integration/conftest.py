"""Integration fixtures: real docker-registry servers on 127.0.0.1, fixtures pushed by skopeo."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need
from tests.integration import apiserver, registry_server
from tests.integration.runtime_helpers import leftover_cgroups, make_bundle, mounts_under, runtime

FIXTURE_TAGS = ["busybox", "busybox-zstd", "busybox-plain", "multilayer", "multilayer-oci",
                "multiarch", "docker-v2"]


def _start(tmp_path_factory: pytest.TempPathFactory, auth: bool) -> registry_server.RegistryServer:
    need(registry_server.available(),
         f"{registry_server.DOCKER_REGISTRY} missing: apt-get install docker-registry")
    return registry_server.start_registry(tmp_path_factory.mktemp("registry"), auth=auth)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[registry_server.RegistryServer]:
    """Plain-HTTP docker-registry on 127.0.0.1:<free port> (delete enabled), session-wide:
    give each test its own repository name (e.g. from the test's name)."""
    server = _start(tmp_path_factory, auth=False)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def auth_registry(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[registry_server.RegistryServer]:
    """docker-registry with htpasswd Basic auth; ``.username``/``.password`` are valid."""
    server = _start(tmp_path_factory, auth=True)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pushed_fixtures(registry: registry_server.RegistryServer, fixture_layout: Path,
                    tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Every fixture image pushed to ``registry`` by skopeo (not by our code): tag →
    "127.0.0.1:PORT/fixtures/TAG:latest"."""
    need(shutil.which("skopeo") is not None, "skopeo missing: apt-get install skopeo")
    work = tmp_path_factory.mktemp("push")
    return registry_server.push_layout(fixture_layout, FIXTURE_TAGS, registry, "fixtures", work)


@pytest.fixture(scope="session")
def auth_pushed_busybox(auth_registry: registry_server.RegistryServer, fixture_layout: Path,
                        tmp_path_factory: pytest.TempPathFactory) -> str:
    """The ``busybox`` fixture pushed by skopeo (with the credentials) to ``auth_registry``:
    "127.0.0.1:PORT/fixtures/busybox:latest", readable only with Basic auth."""
    need(shutil.which("skopeo") is not None, "skopeo missing: apt-get install skopeo")
    work = tmp_path_factory.mktemp("push-auth")
    return registry_server.push_layout(fixture_layout, ["busybox"], auth_registry, "fixtures",
                                       work)["busybox"]


@pytest.fixture
def runtime_env(root: None, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(bundle, state root) for one test; afterwards nothing of ours may remain."""
    state_root = tmp_path / "state"
    bundle = make_bundle(tmp_path, ["true"])
    yield bundle, state_root
    for cid in (os.listdir(state_root) if state_root.exists() else []):
        runtime(state_root, "delete", "-f", cid)
    assert mounts_under(tmp_path) == []
    assert leftover_cgroups() == []
    assert not state_root.exists() or os.listdir(state_root) == []


@pytest.fixture
def ociroot(tmp_path: Path) -> Iterator[Path]:
    """An ociimg root for a CLI test; nothing may stay mounted under tmp_path after it."""
    root = tmp_path / "root"
    yield root
    leftover = mounts_under(tmp_path)
    # A test that failed half-way may leave containers running: their monitors would
    # outlive the run. Removed here; the test still fails below for their mounts.
    containers = sorted(p.name for p in (root / "containers").glob("[0-9a-f]*"))
    if leftover and containers:
        subprocess.run([sys.executable, "-m", "ociimg", "--root", str(root), "rm", "-f",
                        *containers], check=False, capture_output=True, timeout=120)
    for m in reversed(mounts_under(tmp_path)):
        subprocess.run(["umount", "-l", m], check=False)
    assert not leftover, f"mounts left behind: {leftover}"


@pytest.fixture
def api(ociroot: Path, tmp_path: Path) -> Iterator[apiserver.ApiServer]:
    """`ociimg serve` on a private socket and root; stopped, its containers removed and its
    log checked for tracebacks afterwards."""
    need(os.path.exists(apiserver.DOCKER_CLI), "docker CLI missing: apt-get install docker.io")
    server = apiserver.start_server(tmp_path, ociroot)
    try:
        yield server
    finally:
        apiserver.stop_server(server)


@pytest.fixture
def api_busybox(api: apiserver.ApiServer, fixture_layout: Path) -> str:
    """busybox in the server's store as docker.io/library/busybox:latest; returns "busybox"."""
    api.load_image(fixture_layout)
    return "busybox"
