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
import stat
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


def can_make_whiteout(tmp: Path) -> bool:
    """Probe: may this process mknod an overlayfs whiteout (a 0:0 char device) in tmp?"""
    try:
        os.mknod(tmp / "probe", stat.S_IFCHR, os.makedev(0, 0))
    except PermissionError:
        return False
    os.unlink(tmp / "probe")
    return True


@pytest.fixture
def root() -> None:
    """The test needs to run as root (real mounts, chown, mknod, namespaces)."""
    need(os.geteuid() == 0, "needs root")


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


# Fixture images ----------------------------------------------------------------------
FIXTURES_SCRIPT = Path(__file__).resolve().parent.parent / "fixtures" / "build_images.py"


def load_build_images():  # -> module fixtures/build_images.py (not a package)
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("ociimg_fixture_builder", FIXTURES_SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


def cached_fixture_layout() -> Path:
    """Build the fixture layout once per (script, busybox) version under /tmp.

    Built beside its final name and renamed into place, so a concurrent session sees either
    nothing or a complete layout, never a half-built one.
    """
    import hashlib
    import shutil
    import tempfile

    builder = load_build_images()
    if not builder.BUSYBOX.is_file():
        need(False, f"{builder.BUSYBOX} missing: apt-get install busybox-static")
    key = hashlib.sha256(FIXTURES_SCRIPT.read_bytes())
    stat = builder.BUSYBOX.stat()
    key.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    final = Path(tempfile.gettempdir()) / f"ociimg-fixtures-{key.hexdigest()[:16]}"
    if (final / "index.json").is_file():
        return final
    scratch = Path(tempfile.mkdtemp(prefix=final.name + ".", dir=final.parent))
    builder.build_all(scratch / "layout")
    try:
        os.rename(scratch / "layout", final)
    except OSError:  # another session won the race: its layout is identical
        pass
    shutil.rmtree(scratch, ignore_errors=True)
    return final


@pytest.fixture(scope="session")
def fixture_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An OCI image layout built offline from busybox-static (see fixtures/README.md), with
    tags busybox, busybox-zstd, busybox-plain, multilayer, multilayer-oci, multiarch,
    docker-v2.

    A private copy per session: tests may read it freely; one that changes it (tags, gc)
    affects only later tests of this session, so prefer copying it first.
    """
    import shutil

    dest = tmp_path_factory.mktemp("fixtures") / "layout"
    shutil.copytree(cached_fixture_layout(), dest)
    return dest
