"""testcontainers-python (PyPI testcontainers 4.x) against `ociimg serve`: a container
started through the socket, and the library's wait for a log line."""

from __future__ import annotations

import pytest

from tests.integration.apiserver import ApiServer


@pytest.fixture
def testcontainers_env(api: ApiServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """testcontainers finds the server through DOCKER_HOST (docker.from_env())."""
    from testcontainers.core.config import testcontainers_config

    for key, value in api.env().items():
        if key.startswith("DOCKER_"):
            monkeypatch.setenv(key, value)
    # Ryuk is testcontainers' reaper: a testcontainers/ryuk container pulled from Docker
    # Hub that bind-mounts the Docker socket and removes the session's containers when
    # the session's connection drops. These tests talk to no registry but loopback ones,
    # and the `api` fixture's teardown removes every container already.
    monkeypatch.setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
    monkeypatch.setattr(testcontainers_config, "_ryuk_disabled", None)  # re-read the env


def test_container_starts_and_is_waited_for_by_its_log_line(
        api: ApiServer, api_busybox: str, testcontainers_env: None) -> None:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    container = (DockerContainer(api_busybox)
                 .with_command(["sh", "-c", "echo starting; echo ready-for-tests >&2; "
                                "exec sleep 600"])
                 .with_env("GREETING", "hi")
                 .waiting_for(LogMessageWaitStrategy("ready-for-tests")
                              .with_startup_timeout(60).with_poll_interval(0.1)))
    with container as started:
        assert started.get_logs() == (b"starting\n", b"ready-for-tests\n")
        wrapped = started.get_wrapped_container()
        wrapped.reload()
        assert wrapped.status == "running"
        result = started.exec(["sh", "-c", "echo $GREETING"])
        assert (result.exit_code, result.output) == (0, b"hi\n")
        cid = started.get_container_id()
        assert api.docker("ps", "-q", "--no-trunc").stdout.split() == [cid]
    assert api.docker("ps", "-aq").stdout == ""  # stop() removed it


def test_container_that_exits_first_is_reported(api: ApiServer, api_busybox: str,
                                                testcontainers_env: None) -> None:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    container = (DockerContainer(api_busybox)
                 .with_command(["sh", "-c", "echo something-else; exit 3"])
                 .waiting_for(LogMessageWaitStrategy("never-printed")
                              .with_startup_timeout(60).with_poll_interval(0.1)))
    with pytest.raises(RuntimeError, match=r"Container exited .*exit code: 3"):
        container.start()
    container.stop()
    assert api.docker("ps", "-aq").stdout == ""
