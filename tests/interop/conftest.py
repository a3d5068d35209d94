"""The Engine API interop tests use the integration fixtures: `ociimg serve` (``api``,
``api_busybox``) and the loopback registries (``registry``, ``pushed_fixtures``)."""

from tests.integration.conftest import (  # noqa: F401 - fixtures, found by name
    api,
    api_busybox,
    ociroot,
    pushed_fixtures,
    registry,
)
