"""Shared test policy.

* Tests are marked by directory: tests/unit → ``unit``, tests/integration →
  ``integration``, tests/interop → ``interop``.
* A unit test may not request the ``root``, ``registry`` or ``mounted`` fixtures
  (pip's rule): unit tests run anywhere, without privileges or network.
* Probes, not assumptions: fixtures that need a kernel feature try it and skip
  with the reason. With ``OCIIMG_TEST_STRICT=1`` (set by CI) such skips fail, so no
  kernel test passes by being skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

STRICT = os.environ.get("OCIIMG_TEST_STRICT") == "1"
_PRIVILEGED_FIXTURES = {"root", "registry", "auth_registry", "mounted"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true",
                     help="rewrite tests/golden/*.json from the current output")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for kind in ("unit", "integration", "interop"):
            if kind in parts:
                item.add_marker(getattr(pytest.mark, kind))
                if kind == "unit":
                    bad = _PRIVILEGED_FIXTURES & set(getattr(item, "fixturenames", ()))
                    if bad:
                        raise pytest.UsageError(
                            f"{item.nodeid}: unit test requests privileged fixture(s) "
                            f"{sorted(bad)}; move it to tests/integration")


def need(condition: bool, reason: str) -> None:
    """Skip (or, under OCIIMG_TEST_STRICT=1, fail) when a probe says no."""
    if not condition:
        if STRICT:
            pytest.fail(f"strict mode: required capability missing: {reason}")
        pytest.skip(reason)


@pytest.fixture
def root() -> None:
    """The test needs to run as root (real mounts, chown, mknod, namespaces)."""
    need(os.geteuid() == 0, "needs root")


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))
