"""bench/lib.py: the measuring and checking helpers benchmarks rely on tell the truth."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from tests.conftest import need

BENCH_LIB = Path(__file__).resolve().parents[2] / "bench" / "lib.py"


@pytest.fixture(scope="module")
def lib():
    spec = importlib.util.spec_from_file_location("ociimg_bench_lib", BENCH_LIB)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_measure_reports_the_child_peak_rss_not_ours(lib) -> None:
    need(os.access(lib.GNU_TIME, os.X_OK), "GNU time missing: apt-get install time")
    small = lib.measure(["/bin/true"])
    # bytes(n) is calloc'd lazily; bytearray(b"x" * n) touches every page.
    big = lib.measure([sys.executable, "-c", "b = bytearray(b'x' * (96 << 20))"])
    assert small.returncode == 0 and big.returncode == 0
    assert big.max_rss_kib >= 96 * 1024
    assert 0 < small.max_rss_kib < 16 * 1024  # not inflated by this interpreter's size


def test_measure_keeps_exit_code_and_stderr(lib) -> None:
    need(os.access(lib.GNU_TIME, os.X_OK), "GNU time missing: apt-get install time")
    sample = lib.measure([sys.executable, "-c", "import sys; sys.exit('boom')"])
    assert sample.returncode == 1 and "boom" in sample.stderr_tail


def test_missing_blobs_finds_absent_and_short(lib, fixture_layout: Path, tmp_path: Path) -> None:
    expected = lib.layout_blobs(fixture_layout, "busybox")
    assert len(expected) == 3  # manifest, config, one layer
    blob_dir = fixture_layout / "blobs" / "sha256"
    assert lib.missing_blobs(blob_dir, expected) == []
    copy = tmp_path / "sha256"
    copy.mkdir()
    digests = sorted(expected)
    (copy / digests[0][7:]).write_bytes((blob_dir / digests[0][7:]).read_bytes())
    (copy / digests[1][7:]).write_bytes(b"short")
    assert lib.missing_blobs(copy, expected) == digests[1:]
