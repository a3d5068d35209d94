"""A build context from anywhere through `docker build` against `ociimg serve`: its
Containerfile cannot give RUN the host's network (and so the host's loopback, where the
API may listen on TCP) unless the one who runs the build allows it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.apiserver import ApiServer

pytestmark = pytest.mark.integration


def test_run_network_host_needs_the_builds_consent(api: ApiServer, api_busybox: str,
                                                   tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(
        "FROM busybox\nRUN --network=host ls /sys/class/net > /ifaces\n")
    refused = api.docker("build", "-t", "hostnet", str(tmp_path), check=False)
    assert refused.returncode != 0
    assert "RUN --network=host: the build was not given the host's network" in \
        refused.stdout + refused.stderr
    assert api.docker("images", "-q", "hostnet").stdout == ""
    api.docker("build", "--network", "host", "-t", "hostnet", str(tmp_path))
    assert api.docker("images", "-q", "hostnet").stdout.strip()
    api.docker("rmi", "hostnet")
