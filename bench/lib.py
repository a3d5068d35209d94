"""Shared helpers for the benchmarks in bench/: cached images, a local registry, measuring.

Benchmarks run each measured command in a fresh process under GNU time (peak RSS, %M), so
numbers are never polluted by the benchmark driver itself.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
BUILDER_SCRIPT = REPO / "fixtures" / "build_images.py"

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def load_builder() -> ModuleType:
    """fixtures/build_images.py (a script, not a package)."""
    spec = importlib.util.spec_from_file_location("ociimg_fixture_builder", BUILDER_SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def registry_server() -> ModuleType:
    from tests.integration import registry_server as module

    return module


# Cached images -----------------------------------------------------------------------
def cached_big_layout(total_mb: int, layers: int, seed: int = 1,
                      cache_dir: Path | None = None) -> Path:
    """The ``big`` benchmark image as an OCI layout, built once per (script, size, layers,
    seed) under the temp dir and renamed into place when complete."""
    key = hashlib.sha256(BUILDER_SCRIPT.read_bytes())
    key.update(f"{total_mb}:{layers}:{seed}".encode())
    base = cache_dir or Path(tempfile.gettempdir())
    final = base / f"ociimg-bench-big-{total_mb}m-{layers}l-{key.hexdigest()[:12]}"
    if (final / "index.json").is_file():
        return final
    scratch = Path(tempfile.mkdtemp(prefix=final.name + ".", dir=base))
    try:
        started = time.monotonic()
        print(f"building {total_mb} MiB / {layers}-layer image into {final} …", flush=True)
        load_builder().build_big(scratch / "layout", total_mb=total_mb, layers=layers,
                                 seed=seed)
        try:
            os.rename(scratch / "layout", final)
        except OSError:  # a concurrent run finished first: same content
            pass
        print(f"built in {time.monotonic() - started:.1f}s", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return final


def layout_blobs(layout: Path, tag: str) -> dict[str, int]:
    """digest → size of the manifest, config and layers of ``tag`` in an OCI layout."""
    index = json.loads((layout / "index.json").read_bytes())
    desc = next(d for d in index["manifests"]
                if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag)
    manifest = json.loads((layout / "blobs" / "sha256" / desc["digest"][7:]).read_bytes())
    blobs = {desc["digest"]: desc["size"]}
    for blob in [manifest["config"], *manifest["layers"]]:
        blobs[blob["digest"]] = blob["size"]
    return blobs


def missing_blobs(blob_dir: Path, expected: dict[str, int]) -> list[str]:
    """Digests of ``expected`` absent from ``blob_dir`` (…/blobs/sha256) or of wrong size."""
    bad = []
    for digest, size in expected.items():
        path = blob_dir / digest.split(":", 1)[1]
        if not path.is_file() or path.stat().st_size != size:
            bad.append(digest)
    return bad


# Measuring ---------------------------------------------------------------------------
@dataclass
class Sample:
    wall: float  # seconds
    max_rss_kib: int
    returncode: int
    stderr_tail: str = ""


GNU_TIME = "/usr/bin/time"


def measure(cmd: Sequence[str], env: dict[str, str] | None = None,
            cwd: Path | None = None) -> Sample:
    """Run ``cmd`` in a fresh process; wall time here, peak RSS from GNU time's %M.

    Not wait4 on a child of this interpreter: Linux carries the forked parent's RSS
    high-water mark across exec, so every child would report at least the driver's size.
    GNU time is a small C program, so its own share is ~1 MiB.
    """
    if not os.access(GNU_TIME, os.X_OK):
        raise RuntimeError(f"{GNU_TIME} missing: apt-get install time")
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as report:
        started = time.perf_counter()
        proc = subprocess.run([GNU_TIME, "-f", "%M", "-o", report.name, *cmd],
                              stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
                              env=env, cwd=cwd)
        wall = time.perf_counter() - started
        err.seek(0)
        tail = err.read()[-2000:].decode(errors="replace")
        lines = [ln for ln in report.read().splitlines() if ln.strip()]
    max_rss = int(lines[-1]) if lines and lines[-1].strip().isdigit() else -1
    return Sample(wall, max_rss, proc.returncode, tail)


def drop_page_cache() -> bool:
    """Best effort (root only): start a run with cold caches."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


@dataclass
class Summary:
    name: str
    walls: list[float]
    rss_kib: list[int]

    @property
    def median_wall(self) -> float:
        return statistics.median(self.walls)

    @property
    def peak_rss_mib(self) -> float:
        return max(self.rss_kib) / 1024


def print_table(summaries: list[Summary], payload_bytes: int) -> None:
    print(f"{'tool':<14} {'median s':>9} {'min s':>7} {'max s':>7} {'MB/s':>7} "
          f"{'peak RSS MiB':>13}")
    for s in summaries:
        rate = payload_bytes / s.median_wall / 1e6
        print(f"{s.name:<14} {s.median_wall:9.2f} {min(s.walls):7.2f} {max(s.walls):7.2f} "
              f"{rate:7.1f} {s.peak_rss_mib:13.1f}")
